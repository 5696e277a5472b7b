//! `braid-cli bench throughput`: nano-vllm's offline benchmark on the batch engine. `num_seqs`
//! prompts of random token ids (ids below 10,000), prompt and output lengths uniform in
//! `min_len..=max_input_len` and `min_len..=max_output_len` from a seeded generator, eos
//! ignored, every request queued at once; output tokens per second over the whole run. A short
//! warm-up batch first compiles and tunes the kernels, and every decode batch size's graph is
//! captured (not timed), as nano-vllm does.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use braid_engine::batch::SchedulerConfig;
use braid_engine::{BatchConfig, BatchEngine, BatchStats, Engine, Request, SamplingParams};
use braid_model::KernelPlan;
use braid_model::ops::verify::Rng;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use crate::device::{self, DTypeArg, DeviceArg};
use crate::generate::Format;

#[derive(Debug, clap::Args)]
pub struct ThroughputArgs {
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
    #[arg(long, default_value_t = 256)]
    num_seqs: usize,
    #[arg(long, default_value_t = 100)]
    min_len: usize,
    #[arg(long, default_value_t = 1024)]
    max_input_len: usize,
    #[arg(long, default_value_t = 1024)]
    max_output_len: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Sequences decoded together at most.
    #[arg(long, default_value_t = 256)]
    max_seqs: usize,
    /// New tokens in one prefill step.
    #[arg(long, default_value_t = 16384)]
    max_batched_tokens: usize,
    #[arg(long, default_value_t = 0.9)]
    gpu_memory_fraction: f64,
    /// KV cache blocks of 64 positions (default: sized from --gpu-memory-fraction).
    #[arg(long)]
    kv_blocks: Option<usize>,
    /// Run every decode step eagerly (no captured graphs), to measure what the graphs save.
    #[arg(long)]
    no_graphs: bool,
    /// Tile shape of the prefill attention (`ROWSxKEYSxGROUPS`, e.g. `128x64x16`; default: the
    /// kernel's pick for the device), to compare shapes on the whole workload.
    #[arg(long)]
    prefill_tiles: Option<String>,
    /// Write the workload (prompt ids and output lengths) here as JSON, for other engines
    /// (`scripts/hf_bench.py throughput`).
    #[arg(long)]
    save_workload: Option<PathBuf>,
    /// Write the results here as JSON too.
    #[arg(long)]
    json: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

#[derive(Serialize)]
struct Workload {
    seed: u64,
    prompts: Vec<Vec<u32>>,
    output_lens: Vec<usize>,
}

#[derive(Serialize)]
struct Report {
    model: String,
    device: String,
    dtype: String,
    plan: String,
    num_seqs: usize,
    prompt_tokens: usize,
    output_tokens: usize,
    secs: f64,
    output_tok_per_s: f64,
    total_tok_per_s: f64,
    prefill_tok_per_s: f64,
    decode_tok_per_s: f64,
    warmup_secs: f64,
    /// The prefill attention's tile shape (`ROWSxKEYSxGROUPS`; none off the CubeCL backend).
    prefill_tiles: Option<String>,
    stats: BatchStats,
}

/// nano-vllm's workload from a splitmix generator: `(prompts, output lengths)`.
fn workload(a: &ThroughputArgs, vocab: usize) -> (Vec<Vec<u32>>, Vec<usize>) {
    let mut rng = Rng::new(a.seed);
    let mut uniform = |lo: usize, hi: usize| lo + (((rng.unit() as f64 + 1.0) * 0.5 * (hi - lo + 1) as f64) as usize).min(hi - lo);
    let ids = 10_000.min(vocab);
    let mut prompts = Vec::with_capacity(a.num_seqs);
    let mut outs = Vec::with_capacity(a.num_seqs);
    for _ in 0..a.num_seqs {
        let n = uniform(a.min_len, a.max_input_len);
        prompts.push((0..n).map(|_| uniform(0, ids - 1) as u32).collect());
    }
    for _ in 0..a.num_seqs {
        outs.push(uniform(a.min_len, a.max_output_len));
    }
    (prompts, outs)
}

pub fn throughput(a: ThroughputArgs) -> Result<()> {
    if a.num_seqs == 0 || a.min_len == 0 || a.min_len > a.max_input_len || a.min_len > a.max_output_len {
        bail!("--num-seqs and --min-len must be >= 1, and --min-len at most --max-input-len and --max-output-len");
    }
    let device::Target { dir, config, device, dtype } = device::target(&a.model, a.device, a.dtype)?;
    let max_len = a.max_input_len + a.max_output_len;
    if max_len > config.max_position_embeddings {
        bail!("--max-input-len + --max-output-len = {max_len} exceeds the model's max_position_embeddings = {}", config.max_position_embeddings);
    }
    let mut engine = Engine::load(&dir, &device, dtype, &mut |_, _| {}).with_context(|| format!("loading {}", dir.display()))?;
    engine.model.set_plan(KernelPlan::parse(&a.plan, &config).context("--plan")?)?;
    let (prompts, outs) = workload(&a, config.vocab_size);
    if let Some(path) = &a.save_workload {
        let w = Workload { seed: a.seed, prompts: prompts.clone(), output_lens: outs.clone() };
        std::fs::write(path, serde_json::to_string(&w)?).with_context(|| format!("writing {}", path.display()))?;
    }
    let bc = BatchConfig {
        scheduler: SchedulerConfig { max_seqs: a.max_seqs, max_batched_tokens: a.max_batched_tokens },
        max_len,
        blocks: a.kv_blocks,
        gpu_memory_fraction: a.gpu_memory_fraction,
        graphs: !a.no_graphs,
    };
    if let Some(t) = &a.prefill_tiles {
        braid_model::ops::set_prefill_tiles(Some(crate::bench_kernels::parse_tiles(t)?));
    }
    let req = |n: usize| Request { max_tokens: n, sampling: SamplingParams::default(), ignore_eos: true };

    // Warm-up: a few sequences through prefill and decode at several batch sizes (compiles,
    // autotunes); not timed. The first prompt is one token short, so the prefill's row count is
    // not a multiple of a matmul tile: Burn's matmul compiles a bounds-checked variant of each
    // kernel for such counts (~1 s each on an H100, 2026-11-26), which every real prefill needs.
    let warm = Instant::now();
    {
        let mut b = BatchEngine::new(&engine, bc)?;
        for (i, (p, _)) in prompts.iter().zip(&outs).take(a.max_seqs.min(a.num_seqs)).enumerate() {
            let n = p.len().min(64) - usize::from(i == 0 && p.len() > 1);
            b.add(&p[..n], &req(8))?;
        }
        b.run(&mut |_| {})?;
        // One sequence alone too: a step of few rows takes other kernels (the argmax splits a
        // row over cubes under 16 rows), which a timed prefill of few sequences would otherwise
        // compile on first use.
        if let Some(p) = prompts.first() {
            b.add(&p[..p.len().min(16)], &req(2))?;
            b.run(&mut |_| {})?;
        }
        // And a full prefill step of whole prompts (as nano-vllm's warm-up): the long rows'
        // kernels and tunings, which short prompts do not reach (a first process on a fresh
        // H100 otherwise spent 2.24-2.51 s in the timed prefill against 1.72 s, 2026-11-27).
        let mut tokens = 0;
        for p in prompts.iter().take(a.max_seqs) {
            if tokens >= a.max_batched_tokens {
                break;
            }
            tokens += p.len();
            b.add(p, &req(1))?;
        }
        b.run(&mut |_| {})?;
    }

    let mut b = BatchEngine::new(&engine, bc)?;
    // Every decode batch size's graph, captured before the clock starts (as nano-vllm does).
    b.capture_graphs()?;
    let warmup_secs = warm.elapsed().as_secs_f64();
    for (p, &n) in prompts.iter().zip(&outs) {
        b.add(p, &req(n))?;
    }
    let total: usize = outs.iter().sum();
    let bar = ProgressBar::new(total as u64).with_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} tokens {per_sec}").expect("valid template"),
    );
    braid_model::profile::reset();
    let start = Instant::now();
    b.run(&mut |out| bar.inc(out.len() as u64))?;
    let secs = start.elapsed().as_secs_f64();
    bar.finish_and_clear();
    let stats = b.stats.clone();
    let prompt_tokens: usize = prompts.iter().map(Vec::len).sum();
    let report = Report {
        model: dir.display().to_string(),
        device: format!("{:?}", a.device).to_lowercase(),
        dtype: format!("{dtype:?}"),
        plan: engine.model.plan().summary(),
        num_seqs: a.num_seqs,
        prompt_tokens,
        output_tokens: stats.decode_tokens,
        secs,
        output_tok_per_s: stats.decode_tokens as f64 / secs,
        total_tok_per_s: (prompt_tokens + stats.decode_tokens) as f64 / secs,
        prefill_tok_per_s: stats.prefill_tokens as f64 / stats.prefill_secs.max(1e-9),
        decode_tok_per_s: (stats.decode_tokens.saturating_sub(stats.prefill_steps)) as f64 / stats.decode_secs.max(1e-9),
        warmup_secs,
        prefill_tiles: braid_model::ops::prefill_tiles(&device, config.head_dim()).map(|t| format!("{}x{}x{}", t.rows, t.keys, t.groups)),
        stats,
    };
    if report.output_tokens != total {
        bail!("generated {} tokens, the workload asks for {total}", report.output_tokens);
    }
    if let Some(path) = &a.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?).with_context(|| format!("writing {}", path.display()))?;
    }
    if braid_model::profile::enabled() {
        // Per-phase totals (synchronised after each phase: slower than the run above).
        for p in braid_model::profile::totals() {
            eprintln!(
                "profile {:<28} {:9.3} s  {:7} times  {:9.1} us each (min {:.1}, max {:.1})",
                p.name,
                p.secs,
                p.times,
                p.secs * 1e6 / p.times as f64,
                p.min * 1e6,
                p.max * 1e6
            );
        }
    }
    match a.format {
        Format::Json => println!("{}", serde_json::to_string(&report)?),
        Format::Text => {
            let s = &report.stats;
            println!("throughput: {} ({}, {}), plan {}", report.model, report.device, report.dtype, report.plan);
            println!(
                "  {} sequences, {} prompt + {} output tokens in {:.2} s: {:.0} output tok/s ({:.0} total tok/s)",
                report.num_seqs, report.prompt_tokens, report.output_tokens, report.secs, report.output_tok_per_s, report.total_tok_per_s
            );
            println!(
                "  prefill {} steps {:.2} s ({:.0} tok/s); decode {} steps {:.2} s ({:.0} tok/s; {} replayed, {} graphs captured in {:.1} s); largest batch {}; {} preemptions; {} prefix-cached positions; {} KV blocks; warm-up {:.1} s",
                s.prefill_steps,
                s.prefill_secs,
                report.prefill_tok_per_s,
                s.decode_steps,
                s.decode_secs,
                report.decode_tok_per_s,
                s.graph_steps,
                s.graphs,
                s.capture_secs,
                s.max_batch,
                s.preemptions,
                s.prefix_hit_tokens,
                s.blocks,
                report.warmup_secs
            );
            if let Some(t) = &report.prefill_tiles {
                println!("  prefill attention tiles {t}");
            }
            if s.graph_steps > 0 {
                // With hardware graphs (CUDA) the wait is the device's time; elsewhere a replay
                // relaunches every kernel from the host, which shows as host time.
                println!(
                    "  host: scheduling {:.2} s; of the {:.2} s of decode, over {} replayed steps: layouts {:.2} s, uploads {:.2} s, replay calls {:.2} s, token reads (the device's time) {:.2} s",
                    s.schedule_secs, s.decode_secs, s.graph_steps, s.layout_secs, s.upload_secs, s.replay_secs, s.device_wait_secs
                );
            }
        }
    }
    Ok(())
}
