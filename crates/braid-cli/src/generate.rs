//! `braid-cli generate`: stream text from a prompt.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use braid_engine::{Engine, Generation, Request};
use braid_model::{KernelPlan, Qwen3Config};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use crate::device::{self, DTypeArg, DeviceArg};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Hugging Face model folder (config.json, *.safetensors, tokenizer.json). Defaults to
    /// $BRAID_MODEL, else the model that ships in the repository.
    #[arg(long)]
    model: Option<PathBuf>,
    /// The prompt. Give it several times (or use --prompts-file) to run the prompts as one
    /// batch through the batch engine (paged KV cache, continuous batching).
    #[arg(long, required_unless_present = "prompts_file")]
    prompt: Vec<String>,
    /// A file of prompts, one per line (empty lines skipped), run as one batch with any
    /// --prompt values.
    #[arg(long)]
    prompts_file: Option<PathBuf>,
    /// Batch engine: sequences decoded together at most.
    #[arg(long, default_value_t = 256)]
    max_seqs: usize,
    /// Batch engine: the share of the GPU's memory Braid may fill (weights, activations, KV cache).
    #[arg(long, default_value_t = 0.9)]
    gpu_memory_fraction: f64,
    /// Batch engine: KV cache blocks of 64 positions (default: sized from --gpu-memory-fraction).
    #[arg(long)]
    kv_blocks: Option<usize>,
    /// Wrap the prompt as a user turn with the model's chat template.
    #[arg(long)]
    chat: bool,
    /// With --chat: let the model think first (Qwen3's default).
    #[arg(long, overrides_with = "no_think")]
    think: bool,
    /// With --chat: skip thinking (`enable_thinking = false`).
    #[arg(long)]
    no_think: bool,
    #[arg(long, default_value_t = 128)]
    max_tokens: usize,
    /// 0 is greedy. Default: generation_config.json's, else greedy.
    #[arg(long)]
    temperature: Option<f32>,
    #[arg(long)]
    top_k: Option<usize>,
    #[arg(long)]
    top_p: Option<f32>,
    #[arg(long)]
    min_p: Option<f32>,
    #[arg(long)]
    repetition_penalty: Option<f32>,
    #[arg(long)]
    presence_penalty: Option<f32>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Keep generating past end-of-sequence tokens.
    #[arg(long)]
    ignore_eos: bool,
    #[arg(long, value_enum, default_value_t = DeviceArg::Cpu)]
    device: DeviceArg,
    /// Compute dtype. Default: the checkpoint's on a GPU, f32 on the CPU.
    #[arg(long, value_enum)]
    dtype: Option<DTypeArg>,
    /// Kernel plan: `reference`, `fused` (PyTorch's rounding points), `fused-f32`,
    /// `fused-attn-f32` (`fused` with attention in f32 mode: the batch engine's fastest), `auto` (the
    /// calibrated plan for this checkpoint, device and dtype: cached, else measured now), or a
    /// JSON plan file (see docs/architecture.md).
    #[arg(long, default_value = "reference")]
    plan: String,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

/// The model folder to use when `--model` is not given: `$BRAID_MODEL`, else braid-tiny found
/// beside the executable (`<exe dir>/models/braid-tiny`, for an installed copy), else in the
/// checkout the binary was built from (what `cargo run` uses).
pub fn default_model() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("BRAID_MODEL") {
        return Ok(PathBuf::from(dir));
    }
    let mut candidates = Vec::new();
    if let Some(exe_dir) = std::env::current_exe().ok().and_then(|e| e.parent().map(PathBuf::from)) {
        candidates.push(exe_dir.join("models/braid-tiny"));
    }
    candidates.push(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models/braid-tiny"));
    match candidates.iter().find(|d| d.join("config.json").is_file()) {
        Some(dir) => Ok(dir.clone()),
        None => bail!(
            "no --model given, $BRAID_MODEL unset, and braid-tiny not found at {}",
            candidates.iter().map(|c| c.display().to_string()).collect::<Vec<_>>().join(" or ")
        ),
    }
}

#[derive(Serialize)]
struct JsonOut<'a> {
    model: String,
    #[serde(flatten)]
    generation: &'a Generation,
    generated_tokens: usize,
}

pub fn run(args: Args) -> Result<()> {
    let dir = match &args.model {
        Some(d) => d.clone(),
        None => default_model()?,
    };
    let config = Qwen3Config::from_file(&dir.join("config.json"))?;
    let device = device::open(args.device)?;
    let dtype = match args.dtype {
        Some(d) => d.dtype(),
        None => device::default_dtype(args.device, config.checkpoint_dtype(), &device),
    };

    let bar = ProgressBar::new(0).with_style(
        ProgressStyle::with_template("loading {msg} [{bar:30}] {pos}/{len} tensors").expect("valid template"),
    );
    bar.set_message(dir.display().to_string());
    let plan = match args.plan.as_str() {
        "auto" => None,
        spec => Some(KernelPlan::parse(spec, &config).context("--plan")?),
    };
    let mut engine = Engine::load(&dir, &device, dtype, &mut |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    })
    .with_context(|| format!("loading model from {}", dir.display()))?;
    bar.finish_and_clear();
    let plan = match plan {
        Some(plan) => plan,
        None => crate::autoplan::resolve(&dir, args.device, &device, &mut engine.model, &engine.tokenizer).context("--plan auto")?,
    };
    engine.model.set_plan(plan).context("--plan")?;

    let mut texts = args.prompt.clone();
    if let Some(file) = &args.prompts_file {
        let body = std::fs::read_to_string(file).with_context(|| format!("reading --prompts-file {}", file.display()))?;
        texts.extend(body.lines().filter(|l| !l.trim().is_empty()).map(str::to_string));
    }
    if texts.is_empty() {
        bail!("no prompts: --prompts-file {} has no non-empty line", args.prompts_file.as_deref().unwrap_or(std::path::Path::new("")).display());
    }
    let prompts = texts
        .iter()
        .map(|t| if args.chat { engine.chat_prompt(t, !args.no_think) } else { Ok(t.clone()) })
        .collect::<Result<Vec<_>, _>>()?;
    let mut sampling = engine.default_sampling();
    if let Some(t) = args.temperature {
        sampling.temperature = t;
    }
    if let Some(k) = args.top_k {
        sampling.top_k = k;
    }
    if let Some(p) = args.top_p {
        sampling.top_p = p;
    }
    if let Some(p) = args.min_p {
        sampling.min_p = p;
    }
    if let Some(p) = args.repetition_penalty {
        sampling.repetition_penalty = p;
    }
    if let Some(p) = args.presence_penalty {
        sampling.presence_penalty = p;
    }
    sampling.seed = args.seed;
    let req = Request { max_tokens: args.max_tokens, sampling, ignore_eos: args.ignore_eos };
    if prompts.len() > 1 {
        return batch(&args, &dir, &engine, &prompts, &req, dtype);
    }
    let prompt = prompts.into_iter().next().expect("one prompt");
    let prompt_ids = engine.encode_prompt(&prompt)?;

    match args.format {
        Format::Text => {
            let mut out = std::io::stdout().lock();
            write!(out, "{prompt}")?;
            out.flush()?;
            let g = engine.generate(&prompt_ids, &req, &mut |piece| {
                let _ = write!(out, "{piece}");
                let _ = out.flush();
            })?;
            writeln!(out)?;
            eprintln!(
                "[{} prompt tokens, {} generated ({:?}); prefill {:.1} tok/s, decode {:.1} tok/s{}; {:?} {:?}; plan {}]",
                g.prompt_ids.len(),
                g.output_ids.len(),
                g.finish,
                g.prefill_tok_per_s,
                g.decode_tok_per_s,
                if g.graph { format!(" (graph replay, capture {:.0} ms)", g.graph_setup_secs * 1e3) } else { String::new() },
                args.device,
                dtype,
                engine.model.plan().summary()
            );
        }
        Format::Json => {
            let g = engine.generate(&prompt_ids, &req, &mut |_| {})?;
            let out = JsonOut { model: dir.display().to_string(), generated_tokens: g.output_ids.len(), generation: &g };
            println!("{}", serde_json::to_string(&out)?);
        }
    }
    Ok(())
}

#[derive(Serialize)]
struct BatchJson<'a> {
    model: String,
    generations: &'a [Generation],
    stats: &'a braid_engine::BatchStats,
}

/// Several prompts as one batch (the batch engine); results printed in prompt order.
fn batch(args: &Args, dir: &std::path::Path, engine: &Engine, prompts: &[String], req: &Request, dtype: braid_model::DType) -> Result<()> {
    let ids = prompts
        .iter()
        .enumerate()
        .map(|(i, p)| engine.encode_prompt(p).with_context(|| format!("prompt {}", i + 1)))
        .collect::<Result<Vec<_>>>()?;
    let longest = ids.iter().map(|p| p.len() + args.max_tokens).max().unwrap_or(1);
    let mut config = braid_engine::BatchConfig::new(longest.min(engine.model.config.max_position_embeddings));
    config.scheduler.max_seqs = args.max_seqs;
    config.gpu_memory_fraction = args.gpu_memory_fraction;
    config.blocks = args.kv_blocks;
    let reqs = vec![req.clone(); ids.len()];
    let (gens, stats) = engine.generate_batch(&ids, &reqs, config)?;
    match args.format {
        Format::Text => {
            let mut out = std::io::stdout().lock();
            for (i, (p, g)) in prompts.iter().zip(&gens).enumerate() {
                writeln!(out, "--- {} ---\n{p}{}", i + 1, g.text)?;
            }
            let secs = stats.prefill_secs + stats.decode_secs;
            eprintln!(
                "[batch of {}: {} tokens generated in {:.2} s ({:.1} tok/s); {} prefill and {} decode steps, largest batch {}, {} preemptions, {} prefix-cached positions, {} KV blocks; {:?} {:?}; plan {}]",
                gens.len(),
                stats.decode_tokens,
                secs,
                if secs > 0.0 { stats.decode_tokens as f64 / secs } else { 0.0 },
                stats.prefill_steps,
                stats.decode_steps,
                stats.max_batch,
                stats.preemptions,
                stats.prefix_hit_tokens,
                stats.blocks,
                args.device,
                dtype,
                engine.model.plan().summary()
            );
        }
        Format::Json => {
            let out = BatchJson { model: dir.display().to_string(), generations: &gens, stats: &stats };
            println!("{}", serde_json::to_string(&out)?);
        }
    }
    Ok(())
}
