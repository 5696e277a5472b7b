use cubecl::prelude::*;

use crate::reduce::round;
use crate::reduce::block_sum;

/// GEMV-shaped (few rows) matrix products against PyTorch-layout weights `[out, hidden]`, with
/// an optional RMSNorm prologue and a SwiGLU epilogue. Serves:
/// - `rms_norm_qkv`: `normalize`, three weights, outputs concatenated (q | k | v);
/// - `linear`: one weight (`w1`, `w2` empty);
/// - `gate_up_silu`: `silu`, `w0` = gate, `w1` = up: `out[r, f] = silu(x.g_f) * (x.u_f)`.
///
/// Grid: x over blocks of `features` (a runtime value) output features, y over blocks of `rows_per_cube` rows.
/// Each cube stages its rows in shared memory (f32; normalised when asked), then each weight
/// vector (`N` elements, 16 bytes) is loaded once and used for all the rows, accumulating in
/// f32. `use_plane`: one plane per output feature (coalesced weight-row reads, plane sums);
/// otherwise one unit per feature.
///
/// Rounding (`f32_internal = false`, PyTorch's points): the normalised value to F, its product
/// with the norm weight to F; each projection's output to F; SiLU's output to F; the product to
/// F. `true`: f32 throughout, one rounding at the output.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemv_kernel<F: Float, N: Size>(
    x: &Tensor<F>,             // [rows, hidden]
    residual: &Tensor<F>,      // [rows, hidden] (read when `add_residual`)
    sum_out: &mut Tensor<F>,   // [rows, hidden] (written by the first column of cubes when `add_residual`)
    gamma: &Tensor<F>,         // [hidden] (read when `normalize`)
    w0: &Tensor<Vector<F, N>>, // [n0, hidden / N]
    w1: &Tensor<Vector<F, N>>, // [n1, hidden / N]
    w2: &Tensor<Vector<F, N>>, // [n2, hidden / N]
    out: &mut Tensor<F>,       // [rows, n0 + n1 + n2] or, with `silu`, [rows, n0]
    eps: f32,
    features: u32,
    #[comptime] f32_internal: bool,
    #[comptime] normalize: bool,
    #[comptime] add_residual: bool,
    #[comptime] add_norm_semantics: bool,
    #[comptime] silu: bool,
    #[comptime] rows_per_cube: usize,
    #[comptime] hidden: usize,
    #[comptime] block: usize,
    #[comptime] use_plane: bool,
    #[comptime] plane_min: usize,
    #[comptime] prefetch: bool,
    #[define(F)] _dtype: ElemType,
) {
    let rows = x.shape(0);
    let n0 = w0.shape(0);
    let n1 = w1.shape(0);
    let total = out.shape(1);
    let unit = UNIT_POS_X as usize;
    let row0 = CUBE_POS_Y as usize * rows_per_cube;
    let features = features as usize;
    let f0 = CUBE_POS_X as usize * features;

    // Staged rows, element `k * vs + e` of row r at `staged_at(r, e, k, ..)`: lanes reading
    // consecutive weight vectors then read consecutive shared words (no bank conflicts).
    let vs = w0.vector_size();
    let mut staged = Shared::<[f32]>::new_slice(comptime!(staged_len(rows_per_cube, hidden, vs)));
    let nvec = hidden / vs;

    // Plane path: each lane's weight vectors of its plane's first feature are loaded into
    // registers before the staging below, so the weight reads (from HBM) and the staging's
    // chain (input loads, norm reduction, barriers) overlap instead of adding up; all of a
    // lane's vectors are in flight at once (`loads` per weight: 4 at hidden 1,024 in bf16,
    // 12 at 3,072). `plane_min`: the device's smallest plane, so `loads` covers any plane.
    // (`prefetch = false`: the plane path reads four vectors ahead inside the dots instead.)
    let regs = use_plane && prefetch;
    let loads = comptime!(if regs { (hidden / vs).div_ceil(plane_min) } else { 1usize });
    // (Plane builtins only where planes are used: devices without plane operations refuse them.)
    let mut lane = 0usize;
    let mut pf = f0;
    let mut wa = Array::<Vector<F, N>>::new(loads);
    let mut wb = Array::<Vector<F, N>>::new(if silu { loads } else { 1usize });
    if use_plane {
        lane = UNIT_POS_PLANE as usize;
        pf = f0 + unit / PLANE_DIM as usize;
        if regs && pf < f0 + features && pf < total {
            load_feature::<F, N>(w0, w1, w2, pf, n0, n1, &mut wa, &mut wb, lane, nvec, silu, loads);
        }
    }

    // 1. Stage (and normalise) this cube's rows in shared memory (the first column of cubes
    // writes the residual sum).
    let first_column = CUBE_POS_X == 0;
    stage_rows::<F>(
        x, residual, sum_out, gamma, &mut staged, eps, row0, rows, first_column, vs, f32_internal, normalize, add_residual,
        add_norm_semantics, rows_per_cube, hidden, block, block,
    );
    sync_cube();

    // 2. Dot products: one plane per feature (lanes over the row, from the registers loaded
    // above; the next feature's loads follow each dot), or one unit per feature.
    // (first vector, step between vectors, first feature, step between features) per unit.
    let mut first = 0usize;
    let mut step = 1usize;
    let mut stride = features;
    let mut f = f0 + unit;
    if use_plane {
        first = lane;
        step = PLANE_DIM as usize;
        stride = block / PLANE_DIM as usize;
        f = pf;
    }
    while f < f0 + features && f < total {
        let mut a = Array::<f32>::new(rows_per_cube);
        let mut b = Array::<f32>::new(rows_per_cube);
        #[unroll]
        for r in 0..rows_per_cube {
            a[r] = 0.0f32;
            b[r] = 0.0f32;
        }
        if regs {
            dot_regs::<F, N>(&wa, &staged, &mut a, lane, nvec, rows_per_cube, loads, vs);
            if silu {
                dot_regs::<F, N>(&wb, &staged, &mut b, lane, nvec, rows_per_cube, loads, vs);
            }
            pf = f + stride;
            if pf < f0 + features && pf < total {
                load_feature::<F, N>(w0, w1, w2, pf, n0, n1, &mut wa, &mut wb, lane, nvec, silu, loads);
            }
        } else if silu {
            dot_rows::<F, N>(w0, f, &staged, &mut a, first, step, hidden, rows_per_cube);
            dot_rows::<F, N>(w1, f, &staged, &mut b, first, step, hidden, rows_per_cube);
        } else if f < n0 {
            dot_rows::<F, N>(w0, f, &staged, &mut a, first, step, hidden, rows_per_cube);
        } else if f < n0 + n1 {
            dot_rows::<F, N>(w1, f - n0, &staged, &mut a, first, step, hidden, rows_per_cube);
        } else {
            dot_rows::<F, N>(w2, f - n0 - n1, &staged, &mut a, first, step, hidden, rows_per_cube);
        }
        #[unroll]
        for r in 0..rows_per_cube {
            let g = if use_plane { plane_sum(a[r]) } else { a[r] };
            let mut u = 0.0f32;
            if silu {
                u = if use_plane { plane_sum(b[r]) } else { b[r] };
            }
            let row = row0 + r;
            if first == 0 && row < rows {
                let value = if silu {
                    if f32_internal {
                        g / (1.0f32 + (-g).exp()) * u
                    } else {
                        let gr = round::<F>(g);
                        round::<F>(gr / (1.0f32 + (-gr).exp())) * round::<F>(u)
                    }
                } else {
                    g
                };
                out[row * total + f] = F::cast_from(value);
            }
        }
        f += stride;
    }
}

/// Step 1 of [`gemv_kernel`]: stages (and normalises) rows `row0..row0 + rows_per_cube` of the
/// input in `staged` (f32; element `k * vs + e` of row r at [`staged_at`]`(r, e, k)`, so lanes
/// reading consecutive weight vectors read consecutive shared words). With `add_residual`, the
/// input is `residual + x`, written rounded to `sum_out` (the residual stream) where
/// `write_sum`, and normalised from the rounded sum (`rms_norm_qkv` after a residual add) or,
/// with `add_norm_semantics` in f32 mode, from the f32 sum with the normalised value rounded (as
/// `add_rms_norm` feeds the next op).
///
/// Units `0..block` each hold elements `unit + i * block` of the row in registers (the loads
/// unrolled, all in flight at once; the normalising pass reuses them); units past `block` (a
/// larger cube of `cube` units, a power of two) add zeros to the reduction's tree, which leaves
/// the sum of squares bit for bit that of a `block`-unit cube. Ends before the
/// barrier that publishes `staged`.
#[cube]
#[allow(clippy::too_many_arguments)]
pub(crate) fn stage_rows<F: Float>(
    x: &Tensor<F>,
    residual: &Tensor<F>,
    sum_out: &mut Tensor<F>,
    gamma: &Tensor<F>,
    staged: &mut Shared<[f32]>,
    eps: f32,
    row0: usize,
    rows: usize,
    write_sum: bool,
    #[comptime] vs: usize,
    #[comptime] f32_internal: bool,
    #[comptime] normalize: bool,
    #[comptime] add_residual: bool,
    #[comptime] add_norm_semantics: bool,
    #[comptime] rows_per_cube: usize,
    #[comptime] hidden: usize,
    #[comptime] block: usize,
    #[comptime] cube: usize,
) {
    let unit = UNIT_POS_X as usize;
    let stager = unit < block;
    let per = comptime!(hidden.div_ceil(block));
    let keep_f32 = comptime!(add_norm_semantics && f32_internal);
    for r in 0..rows_per_cube {
        let row = row0 + r;
        let valid = row < rows && stager;
        let mut vals = Array::<f32>::new(per);
        #[unroll]
        for i in 0..per {
            let k = unit + i * block;
            vals[i] = 0.0f32;
            if valid && k < hidden {
                vals[i] = input::<F>(x, residual, row * hidden + k, add_residual, keep_f32);
            }
        }
        stage_vals::<F>(&vals, r, row, valid, sum_out, gamma, staged, eps, write_sum, vs, f32_internal, normalize, add_residual, add_norm_semantics, hidden, block, cube);
    }
}

/// [`stage_rows`]' second half for one row (`r` of the cube's, `row` of the input): the sum of
/// squares of this unit's elements `vals[i]` (element `unit + i * block`, zeros where
/// `!valid` or past the row), the norm, and the staging (with `sum_out` where `write_sum`).
/// Where the values come from is the caller's: the input rows, or words other cubes publish
/// (`decode_mlp`'s tagged phases). The norm weight's loads are issued first, so that they
/// arrive during the reduction's tree instead of after it ([`stage_vals_with`]).
#[cube]
#[allow(clippy::too_many_arguments)]
pub(crate) fn stage_vals<F: Float>(
    vals: &Array<f32>,
    r: usize,
    row: usize,
    valid: bool,
    sum_out: &mut Tensor<F>,
    gamma: &Tensor<F>,
    staged: &mut Shared<[f32]>,
    eps: f32,
    write_sum: bool,
    #[comptime] vs: usize,
    #[comptime] f32_internal: bool,
    #[comptime] normalize: bool,
    #[comptime] add_residual: bool,
    #[comptime] add_norm_semantics: bool,
    #[comptime] hidden: usize,
    #[comptime] block: usize,
    #[comptime] cube: usize,
) {
    let per = comptime!(hidden.div_ceil(block));
    let mut gam = Array::<f32>::new(per);
    if normalize {
        hold_row::<F>(gamma, &mut gam, valid, hidden, block);
    }
    stage_vals_with::<F>(vals, &gam, r, row, valid, sum_out, staged, eps, write_sum, vs, f32_internal, normalize, add_residual, add_norm_semantics, hidden, block, cube);
}

/// This unit's elements `unit + i * block` of `row` (the first `hidden` elements of a tensor:
/// a norm weight, a 1-row input) into `held[i]` as f32 (zeros where `!valid`, past the row or
/// on units past `block`); for [`stage_vals_with`], or to have them before a wait.
#[cube]
pub(crate) fn hold_row<F: Float>(row: &Tensor<F>, held: &mut Array<f32>, valid: bool, #[comptime] hidden: usize, #[comptime] block: usize) {
    let unit = UNIT_POS_X as usize;
    let per = comptime!(hidden.div_ceil(block));
    #[unroll]
    for i in 0..per {
        let k = unit + i * block;
        held[i] = 0.0f32;
        if valid && unit < block && k < hidden {
            held[i] = f32::cast_from(row[k]);
        }
    }
}

/// [`stage_vals`] with the norm weight already in registers: `gam[i]` is element
/// `unit + i * block` of it ([`hold_row`]; unread without `normalize`).
#[cube]
#[allow(clippy::too_many_arguments)]
pub(crate) fn stage_vals_with<F: Float>(
    vals: &Array<f32>,
    gam: &Array<f32>,
    r: usize,
    row: usize,
    valid: bool,
    sum_out: &mut Tensor<F>,
    staged: &mut Shared<[f32]>,
    eps: f32,
    write_sum: bool,
    #[comptime] vs: usize,
    #[comptime] f32_internal: bool,
    #[comptime] normalize: bool,
    #[comptime] add_residual: bool,
    #[comptime] add_norm_semantics: bool,
    #[comptime] hidden: usize,
    #[comptime] block: usize,
    #[comptime] cube: usize,
) {
    let unit = UNIT_POS_X as usize;
    let nvec = hidden / vs;
    let stager = unit < block;
    let per = comptime!(hidden.div_ceil(block));
    let mut inv = 1.0f32;
    if normalize {
        // The same order as a strided loop (`add_rms_norm`'s): bit-identical sums.
        let mut sq = 0.0f32;
        #[unroll]
        for i in 0..per {
            sq += vals[i] * vals[i];
        }
        let total_sq = block_sum(sq, cube);
        inv = 1.0f32 / (total_sq / f32::cast_from(hidden as u32) + eps).sqrt();
    }
    #[unroll]
    for i in 0..per {
        let k = unit + i * block;
        if stager && k < hidden {
            let v = vals[i];
            let mut n = 0.0f32;
            if valid {
                if add_residual && write_sum {
                    sum_out[row * hidden + k] = F::cast_from(v);
                }
                if normalize {
                    let g = gam[i];
                    if f32_internal {
                        n = v * inv * g;
                        if add_norm_semantics {
                            n = round::<F>(n);
                        }
                    } else {
                        n = round::<F>(round::<F>(v * inv) * g);
                    }
                } else {
                    n = v;
                }
            }
            staged[staged_at(r, k % vs, k / vs, nvec, vs)] = n;
        }
    }
}

/// Words of padding after each element plane of a staged row (`32 / vs`; none at `vs = 1`).
/// Units stage consecutive elements `k`, i.e. element `k % vs` of vector `k / vs`: without the
/// padding the `vs` elements of a vector sit `nvec` words apart, the same bank when `nvec` is a
/// multiple of 32, and a plane's 32 stores took `vs` shared-memory wavefronts each (ncu, the
/// decode layer launch: 37% of its shared wavefronts excessive, 2026-11-27). With it the 32
/// elements a plane stages fall in 32 banks; reads (consecutive `k` a plane) stay conflict-free.
/// Measured on the H100 (2026-11-27 13:13): batch-1 decode 1,307.9 / 1,305.3 tok/s against
/// 1,275.0 / 1,275.1 without it, same call.
pub(crate) const fn stage_pad(vs: usize) -> usize {
    if vs > 1 { 32 / vs } else { 0 }
}

/// Shared words for `rows` staged rows of `hidden` elements in vectors of `vs` ([`staged_at`]).
pub(crate) const fn staged_len(rows: usize, hidden: usize, vs: usize) -> usize {
    rows * (hidden + vs * stage_pad(vs))
}

/// Where element `e` of vector `k` of staged row `r` lives (`nvec = hidden / vs` vectors a row):
/// element planes of `nvec + stage_pad(vs)` words, `vs` of them a row.
#[cube]
pub(crate) fn staged_at(r: usize, e: usize, k: usize, nvec: usize, #[comptime] vs: usize) -> usize {
    let plane = nvec + comptime!(stage_pad(vs));
    (r * vs + e) * plane + k
}

/// Element `i` of the staged input: `x[i]`, or with `add` the sum `residual[i] + x[i]`, rounded
/// to `F` unless `keep_f32`.
#[cube]
fn input<F: Float>(x: &Tensor<F>, residual: &Tensor<F>, i: usize, #[comptime] add: bool, #[comptime] keep_f32: bool) -> f32 {
    let a = f32::cast_from(x[i]);
    if add {
        let h = f32::cast_from(residual[i]) + a;
        if keep_f32 { h } else { f32::cast_from(F::cast_from(h)) }
    } else {
        a
    }
}

/// `acc[r] += w[row, k] * staged[r, k]` for the vectors `k = first, first + step, ...` of the
/// weight row (`N` elements each).
#[cube]
#[allow(clippy::too_many_arguments)]
pub(crate) fn dot_rows<F: Float, N: Size>(
    w: &Tensor<Vector<F, N>>,
    row: usize,
    staged: &Shared<[f32]>,
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
    // Four weight vectors loaded before they are used: 64 bytes in flight per unit (one
    // vector at a time left the unit waiting a memory round trip per 16 bytes).
    while k + 3 * step < nvec {
        let w0 = w[base + k];
        let w1 = w[base + k + step];
        let w2 = w[base + k + 2 * step];
        let w3 = w[base + k + 3 * step];
        #[unroll]
        for e in 0..vs {
            let e0 = f32::cast_from(w0.extract(e));
            let e1 = f32::cast_from(w1.extract(e));
            let e2 = f32::cast_from(w2.extract(e));
            let e3 = f32::cast_from(w3.extract(e));
            #[unroll]
            for r in 0..rows_per_cube {
                let s = staged_at(r, e, k, nvec, vs);
                acc[r] += e0 * staged[s] + e1 * staged[s + step] + e2 * staged[s + 2 * step] + e3 * staged[s + 3 * step];
            }
        }
        k += 4 * step;
    }
    while k < nvec {
        let wv = w[base + k];
        #[unroll]
        for e in 0..vs {
            let we = f32::cast_from(wv.extract(e));
            #[unroll]
            for r in 0..rows_per_cube {
                acc[r] += we * staged[staged_at(r, e, k, nvec, vs)];
            }
        }
        k += step;
    }
}

/// Loads lane `lane`'s vectors `lane, lane + PLANE_DIM, ...` of feature `f`'s weight row into
/// `wa` (the gate's row into `wa` and the up's into `wb` with `silu`; else the row of whichever
/// of `w0 | w1 | w2` holds feature `f`). Vectors past the row are zeros.
#[cube]
#[allow(clippy::too_many_arguments)]
fn load_feature<F: Float, N: Size>(
    w0: &Tensor<Vector<F, N>>,
    w1: &Tensor<Vector<F, N>>,
    w2: &Tensor<Vector<F, N>>,
    f: usize,
    n0: usize,
    n1: usize,
    wa: &mut Array<Vector<F, N>>,
    wb: &mut Array<Vector<F, N>>,
    lane: usize,
    nvec: usize,
    #[comptime] silu: bool,
    #[comptime] loads: usize,
) {
    let step = PLANE_DIM as usize;
    if silu {
        load_row::<F, N>(w0, f * nvec, wa, lane, step, nvec, loads);
        load_row::<F, N>(w1, f * nvec, wb, lane, step, nvec, loads);
    } else if f < n0 {
        load_row::<F, N>(w0, f * nvec, wa, lane, step, nvec, loads);
    } else if f < n0 + n1 {
        load_row::<F, N>(w1, (f - n0) * nvec, wa, lane, step, nvec, loads);
    } else {
        load_row::<F, N>(w2, (f - n0 - n1) * nvec, wa, lane, step, nvec, loads);
    }
}

/// Lane `lane`'s vectors `lane, lane + step, ...` of the weight row at `base` into `regs`
/// ([`load_at`] at 0).
#[cube]
pub(crate) fn load_row<F: Float, N: Size>(
    w: &Tensor<Vector<F, N>>,
    base: usize,
    regs: &mut Array<Vector<F, N>>,
    lane: usize,
    step: usize,
    nvec: usize,
    #[comptime] loads: usize,
) {
    load_at::<F, N>(w, base, regs, 0usize, lane, step, nvec, loads);
}

/// Lane `lane`'s vectors `lane, lane + step, ...` of the weight row at `base` into
/// `regs[at..at + loads]` (zeros past `nvec`): several rows' vectors can share one register
/// array (`decode_mlp` holds a plane's gate/up features side by side).
#[cube]
#[allow(clippy::too_many_arguments)]
pub(crate) fn load_at<F: Float, N: Size>(
    w: &Tensor<Vector<F, N>>,
    base: usize,
    regs: &mut Array<Vector<F, N>>,
    at: usize,
    lane: usize,
    step: usize,
    nvec: usize,
    #[comptime] loads: usize,
) {
    #[unroll]
    for j in 0..loads {
        let k = lane + j * step;
        let mut v = Vector::<F, N>::new(F::new(0.0));
        if k < nvec {
            v = w[base + k];
        }
        regs[at + j] = v;
    }
}

/// `acc[r] += regs . staged[r]` over lane `lane`'s vectors (as loaded by [`load_row`]).
#[cube]
#[allow(clippy::too_many_arguments)]
pub(crate) fn dot_regs<F: Float, N: Size>(
    regs: &Array<Vector<F, N>>,
    staged: &Shared<[f32]>,
    acc: &mut Array<f32>,
    lane: usize,
    nvec: usize,
    #[comptime] rows_per_cube: usize,
    #[comptime] loads: usize,
    #[comptime] vs: usize,
) {
    let step = PLANE_DIM as usize;
    #[unroll]
    for j in 0..loads {
        let k = lane + j * step;
        if k < nvec {
            let v = regs[j];
            #[unroll]
            for e in 0..vs {
                let we = f32::cast_from(v.extract(e));
                #[unroll]
                for r in 0..rows_per_cube {
                    acc[r] += we * staged[staged_at(r, e, k, nvec, vs)];
                }
            }
        }
    }
}
