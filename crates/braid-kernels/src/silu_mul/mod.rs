//! Fused SiLU(gate) * up, the SwiGLU activation between Qwen3's gate/up and down projections.

mod kernel;

use cubecl::prelude::*;
use cubecl::std::tensor::TensorHandle;

use crate::check::{Check, output_like};
use crate::{KernelError, Precision};

const NAME: &str = "silu_mul";

/// `gate, up: [rows, n]` -> `silu(gate) * up: [rows, n]`.
pub fn silu_mul(
    client: &Client,
    gate: TensorHandle,
    up: TensorHandle,
    precision: Precision,
) -> Result<TensorHandle, KernelError> {
    let c = Check::new(NAME);
    let [rows, n] = c.matrix("gate", &gate)?;
    c.shape("up", &up, &[rows, n])?;
    c.same_dtype("up", &up, gate.dtype)?;
    let dtype = gate.dtype;
    let out = output_like(client, &[rows, n], dtype);
    let len = rows * n;
    if len == 0 {
        return Ok(out);
    }
    let cube_dim = CubeDim::new_1d(256);
    kernel::silu_mul_kernel::launch(
        client,
        cubecl::calculate_cube_count_elemwise(client, len, cube_dim),
        cube_dim,
        gate.into_arg(),
        up.into_arg(),
        out.clone().into_arg(),
        precision.f32_internal(),
        dtype,
    );
    Ok(out)
}
