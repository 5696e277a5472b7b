use cubecl::prelude::*;

/// `out = silu(gate) * up`, elementwise. `f32_internal = false` rounds SiLU's result to F before
/// the product (PyTorch: `act_fn(gate) * up`, two kernels); `true` rounds once.
#[cube(launch)]
pub(super) fn silu_mul_kernel<F: Float>(
    gate: &Tensor<F>,    // [rows, n]
    up: &Tensor<F>,      // [rows, n]
    out: &mut Tensor<F>, // [rows, n]
    #[comptime] f32_internal: bool,
    #[define(F)] _dtype: ElemType,
) {
    let i = ABSOLUTE_POS;
    if i >= out.len() {
        terminate!();
    }
    let g = f32::cast_from(gate[i]);
    let u = f32::cast_from(up[i]);
    let act = g / (1.0f32 + (-g).exp());
    if f32_internal {
        out[i] = F::cast_from(act * u);
    } else {
        out[i] = F::cast_from(f32::cast_from(F::cast_from(act)) * u);
    }
}
