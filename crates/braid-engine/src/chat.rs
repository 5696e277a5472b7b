//! Chat templates from `tokenizer_config.json`, rendered with minijinja the way transformers'
//! `apply_chat_template` renders them (trim_blocks, lstrip_blocks, Python string methods).

use std::path::{Path, PathBuf};

use minijinja::{Environment, Error, ErrorKind, context};
use serde::Serialize;

use crate::error::EngineError;

/// One chat message.
#[derive(Debug, Clone, Serialize)]
pub struct Message {
    pub role: String,
    pub content: String,
}

impl Message {
    pub fn new(role: &str, content: &str) -> Self {
        Self { role: role.into(), content: content.into() }
    }
}

/// A compiled chat template.
pub struct ChatTemplate {
    env: Environment<'static>,
    path: PathBuf,
}

impl ChatTemplate {
    /// Reads `chat_template` from a `tokenizer_config.json`.
    pub fn from_tokenizer_config(path: &Path) -> Result<Self, EngineError> {
        let text = std::fs::read_to_string(path).map_err(|e| EngineError::Template {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| EngineError::Template {
            path: path.to_path_buf(),
            message: format!("invalid JSON: {e}"),
        })?;
        let Some(source) = json.get("chat_template").and_then(|t| t.as_str()) else {
            return Err(EngineError::NoChatTemplate { path: path.to_path_buf() });
        };
        Self::new(source, path)
    }

    pub fn new(source: &str, path: &Path) -> Result<Self, EngineError> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", |msg: String| -> Result<String, Error> {
            Err(Error::new(ErrorKind::InvalidOperation, msg))
        });
        env.add_template_owned("chat", source.to_string())
            .map_err(|e| EngineError::Template { path: path.to_path_buf(), message: e.to_string() })?;
        Ok(Self { env, path: path.to_path_buf() })
    }

    /// Renders `messages`; `enable_thinking` is Qwen3's switch (`None` leaves it undefined).
    pub fn render(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
        enable_thinking: Option<bool>,
    ) -> Result<String, EngineError> {
        let tmpl = self.env.get_template("chat").expect("added in new");
        let ctx = match enable_thinking {
            Some(t) => context! { messages, add_generation_prompt, enable_thinking => t },
            None => context! { messages, add_generation_prompt },
        };
        tmpl.render(ctx).map_err(|e| EngineError::Template {
            path: self.path.clone(),
            message: format!("{e:#}"),
        })
    }
}
