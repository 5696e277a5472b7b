//! `Qwen3Config`, deserialised straight from a Hugging Face `config.json`.
//!
//! Both spellings are accepted: the published one (`rope_theta`, `torch_dtype`) and the
//! transformers-5 one (`rope_parameters.rope_theta`, `dtype`). The config is validated once,
//! at load, by [`Qwen3Config::validate`].

use std::path::Path;

use serde::Deserialize;

use crate::error::{LoadError, Result};

/// One id or a list of ids, as `eos_token_id` may be written either way.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum TokenIds {
    One(u32),
    Many(Vec<u32>),
}

impl TokenIds {
    pub fn to_vec(&self) -> Vec<u32> {
        match self {
            TokenIds::One(id) => vec![*id],
            TokenIds::Many(ids) => ids.clone(),
        }
    }
}

/// transformers-5 `rope_parameters`.
#[derive(Debug, Clone, Deserialize, Default)]
pub struct RopeParameters {
    pub rope_theta: Option<f64>,
    pub rope_type: Option<String>,
}

/// `rope_scaling` as published (null for Qwen3 dense models).
#[derive(Debug, Clone, Deserialize, Default)]
pub struct RopeScaling {
    #[serde(alias = "type")]
    pub rope_type: Option<String>,
}

/// The fields of a Qwen3 `config.json` that Braid reads. Unknown fields are ignored.
#[derive(Debug, Clone, Deserialize)]
pub struct Qwen3Config {
    #[serde(default)]
    pub model_type: Option<String>,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: Option<usize>,
    /// Qwen3 sets this explicitly (128 for 0.6B, not hidden / heads).
    pub head_dim: Option<usize>,
    #[serde(default = "default_max_pos")]
    pub max_position_embeddings: usize,
    #[serde(default = "default_eps")]
    pub rms_norm_eps: f64,
    /// Published spelling.
    pub rope_theta: Option<f64>,
    /// transformers-5 spelling.
    pub rope_parameters: Option<RopeParameters>,
    pub rope_scaling: Option<RopeScaling>,
    #[serde(default)]
    pub attention_bias: bool,
    #[serde(default = "default_true")]
    pub tie_word_embeddings: bool,
    #[serde(default = "default_act")]
    pub hidden_act: String,
    #[serde(default)]
    pub use_sliding_window: bool,
    pub bos_token_id: Option<u32>,
    pub eos_token_id: Option<TokenIds>,
    /// Published spelling of the checkpoint dtype.
    pub torch_dtype: Option<String>,
    /// transformers-5 spelling.
    pub dtype: Option<String>,
}

fn default_max_pos() -> usize {
    40960
}
fn default_eps() -> f64 {
    1e-6
}
fn default_true() -> bool {
    true
}
fn default_act() -> String {
    "silu".into()
}

impl Qwen3Config {
    /// Reads and validates `config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| LoadError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_json(&text, path)
    }

    /// Parses and validates config text; `path` is only used in messages.
    pub fn from_json(text: &str, path: &Path) -> Result<Self> {
        let config: Self = serde_json::from_str(text).map_err(|source| LoadError::Json {
            path: path.to_path_buf(),
            source,
        })?;
        config.validate(path)?;
        Ok(config)
    }

    pub fn num_kv_heads(&self) -> usize {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }

    pub fn head_dim(&self) -> usize {
        self.head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads.max(1))
    }

    /// RoPE base, from either spelling (the default is Qwen3's 1e6 only when neither is set).
    pub fn rope_theta(&self) -> f64 {
        self.rope_parameters
            .as_ref()
            .and_then(|p| p.rope_theta)
            .or(self.rope_theta)
            .unwrap_or(1_000_000.0)
    }

    /// Checkpoint dtype as written in the config (`dtype` or `torch_dtype`).
    pub fn checkpoint_dtype(&self) -> Option<&str> {
        self.dtype.as_deref().or(self.torch_dtype.as_deref())
    }

    pub fn eos_token_ids(&self) -> Vec<u32> {
        self.eos_token_id
            .as_ref()
            .map(TokenIds::to_vec)
            .unwrap_or_default()
    }

    /// Checks the config describes a dense Qwen3 model that Braid can run.
    pub fn validate(&self, path: &Path) -> Result<()> {
        let err = |field: &str, message: String| LoadError::Config {
            path: path.to_path_buf(),
            field: field.into(),
            message,
        };
        if let Some(mt) = &self.model_type
            && mt != "qwen3"
        {
            return Err(err(
                "model_type",
                format!("`{mt}` is not supported; Braid runs dense `qwen3` models"),
            ));
        }
        for (field, value) in [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("num_key_value_heads", self.num_kv_heads()),
            ("head_dim", self.head_dim()),
            ("max_position_embeddings", self.max_position_embeddings),
        ] {
            if value == 0 {
                return Err(err(field, "must be positive".into()));
            }
        }
        if !self.num_attention_heads.is_multiple_of(self.num_kv_heads()) {
            return Err(err(
                "num_key_value_heads",
                format!(
                    "{} does not divide num_attention_heads = {}",
                    self.num_kv_heads(),
                    self.num_attention_heads
                ),
            ));
        }
        if !self.head_dim().is_multiple_of(2) {
            return Err(err("head_dim", format!("{} must be even for RoPE", self.head_dim())));
        }
        if !(self.rms_norm_eps.is_finite() && self.rms_norm_eps > 0.0) {
            return Err(err(
                "rms_norm_eps",
                format!("{} must be a positive finite number", self.rms_norm_eps),
            ));
        }
        let theta = self.rope_theta();
        if !(theta.is_finite() && theta > 1.0) {
            return Err(err("rope_theta", format!("{theta} must be a finite number above 1")));
        }
        let rope_type = self
            .rope_parameters
            .as_ref()
            .and_then(|p| p.rope_type.clone())
            .or_else(|| self.rope_scaling.as_ref().and_then(|s| s.rope_type.clone()));
        if let Some(t) = rope_type
            && t != "default"
        {
            return Err(err(
                "rope_scaling",
                format!("RoPE type `{t}` is not supported yet (only `default`)"),
            ));
        }
        if self.hidden_act != "silu" {
            return Err(err(
                "hidden_act",
                format!("`{}` is not supported (Qwen3 uses `silu`)", self.hidden_act),
            ));
        }
        if self.use_sliding_window {
            return Err(err(
                "use_sliding_window",
                "sliding-window attention is not supported".into(),
            ));
        }
        if let Some(eos) = &self.eos_token_id
            && let Some(bad) = eos.to_vec().into_iter().find(|&id| id as usize >= self.vocab_size)
        {
            return Err(err(
                "eos_token_id",
                format!("{bad} is outside vocab_size = {}", self.vocab_size),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PUBLISHED: &str = r#"{
      "architectures": ["Qwen3ForCausalLM"], "attention_bias": false, "bos_token_id": 151643,
      "eos_token_id": 151645, "head_dim": 128, "hidden_act": "silu", "hidden_size": 1024,
      "intermediate_size": 3072, "max_position_embeddings": 40960, "model_type": "qwen3",
      "num_attention_heads": 16, "num_hidden_layers": 28, "num_key_value_heads": 8,
      "rms_norm_eps": 1e-06, "rope_scaling": null, "rope_theta": 1000000,
      "tie_word_embeddings": true, "torch_dtype": "bfloat16", "use_sliding_window": false,
      "vocab_size": 151936 }"#;

    #[test]
    fn reads_published_qwen3_06b_config() {
        let c = Qwen3Config::from_json(PUBLISHED, Path::new("config.json")).unwrap();
        assert_eq!(c.head_dim(), 128);
        assert_eq!(c.num_kv_heads(), 8);
        assert_eq!(c.rope_theta(), 1e6);
        assert_eq!(c.checkpoint_dtype(), Some("bfloat16"));
        assert_eq!(c.eos_token_ids(), vec![151645]);
    }

    #[test]
    fn reads_transformers5_spelling() {
        let text = PUBLISHED
            .replace(r#""rope_theta": 1000000,"#, r#""rope_parameters": {"rope_type": "default", "rope_theta": 5000.0},"#)
            .replace(r#""torch_dtype""#, r#""dtype""#)
            .replace(r#""eos_token_id": 151645"#, r#""eos_token_id": [151645, 151643]"#);
        let c = Qwen3Config::from_json(&text, Path::new("config.json")).unwrap();
        assert_eq!(c.rope_theta(), 5000.0);
        assert_eq!(c.checkpoint_dtype(), Some("bfloat16"));
        assert_eq!(c.eos_token_ids(), vec![151645, 151643]);
    }

    #[test]
    fn rejects_bad_fields_naming_them() {
        for (from, to, field) in [
            (r#""num_key_value_heads": 8"#, r#""num_key_value_heads": 5"#, "num_key_value_heads"),
            (r#""hidden_act": "silu""#, r#""hidden_act": "gelu""#, "hidden_act"),
            (r#""rms_norm_eps": 1e-06"#, r#""rms_norm_eps": -1"#, "rms_norm_eps"),
            (r#""model_type": "qwen3""#, r#""model_type": "llama""#, "model_type"),
            (r#""head_dim": 128"#, r#""head_dim": 127"#, "head_dim"),
        ] {
            let text = PUBLISHED.replace(from, to);
            match Qwen3Config::from_json(&text, Path::new("x/config.json")) {
                Err(LoadError::Config { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{field}: expected a config error, got {other:?}"),
            }
        }
    }

    #[test]
    fn missing_required_field_is_a_json_error() {
        let text = PUBLISHED.replace(r#""hidden_size": 1024,"#, "");
        let e = Qwen3Config::from_json(&text, Path::new("m/config.json")).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("m/config.json") && msg.contains("hidden_size"), "{msg}");
    }
}
