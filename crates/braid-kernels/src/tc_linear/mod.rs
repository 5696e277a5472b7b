//! `x @ w^T` on the tensor cores for the projections past the GEMV's row limits, where Burn's
//! matmul reached 13-29% of cuBLAS on the H100 (2026-11-26): CubeCL's cooperative matrices
//! (16x16x16 in f16/bf16 with f32 accumulation, 64x64 tiles, k split at decode sizes:
//! `kernel.rs`; the MLP's gate and up products with SiLU in one launch: `gate_up.rs`) and, for
//! large products, `mma.sync` with `ldmatrix` (128x128 tiles: `mma.rs`; `mma_takes` says when).

mod gate_up;
mod kernel;
mod mma;

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};

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

/// `[x @ w_0^T | x @ w_1^T | x @ w_2^T]` -> `[m, sum n_i]` in one output (e.g. q | k | v), one to
/// three weights, as [`tc_linear`]: one launch for all of them (plus one that adds up the k
/// splits, where [`splits`] splits k), or one per weight on the `mma` kernel.
pub fn tc_linear_cat(client: &Client, x: TensorHandle, ws: &[TensorHandle]) -> Result<TensorHandle, KernelError> {
    let c = Check::new(NAME);
    let [m, k] = c.matrix("x", &x)?;
    if ws.is_empty() || ws.len() > 3 {
        return Err(KernelError::Unsupported {
            kernel: NAME,
            what: format!("{} weights", ws.len()),
            why: "takes one to three weights".into(),
        });
    }
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
    if m * total == 0 {
        return Ok(out);
    }
    if ws.iter().all(|w| mma_takes(client, x.dtype, m, w.shape()[0])) {
        let mut col = 0;
        for w in ws {
            if w.shape()[0] > 0 {
                launch_mma(client, &x, w, &out, col);
            }
            col += w.shape()[0];
        }
    } else {
        launch_wmma(client, &x, ws, &out);
    }
    Ok(out)
}

/// `silu(x @ wg^T) * (x @ wu^T)` -> `[m, n]` (`wg, wu: [n, k]`) with PyTorch's rounding points
/// (each product rounded to the dtype, SiLU rounded, the product rounded), in one launch (plus
/// one that adds up the k splits, where [`splits`] splits k). By construction the same sums in
/// the same order as [`tc_linear`] of each weight followed by the `silu_mul` kernel in torch
/// mode (not compared bit for bit on a GPU; the checks compare it with the f64 truth and the
/// Burn twin). Errors where [`tc_linear_supported`] says no.
pub fn tc_gate_up_silu(client: &Client, x: TensorHandle, wg: TensorHandle, wu: TensorHandle) -> Result<TensorHandle, KernelError> {
    let c = Check::new("tc_gate_up_silu");
    let [m, k] = c.matrix("x", &x)?;
    let [n, kg] = c.matrix("w_gate", &wg)?;
    if kg != k {
        return Err(c.shape_err("w_gate", &wg, format!("[_, {k}]")));
    }
    c.shape("w_up", &wu, &[n, k])?;
    c.same_dtype("w_gate", &wg, x.dtype)?;
    c.same_dtype("w_up", &wu, x.dtype)?;
    if !tc_linear_supported(client, x.dtype, k) {
        return Err(KernelError::Unsupported {
            kernel: "tc_gate_up_silu",
            what: format!("{} with k = {k}", x.dtype),
            why: format!("needs 16x16x16 cooperative matrices in this dtype with f32 accumulation and k a multiple of {TILE}"),
        });
    }
    let dtype = x.dtype;
    let out = output_like(client, &[m, n], dtype);
    if m * n == 0 {
        return Ok(out);
    }
    let col_tiles = n.div_ceil(TILE);
    let splits = splits(client, col_tiles * m.div_ceil(TILE), k / TILE);
    let f32_t = ElemType::Float(cubecl::ir::FloatKind::F32);
    // Without a split `part` is not written: one element stands in for it.
    let part = output_like(client, &if splits > 1 { vec![splits, m, 2 * n] } else { vec![1] }, f32_t);
    // SAFETY: every index is in bounds by construction: the shapes were checked above
    // (contiguous, the same [n, k] weights, k a multiple of TILE), `out` and `part` were
    // allocated here at the shapes the kernels index; loads past `m` and `n` read zeros, stores
    // past them are skipped, and each split's slab range lies inside k.
    unsafe {
        gate_up::tc_gate_up_kernel::launch_unchecked(
            client,
            CubeCount::new_3d(col_tiles as u32, m.div_ceil(TILE) as u32, splits as u32),
            CubeDim::new_2d(32, 4),
            16 / dtype.size(),
            x.into_arg(),
            wg.into_arg(),
            wu.into_arg(),
            out.clone().into_arg(),
            part.clone().into_arg(),
            splits > 1,
            dtype,
        );
        if splits > 1 {
            gate_up::split_silu_kernel::launch_unchecked(
                client,
                CubeCount::new_1d((m * n).div_ceil(256) as u32),
                CubeDim::new_1d(256),
                part.into_arg(),
                out.clone().into_arg(),
                n as u32,
                splits as u32,
                dtype,
            );
        }
    }
    Ok(out)
}

/// Forces [`splits`] to `Some(n)` k splits (clamped to the k slabs) for this process, or
/// `None`: back to `$BRAID_TC_SPLIT` and the policy. For checks and comparisons.
pub fn force_splits(force: Option<usize>) {
    SPLITS.store(force.map_or(0, |n| n.max(1)), Ordering::Relaxed);
}

static SPLITS: AtomicUsize = AtomicUsize::new(0);

/// The fewest 64-wide k slabs a split gets.
const MIN_SPLIT_SLABS: usize = 4;

/// How many ways the cooperative-matrix kernel splits k for `tiles` 64x64 output tiles and
/// `slabs` 64-wide k slabs: where the tiles fill at most half the SMs, enough splits for two
/// cubes per SM (each split at least [`MIN_SPLIT_SLABS`] slabs); else 1. A decode-size product
/// is a few dozen tiles, each a chain of `k / 64` dependent slab loads with one slab in
/// flight; split, each cube walks a few slabs and a second launch adds the f32 partial sums.
/// H100, bf16, graph-replayed us, unsplit -> split two cubes per SM (2026-11-27 02:45,
/// docs/performance.md): 16 tiles (o_proj, down at 64 rows) 20.2 -> 7.0, 27.4 -> 8.9 (cuBLAS
/// 5.3, 6.6); 32-64 tiles 1.3-1.9x faster; 96-256 tiles even to 1.2x slower (qkv at 256 rows
/// 17.4 -> 21.0: the partial sums' traffic outweighs the shorter chains). `$BRAID_TC_SPLIT`:
/// `0` or `1` never splits, `n` always splits n ways (clamped to the slabs); read once per
/// process.
fn splits(client: &Client, tiles: usize, slabs: usize) -> usize {
    static ENV: OnceLock<Option<usize>> = OnceLock::new();
    let forced = match SPLITS.load(Ordering::Relaxed) {
        0 => *ENV.get_or_init(|| std::env::var("BRAID_TC_SPLIT").ok().and_then(|s| s.trim().parse().ok())),
        n => Some(n),
    };
    match forced {
        Some(n) => n.clamp(1, slabs.max(1)),
        None => split_policy(client.properties().hardware.num_streaming_multiprocessors.unwrap_or(0) as usize, tiles, slabs),
    }
}

/// [`splits`]' policy on a device of `sms` SMs (0: unknown, no split).
fn split_policy(sms: usize, tiles: usize, slabs: usize) -> usize {
    if tiles == 0 || 2 * tiles > sms { 1 } else { (2 * sms).div_ceil(tiles).min(slabs / MIN_SPLIT_SLABS).max(1) }
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

/// Whether [`tc_linear`] would run `[m, k] @ [n, k]^T` on its `mma.sync` kernel here (see
/// [`mma_takes`]); callers with a fused alternative of the other kernel (`tc_gate_up_silu`)
/// keep the large products on it.
pub fn takes_mma(client: &Client, dtype: ElemType, m: usize, n: usize) -> bool {
    mma_takes(client, dtype, m, n)
}

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

fn launch_mma(client: &Client, x: &TensorHandle, w: &TensorHandle, out: &TensorHandle, col0: usize) {
    let (m, n) = (x.shape()[0], w.shape()[0]);
    let vector = 16 / x.dtype.size();
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
}

/// One launch of the cooperative-matrix kernel over every weight's column tiles (and k splits,
/// [`splits`]), then, when split, one that adds the splits up into `out`.
fn launch_wmma(client: &Client, x: &TensorHandle, ws: &[TensorHandle], out: &TensorHandle) {
    let [m, k] = [x.shape()[0], x.shape()[1]];
    let dtype = x.dtype;
    let vector = 16 / dtype.size();
    let col_tiles: usize = ws.iter().map(|w| w.shape()[0].div_ceil(TILE)).sum();
    let total: usize = ws.iter().map(|w| w.shape()[0]).sum();
    let splits = splits(client, col_tiles * m.div_ceil(TILE), k / TILE);
    // Missing weights: zero-row views of the first (never read).
    let w = |i: usize| ws.get(i).cloned().unwrap_or_else(|| TensorHandle::new_contiguous(vec![0, k], ws[0].handle.clone(), dtype));
    let f32_t = ElemType::Float(cubecl::ir::FloatKind::F32);
    // Without a split `part` is not written: one element stands in for it.
    let part = output_like(client, &if splits > 1 { vec![splits, m, total] } else { vec![1] }, f32_t);
    // SAFETY: every index is in bounds by construction: `tc_linear_cat` checked the operands'
    // shapes (contiguous, the same k, a multiple of TILE) and allocated `out` ([m, total]) and
    // `part` ([splits, m, total] when split) here; loads past `m` and each `n_i` read zeros,
    // stores past them are skipped, and each split's slab range lies inside k.
    unsafe {
        kernel::tc_linear_kernel::launch_unchecked(
            client,
            CubeCount::new_3d(col_tiles as u32, m.div_ceil(TILE) as u32, splits as u32),
            CubeDim::new_2d(32, 4),
            vector,
            x.clone().into_arg(),
            w(0).into_arg(),
            w(1).into_arg(),
            w(2).into_arg(),
            out.clone().into_arg(),
            part.clone().into_arg(),
            splits > 1,
            dtype,
        );
        if splits > 1 {
            let len = m * total;
            kernel::split_sum_kernel::launch_unchecked(
                client,
                CubeCount::new_1d(len.div_ceil(256) as u32),
                CubeDim::new_1d(256),
                part.into_arg(),
                out.clone().into_arg(),
                splits as u32,
                dtype,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::split_policy;

    #[test]
    fn splits_only_the_products_too_small_to_fill_the_device() {
        // The H100's 132 SMs, Qwen3-0.6B's projections (64x64 tiles, 64-wide k slabs); the
        // measurements behind each case are in `splits`' comment.
        let h100 = |tiles, slabs| split_policy(132, tiles, slabs);
        assert_eq!(h100(16, 32), 8, "o_proj at 64 rows: 16 tiles, k 2,048");
        assert_eq!(h100(16, 48), 12, "down at 64 rows: capped at 4 slabs a split");
        assert_eq!(h100(64, 32), 5, "o_proj at 256 rows");
        assert_eq!(h100(64, 16), 4, "qkv at 64 rows: capped at 4 slabs a split");
        assert_eq!(h100(66, 16), 4, "half the SMs: still split");
        assert_eq!(h100(67, 16), 1, "past half the SMs: the partial sums cost more than they save");
        assert_eq!(h100(256, 16), 1, "qkv at 256 rows");
        assert_eq!(h100(16, 3), 1, "too few slabs to split");
        assert_eq!(split_policy(0, 16, 32), 1, "SM count unknown");
        assert_eq!(h100(0, 32), 1, "no tiles");
    }
}
