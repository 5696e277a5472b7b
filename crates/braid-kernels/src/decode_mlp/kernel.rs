use cubecl::prelude::*;

use super::next::{emit_qkv, head_inv, load_qkv, put_head, rope_head};
use crate::attention::kernel::{attend_issue, attend_loaded, attend_row, touch, touch_span};
use crate::gemv::kernel::{dot_regs, hold_row, load_at, load_row, stage_rows, stage_vals, stage_vals_with, staged_at, staged_len};
use crate::grid::{BARRIER_WORDS, grid_arrive_kind, grid_sync_kind, grid_sync_unfenced, grid_wait_kind};
use crate::reduce::{block_sum_pair, round};
use crate::tagged::{await_words, publish, tag_of, value_of};

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
/// the first barrier; C's first feature loads where `at.c_at` says: by default after B's
/// staging, before B's dots (so its reads are in flight during B's dots and the second
/// barrier, but do not delay the reads B's staging waits for), else after B's dots (with
/// `late_loads` just behind the release fence, which would otherwise wait for them), after the
/// first barrier, or with `c_early` after A's dots. Any later feature of a phase loads after
/// the previous dot, as in the GEMV. `barrier`: which grid barrier ([`crate::grid::BarrierKind`]'s code).
///
/// With `then_qkv`, two more phases run the next layer's attention inputs, as `qkv_rope` does:
/// - D (after a third barrier): `stream = sum + out` (written by cube 0), the next layer's input
///   RMSNorm of it and its q/k/v projections, the features dealt on (C's deal continued); q and
///   k rounded to F into `raw`, v rounded into the value cache at `state[1]`;
/// - E (after a fourth barrier, or with `tags` and without `e_barrier` none: each head cube
///   waits for its head's words alone): one cube per q and k head reads its `hd` raw values back and applies
///   QK-norm + RoPE (`qk_norm_rope`'s pair function over the same tree), into `q_out` and the
///   key cache; with `attend.on`, one cube per q head does its q and its KV head's key (the
///   group's cubes write the same bits; both norms through one tree), a cube barrier
///   (`e_fence` or without `tags`: a fenced one), then the row attention over the cache
///   (`attention::kernel::attend_row`, at this cube's width) into `attn_out`, while the other
///   cubes read `attend.prefetch` of `pf0..pf3` into L2.
///
/// Each plane loads its first `ahead_d` q/k/v features' weights where `at.d_at` says: by
/// default after C's staging, before C's dots; else after C's dots, after the second barrier,
/// or with `d_early` with C's. Bit for bit `qkv_rope` after the three launches:
/// the staging, per-feature order and pair function are that kernel's. Without `then_qkv` the
/// extra tensors are never touched (any of the right types may stand in).
///
/// The attention's cache reads: with `at.kv_at` (3 by default) every unit of the grid reads
/// its share of the cached key and value rows phase E will read (the keys before this step's)
/// into L2 during an earlier phase ([`kv_issue`], [`kv_use`]), and with `at.kv_early` phase
/// E's head cubes issue the attention's first loads before they wait for their head's words
/// ([`attend_issue`]; the new key and value rows, which the cube writes after its norm, load
/// after it: [`attend_loaded`]). Without them those reads queue in DRAM behind the idle cubes'
/// weight loads of phase E. Neither changes a bit.
///
/// With `tags` (16-bit F), every phase also publishes its output elements as tagged words in
/// `bar` (`crate::tagged`; regions at [`TAGS`]) under the launch's round, read from the ticket
/// counter at the start, and the next phase stages from those words ([`read_row`],
/// [`await_words`]) instead of the F buffers; the barriers are unfenced. `sum` in D is then
/// computed again from `residual` and `o`'s words (cube 0's store of it has no fence behind
/// it), and phase E's attention cubes write their KV head's new value row themselves, from
/// its words. The bits are the same: the words carry the F values. With `hold`, the normed
/// phases (B, D) load their residual and norm weight before the barrier that starts them.
/// `probe`: timing probes (`PROBE_*`), which make the results wrong.
#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments, clippy::collapsible_if)]
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
    bar: &Tensor<Atomic<u32>>, // [BARRIER_WORDS or sync_words]: the barrier's counter at 0, tagged words at TAGS
    gamma_in: &Tensor<F>,      // [hidden]: the next layer's input_layernorm
    wq: &Tensor<Vector<F, N>>, // [heads * hd, hidden / N]
    wk: &Tensor<Vector<F, N>>, // [kv_heads * hd, hidden / N]
    wv: &Tensor<Vector<F, N>>, // [kv_heads * hd, hidden / N]
    q_weight: &Tensor<F>,      // [hd]
    k_weight: &Tensor<F>,      // [hd]
    cos: &Tensor<f32>,         // [1, hd]
    sin: &Tensor<f32>,         // [1, hd]
    raw: &mut Tensor<F>,       // [(heads + kv_heads) * hd]: phase D's q and k (scratch)
    stream: &mut Tensor<F>,    // [1, hidden]: sum + out
    q_out: &mut Tensor<F>,     // [1, heads, 1, hd]
    k_cache: &mut Tensor<F>,   // [1, kv_heads, capacity, hd] (last dim contiguous)
    v_cache: &mut Tensor<F>,   // [1, kv_heads, capacity, hd]
    state: &Tensor<u32>,       // [2]: token, position
    kv_k: &Tensor<Vector<F, N>>, // k_cache again, read in vectors by the attention (`attend`)
    kv_v: &Tensor<Vector<F, N>>, // v_cache again
    attn_out: &mut Tensor<F>,  // [1, heads * hd]: the next layer's attention output (`attend`)
    pf0: &Tensor<Vector<F, N>>, // the first `prefetch` of these are read into L2 by the idle cubes
    pf1: &Tensor<Vector<F, N>>,
    pf2: &Tensor<Vector<F, N>>,
    pf3: &Tensor<Vector<F, N>>,
    sink: &mut Tensor<f32>,    // [1] (written only if a prefetched sum is NaN)
    eps: f32,
    eps_in: f32,
    qk_eps: f32,
    scale: f32,
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
    #[comptime] then_qkv: bool,
    #[comptime] heads: usize,
    #[comptime] kv_heads: usize,
    #[comptime] half: usize,
    #[comptime] ahead_d: usize,
    #[comptime] d_early: bool,
    #[comptime] attend: AttendPhase,
    #[comptime] late_loads: bool,
    #[comptime] tags: bool,
    #[comptime] e_barrier: bool,
    #[comptime] hold: bool,
    #[comptime] e_fence: bool,
    #[comptime] probe: u32,
    #[comptime] at: LoadPoints,
    #[comptime] layers: usize,
    #[comptime] pre: bool,
    #[comptime] head_from: usize,
    #[define(F)] _dtype: ElemType,
) {
    let hot_a = comptime!(probe & (PROBE_HOT_WEIGHTS | PROBE_HOT_A) != 0);
    let hot_b = comptime!(probe & (PROBE_HOT_WEIGHTS | PROBE_HOT_B) != 0);
    let hot_c = comptime!(probe & (PROBE_HOT_WEIGHTS | PROBE_HOT_C) != 0);
    let hot_d = comptime!(probe & (PROBE_HOT_WEIGHTS | PROBE_HOT_D) != 0);
    let vs = wo.vector_size();
    let na = q_dim / vs;
    let nb = hidden / vs;
    let nc = inter / vs;
    // Weight vectors a lane holds per feature of each product.
    let la = comptime!((q_dim / vs).div_ceil(plane_min));
    let lb = comptime!((hidden / vs).div_ceil(plane_min));
    let lc = comptime!((inter / vs).div_ceil(plane_min));
    let width = comptime!(q_dim.max(hidden).max(inter));
    let mut staged = Shared::<[f32]>::new_slice(comptime!(staged_len(1usize, width, vs)));

    let lane = UNIT_POS_PLANE as usize;
    let step = PLANE_DIM as usize;
    let per_cube = (CUBE_DIM_X / PLANE_DIM) as usize;
    let planes = cubes as usize * per_cube;
    let plane = CUBE_POS_X as usize * per_cube + UNIT_POS_X as usize / step;
    // First feature of each product on this plane (the deal continues across products).
    let fa = plane;
    let fb = (plane + planes - hidden % planes) % planes;
    let fc = (plane + planes - (hidden + inter) % planes) % planes;
    let nq = comptime!(heads * 2 * half);
    let nk = comptime!(kv_heads * 2 * half);
    let nqkv = comptime!((heads + 2 * kv_heads) * 2 * half);
    let fd = (plane + planes - (2 * hidden + inter) % planes) % planes;

    let o_at = comptime!(TAGS);
    let act_at = comptime!(TAGS + hidden);
    // (With `layers` > 1: the attention output's words, after the q/k/v's.)
    let attn_at = comptime!(TAGS + 2 * hidden + inter + (heads + 2 * kv_heads) * 2 * half);
    let mut ra = Array::<Vector<F, N>>::new(la);
    // Gate and up weights of this plane's first `ahead_b` B features, feature `s` at `s * lb`.
    let mut rg = Array::<Vector<F, N>>::new(comptime!(ahead_b * lb));
    let mut ru = Array::<Vector<F, N>>::new(comptime!(ahead_b * lb));
    let mut rc = Array::<Vector<F, N>>::new(lc);
    // Phase D's weights of this plane's first `ahead_d` q/k/v features, feature `s` at `s * lb`.
    let mut rq = Array::<Vector<F, N>>::new(comptime!(if then_qkv { ahead_d * lb } else { 1usize }));
    let per_h = comptime!(hidden.div_ceil(block));
    // With `layers` > 1: this unit's elements of the stream entering the next iteration (phase
    // D's `sum + out`, as `hold_row` deals them), which is that layer's residual.
    let mut carried = Array::<f32>::new(per_h);

    // With `tags`, the launch's round: the ticket counter over the cube count, read before
    // this cube's first ticket (no round of the launch can complete before, so every cube reads
    // the same); iteration `l` tags every word it publishes with round `start + l`.
    let mut start = Shared::<[u32]>::new_slice(1usize);
    if tags && UNIT_POS == 0 {
        start[0] = bar[0].load() / cubes;
    }
    // Iteration `l` runs D-E of `head`'s layer `l + head_from`. With `pre` (and `head_from` 1),
    // phases D and E of `head`'s layer 0 come first, from the stream `residual` (the embedding
    // row: no residual add), under round `start`; iteration `l` then publishes under round
    // `start + 1 + l`.
    let t0 = comptime!(if pre { 1u32 } else { 0u32 });
    if pre {
        sync_cube();
        let tag0 = tag_of(start[0]);
        next_phases::<F, N>(
            residual, &*sum, &*out, gamma_in, wq, wk, wv, q_weight, k_weight, cos, sin, raw, stream, q_out, k_cache, v_cache, state, kv_k, kv_v, attn_out, pf0, pf1, pf2, pf3, sink, bar, &mut staged, &mut rq, wo, wg, wu, wd,
            eps_in, qk_eps, scale, fd, planes, first_cube(), tag0, 0usize, 0usize, true, true, &mut carried, at, ahead_b, f32_internal, hidden, inter, cubes, block, units, plane_min, barrier, heads, kv_heads, half, ahead_d, false, attend, late_loads, tags, e_barrier, hold, e_fence, probe, attn_at, layers, true,
        );
    }

    // One iteration a layer: A-C of layer `l` of the stacked weights, D-E of the next layer's
    // (the stacked tensors of `head`, whose layer `l` is that next layer).
    #[unroll(layers == 1)]
    for l in 0..layers {
    // Row offsets of this iteration's layer in the stacked matrices (0 with one layer).
    let lh = l * hidden;
    let li = l * inter;
    // (After the first iteration, `at.e_loads` of o_proj, gate and up load here, during the
    // previous iteration's phase E; the rest after the barrier that starts phase A.)
    // (No phase E before the first iteration, unless `pre`.)
    let mut top = l == 0;
    if pre {
        top = false;
    }
    // (`at.kv_at`: this iteration's phase E attends over layer `l + head_from`'s cache.)
    let kv_on = comptime!(then_qkv && attend.on && at.kv_at > 0);
    let mut kv_regs = Array::<Vector<F, N>>::new(comptime!(if kv_on { 2 * at.kv_n } else { 1usize }));
    let kv_pos = state[1] as usize;
    let mut now_a = top;
    let mut now_g = top;
    let mut now_u = top;
    if comptime!(at.e_loads >= 1) {
        now_a = true;
    }
    if comptime!(at.e_loads >= 2) {
        now_g = true;
    }
    if comptime!(at.e_loads >= 3) {
        now_u = true;
    }
    if fa < hidden && now_a {
        load_row::<F, N>(wo, row_of(lh + fa, na, hot_a), &mut ra, lane, step, na, la);
    }
    #[unroll]
    for s in 0..ahead_b {
        let f = fb + s * planes;
        if f < inter {
            if now_g {
                load_at::<F, N>(wg, row_of(li + f, nb, hot_b), &mut rg, s * lb, lane, step, nb, lb);
            }
            if now_u {
                load_at::<F, N>(wu, row_of(li + f, nb, hot_b), &mut ru, s * lb, lane, step, nb, lb);
            }
        }
    }

    // A: o_proj, of `attn` in the first iteration, later of the previous iteration's attention
    // output, from its words (published under that iteration's round), awaited without a
    // barrier (`at.a_barrier`: behind an unfenced one); the cubes idle in that phase E wait here
    // with this layer's first A and B weights already in flight. Safe without the barrier where
    // every plane computes a q/k/v feature (else `layers_options` keeps it): a cube reaches this
    // point only once every head's words exist, and each head's q/k/v words need every plane's
    // phase D output, so no cube is still reading a word of the previous iteration's that this
    // iteration overwrites.
    if top {
        stage_rows::<F>(attn, attn, o, gamma, &mut staged, eps, 0usize, 1usize, false, vs, f32_internal, false, false, false, 1usize, q_dim, block, block);
    } else {
        if at.a_barrier {
            grid_sync_unfenced(bar, cubes);
        }
        if fa < hidden && !now_a {
            load_row::<F, N>(wo, row_of(lh + fa, na, hot_a), &mut ra, lane, step, na, la);
        }
        #[unroll]
        for s in 0..ahead_b {
            let f = fb + s * planes;
            if f < inter {
                if !now_g {
                    load_at::<F, N>(wg, row_of(li + f, nb, hot_b), &mut rg, s * lb, lane, step, nb, lb);
                }
                if !now_u {
                    load_at::<F, N>(wu, row_of(li + f, nb, hot_b), &mut ru, s * lb, lane, step, nb, lb);
                }
            }
        }
        let prev = tag_of(start[0] + t0 + u32::cast_from(l) - 1u32);
        let per = comptime!(q_dim.div_ceil(block));
        let mut addr = Array::<usize>::new(per);
        let mut words = Array::<u32>::new(per);
        let mut vals = Array::<f32>::new(per);
        read_row(bar, attn_at, prev, &mut addr, &mut words, 0usize, q_dim, block);
        await_words(bar, &addr, &mut words, &mut vals, prev, per);
        stage_vals::<F>(&vals, 0usize, 0usize, (UNIT_POS_X as usize) < block, o, gamma, &mut staged, eps, false, vs, f32_internal, false, false, false, q_dim, block, block);
    }
    sync_cube();
    if comptime!(kv_on && at.kv_at == 1) {
        kv_issue::<F, N>(kv_k, kv_v, l + head_from, kv_pos, &mut kv_regs, at.kv_n, kv_heads, comptime!(2 * half), cubes, units);
    }
    let mut tag = 0u32;
    if tags {
        tag = tag_of(start[0] + t0 + u32::cast_from(l));
    }
    let mut f = fa;
    while f < hidden {
        let mut acc = Array::<f32>::new(1usize);
        acc[0] = 0.0f32;
        dot_regs::<F, N>(&ra, &staged, &mut acc, lane, na, 1usize, la, vs);
        let next = f + planes;
        if next < hidden {
            load_row::<F, N>(wo, row_of(lh + next, na, hot_a), &mut ra, lane, step, na, la);
        }
        let g = plane_sum(acc[0]);
        if lane == 0 {
            let v = F::cast_from(g);
            o[f] = v;
            if tags {
                publish::<F>(bar, o_at + f, v, tag);
            }
        }
        f = next;
    }
    if comptime!(kv_on && at.kv_at == 1) {
        kv_use::<F, N>(&kv_regs, sink, at.kv_n);
    }
    // (`late_loads`: after the first barrier's release fence.)
    phase_release(bar, cubes, barrier, comptime!(c_early && late_loads), tags);
    if c_early && fc < hidden {
        load_row::<F, N>(wd, row_of(lh + fc, nc, hot_c), &mut rc, lane, step, nc, lc);
    }
    // With `tags` and `hold`, B's operands that no cube of the launch writes (the residual,
    // the norm's weight) into registers before the barrier, off the phase's chain of round trips.
    let mut res_b = Array::<f32>::new(per_h);
    let mut gam_b = Array::<f32>::new(per_h);
    if tags && hold {
        hold_layer_inputs::<F>(residual, gamma, &carried, l == 0, l, &mut res_b, &mut gam_b, hidden, block);
    }
    phase_barrier(bar, cubes, barrier, comptime!(c_early && late_loads), tags, probe);
    if at.c_at == 2 && !c_early && fc < hidden {
        load_row::<F, N>(wd, row_of(lh + fc, nc, hot_c), &mut rc, lane, step, nc, lc);
    }

    // B: residual add + post-attention RMSNorm + gate/up + SiLU.
    let first = CUBE_POS_X == 0;
    if tags {
        // `input`'s `residual + o` (rounded unless kept in f32), o from its words.
        let per = comptime!(hidden.div_ceil(block));
        let mut addr = Array::<usize>::new(per);
        let mut words = Array::<u32>::new(per);
        let mut vals = Array::<f32>::new(per);
        read_row(bar, o_at, tag, &mut addr, &mut words, 0usize, hidden, block);
        await_words(bar, &addr, &mut words, &mut vals, tag, per);
        if !hold {
            hold_layer_inputs::<F>(residual, gamma, &carried, l == 0, l, &mut res_b, &mut gam_b, hidden, block);
        }
        #[unroll]
        for i in 0..per {
            let k = UNIT_POS_X as usize + i * block;
            if (UNIT_POS_X as usize) < block && k < hidden {
                let h = res_b[i] + vals[i];
                if comptime!(f32_internal) {
                    vals[i] = h;
                } else {
                    vals[i] = f32::cast_from(F::cast_from(h));
                }
            }
        }
        stage_vals_with::<F>(&vals, &gam_b, 0usize, 0usize, (UNIT_POS_X as usize) < block, sum, &mut staged, eps, first, vs, f32_internal, true, true, true, hidden, block, units);
    } else {
        stage_rows::<F>(&*o, residual, sum, gamma, &mut staged, eps, 0usize, 1usize, first, vs, f32_internal, true, true, true, 1usize, hidden, block, units);
    }
    sync_cube();
    if at.c_at == 1 && !c_early && fc < hidden {
        load_row::<F, N>(wd, row_of(lh + fc, nc, hot_c), &mut rc, lane, step, nc, lc);
    }
    if comptime!(kv_on && at.kv_at == 2) {
        kv_issue::<F, N>(kv_k, kv_v, l + head_from, kv_pos, &mut kv_regs, at.kv_n, kv_heads, comptime!(2 * half), cubes, units);
    }
    #[unroll]
    for s in 0..ahead_b {
        let f = fb + s * planes;
        if f < inter {
            let g = plane_sum(dot_at::<F, N>(&rg, s * lb, &staged, lane, nb, lb, vs));
            let u = plane_sum(dot_at::<F, N>(&ru, s * lb, &staged, lane, nb, lb, vs));
            if lane == 0 {
                let a = F::cast_from(silu_mul_value::<F>(g, u, f32_internal));
                act[f] = a;
                if tags {
                    publish::<F>(bar, act_at + f, a, tag);
                }
            }
        }
    }
    // Features past those held (planes wider than `plane_min`): one at a time.
    let mut fi = fb + ahead_b * planes;
    while fi < inter {
        load_at::<F, N>(wg, row_of(li + fi, nb, hot_b), &mut rg, 0usize, lane, step, nb, lb);
        load_at::<F, N>(wu, row_of(li + fi, nb, hot_b), &mut ru, 0usize, lane, step, nb, lb);
        let g = plane_sum(dot_at::<F, N>(&rg, 0usize, &staged, lane, nb, lb, vs));
        let u = plane_sum(dot_at::<F, N>(&ru, 0usize, &staged, lane, nb, lb, vs));
        if lane == 0 {
            let a = F::cast_from(silu_mul_value::<F>(g, u, f32_internal));
            act[fi] = a;
            if tags {
                publish::<F>(bar, act_at + fi, a, tag);
            }
        }
        fi += planes;
    }
    if comptime!(kv_on && at.kv_at == 2) {
        kv_use::<F, N>(&kv_regs, sink, at.kv_n);
    }
    // (`late_loads`: after the barrier's release fence, which would otherwise wait for them.
    // With `tags` the barrier has no fence: C re-reads any of its words not there yet.)
    phase_release(bar, cubes, barrier, late_loads, tags);
    if !c_early && at.c_at == 0 && fc < hidden {
        load_row::<F, N>(wd, row_of(lh + fc, nc, hot_c), &mut rc, lane, step, nc, lc);
    }
    if then_qkv && d_early {
        #[unroll]
        for s in 0..ahead_d {
            load_qkv::<F, N>(wq, wk, wv, row_of(fd + s * planes, 1usize, hot_d), l + head_from, nq, nk, nqkv, &mut rq, s * lb, lane, nb, lb);
        }
    }
    phase_barrier(bar, cubes, barrier, late_loads, tags, probe);
    if then_qkv && at.d_at == 2 && !d_early {
        #[unroll]
        for s in 0..ahead_d {
            load_qkv::<F, N>(wq, wk, wv, row_of(fd + s * planes, 1usize, hot_d), l + head_from, nq, nk, nqkv, &mut rq, s * lb, lane, nb, lb);
        }
    }

    // C: down_proj.
    if tags {
        let per = comptime!(inter.div_ceil(block));
        let mut addr = Array::<usize>::new(per);
        let mut words = Array::<u32>::new(per);
        let mut vals = Array::<f32>::new(per);
        read_row(bar, act_at, tag, &mut addr, &mut words, 0usize, inter, block);
        await_words(bar, &addr, &mut words, &mut vals, tag, per);
        stage_vals::<F>(&vals, 0usize, 0usize, (UNIT_POS_X as usize) < block, o, gamma, &mut staged, eps, false, vs, f32_internal, false, false, false, inter, block, block);
    } else {
        stage_rows::<F>(&*act, &*act, o, gamma, &mut staged, eps, 0usize, 1usize, false, vs, f32_internal, false, false, false, 1usize, inter, block, block);
    }
    sync_cube();
    if then_qkv && at.d_at == 1 && !d_early {
        #[unroll]
        for s in 0..ahead_d {
            load_qkv::<F, N>(wq, wk, wv, row_of(fd + s * planes, 1usize, hot_d), l + head_from, nq, nk, nqkv, &mut rq, s * lb, lane, nb, lb);
        }
    }
    if comptime!(kv_on && at.kv_at == 3) {
        kv_issue::<F, N>(kv_k, kv_v, l + head_from, kv_pos, &mut kv_regs, at.kv_n, kv_heads, comptime!(2 * half), cubes, units);
    }
    let mut fj = fc;
    while fj < hidden {
        let mut acc = Array::<f32>::new(1usize);
        acc[0] = 0.0f32;
        dot_regs::<F, N>(&rc, &staged, &mut acc, lane, nc, 1usize, lc, vs);
        let next = fj + planes;
        if next < hidden {
            load_row::<F, N>(wd, row_of(lh + next, nc, hot_c), &mut rc, lane, step, nc, lc);
        }
        let g = plane_sum(acc[0]);
        if lane == 0 {
            let d = F::cast_from(g);
            out[fj] = d;
            if tags && then_qkv {
                publish::<F>(bar, act_at + inter + fj, d, tag);
            }
        }
        fj = next;
    }
    if comptime!(kv_on && at.kv_at == 3) {
        kv_use::<F, N>(&kv_regs, sink, at.kv_n);
    }
    if then_qkv {
        next_phases::<F, N>(
            residual, &*sum, &*out, gamma_in, wq, wk, wv, q_weight, k_weight, cos, sin, raw, stream, q_out, k_cache, v_cache, state, kv_k, kv_v, attn_out, pf0, pf1, pf2, pf3, sink, bar, &mut staged, &mut rq, wo, wg, wu, wd,
            eps_in, qk_eps, scale, fd, planes, first, tag, l + head_from, l + 1, l + 1 < layers, l == 0, &mut carried, at, ahead_b, f32_internal, hidden, inter, cubes, block, units, plane_min, barrier, heads, kv_heads, half, ahead_d, comptime!(d_early || at.d_at > 0), attend, late_loads, tags, e_barrier, hold, e_fence, probe, attn_at, layers, false,
        );
    }
    }
    // `pre` alone (no layer) took no barrier: every cube moves the counter on by one ticket, one
    // round in all, so that the next launch tags its words with another round than this one's.
    // (Comptime and runtime conditions nested, not joined.)
    if comptime!(layers == 0) {
        if UNIT_POS == 0 {
            bar[0].fetch_add(1u32);
        }
    }
}

/// Phases D and E (see [`decode_mlp_kernel`]), from C's end: the third barrier, the next
/// layer's residual add + norm + q/k/v, the fourth barrier (see `e_barrier`), QK-norm + RoPE (+ the attention
/// with `attend.on`).
#[cube]
#[allow(clippy::too_many_arguments, clippy::collapsible_if)]
fn next_phases<F: Float, N: Size>(
    residual: &Tensor<F>,
    sum: &Tensor<F>,
    out: &Tensor<F>,
    gamma_in: &Tensor<F>,
    wq: &Tensor<Vector<F, N>>,
    wk: &Tensor<Vector<F, N>>,
    wv: &Tensor<Vector<F, N>>,
    q_weight: &Tensor<F>,
    k_weight: &Tensor<F>,
    cos: &Tensor<f32>,
    sin: &Tensor<f32>,
    raw: &mut Tensor<F>,
    stream: &mut Tensor<F>,
    q_out: &mut Tensor<F>,
    k_cache: &mut Tensor<F>,
    v_cache: &mut Tensor<F>,
    state: &Tensor<u32>,
    kv_k: &Tensor<Vector<F, N>>,
    kv_v: &Tensor<Vector<F, N>>,
    attn_out: &mut Tensor<F>,
    pf0: &Tensor<Vector<F, N>>,
    pf1: &Tensor<Vector<F, N>>,
    pf2: &Tensor<Vector<F, N>>,
    pf3: &Tensor<Vector<F, N>>,
    sink: &mut Tensor<f32>,
    bar: &Tensor<Atomic<u32>>,
    staged: &mut Shared<[f32]>,
    rq: &mut Array<Vector<F, N>>,
    wo: &Tensor<Vector<F, N>>,
    wg: &Tensor<Vector<F, N>>,
    wu: &Tensor<Vector<F, N>>,
    wd: &Tensor<Vector<F, N>>,
    eps_in: f32,
    qk_eps: f32,
    scale: f32,
    fd: usize,
    planes: usize,
    first: bool,
    tag: u32,
    hl: usize,
    next_a: usize,
    has_next: bool,
    first_iter: bool,
    carried: &mut Array<f32>,
    #[comptime] at: LoadPoints,
    #[comptime] ahead_b: usize,
    #[comptime] f32_internal: bool,
    #[comptime] hidden: usize,
    #[comptime] inter: usize,
    #[comptime] cubes: u32,
    #[comptime] block: usize,
    #[comptime] units: usize,
    #[comptime] plane_min: usize,
    #[comptime] barrier: u32,
    #[comptime] heads: usize,
    #[comptime] kv_heads: usize,
    #[comptime] half: usize,
    #[comptime] ahead_d: usize,
    #[comptime] d_early: bool,
    #[comptime] attend: AttendPhase,
    #[comptime] late_loads: bool,
    #[comptime] tags: bool,
    #[comptime] e_barrier: bool,
    #[comptime] hold: bool,
    #[comptime] e_fence: bool,
    #[comptime] probe: u32,
    #[comptime] attn_at: usize,
    #[comptime] layers: usize,
    #[comptime] from_x: bool,
) {
    let hot_d = comptime!(probe & (PROBE_HOT_WEIGHTS | PROBE_HOT_D) != 0);
    let vs = wq.vector_size();
    let nb = hidden / vs;
    let lb = comptime!((hidden / vs).div_ceil(plane_min));
    let nq = comptime!(heads * 2 * half);
    let nk = comptime!(kv_heads * 2 * half);
    let nqkv = comptime!((heads + 2 * kv_heads) * 2 * half);
    let lane = UNIT_POS_PLANE as usize;
    let pos = state[1] as usize;
    // This layer's caches in the stacked `[layers, kv_heads, capacity, hd]` ones.
    let kc_at = hl * k_cache.stride(0);
    let vc_at = hl * v_cache.stride(0);
    let qkv_at = comptime!(TAGS + 2 * hidden + inter);
    if !from_x {
        phase_release(bar, cubes, barrier, late_loads, tags);
    }
    if !d_early {
        #[unroll]
        for s in 0..ahead_d {
            load_qkv::<F, N>(wq, wk, wv, row_of(fd + s * planes, 1usize, hot_d), hl, nq, nk, nqkv, rq, s * lb, lane, nb, lb);
        }
    }
    // (As B's: the residual and the norm's weight before the barrier, with `tags` and `hold`.)
    let per_h = comptime!(hidden.div_ceil(block));
    let mut res_d = Array::<f32>::new(per_h);
    let mut gam_d = Array::<f32>::new(per_h);
    if (tags && hold) || from_x {
        hold_layer_inputs::<F>(residual, gamma_in, &*carried, first_iter, hl, &mut res_d, &mut gam_d, hidden, block);
    }
    if !from_x {
        phase_barrier(bar, cubes, barrier, late_loads, tags, probe);
    }

    // D: the next layer's residual add + input norm + q/k/v, as `qkv_rope` stages and sums.
    if from_x {
        // (`pre`: the stream as it is, no add.)
        let per = comptime!(hidden.div_ceil(block));
        if comptime!(layers > 1) {
            #[unroll]
            for i in 0..per {
                carried[i] = res_d[i];
            }
        }
        stage_vals_with::<F>(&res_d, &gam_d, 0usize, 0usize, (UNIT_POS_X as usize) < block, stream, staged, eps_in, first, vs, f32_internal, true, true, false, hidden, block, units);
    } else if tags {
        // `sum` again from its operands (cube 0 wrote it without a barrier since), then down's
        // output as its words arrive: `input`'s `sum + out`, rounded.
        let per = comptime!(hidden.div_ceil(block));
        // [o's words | out's words], awaited together.
        let mut addr = Array::<usize>::new(comptime!(2 * per));
        let mut words = Array::<u32>::new(comptime!(2 * per));
        let mut got = Array::<f32>::new(comptime!(2 * per));
        read_row(bar, comptime!(TAGS), tag, &mut addr, &mut words, 0usize, hidden, block);
        read_row(bar, comptime!(TAGS + hidden + inter), tag, &mut addr, &mut words, per, hidden, block);
        await_words(bar, &addr, &mut words, &mut got, tag, comptime!(2 * per));
        if !hold {
            hold_layer_inputs::<F>(residual, gamma_in, &*carried, first_iter, hl, &mut res_d, &mut gam_d, hidden, block);
        }
        let mut vals = Array::<f32>::new(per);
        #[unroll]
        for i in 0..per {
            let k = UNIT_POS_X as usize + i * block;
            vals[i] = 0.0f32;
            if (UNIT_POS_X as usize) < block && k < hidden {
                let s = f32::cast_from(F::cast_from(res_d[i] + got[i]));
                vals[i] = f32::cast_from(F::cast_from(s + got[per + i]));
            }
        }
        if comptime!(layers > 1) {
            #[unroll]
            for i in 0..per {
                carried[i] = vals[i];
            }
        }
        stage_vals_with::<F>(&vals, &gam_d, 0usize, 0usize, (UNIT_POS_X as usize) < block, stream, staged, eps_in, first, vs, f32_internal, true, true, false, hidden, block, units);
    } else {
        stage_rows::<F>(out, sum, stream, gamma_in, staged, eps_in, 0usize, 1usize, first, vs, f32_internal, true, true, false, 1usize, hidden, block, units);
    }
    sync_cube();
    #[unroll]
    for s in 0..ahead_d {
        let f = fd + s * planes;
        if f < nqkv {
            let g = plane_sum(dot_at::<F, N>(&*rq, s * lb, &*staged, lane, nb, lb, vs));
            emit_qkv::<F>(g, f, nq, nk, 2 * half, pos, lane, raw, v_cache, vc_at, bar, qkv_at, tag, tags);
        }
    }
    let mut fi = fd + ahead_d * planes;
    while fi < nqkv {
        load_qkv::<F, N>(wq, wk, wv, row_of(fi, 1usize, hot_d), hl, nq, nk, nqkv, rq, 0usize, lane, nb, lb);
        let g = plane_sum(dot_at::<F, N>(&*rq, 0usize, &*staged, lane, nb, lb, vs));
        emit_qkv::<F>(g, fi, nq, nk, 2 * half, pos, lane, raw, v_cache, vc_at, bar, qkv_at, tag, tags);
        fi += planes;
    }
    // E: one cube per q and k head (its operands loaded before the barrier); with `attend`,
    // one cube per q head norms and rotates its q and its KV head's k, writes both (the KV
    // head's cubes write the same bits), then attends over the cache; the other cubes read
    // `prefetch` tensors into L2.
    let c = CUBE_POS_X as usize;
    let on = attend.on;
    let group = comptime!(if heads >= kv_heads && kv_heads > 0 { heads / kv_heads } else { 1usize });
    let mine = if on { c < heads } else { c < heads + kv_heads };
    let unit = UNIT_POS_X as usize;
    let active = mine && unit < half;
    let mut w1 = 0.0f32;
    let mut w2 = 0.0f32;
    let mut k1 = 0.0f32;
    let mut k2 = 0.0f32;
    let mut c1 = 0.0f32;
    let mut s1 = 0.0f32;
    let mut c2 = 0.0f32;
    let mut s2 = 0.0f32;
    // This layer's QK-norm weights in the stacked `[layers * hd]` rows.
    let lq = hl * comptime!(2 * half);
    if active {
        c1 = cos[unit];
        s1 = sin[unit];
        c2 = cos[unit + half];
        s2 = sin[unit + half];
        if c < heads {
            w1 = f32::cast_from(q_weight[lq + unit]);
            w2 = f32::cast_from(q_weight[lq + unit + half]);
        } else {
            w1 = f32::cast_from(k_weight[lq + unit]);
            w2 = f32::cast_from(k_weight[lq + unit + half]);
        }
        if on {
            k1 = f32::cast_from(k_weight[lq + unit]);
            k2 = f32::cast_from(k_weight[lq + unit + half]);
        }
    }
    // With `tags`, no barrier here: E's inputs are a few words a head, which only its cubes
    // wait for (`await_head`); the other cubes go on to the L2 prefetch at once.
    if !tags || e_barrier {
        phase_barrier(bar, cubes, barrier, false, tags, probe);
    }
    if mine {
        // The cube-uniform branch: every unit of the cube takes part in the norm's tree.
        let mut x1 = 0.0f32;
        let mut x2 = 0.0f32;
        // With `tags` and `on`: [q/k pair, the KV head's k pair, its v pair], awaited together.
        let mut got = Array::<f32>::new(6usize);
        // `at.kv_early`: the attention's first key row and value vectors of the keys before
        // this step's (which this cube writes below) issued now, before the wait for the words.
        let early = comptime!(on && at.kv_early);
        let kvs = kv_k.vector_size();
        let hd_vecs = comptime!(2 * half / kvs);
        let mut kr = Array::<Vector<F, N>>::new(comptime!(if early { hd_vecs } else { 1usize }));
        let mut xs = Array::<Vector<F, N>>::new(comptime!(if early { attend.ahead } else { 1usize }));
        if early {
            let g = c / group;
            attend_issue::<F, N>(kv_k, kv_v, hl * kv_k.stride(0) + g * kv_k.stride(1), hl * kv_v.stride(0) + g * kv_v.stride(1), pos, &mut kr, &mut xs, comptime!(2 * half), units, attend.partial_len, attend.ahead);
        }
        if tags && active {
            await_head(bar, qkv_at, c, c / group, heads, kv_heads, unit, tag, &mut got, on, half, comptime!(probe & PROBE_NO_WAIT == 0));
        }
        if active {
            if tags {
                x1 = got[0];
                x2 = got[1];
            } else {
                x1 = f32::cast_from(raw[c * 2 * half + unit]);
                x2 = f32::cast_from(raw[c * 2 * half + unit + half]);
            }
        }
        if !on {
            rope_head::<F>(x1, x2, w1, w2, c1, s1, c2, s2, q_out, k_cache, kc_at, c, heads, pos, qk_eps, active, unit, f32_internal, half, units);
        } else {
            let g = c / group;
            let mut y1 = 0.0f32;
            let mut y2 = 0.0f32;
            if active {
                if tags {
                    y1 = got[2];
                    y2 = got[3];
                    // The KV head's value row too, into the cache (the same bits as phase D's
                    // write there, which no fence makes visible to this cube).
                    let dst = vc_at + g * v_cache.stride(1) + pos * v_cache.stride(2);
                    v_cache[dst + unit] = F::cast_from(got[4]);
                    v_cache[dst + unit + half] = F::cast_from(got[5]);
                } else {
                    y1 = f32::cast_from(raw[(heads + g) * 2 * half + unit]);
                    y2 = f32::cast_from(raw[(heads + g) * 2 * half + unit + half]);
                }
            }
            // The q head's and the KV head's norms through one tree (each sum `rope_head`'s).
            let (sq, sk) = block_sum_pair(x1 * x1 + x2 * x2, y1 * y1 + y2 * y2, units);
            put_head::<F>(x1, x2, w1, w2, c1, s1, c2, s2, head_inv(sq, qk_eps, half), q_out, k_cache, kc_at, c, heads, pos, active, unit, f32_internal, half);
            put_head::<F>(y1, y2, k1, k2, c1, s1, c2, s2, head_inv(sk, qk_eps, half), q_out, k_cache, kc_at, heads + g, heads, pos, active, unit, f32_internal, half);
            // This cube's q, key row and (with `tags`) value row, written above, for the loads of
            // its other units below: a cube barrier orders the cube's global accesses for the
            // cube (`e_fence`: a device-scope fence on both sides too, `sync_storage`). Without
            // `tags` the value row is other cubes' write (phase D's): the fenced path keeps the
            // fence, as measured and checked before (it is not the speed path).
            if e_fence || !tags {
                sync_storage();
            } else {
                sync_cube();
            }
            let hd = comptime!(2 * half);
            if comptime!(probe & PROBE_NO_ATTENTION == 0) {
                let own = if early {
                    attend_loaded::<F, N>(
                        &*q_out, kv_k, kv_v, attn_out, c * hd, c * hd, hl * kv_k.stride(0) + g * kv_k.stride(1), hl * kv_v.stride(0) + g * kv_v.stride(1), pos, pos + 1, scale, &mut kr, &mut xs, f32_internal, attend.max_keys, hd, units,
                        attend.partial_len, attend.planes, attend.ahead, comptime!(probe & PROBE_NO_VALUES == 0),
                    )
                } else {
                    attend_row::<F, N>(
                        &*q_out, kv_k, kv_v, attn_out, c * hd, c * hd, hl * kv_k.stride(0) + g * kv_k.stride(1), hl * kv_v.stride(0) + g * kv_v.stride(1), pos + 1, scale, f32_internal, attend.max_keys, hd, units,
                        attend.partial_len, attend.planes, attend.ahead, comptime!(probe & PROBE_NO_VALUES == 0),
                    )
                };
                // With `layers` > 1, the next iteration's phase A reads the output from its
                // words: each unit below `hd` publishes the element it wrote (`own`).
                if comptime!(layers > 1 || from_x) {
                    if has_next && unit < hd {
                        publish::<F>(bar, attn_at + c * hd + unit, F::cast_from(own), tag);
                    }
                }
            } else {
                // (The probe: zeros as the output's words, so that the next iteration's wait ends.)
                if comptime!(layers > 1 || from_x) {
                    if has_next && unit < hd {
                        publish::<F>(bar, attn_at + c * hd + unit, F::new(0.0), tag);
                    }
                }
            }
        }
    } else if on && comptime!((layers > 1 || from_x) && at.e_touch) && has_next {
        // The rows the head cubes' planes load first in the next iteration (o_proj's, gate's
        // and up's as `at.e_loads` has the others load them here) into L2.
        let (cube, idle) = (c - heads, cubes as usize - heads);
        let per_cube = (CUBE_DIM_X / PLANE_DIM) as usize;
        let hp_now = heads * per_cube;
        // (With `layers` > 1 o_proj's input is the attention output: `heads * hd` wide.)
        let vw = wo.vector_size();
        let (na, nb) = (comptime!(heads * 2 * half) / vw, hidden / vw);
        let planes = cubes as usize * per_cube;
        let lh = next_a * hidden;
        let li = next_a * inter;
        let mut acc = 0.0f32;
        if comptime!(at.e_loads >= 1) {
            acc += touch_plane_rows::<F, N>(wo, lh, na, hp_now, 0usize, planes, hidden, cube, idle, 1usize, units);
        }
        if comptime!(at.e_loads >= 2) {
            acc += touch_plane_rows::<F, N>(wg, li, nb, hp_now, hidden % planes, planes, inter, cube, idle, ahead_b, units);
        }
        if comptime!(at.e_loads >= 3) {
            acc += touch_plane_rows::<F, N>(wu, li, nb, hp_now, hidden % planes, planes, inter, cube, idle, ahead_b, units);
        }
        if comptime!(at.e_touch_qkv & 4 != 0) {
            let nc = inter / vw;
            acc += touch_span::<F, N>(wd, next_a * hidden * nc, hidden * nc, cube, idle, units);
        }
        if comptime!(at.e_touch_qkv & 1 != 0) {
            acc += touch_span::<F, N>(wq, (hl + 1) * nq * nb, nq * nb, cube, idle, units);
        }
        if comptime!(at.e_touch_qkv & 2 != 0) {
            acc += touch_span::<F, N>(wk, (hl + 1) * nk * nb, nk * nb, cube, idle, units);
            acc += touch_span::<F, N>(wv, (hl + 1) * nk * nb, nk * nb, cube, idle, units);
        }
        // Never true for finite weights; keeps the loads alive.
        if acc.is_nan() {
            sink[0] = acc;
        }
    } else if on && attend.prefetch > 0 {
        if !has_next {
        let (cube, idle) = (c - heads, cubes as usize - heads);
        let mut acc = touch::<F, N>(pf0, cube, idle, units);
        if attend.prefetch > 1 {
            acc += touch::<F, N>(pf1, cube, idle, units);
        }
        if attend.prefetch > 2 {
            acc += touch::<F, N>(pf2, cube, idle, units);
        }
        if attend.prefetch > 3 {
            acc += touch::<F, N>(pf3, cube, idle, units);
        }
        // Never true for finite weights; keeps the loads alive.
        if acc.is_nan() {
            sink[0] = acc;
        }
        }
    }
}

/// A normed phase's inputs that no cube of the launch writes, this unit's elements of them
/// (`gemv::kernel::hold_row`'s): the residual into `res` (`residual` with `from_res`, the first
/// iteration's; else `carried`, the stream phase D left), layer `l`'s norm weight (of the stacked
/// `gamma`) into `gam`.
#[cube]
#[allow(clippy::too_many_arguments)]
fn hold_layer_inputs<F: Float>(
    residual: &Tensor<F>,
    gamma: &Tensor<F>,
    carried: &Array<f32>,
    from_res: bool,
    l: usize,
    res: &mut Array<f32>,
    gam: &mut Array<f32>,
    #[comptime] hidden: usize,
    #[comptime] block: usize,
) {
    let per = comptime!(hidden.div_ceil(block));
    if from_res {
        hold_row::<F>(residual, res, true, hidden, block);
    } else {
        #[unroll]
        for i in 0..per {
            res[i] = carried[i];
        }
    }
    let unit = UNIT_POS_X as usize;
    let base = l * hidden;
    #[unroll]
    for i in 0..per {
        let k = unit + i * block;
        gam[i] = 0.0f32;
        if unit < block && k < hidden {
            gam[i] = f32::cast_from(gamma[base + k]);
        }
    }
}

/// Whether this is cube 0 (which writes the F copies of the stream).
#[cube]
fn first_cube() -> bool {
    CUBE_POS_X == 0
}

/// The release half of a fenced barrier that ends a phase, before the next phase's first weight
/// loads, where `released` (`late_loads`: [`grid_arrive_kind`]); nothing with `tags`, whose
/// barriers have no release.
#[cube]
fn phase_release(bar: &Tensor<Atomic<u32>>, #[comptime] cubes: u32, #[comptime] barrier: u32, #[comptime] released: bool, #[comptime] tags: bool) {
    if released && !tags {
        grid_arrive_kind(bar, cubes, barrier);
    }
}

/// Reads into L2 (idle cube `cube` of `idle`, `units` units each) the first rows planes
/// `0..hp` of a grid of `planes` load of a matrix of `rows` rows of `n` vectors (from row
/// `base`: a layer of a stacked matrix): plane `p`'s rows `(p + planes - shift) % planes + s *
/// planes` for `s < count` (the deal of `decode_mlp_kernel`: `shift` is where the product's
/// features start in it). Returns a sum of one element a vector (keeps the loads alive).
#[cube]
#[allow(clippy::too_many_arguments)]
fn touch_plane_rows<F: Float, N: Size>(
    w: &Tensor<Vector<F, N>>,
    base: usize,
    n: usize,
    hp: usize,
    shift: usize,
    planes: usize,
    rows: usize,
    cube: usize,
    idle: usize,
    #[comptime] count: usize,
    #[comptime] units: usize,
) -> f32 {
    let total = hp * count * n;
    let mut acc = 0.0f32;
    let mut i = cube * units + UNIT_POS_X as usize;
    while i < total {
        let r = i / n;
        let p = r % hp;
        let f = (p + planes - shift) % planes + (r / hp) * planes;
        if f < rows {
            acc += f32::cast_from(w[(base + f) * n + i % n].extract(0usize));
        }
        i += idle * units;
    }
    acc
}

/// Where the tagged words (`crate::tagged`) of a launch with `tags` start in `bar`, after the
/// barrier's words: A's `o` (`hidden` words), B's `act` (`inter`), C's `out` (`hidden`, with
/// `then_qkv`), D's q/k/v features (`(heads + 2 * kv_heads) * hd`). See [`super::sync_words`].
pub(super) const TAGS: usize = BARRIER_WORDS;

/// Timing probes (`probe`, a mask; [`super::DecodeMlpOptions::probe`]): each makes the launch
/// do more or less than its job, so that its results are wrong; for measuring what a part
/// costs. One more unfenced grid barrier before each phase barrier:
pub const PROBE_EXTRA_BARRIER: u32 = 1;
/// every weight load reads its matrix's first row (hot in L1/L2): the launch without its
/// weights' DRAM traffic;
pub const PROBE_HOT_WEIGHTS: u32 = 2;
/// phase E's cubes skip the attention over the cache (its output is left as it was);
pub const PROBE_NO_ATTENTION: u32 = 4;
/// phase E's head cubes take their words as first read, without waiting for this round's (so
/// they start without waiting for phase D's last cubes);
pub const PROBE_NO_WAIT: u32 = 8;
/// phase E's attention skips its weighted values (its output is zeros);
pub const PROBE_NO_VALUES: u32 = 16;
/// [`PROBE_HOT_WEIGHTS`] for one phase's weights only: A's (o_proj),
pub const PROBE_HOT_A: u32 = 32;
/// B's (gate and up),
pub const PROBE_HOT_B: u32 = 64;
/// C's (down),
pub const PROBE_HOT_C: u32 = 128;
/// D's (the next layer's q, k and v).
pub const PROBE_HOT_D: u32 = 256;

/// The first vector of row `f` of a matrix of `n` vectors a row, or row 0's with `hot`
/// ([`PROBE_HOT_WEIGHTS`]).
#[cube]
fn row_of(f: usize, n: usize, #[comptime] hot: bool) -> usize {
    let mut at = f * n;
    if hot {
        at = 0usize;
    }
    at
}

/// The grid barrier that ends a phase, after the next phase's first weight loads: unfenced with
/// `tags` (the words order themselves); else the fenced `barrier`, its second half where
/// `released` (the caller ran its release, `grid_arrive_kind`, before those loads).
#[cube]
fn phase_barrier(bar: &Tensor<Atomic<u32>>, #[comptime] cubes: u32, #[comptime] barrier: u32, #[comptime] released: bool, #[comptime] tags: bool, #[comptime] probe: u32) {
    if comptime!(probe & PROBE_EXTRA_BARRIER != 0) {
        grid_sync_unfenced(bar, cubes);
    }
    if tags {
        grid_sync_unfenced(bar, cubes);
    } else if released {
        grid_wait_kind(bar, cubes, barrier);
    } else {
        grid_sync_kind(bar, cubes, barrier);
    }
}

/// First reads of unit `u < block`'s elements `u + i * block` (below `width`) of the tagged row
/// at `bar[at..]` into `words[from + i]`, their addresses into `addr[from + i]`, for
/// [`await_words`]; an element the unit does not stage counts as arrived (`tag`, value 0).
#[cube]
#[allow(clippy::too_many_arguments)]
fn read_row(bar: &Tensor<Atomic<u32>>, at: usize, tag: u32, addr: &mut Array<usize>, words: &mut Array<u32>, #[comptime] from: usize, #[comptime] width: usize, #[comptime] block: usize) {
    let per = comptime!(width.div_ceil(block));
    let unit = UNIT_POS_X as usize;
    #[unroll]
    for i in 0..per {
        let k = unit + i * block;
        addr[from + i] = at;
        words[from + i] = tag;
        if unit < block && k < width {
            addr[from + i] = at + k;
            words[from + i] = bar[at + k].load();
        }
    }
}

/// Phase E's tagged inputs for unit `unit < half` of head `c`'s cube (a q head, or with `!on`
/// a k head at `c >= heads`): its pair `(unit, unit + half)` of head `c`'s raw q/k features;
/// with `on`, also KV head `g`'s key pair and value pair. All read at once and awaited
/// together ([`await_words`]); entries not needed are zeros. Without `wait` (the
/// [`PROBE_NO_WAIT`] timing probe), the words' values as first read, whatever their round.
#[cube]
#[allow(clippy::too_many_arguments)]
fn await_head(
    bar: &Tensor<Atomic<u32>>,
    at: usize,
    c: usize,
    g: usize,
    heads: usize,
    kv_heads: usize,
    unit: usize,
    tag: u32,
    vals: &mut Array<f32>,
    #[comptime] on: bool,
    #[comptime] half: usize,
    #[comptime] wait: bool,
) {
    let hd = comptime!(2 * half);
    let mut addr = Array::<usize>::new(6usize);
    let mut words = Array::<u32>::new(6usize);
    addr[0] = at + c * hd + unit;
    addr[1] = at + c * hd + unit + half;
    addr[2] = at + (heads + g) * hd + unit;
    addr[3] = at + (heads + g) * hd + unit + half;
    addr[4] = at + (heads + kv_heads + g) * hd + unit;
    addr[5] = at + (heads + kv_heads + g) * hd + unit + half;
    words[0] = bar[addr[0]].load();
    words[1] = bar[addr[1]].load();
    #[unroll]
    for i in 2..6usize {
        words[i] = tag;
    }
    if on {
        #[unroll]
        for i in 2..6usize {
            words[i] = bar[addr[i]].load();
        }
    }
    if wait {
        await_words(bar, &addr, &mut words, vals, tag, 6usize);
    } else {
        #[unroll]
        for i in 0..6usize {
            vals[i] = value_of(words[i]);
        }
    }
}

/// Where down's and the next layer's q/k/v's first weights load (comptime;
/// [`super::DecodeMlpOptions::c_at`], [`super::DecodeMlpOptions::d_at`]), unless `c_early` /
/// `d_early` load them earlier still: 0 after the previous phase's dots; 1 after its staging,
/// before its dots; 2 after the barrier that starts it, before its staging.
#[derive(CubeType, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct LoadPoints {
    #[cube(comptime)]
    pub c_at: u32,
    #[cube(comptime)]
    pub d_at: u32,
    /// With `layers` > 1: how many of a plane's first A and B weights (o_proj's row, then gate's,
    /// then up's) it loads at the top of an iteration after the first, during the previous
    /// iteration's phase E, rather than after the grid barrier that starts phase A.
    #[cube(comptime)]
    pub e_loads: u32,
    /// With `layers` > 1: phase E's idle cubes read into L2 the rows of those weights that the
    /// head cubes' planes load (at the top of the next iteration, after their attention).
    #[cube(comptime)]
    pub e_touch: bool,
    /// With `layers` > 1: an unfenced grid barrier before phase A's wait for the attention
    /// output's words (without it, every unit polls its words).
    #[cube(comptime)]
    pub a_barrier: bool,
    /// With `layers` > 1 and `e_touch`: phase E's idle cubes also read into L2 the next
    /// iteration's weights of a mask: its q rows (1), k and v rows (2), down's (4).
    #[cube(comptime)]
    pub e_touch_qkv: u32,
    /// With `then_qkv` and `attend.on`: where the units read into L2 the cached key and value
    /// rows (positions before this step's, every KV head) that phase E's attention reads: 0
    /// nowhere, 1 in phase A, 2 in B, 3 in C, each issued after the phase's staging and used
    /// after its dots (so no unit waits for them). Without it the attention's reads come from
    /// DRAM behind the idle cubes' weight loads of phase E.
    #[cube(comptime)]
    pub kv_at: u32,
    /// With `kv_at`: the key and the value vectors a unit reads (the grid covers `kv_n *
    /// cubes * units` vectors of each; positions past that are not read ahead).
    #[cube(comptime)]
    pub kv_n: usize,
    /// With `attend.on`: phase E's head cubes issue the attention's first cache loads (of the
    /// keys before this step's) before they wait for their head's words.
    #[cube(comptime)]
    pub kv_early: bool,
}

/// Phase E's attention (comptime): `on` = each q head's cube attends after its norm + RoPE;
/// the row kernel's `max_keys`, `partial_len`, `planes` and `ahead` (`attention::kernel::attend_row`);
/// `prefetch` tensors the other cubes read into L2.
#[derive(CubeType, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct AttendPhase {
    #[cube(comptime)]
    pub on: bool,
    #[cube(comptime)]
    pub max_keys: usize,
    #[cube(comptime)]
    pub partial_len: usize,
    #[cube(comptime)]
    pub planes: bool,
    #[cube(comptime)]
    pub prefetch: usize,
    #[cube(comptime)]
    pub ahead: usize,
}

/// Loads into `regs` this unit's share of layer `hl`'s cached key rows (`regs[..n]`) and value
/// rows (`regs[n..]`) at positions `0..pos` of every KV head (the stacked `[layers, kv_heads,
/// capacity, hd]` caches, read in vectors), dealt over the grid's units; zeros past them. What
/// the attention will read, into L2; [`kv_use`] consumes the registers later.
#[cube]
#[allow(clippy::too_many_arguments)]
fn kv_issue<F: Float, N: Size>(
    kv_k: &Tensor<Vector<F, N>>,
    kv_v: &Tensor<Vector<F, N>>,
    hl: usize,
    pos: usize,
    regs: &mut Array<Vector<F, N>>,
    #[comptime] n: usize,
    #[comptime] kv_heads: usize,
    #[comptime] hd: usize,
    #[comptime] cubes: u32,
    #[comptime] units: usize,
) {
    let vs = kv_k.vector_size();
    let nvec = comptime!(hd / vs);
    let per_head = pos * nvec;
    let total = kv_heads * per_head;
    let gid = CUBE_POS_X as usize * units + UNIT_POS_X as usize;
    let grid = comptime!(cubes as usize * units);
    let (k_layer, k_head, k_row) = (hl * kv_k.stride(0) / vs, kv_k.stride(1) / vs, kv_k.stride(2) / vs);
    let (v_layer, v_head, v_row) = (hl * kv_v.stride(0) / vs, kv_v.stride(1) / vs, kv_v.stride(2) / vs);
    #[unroll]
    for t in 0..n {
        let i = gid + t * grid;
        regs[t] = Vector::<F, N>::new(F::new(0.0));
        regs[n + t] = Vector::<F, N>::new(F::new(0.0));
        if i < total {
            let g = i / per_head;
            let r = i % per_head;
            let (row, e) = (r / nvec, r % nvec);
            regs[t] = kv_k[k_layer + g * k_head + row * k_row + e];
            regs[n + t] = kv_v[v_layer + g * v_head + row * v_row + e];
        }
    }
}

/// Uses the vectors [`kv_issue`] loaded (one element of each into a sum, written to `sink` only
/// if NaN), so that the loads are kept; placed where they have arrived, no unit waits on them.
#[cube]
fn kv_use<F: Float, N: Size>(regs: &Array<Vector<F, N>>, sink: &mut Tensor<f32>, #[comptime] n: usize) {
    let mut acc = 0.0f32;
    #[unroll]
    for t in 0..2 * n {
        acc += f32::cast_from(regs[t].extract(0usize));
    }
    if acc.is_nan() {
        sink[0] = acc;
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
                acc += f32::cast_from(v.extract(e)) * staged[staged_at(0usize, e, k, nvec, vs)];
            }
        }
    }
    acc
}
