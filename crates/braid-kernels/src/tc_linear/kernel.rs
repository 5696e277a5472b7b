use cubecl::prelude::*;

/// Elements a 16x16 fragment spans in a staged slab (rows 72 apart) and in the f32 output tile
/// (rows 68 apart).
const A_SPAN: usize = 15 * 72 + 16;
const C_SPAN: usize = 15 * 68 + 16;

/// `out = x @ w^T` on the tensor cores: `x: [m, k]`, `w: [n, k]` (PyTorch's linear layout),
/// f32 accumulation, one rounding to F at the output.
///
/// Grid: x over blocks of [`BN`] output columns, y over blocks of [`BM`] rows; four planes per
/// cube (`CUBE_DIM = (32, 4)`), plane `p` computing the 32x32 quarter `(p / 2, p % 2)` of the
/// cube's 64x64 tile as 2x2 16x16x16 fragments. The k loop stages a 64x64 slab of `x` and of `w`
/// in shared memory (rows padded by 8 elements), loading the next slab into registers while
/// the fragments of the current one multiply. Rows past `m` and `n` are staged as zeros and
/// not written; `k` must be a multiple of 64 (the caller's check).
#[cube(launch)]
pub(super) fn tc_linear_kernel<F: Float, N: Size>(
    x: &Tensor<Vector<F, N>>, // [m, k] contiguous
    w: &Tensor<Vector<F, N>>, // [n, k] contiguous
    out: &mut Tensor<F>,      // [m, out_stride] (columns col0.. of a wider output allowed)
    col0: u32,
    #[define(F)] _dtype: ElemType,
) {
    let vs = x.vector_size().comptime();
    let m = x.shape(0);
    let n = w.shape(0);
    // Shapes count elements; indices count vectors.
    let k = x.shape(1);
    let kv = k / vs;
    let lane = UNIT_POS_X as usize;
    let plane = UNIT_POS_Y as usize;
    let unit = plane * 32 + lane;
    let m0 = CUBE_POS_Y as usize * 64;
    let n0 = CUBE_POS_X as usize * 64;
    let pm = (plane / 2) * 32;
    let pn = (plane % 2) * 32;
    let per_row = comptime!(64 / vs);
    let loads = comptime!(64 * (64 / vs) / 128);

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
    load_slab::<F, N>(x, &mut xr, m0, m, kv, 0, unit, per_row, loads);
    load_slab::<F, N>(w, &mut wr, n0, n, kv, 0, unit, per_row, loads);
    let slabs = k / 64;
    for s in 0..slabs {
        store_slab::<F, N>(&mut xs, &xr, unit, per_row, loads, vs);
        store_slab::<F, N>(&mut ws, &wr, unit, per_row, loads, vs);
        sync_cube();
        if s + 1 < slabs {
            load_slab::<F, N>(x, &mut xr, m0, m, kv, (s + 1) * per_row, unit, per_row, loads);
            load_slab::<F, N>(w, &mut wr, n0, n, kv, (s + 1) * per_row, unit, per_row, loads);
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
    let stride = out.stride(0);
    let col0 = col0 as usize;
    #[unroll]
    for i in 0..32usize {
        let idx = unit + i * 128;
        let r = idx / 64;
        let c = idx % 64;
        if m0 + r < m && n0 + c < n {
            out[(m0 + r) * stride + col0 + n0 + c] = F::cast_from(cs[r * 68 + c]);
        }
    }
}

/// Loads a 64-row slab (`vs`-element vectors `k_vec.. + 64 / vs` of rows `row0..row0 + 64`)
/// into `regs`: unit `u` takes vector `u % per_row` of rows `u / per_row + j * 128 / per_row`;
/// rows past `rows` as zeros.
#[cube]
#[allow(clippy::too_many_arguments)]
fn load_slab<F: Float, N: Size>(
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
fn store_slab<F: Float, N: Size>(
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
