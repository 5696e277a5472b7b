//! The automatic kernel plan: per layer and per op, the fastest of `reference`, `fused-torch`
//! and `fused-f32` whose error against float32 stays within the low-precision reference's own.
//!
//! Errors are measured op by op, teacher-forced: every candidate of an op gets the float32
//! model's inputs to that op (the taps of [`crate::taps`], rounded to the compute dtype) and is
//! compared with the float32 model's output of that op (relative L2 error, summed over the
//! calibration prompts). So an op's error is its own, not what earlier layers passed on. Times
//! are measured per op and candidate at the decode shape (one row, the prompt as the cache),
//! on layer 0's weights, on the model's device.

use std::collections::BTreeMap;

use burn::tensor::{DType, Device, Tensor};
use serde::Serialize;

use crate::kv_cache::LayerCache;
use crate::nn::DecoderLayer;
use crate::ops::Precision;
use crate::plan::{KernelPlan, LayerPlan, OpChoice};
use crate::taps::{HostTaps, layer_tap};
use crate::{Qwen3, to_host_f32};

/// The ops a plan chooses for, in plan order, with `lm_head` last.
pub const PLAN_OPS: [&str; 7] = ["rms_norm_qkv", "qk_norm_rope", "attention", "add_rms_norm", "silu_mul", "linear", "lm_head"];

/// The candidates of an op: the plain GEMV ops (`linear`, `lm_head`) have no precision mode.
pub fn candidates(op: &str) -> Vec<OpChoice> {
    match op {
        "linear" | "lm_head" => vec![OpChoice::Reference, OpChoice::Fused(Precision::Torch)],
        _ => vec![OpChoice::Reference, OpChoice::Fused(Precision::Torch), OpChoice::Fused(Precision::F32)],
    }
}

/// The default acceptance margin: a candidate within 5% of the reference's error counts as
/// equally accurate. Paths with the same rounding points differ only by summation order, which
/// moves a teacher-forced op error by a fraction of a percent either way (on the 0.6B shape,
/// H200: fused `linear` 2.368e-3 against the reference's 2.367e-3); at 1.0 such noise would hand
/// a layer to a path 3.6x slower.
pub const DEFAULT_MARGIN: f64 = 1.05;

/// Calibration settings.
#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    /// A candidate is accepted when its error is at most the reference's times this.
    pub margin: f64,
    /// Calls per timing batch (median of 5 batches).
    pub iters: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Self { margin: DEFAULT_MARGIN, iters: 20 }
    }
}

/// One op of one layer (`layer: None` for `lm_head`).
#[derive(Debug, Clone, Serialize)]
pub struct OpReport {
    pub layer: Option<usize>,
    pub op: &'static str,
    /// Relative L2 error against float32 per candidate (`reference`, `fused-torch`, ...).
    pub errors: BTreeMap<String, f64>,
    pub chosen: OpChoice,
}

/// What calibration measured and chose.
#[derive(Debug, Clone, Serialize)]
pub struct Calibration {
    pub settings: Settings,
    /// Microseconds per call at the decode shape, per op and candidate.
    pub times_us: BTreeMap<String, BTreeMap<String, f64>>,
    /// Candidates an op could not use on this model (why).
    pub unavailable: BTreeMap<String, String>,
    pub ops: Vec<OpReport>,
    #[serde(skip)]
    pub plan: KernelPlan,
}

/// Accumulated squared error and squared truth.
#[derive(Default, Clone, Copy)]
struct Acc {
    num: f64,
    den: f64,
}

impl Acc {
    fn add(&mut self, got: Tensor<2>, truth: &[f32]) {
        let got = to_host_f32(got);
        assert_eq!(got.len(), truth.len(), "a tap and its op output differ in size");
        for (g, t) in got.iter().zip(truth) {
            let (g, t) = (*g as f64, *t as f64);
            self.num += (g - t) * (g - t);
            self.den += t * t;
        }
    }

    fn rel(&self) -> f64 {
        if self.num.is_nan() { f64::INFINITY } else { (self.num / self.den.max(1e-300)).sqrt() }
    }
}

/// Why a fused choice of `op` cannot run on this model, if it cannot.
fn unavailable(model: &Qwen3, op: &str, c: OpChoice) -> Option<String> {
    if c == OpChoice::Reference {
        return None;
    }
    let n = model.config.num_hidden_layers;
    let mut plan = KernelPlan::uniform(n, OpChoice::Reference);
    let mut layer = LayerPlan::default();
    match op {
        "rms_norm_qkv" => layer.rms_norm_qkv = c,
        "qk_norm_rope" => layer.qk_norm_rope = c,
        "attention" => layer.attention = c,
        "add_rms_norm" => layer.add_rms_norm = c,
        "silu_mul" => layer.silu_mul = c,
        "linear" => layer.linear = c,
        _ => plan.lm_head = c,
    }
    plan.layers = vec![layer; n];
    plan.check(&model.config).err()
}

/// The inputs of one layer's ops, from the float32 taps, on the device in the compute dtype.
struct Inputs<'a> {
    taps: &'a HostTaps,
    layer: usize,
    device: Device,
    dtype: DType,
}

impl Inputs<'_> {
    fn get(&self, tap: &str) -> Tensor<2> {
        let name = if tap == "input" {
            if self.layer == 0 { "embed".to_string() } else { layer_tap(self.layer - 1, "output") }
        } else {
            layer_tap(self.layer, tap)
        };
        self.taps
            .tensor(&name, &self.device, self.dtype)
            .unwrap_or_else(|| panic!("the float32 taps lack `{name}`"))
    }

    fn truth(&self, tap: &str) -> &[f32] {
        let name = layer_tap(self.layer, tap);
        self.taps.get(&name).unwrap_or_else(|| panic!("the float32 taps lack `{name}`"))
    }
}

/// Runs op `op` of `layer` with choice `c` on the float32 inputs and adds its error to `acc`.
fn measure(model: &Qwen3, layer: &DecoderLayer, op: &str, c: OpChoice, x: &Inputs<'_>, acc: &mut Acc) {
    let a = &layer.self_attn;
    let t = x.taps.get("embed").expect("the float32 taps lack `embed`").len() / model.config.hidden_size;
    let shape = a.shape(1, t);
    let (hd, kv) = (a.head_dim, a.num_kv_heads);
    match op {
        "rms_norm_qkv" => {
            let (q, k, v, _) = layer.qkv(x.get("input"), c);
            acc.add(q, x.truth("q"));
            acc.add(k, x.truth("k"));
            acc.add(v, x.truth("v"));
        }
        "qk_norm_rope" => {
            let rope = model.rotary.tables(0, t, &x.device);
            let (q, k, _) = layer.norm_rope(x.get("q"), x.get("k"), x.get("v"), &rope, shape, c);
            acc.add(q.reshape([a.num_heads * t, hd]), x.truth("q_rope"));
            acc.add(k.reshape([kv * t, hd]), x.truth("k_rope"));
        }
        "attention" => {
            let (q, k, v) = attention_inputs(x, a.num_heads, kv, t, hd);
            let mut cache = empty_cache(kv, t, hd, &x.device, x.dtype);
            acc.add(layer.attention(q, k, v, &mut cache, 0, c), x.truth("attn"));
        }
        "linear" => {
            acc.add(layer.o_proj(x.get("attn"), c), x.truth("o_proj"));
            acc.add(layer.down(x.get("mlp_act"), c), x.truth("mlp_out"));
        }
        "add_rms_norm" => {
            let (r, h) = layer.add_norm(x.get("input"), x.get("o_proj"), c);
            acc.add(r, x.truth("residual"));
            acc.add(h, x.truth("post_norm"));
        }
        "silu_mul" => acc.add(layer.gate_up(x.get("post_norm"), c), x.truth("mlp_act")),
        other => unreachable!("no layer op `{other}`"),
    }
}

/// `q: [1, heads, t, hd]`, `k, v: [1, kv, t, hd]` from the taps.
fn attention_inputs(x: &Inputs<'_>, heads: usize, kv: usize, t: usize, hd: usize) -> (Tensor<4>, Tensor<4>, Tensor<4>) {
    let q = x.get("q_rope").reshape([1, heads, t, hd]);
    let k = x.get("k_rope").reshape([1, kv, t, hd]);
    let v = x.get("v").reshape([1, t, kv, hd]).swap_dims(1, 2);
    (q, k, v)
}

fn empty_cache(kv: usize, t: usize, hd: usize, device: &Device, dtype: DType) -> LayerCache {
    LayerCache { k: Tensor::zeros([1, kv, t, hd], (device, dtype)), v: Tensor::zeros([1, kv, t, hd], (device, dtype)) }
}

/// Seconds per call of op `op` with choice `c` at the decode shape: the last row of the first
/// prompt's float32 inputs (attention: that row's query over every prompt position).
fn time_op(model: &Qwen3, op: &str, c: OpChoice, x: &Inputs<'_>, iters: usize) -> Result<f64, String> {
    let layer = &model.model.layers[0];
    let a = &layer.self_attn;
    let t = x.taps.get("embed").map_or(1, |e| e.len() / model.config.hidden_size);
    let last = |tap: &str| {
        let m = x.get(tap);
        let rows = m.dims()[0];
        m.narrow(0, rows - 1, 1)
    };
    let device = &x.device;
    let rope = model.rotary.tables(t - 1, 1, device);
    let shape = a.shape(1, 1);
    let (hd, kv, heads) = (a.head_dim, a.num_kv_heads, a.num_heads);
    match op {
        "rms_norm_qkv" => {
            let i = last("input");
            crate::timing::per_call(device, iters, 5, || drop(layer.qkv(i.clone(), c)))
        }
        "qk_norm_rope" => {
            let (q, k, v) = (last("q"), last("k"), last("v"));
            crate::timing::per_call(device, iters, 5, || drop(layer.norm_rope(q.clone(), k.clone(), v.clone(), &rope, shape, c)))
        }
        "attention" => {
            let (q, k, v) = attention_inputs(x, heads, kv, t, hd);
            let q = q.narrow(2, t - 1, 1);
            let (k_new, v_new) = (k.clone().narrow(2, t - 1, 1), v.clone().narrow(2, t - 1, 1));
            let mut cache = empty_cache(kv, t, hd, device, x.dtype);
            cache.append(0, k, v);
            crate::timing::per_call(device, iters, 5, || {
                drop(layer.attention(q.clone(), k_new.clone(), v_new.clone(), &mut cache, t - 1, c))
            })
        }
        "linear" => {
            let (i, m) = (last("attn"), last("mlp_act"));
            crate::timing::per_call(device, iters, 5, || {
                drop(layer.o_proj(i.clone(), c));
                drop(layer.down(m.clone(), c));
            })
        }
        "add_rms_norm" => {
            let (r, o) = (last("input"), last("o_proj"));
            crate::timing::per_call(device, iters, 5, || drop(layer.add_norm(r.clone(), o.clone(), c)))
        }
        "silu_mul" => {
            let h = last("post_norm");
            crate::timing::per_call(device, iters, 5, || drop(layer.gate_up(h.clone(), c)))
        }
        _ => {
            let n = x.taps.tensor("norm", device, x.dtype).expect("the float32 taps lack `norm`");
            let rows = n.dims()[0];
            let n = n.narrow(0, rows - 1, 1);
            crate::timing::per_call(device, iters, 5, || drop(model.head_with(n.clone(), c)))
        }
    }
}

/// Picks, among candidates whose error is within `margin` of the reference's, the fastest; a
/// candidate within 5% of the fastest time with a lower error wins over it.
fn choose(errors: &[(OpChoice, f64)], times: &BTreeMap<String, f64>, margin: f64) -> OpChoice {
    let reference = errors.iter().find(|(c, _)| *c == OpChoice::Reference).map_or(f64::INFINITY, |e| e.1);
    let time = |c: &OpChoice| times.get(&c.to_string()).copied().unwrap_or(f64::INFINITY);
    let ok: Vec<&(OpChoice, f64)> =
        errors.iter().filter(|(c, e)| *c == OpChoice::Reference || *e <= reference * margin).collect();
    let fastest = ok.iter().map(|(c, _)| time(c)).fold(f64::INFINITY, f64::min);
    ok.iter()
        .filter(|(c, _)| time(c) <= fastest * 1.05)
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .map_or(OpChoice::Reference, |(c, _)| *c)
}

/// Calibrates `model` (any compute dtype) against float32 `truths`: the taps of the float32
/// reference model on each calibration prompt (see `braid-cli diff`, which records them).
pub fn calibrate(model: &Qwen3, truths: &[HostTaps], settings: Settings) -> Result<Calibration, String> {
    let first = truths.first().ok_or("calibration needs at least one prompt")?;
    let (device, dtype) = (model.device(), model.dtype());
    let n = model.config.num_hidden_layers;
    let mut unavail = BTreeMap::new();
    let mut usable: BTreeMap<&str, Vec<OpChoice>> = BTreeMap::new();
    for op in PLAN_OPS {
        for c in candidates(op) {
            match unavailable(model, op, c) {
                Some(why) => {
                    unavail.insert(format!("{op} {c}"), why);
                }
                None => usable.entry(op).or_default().push(c),
            }
        }
    }

    // Times at the decode shape, layer 0, first prompt.
    let mut times_us: BTreeMap<String, BTreeMap<String, f64>> = BTreeMap::new();
    let x0 = Inputs { taps: first, layer: 0, device: device.clone(), dtype };
    for op in PLAN_OPS {
        for &c in &usable[op] {
            let s = time_op(model, op, c, &x0, settings.iters)?;
            times_us.entry(op.to_string()).or_default().insert(c.to_string(), s * 1e6);
        }
    }

    // Errors, teacher-forced, summed over prompts.
    let mut plan = KernelPlan::uniform(n, OpChoice::Reference);
    let mut ops = Vec::new();
    for (l, layer) in model.model.layers.iter().enumerate() {
        for op in &PLAN_OPS[..6] {
            let mut errors = Vec::new();
            for &c in &usable[op] {
                let mut acc = Acc::default();
                for taps in truths {
                    let x = Inputs { taps, layer: l, device: device.clone(), dtype };
                    measure(model, layer, op, c, &x, &mut acc);
                }
                errors.push((c, acc.rel()));
            }
            let chosen = choose(&errors, &times_us[*op], settings.margin);
            let slot = &mut plan.layers[l];
            match *op {
                "rms_norm_qkv" => slot.rms_norm_qkv = chosen,
                "qk_norm_rope" => slot.qk_norm_rope = chosen,
                "attention" => slot.attention = chosen,
                "add_rms_norm" => slot.add_rms_norm = chosen,
                "silu_mul" => slot.silu_mul = chosen,
                _ => slot.linear = chosen,
            }
            ops.push(OpReport {
                layer: Some(l),
                op,
                errors: errors.iter().map(|(c, e)| (c.to_string(), *e)).collect(),
                chosen,
            });
        }
    }
    let mut errors = Vec::new();
    for &c in &usable["lm_head"] {
        let mut acc = Acc::default();
        for taps in truths {
            let norm = taps.tensor("norm", &device, dtype).ok_or("the float32 taps lack `norm`")?;
            let rows = norm.dims()[0];
            let logits = taps.get("logits").ok_or("the float32 taps lack `logits`")?;
            acc.add(model.head_with(norm.narrow(0, rows - 1, 1), c), logits);
        }
        errors.push((c, acc.rel()));
    }
    plan.lm_head = choose(&errors, &times_us["lm_head"], settings.margin);
    ops.push(OpReport {
        layer: None,
        op: "lm_head",
        errors: errors.iter().map(|(c, e)| (c.to_string(), *e)).collect(),
        chosen: plan.lm_head,
    });
    plan.check(&model.config)?;
    Ok(Calibration { settings, times_us, unavailable: unavail, ops, plan })
}

impl Calibration {
    /// Estimated decode time of one token under `plan` from the measured op times (layer ops
    /// times layers, plus the head), in microseconds.
    pub fn estimate_us(&self, plan: &KernelPlan) -> f64 {
        let t = |op: &str, c: OpChoice| self.times_us.get(op).and_then(|m| m.get(&c.to_string())).copied().unwrap_or(0.0);
        let layers: f64 = plan
            .layers
            .iter()
            .map(|l| {
                t("rms_norm_qkv", l.rms_norm_qkv)
                    + t("qk_norm_rope", l.qk_norm_rope)
                    + t("attention", l.attention)
                    + t("add_rms_norm", l.add_rms_norm)
                    + t("silu_mul", l.silu_mul)
                    + t("linear", l.linear)
            })
            .sum();
        layers + t("lm_head", plan.lm_head)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn times(pairs: &[(OpChoice, f64)]) -> BTreeMap<String, f64> {
        pairs.iter().map(|(c, t)| (c.to_string(), *t)).collect()
    }

    #[test]
    fn choose_takes_the_fastest_accurate_candidate() {
        let (r, ft, f32) = (OpChoice::Reference, OpChoice::Fused(Precision::Torch), OpChoice::Fused(Precision::F32));
        let t = times(&[(r, 100.0), (ft, 10.0), (f32, 12.0)]);
        // torch within the reference's error and fastest
        assert_eq!(choose(&[(r, 1.0), (ft, 0.99), (f32, 0.5)], &t, 1.0), ft);
        // torch worse than the reference: f32 (accurate, next fastest)
        assert_eq!(choose(&[(r, 1.0), (ft, 1.2), (f32, 0.5)], &t, 1.0), f32);
        // both fused worse: reference
        assert_eq!(choose(&[(r, 1.0), (ft, 1.2), (f32, 1.3)], &t, 1.0), r);
        // a margin admits torch
        assert_eq!(choose(&[(r, 1.0), (ft, 1.2), (f32, 1.3)], &t, 1.25), ft);
        // within 5% of the fastest, the more accurate wins
        let t = times(&[(r, 100.0), (ft, 10.0), (f32, 10.4)]);
        assert_eq!(choose(&[(r, 1.0), (ft, 0.99), (f32, 0.5)], &t, 1.0), f32);
        // NaN error (a broken kernel) is never accepted
        assert_eq!(choose(&[(r, 1.0), (ft, f64::INFINITY), (f32, f64::INFINITY)], &t, 1.0), r);
    }
}
