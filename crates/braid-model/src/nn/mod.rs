//! The reference layers of Qwen3, written in plain Burn tensor ops. Module and field names
//! follow the Hugging Face weight names (`self_attn.q_proj`, `mlp.gate_proj`, ...).

mod attention;
mod decoder_layer;
mod linear;
mod mlp;
mod rms_norm;
mod rope;

pub use attention::Attention;
pub use decoder_layer::{Carry, DecoderLayer};
pub use linear::Linear;
pub use mlp::Mlp;
pub use rms_norm::RmsNorm;
pub use rope::{Rope, RotaryEmbedding};
