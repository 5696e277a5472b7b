//! Fused RMSNorm + QKV projection: `[q | k | v] = rmsnorm(x) * gamma @ [wq; wk; wv]^T`, the
//! seed analysis' kernel (the GEMV kernel of [`crate::gemv`] with its RMSNorm prologue). The
//! weights stay separate tensors (as stored by HF); the output is one `[rows, nq + nk + nv]`
//! buffer the caller views as q, k and v.

use cubecl::prelude::*;
use cubecl::std::tensor::TensorHandle;

use crate::gemv::{Mode, Tuning, launch, launch_with};
use crate::{KernelError, Precision};

/// `x: [rows, hidden]`, `gamma: [hidden]`, `wq: [nq, hidden]`, `wk: [nk, hidden]`,
/// `wv: [nv, hidden]` -> `[rows, nq + nk + nv]`.
///
/// `Precision::Torch`: the normalised value is rounded to the dtype, multiplied by `gamma` in
/// the dtype (rounded again), as PyTorch feeds its matmul; `F32`: `x * inv_rms * gamma` stays
/// in f32. f32 accumulation and one output rounding in both.
#[allow(clippy::too_many_arguments)]
pub fn rms_norm_qkv(
    client: &Client,
    x: TensorHandle,
    gamma: TensorHandle,
    wq: TensorHandle,
    wk: TensorHandle,
    wv: TensorHandle,
    eps: f32,
    precision: Precision,
    tuning: Tuning,
) -> Result<TensorHandle, KernelError> {
    launch(
        "rms_norm_qkv",
        client,
        x,
        vec![("wq", wq), ("wk", wk), ("wv", wv)],
        Mode::NormQkv { gamma, eps },
        precision,
        tuning,
    )
}

/// A residual add then [`rms_norm_qkv`] in one launch: `h = residual + x` (rounded; returned),
/// then the projections of `rmsnorm(h) * gamma` with [`rms_norm_qkv`]'s rounding points.
/// Returns `(h, qkv)`, bit for bit what a rounded add followed by [`rms_norm_qkv`] gives.
#[allow(clippy::too_many_arguments)]
pub fn add_rms_norm_qkv(
    client: &Client,
    residual: TensorHandle,
    x: TensorHandle,
    gamma: TensorHandle,
    wq: TensorHandle,
    wk: TensorHandle,
    wv: TensorHandle,
    eps: f32,
    precision: Precision,
    tuning: Tuning,
) -> Result<(TensorHandle, TensorHandle), KernelError> {
    let (qkv, sum) = launch_with(
        "add_rms_norm_qkv",
        client,
        x,
        Some((residual, false)),
        vec![("wq", wq), ("wk", wk), ("wv", wv)],
        Mode::NormQkv { gamma, eps },
        precision,
        tuning,
    )?;
    Ok((sum.expect("a residual sum"), qkv))
}
