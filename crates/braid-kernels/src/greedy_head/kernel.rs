use cubecl::prelude::*;

use crate::argmax::cube_best;
use crate::gemv::kernel::{dot_regs, dot_rows, load_row, stage_rows, staged_len};

/// The batch-1 decode step's head with its argmax: with `normalize`, `h = residual + x` and its
/// RMSNorm with `gamma` (staged in shared memory as `gemv_kernel` stages it with a residual add
/// and a norm, so the normalised row has `add_rms_norm`'s bits; every cube redoes it), else `x`
/// as it is (already normalised; `residual` and `gamma` unread), then the logits of this cube's `features`
/// vocabulary rows, each rounded to F as a stored logit would be, reduced to the cube's best
/// (the larger value, then the smaller index; NaN and -inf never win) into `vals` / `idxs` at
/// `CUBE_POS_X`. No logit is written. `use_plane`: one plane per feature with the lane's weight
/// vectors loaded into registers before the staging (the plane path of `gemv_kernel`); else one
/// unit per feature.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
pub(super) fn head_argmax_kernel<F: Float, N: Size>(
    x: &Tensor<F>,            // [1, hidden]
    residual: &Tensor<F>,     // [1, hidden]
    sum: &mut Tensor<F>,      // [1] (never written: `stage_rows` asks for a sum buffer)
    gamma: &Tensor<F>,        // [hidden]
    w: &Tensor<Vector<F, N>>, // [vocab, hidden / N]
    vals: &mut Tensor<f32>,   // [parts]
    idxs: &mut Tensor<u32>,   // [parts]
    eps: f32,
    features: u32,
    #[comptime] f32_internal: bool,
    #[comptime] normalize: bool,
    #[comptime] hidden: usize,
    #[comptime] block: usize,
    #[comptime] use_plane: bool,
    #[comptime] plane_min: usize,
    #[define(F)] _dtype: ElemType,
) {
    let vocab = w.shape(0);
    let unit = UNIT_POS_X as usize;
    let features = features as usize;
    let f0 = CUBE_POS_X as usize * features;
    let vs = w.vector_size();
    let nvec = hidden / vs;
    let mut staged = Shared::<[f32]>::new_slice(comptime!(staged_len(1usize, hidden, vs)));
    let loads = comptime!(if use_plane { (hidden / vs).div_ceil(plane_min) } else { 1usize });

    // The plane path's first weight row in flight before the staging (as `gemv_kernel`).
    let mut lane = 0usize;
    let mut f = f0 + unit;
    let mut stride = features;
    let mut wa = Array::<Vector<F, N>>::new(loads);
    if use_plane {
        lane = UNIT_POS_PLANE as usize;
        f = f0 + unit / PLANE_DIM as usize;
        stride = block / PLANE_DIM as usize;
        if f < f0 + features && f < vocab {
            load_row::<F, N>(w, f * nvec, &mut wa, lane, PLANE_DIM as usize, nvec, loads);
        }
    }

    stage_rows::<F>(
        x, residual, sum, gamma, &mut staged, eps, 0usize, 1usize, false, vs, f32_internal, normalize, normalize, true, 1usize, hidden, block, block,
    );
    sync_cube();

    // This unit's best logit (lane 0 of each plane on the plane path).
    let none = vocab as u32;
    let mut best_v = f32::new(f32::MIN);
    let mut best_i = none;
    while f < f0 + features && f < vocab {
        let mut acc = Array::<f32>::new(1usize);
        acc[0] = 0.0f32;
        if use_plane {
            dot_regs::<F, N>(&wa, &staged, &mut acc, lane, nvec, 1usize, loads, vs);
            let next = f + stride;
            if next < f0 + features && next < vocab {
                load_row::<F, N>(w, next * nvec, &mut wa, lane, PLANE_DIM as usize, nvec, loads);
            }
        } else {
            dot_rows::<F, N>(w, f, &staged, &mut acc, 0usize, 1usize, hidden, 1usize);
        }
        let g = if use_plane { plane_sum(acc[0]) } else { acc[0] };
        // The logit as stored (rounded to F), compared as `argmax` compares it.
        let v = f32::cast_from(F::cast_from(g));
        if lane == 0 && (v > best_v || (best_i == none && v == best_v)) {
            best_v = v;
            best_i = f as u32;
        }
        f += stride;
    }

    let mut sv = Shared::<[f32]>::new_slice(block);
    let mut si = Shared::<[u32]>::new_slice(block);
    if use_plane {
        // Lane 0 of each plane holds its plane's best: one barrier, then unit 0 scans the
        // planes (a tree over every unit cost each of the ~19k cubes eight barriers).
        let planes = block / PLANE_DIM as usize;
        if lane == 0 {
            sv[unit / PLANE_DIM as usize] = best_v;
            si[unit / PLANE_DIM as usize] = best_i;
        }
        sync_cube();
        if unit == 0 {
            let mut bv = sv[0];
            let mut bi = si[0];
            for p in 1..planes {
                let v = sv[p];
                let i = si[p];
                if v > bv || (v == bv && i < bi) {
                    bv = v;
                    bi = i;
                }
            }
            vals[CUBE_POS_X as usize] = bv;
            idxs[CUBE_POS_X as usize] = bi;
        }
    } else {
        sv[unit] = best_v;
        si[unit] = best_i;
        cube_best(&mut sv, &mut si);
        if unit == 0 {
            vals[CUBE_POS_X as usize] = sv[0];
            idxs[CUBE_POS_X as usize] = si[0];
        }
    }
}

/// One cube: the best of the `parts` partial results of [`head_argmax_kernel`] (the larger
/// value, then the smaller index: the row's argmax, `vocab` where no logit was finite), then the
/// decode state moved on by it as `decode::advance` moves it: `state = [id, state[1] + 1]`,
/// `history[state[1] + 1] = id` (skipped past the end of `history`).
#[cube(launch)]
pub(super) fn argmax_advance_kernel(
    vals: &Tensor<f32>,        // [parts]
    idxs: &Tensor<u32>,        // [parts]
    state: &mut Tensor<u32>,   // [2]: token, position
    history: &mut Tensor<u32>, // [capacity]
    parts: u32,
    vocab: u32,
    #[comptime] block: usize,
    #[comptime] batch: usize,
    #[comptime] use_plane: bool,
) {
    let pos = state[1] + 1;
    let next = pick(vals, idxs, parts, vocab, block, batch, use_plane);
    if UNIT_POS_X == 0 {
        advance(state, history, next, pos);
    }
}

/// [`argmax_advance_kernel`], then the next step's inputs as `decode::inputs` gathers them from
/// the new state, into `x`, `cos`, `sin` in place: the embedding row of the picked token (zeros
/// where none was finite) and the RoPE rows of the next position (zeros past the tables).
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
pub(super) fn argmax_advance_inputs_kernel<F: Float>(
    vals: &Tensor<f32>,        // [parts]
    idxs: &Tensor<u32>,        // [parts]
    state: &mut Tensor<u32>,   // [2]: token, position
    history: &mut Tensor<u32>, // [capacity]
    embed: &Tensor<F>,         // [vocab, hidden]
    cos_table: &Tensor<f32>,   // [rope capacity, hd]
    sin_table: &Tensor<f32>,   // [rope capacity, hd]
    x: &mut Tensor<F>,         // [1, hidden]
    cos: &mut Tensor<f32>,     // [1, hd]
    sin: &mut Tensor<f32>,     // [1, hd]
    parts: u32,
    vocab: u32,
    #[comptime] block: usize,
    #[comptime] batch: usize,
    #[comptime] use_plane: bool,
    #[define(F)] _dtype: ElemType,
) {
    let pos = state[1] + 1;
    let next = pick(vals, idxs, parts, vocab, block, batch, use_plane);
    if UNIT_POS_X == 0 {
        advance(state, history, next, pos);
    }
    let hidden = embed.shape(1);
    let hd = cos_table.shape(1);
    let unit = UNIT_POS_X as usize;
    let token = next as usize;
    let at = pos as usize;
    let mut k = unit;
    while k < hidden {
        let mut v = F::new(0.0);
        if next < vocab {
            v = embed[token * hidden + k];
        }
        x[k] = v;
        k += block;
    }
    let mut d = unit;
    while d < hd {
        let mut c = 0.0f32;
        let mut s = 0.0f32;
        if at < cos_table.shape(0) {
            c = cos_table[at * hd + d];
            s = sin_table[at * hd + d];
        }
        cos[d] = c;
        sin[d] = s;
        d += block;
    }
}

/// The best of the `parts` partials (larger value, then smaller index), the same in every unit
/// of the cube (`block` units, a power of two; `batch` partials in flight a unit). `use_plane`:
/// plane reductions (the largest value, then the smallest index holding it), each plane's into
/// shared memory, one barrier, then every plane reduces those (at most a plane's width of
/// planes); else a shared-memory tree (a barrier a level).
#[cube]
fn pick(vals: &Tensor<f32>, idxs: &Tensor<u32>, parts: u32, vocab: u32, #[comptime] block: usize, #[comptime] batch: usize, #[comptime] use_plane: bool) -> u32 {
    let parts = parts as usize;
    let unit = UNIT_POS_X as usize;
    let mut best_v = f32::new(f32::MIN);
    let mut best_i = vocab;
    let mut s0 = unit;
    while s0 < parts {
        let mut v = Array::<f32>::new(batch);
        let mut i = Array::<u32>::new(batch);
        #[unroll]
        for b in 0..batch {
            let s = s0 + b * block;
            v[b] = f32::new(f32::MIN);
            i[b] = vocab;
            if s < parts {
                v[b] = vals[s];
                i[b] = idxs[s];
            }
        }
        #[unroll]
        for b in 0..batch {
            if v[b] > best_v || (v[b] == best_v && i[b] < best_i) {
                best_v = v[b];
                best_i = i[b];
            }
        }
        s0 += batch * block;
    }
    let mut sv = Shared::<[f32]>::new_slice(block);
    let mut si = Shared::<[u32]>::new_slice(block);
    if use_plane {
        let (plane, lane) = (unit / PLANE_DIM as usize, UNIT_POS_PLANE);
        let top = plane_max(best_v);
        let at = plane_min(if best_v == top { best_i } else { vocab });
        if lane == 0 {
            sv[plane] = top;
            si[plane] = at;
        }
        sync_cube();
        let planes = CUBE_DIM_X / PLANE_DIM;
        let mut v = f32::new(f32::MIN);
        let mut i = vocab;
        if lane < planes {
            v = sv[lane as usize];
            i = si[lane as usize];
        }
        let top = plane_max(v);
        plane_min(if v == top { i } else { vocab })
    } else {
        sv[unit] = best_v;
        si[unit] = best_i;
        // (Ends with a cube barrier: every unit may read the winner.)
        cube_best(&mut sv, &mut si);
        si[0]
    }
}

/// `state = [next, pos]`, `history[pos] = next` (skipped past its end).
#[cube]
fn advance(state: &mut Tensor<u32>, history: &mut Tensor<u32>, next: u32, pos: u32) {
    state[0] = next;
    state[1] = pos;
    if (pos as usize) < history.shape(0) {
        history[pos as usize] = next;
    }
}
