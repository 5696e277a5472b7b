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
    #[comptime] group: usize,
    #[define(F)] _dtype: ElemType,
) {
    let i = CUBE_POS_Y as usize;
    let unit = UNIT_POS_X as usize;
    let heads = q.shape(1);
    let seq = q.shape(2);
    let hd = head_dim;
    let kv_heads = k.shape(1);
    // One cube per (batch, kv head g, query row): the `group` query heads h0.. that share g.
    let b = CUBE_POS_X as usize / kv_heads;
    let g = CUBE_POS_X as usize % kv_heads;
    let h0 = g * (heads / kv_heads) + CUBE_POS_Z as usize * group;
    let past = if past_from_state { state[1] } else { past };
    let n_keys = past as usize + i + 1;
    // K and V rows are read in vectors of `vs` elements (16 bytes where hd allows); strides and
    // row starts are multiples of hd, hence of vs.
    // head_dim is comptime, so the key row's vector loads unroll and issue together.
    let vs = k.vector_size().comptime();
    let nvec = comptime!(head_dim / vs);

    let mut qs = Shared::<[f32]>::new_slice(comptime!(group * head_dim));
    let mut scores = Shared::<[f32]>::new_slice(comptime!(group * max_keys));

    // 1. The query rows, in f32.
    #[unroll]
    for hh in 0..group {
        let q_base = ((b * heads + h0 + hh) * seq + i) * hd;
        let mut d = unit;
        while d < hd {
            qs[hh * hd + d] = f32::cast_from(q[q_base + d]);
            d += block;
        }
    }
    sync_cube();

    // 2. Scores, one key per unit in turn (its row read once for the group's heads), and each
    // unit's maxima.
    let k_base = b * k.stride(0) + g * k.stride(1);
    let mut local_max = Array::<f32>::new(group);
    let mut dots = Array::<f32>::new(group);
    #[unroll]
    for hh in 0..group {
        local_max[hh] = f32::new(f32::MIN);
    }
    let mut j = unit;
    while j < n_keys {
        let row = (k_base + j * k.stride(2)) / vs;
        key_dots::<F, N>(k, row, &qs, &mut dots, head_dim, group);
        #[unroll]
        for hh in 0..group {
            let s = if f32_internal {
                dots[hh] * scale
            } else {
                round::<F>(round::<F>(dots[hh]) * scale)
            };
            scores[hh * max_keys + j] = s;
            local_max[hh] = max(local_max[hh], s);
        }
        j += block;
    }

    // 3. Softmax in f32, head by head.
    #[unroll]
    for hh in 0..group {
        let m = block_max(local_max[hh], block);
        let mut local_sum = 0.0f32;
        let mut j = unit;
        while j < n_keys {
            let p = (scores[hh * max_keys + j] - m).exp();
            scores[hh * max_keys + j] = p;
            local_sum += p;
            j += block;
        }
        let total = block_sum(local_sum, block);
        let inv = 1.0f32 / total;
        let mut j = unit;
        while j < n_keys {
            let p = scores[hh * max_keys + j] * inv;
            scores[hh * max_keys + j] = if f32_internal { p } else { round::<F>(p) };
            j += block;
        }
    }
    sync_cube();

    // 4. Weighted values: `parts` groups of `nvec` units, unit `(part, c)` accumulating the
    // `vs` channels of vector `c` for every head of the group over every `parts`-th key (two
    // keys per step), then the parts are summed through shared memory (`partial_len` f32: what
    // the device's shared memory leaves, which bounds `parts`).
    let v_base = b * v.stride(0) + g * v.stride(1);
    let vrow = v.stride(2) / vs;
    let parts = min(block / nvec, partial_len / (group * hd));
    let part = unit / nvec;
    let c = unit % nvec;
    let mut partial = Shared::<[f32]>::new_slice(partial_len);
    if part < parts {
        let mut a0 = Array::<f32>::new(comptime!(group * vs));
        let mut a1 = Array::<f32>::new(comptime!(group * vs));
        #[unroll]
        for x in 0..comptime!(group * vs) {
            a0[x] = 0.0;
            a1[x] = 0.0;
        }
        let base = v_base / vs + c;
        let mut j = part;
        while j + parts < n_keys {
            let x0 = v[base + j * vrow];
            let x1 = v[base + (j + parts) * vrow];
            #[unroll]
            for hh in 0..group {
                let p0 = scores[hh * max_keys + j];
                let p1 = scores[hh * max_keys + j + parts];
                #[unroll]
                for x in 0..vs {
                    a0[hh * vs + x] += p0 * f32::cast_from(x0.extract(x));
                    a1[hh * vs + x] += p1 * f32::cast_from(x1.extract(x));
                }
            }
            j += 2 * parts;
        }
        if j < n_keys {
            let x0 = v[base + j * vrow];
            #[unroll]
            for hh in 0..group {
                let p0 = scores[hh * max_keys + j];
                #[unroll]
                for x in 0..vs {
                    a0[hh * vs + x] += p0 * f32::cast_from(x0.extract(x));
                }
            }
        }
        #[unroll]
        for hh in 0..group {
            #[unroll]
            for x in 0..vs {
                partial[(hh * parts + part) * hd + c * vs + x] = a0[hh * vs + x] + a1[hh * vs + x];
            }
        }
    }
    sync_cube();
    #[unroll]
    for hh in 0..group {
        let out_base = (b * seq + i) * heads * hd + (h0 + hh) * hd;
        let mut d = unit;
        while d < hd {
            let mut acc = 0.0f32;
            for p in 0..parts {
                acc += partial[(hh * parts + p) * hd + d];
            }
            out[out_base + d] = F::cast_from(acc);
            d += block;
        }
    }
}

/// `q . k_row` in f32 over one key row of `head_dim / vs` vectors starting at vector index
/// `row`, the loads unrolled (all in flight), two partial sums.
#[cube]
pub(super) fn key_dot<F: Float, N: Size>(k: &Tensor<Vector<F, N>>, row: usize, qs: &Shared<[f32]>, #[comptime] head_dim: usize) -> f32 {
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

/// `dots[h] += q_h . k[row..]` for the group's heads (`qs: [group * head_dim]`), the key row's
/// vectors loaded once; the same two-accumulator order per head as [`key_dot`].
#[cube]
pub(super) fn key_dots<F: Float, N: Size>(k: &Tensor<Vector<F, N>>, row: usize, qs: &Shared<[f32]>, dots: &mut Array<f32>, #[comptime] head_dim: usize, #[comptime] group: usize) {
    if comptime!(group == 1) {
        dots[0] = key_dot::<F, N>(k, row, qs, head_dim);
    } else {
        let vs = k.vector_size().comptime();
        let nvec = comptime!(head_dim / vs);
        let mut d = Array::<f32>::new(comptime!(2 * group));
        #[unroll]
        for i in 0..comptime!(2 * group) {
            d[i] = 0.0;
        }
        #[unroll]
        for e in 0..nvec {
            let a = k[row + e];
            #[unroll]
            for x in 0..vs {
                let kx = f32::cast_from(a.extract(x));
                #[unroll]
                for hh in 0..group {
                    d[2 * hh + e % 2] += qs[hh * head_dim + e * vs + x] * kx;
                }
            }
        }
        #[unroll]
        for hh in 0..group {
            dots[hh] = d[2 * hh] + d[2 * hh + 1];
        }
    }
}
