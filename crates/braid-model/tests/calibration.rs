//! The automatic plan's measurements: each op is run alone on the float32 model's inputs
//! (teacher-forced), so its error is its own. On Flex the fused-torch twins are the reference
//! ops, so their errors must equal the reference's exactly; the f32 mode skips a bf16 rounding
//! inside the fused QKV projection and must do better.

mod common;

use braid_model::calibrate::{Settings, calibrate};
use braid_model::{DType, Device, Qwen3, Taps, to_host_f32};
use common::*;

fn truth_taps(dir: &std::path::Path, ids: &[u32]) -> braid_model::HostTaps {
    let m = Qwen3::load(dir, &Device::flex(), DType::F32, &mut |_, _| {}).unwrap();
    let mut cache = m.new_cache(1, ids.len());
    let mut taps = Taps::default();
    let h = m.hidden_states_tapped(&[ids.to_vec()], &mut cache, Some(&mut taps)).unwrap();
    let mut host = taps.to_host();
    let t = ids.len();
    let logits = to_host_f32(m.head(h.narrow(1, t - 1, 1).reshape([1, m.config.hidden_size])));
    host.insert("logits".into(), vec![logits.len()], logits);
    host
}

#[test]
fn flex_calibration_measures_each_op_alone() {
    for dir in fixtures() {
        let prompts: Vec<Vec<u32>> = expected(&dir)["prompts"].as_array().unwrap().iter().map(|p| u32s(&p["ids"])).collect();
        let truths: Vec<_> = prompts.iter().map(|p| truth_taps(&dir, p)).collect();
        let model = Qwen3::load(&dir, &Device::flex(), DType::BF16, &mut |_, _| {}).unwrap();
        let cal = calibrate(&model, &truths, Settings { margin: 1.0, iters: 2 }).unwrap();
        let layers = model.config.num_hidden_layers;
        assert_eq!(cal.ops.len(), layers * 6 + 1);
        for op in &cal.ops {
            let r = op.errors["reference"];
            assert!(r > 1e-4 && r < 0.05, "{}: bf16 against f32 should be ~1e-2: {op:?}", dir.display());
            if let Some(t) = op.errors.get("fused-torch") {
                assert_eq!(*t, r, "{}: the torch twin is the reference op: {op:?}", dir.display());
            }
            if op.op == "rms_norm_qkv" {
                let f = op.errors["fused-f32"];
                assert!(f < r * 0.9, "{}: f32 internals skip the normed-input rounding: {op:?}", dir.display());
            }
            assert!(op.errors[&op.chosen.to_string()] <= r, "{op:?}");
        }
        assert_eq!(cal.times_us.len(), 7, "every op timed");
        // The plan is the ops' choices.
        for op in cal.ops.iter().filter(|o| o.op == "silu_mul") {
            assert_eq!(cal.plan.layers[op.layer.unwrap()].silu_mul, op.chosen);
        }
    }
}
