use cubecl::prelude::*;

/// Elements a 16x16 fragment spans in a staged slab (rows 72 apart) and in the f32 output tile
/// (rows 68 apart).
pub(super) const A_SPAN: usize = 15 * 72 + 16;
pub(super) const C_SPAN: usize = 15 * 68 + 16;

/// `out = [x @ w0^T | x @ w1^T | x @ w2^T]` on the tensor cores: `x: [m, k]`, `w_i: [n_i, k]`
/// (PyTorch's linear layout; a missing weight is a zero-row view), f32 accumulation, one
/// rounding to F at the output.
///
/// Grid: x over the weights' blocks of 64 output columns (`w0`'s first, then `w1`'s, then
/// `w2`'s: one launch for q | k | v or gate | up), y over blocks of 64 rows, z over the k
/// splits: cube `z` of `CUBE_COUNT_Z` multiplies slabs `z * slabs / splits ..` of the k axis.
/// Four planes per cube (`CUBE_DIM = (32, 4)`), plane `p` computing the 32x32 quarter
/// `(p / 2, p % 2)` of the cube's 64x64 tile as 2x2 16x16x16 fragments. The k loop stages a
/// 64x64 slab of `x` and of `w` in shared memory (rows padded by 8 elements), loading the next
/// slab into registers while the fragments of the current one multiply. Rows past `m` and `n_i`
/// are staged as zeros and not written; `k` must be a multiple of 64 (the caller's check).
///
/// `split = false` (one split) rounds into `out: [m, total]`; `split = true` writes each
/// split's f32 sums to `part: [splits, m, total]`, which [`split_sum_kernel`] adds up and
/// rounds (the same one rounding of an f32 sum).
#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
pub(super) fn tc_linear_kernel<F: Float, N: Size>(
    x: &Tensor<Vector<F, N>>,  // [m, k] contiguous
    w0: &Tensor<Vector<F, N>>, // [n0, k] contiguous
    w1: &Tensor<Vector<F, N>>, // [n1, k] contiguous (n1 may be 0)
    w2: &Tensor<Vector<F, N>>, // [n2, k] contiguous (n2 may be 0)
    out: &mut Tensor<F>,       // [m, total = n0 + n1 + n2] contiguous (split = false)
    part: &mut Tensor<f32>,    // [splits, m, total] contiguous (split = true)
    #[comptime] split: bool,
    #[define(F)] _dtype: ElemType,
) {
    let vs = x.vector_size().comptime();
    let m = x.shape(0);
    let (n0w, n1w) = (w0.shape(0), w1.shape(0));
    let total = n0w + n1w + w2.shape(0);
    // Shapes count elements; indices count vectors.
    let k = x.shape(1);
    let kv = k / vs;
    let lane = UNIT_POS_X as usize;
    let plane = UNIT_POS_Y as usize;
    let unit = plane * 32 + lane;
    let m0 = CUBE_POS_Y as usize * 64;
    // Which weight this cube's columns come from (uniform across the cube).
    let tile = CUBE_POS_X as usize;
    let (t0, t1) = (n0w.div_ceil(64), n0w.div_ceil(64) + n1w.div_ceil(64));
    let mut sel = 0u32;
    let mut n0 = tile * 64;
    let mut n = w0.shape(0); // (not `= n0w`: a copy of a variable may alias it)
    let mut col0 = 0usize;
    if tile >= t1 {
        sel = 2u32;
        n0 = (tile - t1) * 64;
        n = w2.shape(0);
        col0 = n0w + n1w;
    } else if tile >= t0 {
        sel = 1u32;
        n0 = (tile - t0) * 64;
        n = n1w;
        col0 = n0w;
    }
    let pm = (plane / 2) * 32;
    let pn = (plane % 2) * 32;
    let per_row = comptime!(64 / vs);
    let loads = comptime!(64 * (64 / vs) / 128);
    let slabs = k / 64;
    let (z, splits) = (CUBE_POS_Z as usize, CUBE_COUNT_Z as usize);
    let (s0, s1) = (z * slabs / splits, (z + 1) * slabs / splits);

    let mut xs = Shared::<[F]>::new_slice(comptime!(64usize * 72));
    let mut ws = Shared::<[F]>::new_slice(comptime!(64usize * 72));
    let mut cs = Shared::<[f32]>::new_slice(comptime!(64usize * 68));

    let mut c00 = unsafe { cmma::Matrix::<f32>::uninitialized(cmma::MatrixIdent::Accumulator, 16usize, 16usize, 16usize, cmma::MatrixLayout::Undefined) };
    let mut c01 = unsafe { cmma::Matrix::<f32>::uninitialized(cmma::MatrixIdent::Accumulator, 16usize, 16usize, 16usize, cmma::MatrixLayout::Undefined) };
    let mut c10 = unsafe { cmma::Matrix::<f32>::uninitialized(cmma::MatrixIdent::Accumulator, 16usize, 16usize, 16usize, cmma::MatrixLayout::Undefined) };
    let mut c11 = unsafe { cmma::Matrix::<f32>::uninitialized(cmma::MatrixIdent::Accumulator, 16usize, 16usize, 16usize, cmma::MatrixLayout::Undefined) };
    cmma::fill(&mut c00, 0.0f32);
    cmma::fill(&mut c01, 0.0f32);
    cmma::fill(&mut c10, 0.0f32);
    cmma::fill(&mut c11, 0.0f32);
    let mut a0 = unsafe { cmma::Matrix::<F>::uninitialized(cmma::MatrixIdent::A, 16usize, 16usize, 16usize, cmma::MatrixLayout::RowMajor) };
    let mut a1 = unsafe { cmma::Matrix::<F>::uninitialized(cmma::MatrixIdent::A, 16usize, 16usize, 16usize, cmma::MatrixLayout::RowMajor) };
    let mut b0 = unsafe { cmma::Matrix::<F>::uninitialized(cmma::MatrixIdent::B, 16usize, 16usize, 16usize, cmma::MatrixLayout::ColMajor) };
    let mut b1 = unsafe { cmma::Matrix::<F>::uninitialized(cmma::MatrixIdent::B, 16usize, 16usize, 16usize, cmma::MatrixLayout::ColMajor) };

    // The first slab in registers.
    let mut xr = Array::<Vector<F, N>>::new(loads);
    let mut wr = Array::<Vector<F, N>>::new(loads);
    load_slab::<F, N>(x, &mut xr, m0, m, kv, s0 * per_row, unit, per_row, loads);
    load_w_slab::<F, N>(w0, w1, w2, sel, &mut wr, n0, n, kv, s0 * per_row, unit, per_row, loads);
    for s in s0..s1 {
        store_slab::<F, N>(&mut xs, &xr, unit, per_row, loads, vs);
        store_slab::<F, N>(&mut ws, &wr, unit, per_row, loads, vs);
        sync_cube();
        if s + 1 < s1 {
            load_slab::<F, N>(x, &mut xr, m0, m, kv, (s + 1) * per_row, unit, per_row, loads);
            load_w_slab::<F, N>(w0, w1, w2, sel, &mut wr, n0, n, kv, (s + 1) * per_row, unit, per_row, loads);
        }
        #[unroll]
        for kk in 0..4usize {
            let a_off = pm * 72 + kk * 16;
            let b_off = pn * 72 + kk * 16;
            cmma::load(&mut a0, xs.slice(a_off, a_off + A_SPAN), 72);
            cmma::load(&mut a1, xs.slice(a_off + 1152usize, a_off + 1152usize + A_SPAN), 72);
            cmma::load(&mut b0, ws.slice(b_off, b_off + A_SPAN), 72);
            cmma::load(&mut b1, ws.slice(b_off + 1152usize, b_off + 1152usize + A_SPAN), 72);
            cmma::execute(&a0, &b0, &c00, &c00);
            cmma::execute(&a0, &b1, &c01, &c01);
            cmma::execute(&a1, &b0, &c10, &c10);
            cmma::execute(&a1, &b1, &c11, &c11);
        }
        sync_cube();
    }

    // Accumulators through shared memory, then rounded to F and written in bounds.
    let c_off = pm * 68 + pn;
    cmma::store(cs.slice_mut(c_off, c_off + C_SPAN), &c00, 68, cmma::MatrixLayout::RowMajor);
    cmma::store(cs.slice_mut(c_off + 16, c_off + 16 + C_SPAN), &c01, 68, cmma::MatrixLayout::RowMajor);
    cmma::store(cs.slice_mut(c_off + 1088usize, c_off + 1088usize + C_SPAN), &c10, 68, cmma::MatrixLayout::RowMajor);
    cmma::store(cs.slice_mut(c_off + 1088usize + 16, c_off + 1088usize + 16 + C_SPAN), &c11, 68, cmma::MatrixLayout::RowMajor);
    sync_cube();
    #[unroll]
    for i in 0..32usize {
        let idx = unit + i * 128;
        let r = idx / 64;
        let c = idx % 64;
        if m0 + r < m && n0 + c < n {
            let at = (m0 + r) * total + col0 + n0 + c;
            if split {
                part[z * m * total + at] = cs[r * 68 + c];
            } else {
                out[at] = F::cast_from(cs[r * 68 + c]);
            }
        }
    }
}

/// `out[i] = sum over z of part[z, i]` in f32 (z in order), rounded once to F: the k splits of
/// [`tc_linear_kernel`] added up. One unit per output element.
#[cube(launch_unchecked)]
pub(super) fn split_sum_kernel<F: Float>(
    part: &Tensor<f32>,  // [splits, len] contiguous
    out: &mut Tensor<F>, // [len] contiguous
    splits: u32,
    #[define(F)] _dtype: ElemType,
) {
    let len = out.len();
    let i = ABSOLUTE_POS;
    if i < len {
        let mut acc = 0.0f32;
        for z in 0..splits as usize {
            acc += part[z * len + i];
        }
        out[i] = F::cast_from(acc);
    }
}

/// [`load_slab`] from weight `sel` of three.
#[cube]
#[allow(clippy::too_many_arguments)]
fn load_w_slab<F: Float, N: Size>(
    w0: &Tensor<Vector<F, N>>,
    w1: &Tensor<Vector<F, N>>,
    w2: &Tensor<Vector<F, N>>,
    sel: u32,
    regs: &mut Array<Vector<F, N>>,
    row0: usize,
    rows: usize,
    kv: usize,
    k_vec: usize,
    unit: usize,
    #[comptime] per_row: usize,
    #[comptime] loads: usize,
) {
    if sel == 0 {
        load_slab::<F, N>(w0, regs, row0, rows, kv, k_vec, unit, per_row, loads);
    } else if sel == 1 {
        load_slab::<F, N>(w1, regs, row0, rows, kv, k_vec, unit, per_row, loads);
    } else {
        load_slab::<F, N>(w2, regs, row0, rows, kv, k_vec, unit, per_row, loads);
    }
}

/// Loads a 64-row slab (`vs`-element vectors `k_vec.. + 64 / vs` of rows `row0..row0 + 64`)
/// into `regs`: unit `u` takes vector `u % per_row` of rows `u / per_row + j * 128 / per_row`;
/// rows past `rows` as zeros.
#[cube]
#[allow(clippy::too_many_arguments)]
pub(super) fn load_slab<F: Float, N: Size>(
    t: &Tensor<Vector<F, N>>,
    regs: &mut Array<Vector<F, N>>,
    row0: usize,
    rows: usize,
    kv: usize,
    k_vec: usize,
    unit: usize,
    #[comptime] per_row: usize,
    #[comptime] loads: usize,
) {
    #[unroll]
    for j in 0..loads {
        let idx = unit + j * 128;
        let r = idx / per_row;
        let c = idx % per_row;
        let mut v = Vector::<F, N>::new(F::new(0.0));
        if row0 + r < rows {
            v = t[(row0 + r) * kv + k_vec + c];
        }
        regs[j] = v;
    }
}

/// Stores a slab loaded by [`load_slab`] to shared memory, rows 72 elements apart.
#[cube]
pub(super) fn store_slab<F: Float, N: Size>(
    s: &mut Shared<[F]>,
    regs: &Array<Vector<F, N>>,
    unit: usize,
    #[comptime] per_row: usize,
    #[comptime] loads: usize,
    #[comptime] vs: usize,
) {
    #[unroll]
    for j in 0..loads {
        let idx = unit + j * 128;
        let r = idx / per_row;
        let c = idx % per_row;
        let v = regs[j];
        #[unroll]
        for e in 0..vs {
            s[r * 72 + c * vs + e] = v.extract(e);
        }
    }
}
