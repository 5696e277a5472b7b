use cubecl::prelude::*;

/// Causal attention of prefill rows over a paged KV cache, tiled: one cube per (tile of `br`
/// query rows of one sequence, query head). The cube stages its query tile in shared memory
/// once, then walks the sequence's keys `bc` at a time through the block table, staging each
/// key (and value) tile once for all `br` rows, so every key row is read from memory once per
/// `br` query rows instead of once per row.
///
/// Units: `br / 4` row groups x `cg` column groups. Unit `(rg, ci)` owns query rows
/// `rg + (br / 4) * i` (i < 4), score columns `ci + cg * j` (j < bc / cg) and output vectors
/// `ci + cg * m` of each of its rows; the strided ownership keeps shared-memory reads free of
/// bank conflicts (rows padded by one vector).
///
/// `tiles[t] = (sequence, first row in q, rows <= br, position of the first row)`: query row
/// `i` of the tile sits at position `p0 + i` and attends to keys `0..=p0 + i` of its sequence,
/// whose slot for key `j` is `table[seq, j / page] * page + j % page`. Keys past the tile's last
/// position are never read (rows of block ids past a sequence's end may hold anything).
///
/// f32 mode (`torch = false`): one pass with an online softmax (running max per row shared
/// through shared memory, sums per unit), the output normalised at the end, one rounding.
/// Torch mode: PyTorch's eager rounding points, as the other attention kernels: `q @ k^T`
/// rounded to F, the scaling rounded to F, the softmax in f32 normalised and rounded to F, the
/// weighted sum in f32 rounded to F. The normalised probabilities need the row's max and sum
/// first, so a first pass over the keys finds them (scores only) and a second one weights the
/// values.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
pub(super) fn prefill_kernel<F: Float, N: Size>(
    q: &Tensor<Vector<F, N>>,       // [1, heads, rows, hd] contiguous
    k: &Tensor<Vector<F, N>>,       // [blocks * page, kv_heads, hd] (last dim contiguous)
    v: &Tensor<Vector<F, N>>,       // [blocks * page, kv_heads, hd]
    table: &Tensor<u32>,            // [seqs, max_blocks] contiguous
    tiles: &Tensor<u32>,            // [tiles, 4]
    out: &mut Tensor<Vector<F, N>>, // [rows, heads * hd] contiguous
    scale: f32,
    #[comptime] torch: bool,
    #[comptime] page: usize,
    #[comptime] head_dim: usize,
    #[comptime] br: usize,
    #[comptime] bc: usize,
    #[comptime] cg: usize,
    #[define(F)] _dtype: ElemType,
) {
    let tile = CUBE_POS_X as usize;
    let h = CUBE_POS_Y as usize;
    let unit = UNIT_POS_X as usize;
    let vs = q.vector_size().comptime();
    // Vectors per head row, and the padded row stride of the staged tiles.
    let hdl = comptime!(head_dim / vs);
    let stride = comptime!(head_dim / vs + 1);
    let groups = comptime!(br / 4);
    let units = comptime!(br / 4 * cg);
    let cn = comptime!(bc / cg);
    let dm = comptime!((head_dim / vs).div_ceil(cg));
    let rg = unit / cg;
    let ci = unit % cg;

    let heads = q.shape(1);
    let rows = q.shape(2);
    let kv_heads = k.shape(1);
    let g = h / (heads / kv_heads);
    let seq = tiles[tile * 4] as usize;
    let row0 = tiles[tile * 4 + 1] as usize;
    let n_rows = tiles[tile * 4 + 2] as usize;
    let p0 = tiles[tile * 4 + 3] as usize;
    let n_keys = p0 + n_rows;
    let n_tiles = n_keys.div_ceil(bc);

    let mut qs = Shared::<[Vector<f32, N>]>::new_slice(comptime!(br * (head_dim / vs + 1)));
    let mut ks = Shared::<[Vector<f32, N>]>::new_slice(comptime!(bc * (head_dim / vs + 1)));
    let mut vsh = Shared::<[Vector<f32, N>]>::new_slice(comptime!(bc * (head_dim / vs)));
    let mut ps = Shared::<[f32]>::new_slice(comptime!(br * (bc + 1)));
    let mut red = Shared::<[f32]>::new_slice(comptime!(2 * br * cg));

    // The query tile in f32 (rows past the tile's end as zeros).
    let q_base = (h * rows + row0) * hdl;
    let mut idx = unit;
    while idx < comptime!(br * (head_dim / vs)) {
        let r = idx / hdl;
        let e = idx % hdl;
        let mut x = Vector::<f32, N>::new(0.0);
        if r < n_rows {
            x = Vector::<f32, N>::cast_from(q[q_base + r * hdl + e]);
        }
        qs[r * stride + e] = x;
        idx += units;
    }

    // Each owned row's position (rows past the end repeat the last one: never written).
    let mut pos = Array::<usize>::new(4usize);
    #[unroll]
    for i in 0..4 {
        pos[i] = p0 + min(rg + groups * i, n_rows - 1);
    }
    let mut s = Array::<f32>::new(comptime!(4 * bc / cg));
    let mut o = Array::<Vector<f32, N>>::new(comptime!(4 * (head_dim / vs).div_ceil(cg)));
    #[unroll]
    for x in 0..comptime!(4 * (head_dim / vs).div_ceil(cg)) {
        o[x] = Vector::<f32, N>::new(0.0);
    }
    // f32 mode: the running max per row (the same in every unit of the row group) and this
    // unit's share of the row sums. Torch mode: after the first pass, the row's max and the
    // reciprocal of its sum.
    let mut m = Array::<f32>::new(4usize);
    let mut l = Array::<f32>::new(4usize);
    #[unroll]
    for i in 0..4 {
        m[i] = f32::new(f32::MIN);
        l[i] = 0.0;
    }
    let base = seq * table.stride(0);

    if torch {
        // Pass 1: every unit's running max and sum over its own columns, merged at the end.
        for kt in 0..n_tiles {
            sync_cube();
            stage(k, &mut ks, table, base, kt, n_keys, g, stride, hdl, units, page, bc);
            sync_cube();
            tile_scores::<F, N>(&qs, &ks, &mut s, rg, ci, scale, torch, stride, hdl, groups, cg, cn, vs);
            #[unroll]
            for i in 0..4 {
                let tmax = row_max(&s, i, pos[i], kt * bc + ci, cg, cn);
                let mnew = max(m[i], tmax);
                let mut sum = l[i] * (m[i] - mnew).exp();
                #[unroll]
                for j in 0..cn {
                    if kt * bc + ci + cg * j <= pos[i] {
                        sum += (s[i * cn + j] - mnew).exp();
                    }
                }
                l[i] = sum;
                m[i] = mnew;
            }
        }
        #[unroll]
        for i in 0..4 {
            let r = rg + groups * i;
            red[r * cg + ci] = m[i];
            red[comptime!(br * cg) + r * cg + ci] = l[i];
        }
        sync_cube();
        #[unroll]
        for i in 0..4 {
            let r = rg + groups * i;
            let mut mx = f32::new(f32::MIN);
            for c in 0..cg {
                mx = max(mx, red[r * cg + c]);
            }
            let mut sum = 0.0f32;
            for c in 0..cg {
                sum += red[comptime!(br * cg) + r * cg + c] * (red[r * cg + c] - mx).exp();
            }
            m[i] = mx;
            l[i] = 1.0f32 / sum;
        }
    }

    // The weighted values (f32 mode: with the online softmax).
    for kt in 0..n_tiles {
        sync_cube();
        stage(k, &mut ks, table, base, kt, n_keys, g, stride, hdl, units, page, bc);
        stage(v, &mut vsh, table, base, kt, n_keys, g, hdl, hdl, units, page, bc);
        sync_cube();
        tile_scores::<F, N>(&qs, &ks, &mut s, rg, ci, scale, torch, stride, hdl, groups, cg, cn, vs);
        if !torch {
            #[unroll]
            for i in 0..4 {
                red[(rg + groups * i) * cg + ci] = row_max(&s, i, pos[i], kt * bc + ci, cg, cn);
            }
            sync_cube();
        }
        #[unroll]
        for i in 0..4 {
            let r = rg + groups * i;
            let mut scale_o = 1.0f32;
            if !torch {
                let mut mx = m[i];
                for c in 0..cg {
                    mx = max(mx, red[r * cg + c]);
                }
                scale_o = (m[i] - mx).exp();
                m[i] = mx;
                l[i] *= scale_o;
            }
            #[unroll]
            for j in 0..cn {
                let col = ci + cg * j;
                let mut p = 0.0f32;
                if kt * bc + col <= pos[i] {
                    if torch {
                        p = f32::cast_from(F::cast_from((s[i * cn + j] - m[i]).exp() * l[i]));
                    } else {
                        p = (s[i * cn + j] - m[i]).exp();
                        l[i] += p;
                    }
                }
                ps[r * comptime!(bc + 1) + col] = p;
            }
            if !torch {
                #[unroll]
                for x in 0..dm {
                    o[i * dm + x] *= Vector::<f32, N>::new(scale_o);
                }
            }
        }
        sync_cube();
        for c in 0..bc {
            let mut p = Array::<f32>::new(4usize);
            #[unroll]
            for i in 0..4 {
                p[i] = ps[(rg + groups * i) * comptime!(bc + 1) + c];
            }
            #[unroll]
            for x in 0..dm {
                let dl = ci + cg * x;
                if dl < hdl {
                    let val = vsh[c * hdl + dl];
                    #[unroll]
                    for i in 0..4 {
                        o[i * dm + x] += Vector::<f32, N>::new(p[i]) * val;
                    }
                }
            }
        }
    }

    if !torch {
        // The row sums, from every unit of the row group.
        #[unroll]
        for i in 0..4 {
            red[comptime!(br * cg) + (rg + groups * i) * cg + ci] = l[i];
        }
        sync_cube();
        #[unroll]
        for i in 0..4 {
            let r = rg + groups * i;
            let mut sum = 0.0f32;
            for c in 0..cg {
                sum += red[comptime!(br * cg) + r * cg + c];
            }
            l[i] = 1.0f32 / sum;
        }
    }
    #[unroll]
    for i in 0..4 {
        let r = rg + groups * i;
        if r < n_rows {
            let out_base = ((row0 + r) * heads + h) * hdl;
            #[unroll]
            for x in 0..dm {
                let dl = ci + cg * x;
                if dl < hdl {
                    let mut val = o[i * dm + x];
                    if !torch {
                        val *= Vector::<f32, N>::new(l[i]);
                    }
                    out[out_base + dl] = Vector::<F, N>::cast_from(val);
                }
            }
        }
    }
}

/// The largest of the unit's scores of owned row `i` (at position `pos`) whose keys
/// (`first + cg * j`) it may attend to; `f32::MIN` when none.
#[cube]
fn row_max(s: &Array<f32>, #[comptime] i: usize, pos: usize, first: usize, #[comptime] cg: usize, #[comptime] cn: usize) -> f32 {
    let mut m = f32::new(f32::MIN);
    #[unroll]
    for j in 0..cn {
        if first + cg * j <= pos {
            m = max(m, s[i * cn + j]);
        }
    }
    m
}

/// Stages key tile `kt` (`bc` keys of head `g`) of the pool `src` in `dst` (f32, rows
/// `row_stride` vectors apart); keys at or past `n_keys` as zeros.
#[cube]
#[allow(clippy::too_many_arguments)]
fn stage<F: Float, N: Size>(
    src: &Tensor<Vector<F, N>>,
    dst: &mut Shared<[Vector<f32, N>]>,
    table: &Tensor<u32>,
    base: usize,
    kt: usize,
    n_keys: usize,
    g: usize,
    #[comptime] row_stride: usize,
    #[comptime] hdl: usize,
    #[comptime] units: usize,
    #[comptime] page: usize,
    #[comptime] bc: usize,
) {
    let vs = src.vector_size().comptime();
    let mut idx = UNIT_POS_X as usize;
    while idx < comptime!(bc * hdl) {
        let c = idx / hdl;
        let e = idx % hdl;
        let key = kt * bc + c;
        let mut x = Vector::<f32, N>::new(0.0);
        if key < n_keys {
            let slot = table[base + key / page] as usize * page + key % page;
            x = Vector::<f32, N>::cast_from(src[(slot * src.stride(0) + g * src.stride(1)) / vs + e]);
        }
        dst[c * row_stride + e] = x;
        idx += units;
    }
}

/// The unit's scores of the staged tiles: `s[i * cn + j] = q_row(i) . k_col(j) * scale` over
/// 4 rows x `cn` columns, in f32 (torch mode: the dot rounded to F, then the scaling).
#[cube]
#[allow(clippy::too_many_arguments)]
fn tile_scores<F: Float, N: Size>(
    qs: &Shared<[Vector<f32, N>]>,
    ks: &Shared<[Vector<f32, N>]>,
    s: &mut Array<f32>,
    rg: usize,
    ci: usize,
    scale: f32,
    #[comptime] torch: bool,
    #[comptime] stride: usize,
    #[comptime] hdl: usize,
    #[comptime] groups: usize,
    #[comptime] cg: usize,
    #[comptime] cn: usize,
    #[comptime] vs: usize,
) {
    let mut acc = Array::<Vector<f32, N>>::new(comptime!(4 * cn));
    #[unroll]
    for x in 0..comptime!(4 * cn) {
        acc[x] = Vector::<f32, N>::new(0.0);
    }
    for e in 0..hdl {
        let mut qv = Array::<Vector<f32, N>>::new(4usize);
        #[unroll]
        for i in 0..4 {
            qv[i] = qs[(rg + groups * i) * stride + e];
        }
        #[unroll]
        for j in 0..cn {
            let kv = ks[(ci + cg * j) * stride + e];
            #[unroll]
            for i in 0..4 {
                acc[i * cn + j] += qv[i] * kv;
            }
        }
    }
    #[unroll]
    for x in 0..comptime!(4 * cn) {
        let a = acc[x];
        let mut dot = 0.0f32;
        #[unroll]
        for y in 0..vs {
            dot += a.extract(y);
        }
        s[x] = if torch { f32::cast_from(F::cast_from(f32::cast_from(F::cast_from(dot)) * scale)) } else { dot * scale };
    }
}
