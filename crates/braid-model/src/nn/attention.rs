use burn::module::Module;
use burn::tensor::Tensor;

use super::{Linear, RmsNorm, Rope};
use crate::kv_cache::LayerCache;
use crate::ops::{Precision, QkShape, reference};

/// Grouped-query self-attention with per-head RMSNorm of q and k before RoPE (Qwen3). The
/// decoder layer drives its steps (`nn::DecoderLayer::forward` is the dispatch point).
#[derive(Module, Debug)]
pub struct Attention {
    pub q_proj: Linear,
    pub k_proj: Linear,
    pub v_proj: Linear,
    pub o_proj: Linear,
    /// RMSNorm over head_dim, applied per query head before RoPE.
    pub q_norm: RmsNorm,
    /// RMSNorm over head_dim, applied per key head before RoPE.
    pub k_norm: RmsNorm,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
}

impl Attention {
    pub fn shape(&self, batch: usize, seq: usize) -> QkShape {
        QkShape { batch, seq, heads: self.num_heads, kv_heads: self.num_kv_heads, head_dim: self.head_dim }
    }

    /// Reference q/k norm + RoPE: `q: [b*t, heads*hd]`, `k, v: [b*t, kv*hd]` ->
    /// `[b, heads|kv, t, hd]`.
    pub fn norm_rope(&self, q: Tensor<2>, k: Tensor<2>, v: Tensor<2>, rope: &Rope, s: QkShape) -> (Tensor<4>, Tensor<4>, Tensor<4>) {
        let QkShape { batch: b, seq: t, heads, kv_heads, head_dim: hd } = s;
        let q = self.q_norm.forward(q.reshape([b, t, heads, hd]));
        let k = self.k_norm.forward(k.reshape([b, t, kv_heads, hd]));
        let v = v.reshape([b, t, kv_heads, hd]).swap_dims(1, 2);
        (rope.apply(q.swap_dims(1, 2)), rope.apply(k.swap_dims(1, 2)), v)
    }

    /// Appends `k, v: [b, kv, t, hd]` at positions `past..` and attends with
    /// `q: [b, heads, t, hd]` over every position so far -> `[b*t, heads*hd]` (before `o_proj`):
    /// the reference path, PyTorch's eager rounding points.
    pub fn attend(&self, q: Tensor<4>, k: Tensor<4>, v: Tensor<4>, cache: &mut LayerCache, past: usize) -> Tensor<2> {
        let (k, v) = cache.append(past, k, v);
        reference::attention(q, k, v, past, Precision::Torch)
    }
}
