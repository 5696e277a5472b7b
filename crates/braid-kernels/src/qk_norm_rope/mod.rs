//! Fused QK-norm + RoPE: per-head RMSNorm of q and k (weights over head_dim), NeoX rotary
//! embedding with f32 cos/sin tables, and the head-major layout of q, k and v for attention.

mod kernel;

use cubecl::prelude::*;
use cubecl::std::tensor::TensorHandle;

use crate::check::{Check, output_like};
use crate::{KernelError, Precision};

const NAME: &str = "qk_norm_rope";

/// Shapes of one call.
#[derive(Debug, Clone, Copy)]
pub struct QkShape {
    pub batch: usize,
    pub seq: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
}

/// `q: [batch * seq, heads * hd]`, `k, v: [batch * seq, kv_heads * hd]` (rows may be strided,
/// columns contiguous), `q_weight, k_weight: [hd]`, `cos, sin: [seq, hd]` f32 ->
/// `(q: [batch, heads, seq, hd], k, v: [batch, kv_heads, seq, hd])`.
#[allow(clippy::too_many_arguments)]
pub fn qk_norm_rope(
    client: &Client,
    q: TensorHandle,
    k: TensorHandle,
    v: TensorHandle,
    q_weight: TensorHandle,
    k_weight: TensorHandle,
    cos: TensorHandle,
    sin: TensorHandle,
    shape: QkShape,
    eps: f32,
    precision: Precision,
) -> Result<(TensorHandle, TensorHandle, TensorHandle), KernelError> {
    let c = Check::new(NAME);
    let QkShape { batch, seq, heads, kv_heads, head_dim: hd } = shape;
    let rows = batch * seq;
    c.rows("q", &q, &[rows, heads * hd])?;
    c.rows("k", &k, &[rows, kv_heads * hd])?;
    c.rows("v", &v, &[rows, kv_heads * hd])?;
    c.shape("q_weight", &q_weight, &[hd])?;
    c.shape("k_weight", &k_weight, &[hd])?;
    c.shape("cos", &cos, &[seq, hd])?;
    c.shape("sin", &sin, &[seq, hd])?;
    let dtype = q.dtype;
    for (name, t) in [("k", &k), ("v", &v), ("q_weight", &q_weight), ("k_weight", &k_weight)] {
        c.same_dtype(name, t, dtype)?;
    }
    let f32_ty = ElemType::Float(cubecl::ir::FloatKind::F32);
    c.same_dtype("cos", &cos, f32_ty)?;
    c.same_dtype("sin", &sin, f32_ty)?;
    if hd % 2 != 0 || hd == 0 {
        return Err(KernelError::Unsupported {
            kernel: NAME,
            what: format!("head_dim {hd}"),
            why: "RoPE pairs need an even head_dim".into(),
        });
    }
    let half = hd / 2;
    let block = half.next_power_of_two();
    let q_out = output_like(client, &[batch, heads, seq, hd], dtype);
    let k_out = output_like(client, &[batch, kv_heads, seq, hd], dtype);
    let v_out = output_like(client, &[batch, kv_heads, seq, hd], dtype);
    if rows == 0 {
        return Ok((q_out, k_out, v_out));
    }
    kernel::qk_norm_rope_kernel::launch(
        client,
        CubeCount::new_2d(rows as u32, (heads + 2 * kv_heads) as u32),
        CubeDim::new_1d(block as u32),
        q.into_arg(),
        k.into_arg(),
        v.into_arg(),
        q_weight.into_arg(),
        k_weight.into_arg(),
        cos.into_arg(),
        sin.into_arg(),
        q_out.clone().into_arg(),
        k_out.clone().into_arg(),
        v_out.clone().into_arg(),
        eps,
        precision.f32_internal(),
        half,
        block,
        dtype,
    );
    Ok((q_out, k_out, v_out))
}
