use burn::module::Module;
use burn::tensor::{Bool, FloatDType, Tensor, TensorData, activation::softmax};

use super::{Linear, RmsNorm, Rope};
use crate::kv_cache::LayerCache;

/// Grouped-query self-attention with per-head RMSNorm of q and k before RoPE (Qwen3).
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
    /// `x: [batch, seq, hidden]` at positions `past..past + seq` -> `[batch, seq, hidden]`.
    pub fn forward(&self, x: Tensor<3>, rope: &Rope, cache: &mut LayerCache, past: usize) -> Tensor<3> {
        let [b, t, _] = x.dims();
        let (nh, nkv, hd) = (self.num_heads, self.num_kv_heads, self.head_dim);
        let dtype = x.dtype();

        // 1. Projections, per-head norms, RoPE. [b, heads, t, hd]
        let q = self.q_norm.forward(self.q_proj.forward(x.clone()).reshape([b, t, nh, hd]));
        let k = self.k_norm.forward(self.k_proj.forward(x.clone()).reshape([b, t, nkv, hd]));
        let v = self.v_proj.forward(x).reshape([b, t, nkv, hd]).swap_dims(1, 2);
        let q = rope.apply(q.swap_dims(1, 2));
        let k = rope.apply(k.swap_dims(1, 2));

        // 2. Append to the cache; attend over all positions so far. [b, nkv, s, hd]
        let (k, v) = cache.append(past, k, v);
        let s = past + t;
        let k = repeat_kv(k, nh / nkv);
        let v = repeat_kv(v, nh / nkv);

        // 3. Scores with a causal mask, softmax in f32 (as PyTorch's eager path). [b, nh, t, s]
        let scale = (hd as f64).powf(-0.5);
        let scores = q.matmul(k.swap_dims(2, 3)) * scale;
        let scores = if t > 1 {
            let mask: Vec<bool> = (0..t)
                .flat_map(|i| (0..s).map(move |j| j > past + i))
                .collect();
            let mask = Tensor::<4, Bool>::from_data(TensorData::new(mask, [1, 1, t, s]), &scores.device());
            scores.mask_fill(mask.expand([b, nh, t, s]), f32::NEG_INFINITY)
        } else {
            scores
        };
        let probs = softmax(scores.cast(FloatDType::F32), 3).cast(dtype);

        // 4. Weighted values, merge heads, output projection.
        let out = probs.matmul(v).swap_dims(1, 2).reshape([b, t, nh * hd]);
        self.o_proj.forward(out)
    }
}

/// `[b, kv_heads, s, d] -> [b, kv_heads * n_rep, s, d]`, each kv head repeated for its group.
fn repeat_kv(x: Tensor<4>, n_rep: usize) -> Tensor<4> {
    if n_rep == 1 {
        return x;
    }
    let [b, h, s, d] = x.dims();
    x.unsqueeze_dim::<5>(2)
        .expand([b, h, n_rep, s, d])
        .reshape([b, h * n_rep, s, d])
}
