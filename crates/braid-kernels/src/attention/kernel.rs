use cubecl::prelude::*;

use crate::reduce::round;
use crate::reduce::{block_max, block_sum};

/// Causal attention of one query row over the KV cache (GQA), scores kept in shared memory.
///
/// Grid: x over `batch * heads`, y over the `seq` new query rows. Query row `i` sits at position
/// `past + i` and attends to keys `0..=past + i` of its KV head (`head / (heads / kv_heads)`).
/// Units take keys in turn for the scores (f32 dot products over 16-byte vectors of the key
/// row), then the block finds the max and the sum, then the units split as
/// `parts = block / (hd / vs)` groups over the keys, unit `(part, c)` accumulating the `vs`
/// output channels of vector `c` over its keys, and the parts are summed.
///
/// With `past_from_state`, `past` is read from the device-side decode state (graph replay).
///
/// `f32_internal = false` rounds where PyTorch's eager path does: `q @ k^T` to F, the scaling to
/// F, the softmax (computed in f32) to F, the output to F. `true`: f32 throughout, one rounding.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
pub(super) fn attention_kernel<F: Float, N: Size>(
    q: &Tensor<F>,            // [batch, heads, seq, hd] contiguous
    k: &Tensor<Vector<F, N>>, // [batch, kv_heads, >= past + seq, hd] (any strides; last dim contiguous)
    v: &Tensor<Vector<F, N>>, // [batch, kv_heads, >= past + seq, hd]
    out: &mut Tensor<F>,      // [batch, seq, heads * hd]
    past: u32,
    state: &Tensor<u32>, // [2] (token, position) when `past_from_state`: past = state[1]
    scale: f32,
    #[comptime] f32_internal: bool,
    #[comptime] past_from_state: bool,
    #[comptime] max_keys: usize,
    #[comptime] head_dim: usize,
    #[comptime] block: usize,
    #[comptime] partial_len: usize,
    #[define(F)] _dtype: ElemType,
) {
    let bh = CUBE_POS_X as usize;
    let i = CUBE_POS_Y as usize;
    let unit = UNIT_POS_X as usize;
    let heads = q.shape(1);
    let seq = q.shape(2);
    let hd = head_dim;
    let kv_heads = k.shape(1);
    let b = bh / heads;
    let h = bh % heads;
    let g = h / (heads / kv_heads);
    let past = if past_from_state { state[1] } else { past };
    let n_keys = past as usize + i + 1;
    // K and V rows are read in vectors of `vs` elements (16 bytes where hd allows); strides and
    // row starts are multiples of hd, hence of vs.
    // head_dim is comptime, so the key row's vector loads unroll and issue together.
    let vs = k.vector_size().comptime();
    let nvec = comptime!(head_dim / vs);

    let mut qs = Shared::<[f32]>::new_slice(head_dim);
    let mut scores = Shared::<[f32]>::new_slice(max_keys);

    // 1. The query row, in f32.
    let q_base = ((b * heads + h) * seq + i) * hd;
    let mut d = unit;
    while d < hd {
        qs[d] = f32::cast_from(q[q_base + d]);
        d += block;
    }
    sync_cube();

    // 2. Scores, one key per unit in turn, and each unit's maximum.
    let k_base = b * k.stride(0) + g * k.stride(1);
    let mut local_max = f32::new(f32::MIN);
    let mut j = unit;
    while j < n_keys {
        let row = (k_base + j * k.stride(2)) / vs;
        let dot = key_dot::<F, N>(k, row, &qs, head_dim);
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

    // 4. Weighted values: `parts` groups of `nvec` units, unit `(part, c)` accumulating the
    // `vs` channels of vector `c` over every `parts`-th key (four keys per step), then the parts
    // are summed through shared memory (`partial_len` f32: what the device's shared memory
    // leaves, which bounds `parts`).
    let v_base = b * v.stride(0) + g * v.stride(1);
    let vrow = v.stride(2) / vs;
    let out_base = (b * seq + i) * heads * hd + h * hd;
    let parts = min(block / nvec, partial_len / hd);
    let part = unit / nvec;
    let c = unit % nvec;
    let mut partial = Shared::<[f32]>::new_slice(partial_len);
    if part < parts {
        // Four keys per step (four loads in flight), then the rest one by one.
        let mut a0 = Array::<f32>::new(vs);
        let mut a1 = Array::<f32>::new(vs);
        let mut a2 = Array::<f32>::new(vs);
        let mut a3 = Array::<f32>::new(vs);
        #[unroll]
        for x in 0..vs {
            a0[x] = 0.0;
            a1[x] = 0.0;
            a2[x] = 0.0;
            a3[x] = 0.0;
        }
        let base = v_base / vs + c;
        let mut j = part;
        while j + 3 * parts < n_keys {
            let x0 = v[base + j * vrow];
            let x1 = v[base + (j + parts) * vrow];
            let x2 = v[base + (j + 2 * parts) * vrow];
            let x3 = v[base + (j + 3 * parts) * vrow];
            let p0 = scores[j];
            let p1 = scores[j + parts];
            let p2 = scores[j + 2 * parts];
            let p3 = scores[j + 3 * parts];
            #[unroll]
            for x in 0..vs {
                a0[x] += p0 * f32::cast_from(x0.extract(x));
                a1[x] += p1 * f32::cast_from(x1.extract(x));
                a2[x] += p2 * f32::cast_from(x2.extract(x));
                a3[x] += p3 * f32::cast_from(x3.extract(x));
            }
            j += 4 * parts;
        }
        while j < n_keys {
            let x0 = v[base + j * vrow];
            let p0 = scores[j];
            #[unroll]
            for x in 0..vs {
                a0[x] += p0 * f32::cast_from(x0.extract(x));
            }
            j += parts;
        }
        #[unroll]
        for x in 0..vs {
            partial[part * hd + c * vs + x] = (a0[x] + a1[x]) + (a2[x] + a3[x]);
        }
    }
    sync_cube();
    let mut d = unit;
    while d < hd {
        let mut acc = 0.0f32;
        for p in 0..parts {
            acc += partial[p * hd + d];
        }
        out[out_base + d] = F::cast_from(acc);
        d += block;
    }
}

/// `q . k_row` in f32 over one key row of `head_dim / vs` vectors starting at vector index
/// `row`, the loads unrolled (all in flight), two partial sums.
#[cube]
fn key_dot<F: Float, N: Size>(k: &Tensor<Vector<F, N>>, row: usize, qs: &Shared<[f32]>, #[comptime] head_dim: usize) -> f32 {
    let vs = k.vector_size().comptime();
    let nvec = comptime!(head_dim / vs);
    let mut d0 = 0.0f32;
    let mut d1 = 0.0f32;
    #[unroll]
    for e in 0..nvec {
        let a = k[row + e];
        #[unroll]
        for x in 0..vs {
            if e % 2 == 0 {
                d0 += qs[e * vs + x] * f32::cast_from(a.extract(x));
            } else {
                d1 += qs[e * vs + x] * f32::cast_from(a.extract(x));
            }
        }
    }
    d0 + d1
}
