use cubecl::prelude::*;

use crate::gemv::kernel::{dot_regs, load_at, load_row, stage_rows};
use crate::grid::grid_sync_kind;
use crate::reduce::round;

/// The batch-1 decode step from the attention output to the MLP output in one launch of
/// `cubes` cubes of `units` units (one cube per SM), three phases separated by grid barriers:
/// - A: `o = attn @ wo^T` (o_proj) into `o`;
/// - B: `sum = residual + o` (written by cube 0), `n = rmsnorm(sum) * gamma`,
///   `act = silu(n @ wg^T) * (n @ wu^T)` into `act`;
/// - C: `out = act @ wd^T` (down_proj).
///
/// Each phase is the 1-row GEMV's plane path (`gemv::kernel`): every cube stages the phase's
/// input with `stage_rows` (its 256-unit staging order, whatever the cube's width), one plane per
/// output feature sums `dot_regs` over its register-loaded weight vectors and a plane sum. The
/// outputs are therefore bit for bit those of the three GEMV launches this replaces.
///
/// Features are dealt to the grid's planes round-robin across the three products in turn
/// (A's first, B's continuing where A's ended, then C's). Each plane loads its first A feature's
/// weights and its first `ahead_b` B features' (all of them where they fit the registers: 3
/// for Qwen3-0.6B at 256 units) before anything else, so B's weight reads stream during A and
/// the first barrier; C's first feature loads after B's dots (`c_early`: after A's), ahead of
/// the second barrier. Any later feature of a phase loads after the previous dot, as in the
/// GEMV. `barrier`: which grid barrier ([`crate::grid::BarrierKind`]'s code).
#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn decode_mlp_kernel<F: Float, N: Size>(
    attn: &Tensor<F>,          // [1, q_dim]
    residual: &Tensor<F>,      // [1, hidden]
    gamma: &Tensor<F>,         // [hidden]
    wo: &Tensor<Vector<F, N>>, // [hidden, q_dim / N]
    wg: &Tensor<Vector<F, N>>, // [inter, hidden / N]
    wu: &Tensor<Vector<F, N>>, // [inter, hidden / N]
    wd: &Tensor<Vector<F, N>>, // [hidden, inter / N]
    o: &mut Tensor<F>,         // [1, hidden]: phase A's output (scratch)
    sum: &mut Tensor<F>,       // [1, hidden]: residual + o
    act: &mut Tensor<F>,       // [1, inter]: phase B's output (scratch)
    out: &mut Tensor<F>,       // [1, hidden]: down_proj's output
    bar: &Tensor<Atomic<u32>>, // [BARRIER_WORDS]: the grid barrier's counter at 0
    eps: f32,
    #[comptime] f32_internal: bool,
    #[comptime] q_dim: usize,
    #[comptime] hidden: usize,
    #[comptime] inter: usize,
    #[comptime] cubes: u32,
    #[comptime] block: usize,
    #[comptime] units: usize,
    #[comptime] plane_min: usize,
    #[comptime] ahead_b: usize,
    #[comptime] c_early: bool,
    #[comptime] barrier: u32,
    #[define(F)] _dtype: ElemType,
) {
    let vs = wo.vector_size();
    let na = q_dim / vs;
    let nb = hidden / vs;
    let nc = inter / vs;
    // Weight vectors a lane holds per feature of each product.
    let la = comptime!((q_dim / vs).div_ceil(plane_min));
    let lb = comptime!((hidden / vs).div_ceil(plane_min));
    let lc = comptime!((inter / vs).div_ceil(plane_min));
    let width = comptime!(q_dim.max(hidden).max(inter));
    let mut staged = Shared::<[f32]>::new_slice(width);

    let lane = UNIT_POS_PLANE as usize;
    let step = PLANE_DIM as usize;
    let per_cube = (CUBE_DIM_X / PLANE_DIM) as usize;
    let planes = cubes as usize * per_cube;
    let plane = CUBE_POS_X as usize * per_cube + UNIT_POS_X as usize / step;
    // First feature of each product on this plane (the deal continues across products).
    let fa = plane;
    let fb = (plane + planes - hidden % planes) % planes;
    let fc = (plane + planes - (hidden + inter) % planes) % planes;

    let mut ra = Array::<Vector<F, N>>::new(la);
    // Gate and up weights of this plane's first `ahead_b` B features, feature `s` at `s * lb`.
    let mut rg = Array::<Vector<F, N>>::new(comptime!(ahead_b * lb));
    let mut ru = Array::<Vector<F, N>>::new(comptime!(ahead_b * lb));
    let mut rc = Array::<Vector<F, N>>::new(lc);
    if fa < hidden {
        load_row::<F, N>(wo, fa * na, &mut ra, lane, step, na, la);
    }
    #[unroll]
    for s in 0..ahead_b {
        let f = fb + s * planes;
        if f < inter {
            load_at::<F, N>(wg, f * nb, &mut rg, s * lb, lane, step, nb, lb);
            load_at::<F, N>(wu, f * nb, &mut ru, s * lb, lane, step, nb, lb);
        }
    }

    // A: o_proj.
    stage_rows::<F>(attn, attn, o, gamma, &mut staged, eps, 0usize, 1usize, false, vs, f32_internal, false, false, false, 1usize, q_dim, block, block);
    sync_cube();
    let mut f = fa;
    while f < hidden {
        let mut acc = Array::<f32>::new(1usize);
        acc[0] = 0.0f32;
        dot_regs::<F, N>(&ra, &staged, &mut acc, lane, na, q_dim, 1usize, la, vs);
        let next = f + planes;
        if next < hidden {
            load_row::<F, N>(wo, next * na, &mut ra, lane, step, na, la);
        }
        let g = plane_sum(acc[0]);
        if lane == 0 {
            o[f] = F::cast_from(g);
        }
        f = next;
    }
    if c_early && fc < hidden {
        load_row::<F, N>(wd, fc * nc, &mut rc, lane, step, nc, lc);
    }
    grid_sync_kind(bar, cubes, barrier);

    // B: residual add + post-attention RMSNorm + gate/up + SiLU.
    let first = CUBE_POS_X == 0;
    stage_rows::<F>(&*o, residual, sum, gamma, &mut staged, eps, 0usize, 1usize, first, vs, f32_internal, true, true, true, 1usize, hidden, block, units);
    sync_cube();
    #[unroll]
    for s in 0..ahead_b {
        let f = fb + s * planes;
        if f < inter {
            let g = plane_sum(dot_at::<F, N>(&rg, s * lb, &staged, lane, nb, lb, vs));
            let u = plane_sum(dot_at::<F, N>(&ru, s * lb, &staged, lane, nb, lb, vs));
            if lane == 0 {
                act[f] = F::cast_from(silu_mul_value::<F>(g, u, f32_internal));
            }
        }
    }
    // Features past those held (planes wider than `plane_min`): one at a time.
    let mut fi = fb + ahead_b * planes;
    while fi < inter {
        load_at::<F, N>(wg, fi * nb, &mut rg, 0usize, lane, step, nb, lb);
        load_at::<F, N>(wu, fi * nb, &mut ru, 0usize, lane, step, nb, lb);
        let g = plane_sum(dot_at::<F, N>(&rg, 0usize, &staged, lane, nb, lb, vs));
        let u = plane_sum(dot_at::<F, N>(&ru, 0usize, &staged, lane, nb, lb, vs));
        if lane == 0 {
            act[fi] = F::cast_from(silu_mul_value::<F>(g, u, f32_internal));
        }
        fi += planes;
    }
    if !c_early && fc < hidden {
        load_row::<F, N>(wd, fc * nc, &mut rc, lane, step, nc, lc);
    }
    grid_sync_kind(bar, cubes, barrier);

    // C: down_proj.
    stage_rows::<F>(&*act, &*act, o, gamma, &mut staged, eps, 0usize, 1usize, false, vs, f32_internal, false, false, false, 1usize, inter, block, block);
    sync_cube();
    let mut fj = fc;
    while fj < hidden {
        let mut acc = Array::<f32>::new(1usize);
        acc[0] = 0.0f32;
        dot_regs::<F, N>(&rc, &staged, &mut acc, lane, nc, inter, 1usize, lc, vs);
        let next = fj + planes;
        if next < hidden {
            load_row::<F, N>(wd, next * nc, &mut rc, lane, step, nc, lc);
        }
        let g = plane_sum(acc[0]);
        if lane == 0 {
            out[fj] = F::cast_from(g);
        }
        fj = next;
    }
}

/// `silu(g) * u` with `gemv_kernel`'s rounding points (torch mode: `g` rounded, SiLU's output
/// rounded, `u` rounded; f32 mode: none).
#[cube]
fn silu_mul_value<F: Float>(g: f32, u: f32, #[comptime] f32_internal: bool) -> f32 {
    if f32_internal {
        g / (1.0f32 + (-g).exp()) * u
    } else {
        let gr = round::<F>(g);
        round::<F>(gr / (1.0f32 + (-gr).exp())) * round::<F>(u)
    }
}

/// `dot_regs` for one row over `regs[at..at + loads]`: this lane's part of the dot product
/// with the staged row (the same order of products and sums).
#[cube]
#[allow(clippy::too_many_arguments)]
fn dot_at<F: Float, N: Size>(
    regs: &Array<Vector<F, N>>,
    at: usize,
    staged: &Shared<[f32]>,
    lane: usize,
    nvec: usize,
    #[comptime] loads: usize,
    #[comptime] vs: usize,
) -> f32 {
    let step = PLANE_DIM as usize;
    let mut acc = 0.0f32;
    #[unroll]
    for j in 0..loads {
        let k = lane + j * step;
        if k < nvec {
            let v = regs[at + j];
            #[unroll]
            for e in 0..vs {
                acc += f32::cast_from(v.extract(e)) * staged[e * nvec + k];
            }
        }
    }
    acc
}
