use cubecl::prelude::*;

use crate::reduce::round;
use crate::reduce::{block_max, block_sum};

/// Causal attention of one query row over the KV cache (GQA), scores kept in shared memory.
///
/// Grid: x over `batch * heads`, y over the `seq` new query rows. Query row `i` sits at position
/// `past + i` and attends to keys `0..=past + i` of its KV head (`head / (heads / kv_heads)`).
/// Units take keys in turn for the scores (f32 dot products), then the block finds the max and
/// the sum, then the units split as `parts = block / hd` groups over the keys, unit
/// `(part, d)` accumulating output channel `d` over its keys, and the parts are summed.
///
/// With `past_from_state`, `past` is read from the device-side decode state (graph replay).
///
/// `f32_internal = false` rounds where PyTorch's eager path does: `q @ k^T` to F, the scaling to
/// F, the softmax (computed in f32) to F, the output to F. `true`: f32 throughout, one rounding.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
pub(super) fn attention_kernel<F: Float>(
    q: &Tensor<F>,       // [batch, heads, seq, hd] contiguous
    k: &Tensor<F>,       // [batch, kv_heads, >= past + seq, hd] (any strides; last dim contiguous)
    v: &Tensor<F>,       // [batch, kv_heads, >= past + seq, hd]
    out: &mut Tensor<F>, // [batch, seq, heads * hd]
    past: u32,
    state: &Tensor<u32>, // [2] (token, position) when `past_from_state`: past = state[1]
    scale: f32,
    #[comptime] f32_internal: bool,
    #[comptime] past_from_state: bool,
    #[comptime] max_keys: usize,
    #[comptime] max_head_dim: usize,
    #[comptime] block: usize,
    #[define(F)] _dtype: ElemType,
) {
    let bh = CUBE_POS_X as usize;
    let i = CUBE_POS_Y as usize;
    let unit = UNIT_POS_X as usize;
    let heads = q.shape(1);
    let seq = q.shape(2);
    let hd = q.shape(3);
    let kv_heads = k.shape(1);
    let b = bh / heads;
    let h = bh % heads;
    let g = h / (heads / kv_heads);
    let past = if past_from_state { state[1] } else { past };
    let n_keys = past as usize + i + 1;

    let mut qs = Shared::<[f32]>::new_slice(max_head_dim);
    let mut scores = Shared::<[f32]>::new_slice(max_keys);

    // 1. The query row, in f32.
    let q_base = ((b * heads + h) * seq + i) * hd;
    let mut d = unit;
    while d < hd {
        qs[d] = f32::cast_from(q[q_base + d]);
        d += block;
    }
    sync_cube();

    // 2. Scores, and each unit's maximum.
    let k_base = b * k.stride(0) + g * k.stride(1);
    let mut local_max = f32::new(f32::MIN);
    let mut j = unit;
    while j < n_keys {
        let row = k_base + j * k.stride(2);
        // Four independent accumulators keep four loads in flight (the loop is not unrolled:
        // hd is a runtime value), then the remainder.
        let mut d0 = 0.0f32;
        let mut d1 = 0.0f32;
        let mut d2 = 0.0f32;
        let mut d3 = 0.0f32;
        let mut e = 0usize;
        while e + 4 <= hd {
            d0 += qs[e] * f32::cast_from(k[row + e]);
            d1 += qs[e + 1] * f32::cast_from(k[row + e + 1]);
            d2 += qs[e + 2] * f32::cast_from(k[row + e + 2]);
            d3 += qs[e + 3] * f32::cast_from(k[row + e + 3]);
            e += 4;
        }
        while e < hd {
            d0 += qs[e] * f32::cast_from(k[row + e]);
            e += 1;
        }
        let dot = (d0 + d1) + (d2 + d3);
        let s = if f32_internal {
            dot * scale
        } else {
            round::<F>(round::<F>(dot) * scale)
        };
        scores[j] = s;
        local_max = max(local_max, s);
        j += block;
    }
    let m = block_max(local_max, block);

    // 3. Softmax in f32.
    let mut local_sum = 0.0f32;
    let mut j = unit;
    while j < n_keys {
        let p = (scores[j] - m).exp();
        scores[j] = p;
        local_sum += p;
        j += block;
    }
    let total = block_sum(local_sum, block);
    let inv = 1.0f32 / total;
    let mut j = unit;
    while j < n_keys {
        let p = scores[j] * inv;
        scores[j] = if f32_internal { p } else { round::<F>(p) };
        j += block;
    }
    sync_cube();

    // 4. Weighted values: `parts` groups of `hd` units, each over every `parts`-th key.
    let v_base = b * v.stride(0) + g * v.stride(1);
    let out_base = (b * seq + i) * heads * hd + h * hd;
    let parts = block / hd;
    let part = unit / hd;
    let d = unit % hd;
    let mut partial = Shared::<[f32]>::new_slice(block);
    if part < parts {
        // Four keys per step, as in the scores.
        let vs = v.stride(2);
        let mut a0 = 0.0f32;
        let mut a1 = 0.0f32;
        let mut a2 = 0.0f32;
        let mut a3 = 0.0f32;
        let mut j = part;
        while j + 3 * parts < n_keys {
            a0 += scores[j] * f32::cast_from(v[v_base + j * vs + d]);
            a1 += scores[j + parts] * f32::cast_from(v[v_base + (j + parts) * vs + d]);
            a2 += scores[j + 2 * parts] * f32::cast_from(v[v_base + (j + 2 * parts) * vs + d]);
            a3 += scores[j + 3 * parts] * f32::cast_from(v[v_base + (j + 3 * parts) * vs + d]);
            j += 4 * parts;
        }
        while j < n_keys {
            a0 += scores[j] * f32::cast_from(v[v_base + j * vs + d]);
            j += parts;
        }
        partial[unit] = (a0 + a1) + (a2 + a3);
    }
    sync_cube();
    if part == 0 {
        let mut acc = 0.0f32;
        for p in 0..parts {
            acc += partial[p * hd + d];
        }
        out[out_base + d] = F::cast_from(acc);
    }
}

