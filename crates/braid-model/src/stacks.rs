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

#[cfg(test)]
mod tests {
    use burn::tensor::{DType, Device, Tensor, TensorData};

    use super::LayerStacks;
    use crate::nn::{Attention, DecoderLayer, Linear, Mlp, RmsNorm};

    fn host<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        t.into_data().convert::<f32>().try_to_vec::<f32>().unwrap()
    }

    /// Layer `l` of a model whose every weight element is `1000 * l + its kind + its index`.
    fn layer(l: usize, d: &Device) -> DecoderLayer {
        let (hidden, inter, hd, heads, kv) = (8, 12, 4, 2, 1);
        let t2 = |kind: usize, r: usize, c: usize| {
            let v = (0..r * c).map(|i| (1000 * l + 100 * kind + i) as f32).collect();
            Tensor::<2>::from_data(TensorData::new(v, [r, c]), (d, DType::F32))
        };
        let t1 = |kind: usize, n: usize| {
            let v = (0..n).map(|i| (1000 * l + 100 * kind + i) as f32).collect();
            Tensor::<1>::from_data(TensorData::new(v, [n]), (d, DType::F32))
        };
        DecoderLayer {
            input_layernorm: RmsNorm::new(t1(0, hidden), 1e-6),
            self_attn: Attention {
                q_proj: Linear::new(t2(1, heads * hd, hidden), None),
                k_proj: Linear::new(t2(2, kv * hd, hidden), None),
                v_proj: Linear::new(t2(3, kv * hd, hidden), None),
                o_proj: Linear::new(t2(4, hidden, heads * hd), None),
                q_norm: RmsNorm::new(t1(5, hd), 1e-6),
                k_norm: RmsNorm::new(t1(6, hd), 1e-6),
                num_heads: heads,
                num_kv_heads: kv,
                head_dim: hd,
            },
            post_attention_layernorm: RmsNorm::new(t1(7, hidden), 1e-6),
            mlp: Mlp { gate_proj: Linear::new(t2(8, inter, hidden), None), up_proj: Linear::new(t2(9, inter, hidden), None), down_proj: Linear::new(t2(10, hidden, inter), None) },
        }
    }

    #[test]
    fn stacks_hold_each_layers_rows_in_order_and_leave_the_layers_their_weights() {
        let d = Device::flex();
        let mut layers: Vec<DecoderLayer> = (0..4).map(|l| layer(l, &d)).collect();
        assert!(LayerStacks::build(&mut layers[..2]).is_none(), "two layers: nothing to stack");
        let before: Vec<Vec<f32>> = layers.iter().flat_map(|l| [host(l.self_attn.o_proj.weight.val()), host(l.mlp.down_proj.weight.val()), host(l.self_attn.q_proj.weight.val())]).collect();
        let s = LayerStacks::build(&mut layers).expect("four layers stack");
        // The MLP side: layers 0..3; the attention inputs: all four.
        let cat = |f: &dyn Fn(&DecoderLayer) -> Vec<f32>, range: std::ops::Range<usize>| -> Vec<f32> { layers[range].iter().flat_map(f).collect() };
        assert_eq!(host(s.wo.clone()), cat(&|l| host(l.self_attn.o_proj.weight.val()), 0..3));
        assert_eq!(host(s.gate.clone()), cat(&|l| host(l.mlp.gate_proj.weight.val()), 0..3));
        assert_eq!(host(s.up.clone()), cat(&|l| host(l.mlp.up_proj.weight.val()), 0..3));
        assert_eq!(host(s.down.clone()), cat(&|l| host(l.mlp.down_proj.weight.val()), 0..3));
        assert_eq!(host(s.post_norm.clone()), cat(&|l| host(l.post_attention_layernorm.weight.val()), 0..3));
        assert_eq!(host(s.wq.clone()), cat(&|l| host(l.self_attn.q_proj.weight.val()), 0..4));
        assert_eq!(host(s.wk.clone()), cat(&|l| host(l.self_attn.k_proj.weight.val()), 0..4));
        assert_eq!(host(s.wv.clone()), cat(&|l| host(l.self_attn.v_proj.weight.val()), 0..4));
        assert_eq!(host(s.input_norm.clone()), cat(&|l| host(l.input_layernorm.weight.val()), 0..4));
        assert_eq!(host(s.q_norm.clone()), cat(&|l| host(l.self_attn.q_norm.weight.val()), 0..4));
        assert_eq!(host(s.k_norm.clone()), cat(&|l| host(l.self_attn.k_norm.weight.val()), 0..4));
        assert_eq!(s.wo.dims(), [3 * 8, 8]);
        assert_eq!(s.wq.dims(), [4 * 8, 8]);
        // Each layer's parameters, now ranges of the stacks, hold what they held.
        let after: Vec<Vec<f32>> = layers.iter().flat_map(|l| [host(l.self_attn.o_proj.weight.val()), host(l.mlp.down_proj.weight.val()), host(l.self_attn.q_proj.weight.val())]).collect();
        assert_eq!(after, before);
        // (The element values name their layer: the stacks did not mix layers up.)
        assert_eq!(host(s.wq.clone())[3 * 64], (3000 + 100) as f32);
    }
}
