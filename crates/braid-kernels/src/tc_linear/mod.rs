//! `x @ w^T` on the tensor cores for the projections past the GEMV's row limits, where Burn's
//! matmul reached 13-29% of cuBLAS on the H100 (2026-11-26): CubeCL's cooperative matrices
//! (16x16x16 in f16/bf16 with f32 accumulation, 64x64 tiles: `kernel.rs`) and, for large
//! products, `mma.sync` with `ldmatrix` (128x128 tiles: `mma.rs`; `mma_takes` says when).

mod kernel;
mod mma;

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU8, Ordering};

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

/// Forces the `mma` kernel on (`Some(true)`: wherever the device runs it) or off
/// (`Some(false)`) for this process, over `$BRAID_TC_MMA` (`1` / `0`); `None` hands the choice
/// back to that variable, else the row and tile thresholds. For checks and comparisons: both
/// kernels compute the same product with f32 accumulation.
pub fn force_mma(force: Option<bool>) {
    FORCE.store(
        match force {
            None => UNSET,
            Some(true) => ALWAYS,
            Some(false) => NEVER,
        },
        Ordering::Relaxed,
    );
}

const UNSET: u8 = 0;
const POLICY: u8 = 1;
const ALWAYS: u8 = 2;
const NEVER: u8 = 3;
static FORCE: AtomicU8 = AtomicU8::new(UNSET);

/// Whether the `mma.sync` kernel ([`mma`]) takes `[m, k] @ [n, k]^T` on this device in `dtype`:
/// m16n8k16 with f32 accumulation and `ldmatrix`, and (unless forced, [`force_mma`]) at least
/// `$BRAID_TC_MMA_ROWS` rows (default 256; read once per process) and at least
/// [`MMA_MIN_CUBES`] of its 128x128 tiles. Elsewhere the cooperative-matrix kernel, whose 64x64
/// tiles give four times the cubes.
fn mma_takes(client: &Client, dtype: ElemType, m: usize, n: usize) -> bool {
    static ROWS: OnceLock<usize> = OnceLock::new();
    let f32_t = ElemType::Float(cubecl::ir::FloatKind::F32);
    let config = MmaConfig { a_type: dtype, b_type: dtype, cd_type: f32_t, m: 16, n: 8, k: 16 };
    let features = &client.properties().features.matmul;
    if !features.mma.contains(&config) || !features.ldmatrix.contains(&dtype) {
        return false;
    }
    let mut mode = FORCE.load(Ordering::Relaxed);
    if mode == UNSET {
        mode = match std::env::var("BRAID_TC_MMA").map(|s| s.trim().to_string()).as_deref() {
            Ok("1") => ALWAYS,
            Ok("0") => NEVER,
            _ => POLICY,
        };
        // (A racing force_mma wins: only an unset mode is replaced.)
        let _ = FORCE.compare_exchange(UNSET, mode, Ordering::Relaxed, Ordering::Relaxed);
        mode = FORCE.load(Ordering::Relaxed);
    }
    match mode {
        ALWAYS => true,
        NEVER => false,
        _ => {
            let rows = *ROWS.get_or_init(|| std::env::var("BRAID_TC_MMA_ROWS").ok().and_then(|s| s.trim().parse().ok()).unwrap_or(256));
            m >= rows && m.div_ceil(mma::ROWS) * n.div_ceil(mma::BN) >= MMA_MIN_CUBES
        }
    }
}

/// The fewest 128x128 tiles for which the `mma` kernel beats the 64x64 cooperative-matrix one.
/// H100, graph-replayed us (2026-11-26, docs/performance.md), mma against wmma: 64 tiles slower
/// (o_proj 1024 x 2048 at 1,024 rows 41.9 / 30.2, down 59.3 / 42.6), 128 even (qkv 4096 x 1024
/// at 512 rows 28.1 / 28.9, q 2048 x 1024 at 1,024 rows 29.2 / 28.9), 192 faster (gate 3072 x
/// 1024 at 1,024 rows 45.2 / 54.2), 256 and more faster (qkv at 1,024 rows 48.6 / 56.0; every
/// projection at 4,096 rows, 1.1-1.45x; lm_head at 256 rows 496.5 / 516.0).
const MMA_MIN_CUBES: usize = 192;

fn launch(client: &Client, x: &TensorHandle, w: &TensorHandle, out: &TensorHandle, col0: usize) {
    let (m, n) = (x.shape()[0], w.shape()[0]);
    let vector = 16 / x.dtype.size();
    if mma_takes(client, x.dtype, m, n) {
        let rows = mma::ROWS;
        // SAFETY: every index is in bounds by construction: the public functions checked both
        // operands' shapes (contiguous, the same k, a multiple of TILE) and the output's; loads
        // past `m` and `n` read zeros and stores past them are skipped.
        unsafe {
            mma::mma_linear_kernel::launch_unchecked(
                client,
                CubeCount::new_2d(n.div_ceil(mma::BN) as u32, m.div_ceil(rows) as u32),
                CubeDim::new_2d(32, mma::PLANES as u32),
                vector,
                x.clone().into_arg(),
                w.clone().into_arg(),
                out.clone().into_arg(),
                col0 as u32,
                rows / 32,
                x.dtype,
            )
        };
        return;
    }
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
