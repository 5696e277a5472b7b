use cubecl::prelude::*;

use crate::reduce::block_sum;

/// Fused RMSNorm + q/k/v projection.
///
/// Grid: x over blocks of `features` output features (q, then k, then v), y over blocks of
/// `rows_per_cube` rows. Each cube normalises its rows into shared memory (f32), then computes
/// `out[r, f] = sum_k n[r, k] * w_f[k]` with f32 accumulation.
///
/// `f32_internal = false`: the normalised value is rounded to F, multiplied by the norm weight
/// in F (rounded again): exactly what PyTorch feeds its matmul. `true`: `x * inv_rms * gamma`
/// stays in f32. The output is rounded to F once.
///
/// `use_plane`: one plane per output feature, lanes stride over `hidden` (coalesced reads of the
/// weight row) and a plane sum; otherwise one unit per output feature.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
pub(super) fn rms_norm_qkv_kernel<F: Float>(
    x: &Tensor<F>,       // [rows, hidden]
    gamma: &Tensor<F>,   // [hidden]
    wq: &Tensor<F>,      // [nq, hidden]
    wk: &Tensor<F>,      // [nk, hidden]
    wv: &Tensor<F>,      // [nv, hidden]
    out: &mut Tensor<F>, // [rows, nq + nk + nv]
    eps: f32,
    #[comptime] f32_internal: bool,
    #[comptime] rows_per_cube: usize,
    #[comptime] hidden: usize,
    #[comptime] block: usize,
    #[comptime] features: usize,
    #[comptime] use_plane: bool,
    #[define(F)] _dtype: ElemType,
) {
    let rows = x.shape(0);
    let nq = wq.shape(0);
    let nk = wk.shape(0);
    let total = out.shape(1);
    let unit = UNIT_POS_X as usize;
    let row0 = CUBE_POS_Y as usize * rows_per_cube;
    let f0 = CUBE_POS_X as usize * features;

    let mut normed = Shared::<[f32]>::new_slice(rows_per_cube * hidden);

    // 1. Normalise this cube's rows into shared memory.
    for r in 0..rows_per_cube {
        let row = row0 + r;
        let valid = row < rows;
        let mut sq = 0.0f32;
        let mut k = unit;
        while k < hidden {
            if valid {
                let v = f32::cast_from(x[row * hidden + k]);
                sq += v * v;
            }
            k += block;
        }
        let total_sq = block_sum(sq, block);
        let inv = 1.0f32 / (total_sq / f32::cast_from(hidden as u32) + eps).sqrt();
        let mut k = unit;
        while k < hidden {
            let mut n = 0.0f32;
            if valid {
                let v = f32::cast_from(x[row * hidden + k]);
                let g = f32::cast_from(gamma[k]);
                if f32_internal {
                    n = v * inv * g;
                } else {
                    let rounded = f32::cast_from(F::cast_from(v * inv));
                    n = f32::cast_from(F::cast_from(rounded * g));
                }
            }
            normed[r * hidden + k] = n;
            k += block;
        }
    }
    sync_cube();

    // 2. Dot products with the weight rows.
    if use_plane {
        let lane = UNIT_POS_PLANE as usize;
        let plane = unit / PLANE_DIM as usize;
        let planes = block / PLANE_DIM as usize;
        let mut f = f0 + plane;
        while f < f0 + features && f < total {
            for r in 0..rows_per_cube {
                let acc = if f < nq {
                    dot_plane::<F>(wq, f, &normed, r * hidden, lane, hidden)
                } else if f < nq + nk {
                    dot_plane::<F>(wk, f - nq, &normed, r * hidden, lane, hidden)
                } else {
                    dot_plane::<F>(wv, f - nq - nk, &normed, r * hidden, lane, hidden)
                };
                let sum = plane_sum(acc);
                let row = row0 + r;
                if lane == 0 && row < rows {
                    out[row * total + f] = F::cast_from(sum);
                }
            }
            f += planes;
        }
    } else {
        let f = f0 + unit;
        if f < total {
            for r in 0..rows_per_cube {
                let acc = if f < nq {
                    dot_unit::<F>(wq, f, &normed, r * hidden, hidden)
                } else if f < nq + nk {
                    dot_unit::<F>(wk, f - nq, &normed, r * hidden, hidden)
                } else {
                    dot_unit::<F>(wv, f - nq - nk, &normed, r * hidden, hidden)
                };
                let row = row0 + r;
                if row < rows {
                    out[row * total + f] = F::cast_from(acc);
                }
            }
        }
    }
}

/// This lane's share of `w[row, :] . normed[offset..offset + hidden]`.
#[cube]
fn dot_plane<F: Float>(
    w: &Tensor<F>,
    row: usize,
    normed: &Shared<[f32]>,
    offset: usize,
    lane: usize,
    #[comptime] hidden: usize,
) -> f32 {
    let mut acc = 0.0f32;
    let base = row * hidden;
    let mut k = lane;
    while k < hidden {
        acc += f32::cast_from(w[base + k]) * normed[offset + k];
        k += PLANE_DIM as usize;
    }
    acc
}

/// `w[row, :] . normed[offset..offset + hidden]` by one unit.
#[cube]
fn dot_unit<F: Float>(
    w: &Tensor<F>,
    row: usize,
    normed: &Shared<[f32]>,
    offset: usize,
    #[comptime] hidden: usize,
) -> f32 {
    let mut acc = 0.0f32;
    let base = row * hidden;
    for k in 0..hidden {
        acc += f32::cast_from(w[base + k]) * normed[offset + k];
    }
    acc
}
