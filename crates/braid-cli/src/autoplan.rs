//! The automatic kernel plan at the CLI edge: calibration on prompts (`diff --write-plan`) and
//! `generate --plan auto`, which loads the plan from the cache or calibrates and caches it. The
//! cache lives in `$BRAID_CACHE_DIR`, else the user's cache folder (`~/.cache/braid`), under
//! `plans/<checkpoint sha256 prefix>-<device>-<dtype>.json`, keyed by the SHA-256 of
//! `config.json` and the checkpoint's weight files.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use braid_engine::Tokenizer;
use braid_model::calibrate::{self, Settings};
use braid_model::{DType, HostTaps, KernelPlan, Qwen3};
use serde_json::json;

use crate::device::DeviceArg;
use crate::probe::probe;

/// Calibration prompts for `--plan auto`: plain English prose and code, 20-40 tokens each.
pub const PROMPTS: [&str; 3] = [
    "It is a truth universally acknowledged, that a single man in possession of a good fortune, must be in want of a wife.",
    "The river ran high that spring, and the mill below the village turned day and night while the farmers waited for the roads to dry.",
    "def mean(values):\n    total = sum(values)\n    return total / len(values) if values else 0.0\n",
];

/// SHA-256 of the checkpoint: `config.json` and the weight files (see
/// [`braid_model::Checkpoint::fingerprint`]).
pub fn fingerprint(dir: &Path) -> Result<String> {
    Ok(braid_model::Checkpoint::open(dir)?.fingerprint(dir)?)
}

fn cache_dir() -> Option<PathBuf> {
    std::env::var_os("BRAID_CACHE_DIR").map(PathBuf::from).or_else(|| dirs::cache_dir().map(|d| d.join("braid")))
}

/// Calibrates `model` against the float32 taps of `prompts` and returns the plan with its
/// `calibration` record (what it was calibrated on, per-op errors and times, estimates).
/// `fingerprint`: the checkpoint's SHA-256 ([`fingerprint`]), computed once by the caller.
pub fn calibrate(
    dir: &Path,
    fingerprint: &str,
    device: DeviceArg,
    model: &mut Qwen3,
    truths: &[HostTaps],
    prompts: &[Vec<u32>],
    margin: f64,
) -> Result<KernelPlan> {
    let settings = Settings { margin, ..Settings::default() };
    let cal = calibrate::calibrate(model, truths, settings).map_err(anyhow::Error::msg).context("calibrating the plan")?;
    let n = model.config.num_hidden_layers;
    let estimate = |spec: &str| cal.estimate_us(&KernelPlan::parse(spec, &model.config).expect("a preset"));
    let mut plan = cal.plan.clone();
    let created = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    plan.calibration = Some(json!({
        "calibrated_on": {
            "model": dir.display().to_string(),
            "checkpoint_sha256": fingerprint,
            "device": format!("{device:?}").to_lowercase(),
            "dtype": format!("{:?}", model.dtype()),
            "prompt_tokens": prompts.iter().map(Vec::len).collect::<Vec<_>>(),
            "layers": n,
            "braid_version": env!("CARGO_PKG_VERSION"),
            "created_unix": created,
        },
        "rule": "per layer and op, the fastest candidate whose teacher-forced relative L2 error against float32 is at most margin x the reference's",
        "estimated_decode_us": {
            "this plan": cal.estimate_us(&plan),
            "reference": estimate("reference"),
            "fused": estimate("fused"),
            "fused-f32": estimate("fused-f32"),
        },
        "measured": serde_json::to_value(&cal)?,
    }));
    Ok(plan)
}

/// `--plan auto`: the cached plan for this checkpoint, device and dtype, or a fresh calibration
/// (which loads the model once more in float32 on `device`), written to the cache.
pub fn resolve(dir: &Path, arg: DeviceArg, device: &braid_model::Device, model: &mut Qwen3, tokenizer: &Tokenizer) -> Result<KernelPlan> {
    let fp = fingerprint(dir)?;
    let name = format!("{}-{}-{:?}.json", &fp[..16], format!("{arg:?}").to_lowercase(), model.dtype()).to_lowercase();
    let cached = cache_dir().map(|d| d.join("plans").join(name));
    if let Some(path) = cached.as_ref().filter(|p| p.exists()) {
        match KernelPlan::from_file(path, &model.config) {
            Ok(plan) => {
                eprintln!("[plan auto: {} from {}]", plan.summary(), path.display());
                return Ok(plan);
            }
            Err(e) => eprintln!("[plan auto: ignoring the cached plan ({e}); calibrating again]"),
        }
    }
    eprintln!("[plan auto: calibrating on {} prompts against float32 ...]", PROMPTS.len());
    let prompts: Vec<Vec<u32>> = PROMPTS.iter().map(|p| tokenizer.encode(p)).collect::<Result<_, _>>()?;
    let truth = Qwen3::load(dir, device, DType::F32, &mut |_, _| {}).with_context(|| format!("loading {} in f32", dir.display()))?;
    let truths: Vec<HostTaps> = prompts.iter().map(|p| probe(&truth, p, 0).map(|r| r.taps)).collect::<Result<_>>()?;
    drop(truth);
    let plan = calibrate(dir, &fp, arg, model, &truths, &prompts, calibrate::DEFAULT_MARGIN)?;
    if let Some(path) = cached {
        let write = std::fs::create_dir_all(path.parent().expect("a parent"))
            .and_then(|_| std::fs::write(&path, plan.to_json()));
        match write {
            Ok(()) => eprintln!("[plan auto: {} written to {}]", plan.summary(), path.display()),
            Err(e) => eprintln!("[plan auto: could not cache the plan at {} ({e})]", path.display()),
        }
    }
    Ok(plan)
}
