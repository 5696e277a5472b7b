//! Braid's engine: tokenizer and chat template, sampling, and the generation loop over a
//! loaded Qwen3 model.

pub mod batch;
pub mod chat;
pub mod engine;
pub mod error;
pub mod generation_config;
pub mod sampler;
pub mod tokenizer;

pub use batch::{BatchConfig, BatchEngine, BatchStats};
pub use chat::{ChatTemplate, Message};
pub use engine::{Engine, Finish, Generation, Request};
pub use error::EngineError;
pub use generation_config::GenerationConfig;
pub use sampler::{Sampler, SamplingParams};
pub use tokenizer::{TextStream, Tokenizer};
