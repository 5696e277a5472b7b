//! `decode_mlp`'s phases D and E (the next layer's q/k/v and QK-norm + RoPE): which weight row a
//! q/k/v feature reads, where its sum goes, and one head's norm + rotation.

use cubecl::prelude::*;

use crate::gemv::kernel::load_at;
use crate::qk_norm_rope::kernel::norm_rope_pair;
use crate::reduce::block_sum;
use crate::tagged::publish;

/// Lane `lane`'s vectors of q/k/v feature `f` (rows of `wq`, then `wk`, then `wv`) of layer
/// `layer` of the stacked matrices (`[layers * nq, ..]`, `[layers * nk, ..]` x 2) into
/// `regs[at..at + loads]`, where `f < nqkv` (else leaves them).
#[cube]
#[allow(clippy::too_many_arguments)]
pub(super) fn load_qkv<F: Float, N: Size>(
    wq: &Tensor<Vector<F, N>>,
    wk: &Tensor<Vector<F, N>>,
    wv: &Tensor<Vector<F, N>>,
    f: usize,
    layer: usize,
    nq: usize,
    nk: usize,
    nqkv: usize,
    regs: &mut Array<Vector<F, N>>,
    at: usize,
    lane: usize,
    nvec: usize,
    #[comptime] loads: usize,
) {
    let step = PLANE_DIM as usize;
    if f < nq {
        load_at::<F, N>(wq, (layer * nq + f) * nvec, regs, at, lane, step, nvec, loads);
    } else if f < nq + nk {
        load_at::<F, N>(wk, (layer * nk + f - nq) * nvec, regs, at, lane, step, nvec, loads);
    } else if f < nqkv {
        load_at::<F, N>(wv, (layer * nk + f - nq - nk) * nvec, regs, at, lane, step, nvec, loads);
    }
}

/// Lane 0 stores q/k/v feature `f`'s sum `g` rounded to F: a q or k feature into `raw[f]`, a v
/// feature into the value cache row of its head at `pos` (from `cache_at`: the layer's cache in
/// a stacked one; as `qkv_rope`'s `emit`); with
/// `tags`, every feature also into its tagged word `bar[at + f]` (`crate::tagged`).
#[cube]
#[allow(clippy::too_many_arguments)]
pub(super) fn emit_qkv<F: Float>(
    g: f32,
    f: usize,
    nq: usize,
    nk: usize,
    hd: usize,
    pos: usize,
    lane: usize,
    raw: &mut Tensor<F>,
    v_cache: &mut Tensor<F>,
    cache_at: usize,
    bar: &Tensor<Atomic<u32>>,
    at: usize,
    tag: u32,
    #[comptime] tags: bool,
) {
    if lane == 0 {
        let value = F::cast_from(g);
        if f < nq + nk {
            raw[f] = value;
        } else {
            let j = f - nq - nk;
            let h = j / hd;
            let dst = cache_at + h * v_cache.stride(1) + pos * v_cache.stride(2) + j % hd;
            v_cache[dst] = value;
        }
        if tags {
            publish::<F>(bar, at + f, value, tag);
        }
    }
}

/// QK-norm + RoPE of head `c` (a q head below `heads`, else k head `c - heads`) from its raw
/// pair `(x1, x2)` on unit `unit < half` (`active`; the other units add zeros to the tree, so
/// the sum is `qkv_rope`'s), into `q_out` or the key cache at `pos` (from `cache_at`: the
/// layer's cache in a stacked one). Every unit of the cube
/// must call it.
#[cube]
#[allow(clippy::too_many_arguments)]
pub(super) fn rope_head<F: Float>(
    x1: f32,
    x2: f32,
    w1: f32,
    w2: f32,
    c1: f32,
    s1: f32,
    c2: f32,
    s2: f32,
    q_out: &mut Tensor<F>,
    k_cache: &mut Tensor<F>,
    cache_at: usize,
    c: usize,
    heads: usize,
    pos: usize,
    qk_eps: f32,
    active: bool,
    unit: usize,
    #[comptime] f32_internal: bool,
    #[comptime] half: usize,
    #[comptime] units: usize,
) {
    let sq = block_sum(x1 * x1 + x2 * x2, units);
    put_head::<F>(x1, x2, w1, w2, c1, s1, c2, s2, head_inv(sq, qk_eps, half), q_out, k_cache, cache_at, c, heads, pos, active, unit, f32_internal, half);
}

/// The QK-norm's scale of a head whose squares sum to `sq` (`2 * half` features).
#[cube]
pub(super) fn head_inv(sq: f32, qk_eps: f32, #[comptime] half: usize) -> f32 {
    let hd = comptime!(2 * half);
    1.0f32 / (sq / f32::cast_from(hd as u32) + qk_eps).sqrt()
}

/// [`rope_head`] after its sum: the pair normed by `inv` ([`head_inv`]), rotated and stored.
#[cube]
#[allow(clippy::too_many_arguments)]
pub(super) fn put_head<F: Float>(
    x1: f32,
    x2: f32,
    w1: f32,
    w2: f32,
    c1: f32,
    s1: f32,
    c2: f32,
    s2: f32,
    inv: f32,
    q_out: &mut Tensor<F>,
    k_cache: &mut Tensor<F>,
    cache_at: usize,
    c: usize,
    heads: usize,
    pos: usize,
    active: bool,
    unit: usize,
    #[comptime] f32_internal: bool,
    #[comptime] half: usize,
) {
    let hd = comptime!(2 * half);
    if active {
        let (o1, o2) = norm_rope_pair::<F>(x1, x2, w1, w2, c1, s1, c2, s2, inv, f32_internal);
        if c < heads {
            q_out[c * hd + unit] = F::cast_from(o1);
            q_out[c * hd + unit + half] = F::cast_from(o2);
        } else {
            let dst = cache_at + (c - heads) * k_cache.stride(1) + pos * k_cache.stride(2);
            k_cache[dst + unit] = F::cast_from(o1);
            k_cache[dst + unit + half] = F::cast_from(o2);
        }
    }
}
