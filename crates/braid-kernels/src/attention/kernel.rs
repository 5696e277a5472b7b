use cubecl::prelude::*;

use crate::reduce::round;
use crate::reduce::cube_reduce;

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
    pf0: &Tensor<Vector<F, N>>, // the first `prefetch` of these are read into L2 (any shape)
    pf1: &Tensor<Vector<F, N>>,
    pf2: &Tensor<Vector<F, N>>,
    pf3: &Tensor<Vector<F, N>>,
    sink: &mut Tensor<f32>, // [1] (written only if a prefetched sum is NaN)
    scale: f32,
    #[comptime] f32_internal: bool,
    #[comptime] past_from_state: bool,
    #[comptime] max_keys: usize,
    #[comptime] head_dim: usize,
    #[comptime] block: usize,
    #[comptime] partial_len: usize,
    #[comptime] prefetch: usize,
    #[comptime] planes: bool,
    #[comptime] ahead: usize,
    #[define(F)] _dtype: ElemType,
) {
    let bh = CUBE_POS_X as usize;
    // Cubes past the attention's (`prefetch`): a decode row's attention fills a few SMs and
    // leaves the rest idle; these cubes read the next ops' weights meanwhile, so those ops find
    // them in L2 instead of HBM.
    // `prefetch`: how many of `pf0..pf3` to read (0: none, no extra cubes).
    if prefetch > 0 {
        let attn_cubes = q.shape(0) * q.shape(1);
        if bh >= attn_cubes {
            let cube = bh - attn_cubes;
            let cubes = CUBE_COUNT_X as usize - attn_cubes;
            let mut acc = touch::<F, N>(pf0, cube, cubes, block);
            if prefetch > 1 {
                acc += touch::<F, N>(pf1, cube, cubes, block);
            }
            if prefetch > 2 {
                acc += touch::<F, N>(pf2, cube, cubes, block);
            }
            if prefetch > 3 {
                acc += touch::<F, N>(pf3, cube, cubes, block);
            }
            // Never true for finite weights; keeps the loads alive (their sum is "used").
            if acc.is_nan() {
                sink[0] = acc;
            }
            terminate!();
        }
    }
    let i = CUBE_POS_Y as usize;
    let heads = q.shape(1);
    let seq = q.shape(2);
    let kv_heads = k.shape(1);
    let b = bh / heads;
    let h = bh % heads;
    let g = h / (heads / kv_heads);
    let past = if past_from_state { state[1] } else { past };
    let q_base = ((b * heads + h) * seq + i) * head_dim;
    let out_base = (b * seq + i) * heads * head_dim + h * head_dim;
    let k_base = b * k.stride(0) + g * k.stride(1);
    let v_base = b * v.stride(0) + g * v.stride(1);
    let _ = attend_row::<F, N>(q, k, v, out, q_base, out_base, k_base, v_base, past as usize + i + 1, scale, f32_internal, max_keys, head_dim, block, partial_len, planes, ahead, true);
}

/// One query row's attention (the body of [`attention_kernel`]'s cubes): the row at
/// `q[q_base..q_base + head_dim]` over keys `0..n_keys` of the key and value rows starting at
/// `k_base`, `v_base` (elements; rows `k.stride(2)` apart), into `out[out_base..]`. Every unit of
/// the cube (`block` of them) must call it. `decode_mlp`'s last phase runs it too. `ahead`: 4,
/// 8 or 16 value vectors a unit has in flight (the same `ahead` gives the same bits). `values =
/// false` (a timing probe of `decode_mlp`'s, which makes the output wrong) skips the weighted
/// values (step 4): the output is then zeros. Returns, unrounded, the output element this unit
/// wrote last (element `unit` where `head_dim <= block`; 0 for a unit that wrote none), so that
/// a caller can publish it without reading it back. [`attend_issue`] then [`attend_loaded`].
#[cube]
#[allow(clippy::too_many_arguments)]
pub(crate) fn attend_row<F: Float, N: Size>(
    q: &Tensor<F>,
    k: &Tensor<Vector<F, N>>,
    v: &Tensor<Vector<F, N>>,
    out: &mut Tensor<F>,
    q_base: usize,
    out_base: usize,
    k_base: usize,
    v_base: usize,
    n_keys: usize,
    scale: f32,
    #[comptime] f32_internal: bool,
    #[comptime] max_keys: usize,
    #[comptime] head_dim: usize,
    #[comptime] block: usize,
    #[comptime] partial_len: usize,
    #[comptime] planes: bool,
    #[comptime] ahead: usize,
    #[comptime] values: bool,
) -> f32 {
    let vs = k.vector_size().comptime();
    let mut kr = Array::<Vector<F, N>>::new(comptime!(head_dim / vs));
    let mut xs = Array::<Vector<F, N>>::new(ahead);
    attend_issue::<F, N>(k, v, k_base, v_base, n_keys, &mut kr, &mut xs, head_dim, block, partial_len, ahead);
    attend_loaded::<F, N>(q, k, v, out, q_base, out_base, k_base, v_base, n_keys, n_keys, scale, &mut kr, &mut xs, f32_internal, max_keys, head_dim, block, partial_len, planes, ahead, values)
}

/// [`attend_row`]'s first loads, issued before anything waits: this unit's first key row into
/// `kr` and the first `ahead` value vectors it will weigh into `xs` (see step 4 of
/// [`attend_loaded`]), of keys below `issued` (zeros past them), so that the query, key and
/// value reads (each a memory round trip at decode, where there is little else to do) overlap
/// instead of following one another. A caller may issue them before the last keys exist
/// (`issued` below the row's key count): [`attend_loaded`] loads the rest of these.
#[cube]
#[allow(clippy::too_many_arguments)]
pub(crate) fn attend_issue<F: Float, N: Size>(
    k: &Tensor<Vector<F, N>>,
    v: &Tensor<Vector<F, N>>,
    k_base: usize,
    v_base: usize,
    issued: usize,
    kr: &mut Array<Vector<F, N>>,
    xs: &mut Array<Vector<F, N>>,
    #[comptime] head_dim: usize,
    #[comptime] block: usize,
    #[comptime] partial_len: usize,
    #[comptime] ahead: usize,
) {
    let unit = UNIT_POS_X as usize;
    // K and V rows are read in vectors of `vs` elements (16 bytes where hd allows); strides and
    // row starts are multiples of hd, hence of vs.
    // head_dim is comptime, so the key row's vector loads unroll and issue together.
    let vs = k.vector_size().comptime();
    let nvec = comptime!(head_dim / vs);
    if unit < issued {
        key_row_into::<F, N>(k, (k_base + unit * k.stride(2)) / vs, kr, head_dim);
    }
    let vrow = v.stride(2) / vs;
    let parts = min(block / nvec, partial_len / head_dim);
    let part = unit / nvec;
    let vb = v_base / vs + unit % nvec;
    #[unroll]
    for u in 0..ahead {
        xs[u] = Vector::<F, N>::new(F::new(0.0));
        if part < parts {
            xs[u] = value_or_zero::<F, N>(v, vb, vrow, part + u * parts, issued);
        }
    }
}

/// [`attend_row`] from its first loads on (`kr`, `xs` as [`attend_issue`] left them for keys
/// below `issued`; those of keys `issued..n_keys` load here).
#[cube]
#[allow(clippy::too_many_arguments)]
pub(crate) fn attend_loaded<F: Float, N: Size>(
    q: &Tensor<F>,
    k: &Tensor<Vector<F, N>>,
    v: &Tensor<Vector<F, N>>,
    out: &mut Tensor<F>,
    q_base: usize,
    out_base: usize,
    k_base: usize,
    v_base: usize,
    issued: usize,
    n_keys: usize,
    scale: f32,
    kr: &mut Array<Vector<F, N>>,
    xs: &mut Array<Vector<F, N>>,
    #[comptime] f32_internal: bool,
    #[comptime] max_keys: usize,
    #[comptime] head_dim: usize,
    #[comptime] block: usize,
    #[comptime] partial_len: usize,
    #[comptime] planes: bool,
    #[comptime] ahead: usize,
    #[comptime] values: bool,
) -> f32 {
    let unit = UNIT_POS_X as usize;
    let hd = head_dim;
    let vs = k.vector_size().comptime();
    let nvec = comptime!(head_dim / vs);

    let mut qs = Shared::<[f32]>::new_slice(head_dim);
    let mut scores = Shared::<[f32]>::new_slice(max_keys);

    // 0. The first loads of keys `issued..n_keys` (none where `attend_issue` saw every key).
    if unit >= issued && unit < n_keys {
        key_row_into::<F, N>(k, (k_base + unit * k.stride(2)) / vs, kr, head_dim);
    }
    let vrow = v.stride(2) / vs;
    let parts = min(block / nvec, partial_len / hd);
    let part = unit / nvec;
    let c = unit % nvec;
    let vb = v_base / vs + c;
    #[unroll]
    for u in 0..ahead {
        let j = part + u * parts;
        if part < parts && j >= issued && j < n_keys {
            xs[u] = v[vb + j * vrow];
        }
    }

    // 1. The query row, in f32.
    let mut d = unit;
    while d < hd {
        qs[d] = f32::cast_from(q[q_base + d]);
        d += block;
    }
    sync_cube();

    // 2. Scores, one key per unit in turn (the first from the registers loaded in 0.), and
    // each unit's maximum.
    let mut local_max = f32::new(f32::MIN);
    let mut j = unit;
    while j < n_keys {
        let row = (k_base + j * k.stride(2)) / vs;
        let dot = if j == unit { regs_dot::<F, N>(&*kr, &qs, head_dim, vs) } else { key_dot::<F, N>(k, row, &qs, head_dim) };
        let s = if f32_internal {
            dot * scale
        } else {
            round::<F>(round::<F>(dot) * scale)
        };
        scores[j] = s;
        local_max = max(local_max, s);
        j += block;
    }
    // (Plane reductions where the device has them: two barriers instead of the 512-unit
    // tree's eleven; `planes = false` is the shared-memory tree.)
    let m = cube_reduce(local_max, true, planes, block);

    // 3. Softmax in f32.
    let mut local_sum = 0.0f32;
    let mut j = unit;
    while j < n_keys {
        let p = (scores[j] - m).exp();
        scores[j] = p;
        local_sum += p;
        j += block;
    }
    let total = cube_reduce(local_sum, false, planes, block);
    let inv = 1.0f32 / total;
    let mut j = unit;
    while j < n_keys {
        let p = scores[j] * inv;
        scores[j] = if f32_internal { p } else { round::<F>(p) };
        j += block;
    }
    sync_cube();

    // 4. Weighted values: `parts` groups of `nvec` units, unit `(part, c)` accumulating the
    // `vs` channels of vector `c` over every `parts`-th key, `ahead` keys per step (the first
    // `ahead` loaded in 0., the next step's loaded after this step's products; vectors past the
    // keys are zeros with weight 0), a pairwise sum over the step's keys, then the parts are
    // summed through shared memory (`partial_len` f32: what the device's shared memory leaves,
    // which bounds `parts`).
    let mut partial = Shared::<[f32]>::new_slice(partial_len);
    if part < parts {
        // (One accumulator a key of the step and channel, up to 8 keys; with 16 in flight, key
        // `u` adds into `u % 8`'s, which keeps the registers of 8.)
        let groups = comptime!(if ahead > 8 { 8usize } else { ahead });
        let mut acc = Array::<f32>::new(comptime!(groups * vs));
        #[unroll]
        for i in 0..groups * vs {
            acc[i] = 0.0;
        }
        let mut j = part;
        if !values {
            // (The probe: no keys weighed, the partials zeros.)
            j = n_keys;
        }
        while j < n_keys {
            #[unroll]
            for u in 0..ahead {
                let p = weight_or_zero(&scores, j + u * parts, n_keys);
                let xv = xs[u];
                #[unroll]
                for x in 0..vs {
                    acc[(u % groups) * vs + x] += p * f32::cast_from(xv.extract(x));
                }
            }
            // (Loaded after the products, which read the vectors first.)
            let next = j + ahead * parts;
            if next < n_keys {
                #[unroll]
                for u in 0..ahead {
                    xs[u] = value_or_zero::<F, N>(v, vb, vrow, next + u * parts, n_keys);
                }
            }
            j = next;
        }
        #[unroll]
        for x in 0..vs {
            let mut t = (acc[x] + acc[vs + x]) + (acc[2 * vs + x] + acc[3 * vs + x]);
            if groups == 8 {
                t += (acc[4 * vs + x] + acc[5 * vs + x]) + (acc[6 * vs + x] + acc[7 * vs + x]);
            }
            partial[part * hd + c * vs + x] = t;
        }
    }
    sync_cube();
    let mut own = 0.0f32;
    let mut d = unit;
    while d < hd {
        let mut acc = 0.0f32;
        for p in 0..parts {
            acc += partial[p * hd + d];
        }
        out[out_base + d] = F::cast_from(acc);
        own = acc;
        d += block;
    }
    own
}

/// `q . k_row` in f32 over one key row of `head_dim / vs` vectors starting at vector index
/// `row`, the loads unrolled (all in flight), then summed as [`regs_dot`].
#[cube]
fn key_dot<F: Float, N: Size>(k: &Tensor<Vector<F, N>>, row: usize, qs: &Shared<[f32]>, #[comptime] head_dim: usize) -> f32 {
    let vs = k.vector_size().comptime();
    let mut kr = Array::<Vector<F, N>>::new(comptime!(head_dim / vs));
    key_row_into::<F, N>(k, row, &mut kr, head_dim);
    regs_dot::<F, N>(&kr, qs, head_dim, vs)
}

/// The key row of `head_dim / vs` vectors starting at vector index `row` into `kr`, the loads
/// unrolled (all in flight).
#[cube]
fn key_row_into<F: Float, N: Size>(k: &Tensor<Vector<F, N>>, row: usize, kr: &mut Array<Vector<F, N>>, #[comptime] head_dim: usize) {
    let vs = k.vector_size().comptime();
    #[unroll]
    for e in 0..comptime!(head_dim / vs) {
        kr[e] = k[row + e];
    }
}

/// `q . k_row` in f32 over a key row in registers, two partial sums.
#[cube]
fn regs_dot<F: Float, N: Size>(kr: &Array<Vector<F, N>>, qs: &Shared<[f32]>, #[comptime] head_dim: usize, #[comptime] vs: usize) -> f32 {
    let nvec = comptime!(head_dim / vs);
    let mut d0 = 0.0f32;
    let mut d1 = 0.0f32;
    #[unroll]
    for e in 0..nvec {
        let a = kr[e];
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

/// Vector `vb` of key `j`'s value row (`vrow` vectors per key), or zeros past `n_keys`.
#[cube]
fn value_or_zero<F: Float, N: Size>(v: &Tensor<Vector<F, N>>, vb: usize, vrow: usize, j: usize, n_keys: usize) -> Vector<F, N> {
    let mut x = Vector::<F, N>::new(F::new(0.0));
    if j < n_keys {
        x = v[vb + j * vrow];
    }
    x
}

/// `scores[j]`, or 0 past `n_keys`.
#[cube]
fn weight_or_zero(scores: &Shared<[f32]>, j: usize, n_keys: usize) -> f32 {
    let mut p = 0.0f32;
    if j < n_keys {
        p = scores[j];
    }
    p
}

/// Reads cube `cube`'s share (of `cubes`) of `t`'s vectors, four loads in flight per unit;
/// returns their sum (f32).
#[cube]
pub(crate) fn touch<F: Float, N: Size>(t: &Tensor<Vector<F, N>>, cube: usize, cubes: usize, #[comptime] block: usize) -> f32 {
    touch_span::<F, N>(t, 0usize, t.len(), cube, cubes, block)
}

/// [`touch`] of vectors `from..from + len` of `t` only.
#[cube]
pub(crate) fn touch_span<F: Float, N: Size>(t: &Tensor<Vector<F, N>>, from: usize, len: usize, cube: usize, cubes: usize, #[comptime] block: usize) -> f32 {
    let vs = t.vector_size();
    let per = len.div_ceil(cubes);
    let start = from + cube * per;
    let end = min(start + per, from + len);
    let unit = UNIT_POS_X as usize;
    let mut acc = 0.0f32;
    let mut i = start + unit;
    while i < end {
        let mut regs = Array::<Vector<F, N>>::new(4usize);
        #[unroll]
        for u in 0..4usize {
            let j = i + u * block;
            if j < end {
                regs[u] = t[j];
            }
        }
        #[unroll]
        for u in 0..4usize {
            if i + u * block < end {
                let v = regs[u];
                #[unroll]
                for e in 0..vs {
                    acc += f32::cast_from(v.extract(e));
                }
            }
        }
        i += 4 * block;
    }
    acc
}
