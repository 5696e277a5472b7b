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
pub(super) fn rms_norm_qkv_kernel<F: Float, N: Size>(
    x: &Tensor<F>,                 // [rows, hidden]
    gamma: &Tensor<F>,             // [hidden]
    wq: &Tensor<Vector<F, N>>,     // [nq, hidden / N]
    wk: &Tensor<Vector<F, N>>,     // [nk, hidden / N]
    wv: &Tensor<Vector<F, N>>,     // [nv, hidden / N]
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
    // (weights are read as vectors of N elements; hidden % N == 0)
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

    // 2. Dot products with the weight rows, each weight vector loaded once for all the rows.
    if use_plane {
        let lane = UNIT_POS_PLANE as usize;
        let plane = unit / PLANE_DIM as usize;
        let planes = block / PLANE_DIM as usize;
        let mut f = f0 + plane;
        while f < f0 + features && f < total {
            let mut acc = Array::<f32>::new(rows_per_cube);
            #[unroll]
            for r in 0..rows_per_cube {
                acc[r] = 0.0f32;
            }
            if f < nq {
                dot_rows::<F, N>(wq, f, &normed, &mut acc, lane, PLANE_DIM as usize, hidden, rows_per_cube);
            } else if f < nq + nk {
                dot_rows::<F, N>(wk, f - nq, &normed, &mut acc, lane, PLANE_DIM as usize, hidden, rows_per_cube);
            } else {
                dot_rows::<F, N>(wv, f - nq - nk, &normed, &mut acc, lane, PLANE_DIM as usize, hidden, rows_per_cube);
            }
            #[unroll]
            for r in 0..rows_per_cube {
                let sum = plane_sum(acc[r]);
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
            let mut acc = Array::<f32>::new(rows_per_cube);
            #[unroll]
            for r in 0..rows_per_cube {
                acc[r] = 0.0f32;
            }
            if f < nq {
                dot_rows::<F, N>(wq, f, &normed, &mut acc, 0, 1, hidden, rows_per_cube);
            } else if f < nq + nk {
                dot_rows::<F, N>(wk, f - nq, &normed, &mut acc, 0, 1, hidden, rows_per_cube);
            } else {
                dot_rows::<F, N>(wv, f - nq - nk, &normed, &mut acc, 0, 1, hidden, rows_per_cube);
            }
            #[unroll]
            for r in 0..rows_per_cube {
                let row = row0 + r;
                if row < rows {
                    out[row * total + f] = F::cast_from(acc[r]);
                }
            }
        }
    }
}

/// `acc[r] += w[row, k] * normed[r, k]` for the vectors `k = first, first + step, ...` of the
/// weight row (`N` elements each): one plane's lanes (`step = PLANE_DIM`) or one unit
/// (`step = 1`).
#[cube]
#[allow(clippy::too_many_arguments)]
fn dot_rows<F: Float, N: Size>(
    w: &Tensor<Vector<F, N>>,
    row: usize,
    normed: &Shared<[f32]>,
    acc: &mut Array<f32>,
    first: usize,
    step: usize,
    #[comptime] hidden: usize,
    #[comptime] rows_per_cube: usize,
) {
    let vs = w.vector_size();
    let nvec = hidden / vs;
    let base = row * nvec;
    let mut k = first;
    while k < nvec {
        let wv = w[base + k];
        #[unroll]
        for e in 0..vs {
            let we = f32::cast_from(wv.extract(e));
            #[unroll]
            for r in 0..rows_per_cube {
                acc[r] += we * normed[r * hidden + k * vs + e];
            }
        }
        k += step;
    }
}
