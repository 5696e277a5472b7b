use burn::module::Module;
use burn::tensor::Tensor;

use super::{Attention, Mlp, RmsNorm, Rope};
use crate::kv_cache::LayerCache;

/// One pre-norm Qwen3 decoder layer.
#[derive(Module, Debug)]
pub struct DecoderLayer {
    pub input_layernorm: RmsNorm,
    pub self_attn: Attention,
    pub post_attention_layernorm: RmsNorm,
    pub mlp: Mlp,
}

impl DecoderLayer {
    /// `x: [batch, seq, hidden] -> [batch, seq, hidden]`
    pub fn forward(&self, x: Tensor<3>, rope: &Rope, cache: &mut LayerCache, past: usize) -> Tensor<3> {
        // 1. x + attn(input_layernorm(x))
        let h = self.input_layernorm.forward(x.clone());
        let x = x + self.self_attn.forward(h, rope, cache, past);
        // 2. x + mlp(post_attention_layernorm(x))
        let h = self.post_attention_layernorm.forward(x.clone());
        x + self.mlp.forward(h)
    }
}
