//! `braid-cli diff`: one prompt through several paths, compared layer by layer with the float32
//! reference (the truth): bf16 (or f16) reference, fused `torch` mode and fused `f32` mode.
//! Per layer: relative L2 error, cosine and max-abs of the residual stream, and the growth of
//! the error from layer to layer; the first layer where a fused path is worse than the
//! low-precision reference by more than a margin; the last position's logits (max-abs, KL,
//! top-1) and greedy agreement over N tokens.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use braid_engine::Tokenizer;
use braid_engine::sampler::argmax;
use braid_model::{DType, KernelPlan, Qwen3};
use serde::Serialize;

use crate::device::{self, DTypeArg, DeviceArg};
use crate::generate::{Format, default_model};
use crate::probe::probe;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Model folder (default: as `generate`).
    #[arg(long)]
    model: Option<PathBuf>,
    #[arg(long)]
    prompt: String,
    #[arg(long, value_enum, default_value_t = DeviceArg::Cpu)]
    device: DeviceArg,
    /// The low-precision dtype of the compared paths (the truth is f32).
    #[arg(long, value_enum, default_value_t = DTypeArg::Bf16)]
    dtype: DTypeArg,
    /// Greedy tokens to compare after the prompt.
    #[arg(long, default_value_t = 32)]
    new_tokens: usize,
    /// A fused path is "worse" at a layer when its error exceeds the reference's by this factor.
    #[arg(long, default_value_t = 1.1)]
    margin: f64,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

#[derive(Serialize)]
struct PathReport {
    name: String,
    /// Per layer: relative L2 error of the residual stream against f32 (all positions).
    rel_err: Vec<f64>,
    cosine: Vec<f64>,
    max_abs: Vec<f64>,
    logits_max_abs: f64,
    kl: f64,
    top1_agrees: bool,
    greedy_agree: usize,
    /// First layer where this (fused) path's error exceeds the low-precision reference's by
    /// more than the margin.
    first_worse_layer: Option<usize>,
}

#[derive(Serialize)]
struct DiffReport {
    model: String,
    prompt_tokens: usize,
    dtype: String,
    paths: Vec<PathReport>,
}

fn compare(a: &[f32], b: &[f32]) -> (f64, f64, f64) {
    let (mut num, mut den, mut dot, mut na, mut max_abs) = (0f64, 0f64, 0f64, 0f64, 0f64);
    for (x, y) in a.iter().zip(b) {
        let (x, y) = (*x as f64, *y as f64);
        num += (x - y) * (x - y);
        den += y * y;
        dot += x * y;
        na += x * x;
        max_abs = max_abs.max((x - y).abs());
    }
    (num.sqrt() / den.sqrt().max(1e-30), dot / (na.sqrt() * den.sqrt()).max(1e-30), max_abs)
}

fn kl(truth: &[f32], path: &[f32]) -> f64 {
    let lse = |v: &[f32]| {
        let m = v.iter().cloned().fold(f32::MIN, f32::max) as f64;
        m + v.iter().map(|x| (*x as f64 - m).exp()).sum::<f64>().ln()
    };
    let (lt, lp) = (lse(truth), lse(path));
    truth.iter().zip(path).map(|(t, p)| {
        let (a, b) = (*t as f64 - lt, *p as f64 - lp);
        a.exp() * (a - b)
    }).sum()
}

pub fn run_cmd(args: Args) -> Result<()> {
    let dir = match &args.model {
        Some(d) => d.clone(),
        None => default_model()?,
    };
    let device = device::open(args.device)?;
    let low = args.dtype.dtype();
    if !device.supports_dtype(low) {
        bail!("{:?} does not support {low:?}", args.device);
    }
    let tokenizer = Tokenizer::from_file(&dir.join("tokenizer.json"))?;
    let ids = tokenizer.encode(&args.prompt)?;
    if ids.is_empty() {
        bail!("the prompt encodes to no tokens");
    }
    let load = |dtype: DType| {
        Qwen3::load(&dir, &device, dtype, &mut |_, _| {}).with_context(|| format!("loading {}", dir.display()))
    };
    let truth_model = load(DType::F32)?;
    let truth = probe(&truth_model, &ids, args.new_tokens)?;
    drop(truth_model);
    let mut model = load(low)?;
    let layers = model.config.num_hidden_layers;
    let mut paths = Vec::new();
    let mut reference_err: Option<Vec<f64>> = None;
    for (name, plan) in [
        (format!("{low:?} reference"), "reference"),
        (format!("{low:?} fused torch"), "fused"),
        (format!("{low:?} fused f32"), "fused-f32"),
    ] {
        model.set_plan(KernelPlan::parse(plan, &model.config)?)?;
        let r = probe(&model, &ids, args.new_tokens)?;
        let per: Vec<(f64, f64, f64)> = (0..layers).map(|l| compare(&r.layers[l], &truth.layers[l])).collect();
        let rel_err: Vec<f64> = per.iter().map(|p| p.0).collect();
        let first_worse_layer = reference_err
            .as_ref()
            .and_then(|re| (0..layers).find(|&l| rel_err[l] > re[l] * args.margin));
        if plan == "reference" {
            reference_err = Some(rel_err.clone());
        }
        let greedy_agree = r.greedy.iter().zip(&truth.greedy).take_while(|(a, b)| a == b).count();
        paths.push(PathReport {
            name,
            cosine: per.iter().map(|p| p.1).collect(),
            max_abs: per.iter().map(|p| p.2).collect(),
            rel_err,
            logits_max_abs: compare(&r.logits, &truth.logits).2,
            kl: kl(&truth.logits, &r.logits),
            top1_agrees: argmax(&r.logits) == argmax(&truth.logits),
            greedy_agree,
            first_worse_layer,
        });
    }
    let report = DiffReport { model: dir.display().to_string(), prompt_tokens: ids.len(), dtype: format!("{low:?}"), paths };
    match args.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        Format::Text => print_text(&report, args.new_tokens, args.margin),
    }
    Ok(())
}

fn print_text(r: &DiffReport, n: usize, margin: f64) {
    println!("{} ({} prompt tokens), every path against the f32 reference", r.model, r.prompt_tokens);
    print!("\nresidual stream after each layer, relative L2 error (growth from the previous layer)\n{:>5}", "layer");
    for p in &r.paths {
        print!(" {:>31}", p.name);
    }
    println!();
    let layers = r.paths[0].rel_err.len();
    for l in 0..layers {
        print!("{l:>5}");
        for p in &r.paths {
            let growth = if l > 0 && p.rel_err[l - 1] > 0.0 { p.rel_err[l] / p.rel_err[l - 1] } else { 1.0 };
            print!(" {:>9.3e} (x{:>4.2}) cos {:.5}", p.rel_err[l], growth, p.cosine[l]);
        }
        println!();
    }
    println!("\n{:<26} {:>12} {:>10} {:>6} {:>14} {:>22}", "path", "logit maxabs", "KL", "top-1", format!("greedy /{n}"), "first layer worse");
    for p in &r.paths {
        println!(
            "{:<26} {:>12.4} {:>10.3e} {:>6} {:>14} {:>22}",
            p.name,
            p.logits_max_abs,
            p.kl,
            if p.top1_agrees { "same" } else { "DIFF" },
            p.greedy_agree,
            match p.first_worse_layer {
                Some(l) => format!("layer {l} (> x{margin})"),
                None => "-".into(),
            }
        );
    }
}
