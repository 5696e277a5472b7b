//! `x @ w^T` on the tensor cores (CubeCL's cooperative matrices, 16x16x16 in f16/bf16 with f32
//! accumulation) for the projections past the GEMV's row limits, where Burn's matmul reached
//! 13-29% of cuBLAS on the H100 (2026-11-26).

mod kernel;

use std::sync::OnceLock;

use cubecl::features::MmaConfig;
use cubecl::prelude::*;
use cubecl::std::tensor::TensorHandle;

use crate::KernelError;
use crate::check::{Check, output_like};

const NAME: &str = "tc_linear";
/// Rows and columns of one cube's output tile, and the k step.
pub const TILE: usize = 64;

/// Whether [`tc_linear`] runs on this device for `dtype` (16x16x16 cooperative matrices with
/// f32 accumulation) and for an input width `k`; `$BRAID_TC_LINEAR=0` turns it off (for
/// comparisons; read once per process).
pub fn tc_linear_supported(client: &Client, dtype: ElemType, k: usize) -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    let on = *ON.get_or_init(|| std::env::var("BRAID_TC_LINEAR").map_or(true, |s| s.trim() != "0"));
    let f32_t = ElemType::Float(cubecl::ir::FloatKind::F32);
    let config = MmaConfig { a_type: dtype, b_type: dtype, cd_type: f32_t, m: 16, n: 16, k: 16 };
    on && dtype.size() == 2 && k.is_multiple_of(TILE) && client.properties().features.matmul.cmma.contains(&config)
}

/// `x: [m, k] @ w^T` with `w: [n, k]` (both contiguous, f16 or bf16) -> `[m, n]`, f32
/// accumulation, rounded once. Errors where [`tc_linear_supported`] says no.
pub fn tc_linear(client: &Client, x: TensorHandle, w: TensorHandle) -> Result<TensorHandle, KernelError> {
    tc_linear_cat(client, x, &[w])
}

/// `[x @ w_0^T | x @ w_1^T | ...]` -> `[m, sum n_i]` in one output (e.g. q | k | v), one launch
/// per weight, as [`tc_linear`].
pub fn tc_linear_cat(client: &Client, x: TensorHandle, ws: &[TensorHandle]) -> Result<TensorHandle, KernelError> {
    let c = Check::new(NAME);
    let [m, k] = c.matrix("x", &x)?;
    let mut total = 0;
    for w in ws {
        let [n, kw] = c.matrix("w", w)?;
        if kw != k {
            return Err(c.shape_err("w", w, format!("[_, {k}]")));
        }
        c.same_dtype("w", w, x.dtype)?;
        total += n;
    }
    if !tc_linear_supported(client, x.dtype, k) {
        return Err(KernelError::Unsupported {
            kernel: NAME,
            what: format!("{} with k = {k}", x.dtype),
            why: format!("needs 16x16x16 cooperative matrices in this dtype with f32 accumulation and k a multiple of {TILE}"),
        });
    }
    let out = output_like(client, &[m, total], x.dtype);
    let mut col = 0;
    for w in ws {
        if m * w.shape()[0] > 0 {
            launch(client, &x, w, &out, col);
        }
        col += w.shape()[0];
    }
    Ok(out)
}

fn launch(client: &Client, x: &TensorHandle, w: &TensorHandle, out: &TensorHandle, col0: usize) {
    let (m, n) = (x.shape()[0], w.shape()[0]);
    let vector = 16 / x.dtype.size();
    kernel::tc_linear_kernel::launch(
        client,
        CubeCount::new_2d(n.div_ceil(TILE) as u32, m.div_ceil(TILE) as u32),
        CubeDim::new_2d(32, 4),
        vector,
        x.clone().into_arg(),
        w.clone().into_arg(),
        out.clone().into_arg(),
        col0 as u32,
        x.dtype,
    );
}
