use cubecl::prelude::*;

use super::kernel::{A_SPAN, C_SPAN, load_slab, store_slab};

/// `out = silu(x @ wg^T) * (x @ wu^T)` on the tensor cores with PyTorch's rounding points: each
/// product's f32 sum rounded to F, SiLU of it rounded to F, the product rounded
/// ([`silu_mul_torch`]): the sums, their order and the roundings of
/// [`super::kernel::tc_linear_kernel`] on each weight followed by the `silu_mul` kernel in torch
/// mode, in one launch that stages each `x` slab once for both products.
///
/// Grid and tiles as `tc_linear_kernel` (x over 64-column blocks of `n`, y over 64-row blocks,
/// z over k splits), each cube holding a 64x64 tile of both products (2x2 fragments of each
/// per plane). `split = true` writes each split's f32 sums to `part: [splits, m, 2n]` (the gate
/// columns, then the up columns of each row), which [`split_silu_kernel`] adds up.
#[cube(launch_unchecked)]
pub(super) fn tc_gate_up_kernel<F: Float, N: Size>(
    x: &Tensor<Vector<F, N>>,  // [m, k] contiguous
    wg: &Tensor<Vector<F, N>>, // [n, k] contiguous
    wu: &Tensor<Vector<F, N>>, // [n, k] contiguous
    out: &mut Tensor<F>,       // [m, n] contiguous (split = false)
    part: &mut Tensor<f32>,    // [splits, m, 2n] contiguous (split = true)
    #[comptime] split: bool,
    #[define(F)] _dtype: ElemType,
) {
    let vs = x.vector_size().comptime();
    let m = x.shape(0);
    let n = wg.shape(0);
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
    let slabs = k / 64;
    let (z, splits) = (CUBE_POS_Z as usize, CUBE_COUNT_Z as usize);
    let (s0, s1) = (z * slabs / splits, (z + 1) * slabs / splits);

    let mut xs = Shared::<[F]>::new_slice(comptime!(64usize * 72));
    let mut gs = Shared::<[F]>::new_slice(comptime!(64usize * 72));
    let mut us = Shared::<[F]>::new_slice(comptime!(64usize * 72));
    let mut cs = Shared::<[f32]>::new_slice(comptime!(64usize * 68));

    let mut g00 = unsafe { cmma::Matrix::<f32>::uninitialized(cmma::MatrixIdent::Accumulator, 16usize, 16usize, 16usize, cmma::MatrixLayout::Undefined) };
    let mut g01 = unsafe { cmma::Matrix::<f32>::uninitialized(cmma::MatrixIdent::Accumulator, 16usize, 16usize, 16usize, cmma::MatrixLayout::Undefined) };
    let mut g10 = unsafe { cmma::Matrix::<f32>::uninitialized(cmma::MatrixIdent::Accumulator, 16usize, 16usize, 16usize, cmma::MatrixLayout::Undefined) };
    let mut g11 = unsafe { cmma::Matrix::<f32>::uninitialized(cmma::MatrixIdent::Accumulator, 16usize, 16usize, 16usize, cmma::MatrixLayout::Undefined) };
    let mut u00 = unsafe { cmma::Matrix::<f32>::uninitialized(cmma::MatrixIdent::Accumulator, 16usize, 16usize, 16usize, cmma::MatrixLayout::Undefined) };
    let mut u01 = unsafe { cmma::Matrix::<f32>::uninitialized(cmma::MatrixIdent::Accumulator, 16usize, 16usize, 16usize, cmma::MatrixLayout::Undefined) };
    let mut u10 = unsafe { cmma::Matrix::<f32>::uninitialized(cmma::MatrixIdent::Accumulator, 16usize, 16usize, 16usize, cmma::MatrixLayout::Undefined) };
    let mut u11 = unsafe { cmma::Matrix::<f32>::uninitialized(cmma::MatrixIdent::Accumulator, 16usize, 16usize, 16usize, cmma::MatrixLayout::Undefined) };
    cmma::fill(&mut g00, 0.0f32);
    cmma::fill(&mut g01, 0.0f32);
    cmma::fill(&mut g10, 0.0f32);
    cmma::fill(&mut g11, 0.0f32);
    cmma::fill(&mut u00, 0.0f32);
    cmma::fill(&mut u01, 0.0f32);
    cmma::fill(&mut u10, 0.0f32);
    cmma::fill(&mut u11, 0.0f32);
    let mut a0 = unsafe { cmma::Matrix::<F>::uninitialized(cmma::MatrixIdent::A, 16usize, 16usize, 16usize, cmma::MatrixLayout::RowMajor) };
    let mut a1 = unsafe { cmma::Matrix::<F>::uninitialized(cmma::MatrixIdent::A, 16usize, 16usize, 16usize, cmma::MatrixLayout::RowMajor) };
    let mut b0 = unsafe { cmma::Matrix::<F>::uninitialized(cmma::MatrixIdent::B, 16usize, 16usize, 16usize, cmma::MatrixLayout::ColMajor) };
    let mut b1 = unsafe { cmma::Matrix::<F>::uninitialized(cmma::MatrixIdent::B, 16usize, 16usize, 16usize, cmma::MatrixLayout::ColMajor) };

    // The first slab in registers.
    let mut xr = Array::<Vector<F, N>>::new(loads);
    let mut gr = Array::<Vector<F, N>>::new(loads);
    let mut ur = Array::<Vector<F, N>>::new(loads);
    load_slab::<F, N>(x, &mut xr, m0, m, kv, s0 * per_row, unit, per_row, loads);
    load_slab::<F, N>(wg, &mut gr, n0, n, kv, s0 * per_row, unit, per_row, loads);
    load_slab::<F, N>(wu, &mut ur, n0, n, kv, s0 * per_row, unit, per_row, loads);
    for s in s0..s1 {
        store_slab::<F, N>(&mut xs, &xr, unit, per_row, loads, vs);
        store_slab::<F, N>(&mut gs, &gr, unit, per_row, loads, vs);
        store_slab::<F, N>(&mut us, &ur, unit, per_row, loads, vs);
        sync_cube();
        if s + 1 < s1 {
            load_slab::<F, N>(x, &mut xr, m0, m, kv, (s + 1) * per_row, unit, per_row, loads);
            load_slab::<F, N>(wg, &mut gr, n0, n, kv, (s + 1) * per_row, unit, per_row, loads);
            load_slab::<F, N>(wu, &mut ur, n0, n, kv, (s + 1) * per_row, unit, per_row, loads);
        }
        #[unroll]
        for kk in 0..4usize {
            let a_off = pm * 72 + kk * 16;
            let b_off = pn * 72 + kk * 16;
            cmma::load(&mut a0, xs.slice(a_off, a_off + A_SPAN), 72);
            cmma::load(&mut a1, xs.slice(a_off + 1152usize, a_off + 1152usize + A_SPAN), 72);
            cmma::load(&mut b0, gs.slice(b_off, b_off + A_SPAN), 72);
            cmma::load(&mut b1, gs.slice(b_off + 1152usize, b_off + 1152usize + A_SPAN), 72);
            cmma::execute(&a0, &b0, &g00, &g00);
            cmma::execute(&a0, &b1, &g01, &g01);
            cmma::execute(&a1, &b0, &g10, &g10);
            cmma::execute(&a1, &b1, &g11, &g11);
            cmma::load(&mut b0, us.slice(b_off, b_off + A_SPAN), 72);
            cmma::load(&mut b1, us.slice(b_off + 1152usize, b_off + 1152usize + A_SPAN), 72);
            cmma::execute(&a0, &b0, &u00, &u00);
            cmma::execute(&a0, &b1, &u01, &u01);
            cmma::execute(&a1, &b0, &u10, &u10);
            cmma::execute(&a1, &b1, &u11, &u11);
        }
        sync_cube();
    }

    // The gate sums through shared memory into registers (32 a unit), then the up sums.
    let c_off = pm * 68 + pn;
    cmma::store(cs.slice_mut(c_off, c_off + C_SPAN), &g00, 68, cmma::MatrixLayout::RowMajor);
    cmma::store(cs.slice_mut(c_off + 16, c_off + 16 + C_SPAN), &g01, 68, cmma::MatrixLayout::RowMajor);
    cmma::store(cs.slice_mut(c_off + 1088usize, c_off + 1088usize + C_SPAN), &g10, 68, cmma::MatrixLayout::RowMajor);
    cmma::store(cs.slice_mut(c_off + 1088usize + 16, c_off + 1088usize + 16 + C_SPAN), &g11, 68, cmma::MatrixLayout::RowMajor);
    sync_cube();
    let mut gv = Array::<f32>::new(32usize);
    #[unroll]
    for i in 0..32usize {
        let idx = unit + i * 128;
        gv[i] = cs[(idx / 64) * 68 + idx % 64];
    }
    sync_cube();
    cmma::store(cs.slice_mut(c_off, c_off + C_SPAN), &u00, 68, cmma::MatrixLayout::RowMajor);
    cmma::store(cs.slice_mut(c_off + 16, c_off + 16 + C_SPAN), &u01, 68, cmma::MatrixLayout::RowMajor);
    cmma::store(cs.slice_mut(c_off + 1088usize, c_off + 1088usize + C_SPAN), &u10, 68, cmma::MatrixLayout::RowMajor);
    cmma::store(cs.slice_mut(c_off + 1088usize + 16, c_off + 1088usize + 16 + C_SPAN), &u11, 68, cmma::MatrixLayout::RowMajor);
    sync_cube();
    #[unroll]
    for i in 0..32usize {
        let idx = unit + i * 128;
        let r = idx / 64;
        let c = idx % 64;
        if m0 + r < m && n0 + c < n {
            let u = cs[r * 68 + c];
            if split {
                let at = z * m * 2 * n + (m0 + r) * 2 * n + n0 + c;
                part[at] = gv[i];
                part[at + n] = u;
            } else {
                out[(m0 + r) * n + n0 + c] = silu_mul_torch::<F>(gv[i], u);
            }
        }
    }
}

/// `out[r, c] = silu_mul_torch(sum over z of part[z, r, c], sum over z of part[z, r, n + c])`
/// (z in order, f32): the k splits of [`tc_gate_up_kernel`] added up. One unit per output.
#[cube(launch_unchecked)]
pub(super) fn split_silu_kernel<F: Float>(
    part: &Tensor<f32>,  // [splits, m, 2n] contiguous
    out: &mut Tensor<F>, // [m, n] contiguous
    n: u32,
    splits: u32,
    #[define(F)] _dtype: ElemType,
) {
    let len = out.len();
    let i = ABSOLUTE_POS;
    if i < len {
        let n = n as usize;
        let base = (i / n) * 2 * n + i % n;
        let mut g = 0.0f32;
        let mut u = 0.0f32;
        for z in 0..splits as usize {
            g += part[z * 2 * len + base];
            u += part[z * 2 * len + base + n];
        }
        out[i] = silu_mul_torch::<F>(g, u);
    }
}

/// PyTorch's `act_fn(gate) * up` on the f32 sums of the two products: each rounded to F (the
/// matmuls' outputs), SiLU in f32 rounded to F, the product rounded (the `silu_mul` kernel's
/// torch mode).
#[cube]
fn silu_mul_torch<F: Float>(gate_sum: f32, up_sum: f32) -> F {
    let g = f32::cast_from(F::cast_from(gate_sum));
    let u = f32::cast_from(F::cast_from(up_sum));
    let act = g / (1.0f32 + (-g).exp());
    F::cast_from(f32::cast_from(F::cast_from(act)) * u)
}
