//! Fused RMSNorm + QKV projection: `[q | k | v] = rmsnorm(x) * gamma @ [wq; wk; wv]^T`, the
//! seed analysis' kernel. The weights stay separate tensors (as stored by HF); the output is one
//! `[rows, nq + nk + nv]` buffer the caller views as q, k and v.

mod kernel;

use cubecl::features::Plane;
use cubecl::prelude::*;
use cubecl::std::tensor::TensorHandle;

use crate::check::{Check, output_like};
use crate::{KernelError, Precision};

const NAME: &str = "rms_norm_qkv";
const BLOCK: usize = 256;
/// Shared memory for normalised rows, in f32 elements (32 KiB).
const SHARED_F32: usize = 8192;

/// How the dot products are spread over units (autotune candidates).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QkvStrategy {
    /// One plane (warp) per output feature; needs plane operations.
    Plane,
    /// One unit per output feature.
    Unit,
}

impl QkvStrategy {
    /// The best strategy this client supports.
    pub fn default_for(client: &Client) -> Self {
        if client.properties().features.plane.contains(Plane::Ops) {
            QkvStrategy::Plane
        } else {
            QkvStrategy::Unit
        }
    }

    pub fn supported(self, client: &Client) -> bool {
        match self {
            QkvStrategy::Plane => client.properties().features.plane.contains(Plane::Ops),
            QkvStrategy::Unit => true,
        }
    }
}

/// Rows normalised per cube: as many as fit the shared budget, at most 8, at most `rows`
/// (a power of two so that few variants compile).
fn rows_per_cube(rows: usize, hidden: usize) -> usize {
    let fit = (SHARED_F32 / hidden).clamp(1, 8);
    let want = rows.next_power_of_two().min(8);
    let mut r = 1;
    while r * 2 <= fit.min(want) {
        r *= 2;
    }
    r
}

/// `x: [rows, hidden]`, `gamma: [hidden]`, `wq: [nq, hidden]`, `wk: [nk, hidden]`,
/// `wv: [nv, hidden]` -> `[rows, nq + nk + nv]`.
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
    strategy: QkvStrategy,
) -> Result<TensorHandle, KernelError> {
    let c = Check::new(NAME);
    let [rows, hidden] = c.matrix("x", &x)?;
    c.shape("gamma", &gamma, &[hidden])?;
    let mut outs = [0; 3];
    for (i, (name, w)) in [("wq", &wq), ("wk", &wk), ("wv", &wv)].into_iter().enumerate() {
        let [n, h] = c.matrix(name, w)?;
        if h != hidden {
            return Err(c.shape_err(name, w, format!("[_, {hidden}]")));
        }
        c.same_dtype(name, w, x.dtype)?;
        outs[i] = n;
    }
    c.same_dtype("gamma", &gamma, x.dtype)?;
    if hidden > SHARED_F32 {
        return Err(KernelError::Unsupported {
            kernel: NAME,
            what: format!("hidden size {hidden}"),
            why: format!("a normalised row must fit {SHARED_F32} f32 of shared memory"),
        });
    }
    if !strategy.supported(client) {
        return Err(KernelError::Unsupported {
            kernel: NAME,
            what: format!("{strategy:?}"),
            why: "this device has no plane operations".into(),
        });
    }
    let total = outs.iter().sum::<usize>();
    let dtype = x.dtype;
    let out = output_like(client, &[rows, total], dtype);
    if rows == 0 || total == 0 {
        return Ok(out);
    }
    let rpc = rows_per_cube(rows, hidden);
    let features = match strategy {
        // One plane per feature at a time: enough cubes to fill the device (a few per SM) while
        // keeping the normalisation, redone by every cube, a small share of the reads.
        QkvStrategy::Plane => {
            let planes = (BLOCK / client.properties().hardware.plane_size_max.max(1) as usize).max(1);
            let per_plane = (total / (planes * 512)).clamp(1, 4);
            planes * per_plane
        }
        QkvStrategy::Unit => BLOCK,
    };
    // Weight rows are read in 16-byte vectors where the row length allows.
    let mut vector = (16 / dtype.size()).max(1);
    while hidden % vector != 0 {
        vector /= 2;
    }
    kernel::rms_norm_qkv_kernel::launch(
        client,
        CubeCount::new_2d(total.div_ceil(features) as u32, rows.div_ceil(rpc) as u32),
        CubeDim::new_1d(BLOCK as u32),
        vector,
        x.into_arg(),
        gamma.into_arg(),
        wq.into_arg(),
        wk.into_arg(),
        wv.into_arg(),
        out.clone().into_arg(),
        eps,
        precision.f32_internal(),
        rpc,
        hidden,
        BLOCK,
        features,
        strategy == QkvStrategy::Plane,
        dtype,
    );
    Ok(out)
}
