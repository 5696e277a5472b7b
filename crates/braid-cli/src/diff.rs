//! `braid-cli diff`: one prompt through several paths, compared tap by tap with the float32
//! reference (the truth): bf16 (or f16) reference, fused `torch` mode, fused `f32` mode, and,
//! with `--against`, activations dumped from Hugging Face transformers by `scripts/hf_dump.py`.
//! Taps are the intermediate tensors of `braid_model::taps` (input norm, q/k/v, q/k after norm
//! and RoPE, attention output, o_proj, residual, post norm, MLP activation and output, layer
//! output, final norm, logits). Per tap: relative L2 error, cosine, max-abs; per layer the
//! growth of the error; the first layer and tap where a fused path is worse than the
//! low-precision reference by more than a margin; the last position's logits (max-abs, KL,
//! top-1) and greedy agreement over N tokens. `--write-plan` also calibrates the automatic plan.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use braid_engine::Tokenizer;
use braid_engine::sampler::argmax;
use braid_model::taps::{LAYER_TAPS, layer_tap};
use braid_model::{DType, HostTaps, KernelPlan, Qwen3};
use serde::Serialize;

use crate::autoplan;
use crate::device::{self, DTypeArg, DeviceArg};
use crate::generate::{Format, default_model};
use crate::probe::{Probe, probe};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Model folder (default: as `generate`).
    #[arg(long)]
    model: Option<PathBuf>,
    /// The prompt compared (the first one given); more `--prompt`s are used for `--write-plan`'s
    /// calibration. Optional with `--against` (the dump holds its token ids).
    #[arg(long)]
    prompt: Vec<String>,
    /// A tap dump from `scripts/hf_dump.py` (safetensors): adds Hugging Face transformers as a
    /// path, on the dump's token ids.
    #[arg(long)]
    against: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = DeviceArg::Cpu)]
    device: DeviceArg,
    /// Where the float32 truth runs (default: --device). On CUDA, Burn's f32 matmul is only
    /// TF32-accurate (~1e-3 relative); `--truth-device cpu` gives an exact f32 truth.
    #[arg(long, value_enum)]
    truth_device: Option<DeviceArg>,
    /// The low-precision dtype of the compared paths (the truth is f32).
    #[arg(long, value_enum, default_value_t = DTypeArg::Bf16)]
    dtype: DTypeArg,
    /// Greedy tokens to compare after the prompt.
    #[arg(long, default_value_t = 32)]
    new_tokens: usize,
    /// A fused path is "worse" at a tap when its error exceeds the reference's by this factor.
    #[arg(long, default_value_t = 1.1)]
    margin: f64,
    /// Print every layer's taps, not only the layer outputs and each tap's worst layer.
    #[arg(long)]
    taps: bool,
    /// Calibrate the automatic plan on the prompts and write it here (JSON plan file).
    #[arg(long)]
    write_plan: Option<PathBuf>,
    /// With --write-plan: a candidate is accepted when its per-op error is at most the
    /// reference's times this (default: calibrate::DEFAULT_MARGIN).
    #[arg(long, default_value_t = braid_model::calibrate::DEFAULT_MARGIN)]
    plan_margin: f64,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

/// One tap of one path against the truth.
#[derive(Serialize, Clone)]
struct TapReport {
    name: String,
    layer: Option<usize>,
    tap: String,
    rel_err: f64,
    cosine: f64,
    max_abs: f64,
}

#[derive(Serialize)]
struct PathReport {
    name: String,
    /// Every tap the path recorded, in forward order.
    taps: Vec<TapReport>,
    /// Per layer: relative L2 error of the residual stream after the layer.
    rel_err: Vec<f64>,
    cosine: Vec<f64>,
    max_abs: Vec<f64>,
    logits_max_abs: f64,
    kl: f64,
    top1_agrees: bool,
    /// Greedy tokens equal to the truth's before the first difference (`None` when the path
    /// has no greedy continuation).
    greedy_agree: Option<usize>,
    /// First layer whose output error exceeds the low-precision reference's by the margin.
    first_worse_layer: Option<usize>,
    /// First tap (forward order) whose error exceeds the reference's at the same tap.
    first_worse_tap: Option<String>,
}

#[derive(Serialize)]
struct DiffReport {
    model: String,
    prompt_tokens: usize,
    dtype: String,
    against: Option<String>,
    paths: Vec<PathReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    plan: Option<serde_json::Value>,
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
    if num.is_nan() {
        return (f64::NAN, f64::NAN, f64::NAN);
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

/// Tap names in forward order.
fn tap_order(layers: usize) -> Vec<(String, Option<usize>, &'static str)> {
    let mut v = vec![("embed".to_string(), None, "embed")];
    for l in 0..layers {
        v.extend(LAYER_TAPS.iter().map(|t| (layer_tap(l, t), Some(l), *t)));
    }
    v.push(("norm".into(), None, "norm"));
    v.push(("logits".into(), None, "logits"));
    v
}

/// Compares a path's taps with the truth's; the reference's per-tap errors (if given) define
/// "worse".
fn report(
    name: String,
    path: &HostTaps,
    greedy: Option<&[u32]>,
    truth: &Probe,
    layers: usize,
    reference: Option<&PathReport>,
    margin: f64,
) -> Result<PathReport> {
    let mut taps = Vec::new();
    for (full, layer, tap) in tap_order(layers) {
        let (Some(got), Some(want)) = (path.get(&full), truth.taps.get(&full)) else { continue };
        if got.len() != want.len() {
            bail!("tap `{full}`: {} values, but the f32 reference has {}", got.len(), want.len());
        }
        let (rel_err, cosine, max_abs) = compare(got, want);
        taps.push(TapReport { name: full, layer, tap: tap.into(), rel_err, cosine, max_abs });
    }
    let out = |l: usize| taps.iter().find(|t| t.layer == Some(l) && t.tap == "output");
    let per: Vec<(f64, f64, f64)> =
        (0..layers).map(|l| out(l).map_or((f64::NAN, f64::NAN, f64::NAN), |t| (t.rel_err, t.cosine, t.max_abs))).collect();
    let rel_err: Vec<f64> = per.iter().map(|p| p.0).collect();
    let ref_err = |n: &str| reference.and_then(|r| r.taps.iter().find(|t| t.name == n)).map(|t| t.rel_err);
    // NaN counts as worse.
    let above = |e: f64, r: f64| matches!(e.partial_cmp(&(r * margin)), Some(std::cmp::Ordering::Greater) | None);
    let worse = |t: &&TapReport| ref_err(&t.name).is_some_and(|r| above(t.rel_err, r));
    let first_worse_layer = reference.and_then(|r| (0..layers).find(|&l| above(rel_err[l], r.rel_err[l])));
    let first_worse_tap = reference.and_then(|_| taps.iter().find(worse).map(|t| t.name.clone()));
    let logits = path.get("logits").context("the path has no logits")?;
    Ok(PathReport {
        name,
        cosine: per.iter().map(|p| p.1).collect(),
        max_abs: per.iter().map(|p| p.2).collect(),
        rel_err,
        logits_max_abs: compare(logits, &truth.logits).2,
        kl: kl(&truth.logits, logits),
        top1_agrees: argmax(logits) == argmax(&truth.logits),
        greedy_agree: greedy.map(|g| g.iter().zip(&truth.greedy).take_while(|(a, b)| a == b).count()),
        first_worse_layer,
        first_worse_tap,
        taps,
    })
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
    let mut prompts: Vec<Vec<u32>> = args.prompt.iter().map(|p| tokenizer.encode(p)).collect::<Result<_, _>>()?;
    let against = match &args.against {
        Some(path) => {
            let (taps, ints, meta) = braid_model::taps::HostTaps::load(path)?;
            let ids = ints.get("input_ids").with_context(|| format!("{}: no `input_ids` tensor", path.display()))?;
            let ids: Vec<u32> = ids.iter().map(|&i| u32::try_from(i)).collect::<Result<_, _>>()
                .with_context(|| format!("{}: `input_ids` holds a negative id", path.display()))?;
            match prompts.first() {
                Some(p) if *p != ids => bail!(
                    "{}: the dump's input_ids differ from --prompt's encoding; omit --prompt to use the dump's",
                    path.display()
                ),
                Some(_) => {}
                None => prompts.push(ids),
            }
            let greedy: Option<Vec<u32>> = ints.get("greedy").map(|g| g.iter().map(|&i| i as u32).collect());
            let label = format!("HF transformers {}", meta.get("dtype").map_or("?", String::as_str));
            Some((label, taps, greedy))
        }
        None => None,
    };
    if prompts.is_empty() {
        bail!("give --prompt (or --against with a dump)");
    }
    if prompts.iter().any(Vec::is_empty) {
        bail!("a prompt encodes to no tokens");
    }
    let load = |dtype: DType| {
        Qwen3::load(&dir, &device, dtype, &mut |_, _| {}).with_context(|| format!("loading {}", dir.display()))
    };
    let truth_device = match args.truth_device {
        Some(d) if d != args.device => device::open(d)?,
        _ => device.clone(),
    };
    let truth_model = Qwen3::load(&dir, &truth_device, DType::F32, &mut |_, _| {})
        .with_context(|| format!("loading {} in f32", dir.display()))?;
    let truth = probe(&truth_model, &prompts[0], args.new_tokens)?;
    // Calibration prompts: taps only.
    let mut calibration = vec![truth.taps.clone()];
    if args.write_plan.is_some() {
        for p in &prompts[1..] {
            calibration.push(probe(&truth_model, p, 0)?.taps);
        }
    }
    drop(truth_model);
    let mut model = load(low)?;
    let layers = model.config.num_hidden_layers;
    let mut paths: Vec<PathReport> = Vec::new();
    for (name, plan) in [
        (format!("{low:?} reference"), "reference"),
        (format!("{low:?} fused torch"), "fused"),
        (format!("{low:?} fused f32"), "fused-f32"),
    ] {
        model.set_plan(KernelPlan::parse(plan, &model.config)?)?;
        let r = probe(&model, &prompts[0], args.new_tokens)?;
        let rep = report(name, &r.taps, Some(&r.greedy), &truth, layers, paths.first(), args.margin)?;
        paths.push(rep);
    }
    if let Some((label, taps, greedy)) = &against {
        let rep = report(label.clone(), taps, greedy.as_deref(), &truth, layers, paths.first(), args.margin)?;
        if rep.taps.len() < 3 {
            bail!("{}: no tap of the dump matches a Braid tap name (see braid_model::taps)", args.against.as_ref().unwrap().display());
        }
        paths.push(rep);
    }
    let plan = match &args.write_plan {
        Some(out) => {
            let fp = autoplan::fingerprint(&dir)?;
            let plan = autoplan::calibrate(&dir, &fp, args.device, &mut model, &calibration, &prompts, args.plan_margin)?;
            std::fs::write(out, plan.to_json()).with_context(|| format!("writing {}", out.display()))?;
            eprintln!("wrote {} ({})", out.display(), plan.summary());
            plan.calibration
        }
        None => None,
    };
    let report = DiffReport {
        model: dir.display().to_string(),
        prompt_tokens: prompts[0].len(),
        dtype: format!("{low:?}"),
        against: args.against.as_ref().map(|p| p.display().to_string()),
        paths,
        plan,
    };
    match args.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        Format::Text => print_text(&report, args.new_tokens, args.margin, args.taps),
    }
    Ok(())
}

fn print_text(r: &DiffReport, n: usize, margin: f64, all_taps: bool) {
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

    let names: Vec<&str> =
        ["embed"].into_iter().chain(LAYER_TAPS).chain(["norm", "logits"]).collect();
    println!("\neach tap's worst layer: relative L2 error (layer)\n{:<11}", "tap");
    for tap in &names {
        print!("{tap:<11}");
        for p in &r.paths {
            let worst = p.taps.iter().filter(|t| t.tap == *tap).max_by(|a, b| a.rel_err.total_cmp(&b.rel_err));
            match worst {
                Some(t) => print!(" {:>20.3e} ({:>6})", t.rel_err, t.layer.map_or("-".into(), |l| l.to_string())),
                None => print!(" {:>29}", "(not materialised)"),
            }
        }
        println!();
    }
    if all_taps {
        println!("\nevery tap: relative L2 error / cosine");
        for t in &r.paths[0].taps {
            print!("{:<24}", t.name);
            for p in &r.paths {
                match p.taps.iter().find(|x| x.name == t.name) {
                    Some(x) => print!(" {:>10.3e} {:.6}", x.rel_err, x.cosine),
                    None => print!(" {:>19}", "-"),
                }
            }
            println!();
        }
    }

    println!(
        "\n{:<28} {:>12} {:>10} {:>6} {:>11} {:>20} {:>26}",
        "path", "logit maxabs", "KL", "top-1", format!("greedy /{n}"), "first layer worse", "first tap worse"
    );
    for p in &r.paths {
        println!(
            "{:<28} {:>12.4} {:>10.3e} {:>6} {:>11} {:>20} {:>26}",
            p.name,
            p.logits_max_abs,
            p.kl,
            if p.top1_agrees { "same" } else { "DIFF" },
            p.greedy_agree.map_or("-".into(), |g| g.to_string()),
            p.first_worse_layer.map_or("-".into(), |l| format!("layer {l}")),
            p.first_worse_tap.clone().unwrap_or("-".into()),
        );
    }
    println!("(worse = error above the {} reference's by more than x{margin})", r.dtype);
    if let Some(est) = r.plan.as_ref().and_then(|p| p.get("estimated_decode_us")) {
        println!("\nautomatic plan, estimated decode time per token from measured op times (us): {est}");
    }
}
