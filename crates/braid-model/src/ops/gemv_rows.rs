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
    /// matmul path, now Braid's tensor-core `tc_linear`, in `braid-cli bench kernels` (H100,
    /// bf16, 2026-11-26 13:46; graph-replayed device us, GEMV vs matmul): qkv 32.3 vs 34.9 at
    /// 32 rows, 44.2 vs 35.0 at 48; gate_up 16.0 vs 22.4 at 8, 26.9 vs 22.7 at 16; o_proj 16.6
    /// vs 19.7 at 32, 22.4 vs 19.6 at 48; down 23.4 vs 27.8 at 32, 31.6 vs 27.6 at 48; the head
    /// 211.2 vs 126.2 at 8 (4 kept from the H200's 114.5 vs 164.8 with Burn's matmul). On the
    /// whole nano-vllm workload these and the earlier limits (qkv 64, gate_up 16, linear 64)
    /// were within 1% (10,736 vs 10,726 output tok/s, same call). Devices without the tensor-core
    /// kernel (wgpu) run Burn's matmul past the same limits.
    pub fn default_limit(self) -> usize {
        match self {
            GemvOp::Qkv => 32,
            GemvOp::GateUp => 8,
            GemvOp::Linear => 32,
            GemvOp::Head => 4,
        }
    }

    /// Which limit a `linear` of `out` output features follows.
    pub fn for_linear(out: usize) -> GemvOp {
        if out >= HEAD_MIN_OUT { GemvOp::Head } else { GemvOp::Linear }
    }
}

fn limits() -> &'static [AtomicUsize; 4] {
    static LIMITS: OnceLock<[AtomicUsize; 4]> = OnceLock::new();
    LIMITS.get_or_init(|| {
        let mut v = GemvOp::ALL.map(GemvOp::default_limit);
        if let Ok(s) = std::env::var("BRAID_GEMV_MAX_ROWS") {
            match parse(&s) {
                Some(parsed) => v = parsed,
                None => eprintln!("warning: BRAID_GEMV_MAX_ROWS={s:?} ignored (a number, or e.g. qkv=32,gate_up=8,linear=32,head=4)"),
            }
        }
        v.map(AtomicUsize::new)
    })
}

/// One number for every op, or `op=rows` pairs (unnamed ops keep their default).
fn parse(s: &str) -> Option<[usize; 4]> {
    if let Ok(n) = s.trim().parse() {
        return Some([n; 4]);
    }
    let mut v = GemvOp::ALL.map(GemvOp::default_limit);
    for part in s.split(',') {
        let (name, rows) = part.split_once('=')?;
        let i = GemvOp::ALL.iter().position(|o| o.name() == name.trim())?;
        v[i] = rows.trim().parse().ok()?;
    }
    Some(v)
}

/// Rows up to which `op` runs on its GEMV kernel.
pub fn gemv_max_rows(op: GemvOp) -> usize {
    limits()[op as usize].load(Ordering::Relaxed)
}

/// Sets `op`'s limit for this process (benchmarks compare the two paths this way).
pub fn set_gemv_max_rows(op: GemvOp, rows: usize) {
    limits()[op as usize].store(rows, Ordering::Relaxed);
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
        assert_eq!(parse("128"), Some([128; 4]));
        let d = GemvOp::ALL.map(GemvOp::default_limit);
        assert_eq!(parse("head=2, qkv=16"), Some([16, d[1], d[2], 2]));
        assert_eq!(parse("nope=3"), None);
        assert_eq!(parse("qkv=x"), None);
        assert_eq!(GemvOp::for_linear(151_936), GemvOp::Head);
        assert_eq!(GemvOp::for_linear(1024), GemvOp::Linear);
    }
}
