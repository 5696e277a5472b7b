//! Where the GEMV kernels hand over to a matmul: a row limit per op.
//!
//! The GEMV kernels read each weight once per 8 rows, which wins at small decode batches; past
//! the op's limit, bf16/f16 torch-mode calls run a matmul instead (Braid's tensor-core
//! `tc_linear` where the device has one, else Burn's autotuned matmul). The limits
//! differ by op because the matmul's efficiency does (the head's 151,936 outputs fill the GPU
//! at any row count, a 1,024-wide o_proj does not). `$BRAID_GEMV_MAX_ROWS` overrides them for
//! measurements: one number for every op, or `qkv=32,gate_up=8,linear=32,head=4`;
//! [`set_gemv_max_rows`] does the same in-process (`braid-cli bench kernels`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

/// The ops with a GEMV kernel and a matmul alternative.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GemvOp {
    /// RMSNorm + q/k/v projections (`rms_norm_qkv`, `add_rms_norm_qkv`).
    Qkv,
    /// The MLP's gate/up projections + SiLU (`gate_up_silu`, `add_rms_norm_gate_up`).
    GateUp,
    /// `linear` with fewer than [`HEAD_MIN_OUT`] outputs: o_proj, down_proj.
    Linear,
    /// `linear` with at least [`HEAD_MIN_OUT`] outputs: the lm_head.
    Head,
}

/// Output features from which a `linear` counts as the head (above every Qwen3 MLP width).
pub const HEAD_MIN_OUT: usize = 32_768;

impl GemvOp {
    pub const ALL: [GemvOp; 4] = [GemvOp::Qkv, GemvOp::GateUp, GemvOp::Linear, GemvOp::Head];

    pub fn name(self) -> &'static str {
        match self {
            GemvOp::Qkv => "qkv",
            GemvOp::GateUp => "gate_up",
            GemvOp::Linear => "linear",
            GemvOp::Head => "head",
        }
    }

    /// The default limit: the last row count at which the GEMV kernel beat (or tied) the
    /// matmul path in `braid-cli bench kernels --paths-only` (H100, bf16, graph-replayed device
    /// us, GEMV vs matmul). `tc`: the device runs Braid's tensor-core `tc_linear` for the call
    /// (2026-11-27 02:50-02:54, with its k splits): qkv 8.3 vs 10.4 at 4 rows, 12.8 vs 10.5 at
    /// 8; gate_up 14.6 vs 17.2 at 8, 25.1 vs 17.1 at 12; o_proj and down (one limit) 7.4 + 7.5
    /// vs 6.3 + 8.5 at 4, 8.1 + 9.2 vs 6.1 + 8.2 at 8; the head 157.6 vs 128.7 at 2 (its
    /// 1-row GEMV is the decode step's, kept). Else Burn's matmul, with the limits measured
    /// against the cooperative-matrix kernel before its k splits (2026-11-26 13:46): qkv 32.3
    /// vs 34.9 at 32 rows, 44.2 vs 35.0 at 48; gate_up 16.0 vs 22.4 at 8; o_proj 16.6 vs 19.7
    /// at 32; down 23.4 vs 27.8 at 32; the head 4 from the H200's 114.5 vs 164.8 with Burn's
    /// matmul (not re-measured on wgpu).
    pub fn default_limit(self, tc: bool) -> usize {
        match (self, tc) {
            (GemvOp::Qkv, true) => 4,
            (GemvOp::Qkv, false) => 32,
            (GemvOp::GateUp, _) => 8,
            (GemvOp::Linear, true) => 4,
            (GemvOp::Linear, false) => 32,
            (GemvOp::Head, true) => 1,
            (GemvOp::Head, false) => 4,
        }
    }

    /// Which limit a `linear` of `out` output features follows.
    pub fn for_linear(out: usize) -> GemvOp {
        if out >= HEAD_MIN_OUT { GemvOp::Head } else { GemvOp::Linear }
    }
}

/// An op's stored limit when none is set: its [`GemvOp::default_limit`] for the call's device.
const UNSET: usize = usize::MAX;

fn limits() -> &'static [AtomicUsize; 4] {
    static LIMITS: OnceLock<[AtomicUsize; 4]> = OnceLock::new();
    LIMITS.get_or_init(|| {
        let mut v = [None; 4];
        if let Ok(s) = std::env::var("BRAID_GEMV_MAX_ROWS") {
            match parse(&s) {
                Some(parsed) => v = parsed,
                None => eprintln!("warning: BRAID_GEMV_MAX_ROWS={s:?} ignored (a number, or e.g. qkv=32,gate_up=8,linear=32,head=4)"),
            }
        }
        v.map(|n| AtomicUsize::new(stored(n)))
    })
}

fn stored(rows: Option<usize>) -> usize {
    rows.map_or(UNSET, |n| n.min(UNSET - 1))
}

/// One number for every op, or `op=rows` pairs (unnamed ops keep their default).
fn parse(s: &str) -> Option<[Option<usize>; 4]> {
    if let Ok(n) = s.trim().parse() {
        return Some([Some(n); 4]);
    }
    let mut v = [None; 4];
    for part in s.split(',') {
        let (name, rows) = part.split_once('=')?;
        let i = GemvOp::ALL.iter().position(|o| o.name() == name.trim())?;
        v[i] = Some(rows.trim().parse().ok()?);
    }
    Some(v)
}

/// Rows up to which `op` runs on its GEMV kernel; `tc`: whether the call's matmul path would
/// run Braid's tensor-core kernel (`tc_linear_supported`), which moves the default.
pub fn gemv_max_rows(op: GemvOp, tc: bool) -> usize {
    match limits()[op as usize].load(Ordering::Relaxed) {
        UNSET => op.default_limit(tc),
        n => n,
    }
}

/// `op`'s limit as set by `$BRAID_GEMV_MAX_ROWS` or [`set_gemv_max_rows`] (`None`: the default).
pub fn gemv_max_rows_set(op: GemvOp) -> Option<usize> {
    match limits()[op as usize].load(Ordering::Relaxed) {
        UNSET => None,
        n => Some(n),
    }
}

/// Sets `op`'s limit for this process (`None`: back to the default; benchmarks compare the
/// two paths this way).
pub fn set_gemv_max_rows(op: GemvOp, rows: Option<usize>) {
    limits()[op as usize].store(stored(rows), Ordering::Relaxed);
}

/// The GEMV kernel's configuration for a call of `rows` rows on `client`: the candidate
/// `$BRAID_GEMV` names (`plane-1` ... `plane-16`, `unit`: A/B runs, and checking each
/// candidate on a device with `check-kernels`; a name the device cannot run is ignored), else
/// `plane-1` at 1-2 rows where the device has plane operations, else autotuned.
///
/// Why not the tuner at 1-2 rows: it times each candidate on repeated calls, with the weights
/// in L2, which favours fewer and larger cubes; a decode step reads them from HBM (or from the
/// attention's L2 prefetch), where one feature per plane (the most cubes, every load in
/// flight at once) was fastest. H100, whole batch-1 step replayed as a graph, 2026-11-26:
/// plane-1 895.9 tok/s, plane-2 880.2, plane-4 809.6, the tuner's picks 874.7 (15:39 call);
/// without the L2 prefetch plane-1 891.5 vs the tuner's 840.4 (15:49 call).
pub(crate) fn gemv_tuning(
    client: &braid_kernels::cubecl::prelude::Client,
    device: &braid_kernels::cubecl::Device,
    rows: usize,
) -> braid_kernels::gemv::Tuning {
    use braid_kernels::gemv::{GemvConfig, Tuning, named_configs};
    static FORCED: OnceLock<Option<GemvConfig>> = OnceLock::new();
    let forced = FORCED.get_or_init(|| {
        let name = std::env::var("BRAID_GEMV").ok()?;
        let config = named_configs().into_iter().find(|(n, _)| *n == name.trim()).map(|(_, c)| c);
        if config.is_none() {
            let names: Vec<String> = named_configs().into_iter().map(|(n, _)| n).collect();
            eprintln!("warning: BRAID_GEMV={name:?} ignored (one of {})", names.join(", "));
        }
        config
    });
    let plane_1 = GemvConfig { strategy: braid_kernels::gemv::GemvStrategy::Plane, features_per_plane: Some(1) };
    match forced {
        Some(c) if c.strategy.supported(client) => Tuning::Fixed(*c),
        _ if rows <= 2 && plane_1.strategy.supported(client) => Tuning::Fixed(plane_1),
        _ => Tuning::Autotune(device.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_one_number_or_pairs() {
        assert_eq!(parse("128"), Some([Some(128); 4]));
        assert_eq!(parse("head=2, qkv=16"), Some([Some(16), None, None, Some(2)]));
        assert_eq!(parse("nope=3"), None);
        assert_eq!(parse("qkv=x"), None);
        assert_eq!(GemvOp::for_linear(151_936), GemvOp::Head);
        assert_eq!(GemvOp::for_linear(1024), GemvOp::Linear);
    }

    #[test]
    fn a_set_limit_overrides_the_device_default_until_unset() {
        // (The only test touching the process-wide limits: the others read the defaults.)
        let op = GemvOp::Head;
        let saved = gemv_max_rows_set(op);
        set_gemv_max_rows(op, Some(usize::MAX));
        assert_eq!(gemv_max_rows(op, true), usize::MAX - 1);
        set_gemv_max_rows(op, None);
        assert_eq!((gemv_max_rows(op, true), gemv_max_rows(op, false)), (op.default_limit(true), op.default_limit(false)));
        set_gemv_max_rows(op, saved);
    }
}
