use cubecl::prelude::*;

use crate::reduce::block_sum;

/// One cube per row: `h = residual + x` (written to `residual_out`), then
/// `out = rmsnorm(h) * weight`. With `with_residual = false`, `h = x`: a plain RMSNorm
/// (`residual` is not read and `residual_out` not written).
///
/// `f32_internal = false` rounds where PyTorch does: `h` to F, the normalised value to F, the
/// product with the weight to F. `true` keeps `h` and the normalised value in f32 and rounds
/// once (`residual_out` is still the rounded sum: it is what the next layer reads).
#[cube(launch)]
pub(super) fn add_rms_norm_kernel<F: Float>(
    residual: &Tensor<F>,         // [rows, dim]
    x: &Tensor<F>,                // [rows, dim]
    weight: &Tensor<F>,           // [dim]
    residual_out: &mut Tensor<F>, // [rows, dim]
    out: &mut Tensor<F>,          // [rows, dim]
    eps: f32,
    #[comptime] f32_internal: bool,
    #[comptime] with_residual: bool,
    #[comptime] block: usize,
    #[define(F)] _dtype: ElemType,
) {
    let dim = weight.len();
    let row = CUBE_POS_X as usize;
    let base = row * dim;
    let unit = UNIT_POS_X as usize;

    // 1. Sum, written back rounded; sum of squares in f32.
    let mut sq = 0.0f32;
    let mut j = unit;
    while j < dim {
        let h = sum::<F>(residual, x, base + j, with_residual);
        let hr = F::cast_from(h);
        if with_residual {
            residual_out[base + j] = hr;
        }
        let hs = if f32_internal { h } else { f32::cast_from(hr) };
        sq += hs * hs;
        j += block;
    }
    let total = block_sum(sq, block);
    let inv = 1.0f32 / (total / f32::cast_from(dim as u32) + eps).sqrt();

    // 2. Normalise and scale.
    let mut j = unit;
    while j < dim {
        let h = sum::<F>(residual, x, base + j, with_residual);
        let w = f32::cast_from(weight[j]);
        if f32_internal {
            out[base + j] = F::cast_from(h * inv * w);
        } else {
            let hs = f32::cast_from(F::cast_from(h));
            let n = f32::cast_from(F::cast_from(hs * inv));
            out[base + j] = F::cast_from(n * w);
        }
        j += block;
    }
}

/// `residual[i] + x[i]` in f32, or `x[i]` alone.
#[cube]
fn sum<F: Float>(residual: &Tensor<F>, x: &Tensor<F>, i: usize, #[comptime] with_residual: bool) -> f32 {
    if with_residual {
        f32::cast_from(residual[i]) + f32::cast_from(x[i])
    } else {
        f32::cast_from(x[i])
    }
}
