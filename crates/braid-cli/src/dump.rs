//! `braid-cli dump`: runs token-id prompts through the model under a plan and writes what the
//! accuracy comparison needs: the residual stream after every layer, the last position's logits
//! (safetensors) and a greedy continuation (JSON). `scripts/accuracy.py` reads them.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use braid_model::{KernelPlan, Qwen3, Qwen3Config};
use safetensors::tensor::{Dtype, TensorView};
use serde::Serialize;

use crate::device::{self, DTypeArg, DeviceArg};
use crate::probe::probe;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[arg(long)]
    model: PathBuf,
    /// JSON file: a list of prompts, each a list of token ids.
    #[arg(long)]
    ids: PathBuf,
    #[arg(long, default_value = "reference")]
    plan: String,
    #[arg(long, value_enum, default_value_t = DeviceArg::Cpu)]
    device: DeviceArg,
    #[arg(long, value_enum, default_value_t = DTypeArg::F32)]
    dtype: DTypeArg,
    /// Greedy tokens to generate after each prompt.
    #[arg(long, default_value_t = 0)]
    new_tokens: usize,
    /// Output prefix: writes PREFIX.safetensors and PREFIX.json.
    #[arg(long)]
    out: PathBuf,
}

#[derive(Serialize)]
struct Meta {
    plan: String,
    dtype: String,
    device: String,
    greedy: Vec<Vec<u32>>,
}

pub fn run(args: Args) -> Result<()> {
    let config = Qwen3Config::from_file(&args.model.join("config.json"))?;
    let prompts: Vec<Vec<u32>> = serde_json::from_str(
        &std::fs::read_to_string(&args.ids).with_context(|| format!("reading {}", args.ids.display()))?,
    )
    .with_context(|| format!("{}: expected a JSON list of lists of token ids", args.ids.display()))?;
    if prompts.is_empty() || prompts.iter().any(Vec::is_empty) {
        bail!("{}: every prompt needs at least one token", args.ids.display());
    }
    let device = device::open(args.device)?;
    let dtype = args.dtype.dtype();
    let mut model = Qwen3::load(&args.model, &device, dtype, &mut |_, _| {})?;
    model.set_plan(KernelPlan::parse(&args.plan, &config)?)?;

    let mut tensors: Vec<(String, Vec<u8>, Vec<usize>)> = Vec::new();
    let mut greedy = Vec::new();
    for (i, ids) in prompts.iter().enumerate() {
        let p = probe(&model, ids, args.new_tokens)?;
        let layers: Vec<u8> =
            (0..config.num_hidden_layers).flat_map(|l| p.layer_output(l).to_vec()).flat_map(|v| v.to_le_bytes()).collect();
        tensors.push((format!("p{i}.layers"), layers, vec![config.num_hidden_layers, ids.len(), config.hidden_size]));
        let logits = p.logits.iter().flat_map(|v| v.to_le_bytes()).collect();
        tensors.push((format!("p{i}.logits"), logits, vec![p.logits.len()]));
        greedy.push(p.greedy);
    }
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|(n, b, s)| (n.clone(), TensorView::new(Dtype::F32, s.clone(), b).expect("consistent view")))
        .collect();
    let st = args.out.with_extension("safetensors");
    safetensors::serialize_to_file(views, None, &st).with_context(|| format!("writing {}", st.display()))?;
    let meta = Meta {
        plan: model.plan().summary(),
        dtype: format!("{dtype:?}"),
        device: format!("{:?}", args.device),
        greedy,
    };
    let js = args.out.with_extension("json");
    std::fs::write(&js, serde_json::to_string(&meta)?).with_context(|| format!("writing {}", js.display()))?;
    Ok(())
}
