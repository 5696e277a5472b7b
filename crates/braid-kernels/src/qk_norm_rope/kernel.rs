use cubecl::prelude::*;

use crate::reduce::round;
use crate::reduce::block_sum;

/// Per-head RMSNorm of q and k over head_dim followed by NeoX RoPE, and the head-major copy of v.
/// Keys and values go to new tensors `[batch, kv_heads, seq, hd]`, or in place into the cache
/// `[batch, kv_heads, capacity, hd]` at positions `state[1] + t` (`into_cache`: the graph-ready
/// decode step) or into the block pools `[slots, kv_heads, hd]` at `slots[row]` (`into_pool`):
/// one launch instead of this one and a KV write.
///
/// Grid: x over token rows (`batch * seq`), y over `heads + 2 * kv_heads` (q heads, k heads,
/// v heads). Unit `i < half` owns the rotary pair `(i, i + half)`.
///
/// `f32_internal = false` rounds where HF does: the normalised value, its product with the norm
/// weight, cos/sin (cast to F), each product and the sum of RoPE. `true` computes in f32 and rounds
/// the output once.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
pub(super) fn qk_norm_rope_kernel<F: Float>(
    q: &Tensor<F>,            // [rows, heads * hd] (row stride may be wider)
    k: &Tensor<F>,            // [rows, kv_heads * hd]
    v: &Tensor<F>,            // [rows, kv_heads * hd]
    q_weight: &Tensor<F>,     // [hd]
    k_weight: &Tensor<F>,     // [hd]
    cos: &Tensor<f32>,        // [seq, hd]
    sin: &Tensor<f32>,        // [seq, hd]
    q_out: &mut Tensor<F>,    // [batch, heads, seq, hd]
    k_out: &mut Tensor<F>,    // [batch, kv_heads, seq, hd] (the cache or a pool, see above)
    v_out: &mut Tensor<F>,    // like k_out
    state: &Tensor<u32>,      // [2] (token, position) when `into_cache`
    slots: &Tensor<u32>,      // [rows] when `into_pool`
    eps: f32,
    #[comptime] f32_internal: bool,
    #[comptime] into_cache: bool,
    #[comptime] into_pool: bool,
    #[comptime] half: usize,
    #[comptime] block: usize,
    #[comptime] late_tables: bool,
    #[define(F)] _dtype: ElemType,
) {
    let row = CUBE_POS_X as usize;
    let slot = CUBE_POS_Y as usize;
    let i = UNIT_POS_X as usize;
    let hd = 2 * half;
    let seq = cos.shape(0);
    let b = row / seq;
    let t = row % seq;
    let heads = q_out.shape(1);
    let kv_heads = k_out.shape(1);
    let active = i < half;

    if slot >= heads + kv_heads {
        // v: a layout change only.
        let h = slot - heads - kv_heads;
        if active {
            let src = row * v.stride(0) + h * hd;
            let dst = kv_offset::<F>(v_out, state, slots, b, h, t, row, seq, into_cache, into_pool);
            v_out[dst + i] = v[src + i];
            v_out[dst + i + half] = v[src + i + half];
        }
    } else {
        let is_q = slot < heads;
        let h = if is_q { slot } else { slot - heads };
        let mut x1 = 0.0f32;
        let mut x2 = 0.0f32;
        let mut w1 = 0.0f32;
        let mut w2 = 0.0f32;
        // cos/sin are loaded with the row, before the reduction waits on it (one memory round
        // trip instead of two in a chain that is all latency at decode); `late_tables`: after
        // it (the old order, for comparisons).
        let mut c1 = 0.0f32;
        let mut s1 = 0.0f32;
        let mut c2 = 0.0f32;
        let mut s2 = 0.0f32;
        if active && !late_tables {
            c1 = cos[t * hd + i];
            s1 = sin[t * hd + i];
            c2 = cos[t * hd + i + half];
            s2 = sin[t * hd + i + half];
        }
        if active {
            if is_q {
                let src = row * q.stride(0) + h * hd;
                x1 = f32::cast_from(q[src + i]);
                x2 = f32::cast_from(q[src + i + half]);
                w1 = f32::cast_from(q_weight[i]);
                w2 = f32::cast_from(q_weight[i + half]);
            } else {
                let src = row * k.stride(0) + h * hd;
                x1 = f32::cast_from(k[src + i]);
                x2 = f32::cast_from(k[src + i + half]);
                w1 = f32::cast_from(k_weight[i]);
                w2 = f32::cast_from(k_weight[i + half]);
            }
        }
        let sq = block_sum(x1 * x1 + x2 * x2, block);
        let inv = 1.0f32 / (sq / f32::cast_from(hd as u32) + eps).sqrt();
        if active {
            if late_tables {
                c1 = cos[t * hd + i];
                s1 = sin[t * hd + i];
                c2 = cos[t * hd + i + half];
                s2 = sin[t * hd + i + half];
            }
            let (o1, o2) = norm_rope_pair::<F>(x1, x2, w1, w2, c1, s1, c2, s2, inv, f32_internal);
            if is_q {
                let dst = ((b * heads + h) * seq + t) * hd;
                q_out[dst + i] = F::cast_from(o1);
                q_out[dst + i + half] = F::cast_from(o2);
            } else {
                let dst = kv_offset::<F>(k_out, state, slots, b, h, t, row, seq, into_cache, into_pool);
                k_out[dst + i] = F::cast_from(o1);
                k_out[dst + i + half] = F::cast_from(o2);
            }
        }
    }
}


/// QK-norm and RoPE of one rotary pair `(x1, x2)` = channels `(i, i + hd / 2)` of a head:
/// `inv` is the head's inverse RMS, `w1, w2` the norm weights of the two channels, `(c1, s1)`
/// and `(c2, s2)` their cos/sin. Returns the pair's two outputs with the mode's rounding points.
/// Every kernel that applies QK-norm + RoPE calls this one function, so they give the same bits.
#[cube]
#[allow(clippy::too_many_arguments)]
pub(crate) fn norm_rope_pair<F: Float>(
    x1: f32,
    x2: f32,
    w1: f32,
    w2: f32,
    c1: f32,
    s1: f32,
    c2: f32,
    s2: f32,
    inv: f32,
    #[comptime] f32_internal: bool,
) -> (f32, f32) {
    if f32_internal {
        let n1 = x1 * inv * w1;
        let n2 = x2 * inv * w2;
        (n1 * c1 - n2 * s1, n2 * c2 + n1 * s2)
    } else {
        let n1 = round::<F>(round::<F>(x1 * inv) * w1);
        let n2 = round::<F>(round::<F>(x2 * inv) * w2);
        // HF: q * cos + rotate_half(q) * sin, each op in F.
        (
            round::<F>(n1 * round::<F>(c1)) + round::<F>(-n2 * round::<F>(s1)),
            round::<F>(n2 * round::<F>(c2)) + round::<F>(n1 * round::<F>(s2)),
        )
    }
}

/// Where row `row` (sequence `b`, step `t`) of kv head `h` starts in `out`.
#[cube]
#[allow(clippy::too_many_arguments)]
fn kv_offset<F: Float>(
    out: &mut Tensor<F>,
    state: &Tensor<u32>,
    slots: &Tensor<u32>,
    b: usize,
    h: usize,
    t: usize,
    row: usize,
    seq: usize,
    #[comptime] into_cache: bool,
    #[comptime] into_pool: bool,
) -> usize {
    if into_pool {
        slots[row] as usize * out.stride(0) + h * out.stride(1)
    } else if into_cache {
        b * out.stride(0) + h * out.stride(1) + (state[1] as usize + t) * out.stride(2)
    } else {
        ((b * out.shape(1) + h) * seq + t) * out.shape(3)
    }
}
