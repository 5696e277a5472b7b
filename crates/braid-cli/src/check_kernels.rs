//! `braid-cli check-kernels`: every fused op against its reference twin and an f64 truth on the
//! chosen device (the same checks as the test suite). Their speed: `braid-cli bench kernels`.

use anyhow::{Result, bail};
use braid_model::ops::verify::{CHECK_GROUPS, passes, verify_some};

use crate::device::{self, DTypeArg, DeviceArg};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[arg(long, value_enum, default_value_t = DeviceArg::Cpu)]
    device: DeviceArg,
    #[arg(long, value_enum, default_value_t = DTypeArg::F32)]
    dtype: DTypeArg,
    /// Seed of the random data (default: from the clock; printed).
    #[arg(long)]
    seed: Option<u64>,
    /// Only these check groups (comma-separated; default all): add_rms_norm, rms_norm_qkv,
    /// qk_norm_rope, qk_rope_into, silu_mul, attention, linear, gate_up_silu, add_rms_norm_qkv,
    /// add_rms_norm_gate_up, qkv_rope_cache, decode_mlp, decode_mlp_qkv, decode_layers, greedy_head,
    /// argmax, paged, paged_prefill, decode_state. (The random data
    /// then differ from a full run's with the same `--seed`.)
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
}

pub fn run(args: Args) -> Result<()> {
    let device = device::open(args.device)?;
    let dtype = args.dtype.dtype();
    if !device.supports_dtype(dtype) {
        bail!("{:?} does not support {dtype:?}", args.device);
    }
    if let Some(g) = args.only.iter().find(|g| !CHECK_GROUPS.contains(&g.as_str())) {
        bail!("--only: unknown check group '{g}' (one of {})", CHECK_GROUPS.join(", "));
    }
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
    });
    println!("check-kernels: {:?} {dtype:?} seed {seed}", args.device);
    println!("{:<14} {:<12} {:<6} {:>10} {:>10} {:>13}  verdict", "op", "case", "mode", "fused", "twin", "fused-vs-twin");
    let mut failed = 0;
    let want = |g: &str| args.only.is_empty() || args.only.iter().any(|o| o == g);
    for c in verify_some(&device, dtype, seed, &want) {
        let verdict = passes(&c, dtype);
        println!(
            "{:<14} {:<12} {:<6} {:>10.3e} {:>10.3e} {:>13.3e}  {}",
            c.op,
            c.case,
            c.precision.name(),
            c.fused_err,
            c.twin_err,
            c.fused_vs_twin,
            match &verdict {
                Ok(()) => "ok".to_string(),
                Err(e) => format!("FAIL: {e}"),
            }
        );
        failed += verdict.is_err() as usize;
    }
    if failed > 0 {
        bail!("{failed} checks failed (seed {seed})");
    }
    Ok(())
}
