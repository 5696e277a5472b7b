use burn::module::Module;

use super::Linear;

/// Qwen3's SwiGLU feed-forward: `down(silu(gate(x)) * up(x))`, driven by
/// `nn::DecoderLayer::forward`.
#[derive(Module, Debug)]
pub struct Mlp {
    pub gate_proj: Linear,
    pub up_proj: Linear,
    pub down_proj: Linear,
}
