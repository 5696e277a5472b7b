use burn::module::Module;
use burn::tensor::Tensor;

use super::{Attention, Mlp, RmsNorm, Rope};
use crate::kv_cache::LayerCache;
use crate::ops::{self, reference};
use crate::plan::{LayerPlan, OpChoice};

/// One pre-norm Qwen3 decoder layer.
#[derive(Module, Debug)]
pub struct DecoderLayer {
    pub input_layernorm: RmsNorm,
    pub self_attn: Attention,
    pub post_attention_layernorm: RmsNorm,
    pub mlp: Mlp,
}

impl DecoderLayer {
    /// `x: [batch, seq, hidden] -> [batch, seq, hidden]` at positions `past..past + seq`.
    ///
    /// The one dispatch point of a layer: each step reads its choice from `plan` and runs the
    /// fused op or the reference ops.
    pub fn forward(&self, x: Tensor<3>, rope: &Rope, cache: &mut LayerCache, past: usize, plan: &LayerPlan) -> Tensor<3> {
        let [b, t, hidden] = x.dims();
        let a = &self.self_attn;
        let shape = a.shape(b, t);
        let x = x.reshape([b * t, hidden]);
        let eps = self.input_layernorm.eps;

        // 1. input_layernorm + q/k/v projections. [b*t, heads*hd], [b*t, kv*hd] x 2
        let (q, k, v) = match plan.rms_norm_qkv {
            OpChoice::Fused(p) => {
                let qkv = ops::rms_norm_qkv(
                    x.clone(),
                    self.input_layernorm.weight.val(),
                    a.q_proj.weight.val(),
                    a.k_proj.weight.val(),
                    a.v_proj.weight.val(),
                    eps,
                    p,
                );
                let (nq, nkv) = (shape.heads * shape.head_dim, shape.kv_heads * shape.head_dim);
                (qkv.clone().narrow(1, 0, nq), qkv.clone().narrow(1, nq, nkv), qkv.narrow(1, nq + nkv, nkv))
            }
            OpChoice::Reference => {
                let h = self.input_layernorm.forward(x.clone());
                (a.q_proj.forward(h.clone()), a.k_proj.forward(h.clone()), a.v_proj.forward(h))
            }
        };

        // 2. q_norm / k_norm + RoPE. [b, heads|kv, t, hd]
        let (q, k, v) = match plan.qk_norm_rope {
            OpChoice::Fused(p) => ops::qk_norm_rope(
                q,
                k,
                v,
                a.q_norm.weight.val(),
                a.k_norm.weight.val(),
                rope.cos.clone(),
                rope.sin.clone(),
                shape,
                a.q_norm.eps,
                p,
            ),
            OpChoice::Reference => a.norm_rope(q, k, v, rope, shape),
        };

        // 3. Attention over the cache, output projection. [b*t, hidden]
        let attn = match plan.attention {
            OpChoice::Fused(p) if past + t <= ops::ATTENTION_MAX_KEYS => {
                let (k, v) = cache.append(past, k, v);
                ops::attention(q, k, v, past, p)
            }
            _ => a.attend(q, k, v, cache, past),
        };
        let attn = match plan.linear {
            OpChoice::Fused(_) => ops::linear(attn, a.o_proj.weight.val()),
            OpChoice::Reference => a.o_proj.forward(attn),
        };

        // 4. Residual + post_attention_layernorm. [b*t, hidden] x 2
        let (x, h) = match plan.add_rms_norm {
            OpChoice::Fused(p) => {
                ops::add_rms_norm(x, attn, self.post_attention_layernorm.weight.val(), self.post_attention_layernorm.eps, p)
            }
            OpChoice::Reference => {
                let x = x + attn;
                (x.clone(), self.post_attention_layernorm.forward(x))
            }
        };

        // 5. MLP and residual. [b*t, intermediate] -> [b*t, hidden]
        let m = &self.mlp;
        let act = match plan.silu_mul {
            OpChoice::Fused(p) => ops::gate_up_silu(h, m.gate_proj.weight.val(), m.up_proj.weight.val(), p),
            OpChoice::Reference => {
                reference::silu_mul(m.gate_proj.forward(h.clone()), m.up_proj.forward(h), ops::Precision::Torch)
            }
        };
        let down = match plan.linear {
            OpChoice::Fused(_) => ops::linear(act, m.down_proj.weight.val()),
            OpChoice::Reference => m.down_proj.forward(act),
        };
        (x + down).reshape([b, t, hidden])
    }
}
