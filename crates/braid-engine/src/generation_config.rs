//! `generation_config.json`: the checkpoint's sampling defaults and stop ids.

use std::path::Path;

use braid_model::{LoadError, config::TokenIds};
use serde::Deserialize;

/// The fields Braid reads; all optional.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct GenerationConfig {
    pub do_sample: Option<bool>,
    pub temperature: Option<f32>,
    pub top_k: Option<usize>,
    pub top_p: Option<f32>,
    pub min_p: Option<f32>,
    pub repetition_penalty: Option<f32>,
    pub eos_token_id: Option<TokenIds>,
}

impl GenerationConfig {
    /// Reads the file if present; a missing file means no defaults.
    pub fn from_dir(dir: &Path) -> Result<Self, LoadError> {
        let path = dir.join("generation_config.json");
        if !path.is_file() {
            return Ok(Self::default());
        }
        let text = std::fs::read_to_string(&path).map_err(|source| LoadError::Io { path: path.clone(), source })?;
        serde_json::from_str(&text).map_err(|source| LoadError::Json { path, source })
    }
}
