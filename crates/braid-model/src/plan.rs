//! The kernel plan: per layer and per op, the reference path or a fused kernel in a precision
//! mode. Presets (`reference`, `fused`, `fused-f32`) or a JSON file:
//!
//! ```json
//! { "all": { "rms_norm_qkv": "fused-f32", "qk_norm_rope": "fused", "attention": "fused",
//!            "add_rms_norm": "fused", "silu_mul": "reference" },
//!   "layers": { "0": { "rms_norm_qkv": "reference" } },
//!   "lm_head": "fused" }
//! ```
//!
//! `all` (optional, default `reference`) applies to every layer; `layers` overrides single ops of
//! single layers; `lm_head` (default `reference`) is the head. Op values: `reference`, `fused`
//! (= `fused-torch`) or `fused-f32`. An automatic plan (`braid-cli diff --write-plan`,
//! `generate --plan auto`) also carries a `calibration` object: what it was calibrated on and
//! the errors and times it chose from (see [`crate::calibrate`]).

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::config::Qwen3Config;
use crate::error::LoadError;
use crate::ops::Precision;

/// The preset name of [`KernelPlan::fused_attn_f32`].
pub const FUSED_ATTN_F32: &str = "fused-attn-f32";

/// How one op of one layer runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum OpChoice {
    /// The unfused path of `nn` (PyTorch's ops and rounding points).
    #[default]
    Reference,
    /// The fused op (a CubeCL kernel; its reference twin on Flex).
    Fused(Precision),
}

impl fmt::Display for OpChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpChoice::Reference => f.write_str("reference"),
            OpChoice::Fused(Precision::Torch) => f.write_str("fused-torch"),
            OpChoice::Fused(Precision::F32) => f.write_str("fused-f32"),
        }
    }
}

impl FromStr for OpChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "reference" => Ok(OpChoice::Reference),
            "fused" | "fused-torch" => Ok(OpChoice::Fused(Precision::Torch)),
            "fused-f32" => Ok(OpChoice::Fused(Precision::F32)),
            _ => Err(format!("unknown op choice `{s}` (reference, fused, fused-torch, fused-f32)")),
        }
    }
}

impl TryFrom<String> for OpChoice {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<OpChoice> for String {
    fn from(c: OpChoice) -> String {
        c.to_string()
    }
}

/// The choices for one decoder layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LayerPlan {
    /// `input_layernorm` + `q_proj`/`k_proj`/`v_proj`.
    pub rms_norm_qkv: OpChoice,
    /// `q_norm`/`k_norm` + RoPE.
    pub qk_norm_rope: OpChoice,
    /// causal attention over the KV cache (prefills up to `ops::ATTENTION_MAX_KEYS` keys; beyond, the
    /// reference path).
    pub attention: OpChoice,
    /// residual add + `post_attention_layernorm`.
    pub add_rms_norm: OpChoice,
    /// `silu(gate_proj(h)) * up_proj(h)`: fused, the gate/up projections and the activation run
    /// as one op (`ops::gate_up_silu`).
    pub silu_mul: OpChoice,
    /// `o_proj` and `down_proj` (GEMV kernel at decode shapes).
    pub linear: OpChoice,
}

impl LayerPlan {
    pub fn uniform(choice: OpChoice) -> Self {
        Self {
            rms_norm_qkv: choice,
            qk_norm_rope: choice,
            attention: choice,
            add_rms_norm: choice,
            silu_mul: choice,
            linear: choice,
        }
    }

    fn ops(&self) -> [(&'static str, OpChoice); 6] {
        [
            ("rms_norm_qkv", self.rms_norm_qkv),
            ("qk_norm_rope", self.qk_norm_rope),
            ("attention", self.attention),
            ("add_rms_norm", self.add_rms_norm),
            ("silu_mul", self.silu_mul),
            ("linear", self.linear),
        ]
    }
}

/// One [`LayerPlan`] per decoder layer, and the language-model head.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KernelPlan {
    pub layers: Vec<LayerPlan>,
    /// The lm_head projection (GEMV kernel at decode shapes).
    pub lm_head: OpChoice,
    /// What an automatic plan was calibrated on and measured (kept as written; `None` for
    /// presets and hand-written plans).
    pub calibration: Option<serde_json::Value>,
}

/// The JSON form: `all` plus per-layer overrides of single ops.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct PlanFile {
    all: LayerPlan,
    layers: BTreeMap<usize, BTreeMap<String, OpChoice>>,
    lm_head: OpChoice,
    #[serde(skip_serializing_if = "Option::is_none")]
    calibration: Option<serde_json::Value>,
}

impl KernelPlan {
    /// Every op fused with PyTorch's rounding points except attention, fused in f32 mode: one
    /// pass over the keys (torch mode needs the row's max and sum before it can round the
    /// probabilities) and closer to float32. The batch engine's fastest plan (H100,
    /// 2026-11-26: nano-vllm's workload 10,561 output tok/s against `fused`'s 9,963).
    pub fn fused_attn_f32(layers: usize) -> Self {
        let mut plan = Self::uniform(layers, OpChoice::Fused(Precision::Torch));
        for l in &mut plan.layers {
            l.attention = OpChoice::Fused(Precision::F32);
        }
        plan
    }

    /// Every op of every layer the same.
    pub fn uniform(layers: usize, choice: OpChoice) -> Self {
        Self { layers: vec![LayerPlan::uniform(choice); layers], lm_head: choice, calibration: None }
    }

    /// `reference`, `fused` (`fused-torch`), `fused-f32`, `fused-attn-f32` ([`Self::fused_attn_f32`]),
    /// or a path to a JSON plan file.
    pub fn parse(spec: &str, config: &Qwen3Config) -> Result<Self, LoadError> {
        let n = config.num_hidden_layers;
        match spec {
            "reference" | "fused" | "fused-torch" | "fused-f32" => {
                Ok(Self::uniform(n, spec.parse().expect("a preset name")))
            }
            FUSED_ATTN_F32 => Ok(Self::fused_attn_f32(n)),
            path => Self::from_file(Path::new(path), config),
        }
    }

    /// Reads a JSON plan file for a model with `config`.
    pub fn from_file(path: &Path, config: &Qwen3Config) -> Result<Self, LoadError> {
        let text = std::fs::read_to_string(path).map_err(|source| LoadError::Io { path: path.into(), source })?;
        let file: PlanFile = serde_json::from_str(&text).map_err(|source| LoadError::Json { path: path.into(), source })?;
        let bad = |field: String, message: String| LoadError::Plan { path: path.into(), field, message };
        let mut plan = Self::uniform(config.num_hidden_layers, OpChoice::Reference);
        for l in &mut plan.layers {
            *l = file.all;
        }
        plan.lm_head = file.lm_head;
        plan.calibration = file.calibration;
        for (layer, ops) in file.layers {
            let Some(slot) = plan.layers.get_mut(layer) else {
                return Err(bad(
                    format!("layers.{layer}"),
                    format!("the model has {} layers", config.num_hidden_layers),
                ));
            };
            for (op, choice) in ops {
                match op.as_str() {
                    "rms_norm_qkv" => slot.rms_norm_qkv = choice,
                    "qk_norm_rope" => slot.qk_norm_rope = choice,
                    "attention" => slot.attention = choice,
                    "add_rms_norm" => slot.add_rms_norm = choice,
                    "silu_mul" => slot.silu_mul = choice,
                    "linear" => slot.linear = choice,
                    _ => return Err(bad(format!("layers.{layer}.{op}"), "unknown op".into())),
                }
            }
        }
        Ok(plan)
    }

    /// The JSON form (every layer listed).
    pub fn to_json(&self) -> String {
        let layers = self
            .layers
            .iter()
            .enumerate()
            .map(|(i, l)| (i, l.ops().into_iter().map(|(k, v)| (k.to_string(), v)).collect()))
            .collect();
        let file = PlanFile { all: LayerPlan::default(), layers, lm_head: self.lm_head, calibration: self.calibration.clone() };
        serde_json::to_string_pretty(&file).expect("a plan serialises")
    }

    /// A short description: the preset name when uniform, else per-op counts.
    pub fn summary(&self) -> String {
        if let Some(first) = self.layers.first() {
            let ops = first.ops();
            if self.layers.iter().all(|l| l == first) && ops.iter().all(|(_, c)| *c == ops[0].1) && self.lm_head == ops[0].1 {
                return ops[0].1.to_string();
            }
        }
        if !self.layers.is_empty() && self.layers == Self::fused_attn_f32(self.layers.len()).layers && self.lm_head == OpChoice::Fused(Precision::Torch) {
            return FUSED_ATTN_F32.into();
        }
        let fused = self.layers.iter().flat_map(|l| l.ops()).filter(|(_, c)| *c != OpChoice::Reference).count()
            + usize::from(self.lm_head != OpChoice::Reference);
        format!("mixed ({fused} of {} ops fused)", self.layers.len() * 6 + 1)
    }

    /// Checks that every fused op can run on this model: layer count, no attention bias with a
    /// fused QKV, an even head_dim for RoPE, a hidden size the fused QKV kernel supports.
    pub fn check(&self, config: &Qwen3Config) -> Result<(), String> {
        if self.layers.len() != config.num_hidden_layers {
            return Err(format!(
                "the plan has {} layers, the model {}",
                self.layers.len(),
                config.num_hidden_layers
            ));
        }
        for (i, l) in self.layers.iter().enumerate() {
            if l.rms_norm_qkv != OpChoice::Reference && config.attention_bias {
                return Err(format!("layer {i}: rms_norm_qkv cannot be fused with attention_bias = true"));
            }
            if l.linear != OpChoice::Reference && config.attention_bias {
                return Err(format!("layer {i}: linear (o_proj) cannot be fused with attention_bias = true"));
            }
            if (l.linear != OpChoice::Reference && config.intermediate_size > 8192)
                || (l.silu_mul != OpChoice::Reference && config.hidden_size > 8192)
            {
                return Err(format!("layer {i}: the GEMV kernels take input widths <= 8192"));
            }
            if l.rms_norm_qkv != OpChoice::Reference && config.hidden_size > 8192 {
                return Err(format!("layer {i}: rms_norm_qkv supports hidden_size <= 8192"));
            }
            if l.attention != OpChoice::Reference && config.head_dim() > crate::ops::ATTENTION_MAX_HEAD_DIM {
                return Err(format!("layer {i}: attention supports head_dim <= {}", crate::ops::ATTENTION_MAX_HEAD_DIM));
            }
            if l.qk_norm_rope != OpChoice::Reference && !config.head_dim().is_multiple_of(2) {
                return Err(format!("layer {i}: qk_norm_rope needs an even head_dim"));
            }
        }
        if self.lm_head != OpChoice::Reference && config.hidden_size > 8192 {
            return Err("lm_head: the GEMV kernel takes input widths <= 8192".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fused_attn_f32_preset() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/braid-tiny/config.json");
        let config = Qwen3Config::from_file(&dir).expect("braid-tiny's config");
        let plan = KernelPlan::parse(FUSED_ATTN_F32, &config).expect("a preset");
        assert_eq!(plan.layers.len(), config.num_hidden_layers);
        for l in &plan.layers {
            for (op, c) in l.ops() {
                let want = if op == "attention" { Precision::F32 } else { Precision::Torch };
                assert_eq!(c, OpChoice::Fused(want), "{op}");
            }
        }
        assert_eq!(plan.lm_head, OpChoice::Fused(Precision::Torch));
        assert_eq!(plan.summary(), FUSED_ATTN_F32);
        assert_eq!(KernelPlan::parse("fused", &config).unwrap().summary(), "fused-torch");
    }
}
