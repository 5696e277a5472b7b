//! GEMV-shaped matrix products for decode (few rows), reading each weight once at close to the
//! memory bandwidth: [`linear`] (o_proj, down_proj, lm_head), [`gate_up_silu`] (the MLP's
//! gate/up projections with the SwiGLU activation fused in), and, through
//! [`crate::rms_norm_qkv`], the fused RMSNorm + QKV projection. One kernel (`kernel.rs`) with
//! comptime modes.

pub(crate) mod kernel;
mod tune;

pub use tune::named_configs;

use cubecl::features::Plane;
use cubecl::prelude::*;
use cubecl::std::tensor::TensorHandle;

use crate::check::{Check, output_like};
use crate::{KernelError, Precision};

pub(crate) const BLOCK: usize = 256;
/// Shared memory for staged rows, in f32 elements (32 KiB), before the staging pad
/// (`kernel::stage_pad`: 32 more words a staged row, at most 1 KiB more at 8 rows).
pub const SHARED_F32: usize = 8192;

/// How the dot products are spread over units (the autotune candidates).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GemvStrategy {
    /// One plane (warp) per output feature; needs plane operations.
    Plane,
    /// One unit per output feature.
    Unit,
}

impl GemvStrategy {
    pub fn supported(self, client: &Client) -> bool {
        match self {
            GemvStrategy::Plane => client.properties().features.plane.contains(Plane::Ops),
            GemvStrategy::Unit => true,
        }
    }
}

/// Rows staged per cube: as many as fit the shared budget, at most 8, at most `rows` (a power
/// of two, so that few variants compile).
fn rows_per_cube(rows: usize, hidden: usize) -> usize {
    let fit = (SHARED_F32 / hidden).clamp(1, 8);
    let want = rows.next_power_of_two().min(8);
    let mut r = 1;
    while r * 2 <= fit.min(want) {
        r *= 2;
    }
    r
}

#[derive(Clone)]
pub(crate) enum Mode {
    /// RMSNorm with `gamma`, then the three weights, outputs concatenated.
    NormQkv { gamma: TensorHandle, eps: f32 },
    /// One weight.
    Linear,
    /// `silu(x @ gate^T) * (x @ up^T)`, with an optional RMSNorm prologue (`gamma`, `eps`).
    GateUpSilu { norm: Option<(TensorHandle, f32)> },
}

/// An optional residual add before the prologue: the input becomes `residual + x`, written
/// rounded to `sum` (`add_rms_norm`'s first output). `add_norm_semantics`: the f32 mode
/// normalises the f32 sum and rounds the normalised value (as `add_rms_norm` feeds the next op)
/// instead of normalising the rounded sum (as `rms_norm_qkv` after a residual add).
#[derive(Clone)]
pub(crate) struct Residual {
    pub(crate) residual: TensorHandle,
    pub(crate) sum: TensorHandle,
    pub(crate) add_norm_semantics: bool,
}

/// How a call is spread over the device: the candidates of the autotuner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GemvConfig {
    pub strategy: GemvStrategy,
    /// Output features per plane (Plane) before the cube moves on; `None`: a heuristic (enough
    /// cubes to fill the device). More features per cube amortise the staging of the input
    /// rows, which every cube redoes.
    pub features_per_plane: Option<usize>,
}

/// Which configuration a call uses.
#[derive(Debug, Clone)]
pub enum Tuning {
    /// This one.
    Fixed(GemvConfig),
    /// The fastest candidate for this shape on `device`, measured once per autotune key by
    /// CubeCL's tuner (`tune.rs`).
    Autotune(cubecl::Device),
}

/// One validated call: everything a launch (or a tuner's benchmark) needs.
#[derive(Clone)]
pub(crate) struct GemvCall {
    pub(crate) client: Client,
    pub(crate) x: TensorHandle,
    pub(crate) ws: [TensorHandle; 3],
    pub(crate) mode: Mode,
    pub(crate) residual: Option<Residual>,
    pub(crate) precision: Precision,
    pub(crate) out: TensorHandle,
    pub(crate) rows: usize,
    pub(crate) hidden: usize,
    pub(crate) total: usize,
}

/// Validates, allocates the output and launches with `tuning`; `ws` are 1 to 3 weights
/// `[n_i, hidden]`.
pub(crate) fn launch(
    name: &'static str,
    client: &Client,
    x: TensorHandle,
    ws: Vec<(&'static str, TensorHandle)>,
    mode: Mode,
    precision: Precision,
    tuning: Tuning,
) -> Result<TensorHandle, KernelError> {
    launch_with(name, client, x, None, ws, mode, precision, tuning).map(|(out, _)| out)
}

/// [`launch`] with an optional residual add before the prologue (`(residual, add_norm_semantics)`);
/// returns `(out, sum)` (`sum` = `residual + x` rounded, when asked).
#[allow(clippy::too_many_arguments)]
pub(crate) fn launch_with(
    name: &'static str,
    client: &Client,
    x: TensorHandle,
    residual: Option<(TensorHandle, bool)>,
    ws: Vec<(&'static str, TensorHandle)>,
    mode: Mode,
    precision: Precision,
    tuning: Tuning,
) -> Result<(TensorHandle, Option<TensorHandle>), KernelError> {
    let c = Check::new(name);
    let [rows, hidden] = c.matrix("x", &x)?;
    let dtype = x.dtype;
    let mut outs = Vec::new();
    for (wname, w) in &ws {
        let [n, h] = c.matrix(wname, w)?;
        if h != hidden {
            return Err(c.shape_err(wname, w, format!("[_, {hidden}]")));
        }
        c.same_dtype(wname, w, dtype)?;
        outs.push(n);
    }
    let gamma = match &mode {
        Mode::NormQkv { gamma, .. } | Mode::GateUpSilu { norm: Some((gamma, _)) } => Some(gamma),
        _ => None,
    };
    if let Some(gamma) = gamma {
        c.shape("gamma", gamma, &[hidden])?;
        c.same_dtype("gamma", gamma, dtype)?;
    }
    if let Some((r, _)) = &residual {
        c.shape("residual", r, &[rows, hidden])?;
        c.same_dtype("residual", r, dtype)?;
    }
    if matches!(mode, Mode::GateUpSilu { .. }) && outs[0] != outs[1] {
        return Err(c.shape_err("w_up", &ws[1].1, format!("[{}, {hidden}] like w_gate", outs[0])));
    }
    if hidden > SHARED_F32 {
        return Err(KernelError::Unsupported {
            kernel: name,
            what: format!("input width {hidden}"),
            why: format!("a staged row must fit {SHARED_F32} f32 of shared memory"),
        });
    }
    if let Tuning::Fixed(config) = &tuning
        && !config.strategy.supported(client)
    {
        return Err(KernelError::Unsupported {
            kernel: name,
            what: format!("{:?}", config.strategy),
            why: "this device has no plane operations".into(),
        });
    }
    let total = match mode {
        Mode::GateUpSilu { .. } => outs[0],
        _ => outs.iter().sum(),
    };
    let out = output_like(client, &[rows, total], dtype);
    let residual = residual.map(|(residual, add_norm_semantics)| Residual {
        residual,
        sum: output_like(client, &[rows, hidden], dtype),
        add_norm_semantics,
    });
    let sum = residual.as_ref().map(|r| r.sum.clone());
    if rows == 0 || total == 0 {
        return Ok((out, sum));
    }
    let mut ws: Vec<TensorHandle> = ws.into_iter().map(|(_, w)| w).collect();
    // Missing weights are zero-row views of the first one (never read; no allocation).
    while ws.len() < 3 {
        ws.push(TensorHandle::new_contiguous(vec![0, hidden], ws[0].handle.clone(), dtype));
    }
    let ws: [TensorHandle; 3] = ws.try_into().expect("three weights");
    let call = GemvCall { client: client.clone(), x, ws, mode, residual, precision, out: out.clone(), rows, hidden, total };
    match tuning {
        Tuning::Fixed(config) => launch_config(&call, config).map_err(|why| KernelError::Unsupported {
            kernel: name,
            what: format!("{config:?}"),
            why,
        })?,
        Tuning::Autotune(device) => tune::autotune(&device, call),
    }
    Ok((out, sum))
}

/// Launches one validated call with `config` (an `Err` for a configuration the device cannot
/// run, which the tuner skips).
pub(crate) fn launch_config(call: &GemvCall, config: GemvConfig) -> Result<(), String> {
    let client = &call.client;
    if !config.strategy.supported(client) {
        return Err("no plane operations on this device".into());
    }
    let (rows, hidden, total) = (call.rows, call.hidden, call.total);
    let dtype = call.x.dtype;
    let rpc = rows_per_cube(rows, hidden);
    let features = match config.strategy {
        GemvStrategy::Plane => {
            let planes = (BLOCK / client.properties().hardware.plane_size_max.max(1) as usize).max(1);
            // Heuristic: enough cubes to fill the device (a few per SM) while keeping the
            // staging, redone by every cube, a small share of the reads.
            let per_plane = config.features_per_plane.unwrap_or_else(|| (total / (planes * 512)).clamp(1, 4));
            planes * per_plane.max(1)
        }
        GemvStrategy::Unit => BLOCK,
    };
    // Weight rows are read in 16-byte vectors where the row length allows.
    let mut vector = (16 / dtype.size()).max(1);
    while hidden % vector != 0 {
        vector /= 2;
    }
    let [w0, w1, w2] = call.ws.clone();
    let silu = matches!(call.mode, Mode::GateUpSilu { .. });
    let (gamma, eps, normalize) = match call.mode.clone() {
        Mode::NormQkv { gamma, eps } | Mode::GateUpSilu { norm: Some((gamma, eps)) } => (gamma, eps, true),
        // Not read without the RMSNorm prologue: any read-only buffer will do.
        _ => (TensorHandle::new_contiguous(vec![1], call.x.handle.clone(), dtype), 0.0, false),
    };
    // Without a residual: `x` stands in for it (never read) and a small buffer for the sum
    // (never written; not the output: wgpu refuses two writable bindings of one buffer).
    let (residual, sum, add_residual, add_norm_semantics) = match &call.residual {
        Some(r) => (r.residual.clone(), r.sum.clone(), true, r.add_norm_semantics),
        None => (call.x.clone(), output_like(client, &[1], dtype), false, false),
    };
    crate::reduce::note_device(client);
    kernel::gemv_kernel::launch(
        client,
        CubeCount::new_2d(total.div_ceil(features) as u32, rows.div_ceil(rpc) as u32),
        CubeDim::new_1d(BLOCK as u32),
        vector,
        call.x.clone().into_arg(),
        residual.into_arg(),
        sum.into_arg(),
        gamma.into_arg(),
        w0.into_arg(),
        w1.into_arg(),
        w2.into_arg(),
        call.out.clone().into_arg(),
        eps,
        features as u32,
        call.precision.f32_internal(),
        normalize,
        add_residual,
        add_norm_semantics,
        silu,
        rpc,
        hidden,
        BLOCK,
        config.strategy == GemvStrategy::Plane,
        client.properties().hardware.plane_size_min.max(1) as usize,
        prefetch(),
        dtype,
    );
    Ok(())
}

/// Whether the plane strategy loads each lane's weight vectors into registers ahead of the
/// staging (default); `$BRAID_GEMV_PREFETCH=0` keeps the earlier four-ahead reads (for
/// comparisons; read once per process).
fn prefetch() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("BRAID_GEMV_PREFETCH").map_or(true, |s| s.trim() != "0"))
}

/// `x: [rows, in] @ w^T` with `w: [out, in]` -> `[rows, out]` (f32 accumulation, one rounding).
pub fn linear(client: &Client, x: TensorHandle, w: TensorHandle, tuning: Tuning) -> Result<TensorHandle, KernelError> {
    launch("linear", client, x, vec![("w", w)], Mode::Linear, Precision::Torch, tuning)
}

/// `silu(x @ w_gate^T) * (x @ w_up^T)`: `x: [rows, hidden]`, `w_gate, w_up: [inter, hidden]` ->
/// `[rows, inter]`. Torch mode rounds each projection, SiLU's output and the product.
pub fn gate_up_silu(
    client: &Client,
    x: TensorHandle,
    w_gate: TensorHandle,
    w_up: TensorHandle,
    precision: Precision,
    tuning: Tuning,
) -> Result<TensorHandle, KernelError> {
    launch("gate_up_silu", client, x, vec![("w_gate", w_gate), ("w_up", w_up)], Mode::GateUpSilu { norm: None }, precision, tuning)
}

/// `add_rms_norm` then `gate_up_silu` in one launch: `h = residual + x` (rounded; returned),
/// `n = rmsnorm(h) * gamma` with `add_rms_norm`'s rounding points, then
/// `silu(n @ w_gate^T) * (n @ w_up^T)`. Returns `(h, act)`, bit for bit what the two ops give.
#[allow(clippy::too_many_arguments)]
pub fn add_rms_norm_gate_up_silu(
    client: &Client,
    residual: TensorHandle,
    x: TensorHandle,
    gamma: TensorHandle,
    w_gate: TensorHandle,
    w_up: TensorHandle,
    eps: f32,
    precision: Precision,
    tuning: Tuning,
) -> Result<(TensorHandle, TensorHandle), KernelError> {
    let (act, sum) = launch_with(
        "add_rms_norm_gate_up_silu",
        client,
        x,
        Some((residual, true)),
        vec![("w_gate", w_gate), ("w_up", w_up)],
        Mode::GateUpSilu { norm: Some((gamma, eps)) },
        precision,
        tuning,
    )?;
    Ok((sum.expect("a residual sum"), act))
}
