//! Reading a model folder without running it: per-tensor statistics, per-layer norm-weight
//! maxima (the seed analysis' "extreme k_norm" detection), and every finding of
//! [`weights::check`], for `braid-cli inspect`. The checkpoint is memory-mapped; each tensor is
//! read once.

use std::path::Path;

use safetensors::Dtype;
use serde::Serialize;

use crate::checkpoint::{Checkpoint, TensorRef};
use crate::config::Qwen3Config;
use crate::error::LoadError;
use crate::weights;

/// Statistics of one stored tensor (over finite values; NaN and infinities are counted).
#[derive(Debug, Clone, Serialize)]
pub struct TensorStats {
    pub name: String,
    pub file: String,
    pub dtype: String,
    pub shape: Vec<usize>,
    pub count: usize,
    pub min: f32,
    pub max: f32,
    pub abs_max: f32,
    pub mean_abs: f64,
    pub nan: usize,
    pub inf: usize,
}

/// The abs-max of each norm weight of one layer (`None` when the tensor is absent).
#[derive(Debug, Clone, Serialize)]
pub struct LayerNorms {
    pub layer: usize,
    pub input_layernorm: Option<f32>,
    pub post_attention_layernorm: Option<f32>,
    pub q_norm: Option<f32>,
    pub k_norm: Option<f32>,
    /// Norms whose abs-max exceeds the `extreme` threshold.
    pub extreme: Vec<String>,
}

/// One thing worth knowing. `error` findings make the folder unloadable.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub severity: Severity,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
    Info,
}

/// The whole report (its JSON form is `braid-cli inspect --format json`).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub dir: String,
    pub model_type: Option<String>,
    pub layers: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub vocab_size: usize,
    pub max_position_embeddings: usize,
    pub rope_theta: f64,
    pub tie_word_embeddings: bool,
    pub attention_bias: bool,
    /// Stored parameters (a tied head stored twice counts twice).
    pub parameters: usize,
    pub bytes: usize,
    pub dtypes: Vec<String>,
    /// The norm-weight threshold used for `extreme`.
    pub extreme_threshold: f32,
    pub norms: Vec<LayerNorms>,
    pub tensors: Vec<TensorStats>,
    pub findings: Vec<Finding>,
    /// No `error` finding: `generate` can load the folder.
    pub loadable: bool,
}

/// Values beyond this in a weight are reported (real checkpoints stay far below).
pub const WEIGHT_ABS_LIMIT: f32 = 1e4;

fn values<'a>(t: &TensorRef<'a>) -> Box<dyn Iterator<Item = f32> + 'a> {
    match t.dtype {
        Dtype::BF16 => Box::new(t.bytes.chunks_exact(2).map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())),
        Dtype::F16 => Box::new(t.bytes.chunks_exact(2).map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())),
        Dtype::F32 => Box::new(t.bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))),
        _ => Box::new(std::iter::empty()),
    }
}

fn stats(t: &TensorRef<'_>) -> TensorStats {
    let (mut min, mut max, mut abs_max, mut sum_abs) = (f32::INFINITY, f32::NEG_INFINITY, 0f32, 0f64);
    let (mut nan, mut inf, mut count, mut finite) = (0, 0, 0, 0usize);
    for v in values(t) {
        count += 1;
        if v.is_nan() {
            nan += 1;
        } else if v.is_infinite() {
            inf += 1;
        } else {
            finite += 1;
            min = min.min(v);
            max = max.max(v);
            abs_max = abs_max.max(v.abs());
            sum_abs += v.abs() as f64;
        }
    }
    if finite == 0 {
        (min, max) = (0.0, 0.0);
    }
    TensorStats {
        name: t.name.to_string(),
        file: t.file.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default(),
        dtype: format!("{:?}", t.dtype),
        shape: t.shape.to_vec(),
        count,
        min,
        max,
        abs_max,
        mean_abs: if finite > 0 { sum_abs / finite as f64 } else { 0.0 },
        nan,
        inf,
    }
}

/// Inspects `dir`. Errors only when `config.json` or the weight files cannot be read at all;
/// everything else becomes a finding.
pub fn inspect(dir: &Path, extreme: f32, progress: &mut dyn FnMut(usize, usize)) -> Result<Report, LoadError> {
    let config = Qwen3Config::from_file(&dir.join("config.json"))?;
    let ckpt = Checkpoint::open(dir)?;
    let mut findings: Vec<Finding> = weights::check(&config, &ckpt)
        .into_iter()
        .map(|e| Finding { severity: Severity::Error, message: e.to_string() })
        .collect();

    let refs: Vec<TensorRef<'_>> = ckpt.iter().collect();
    let mut tensors = Vec::with_capacity(refs.len());
    for (i, t) in refs.iter().enumerate() {
        tensors.push(stats(t));
        progress(i + 1, refs.len());
    }
    tensors.sort_by(|a, b| a.name.cmp(&b.name));
    let by_name = |name: &str| tensors.iter().find(|s| s.name == name);

    for s in &tensors {
        if s.abs_max > WEIGHT_ABS_LIMIT {
            findings.push(Finding {
                severity: Severity::Warning,
                message: format!("{}: {}: abs-max {} exceeds {WEIGHT_ABS_LIMIT:e}", s.file, s.name, s.abs_max),
            });
        }
    }
    let head_stored = by_name("lm_head.weight").is_some();
    findings.push(Finding {
        severity: Severity::Info,
        message: match (config.tie_word_embeddings, head_stored) {
            (true, true) => "tied embeddings; lm_head.weight is stored too and is used".into(),
            (true, false) => "tied embeddings; the head reuses model.embed_tokens.weight".into(),
            (false, _) => "untied head: lm_head.weight".into(),
        },
    });

    let mut norms = Vec::with_capacity(config.num_hidden_layers);
    for l in 0..config.num_hidden_layers {
        let get = |n: &str| by_name(&format!("model.layers.{l}.{n}.weight")).map(|s| s.abs_max);
        let entries = [
            ("input_layernorm", get("input_layernorm")),
            ("post_attention_layernorm", get("post_attention_layernorm")),
            ("self_attn.q_norm", get("self_attn.q_norm")),
            ("self_attn.k_norm", get("self_attn.k_norm")),
        ];
        let flagged: Vec<String> = entries
            .iter()
            .filter(|(_, v)| v.is_some_and(|v| v > extreme))
            .map(|(n, v)| format!("{n} {:.2}", v.unwrap_or_default()))
            .collect();
        if !flagged.is_empty() {
            findings.push(Finding {
                severity: Severity::Info,
                message: format!(
                    "layer {l}: norm weights above {extreme}: {} (a fixed per-channel scale, not an error by \
                     itself: Qwen3-0.6B's k_norm reaches 96.5; docs/accuracy.md)",
                    flagged.join(", ")
                ),
            });
        }
        norms.push(LayerNorms {
            layer: l,
            input_layernorm: entries[0].1,
            post_attention_layernorm: entries[1].1,
            q_norm: entries[2].1,
            k_norm: entries[3].1,
            extreme: flagged,
        });
    }

    let mut dtypes: Vec<String> = tensors.iter().map(|t| t.dtype.clone()).collect();
    dtypes.sort();
    dtypes.dedup();
    let loadable = !findings.iter().any(|f| f.severity == Severity::Error);
    Ok(Report {
        dir: dir.display().to_string(),
        model_type: config.model_type.clone(),
        layers: config.num_hidden_layers,
        hidden_size: config.hidden_size,
        intermediate_size: config.intermediate_size,
        heads: config.num_attention_heads,
        kv_heads: config.num_kv_heads(),
        head_dim: config.head_dim(),
        vocab_size: config.vocab_size,
        max_position_embeddings: config.max_position_embeddings,
        rope_theta: config.rope_theta(),
        tie_word_embeddings: config.tie_word_embeddings,
        attention_bias: config.attention_bias,
        parameters: tensors.iter().map(|t| t.count).sum(),
        bytes: refs.iter().map(|t| t.bytes.len()).sum(),
        dtypes,
        extreme_threshold: extreme,
        norms,
        tensors,
        findings,
        loadable,
    })
}
