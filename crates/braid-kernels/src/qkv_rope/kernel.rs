use cubecl::prelude::*;

use crate::gemv::kernel::{dot_regs, load_row, stage_rows, staged_len};
use crate::qk_norm_rope::kernel::norm_rope_pair;
use crate::reduce::{block_sum, round};

/// The batch-1 decode step's attention inputs in one launch: the optional residual add, the
/// input RMSNorm, the q/k/v projections, QK-norm + RoPE, and the new key and value written into
/// the cache at position `state[1]`.
///
/// Grid: x over heads: q heads, then k heads, then v heads; one cube computes all `hd` features
/// of its head, so the head's norm needs no other cube. Plane `p` of the cube computes features
/// `p, p + planes, ...`, `ahead` (2 or 4) at a time, with the GEMV's per-feature order (each lane's weight
/// vectors loaded into registers, `dot_regs`, a plane sum), so the raw projections are bit for
/// bit [`crate::rms_norm_qkv`]'s; the input is staged by the GEMV's own function with its cube
/// width (`stage_block`), and the norm + RoPE of a pair is `qk_norm_rope`'s function over the
/// same reduction tree: the outputs are bit for bit those of the two launches this replaces.
///
/// The first cube writes the residual sum (`add_residual`).
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
pub(super) fn qkv_rope_kernel<F: Float, N: Size>(
    x: &Tensor<F>,             // [1, hidden]
    residual: &Tensor<F>,      // [1, hidden] (read when `add_residual`)
    sum_out: &mut Tensor<F>,   // [1, hidden] (written by cube 0 when `add_residual`)
    gamma: &Tensor<F>,         // [hidden]
    wq: &Tensor<Vector<F, N>>, // [heads * hd, hidden / N]
    wk: &Tensor<Vector<F, N>>, // [kv_heads * hd, hidden / N]
    wv: &Tensor<Vector<F, N>>, // [kv_heads * hd, hidden / N]
    q_weight: &Tensor<F>,      // [hd]
    k_weight: &Tensor<F>,      // [hd]
    cos: &Tensor<f32>,         // [1, hd]
    sin: &Tensor<f32>,         // [1, hd]
    q_out: &mut Tensor<F>,     // [1, heads, 1, hd]
    k_cache: &mut Tensor<F>,   // [1, kv_heads, capacity, hd] (last dim contiguous)
    v_cache: &mut Tensor<F>,   // [1, kv_heads, capacity, hd]
    state: &Tensor<u32>,       // [2]: token, position
    eps: f32,
    qk_eps: f32,
    #[comptime] f32_internal: bool,
    #[comptime] add_residual: bool,
    #[comptime] hidden: usize,
    #[comptime] stage_block: usize,
    #[comptime] block: usize,
    #[comptime] plane_min: usize,
    #[comptime] half: usize,
    #[comptime] ahead: usize,
    #[define(F)] _dtype: ElemType,
) {
    let slot = CUBE_POS_X as usize;
    let heads = q_out.shape(1);
    let kv_heads = k_cache.shape(1);
    let hd = 2 * half;
    let unit = UNIT_POS_X as usize;
    let lane = UNIT_POS_PLANE as usize;
    let planes = block / PLANE_DIM as usize;
    let plane = unit / PLANE_DIM as usize;
    let vs = wq.vector_size();
    let nvec = hidden / vs;
    let loads = comptime!((hidden / vs).div_ceil(plane_min));
    let pos = state[1] as usize;
    let is_q = slot < heads;
    let is_v = slot >= heads + kv_heads;
    let h = if is_q { slot } else if is_v { slot - heads - kv_heads } else { slot - heads };

    // This head's first `ahead` features of the plane: weight loads in flight before the staging.
    let four = comptime!(ahead == 4);
    let mut wa = Array::<Vector<F, N>>::new(loads);
    let mut wb = Array::<Vector<F, N>>::new(loads);
    let mut wc = Array::<Vector<F, N>>::new(comptime!(if four { loads } else { 1usize }));
    let mut wd = Array::<Vector<F, N>>::new(comptime!(if four { loads } else { 1usize }));
    let mut f = plane;
    load_head_row::<F, N>(wq, wk, wv, is_q, is_v, h * hd + f, f < hd, &mut wa, lane, nvec, loads);
    load_head_row::<F, N>(wq, wk, wv, is_q, is_v, h * hd + f + planes, f + planes < hd, &mut wb, lane, nvec, loads);
    if four {
        let (f2, f3) = (f + 2 * planes, f + 3 * planes);
        load_head_row::<F, N>(wq, wk, wv, is_q, is_v, h * hd + f2, f2 < hd, &mut wc, lane, nvec, loads);
        load_head_row::<F, N>(wq, wk, wv, is_q, is_v, h * hd + f3, f3 < hd, &mut wd, lane, nvec, loads);
    }

    // The norm + RoPE operands, loaded now (unit i < half owns the pair (i, i + half)).
    let active = unit < half && !is_v;
    let mut w1 = 0.0f32;
    let mut w2 = 0.0f32;
    let mut c1 = 0.0f32;
    let mut s1 = 0.0f32;
    let mut c2 = 0.0f32;
    let mut s2 = 0.0f32;
    if active {
        c1 = cos[unit];
        s1 = sin[unit];
        c2 = cos[unit + half];
        s2 = sin[unit + half];
        if is_q {
            w1 = f32::cast_from(q_weight[unit]);
            w2 = f32::cast_from(q_weight[unit + half]);
        } else {
            w1 = f32::cast_from(k_weight[unit]);
            w2 = f32::cast_from(k_weight[unit + half]);
        }
    }

    // 1. The input row, staged (and normalised) as the GEMV does.
    let mut staged = Shared::<[f32]>::new_slice(comptime!(staged_len(1usize, hidden, vs)));
    stage_rows::<F>(
        x, residual, sum_out, gamma, &mut staged, eps, 0usize, 1usize, slot == 0, vs, f32_internal, true, add_residual, false, 1usize,
        hidden, stage_block, block,
    );
    sync_cube();

    // 2. The head's projections (rounded to F, as the GEMV stores them) into shared memory; a
    // v head goes straight into the cache.
    let mut head = Shared::<[f32]>::new_slice(comptime!(2 * half));
    let v_base = h * v_cache.stride(1) + pos * v_cache.stride(2);
    let stride = comptime!(if four { 4usize } else { 2usize }) * planes;
    while f < hd {
        let mut acc = Array::<f32>::new(4usize);
        #[unroll]
        for i in 0..4usize {
            acc[i] = 0.0f32;
        }
        let (f1, f2, f3) = (f + planes, f + 2 * planes, f + 3 * planes);
        dot_one::<F, N>(&wa, &staged, &mut acc, 0usize, true, lane, nvec, loads, vs);
        dot_one::<F, N>(&wb, &staged, &mut acc, 1usize, f1 < hd, lane, nvec, loads, vs);
        if four {
            dot_one::<F, N>(&wc, &staged, &mut acc, 2usize, f2 < hd, lane, nvec, loads, vs);
            dot_one::<F, N>(&wd, &staged, &mut acc, 3usize, f3 < hd, lane, nvec, loads, vs);
        }
        // The next features' loads go out before the plane sums.
        let nf = f + stride;
        load_head_row::<F, N>(wq, wk, wv, is_q, is_v, h * hd + nf, nf < hd, &mut wa, lane, nvec, loads);
        load_head_row::<F, N>(wq, wk, wv, is_q, is_v, h * hd + nf + planes, nf + planes < hd, &mut wb, lane, nvec, loads);
        if four {
            let (n2, n3) = (nf + 2 * planes, nf + 3 * planes);
            load_head_row::<F, N>(wq, wk, wv, is_q, is_v, h * hd + n2, n2 < hd, &mut wc, lane, nvec, loads);
            load_head_row::<F, N>(wq, wk, wv, is_q, is_v, h * hd + n3, n3 < hd, &mut wd, lane, nvec, loads);
        }
        emit::<F>(plane_sum(acc[0]), f, hd, is_v, lane, v_base, v_cache, &mut head);
        emit::<F>(plane_sum(acc[1]), f1, hd, is_v, lane, v_base, v_cache, &mut head);
        if four {
            emit::<F>(plane_sum(acc[2]), f2, hd, is_v, lane, v_base, v_cache, &mut head);
            emit::<F>(plane_sum(acc[3]), f3, hd, is_v, lane, v_base, v_cache, &mut head);
        }
        f = nf;
    }
    sync_cube();

    // 3. QK-norm + RoPE of a q or k head (the cube-uniform `is_v` skips it whole). The units
    // past `half` add zeros to the tree: `qk_norm_rope`'s sum, bit for bit.
    if !is_v {
        let mut x1 = 0.0f32;
        let mut x2 = 0.0f32;
        if active {
            x1 = head[unit];
            x2 = head[unit + half];
        }
        let sq = block_sum(x1 * x1 + x2 * x2, block);
        let inv = 1.0f32 / (sq / f32::cast_from(hd as u32) + qk_eps).sqrt();
        if active {
            let (o1, o2) = norm_rope_pair::<F>(x1, x2, w1, w2, c1, s1, c2, s2, inv, f32_internal);
            if is_q {
                q_out[h * hd + unit] = F::cast_from(o1);
                q_out[h * hd + unit + half] = F::cast_from(o2);
            } else {
                let dst = h * k_cache.stride(1) + pos * k_cache.stride(2);
                k_cache[dst + unit] = F::cast_from(o1);
                k_cache[dst + unit + half] = F::cast_from(o2);
            }
        }
    }
}

/// Loads lane `lane`'s vectors of row `row` of the head's weight (`wq`, `wk` or `wv`) into
/// `regs` where `valid` (else leaves them).
#[cube]
#[allow(clippy::too_many_arguments)]
fn load_head_row<F: Float, N: Size>(
    wq: &Tensor<Vector<F, N>>,
    wk: &Tensor<Vector<F, N>>,
    wv: &Tensor<Vector<F, N>>,
    is_q: bool,
    is_v: bool,
    row: usize,
    valid: bool,
    regs: &mut Array<Vector<F, N>>,
    lane: usize,
    nvec: usize,
    #[comptime] loads: usize,
) {
    let step = PLANE_DIM as usize;
    if valid {
        if is_q {
            load_row::<F, N>(wq, row * nvec, regs, lane, step, nvec, loads);
        } else if is_v {
            load_row::<F, N>(wv, row * nvec, regs, lane, step, nvec, loads);
        } else {
            load_row::<F, N>(wk, row * nvec, regs, lane, step, nvec, loads);
        }
    }
}

/// `acc[i] = the weights in regs . staged` (the GEMV's per-feature order, `dot_regs` over one
/// row) where `valid`.
#[cube]
#[allow(clippy::too_many_arguments)]
fn dot_one<F: Float, N: Size>(
    regs: &Array<Vector<F, N>>,
    staged: &Shared<[f32]>,
    acc: &mut Array<f32>,
    i: usize,
    valid: bool,
    lane: usize,
    nvec: usize,
    #[comptime] loads: usize,
    #[comptime] vs: usize,
) {
    if valid {
        let mut a = Array::<f32>::new(1usize);
        a[0] = 0.0f32;
        dot_regs::<F, N>(regs, staged, &mut a, lane, nvec, 1usize, loads, vs);
        acc[i] = a[0];
    }
}

/// Lane 0 stores feature `f`'s sum `g` (when `f < hd`): a v head's straight into the cache row
/// at `v_base`, rounded; a q or k head's into `head`, rounded to F and kept in f32 (the value the
/// GEMV would store and `qk_norm_rope` read back).
#[cube]
#[allow(clippy::too_many_arguments)]
fn emit<F: Float>(g: f32, f: usize, hd: usize, is_v: bool, lane: usize, v_base: usize, v_cache: &mut Tensor<F>, head: &mut Shared<[f32]>) {
    if lane == 0 && f < hd {
        if is_v {
            v_cache[v_base + f] = F::cast_from(g);
        } else {
            head[f] = round::<F>(g);
        }
    }
}
