//! Every fused op against its reference twin and an f64 truth (`ops::verify`), on fresh random
//! data each run (the seed is printed), per runtime and dtype. wgpu runs on whatever adapter the
//! machine has (CI: Mesa's lavapipe); CUDA with `--features cuda` on a machine with a GPU.

mod common;

use braid_model::ops::verify::{OpCheck, passes, verify_all};
use braid_model::{DType, Device};

fn fresh_seed() -> u64 {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    std::env::var("BRAID_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(nanos as u64)
}

fn run(device: Option<Device>, dtype: DType) {
    let Some(device) = device else { return };
    let seed = fresh_seed();
    println!("seed {seed} (replay with BRAID_SEED={seed})");
    let checks = verify_all(&device, dtype, seed);
    let mut failures = Vec::new();
    for c in &checks {
        let verdict = passes(c, dtype);
        let OpCheck { op, case, precision, fused_err, twin_err, fused_vs_twin, .. } = c;
        println!(
            "{op:<14} {case:<12} {:<6} fused {fused_err:.3e} twin {twin_err:.3e} fused-vs-twin {fused_vs_twin:.3e} {}",
            precision.name(),
            if verdict.is_ok() { "ok" } else { "FAIL" }
        );
        if let Err(e) = verdict {
            failures.push(format!("{op}/{case}/{}: {e}", precision.name()));
        }
    }
    // Per case: 7 ops, attention_at, the row-kernel decode, the two residual-add fusions, the
    // greedy head (planted winner and bits) and
    // QK-norm+RoPE writing into a cache and into a pool in both modes; argmax and the decode-state ops once; the paged write once and paged
    // attention in both modes; the prefill attention in both modes for each tile shape the
    // device fits (one on Flex); linear and rms_norm_qkv in both modes for the `prefill-mma`
    // case (the mma kernel forced on where the device has it) and the two `SPLIT_CASES` (with gate_up_silu).
    // The one-launch QKV + RoPE of the decode step only where the device runs it (plane
    // operations: not lavapipe, not Flex): with and without the residual add, each against the
    // truth and against the launches it replaces.
    let prefill = checks.iter().filter(|c| c.op == "prefill_attn").count();
    let qkv_rope = checks.iter().filter(|c| c.op.starts_with("qkv_rope")).count();
    assert!(qkv_rope == 0 || qkv_rope == 4 * 2 * 2 * 2, "qkv_rope checks: {qkv_rope}");
    // `decode_layers` (three stacked layers, from the attention output and from the stream;
    // the first layer's attention inputs and attention alone)
    // where the device runs `decode_mlp_attn` (not on CubeCL devices without plane operations,
    // lavapipe); its bits against one launch a layer for the cases whose widths the device runs
    // as one persistent launch (none without 128 SMs; in f32 Qwen3-0.6B's widths pass a lane's
    // register budget).
    let layers = checks.iter().filter(|c| ["decode_layers", "decode_layers_pre", "decode_layers_first"].contains(&c.op)).count();
    let layers_bits = checks.iter().filter(|c| ["decode_layers_bits", "decode_layers_pre_bits", "decode_layers_first_bits"].contains(&c.op)).count();
    assert!((layers == 0 || layers == 4 * 2 * 3) && layers_bits <= layers && layers_bits % 4 == 0, "decode_layers checks: {layers} + {layers_bits}");
    assert_eq!(checks.len() - prefill - qkv_rope - layers - layers_bits, 4 * (2 * (7 + 1 + 1 + 2 + 2 + 2) + 2 + 3) + 2 * 2 + 2 * 3 * 2, "every op, case and precision ran");
    for case in ["decode", "prefill-odd", "adversarial", "prefill-long"] {
        let n = checks.iter().filter(|c| c.op == "prefill_attn" && c.case.split('/').next() == Some(case)).count();
        assert!(n >= 2 && n % 2 == 0, "prefill attention in both modes for {case}: {n} checks");
    }
    assert!(failures.is_empty(), "seed {seed}: {failures:#?}");
}

/// One test per runtime and dtype.
macro_rules! fused_op_tests {
    ($($name:ident: $device:expr, $dtype:expr $(, #[$attr:meta])?;)*) => {
        $(
            #[test]
            $(#[$attr])?
            fn $name() {
                run($device, $dtype);
            }
        )*
    };
}

fn wgpu() -> Option<Device> {
    common::wgpu_device()
}

fused_op_tests! {
    // Flex runs the twins themselves: fused == twin, both checked against f64.
    flex_f32: Some(Device::flex()), DType::F32;
    flex_bf16: Some(Device::flex()), DType::BF16;
    wgpu_f32: wgpu(), DType::F32;
    wgpu_f16: wgpu(), DType::F16;
}

#[cfg(feature = "cuda")]
fused_op_tests! {
    cuda_f32: Some(Device::cuda(0)), DType::F32;
    cuda_bf16: Some(Device::cuda(0)), DType::BF16;
    cuda_f16: Some(Device::cuda(0)), DType::F16;
}
