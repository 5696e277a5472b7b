use cubecl::prelude::*;

use crate::reduce::cube_reduce;

/// Decode attention split over the keys (flash-decoding): one cube per (batch, `group` query
/// heads sharing one KV head, chunk of `chunk` keys) computes, for each of those heads, its
/// chunk's scores, their maximum `m` and the sum of `exp(s - m)`, reading each key row once for
/// the group (`group = 1`: a cube per query head).
/// f32 mode (`torch = false`) also accumulates the unnormalised output `sum exp(s - m) v` in
/// f32, and [`combine_kernel`] merges the chunks. Torch mode rounds the scores where PyTorch does
/// (`q @ k^T` to F, the scaling to F) and writes them to `s_out` for [`value_kernel`], since
/// its probabilities are rounded after the global normalisation. Cubes whose chunk starts past
/// the last key return at once (the chunk count covers the cache's capacity: the position may
/// live on the device). One query row per (batch, head): `q: [batch, heads, 1, hd]`.
///
/// `paged`: the keys live in a block pool `k, v: [blocks * chunk, kv_heads, hd]` (one chunk per
/// block); query row `b` of `q: [1, heads, rows, hd]` attends to keys `0..lens[b]` of the blocks
/// `table[b, ..]`.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
pub(super) fn chunk_kernel<F: Float, N: Size>(
    q: &Tensor<F>,            // [batch, heads, 1, hd] contiguous (paged: [1, heads, rows, hd])
    k: &Tensor<Vector<F, N>>, // [batch, kv_heads, >= past + 1, hd] (paged: the pool)
    v: &Tensor<Vector<F, N>>, // [batch, kv_heads, >= past + 1, hd] (read unless `torch`)
    s_out: &mut Tensor<f32>,  // [batch * heads, chunks * chunk] (written when `torch`)
    m_out: &mut Tensor<f32>,  // [batch * heads, chunks]
    l_out: &mut Tensor<f32>,  // [batch * heads, chunks]
    o_out: &mut Tensor<f32>,  // [batch * heads, chunks, hd] (written unless `torch`)
    past: u32,
    state: &Tensor<u32>, // [2] (token, position) when `past_from_state`
    table: &Tensor<u32>, // [rows, max_blocks] when `paged`
    lens: &Tensor<u32>,  // [rows] when `paged`: keys of each row
    scale: f32,
    #[comptime] torch: bool,
    #[comptime] past_from_state: bool,
    #[comptime] paged: bool,
    #[comptime] chunk: usize,
    #[comptime] head_dim: usize,
    #[comptime] block: usize,
    #[comptime] group: usize,
    #[comptime] stage_keys: bool,
    #[comptime] planes: bool,
    #[define(F)] _dtype: ElemType,
) {
    let c = CUBE_POS_Y as usize;
    let chunks = CUBE_COUNT_Y as usize;
    let unit = UNIT_POS_X as usize;
    let heads = q.shape(1);
    let kv_heads = k.shape(1);
    // One cube per (batch, `group` query heads h0.. of one kv head g, chunk).
    let per_batch = heads / group;
    let b = CUBE_POS_X as usize / per_batch;
    let h0 = (CUBE_POS_X as usize % per_batch) * group;
    let g = h0 / (heads / kv_heads);
    let bh0 = b * heads + h0;
    let n_keys = key_count(past, state, lens, b, past_from_state, paged);
    let start = c * chunk;
    if start < n_keys {
        let vs = k.vector_size().comptime();
        let mut qs = Shared::<[f32]>::new_slice(comptime!(group * head_dim));
        let mut p = Shared::<[f32]>::new_slice(comptime!(group * chunk));
        let q_base = if paged { h0 * q.stride(1) + b * q.stride(2) } else { b * q.stride(0) + h0 * q.stride(1) };
        #[unroll]
        for hh in 0..group {
            let mut d = unit;
            while d < head_dim {
                qs[hh * head_dim + d] = f32::cast_from(q[q_base + hh * q.stride(1) + d]);
                d += block;
            }
        }
        sync_cube();
        // Where the chunk's first key of head g starts, and the elements between keys.
        let (k_first, k_step) = chunk_rows(k, table, b, g, c, start, chunk, paged);
        let count = min(chunk, n_keys - start);
        let nvec = comptime!(head_dim / vs);
        // `stage_keys`: the chunk's key rows staged in shared memory first, the loads coalesced
        // (consecutive units read consecutive vectors of a row; read straight from the cache,
        // each unit's own row left 54% of the DRAM bandwidth idle: H100, ncu, 2026-11-26).
        // Rows padded by one vector so that the units' row reads below hit distinct banks.
        let mut ks = Shared::<[Vector<F, N>]>::new_slice(comptime!(if stage_keys { chunk * (nvec + 1) } else { 1 }));
        if stage_keys {
            stage_rows::<F, N>(k, &mut ks, k_first, k_step, count, chunk, nvec, block);
        }

        // Scores: one key per unit, its row read once for the group's heads.
        let j = start + unit;
        let valid = unit < chunk && j < n_keys;
        let mut dots = Array::<f32>::new(group);
        #[unroll]
        for hh in 0..group {
            dots[hh] = 0.0;
        }
        if valid {
            if stage_keys {
                key_dots::<F, N, Shared<[Vector<F, N>]>>(&ks, unit * (nvec + 1), &qs, &mut dots, head_dim, group, vs);
            } else {
                key_dots::<F, N, Tensor<Vector<F, N>>>(k, (k_first + unit * k_step) / vs, &qs, &mut dots, head_dim, group, vs);
            }
        }
        #[unroll]
        for hh in 0..group {
            let bh = bh0 + hh;
            let mut s = f32::new(f32::MIN);
            if valid {
                if torch {
                    s = f32::cast_from(F::cast_from(f32::cast_from(F::cast_from(dots[hh])) * scale));
                    s_out[bh * chunks * chunk + j] = s;
                } else {
                    s = dots[hh] * scale;
                }
            }
            let m = cube_reduce(s, true, planes, block);
            let mut e = 0.0f32;
            if valid {
                e = (s - m).exp();
            }
            if unit < chunk {
                p[hh * chunk + unit] = e;
            }
            let l = cube_reduce(e, false, planes, block);
            if unit == 0 {
                m_out[bh * chunks + c] = m;
                l_out[bh * chunks + c] = l;
            }
        }
        if !torch {
            sync_cube();
            let (v_first, v_step) = chunk_rows(v, table, b, g, c, start, chunk, paged);
            chunk_values::<F, N>(v, &p, o_out, bh0 * chunks + c, chunks, v_first, v_step, min(chunk, n_keys - start), chunk, head_dim, block, group);
        }
    }
}

/// `dots[h] = q_h . k[row..]` for the group's heads (`qs: [group * head_dim]`), the key row's
/// `head_dim / vs` vectors loaded once (all in flight); two partial sums per head, over even
/// and odd vectors (the order of the row kernel's `key_dot`). `k`: the cache or a staged tile.
#[cube]
fn key_dots<F: Float, N: Size, L: List<Vector<F, N>> + ?Sized>(
    k: &L,
    row: usize,
    qs: &Shared<[f32]>,
    dots: &mut Array<f32>,
    #[comptime] head_dim: usize,
    #[comptime] group: usize,
    #[comptime] vs: usize,
) {
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

/// Copies the `count` rows `src[first + r * step ..]` (`nvec` vectors each) to `dst`, rows
/// `nvec + 1` vectors apart: unit `u` loads vector `u % nvec` of rows `u / nvec`,
/// `u / nvec + block / nvec`, ... (coalesced), up to 16 loads in flight before it stores them.
#[cube]
#[allow(clippy::too_many_arguments)]
fn stage_rows<F: Float, N: Size>(
    src: &Tensor<Vector<F, N>>,
    dst: &mut Shared<[Vector<F, N>]>,
    first: usize,
    step: usize,
    count: usize,
    #[comptime] rows: usize,
    #[comptime] nvec: usize,
    #[comptime] block: usize,
) {
    let vs = src.vector_size().comptime();
    let unit = UNIT_POS_X as usize;
    let per_round = comptime!(block / nvec);
    let rounds = comptime!(rows.div_ceil(block / nvec));
    let batch = comptime!(if rounds < 16 { rounds } else { 16 });
    let e = unit % nvec;
    let r0 = unit / nvec;
    let active = r0 < per_round;
    #[unroll]
    for bt in 0..comptime!(rounds.div_ceil(batch)) {
        let mut regs = Array::<Vector<F, N>>::new(batch);
        #[unroll]
        for i in 0..batch {
            let r = r0 + (bt * batch + i) * per_round;
            if active && r < count {
                regs[i] = src[(first + r * step) / vs + e];
            }
        }
        #[unroll]
        for i in 0..batch {
            let r = r0 + (bt * batch + i) * per_round;
            if active && r < count {
                dst[r * (nvec + 1) + e] = regs[i];
            }
        }
    }
    sync_cube();
}

/// Merges the chunks, in chunk order: f32 mode's (`weighted`, from [`chunk_kernel`]):
/// `out = sum_c exp(m_c - M) o_c / sum_c exp(m_c - M) l_c`; [`value_kernel`]'s: `out = sum_c o_c`.
/// One cube per (batch x head), one unit per output channel.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
pub(super) fn combine_kernel<F: Float>(
    m_in: &Tensor<f32>,   // [batch * heads, chunks]
    l_in: &Tensor<f32>,   // [batch * heads, chunks]
    o_in: &Tensor<f32>,   // [batch * heads, chunks, hd]
    out: &mut Tensor<F>,  // [batch, 1, heads * hd] (paged: [rows, heads * hd])
    heads: u32,
    past: u32,
    state: &Tensor<u32>,
    lens: &Tensor<u32>,
    #[comptime] past_from_state: bool,
    #[comptime] paged: bool,
    #[comptime] weighted: bool,
    #[comptime] chunk: usize,
    #[comptime] head_dim: usize,
    #[define(F)] _dtype: ElemType,
) {
    let bh = CUBE_POS_X as usize;
    let d = UNIT_POS_X as usize;
    let chunks = m_in.shape(1);
    let used = key_count(past, state, lens, bh / heads as usize, past_from_state, paged).div_ceil(chunk);
    if d < head_dim && !weighted {
        let mut o = 0.0f32;
        for c in 0..used {
            o += o_in[(bh * chunks + c) * head_dim + d];
        }
        out[bh * head_dim + d] = F::cast_from(o);
    }
    if d < head_dim && weighted {
        let mut mx = f32::new(f32::MIN);
        for c in 0..used {
            mx = max(mx, m_in[bh * chunks + c]);
        }
        let mut l = 0.0f32;
        let mut o = 0.0f32;
        for c in 0..used {
            let w = (m_in[bh * chunks + c] - mx).exp();
            l += w * l_in[bh * chunks + c];
            o += w * o_in[(bh * chunks + c) * head_dim + d];
        }
        out[bh * head_dim + d] = F::cast_from(o / l);
    }
}

/// Torch mode, after [`chunk_kernel`]: every cube merges the chunks' maxima and sums (in chunk order, so
/// every cube gets the same `M` and `L`), rounds its keys' probabilities `exp(s - M) / L` to F
/// as PyTorch's softmax output, and writes its chunk's `sum p v` (f32) for [`combine_kernel`]
/// to add up (`weighted = false`).
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
pub(super) fn value_kernel<F: Float, N: Size>(
    v: &Tensor<Vector<F, N>>, // [batch, kv_heads, >= past + 1, hd]
    s_in: &Tensor<f32>,       // [batch * heads, chunks * chunk]
    m_in: &Tensor<f32>,       // [batch * heads, chunks]
    l_in: &Tensor<f32>,       // [batch * heads, chunks]
    o_out: &mut Tensor<f32>,  // [batch * heads, chunks, hd]
    heads: u32,
    past: u32,
    state: &Tensor<u32>,
    table: &Tensor<u32>,
    lens: &Tensor<u32>,
    #[comptime] past_from_state: bool,
    #[comptime] paged: bool,
    #[comptime] chunk: usize,
    #[comptime] head_dim: usize,
    #[comptime] block: usize,
    #[comptime] group: usize,
    #[define(F)] _dtype: ElemType,
) {
    let c = CUBE_POS_Y as usize;
    let chunks = CUBE_COUNT_Y as usize;
    let unit = UNIT_POS_X as usize;
    let heads = heads as usize;
    let kv_heads = v.shape(1);
    // One cube per (batch, `group` query heads h0.. of one kv head g, chunk), as in `chunk_kernel`.
    let per_batch = heads / group;
    let b = CUBE_POS_X as usize / per_batch;
    let h0 = (CUBE_POS_X as usize % per_batch) * group;
    let g = h0 / (heads / kv_heads);
    let bh0 = b * heads + h0;
    let n_keys = key_count(past, state, lens, b, past_from_state, paged);
    let start = c * chunk;
    if start < n_keys {
        let used = n_keys.div_ceil(chunk);
        let mut p = Shared::<[f32]>::new_slice(comptime!(group * chunk));
        #[unroll]
        for hh in 0..group {
            let bh = bh0 + hh;
            let mut mx = f32::new(f32::MIN);
            for cc in 0..used {
                mx = max(mx, m_in[bh * chunks + cc]);
            }
            let mut total = 0.0f32;
            for cc in 0..used {
                total += l_in[bh * chunks + cc] * (m_in[bh * chunks + cc] - mx).exp();
            }
            let inv = 1.0f32 / total;
            if unit < chunk {
                let j = start + unit;
                let mut w = 0.0f32;
                if j < n_keys {
                    w = f32::cast_from(F::cast_from((s_in[bh * chunks * chunk + j] - mx).exp() * inv));
                }
                p[hh * chunk + unit] = w;
            }
        }
        sync_cube();
        let (v_first, v_step) = chunk_rows(v, table, b, g, c, start, chunk, paged);
        chunk_values::<F, N>(v, &p, o_out, bh0 * chunks + c, chunks, v_first, v_step, min(chunk, n_keys - start), chunk, head_dim, block, group);
    }
}

/// Keys query row `b` attends to: `past + 1`, `state[1] + 1` or `lens[b]`.
#[cube]
fn key_count(past: u32, state: &Tensor<u32>, lens: &Tensor<u32>, b: usize, #[comptime] past_from_state: bool, #[comptime] paged: bool) -> usize {
    if paged {
        lens[b] as usize
    } else if past_from_state {
        state[1] as usize + 1
    } else {
        past as usize + 1
    }
}

/// The element offset of chunk `c`'s first key row (head `g`, query row `b`) and the elements
/// between consecutive keys: in the cache `[batch, kv, capacity, hd]` or, `paged`, in block
/// `table[b, c]` of the pool `[blocks * chunk, kv, hd]`.
#[cube]
#[allow(clippy::too_many_arguments)]
fn chunk_rows<F: Float, N: Size>(
    t: &Tensor<Vector<F, N>>,
    table: &Tensor<u32>,
    b: usize,
    g: usize,
    c: usize,
    start: usize,
    #[comptime] chunk: usize,
    #[comptime] paged: bool,
) -> (usize, usize) {
    if paged {
        let blk = table[b * table.stride(0) + c] as usize;
        (blk * chunk * t.stride(0) + g * t.stride(1), t.stride(0))
    } else {
        (b * t.stride(0) + g * t.stride(1) + start * t.stride(2), t.stride(2))
    }
}

/// `o_out[slot + h * slot_step] = sum_u p[h * p_step + u] v[first + u * step]` for the group's
/// heads `h` over the chunk's `count` keys, in f32, each value row read once: `parts` groups of
/// `head_dim / vs` units over the keys, summed through shared memory.
#[cube]
#[allow(clippy::too_many_arguments)]
fn chunk_values<F: Float, N: Size>(
    v: &Tensor<Vector<F, N>>,
    p: &Shared<[f32]>,
    o_out: &mut Tensor<f32>,
    slot: usize,
    slot_step: usize,
    first: usize,
    step: usize,
    count: usize,
    #[comptime] p_step: usize,
    #[comptime] head_dim: usize,
    #[comptime] block: usize,
    #[comptime] group: usize,
) {
    let unit = UNIT_POS_X as usize;
    let vs = v.vector_size().comptime();
    let nvec = comptime!(head_dim / vs);
    let parts = comptime!(block / nvec);
    let part = unit / nvec;
    let cv = unit % nvec;
    let mut partial = Shared::<[f32]>::new_slice(comptime!(group * (block / nvec) * head_dim));
    if part < parts {
        let mut acc = Array::<f32>::new(comptime!(group * vs));
        #[unroll]
        for x in 0..comptime!(group * vs) {
            acc[x] = 0.0;
        }
        let vrow = step / vs;
        let base = first / vs + cv;
        let mut u = part;
        // Four value rows loaded before they are used (one at a time left each unit waiting a
        // memory round trip per row); added in key order all the same.
        while u + 3 * parts < count {
            let r0 = v[base + u * vrow];
            let r1 = v[base + (u + parts) * vrow];
            let r2 = v[base + (u + 2 * parts) * vrow];
            let r3 = v[base + (u + 3 * parts) * vrow];
            add_weighted::<F, N>(&mut acc, r0, p, u, p_step, group, vs);
            add_weighted::<F, N>(&mut acc, r1, p, u + parts, p_step, group, vs);
            add_weighted::<F, N>(&mut acc, r2, p, u + 2 * parts, p_step, group, vs);
            add_weighted::<F, N>(&mut acc, r3, p, u + 3 * parts, p_step, group, vs);
            u += 4 * parts;
        }
        while u < count {
            add_weighted::<F, N>(&mut acc, v[base + u * vrow], p, u, p_step, group, vs);
            u += parts;
        }
        #[unroll]
        for hh in 0..group {
            #[unroll]
            for x in 0..vs {
                partial[(hh * parts + part) * head_dim + cv * vs + x] = acc[hh * vs + x];
            }
        }
    }
    sync_cube();
    #[unroll]
    for hh in 0..group {
        let mut d = unit;
        while d < head_dim {
            let mut acc = 0.0f32;
            for pp in 0..parts {
                acc += partial[(hh * parts + pp) * head_dim + d];
            }
            o_out[(slot + hh * slot_step) * head_dim + d] = acc;
            d += block;
        }
    }
}

/// `acc[h * vs + x] += p[h * p_step + u] * row[x]` for the group's heads.
#[cube]
#[allow(clippy::too_many_arguments)]
fn add_weighted<F: Float, N: Size>(acc: &mut Array<f32>, row: Vector<F, N>, p: &Shared<[f32]>, u: usize, #[comptime] p_step: usize, #[comptime] group: usize, #[comptime] vs: usize) {
    #[unroll]
    for hh in 0..group {
        let w = p[hh * p_step + u];
        #[unroll]
        for x in 0..vs {
            acc[hh * vs + x] += w * f32::cast_from(row.extract(x));
        }
    }
}
