//! The batch-1 decode step's end in two launches: the last residual add, the final RMSNorm,
//! the head (logits) and the greedy pick, each cube keeping only its rows' best logit
//! ([`kernel::head_argmax_kernel`]); then one cube picks the best of those, moves the decode
//! state on and gathers the next step's inputs ([`kernel::argmax_advance_inputs_kernel`], or
//! [`kernel::argmax_advance_kernel`] and `decode::inputs_into` where the device binds too few
//! buffers). It replaces `add_rms_norm`, `gemv::linear`, `argmax` (two launches at batch 1),
//! `decode::advance` and the next step's `decode::inputs`, with their bits: the same normalised
//! row, the same logits rounded as stored, the same pick (the first index of the largest), the
//! same state and inputs.

mod kernel;

use cubecl::features::Plane;
use cubecl::prelude::*;
use cubecl::std::tensor::TensorHandle;

use crate::check::{Check, output_like};
use crate::gemv::{GemvConfig, GemvStrategy, SHARED_F32};
use crate::{KernelError, Precision};

const NAME: &str = "greedy_head";
/// Units of the head's cubes (as `gemv`'s).
const BLOCK: usize = 256;
/// Units of the picking cube, at most, and the partials each has in flight.
const PICK_BLOCK: usize = 1024;
const PICK_BATCH: usize = 4;

/// Where [`greedy_head`] also writes the next step's inputs, as `decode::inputs` gathers them
/// from the new state: `embed: [vocab, hidden]` (the head's dtype), f32 `cos_table, sin_table:
/// [capacity, hd]`, and the outputs, written in place: `x: [1, hidden]`, f32 `cos, sin: [1, hd]`.
pub struct NextInputs {
    pub embed: TensorHandle,
    pub cos_table: TensorHandle,
    pub sin_table: TensorHandle,
    pub x: TensorHandle,
    pub cos: TensorHandle,
    pub sin: TensorHandle,
}

fn u32_type() -> ElemType {
    ElemType::UInt(cubecl::ir::UIntKind::U32)
}

/// `x, residual: [1, hidden]`, `gamma: [hidden]`, `w: [vocab, hidden]` (one float dtype),
/// `state: [2]` u32 (token, position), `history: [capacity]` u32: the greedy token of
/// `(rmsnorm(residual + x) * gamma) @ w^T` (`precision`: the norm's rounding points, as
/// `add_rms_norm`'s), then `state = [token, state[1] + 1]` and `history[state[1] + 1] = token`
/// in place. `config`: how the head's rows are spread over cubes (`gemv`'s candidates).
/// `norm_inside`: every head cube redoes the add and the norm as it stages its input (two
/// launches in all); else one `add_rms_norm` launch first (three). With `next`, the picking
/// cube also writes the next step's inputs (one launch more where the device binds too few
/// buffers for that kernel).
#[allow(clippy::too_many_arguments)]
pub fn greedy_head(
    client: &Client,
    residual: TensorHandle,
    x: TensorHandle,
    gamma: TensorHandle,
    eps: f32,
    precision: Precision,
    w: TensorHandle,
    state: &TensorHandle,
    history: &TensorHandle,
    config: GemvConfig,
    norm_inside: bool,
    next: Option<NextInputs>,
) -> Result<(), KernelError> {
    let c = Check::new(NAME);
    let [rows, hidden] = c.matrix("x", &x)?;
    if rows != 1 {
        return Err(c.shape_err("x", &x, format!("[1, {hidden}] (one row: the batch-1 step)")));
    }
    c.shape("residual", &residual, &[1, hidden])?;
    c.shape("gamma", &gamma, &[hidden])?;
    let [vocab, _] = c.matrix("w", &w)?;
    c.shape("w", &w, &[vocab, hidden])?;
    let dtype = x.dtype;
    for (name, t) in [("residual", &residual), ("gamma", &gamma), ("w", &w)] {
        c.same_dtype(name, t, dtype)?;
    }
    if vocab == 0 || vocab >= u32::MAX as usize {
        return Err(c.shape_err("w", &w, "[1..u32::MAX, hidden]".into()));
    }
    if hidden > SHARED_F32 {
        return Err(KernelError::Unsupported {
            kernel: NAME,
            what: format!("input width {hidden}"),
            why: format!("a staged row must fit {SHARED_F32} f32 of shared memory"),
        });
    }
    c.shape("state", state, &[2])?;
    let cap = history.shape().first().copied().unwrap_or(0);
    c.shape("history", history, &[cap])?;
    for (name, t) in [("state", state), ("history", history)] {
        c.contiguous(name, t)?;
        if t.dtype != u32_type() {
            return Err(KernelError::DType { kernel: NAME, tensor: name, got: format!("{}", t.dtype), expected: "u32".into() });
        }
    }
    let f32_t = ElemType::Float(cubecl::ir::FloatKind::F32);
    if let Some(n) = &next {
        // (The picked id indexes it: as many rows as the head.)
        c.shape("embed", &n.embed, &[vocab, hidden])?;
        c.same_dtype("embed", &n.embed, dtype)?;
        let [rope_cap, hd] = c.matrix("cos_table", &n.cos_table)?;
        c.shape("sin_table", &n.sin_table, &[rope_cap, hd])?;
        c.shape("x", &n.x, &[1, hidden])?;
        c.same_dtype("x", &n.x, dtype)?;
        c.shape("cos", &n.cos, &[1, hd])?;
        c.shape("sin", &n.sin, &[1, hd])?;
        for (name, t) in [("cos_table", &n.cos_table), ("sin_table", &n.sin_table), ("cos", &n.cos), ("sin", &n.sin)] {
            c.same_dtype(name, t, f32_t)?;
        }
        for (name, t) in [("x", &n.x), ("cos", &n.cos), ("sin", &n.sin)] {
            c.contiguous(name, t)?;
        }
    }
    let use_plane = match config.strategy {
        GemvStrategy::Plane if !client.properties().features.plane.contains(Plane::Ops) => {
            return Err(KernelError::Unsupported { kernel: NAME, what: format!("{config:?}"), why: "this device has no plane operations".into() });
        }
        GemvStrategy::Plane => true,
        GemvStrategy::Unit => false,
    };
    let hw = &client.properties().hardware;
    let features = if use_plane {
        let planes = (BLOCK / hw.plane_size_max.max(1) as usize).max(1);
        planes * config.features_per_plane.unwrap_or(1).max(1)
    } else {
        BLOCK
    };
    let parts = vocab.div_ceil(features);
    let mut vector = (16 / dtype.size()).max(1);
    while hidden % vector != 0 {
        vector /= 2;
    }
    let vals = output_like(client, &[parts], f32_t);
    let idxs = output_like(client, &[parts], u32_type());
    let sum = output_like(client, &[1], dtype);
    let (residual, x, gamma) = if norm_inside {
        (residual, x, gamma)
    } else {
        let (_, normed) = crate::add_rms_norm::add_rms_norm(client, residual, x, gamma.clone(), eps, precision)?;
        (normed.clone(), normed, gamma)
    };
    crate::reduce::note_device(client);
    kernel::head_argmax_kernel::launch(
        client,
        CubeCount::new_1d(parts as u32),
        CubeDim::new_1d(BLOCK as u32),
        vector,
        x.into_arg(),
        residual.into_arg(),
        sum.into_arg(),
        gamma.into_arg(),
        w.into_arg(),
        vals.clone().into_arg(),
        idxs.clone().into_arg(),
        eps,
        features as u32,
        precision.f32_internal(),
        norm_inside,
        hidden,
        BLOCK,
        use_plane,
        hw.plane_size_min.max(1) as usize,
        dtype,
    );
    // As many units as the device allows, a power of two (for the tree); with plane
    // operations at most a plane's width of planes (the pick's second plane reduction).
    let mut pick = PICK_BLOCK;
    let plane = hw.plane_size_min.max(1) as usize;
    while pick > 32 && (pick as u32 > hw.max_units_per_cube || pick as u32 > hw.max_cube_dim.0 || (use_plane && pick / plane > plane)) {
        pick /= 2;
    }
    match next {
        // Ten buffers (wgpu binds fewer on some adapters: then `decode::inputs` after).
        Some(n) if hw.max_bindings >= 10 => kernel::argmax_advance_inputs_kernel::launch(
            client,
            CubeCount::new_1d(1),
            CubeDim::new_1d(pick as u32),
            vals.into_arg(),
            idxs.into_arg(),
            state.clone().into_arg(),
            history.clone().into_arg(),
            n.embed.into_arg(),
            n.cos_table.into_arg(),
            n.sin_table.into_arg(),
            n.x.into_arg(),
            n.cos.into_arg(),
            n.sin.into_arg(),
            parts as u32,
            vocab as u32,
            pick,
            PICK_BATCH,
            use_plane,
            dtype,
        ),
        next => {
            kernel::argmax_advance_kernel::launch(
                client,
                CubeCount::new_1d(1),
                CubeDim::new_1d(pick as u32),
                vals.into_arg(),
                idxs.into_arg(),
                state.clone().into_arg(),
                history.clone().into_arg(),
                parts as u32,
                vocab as u32,
                pick,
                PICK_BATCH,
                use_plane,
            );
            if let Some(n) = next {
                crate::decode::inputs_into(client, n.embed, n.cos_table, n.sin_table, state.clone(), &n.x, &n.cos, &n.sin)?;
            }
        }
    }
    Ok(())
}
