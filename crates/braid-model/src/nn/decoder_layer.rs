use burn::module::Module;
use burn::tensor::{Int, Tensor};

use super::{Attention, Mlp, RmsNorm, Rope};
use crate::kv_cache::LayerCache;
use crate::ops::{self, QkShape, reference};
use crate::plan::{LayerPlan, OpChoice};
use crate::taps::{Taps, layer_tap};

/// Records `t` as tap `name` of the layer when tapping.
fn record<const D: usize>(taps: &mut Option<(&mut Taps, usize)>, name: &str, t: &Tensor<D>) {
    if let Some((taps, layer)) = taps {
        taps.push(layer_tap(*layer, name), t);
    }
}

/// What one layer's decode step ([`DecoderLayer::decode_step`]) hands the next.
pub enum Carry {
    /// Nothing: the stream `x` is complete (the first layer).
    None,
    /// The layer's MLP output, not yet added to the stream (the next layer's fused input norm
    /// adds it).
    Down(Tensor<2>),
    /// The next layer's `q: [1, heads, 1, hd]`: the layer's persistent MLP launch ran on into the
    /// next layer's attention inputs (`ops::decode_mlp_qkv`): the stream is summed and the new
    /// key and value are in the next layer's cache.
    Q(Tensor<4>),
    /// The next layer's attention output `[1, heads * hd]` as well (`ops::decode_mlp_attn`).
    Attn(Tensor<2>),
}

/// Whether a layer's persistent MLP launch (precision `p`) may run on into the next layer's
/// attention inputs: that layer's input norm + QKV and QK-norm + RoPE fused in the same mode,
/// with the one-launch QKV + RoPE and KV write on (its fallback) and not switched off.
fn chains_into(next: &LayerPlan, p: ops::Precision, x: &Tensor<2>) -> bool {
    next.rms_norm_qkv == OpChoice::Fused(p)
        && next.qk_norm_rope == OpChoice::Fused(p)
        && ops::decode_mlp_qkv_fused()
        && ops::kv_write_fused()
        && ops::qkv_rope_fused()
        && ops::qkv_rope_supported(x)
}

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
    /// fused op or the reference ops. With `taps`, records the intermediate tensors of layer
    /// `index` (see [`crate::taps`]).
    pub fn forward(
        &self,
        x: Tensor<3>,
        rope: &Rope,
        cache: &mut LayerCache,
        past: usize,
        plan: &LayerPlan,
        mut taps: Option<(&mut Taps, usize)>,
    ) -> Tensor<3> {
        let [b, t, hidden] = x.dims();
        let shape = self.self_attn.shape(b, t);
        let x = x.reshape([b * t, hidden]);

        // 1. input_layernorm + q/k/v projections. [b*t, heads*hd], [b*t, kv*hd] x 2
        let (q, k, v, normed) = self.qkv(x.clone(), plan.rms_norm_qkv);
        if let Some(h) = &normed {
            record(&mut taps, "input_norm", h);
        }
        record(&mut taps, "q", &q);
        record(&mut taps, "k", &k);
        record(&mut taps, "v", &v);
        // 2. q_norm / k_norm + RoPE. [b, heads|kv, t, hd]
        let (q, k, v) = self.norm_rope(q, k, v, rope, shape, plan.qk_norm_rope);
        record(&mut taps, "q_rope", &q);
        record(&mut taps, "k_rope", &k);
        // 3. Attention over the cache, output projection. [b*t, heads*hd] -> [b*t, hidden]
        let attn = self.attention(q, k, v, cache, past, plan.attention);
        record(&mut taps, "attn", &attn);
        let attn = self.o_proj(attn, plan.linear);
        record(&mut taps, "o_proj", &attn);
        // 4. Residual + post_attention_layernorm. [b*t, hidden] x 2
        let (x, h) = self.add_norm(x, attn, plan.add_rms_norm);
        record(&mut taps, "residual", &x);
        record(&mut taps, "post_norm", &h);
        // 5. MLP and residual. [b*t, intermediate] -> [b*t, hidden]
        let act = self.gate_up(h, plan.silu_mul);
        record(&mut taps, "mlp_act", &act);
        let down = self.down(act, plan.linear);
        record(&mut taps, "mlp_out", &down);
        let out = x + down;
        record(&mut taps, "output", &out);
        out.reshape([b, t, hidden])
    }

    /// Step 1: `x: [rows, hidden]` -> q, k, v (`[rows, heads*hd]`, `[rows, kv*hd]` x 2), and the
    /// normed input when the reference path materialises it.
    pub fn qkv(&self, x: Tensor<2>, c: OpChoice) -> (Tensor<2>, Tensor<2>, Tensor<2>, Option<Tensor<2>>) {
        let a = &self.self_attn;
        match c {
            OpChoice::Fused(p) => {
                let qkv = ops::rms_norm_qkv(
                    x,
                    self.input_layernorm.weight.val(),
                    a.q_proj.weight.val(),
                    a.k_proj.weight.val(),
                    a.v_proj.weight.val(),
                    self.input_layernorm.eps,
                    p,
                );
                let (q, k, v) = self.split_qkv(qkv);
                (q, k, v, None)
            }
            OpChoice::Reference => {
                let h = self.input_layernorm.forward(x);
                (a.q_proj.forward(h.clone()), a.k_proj.forward(h.clone()), a.v_proj.forward(h.clone()), Some(h))
            }
        }
    }

    /// Views of a fused `[rows, q | k | v]` buffer as q, k and v (no copy).
    fn split_qkv(&self, qkv: Tensor<2>) -> (Tensor<2>, Tensor<2>, Tensor<2>) {
        let a = &self.self_attn;
        let (nq, nkv) = (a.num_heads * a.head_dim, a.num_kv_heads * a.head_dim);
        (qkv.clone().narrow(1, 0, nq), qkv.clone().narrow(1, nq, nkv), qkv.narrow(1, nq + nkv, nkv))
    }

    /// Step 2: q_norm / k_norm + RoPE -> `[b, heads|kv, t, hd]`.
    pub fn norm_rope(
        &self,
        q: Tensor<2>,
        k: Tensor<2>,
        v: Tensor<2>,
        rope: &Rope,
        shape: QkShape,
        c: OpChoice,
    ) -> (Tensor<4>, Tensor<4>, Tensor<4>) {
        let a = &self.self_attn;
        match c {
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
        }
    }

    /// Step 3: appends k, v to the cache at `past` and attends -> `[b*t, heads*hd]`. Beyond
    /// `ops::ATTENTION_MAX_KEYS` keys, a prefill (more than one new row) runs the reference path
    /// whatever the choice; decode rows are split over the keys and take any length.
    pub fn attention(&self, q: Tensor<4>, k: Tensor<4>, v: Tensor<4>, cache: &mut LayerCache, past: usize, c: OpChoice) -> Tensor<2> {
        let t = q.dims()[2];
        match c {
            OpChoice::Fused(p) if t == 1 || past + t <= ops::ATTENTION_MAX_KEYS => {
                let (k, v) = cache.append(past, k, v);
                ops::attention(q, k, v, past, p)
            }
            _ => self.self_attn.attend(q, k, v, cache, past),
        }
    }

    /// `o_proj`: `[rows, heads*hd] -> [rows, hidden]`.
    pub fn o_proj(&self, attn: Tensor<2>, c: OpChoice) -> Tensor<2> {
        let o = &self.self_attn.o_proj;
        match c {
            OpChoice::Fused(_) => ops::linear(attn, o.weight.val()),
            OpChoice::Reference => o.forward(attn),
        }
    }

    /// Step 4: residual add + `post_attention_layernorm` -> (residual, normed), `[rows, hidden]`.
    pub fn add_norm(&self, x: Tensor<2>, attn: Tensor<2>, c: OpChoice) -> (Tensor<2>, Tensor<2>) {
        let n = &self.post_attention_layernorm;
        match c {
            OpChoice::Fused(p) => ops::add_rms_norm(x, attn, n.weight.val(), n.eps, p),
            OpChoice::Reference => {
                let x = x + attn;
                (x.clone(), n.forward(x))
            }
        }
    }

    /// Step 5a: `silu(gate_proj(h)) * up_proj(h)`: `[rows, hidden] -> [rows, intermediate]`.
    pub fn gate_up(&self, h: Tensor<2>, c: OpChoice) -> Tensor<2> {
        let m = &self.mlp;
        match c {
            OpChoice::Fused(p) => ops::gate_up_silu(h, m.gate_proj.weight.val(), m.up_proj.weight.val(), p),
            OpChoice::Reference => {
                reference::silu_mul(m.gate_proj.forward(h.clone()), m.up_proj.forward(h), ops::Precision::Torch)
            }
        }
    }

    /// Step 5b: `down_proj`: `[rows, intermediate] -> [rows, hidden]`.
    pub fn down(&self, act: Tensor<2>, c: OpChoice) -> Tensor<2> {
        let d = &self.mlp.down_proj;
        match c {
            OpChoice::Fused(_) => ops::linear(act, d.weight.val()),
            OpChoice::Reference => d.forward(act),
        }
    }
}

impl DecoderLayer {
    /// One graph-ready decode step (batch 1) at the position held in the device-side `state`
    /// (see `crate::graph_decode`); the new key and value are written into `cache` in place.
    /// `x: [1, hidden]` is the residual stream and `carry` what the previous layer's step left:
    /// its MLP output not yet added to the stream (the add runs inside this layer's fused input
    /// norm + QKV, `ops::add_rms_norm_qkv`), or this layer's `q` already computed (its key and
    /// value in `cache`). This layer's post-attention add + norm runs inside the gate/up
    /// projection (`ops::add_rms_norm_gate_up`) and the KV write inside the QK-norm + RoPE
    /// (`ops::qk_norm_rope_cache`), so a layer is 6 kernels with every op fused; on devices with
    /// plane operations the first two of those are one (`ops::qkv_rope_cache`: 5). Bit for bit
    /// the eager path: the fused ops have its rounding points and reduction order. Attention
    /// always runs the fused kernel (it reads the position from the device); a `reference`
    /// attention choice takes its torch mode, which has the reference's rounding points. The
    /// other ops follow the plan. With o_proj, the post-attention add + norm and the MLP all
    /// fused, the layer's second half is one persistent launch (`ops::decode_mlp`, its grid
    /// barriers on `barrier`) where the device can, and with `next` (the next layer, its cache
    /// and plan) it runs on into that layer's attention inputs (`ops::decode_mlp_qkv`: a layer
    /// is then two launches, attention and the rest). Returns the stream and the carry.
    #[allow(clippy::too_many_arguments)]
    pub fn decode_step(
        &self,
        x: Tensor<2>,
        carry: Carry,
        rope: &Rope,
        cache: &mut LayerCache,
        state: &Tensor<1, Int>,
        barrier: &Tensor<1, Int>,
        plan: &LayerPlan,
        next: Option<(&DecoderLayer, &mut LayerCache, &LayerPlan)>,
    ) -> (Tensor<2>, Carry) {
        let pending = match carry {
            // The previous layer's launch ran this layer's attention inputs.
            Carry::Q(q) => return self.decode_rest(x, q, cache, state, barrier, plan, rope, next),
            Carry::Attn(attn) => return self.decode_mlp_step(x, attn, state, barrier, plan, rope, next),
            Carry::Down(down) => Some(down),
            Carry::None => None,
        };
        let (x, q) = self.attention_inputs(x, pending, rope, cache, state, plan);
        self.decode_rest(x, q, cache, state, barrier, plan, rope, next)
    }

    /// The first layer's share of a decode step run as one `ops::decode_layers` launch for the
    /// layers after it: its attention inputs (`x` the complete stream) and its attention, with
    /// `prefetch` (the first of the launch's weights) read into L2 meanwhile. Returns `(stream,
    /// attn: [1, heads * hd])`.
    #[allow(clippy::too_many_arguments)]
    pub fn decode_attention(
        &self,
        x: Tensor<2>,
        rope: &Rope,
        cache: &mut LayerCache,
        state: &Tensor<1, Int>,
        plan: &LayerPlan,
        prefetch: [Tensor<2>; 4],
    ) -> (Tensor<2>, Tensor<2>) {
        let (x, q) = self.attention_inputs(x, None, rope, cache, state, plan);
        let p = match plan.attention {
            OpChoice::Fused(p) => p,
            OpChoice::Reference => ops::Precision::Torch,
        };
        (x, ops::attention_at_prefetch(q, cache.k.clone(), cache.v.clone(), state.clone(), p, prefetch))
    }

    /// The precision of this layer's persistent launch running on into `next`'s attention
    /// (`ops::decode_mlp_attn`, as [`Self::decode_step`] would pick it), or `None` where it
    /// would not.
    pub fn attends_into(&self, plan: &LayerPlan, next: &LayerPlan, x: &Tensor<2>) -> Option<ops::Precision> {
        match (plan.linear, plan.add_rms_norm, plan.silu_mul) {
            (OpChoice::Fused(_), OpChoice::Fused(p1), OpChoice::Fused(p2))
                if p1 == p2
                    && ops::decode_mlp_fused()
                    && chains_into(next, p1, x)
                    && next.attention == OpChoice::Fused(p1)
                    && ops::decode_mlp_attn_fused() =>
            {
                Some(p1)
            }
            _ => None,
        }
    }

    /// [`Self::decode_step`]'s attention inputs: the previous layer's `pending` MLP output added
    /// to the stream, this layer's input norm + QKV, QK-norm + RoPE and KV write: `(x, q)`.
    #[allow(clippy::too_many_arguments)]
    fn attention_inputs(
        &self,
        x: Tensor<2>,
        pending: Option<Tensor<2>>,
        rope: &Rope,
        cache: &mut LayerCache,
        state: &Tensor<1, Int>,
        plan: &LayerPlan,
    ) -> (Tensor<2>, Tensor<4>) {
        let shape = self.self_attn.shape(1, 1);
        let a = &self.self_attn;
        match (plan.rms_norm_qkv, plan.qk_norm_rope) {
            // One launch from the stream to the cache: (add +) norm + QKV + QK-norm + RoPE + KV write.
            (OpChoice::Fused(p1), OpChoice::Fused(p2))
                if p1 == p2 && ops::kv_write_fused() && ops::qkv_rope_fused() && ops::qkv_rope_supported(&x) =>
            {
                let add = pending.is_some();
                let (residual, input) = match pending {
                    Some(down) => (x, down),
                    None => (x.clone(), x),
                };
                let (x, q, kc, vc) = ops::qkv_rope_cache(
                    input,
                    residual,
                    add,
                    self.input_layernorm.weight.val(),
                    a.q_proj.weight.val(),
                    a.k_proj.weight.val(),
                    a.v_proj.weight.val(),
                    a.q_norm.weight.val(),
                    a.k_norm.weight.val(),
                    rope.cos.clone(),
                    rope.sin.clone(),
                    shape,
                    self.input_layernorm.eps,
                    a.q_norm.eps,
                    p1,
                    cache.k.clone(),
                    cache.v.clone(),
                    state.clone(),
                );
                (cache.k, cache.v) = (kc, vc);
                (x, q)
            }
            _ => {
                let (x, q, k, v) = self.add_qkv(x, pending, plan.rms_norm_qkv);
                // Fused: the keys and values go straight into the cache (one launch, not two).
                let q = match plan.qk_norm_rope {
                    OpChoice::Fused(p) if ops::kv_write_fused() => {
                        let (q, kc, vc) = ops::qk_norm_rope_cache(
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
                            cache.k.clone(),
                            cache.v.clone(),
                            state.clone(),
                        );
                        (cache.k, cache.v) = (kc, vc);
                        q
                    }
                    c => {
                        let (q, k, v) = self.norm_rope(q, k, v, rope, shape, c);
                        (cache.k, cache.v) = ops::kv_write(cache.k.clone(), cache.v.clone(), k, v, state.clone());
                        q
                    }
                };
                (x, q)
            }
        }
    }

    /// [`Self::decode_step`] from the attention on: `x` the stream, `q: [1, heads, 1, hd]` with
    /// the new key and value in `cache`.
    #[allow(clippy::too_many_arguments)]
    fn decode_rest(
        &self,
        x: Tensor<2>,
        q: Tensor<4>,
        cache: &mut LayerCache,
        state: &Tensor<1, Int>,
        barrier: &Tensor<1, Int>,
        plan: &LayerPlan,
        rope: &Rope,
        next: Option<(&DecoderLayer, &mut LayerCache, &LayerPlan)>,
    ) -> (Tensor<2>, Carry) {
        let p = match plan.attention {
            OpChoice::Fused(p) => p,
            OpChoice::Reference => ops::Precision::Torch,
        };
        // While the attention runs on a few SMs, the rest read this layer's remaining weights
        // into L2 for the GEMVs that follow.
        let attn = ops::attention_at_prefetch(q, cache.k.clone(), cache.v.clone(), state.clone(), p, self.prefetch());
        self.decode_mlp_step(x, attn, state, barrier, plan, rope, next)
    }

    /// The weights the step reads after its attention, the most useful in L2 first: o_proj
    /// (the next launch's first phase, whose loads nothing else hides), then gate, up, down
    /// (also what `ops::decode_layers` reads into L2 for the launch after it).
    /// With the default two prefetched (`attention::L2_PREFETCH`): 1,161.3-1,161.9 tok/s
    /// against 1,147.9-1,151.0 with gate and up (H100, 2026-11-27); `$BRAID_L2_PREFETCH_O=0`
    /// for that order.
    pub(crate) fn prefetch(&self) -> [Tensor<2>; 4] {
        static O_FIRST: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        let m = &self.mlp;
        let (g, u, d, o) = (m.gate_proj.weight.val(), m.up_proj.weight.val(), m.down_proj.weight.val(), self.self_attn.o_proj.weight.val());
        if *O_FIRST.get_or_init(|| std::env::var("BRAID_L2_PREFETCH_O").map_or(true, |s| s.trim() != "0")) { [o, g, u, d] } else { [g, u, d, o] }
    }

    /// [`Self::decode_step`] from the attention output `attn: [1, heads * hd]` on.
    #[allow(clippy::too_many_arguments)]
    fn decode_mlp_step(
        &self,
        x: Tensor<2>,
        attn: Tensor<2>,
        state: &Tensor<1, Int>,
        barrier: &Tensor<1, Int>,
        plan: &LayerPlan,
        rope: &Rope,
        next: Option<(&DecoderLayer, &mut LayerCache, &LayerPlan)>,
    ) -> (Tensor<2>, Carry) {
        let (a, m) = (&self.self_attn, &self.mlp);
        match (plan.linear, plan.add_rms_norm, plan.silu_mul) {
            // One persistent launch from the attention output to the MLP output (the three
            // launches below where the device cannot), running on into the next layer's
            // attention inputs where that layer's are fused in the same mode.
            (OpChoice::Fused(_), OpChoice::Fused(p1), OpChoice::Fused(p2)) if p1 == p2 && ops::decode_mlp_fused() => {
                let n = &self.post_attention_layernorm;
                if let Some((layer, next_cache, next_plan)) = next
                    && chains_into(next_plan, p1, &x)
                {
                    let na = &layer.self_attn;
                    // With the next layer's attention fused too, the launch runs it: a layer is
                    // then one launch.
                    let attend = (next_plan.attention == OpChoice::Fused(p1) && ops::decode_mlp_attn_fused()).then(|| layer.prefetch());
                    let (stream, carry, k, v) = ops::decode_mlp_next(
                        attn,
                        x,
                        n.weight.val(),
                        a.o_proj.weight.val(),
                        m.gate_proj.weight.val(),
                        m.up_proj.weight.val(),
                        m.down_proj.weight.val(),
                        n.eps,
                        p1,
                        barrier,
                        layer.input_layernorm.weight.val(),
                        na.q_proj.weight.val(),
                        na.k_proj.weight.val(),
                        na.v_proj.weight.val(),
                        na.q_norm.weight.val(),
                        na.k_norm.weight.val(),
                        rope.cos.clone(),
                        rope.sin.clone(),
                        na.shape(1, 1),
                        layer.input_layernorm.eps,
                        na.q_norm.eps,
                        next_cache.k.clone(),
                        next_cache.v.clone(),
                        state.clone(),
                        attend,
                    );
                    (next_cache.k, next_cache.v) = (k, v);
                    let carry = match carry {
                        ops::NextInput::Q(q) => Carry::Q(q),
                        ops::NextInput::Attn(attn) => Carry::Attn(attn),
                    };
                    return (stream, carry);
                }
                let (h, out) = ops::decode_mlp(
                    attn,
                    x,
                    n.weight.val(),
                    a.o_proj.weight.val(),
                    m.gate_proj.weight.val(),
                    m.up_proj.weight.val(),
                    m.down_proj.weight.val(),
                    n.eps,
                    p1,
                    barrier,
                );
                (h, Carry::Down(out))
            }
            _ => {
                let attn = self.o_proj(attn, plan.linear);
                let (x, act) = self.add_gate_up(x, attn, plan);
                (x, Carry::Down(self.down(act, plan.linear)))
            }
        }
    }

    /// The previous layer's pending MLP output added to the stream `x: [rows, hidden]` and this
    /// layer's input norm + QKV, fused into one launch where the choice is fused:
    /// `(x, q, k, v)`.
    fn add_qkv(&self, x: Tensor<2>, pending: Option<Tensor<2>>, c: OpChoice) -> (Tensor<2>, Tensor<2>, Tensor<2>, Tensor<2>) {
        let a = &self.self_attn;
        match (pending, c) {
            (Some(down), OpChoice::Fused(p)) => {
                let (x, qkv) = ops::add_rms_norm_qkv(
                    x,
                    down,
                    self.input_layernorm.weight.val(),
                    a.q_proj.weight.val(),
                    a.k_proj.weight.val(),
                    a.v_proj.weight.val(),
                    self.input_layernorm.eps,
                    p,
                );
                let (q, k, v) = self.split_qkv(qkv);
                (x, q, k, v)
            }
            (pending, c) => {
                let x = match pending {
                    Some(down) => x + down,
                    None => x,
                };
                let (q, k, v, _) = self.qkv(x.clone(), c);
                (x, q, k, v)
            }
        }
    }

    /// The attention output added to the stream, `post_attention_layernorm` and the gate/up
    /// projection, one launch when both choices are fused in the same mode: `(x, act)`.
    fn add_gate_up(&self, x: Tensor<2>, attn: Tensor<2>, plan: &LayerPlan) -> (Tensor<2>, Tensor<2>) {
        let n = &self.post_attention_layernorm;
        let m = &self.mlp;
        match (plan.add_rms_norm, plan.silu_mul) {
            (OpChoice::Fused(p1), OpChoice::Fused(p2)) if p1 == p2 => {
                ops::add_rms_norm_gate_up(x, attn, n.weight.val(), m.gate_proj.weight.val(), m.up_proj.weight.val(), n.eps, p1)
            }
            _ => {
                let (x, h) = self.add_norm(x, attn, plan.add_rms_norm);
                (x, self.gate_up(h, plan.silu_mul))
            }
        }
    }

    /// One step of a batch over the paged KV cache (`crate::paged`): `x: [rows, hidden]`, the
    /// new tokens of every sequence in the batch, one after another; `pending` as in
    /// [`Self::decode_step`]. Keys and values go to their slots in the pools; attention reads
    /// each sequence's keys through its block table (one split launch when every sequence has
    /// one new row, else per sequence). Returns the stream and the pending MLP output.
    #[allow(clippy::too_many_arguments)]
    pub fn paged_step(
        &self,
        index: usize,
        x: Tensor<2>,
        pending: Option<Tensor<2>>,
        rope: &Rope,
        pools: &mut crate::paged::PagedLayer,
        batch: &crate::paged::BatchMeta,
        plan: &LayerPlan,
    ) -> (Tensor<2>, Tensor<2>) {
        let rows = x.dims()[0];
        let shape = self.self_attn.shape(1, rows);
        let device = x.device();
        let base = if batch.decode { "decode/" } else { "prefill/" };
        let mut mark = crate::profile::Mark::new(&device, crate::profile::layer_prefix(base, index));
        let (x, q, k, v) = self.add_qkv(x, pending, plan.rms_norm_qkv);
        mark.phase("add+norm+qkv");
        // Fused norm+RoPE before a fused attention that reads only the pools: the keys and values
        // go straight into their slots (one launch, not two). Otherwise the reference attention
        // may need this step's k and v: [1, heads|kv, rows, hd].
        let attention_reads_pools = matches!(plan.attention, OpChoice::Fused(_)) && (batch.decode || batch.prefill_kernel) && ops::kv_write_fused();
        let (q, k, v) = match plan.qk_norm_rope {
            OpChoice::Fused(p) if attention_reads_pools => {
                let a = &self.self_attn;
                let (q, kp, vp) = ops::qk_norm_rope_pool(
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
                    pools.k.clone(),
                    pools.v.clone(),
                    batch.slots.clone(),
                );
                (pools.k, pools.v) = (kp, vp);
                mark.phase("qk_norm_rope+kv_write");
                (q, None, None)
            }
            c => {
                let (q, k, v) = self.norm_rope(q, k, v, rope, shape, c);
                mark.phase("qk_norm_rope");
                (pools.k, pools.v) = ops::paged_kv_write(pools.k.clone(), pools.v.clone(), k.clone(), v.clone(), batch.slots.clone());
                mark.phase("kv_write");
                (q, Some(k), Some(v))
            }
        };
        let attn = crate::paged::attention(q, k, v, pools, batch, plan.attention);
        mark.phase("attention");
        let attn = self.o_proj(attn, plan.linear);
        mark.phase("o_proj");
        let (x, act) = self.add_gate_up(x, attn, plan);
        mark.phase("add+norm+gate_up");
        let down = self.down(act, plan.linear);
        mark.phase("down");
        (x, down)
    }
}
