//! `braid-cli tune`: runs every kernel shape a model needs once, so that autotuning (Braid's
//! GEMV candidates, Burn's matmul) and kernel compilation happen now rather than in the first
//! requests: batch-1 decode (the replayed graph of `generate`), every captured decode batch size
//! of the batch engine, prefills of several lengths and batched prefill steps of 4,096 and 16,384
//! tokens (the large matmul shapes). With the `cuda` feature CubeCL keeps
//! the results in its persistent cache (`target/environment` of the enclosing Cargo workspace,
//! else the user cache directory, `~/.cache/cubecl` on Linux), so later processes skip the
//! tuning; the command times itself, and a second run shows what the cache saves.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use braid_engine::batch::SchedulerConfig;
use braid_engine::{BatchConfig, BatchEngine, Engine, Request, SamplingParams};
use braid_model::KernelPlan;
use braid_model::graph_decode::{GreedyDecoder, StepMode};

use crate::device::{self, DTypeArg, DeviceArg};

#[derive(Debug, clap::Args)]
pub struct TuneArgs {
    #[arg(long)]
    model: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = DeviceArg::Cpu)]
    device: DeviceArg,
    #[arg(long, value_enum)]
    dtype: Option<DTypeArg>,
    /// Kernel plan, as `generate --plan` (e.g. `fused-attn-f32`).
    #[arg(long, default_value = "fused")]
    plan: String,
    /// Largest decode batch to prepare (the batch engine's --max-seqs).
    #[arg(long, default_value_t = 256)]
    max_seqs: usize,
    /// Longest sequence to prepare for (prompt + output).
    #[arg(long, default_value_t = 2048)]
    max_len: usize,
    /// Prompt lengths whose prefills to run (each also one token short).
    #[arg(long, value_delimiter = ',', default_value = "16,128,1024")]
    prefill_lens: Vec<usize>,
    /// Batched prefill steps to run, in total tokens (several prompts of up to 1,024 tokens in
    /// one step, as the batch engine schedules them): the matmul shapes of large prefills. Each
    /// also runs one token short (the bounds-checked matmul variants).
    #[arg(long, value_delimiter = ',', default_value = "4096,16384")]
    prefill_batch_tokens: Vec<usize>,
    #[arg(long, default_value_t = 0.9)]
    gpu_memory_fraction: f64,
}

pub fn run(a: TuneArgs) -> Result<()> {
    let device::Target { dir, config, device, dtype } = device::target(&a.model, a.device, a.dtype)?;
    let max_len = a.max_len.min(config.max_position_embeddings);
    let mut engine = Engine::load(&dir, &device, dtype, &mut |_, _| {}).with_context(|| format!("loading {}", dir.display()))?;
    engine.model.set_plan(KernelPlan::parse(&a.plan, &config).context("--plan")?)?;
    let vocab = config.vocab_size as u32;
    // Every prompt different (a shared prefix would be served from the prefix cache and shrink
    // the step's shapes).
    let salt = std::cell::Cell::new(0u32);
    let prompt = |n: usize| {
        salt.set(salt.get() + 1);
        (0..n as u32).map(|i| (i.wrapping_mul(7919).wrapping_add(13).wrapping_add(salt.get().wrapping_mul(104_729))) % vocab).collect::<Vec<u32>>()
    };
    let start = Instant::now();

    // 1. Batch-1 greedy decode: `generate`'s replayed graph.
    let t = Instant::now();
    if engine.model.device_decode_ready() {
        let mut dec = GreedyDecoder::new(&engine.model, &prompt(16), 8, StepMode::Graph)?;
        dec.take(8)?;
    }
    println!("batch-1 decode graph      {:8.2} s", t.elapsed().as_secs_f64());

    // 2. The batch engine: every decode batch size, then prefills of each length.
    let t = Instant::now();
    let bc = BatchConfig {
        scheduler: SchedulerConfig { max_seqs: a.max_seqs, max_batched_tokens: 16384.max(max_len) },
        max_len,
        blocks: None,
        gpu_memory_fraction: a.gpu_memory_fraction,
        graphs: true,
    };
    let mut batch = BatchEngine::new(&engine, bc)?;
    batch.capture_graphs()?;
    println!("decode batch sizes        {:8.2} s ({} graphs)", t.elapsed().as_secs_f64(), batch.stats.graphs);
    // Each length as given and one token short (see below).
    for n in a.prefill_lens.iter().flat_map(|&n| [n, n.saturating_sub(1)]).filter(|&n| n > 0) {
        let n = n.clamp(1, max_len - 2);
        let t = Instant::now();
        let req = Request { max_tokens: 2, sampling: SamplingParams::default(), ignore_eos: true };
        batch.add(&prompt(n), &req)?;
        batch.run(&mut |_| {})?;
        println!("prefill {n:>6} tokens     {:8.2} s", t.elapsed().as_secs_f64());
    }
    let max_batched = 16384.max(max_len);
    // Each total as given and one token short: a row count that is not a multiple of a matmul
    // tile runs (and compiles) a bounds-checked variant of Burn's matmul kernels.
    let totals = a.prefill_batch_tokens.iter().flat_map(|&t| [t, t.saturating_sub(1)]).filter(|&t| t > 0);
    for total in totals {
        let total = total.clamp(1, max_batched);
        let each = 1024.min(max_len - 2).max(1);
        let t = Instant::now();
        let req = Request { max_tokens: 2, sampling: SamplingParams::default(), ignore_eos: true };
        let mut left = total;
        while left > 0 {
            let n = left.min(each);
            batch.add(&prompt(n), &req)?;
            left -= n;
        }
        batch.run(&mut |_| {})?;
        println!("prefill batch {total:>6} tokens {:8.2} s", t.elapsed().as_secs_f64());
    }
    println!(
        "tuned {} ({:?} {dtype:?}, plan {}) in {:.2} s; CubeCL keeps the results in its persistent cache (cuda builds)",
        dir.display(),
        a.device,
        engine.model.plan().summary(),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
