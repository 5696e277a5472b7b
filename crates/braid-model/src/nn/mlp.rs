use burn::module::Module;
use burn::tensor::{FloatDType, Tensor, activation::silu};

use super::Linear;

/// Qwen3's SwiGLU feed-forward: `down(silu(gate(x)) * up(x))`.
#[derive(Module, Debug)]
pub struct Mlp {
    pub gate_proj: Linear,
    pub up_proj: Linear,
    pub down_proj: Linear,
}

impl Mlp {
    /// `[batch, seq, hidden] -> [batch, seq, hidden]`
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let dtype = x.dtype();
        let gate = self.gate_proj.forward(x.clone());
        // PyTorch evaluates SiLU in f32 and rounds once.
        let act = silu(gate.cast(FloatDType::F32)).cast(dtype);
        self.down_proj.forward(act * self.up_proj.forward(x))
    }
}
