//! `braid-cli bench latency`: batch-1 greedy decode speed, in one process, of four ways of
//! running the same plan: the engine's eager loop (`Qwen3::forward` per token, argmax on the
//! device, the id read back), device-state steps run eagerly, the same steps captured once and
//! replayed as a CUDA graph (one read at the end), and the replay with one read per token (what
//! `generate` streams). Also measures the card's elementwise bandwidth in the same
//! process and reports each figure against the decode floor (weight bytes / bandwidth). The
//! generated tokens of the three ways must be identical; the command fails otherwise.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use braid_model::graph_decode::{GreedyDecoder, StepMode};
use braid_model::timing::{median, per_call};
use braid_model::{KernelPlan, Logits, Qwen3, ops};
use burn::tensor::Tensor;
use serde::Serialize;

use crate::device::{self, DTypeArg, DeviceArg};
use crate::generate::Format;

#[derive(Debug, clap::Subcommand)]
pub enum Which {
    /// Batch-1 greedy decode: eager engine loop vs device-state steps vs graph replay (batched
    /// and streamed).
    Latency(LatencyArgs),
    /// nano-vllm's offline throughput benchmark on the batch engine (paged KV cache,
    /// continuous batching).
    Throughput(crate::throughput::ThroughputArgs),
    /// Each fused op vs its reference twin vs its floor (bandwidth or matmul rate, measured in
    /// the same process) at Qwen3-0.6B's shapes; Burn's matmul autotuned vs untuned.
    Kernels(crate::bench_kernels::KernelsArgs),
}

#[derive(Debug, clap::Args)]
pub struct LatencyArgs {
    #[arg(long)]
    model: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = DeviceArg::Cpu)]
    device: DeviceArg,
    /// Default: the checkpoint's dtype on a GPU, f32 on the CPU.
    #[arg(long, value_enum)]
    dtype: Option<DTypeArg>,
    /// Kernel plan, as `generate --plan` (e.g. `fused-attn-f32`).
    #[arg(long, default_value = "fused")]
    plan: String,
    /// Prompt length in tokens (synthetic ids, the same every run).
    #[arg(long, default_value_t = 128)]
    prompt_len: usize,
    #[arg(long, default_value_t = 256)]
    new_tokens: usize,
    /// Runs per way; the median is reported.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Run only these ways (comma-separated: eager, steps, graph, streamed), e.g. `--ways steps`
    /// under a profiler. Default: all four.
    #[arg(long, value_delimiter = ',', default_value = "eager,steps,graph,streamed")]
    ways: Vec<String>,
    /// Write the results here as JSON too.
    #[arg(long)]
    json: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

#[derive(Serialize)]
struct Way {
    name: &'static str,
    /// Median decode tokens per second (steps after the first token), and every run's.
    tok_per_s: f64,
    runs_tok_per_s: Vec<f64>,
    ms_per_token: f64,
    /// The decode floor's share of this: floor ms / ms per token.
    of_floor: f64,
    prefill_ms: f64,
    hardware_graph: bool,
}

#[derive(Serialize)]
struct Latency {
    model: String,
    device: String,
    dtype: String,
    plan: String,
    prompt_len: usize,
    new_tokens: usize,
    weight_bytes: usize,
    bandwidth_gb_s: f64,
    floor_ms_per_token: f64,
    floor_tok_per_s: f64,
    ways: Vec<Way>,
    tokens_identical: bool,
}

pub fn run(which: Which) -> Result<()> {
    match which {
        Which::Latency(a) => latency(a),
        Which::Throughput(a) => crate::throughput::throughput(a),
        Which::Kernels(a) => crate::bench_kernels::run(a),
    }
}

/// The engine's eager greedy loop: prefill, then `forward` per token with the argmax on the
/// device. Returns (tokens, prefill secs, decode secs for n - 1 steps).
fn eager(model: &Qwen3, prompt: &[u32], n: usize) -> Result<(Vec<u32>, f64, f64)> {
    let start = Instant::now();
    let mut cache = model.new_cache(1, prompt.len() + n + 1);
    let logits = model.forward(&[prompt.to_vec()], &mut cache, Logits::Last)?;
    let [_, _, v] = logits.dims();
    let mut next = ops::argmax(logits.reshape([1, v]))[0];
    let prefill = start.elapsed().as_secs_f64();
    let mut out = vec![next];
    let start = Instant::now();
    for _ in 1..n {
        let logits = model.forward(&[vec![next]], &mut cache, Logits::Last)?;
        next = ops::argmax(logits.reshape([1, v]))[0];
        out.push(next);
    }
    Ok((out, prefill, start.elapsed().as_secs_f64()))
}

fn latency(a: LatencyArgs) -> Result<()> {
    let device::Target { dir, config, device, dtype } = device::target(&a.model, a.device, a.dtype)?;
    if a.new_tokens < 2 || a.prompt_len == 0 || a.runs == 0 {
        bail!("--new-tokens must be >= 2, --prompt-len and --runs >= 1");
    }
    let mut model = Qwen3::load(&dir, &device, dtype, &mut |_, _| {}).with_context(|| format!("loading {}", dir.display()))?;
    model.set_plan(KernelPlan::parse(&a.plan, &config).context("--plan")?)?;
    let vocab = config.vocab_size as u64;
    let prompt: Vec<u32> = (0..a.prompt_len as u64).map(|i| ((i * 7919 + 13) % vocab) as u32).collect();

    // Bandwidth in this process: a large elementwise op (bytes read + written).
    let big = Tensor::<2>::ones([8192, 8192], (&device, dtype));
    let t = per_call(&device, 10, 5, || drop(big.clone().add_scalar(0.5))).map_err(anyhow::Error::msg)?;
    let bw = (2 * 8192 * 8192 * dtype.size()) as f64 / t;
    drop(big);
    let params: usize = {
        let ckpt = braid_model::Checkpoint::open(&dir)?;
        ckpt.iter().map(|t| t.shape.iter().product::<usize>()).sum()
    };
    let weight_bytes = params * dtype.size();
    let floor = weight_bytes as f64 / bw;

    let steps = (a.new_tokens - 1) as f64;
    let mut ways = Vec::new();
    let mut reference_tokens: Option<Vec<u32>> = None;
    let mut identical = true;
    const WAYS: [(&str, &str); 4] =
        [("eager", "eager engine loop"), ("steps", "device-state steps"), ("graph", "graph replay"), ("streamed", "graph, streamed")];
    if let Some(w) = a.ways.iter().find(|w| !WAYS.iter().any(|(k, _)| k == w)) {
        bail!("--ways: unknown way '{w}' (eager, steps, graph, streamed)");
    }
    for (_, name) in WAYS.iter().filter(|(k, _)| a.ways.iter().any(|w| w == k)) {
        let name = *name;
        let mut tps = Vec::new();
        let mut prefill = Vec::new();
        let mut hardware = false;
        for _ in 0..a.runs {
            let (tokens, p, secs, steps_timed, hw) = match name {
                "eager engine loop" => {
                    let (t, p, s) = eager(&model, &prompt, a.new_tokens)?;
                    (t, p, s, steps, false)
                }
                "graph, streamed" => {
                    // What `generate` does: `next_token`, which replays a chunk of steps per
                    // device read (as many as run in about 20 ms, up to 16).
                    let mut dec = GreedyDecoder::new(&model, &prompt, a.new_tokens, StepMode::Graph)?;
                    let (p, ahead) = (dec.prefill_secs, dec.ready());
                    let start = Instant::now();
                    let t: Vec<u32> = (0..a.new_tokens).map(|_| dec.next_token()).collect::<Result<_, _>>()?;
                    let hw = dec.hardware_graph();
                    (t, p, start.elapsed().as_secs_f64(), (a.new_tokens - ahead) as f64, hw)
                }
                _ => {
                    let mode = if name == "graph replay" { StepMode::Graph } else { StepMode::Eager };
                    let r = model.generate_greedy(&prompt, a.new_tokens, mode)?;
                    (r.tokens, r.prefill_secs, r.decode_secs, r.timed_steps as f64, r.hardware_graph)
                }
            };
            match &reference_tokens {
                None => reference_tokens = Some(tokens),
                Some(r) => identical &= *r == tokens,
            }
            tps.push(steps_timed / secs);
            prefill.push(p * 1e3);
            hardware |= hw;
        }
        let runs = tps.clone();
        let tok_per_s = median(&mut tps);
        ways.push(Way {
            name,
            tok_per_s,
            runs_tok_per_s: runs,
            ms_per_token: 1e3 / tok_per_s,
            of_floor: floor * tok_per_s,
            prefill_ms: median(&mut prefill),
            hardware_graph: hardware,
        });
    }
    let report = Latency {
        model: dir.display().to_string(),
        device: format!("{:?}", a.device).to_lowercase(),
        dtype: format!("{dtype:?}"),
        plan: model.plan().summary(),
        prompt_len: a.prompt_len,
        new_tokens: a.new_tokens,
        weight_bytes,
        bandwidth_gb_s: bw / 1e9,
        floor_ms_per_token: floor * 1e3,
        floor_tok_per_s: 1.0 / floor,
        ways,
        tokens_identical: identical,
    };
    if let Some(p) = &a.json {
        std::fs::write(p, serde_json::to_string_pretty(&report)?).with_context(|| format!("writing {}", p.display()))?;
    }
    match a.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        Format::Text => {
            println!(
                "{} | {} {} plan {} | prompt {} + {} new tokens, batch 1, median of {} runs",
                report.model, report.device, report.dtype, report.plan, a.prompt_len, a.new_tokens, a.runs
            );
            println!(
                "floor: {:.2} GB of weights / {:.0} GB/s (elementwise, this process) = {:.3} ms/token = {:.0} tok/s",
                weight_bytes as f64 / 1e9,
                report.bandwidth_gb_s,
                report.floor_ms_per_token,
                report.floor_tok_per_s
            );
            println!("{:<20} {:>10} {:>10} {:>9} {:>11} {:>9}  runs", "way", "tok/s", "ms/token", "of floor", "prefill ms", "hw graph");
            for w in &report.ways {
                println!(
                    "{:<20} {:>10.1} {:>10.3} {:>8.1}% {:>11.1} {:>9}  {:?}",
                    w.name,
                    w.tok_per_s,
                    w.ms_per_token,
                    w.of_floor * 100.0,
                    w.prefill_ms,
                    w.hardware_graph,
                    w.runs_tok_per_s.iter().map(|v| (v * 10.0).round() / 10.0).collect::<Vec<_>>()
                );
            }
            println!("tokens identical across ways and runs: {}", report.tokens_identical);
        }
    }
    if !identical {
        bail!("the ways produced different tokens");
    }
    Ok(())
}
