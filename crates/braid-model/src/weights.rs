//! What tensors a config implies, and the checks of a checkpoint against it.

use std::collections::HashMap;

use safetensors::Dtype;

use crate::checkpoint::Checkpoint;
use crate::config::Qwen3Config;
use crate::error::LoadError;

/// Whether an expected tensor must be stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presence {
    Required,
    /// `lm_head.weight` of a tied model: used when stored, else the embedding is reused.
    Optional,
}

/// One tensor the config implies.
#[derive(Debug, Clone)]
pub struct Expected {
    pub name: String,
    pub shape: Vec<usize>,
    pub presence: Presence,
}

/// Every tensor of a dense Qwen3 checkpoint with this config, with HF names and shapes.
pub fn expected_tensors(c: &Qwen3Config) -> Vec<Expected> {
    let (h, i, v) = (c.hidden_size, c.intermediate_size, c.vocab_size);
    let (q, kv, hd) = (c.num_attention_heads * c.head_dim(), c.num_kv_heads() * c.head_dim(), c.head_dim());
    let mut out = Vec::new();
    let mut push = |name: String, shape: Vec<usize>, presence| out.push(Expected { name, shape, presence });
    use Presence::*;
    push("model.embed_tokens.weight".into(), vec![v, h], Required);
    for l in 0..c.num_hidden_layers {
        let p = format!("model.layers.{l}");
        push(format!("{p}.input_layernorm.weight"), vec![h], Required);
        push(format!("{p}.post_attention_layernorm.weight"), vec![h], Required);
        for (name, out_dim, in_dim) in [("q_proj", q, h), ("k_proj", kv, h), ("v_proj", kv, h), ("o_proj", h, q)] {
            push(format!("{p}.self_attn.{name}.weight"), vec![out_dim, in_dim], Required);
            if c.attention_bias {
                push(format!("{p}.self_attn.{name}.bias"), vec![out_dim], Required);
            }
        }
        push(format!("{p}.self_attn.q_norm.weight"), vec![hd], Required);
        push(format!("{p}.self_attn.k_norm.weight"), vec![hd], Required);
        for (name, out_dim, in_dim) in [("gate_proj", i, h), ("up_proj", i, h), ("down_proj", h, i)] {
            push(format!("{p}.mlp.{name}.weight"), vec![out_dim, in_dim], Required);
        }
    }
    push("model.norm.weight".into(), vec![h], Required);
    let head = if c.tie_word_embeddings { Optional } else { Required };
    push("lm_head.weight".into(), vec![v, h], head);
    out
}

/// Why a stored tensor that the config does not imply is there, in words.
fn unexpected_reason(name: &str, c: &Qwen3Config) -> String {
    if name.ends_with(".bias") && name.contains(".self_attn.") && !c.attention_bias {
        return "config.json has attention_bias = false, so Qwen3 has no attention biases \
                (loading it would silently change the model)"
            .into();
    }
    if let Some(rest) = name.strip_prefix("model.layers.")
        && let Some(layer) = rest.split('.').next().and_then(|s| s.parse::<usize>().ok())
        && layer >= c.num_hidden_layers
    {
        return format!("layer {layer} is beyond num_hidden_layers = {}", c.num_hidden_layers);
    }
    "not part of a dense Qwen3 model".into()
}

/// Tensors that some exporters store and that carry nothing the model needs.
fn is_ignorable(name: &str) -> bool {
    name.ends_with(".rotary_emb.inv_freq")
}

/// Every problem with `ckpt` against `config`: missing, misshapen, mistyped, unexpected or
/// non-finite tensors. Empty when the checkpoint is loadable.
pub fn check(config: &Qwen3Config, ckpt: &Checkpoint) -> Vec<LoadError> {
    let mut findings = Vec::new();
    let list = expected_tensors(config);
    let expected: HashMap<&str, &Expected> = list
        .iter()
        .map(|e| (e.name.as_str(), e))
        .collect();
    for e in expected.values() {
        if e.presence == Presence::Required && ckpt.get(&e.name).is_none() {
            findings.push(LoadError::MissingTensor { path: ckpt.location(), tensor: e.name.clone() });
        }
    }
    for t in ckpt.iter() {
        let path = t.file.to_path_buf();
        let Some(e) = expected.get(t.name) else {
            if !is_ignorable(t.name) {
                findings.push(LoadError::Unexpected {
                    path,
                    tensor: t.name.into(),
                    reason: unexpected_reason(t.name, config),
                });
            }
            continue;
        };
        if !matches!(t.dtype, Dtype::BF16 | Dtype::F16 | Dtype::F32) {
            findings.push(LoadError::DType { path, tensor: t.name.into(), got: format!("{:?}", t.dtype) });
            continue;
        }
        if t.shape != e.shape.as_slice() {
            findings.push(LoadError::Shape {
                path,
                tensor: t.name.into(),
                expected: e.shape.clone(),
                got: t.shape.to_vec(),
            });
            continue;
        }
        if let (count @ 1.., Some(first)) = t.non_finite() {
            findings.push(LoadError::NonFinite { path, tensor: t.name.into(), count, first });
        }
    }
    findings.sort_by_key(|f| f.to_string());
    findings
}
