use std::path::PathBuf;

use braid_model::{ForwardError, LoadError};

/// Why the engine could not load a model folder or run a request.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error(transparent)]
    Forward(#[from] ForwardError),
    #[error("{path}: cannot load tokenizer: {message}")]
    Tokenizer { path: PathBuf, message: String },
    #[error("tokenizer: {0}")]
    Encode(String),
    #[error("{path}: chat template: {message}")]
    Template { path: PathBuf, message: String },
    #[error("{path}: no chat template (field `chat_template` in tokenizer_config.json)")]
    NoChatTemplate { path: PathBuf },
    #[error("prompt has {tokens} tokens, but the model's context is {limit} (max_position_embeddings)")]
    PromptTooLong { tokens: usize, limit: usize },
    #[error("prompt is empty: it encodes to no tokens")]
    EmptyPrompt,
    #[error("batch engine: {0}")]
    Batch(String),
    #[error("invalid sampling parameter `{field}`: {message}")]
    Sampling { field: &'static str, message: String },
    #[error("generated token {index}: no finite logit (every one NaN or -inf): the model's activations overflowed or broke down")]
    NoFiniteLogit { index: usize },
}
