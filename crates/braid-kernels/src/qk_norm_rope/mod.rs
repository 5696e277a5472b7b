//! Fused QK-norm + RoPE: per-head RMSNorm of q and k (weights over head_dim), NeoX rotary
//! embedding with f32 cos/sin tables, and the head-major layout of q, k and v for attention.

pub(crate) mod kernel;

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

/// Where [`qk_norm_rope_into`] puts the keys and values.
#[derive(Debug, Clone, Copy)]
pub enum KvOut<'a> {
    /// New tensors `[batch, kv_heads, seq, hd]`, returned.
    New,
    /// In place into the cache `k, v: [batch, kv_heads, capacity, hd]` (last dim contiguous) at
    /// positions `state[1] + t` (`state: [2]` u32, the graph-ready decode state);
    /// `state[1] + seq <= capacity` is the caller's invariant.
    Cache { k: &'a TensorHandle, v: &'a TensorHandle, state: &'a TensorHandle },
    /// In place into the block pools `k, v: [slots, kv_heads, hd]` (last dim contiguous) at
    /// `slots[row]` (`slots: [batch * seq]` u32, in range and distinct: the caller's invariant).
    Pool { k: &'a TensorHandle, v: &'a TensorHandle, slots: &'a TensorHandle },
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
    let (q, kv) = qk_norm_rope_into(client, q, k, v, q_weight, k_weight, cos, sin, shape, eps, precision, KvOut::New)?;
    let (k, v) = kv.expect("new keys and values");
    Ok((q, k, v))
}

/// [`qk_norm_rope`] with the keys and values written where `into` says: returns `q` and, for
/// [`KvOut::New`], the new `(k, v)`.
#[allow(clippy::too_many_arguments)]
pub fn qk_norm_rope_into(
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
    into: KvOut<'_>,
) -> Result<(TensorHandle, Option<(TensorHandle, TensorHandle)>), KernelError> {
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
    // At least a plane: the norm's plane sum on CUDA shuffles among a whole warp's lanes (units
    // past `half` add zeros).
    let block = half.next_power_of_two().max(32);
    let u32_t = ElemType::UInt(cubecl::ir::UIntKind::U32);
    let q_out = output_like(client, &[batch, heads, seq, hd], dtype);
    // The u32 input a mode does not read is any u32 buffer: the other one, or a small one.
    let (k_out, v_out, state, slots, fresh) = match into {
        KvOut::New => {
            let unused = output_like(client, &[2], u32_t);
            (output_like(client, &[batch, kv_heads, seq, hd], dtype), output_like(client, &[batch, kv_heads, seq, hd], dtype), unused.clone(), unused, true)
        }
        KvOut::Cache { k: kc, v: vc, state } => {
            for (name, t) in [("k_cache", kc), ("v_cache", vc)] {
                let s = t.shape();
                if s.len() != 4 || s[0] != batch || s[1] != kv_heads || s[2] < seq || s[3] != hd {
                    return Err(c.shape_err(name, t, format!("[{batch}, {kv_heads}, >= {seq}, {hd}]")));
                }
                in_place_target(&c, name, t, dtype)?;
            }
            c.shape("state", state, &[2])?;
            c.same_dtype("state", state, u32_t)?;
            (kc.clone(), vc.clone(), state.clone(), state.clone(), false)
        }
        KvOut::Pool { k: kp, v: vp, slots } => {
            for (name, t) in [("k_pool", kp), ("v_pool", vp)] {
                let s = t.shape();
                if s.len() != 3 || s[0] == 0 || s[1] != kv_heads || s[2] != hd {
                    return Err(c.shape_err(name, t, format!("[slots, {kv_heads}, {hd}]")));
                }
                in_place_target(&c, name, t, dtype)?;
            }
            c.shape("slots", slots, &[rows])?;
            c.same_dtype("slots", slots, u32_t)?;
            (kp.clone(), vp.clone(), slots.clone(), slots.clone(), false)
        }
    };
    let into_cache = matches!(into, KvOut::Cache { .. });
    let into_pool = matches!(into, KvOut::Pool { .. });
    let kv = fresh.then(|| (k_out.clone(), v_out.clone()));
    if rows == 0 {
        return Ok((q_out, kv));
    }
    crate::reduce::note_device(client);
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
        k_out.into_arg(),
        v_out.into_arg(),
        state.into_arg(),
        slots.into_arg(),
        eps,
        precision.f32_internal(),
        into_cache,
        into_pool,
        half,
        block,
        late_tables(),
        dtype,
    );
    Ok((q_out, kv))
}

/// `$BRAID_QK_ROPE_LATE_TABLES=1`: load cos/sin after the norm's reduction, as before
/// 2026-11-26 (for comparisons; read once per process).
fn late_tables() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("BRAID_QK_ROPE_LATE_TABLES").is_ok_and(|s| s.trim() == "1"))
}

/// A cache or pool written in place: the activation dtype, the last dim contiguous.
fn in_place_target(c: &Check, name: &'static str, t: &TensorHandle, dtype: ElemType) -> Result<(), KernelError> {
    c.same_dtype(name, t, dtype)?;
    if t.shape().last().copied().unwrap_or(0) > 1 && t.strides().last() != Some(&1) {
        return Err(KernelError::Layout { kernel: NAME, tensor: name, strides: t.strides().to_vec() });
    }
    Ok(())
}
