//! Fused residual add + RMSNorm: `h = residual + x; out = rmsnorm(h) * weight`; returns both.
//! [`rms_norm`] is the same kernel without the residual.

mod kernel;

use cubecl::prelude::*;
use cubecl::std::tensor::TensorHandle;

use crate::check::{Check, output_like};
use crate::{KernelError, Precision};

const NAME: &str = "add_rms_norm";
const BLOCK: usize = 256;

/// `residual, x: [rows, dim]`, `weight: [dim]` -> `(residual + x, rmsnorm(residual + x) * weight)`.
pub fn add_rms_norm(
    client: &Client,
    residual: TensorHandle,
    x: TensorHandle,
    weight: TensorHandle,
    eps: f32,
    precision: Precision,
) -> Result<(TensorHandle, TensorHandle), KernelError> {
    let c = Check::new(NAME);
    let [rows, dim] = c.matrix("residual", &residual)?;
    c.shape("x", &x, &[rows, dim])?;
    c.shape("weight", &weight, &[dim])?;
    c.same_dtype("x", &x, residual.dtype)?;
    c.same_dtype("weight", &weight, residual.dtype)?;
    let dtype = residual.dtype;
    let residual_out = output_like(client, &[rows, dim], dtype);
    let out = output_like(client, &[rows, dim], dtype);
    if rows > 0 {
        crate::reduce::note_device(client);
        kernel::add_rms_norm_kernel::launch(
            client,
            CubeCount::new_1d(rows as u32),
            CubeDim::new_1d(BLOCK as u32),
            residual.into_arg(),
            x.into_arg(),
            weight.into_arg(),
            residual_out.clone().into_arg(),
            out.clone().into_arg(),
            eps,
            precision.f32_internal(),
            true,
            BLOCK,
            dtype,
        );
    }
    Ok((residual_out, out))
}

/// `x: [rows, dim]`, `weight: [dim]` -> `rmsnorm(x) * weight` (one kernel).
pub fn rms_norm(
    client: &Client,
    x: TensorHandle,
    weight: TensorHandle,
    eps: f32,
    precision: Precision,
) -> Result<TensorHandle, KernelError> {
    let c = Check::new("rms_norm");
    let [rows, dim] = c.matrix("x", &x)?;
    c.shape("weight", &weight, &[dim])?;
    c.same_dtype("weight", &weight, x.dtype)?;
    let dtype = x.dtype;
    let out = output_like(client, &[rows, dim], dtype);
    // Never read or written with `with_residual = false`; a distinct buffer keeps wgpu's
    // binding rules (no buffer bound twice as writable) satisfied.
    let unused = output_like(client, &[1], dtype);
    if rows > 0 {
        crate::reduce::note_device(client);
        kernel::add_rms_norm_kernel::launch(
            client,
            CubeCount::new_1d(rows as u32),
            CubeDim::new_1d(BLOCK as u32),
            x.clone().into_arg(),
            x.into_arg(),
            weight.into_arg(),
            unused.into_arg(),
            out.clone().into_arg(),
            eps,
            precision.f32_internal(),
            false,
            BLOCK,
            dtype,
        );
    }
    Ok(out)
}
