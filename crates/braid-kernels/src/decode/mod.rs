//! Graph-ready decode: the ops of a batch-1 decode step whose position and token live in a
//! device buffer (`state: [token, position]`, u32) instead of launch arguments, so one captured
//! CUDA graph replays every step. `inputs` gathers the token's embedding and the position's RoPE
//! rows, `kv_write` appends to the cache in place, `advance` moves the state on by the step's
//! greedy token and records it in `history`. Attention reads the position from the same buffer
//! (`attention::attention_at`).

mod kernel;

use cubecl::prelude::*;
use cubecl::std::tensor::TensorHandle;

use crate::KernelError;
use crate::check::{Check, output_like};

const BLOCK: u32 = 256;

fn u32_type() -> ElemType {
    ElemType::UInt(cubecl::ir::UIntKind::U32)
}

fn check_state(c: &Check, state: &TensorHandle) -> Result<(), KernelError> {
    c.shape("state", state, &[2])?;
    if state.dtype != u32_type() {
        return Err(KernelError::DType {
            kernel: "decode",
            tensor: "state",
            got: format!("{}", state.dtype),
            expected: "u32".into(),
        });
    }
    Ok(())
}

fn cubes(n: usize) -> CubeCount {
    CubeCount::new_1d((n as u32).div_ceil(BLOCK).max(1))
}

/// `embed: [vocab, hidden]`, f32 `cos_table, sin_table: [capacity, hd]`, `state: [2]` u32 ->
/// `(x: [1, hidden], cos: [1, hd], sin: [1, hd])`. The token and position must be in range
/// (`state` is written by [`advance`] and by the host; the kernel does not check it).
pub fn inputs(
    client: &Client,
    embed: TensorHandle,
    cos_table: TensorHandle,
    sin_table: TensorHandle,
    state: TensorHandle,
) -> Result<(TensorHandle, TensorHandle, TensorHandle), KernelError> {
    let c = Check::new("decode_inputs");
    let [_, hidden] = c.matrix("embed", &embed)?;
    let [_, hd] = c.matrix("cos_table", &cos_table)?;
    let x = output_like(client, &[1, hidden], embed.dtype);
    let cos = output_like(client, &[1, hd], cos_table.dtype);
    let sin = output_like(client, &[1, hd], cos_table.dtype);
    inputs_into(client, embed, cos_table, sin_table, state, &x, &cos, &sin)?;
    Ok((x, cos, sin))
}

/// [`inputs`] into `x: [1, hidden]`, f32 `cos, sin: [1, hd]` (contiguous), in place: how a
/// captured step writes the next step's inputs where the next step reads them.
#[allow(clippy::too_many_arguments)]
pub fn inputs_into(
    client: &Client,
    embed: TensorHandle,
    cos_table: TensorHandle,
    sin_table: TensorHandle,
    state: TensorHandle,
    x: &TensorHandle,
    cos: &TensorHandle,
    sin: &TensorHandle,
) -> Result<(), KernelError> {
    let c = Check::new("decode_inputs");
    let [_, hidden] = c.matrix("embed", &embed)?;
    let [cap, hd] = c.matrix("cos_table", &cos_table)?;
    c.shape("sin_table", &sin_table, &[cap, hd])?;
    let f32_t = ElemType::Float(cubecl::ir::FloatKind::F32);
    for (name, t) in [("cos_table", &cos_table), ("sin_table", &sin_table), ("cos", cos), ("sin", sin)] {
        c.same_dtype(name, t, f32_t)?;
    }
    c.shape("x", x, &[1, hidden])?;
    c.same_dtype("x", x, embed.dtype)?;
    c.shape("cos", cos, &[1, hd])?;
    c.shape("sin", sin, &[1, hd])?;
    for (name, t) in [("x", x), ("cos", cos), ("sin", sin)] {
        c.contiguous(name, t)?;
    }
    check_state(&c, &state)?;
    let dtype = embed.dtype;
    kernel::inputs_kernel::launch(
        client,
        cubes(hidden + 2 * hd),
        CubeDim::new_1d(BLOCK),
        embed.into_arg(),
        cos_table.into_arg(),
        sin_table.into_arg(),
        state.into_arg(),
        x.clone().into_arg(),
        cos.clone().into_arg(),
        sin.clone().into_arg(),
        dtype,
    );
    Ok(())
}

/// Writes `k, v: [batch, kv, 1, hd]` (contiguous) into `k_cache, v_cache: [batch, kv,
/// capacity, hd]` at position `state[1]`, in place (`state[1] < capacity` is the caller's
/// invariant).
pub fn kv_write(
    client: &Client,
    k_cache: &TensorHandle,
    v_cache: &TensorHandle,
    k: TensorHandle,
    v: TensorHandle,
    state: TensorHandle,
) -> Result<(), KernelError> {
    let c = Check::new("kv_write");
    let ks = k.shape().to_vec();
    if ks.len() != 4 || ks[2] != 1 {
        return Err(c.shape_err("k", &k, "[batch, kv_heads, 1, head_dim]".into()));
    }
    c.shape("k", &k, &ks)?;
    c.shape("v", &v, &ks)?;
    for (name, t) in [("k_cache", k_cache), ("v_cache", v_cache)] {
        let s = t.shape();
        if s.len() != 4 || s[0] != ks[0] || s[1] != ks[1] || s[3] != ks[3] || s[2] == 0 {
            return Err(c.shape_err(name, t, format!("[{}, {}, capacity, {}]", ks[0], ks[1], ks[3])));
        }
        if ks[3] > 1 && t.strides()[3] != 1 {
            return Err(KernelError::Layout { kernel: "kv_write", tensor: name, strides: t.strides().to_vec() });
        }
        c.same_dtype(name, t, k.dtype)?;
    }
    c.same_dtype("v", &v, k.dtype)?;
    check_state(&c, &state)?;
    let n = ks[0] * ks[1] * ks[3];
    kernel::kv_write_kernel::launch(
        client,
        cubes(n),
        CubeDim::new_1d(BLOCK),
        k_cache.clone().into_arg(),
        v_cache.clone().into_arg(),
        k.into_arg(),
        v.into_arg(),
        state.into_arg(),
        k_cache.dtype,
    );
    Ok(())
}

/// `ids: [1]` u32 (the step's argmax) -> `state = [ids[0], state[1] + 1]`,
/// `history[state[1]] = ids[0]` (skipped past the end of `history`), in place.
pub fn advance(client: &Client, ids: TensorHandle, state: &TensorHandle, history: &TensorHandle) -> Result<(), KernelError> {
    let c = Check::new("advance");
    c.shape("ids", &ids, &[1])?;
    check_state(&c, state)?;
    let cap = history.shape().first().copied().unwrap_or(0);
    c.shape("history", history, &[cap])?;
    for (name, t) in [("ids", &ids), ("history", history)] {
        if t.dtype != u32_type() {
            return Err(KernelError::DType { kernel: "advance", tensor: name, got: format!("{}", t.dtype), expected: "u32".into() });
        }
    }
    kernel::advance_kernel::launch(
        client,
        CubeCount::new_1d(1),
        CubeDim::new_1d(32),
        ids.into_arg(),
        state.clone().into_arg(),
        history.clone().into_arg(),
    );
    Ok(())
}

fn check_u32(c: &Check, kernel: &'static str, name: &'static str, t: &TensorHandle) -> Result<(), KernelError> {
    c.contiguous(name, t)?;
    if t.dtype != u32_type() {
        return Err(KernelError::DType { kernel, tensor: name, got: format!("{}", t.dtype), expected: "u32".into() });
    }
    Ok(())
}

/// The inputs of a batched decode step read from device buffers (so a captured graph replays
/// it unchanged): `embed: [vocab, hidden]`, f32 `cos_table, sin_table: [capacity, hd]`,
/// `ids, pos: [rows]` u32 -> `(x: [rows, hidden], cos: [rows, hd], sin: [rows, hd])`. Ids and
/// positions in range are the caller's invariants (the kernel does not check device data).
pub fn batch_inputs(
    client: &Client,
    embed: TensorHandle,
    cos_table: TensorHandle,
    sin_table: TensorHandle,
    ids: TensorHandle,
    pos: TensorHandle,
) -> Result<(TensorHandle, TensorHandle, TensorHandle), KernelError> {
    let c = Check::new("batch_inputs");
    let [_, hidden] = c.matrix("embed", &embed)?;
    let [cap, hd] = c.matrix("cos_table", &cos_table)?;
    c.shape("sin_table", &sin_table, &[cap, hd])?;
    c.same_dtype("cos_table", &cos_table, ElemType::Float(cubecl::ir::FloatKind::F32))?;
    c.same_dtype("sin_table", &sin_table, ElemType::Float(cubecl::ir::FloatKind::F32))?;
    let rows = ids.shape().first().copied().unwrap_or(0);
    c.shape("ids", &ids, &[rows])?;
    c.shape("pos", &pos, &[rows])?;
    check_u32(&c, "batch_inputs", "ids", &ids)?;
    check_u32(&c, "batch_inputs", "pos", &pos)?;
    let dtype = embed.dtype;
    let f32_t = cos_table.dtype;
    let x = output_like(client, &[rows, hidden], dtype);
    let cos = output_like(client, &[rows, hd], f32_t);
    let sin = output_like(client, &[rows, hd], f32_t);
    if rows == 0 {
        return Ok((x, cos, sin));
    }
    kernel::rows_kernel::launch(
        client,
        CubeCount::new_2d(((hidden + 2 * hd) as u32).div_ceil(BLOCK), rows as u32),
        CubeDim::new_1d(BLOCK),
        embed.into_arg(),
        cos_table.into_arg(),
        sin_table.into_arg(),
        ids.into_arg(),
        pos.into_arg(),
        x.clone().into_arg(),
        cos.clone().into_arg(),
        sin.clone().into_arg(),
        dtype,
    );
    Ok((x, cos, sin))
}

/// Copies `src` into `dst` (both `[n]` u32, contiguous) in place: how a captured graph's input
/// buffer gets the next step's data.
pub fn copy_into(client: &Client, dst: &TensorHandle, src: TensorHandle) -> Result<(), KernelError> {
    let c = Check::new("copy_into");
    let n = dst.shape().first().copied().unwrap_or(0);
    c.shape("dst", dst, &[n])?;
    c.shape("src", &src, &[n])?;
    check_u32(&c, "copy_into", "dst", dst)?;
    check_u32(&c, "copy_into", "src", &src)?;
    if n == 0 {
        return Ok(());
    }
    kernel::copy_kernel::launch(client, cubes(n), CubeDim::new_1d(BLOCK), src.into_arg(), dst.clone().into_arg());
    Ok(())
}
