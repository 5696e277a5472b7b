//! The decoder layers' weights stacked per kind, for the batch-1 decode step's one launch over
//! its layers (`ops::decode_layers`): a kernel argument is one buffer, so each kind of weight
//! is one tensor with the layers' rows one after another.

use burn::module::Param;
use burn::tensor::Tensor;

use crate::nn::DecoderLayer;

/// Of a model of `n` decoder layers: layers `0..n - 1`'s post-attention norms and MLP weights
/// (what `ops::decode_layers`' iteration `l` runs phases A-C with) and every layer's attention
/// inputs (iteration `l` runs phases D-E with layer `l + 1`'s), each kind stacked along its
/// first dimension.
#[derive(Debug, Clone)]
pub struct LayerStacks {
    /// `[(n - 1) * hidden]`
    pub post_norm: Tensor<1>,
    /// `[(n - 1) * hidden, q_dim]`
    pub wo: Tensor<2>,
    /// `[(n - 1) * inter, hidden]` each
    pub gate: Tensor<2>,
    pub up: Tensor<2>,
    /// `[(n - 1) * hidden, inter]`
    pub down: Tensor<2>,
    /// `[n * hidden]`: the input norms.
    pub input_norm: Tensor<1>,
    /// `[n * heads * hd, hidden]`, `[n * kv_heads * hd, hidden]` x 2
    pub wq: Tensor<2>,
    pub wk: Tensor<2>,
    pub wv: Tensor<2>,
    /// `[n * hd]` each
    pub q_norm: Tensor<1>,
    pub k_norm: Tensor<1>,
}

/// Stacks `$field` of `$layers` (a `Param<Tensor<2>>` path) and makes each layer's parameter
/// a row range of the stack: a view on backends whose slices at aligned offsets are views
/// (CubeCL: offsets a multiple of its memory alignment), so the weights are held once.
macro_rules! stack_matrix {
    ($layers:expr, $($field:ident).+) => {{
        let parts: Vec<Tensor<2>> = $layers.iter().map(|l| l.$($field).+.val()).collect();
        let rows = parts[0].dims()[0];
        let stack = Tensor::cat(parts, 0);
        for (i, l) in $layers.iter_mut().enumerate() {
            l.$($field).+ = Param::from_tensor(stack.clone().slice([i * rows..(i + 1) * rows]));
        }
        stack
    }};
}

/// Stacks `$field` of `$layers` (a `Param<Tensor<1>>` path; the layers keep their own: norm
/// weights are small, and their rows need not fall on aligned offsets).
macro_rules! stack_vector {
    ($layers:expr, $($field:ident).+) => {
        Tensor::cat($layers.iter().map(|l| l.$($field).+.val()).collect::<Vec<Tensor<1>>>(), 0)
    };
}

impl LayerStacks {
    /// The stacks of `layers` (at least three: with two, one launch a layer is already one
    /// launch for the layers between the first's attention and the last's MLP). The matrices'
    /// per-layer parameters become row ranges of the stacks (see [`stack_matrix`]).
    pub fn build(layers: &mut [DecoderLayer]) -> Option<Self> {
        let n = layers.len();
        if n < 3 {
            return None;
        }
        let mlp = &mut layers[..n - 1];
        let post_norm = stack_vector!(mlp, post_attention_layernorm.weight);
        let wo = stack_matrix!(mlp, self_attn.o_proj.weight);
        let gate = stack_matrix!(mlp, mlp.gate_proj.weight);
        let up = stack_matrix!(mlp, mlp.up_proj.weight);
        let down = stack_matrix!(mlp, mlp.down_proj.weight);
        let next = &mut layers[..];
        let input_norm = stack_vector!(next, input_layernorm.weight);
        let wq = stack_matrix!(next, self_attn.q_proj.weight);
        let wk = stack_matrix!(next, self_attn.k_proj.weight);
        let wv = stack_matrix!(next, self_attn.v_proj.weight);
        let q_norm = stack_vector!(next, self_attn.q_norm.weight);
        let k_norm = stack_vector!(next, self_attn.k_norm.weight);
        Some(Self { post_norm, wo, gate, up, down, input_norm, wq, wk, wv, q_norm, k_norm })
    }
}
