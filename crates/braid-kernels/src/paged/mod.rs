//! The paged KV cache's write: new keys and values go to the slots the block manager assigned
//! them (`slot = block * PAGE_SIZE + offset`) in pools `[blocks * PAGE_SIZE, kv_heads, hd]`.
//! Attention reads them back through the block table (`attention::paged_attention`).

mod kernel;

use cubecl::prelude::*;
use cubecl::std::tensor::TensorHandle;

use crate::KernelError;
use crate::check::Check;

const BLOCK: u32 = 256;

/// Writes `k, v: [1, kv_heads, rows, hd]` (last dim contiguous) into `k_pool, v_pool:
/// [slots, kv_heads, hd]` at `slots: [rows]` (u32), in place. Slots in range and distinct are
/// the caller's invariants.
pub fn kv_write(
    client: &Client,
    k_pool: &TensorHandle,
    v_pool: &TensorHandle,
    k: TensorHandle,
    v: TensorHandle,
    slots: TensorHandle,
) -> Result<(), KernelError> {
    let c = Check::new("paged_kv_write");
    let ks = k.shape().to_vec();
    if ks.len() != 4 || ks[0] != 1 {
        return Err(c.shape_err("k", &k, "[1, kv_heads, rows, head_dim]".into()));
    }
    let [_, kv, rows, hd] = [ks[0], ks[1], ks[2], ks[3]];
    for (name, t) in [("k", &k), ("v", &v)] {
        if t.shape().to_vec() != ks {
            return Err(c.shape_err(name, t, format!("{ks:?}")));
        }
        if hd > 1 && t.strides()[3] != 1 {
            return Err(KernelError::Layout { kernel: "paged_kv_write", tensor: name, strides: t.strides().to_vec() });
        }
        c.same_dtype(name, t, k_pool.dtype)?;
    }
    for (name, t) in [("k_pool", k_pool), ("v_pool", v_pool)] {
        let s = t.shape();
        if s.len() != 3 || s[1] != kv || s[2] != hd || s[0] == 0 {
            return Err(c.shape_err(name, t, format!("[slots, {kv}, {hd}]")));
        }
        if hd > 1 && t.strides()[2] != 1 {
            return Err(KernelError::Layout { kernel: "paged_kv_write", tensor: name, strides: t.strides().to_vec() });
        }
    }
    c.same_dtype("v_pool", v_pool, k_pool.dtype)?;
    c.shape("slots", &slots, &[rows])?;
    if slots.dtype != ElemType::UInt(cubecl::ir::UIntKind::U32) {
        return Err(KernelError::DType { kernel: "paged_kv_write", tensor: "slots", got: format!("{}", slots.dtype), expected: "u32".into() });
    }
    let n = rows * kv * hd;
    if n == 0 {
        return Ok(());
    }
    kernel::kv_write_kernel::launch(
        client,
        CubeCount::new_1d((n as u32).div_ceil(BLOCK)),
        CubeDim::new_1d(BLOCK),
        k_pool.clone().into_arg(),
        v_pool.clone().into_arg(),
        k.into_arg(),
        v.into_arg(),
        slots.into_arg(),
        k_pool.dtype,
    );
    Ok(())
}
