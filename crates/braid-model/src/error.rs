//! Typed errors for loading and validating a model folder. Every variant names the file and,
//! where there is one, the tensor or config field at fault.

use std::path::PathBuf;

/// Why a model folder could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: invalid JSON: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{path}: field `{field}`: {message}")]
    Config {
        path: PathBuf,
        field: String,
        message: String,
    },
    #[error("{path}: not a valid safetensors file: {message}")]
    Safetensors { path: PathBuf, message: String },
    #[error("{dir}: no weights found (expected model.safetensors or model.safetensors.index.json)")]
    NoWeights { dir: PathBuf },
    #[error("{path}: tensor `{tensor}` is missing")]
    MissingTensor { path: PathBuf, tensor: String },
    #[error("{path}: tensor `{tensor}` is listed in the index but stored in {file}, which does not hold it")]
    IndexMismatch {
        path: PathBuf,
        tensor: String,
        file: PathBuf,
    },
    #[error("{path}: tensor `{tensor}` has shape {got:?}, but the config implies {expected:?}")]
    Shape {
        path: PathBuf,
        tensor: String,
        expected: Vec<usize>,
        got: Vec<usize>,
    },
    #[error("{path}: tensor `{tensor}` has dtype {got}; only BF16, F16 and F32 are supported")]
    DType {
        path: PathBuf,
        tensor: String,
        got: String,
    },
    #[error("{path}: tensor `{tensor}` is not allowed by config.json: {reason}")]
    Unexpected {
        path: PathBuf,
        tensor: String,
        reason: String,
    },
    #[error("{path}: tensor `{tensor}` holds {count} non-finite value(s) (first at flat index {first})")]
    NonFinite {
        path: PathBuf,
        tensor: String,
        count: usize,
        first: usize,
    },
    #[error("compute dtype {dtype} is not supported on device {device}")]
    UnsupportedDType { dtype: String, device: String },
    #[error("{path}: field `{field}`: {message}")]
    Plan { path: PathBuf, field: String, message: String },
}

/// Result alias for loading.
pub type Result<T, E = LoadError> = std::result::Result<T, E>;

/// Errors raised while running the model on inputs.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("kernel plan does not fit the model: {0}")]
    Plan(String),
    #[error("sequence of {needed} tokens exceeds the context of {limit} (max_position_embeddings or the cache size)")]
    ContextOverflow { needed: usize, limit: usize },
    #[error("token id {id} is outside the vocabulary of {vocab}")]
    TokenOutOfRange { id: u32, vocab: usize },
    #[error("empty input: at least one token is needed")]
    EmptyInput,
    #[error("paged KV cache: {0}")]
    BlockTable(String),
}
