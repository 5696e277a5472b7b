//! Model level: with fused plans, Braid reproduces HF transformers' float32 outputs for every
//! fixture (logits at every position and greedy continuations through the KV cache), on Flex
//! (the twins) and on wgpu in f32 (the kernels; CI runs Mesa's lavapipe). A fused-torch plan on
//! Flex equals the reference path exactly: the twins are the reference ops.

mod common;

use braid_model::{DType, Device, KernelPlan, Logits, OpChoice, Qwen3, to_host_f32};
use braid_model::ops::Precision;
use common::*;

fn load(dir: &std::path::Path, device: &Device, plan: &str) -> Qwen3 {
    let mut m = Qwen3::load(dir, device, DType::F32, &mut |_, _| {}).unwrap();
    let plan = KernelPlan::parse(plan, &m.config).unwrap();
    m.set_plan(plan).unwrap();
    m
}

fn argmax(v: &[f32]) -> u32 {
    v.iter().enumerate().fold((0, f32::MIN), |b, (i, &x)| if x > b.1 { (i, x) } else { b }).0 as u32
}

fn check_against_hf(device: Device, plan: &str) {
    for dir in fixtures() {
        let model = load(&dir, &device, plan);
        for p in expected(&dir)["prompts"].as_array().unwrap() {
            let ids = u32s(&p["ids"]);
            let want = u32s(&p["greedy_ids"]);
            // Prefill: logits at every position.
            let mut cache = model.new_cache(1, ids.len() + want.len());
            let all: Vec<f32> = to_host_f32(model.forward(std::slice::from_ref(&ids), &mut cache, Logits::All).unwrap());
            let vocab = all.len() / ids.len();
            for (pos, row) in p["all_logits"].as_array().unwrap().iter().enumerate() {
                let err = rel_err(&all[pos * vocab..(pos + 1) * vocab], &f32s(row));
                assert!(err < 1e-5, "{plan}: {}: position {pos}: rel err {err:e}", dir.display());
            }
            // Greedy decode through the cache (decode-shaped kernels).
            let mut got = vec![argmax(&all[(ids.len() - 1) * vocab..])];
            while got.len() < want.len() {
                let l: Vec<f32> = to_host_f32(model.forward(&[vec![*got.last().unwrap()]], &mut cache, Logits::Last).unwrap());
                got.push(argmax(&l));
            }
            assert_eq!(got, want, "{plan}: {}: {:?}", dir.display(), p["text"]);
        }
    }
}

#[test]
fn wgpu_fused_torch_matches_hf() {
    if let Some(d) = wgpu_device() {
        check_against_hf(d, "fused");
    }
}

#[test]
fn wgpu_fused_f32_matches_hf() {
    if let Some(d) = wgpu_device() {
        check_against_hf(d, "fused-f32");
    }
}

#[test]
fn flex_fused_f32_matches_hf() {
    check_against_hf(Device::flex(), "fused-f32");
}

#[test]
fn flex_fused_torch_equals_reference_path_bitwise() {
    let dir = &fixtures()[0];
    let device = Device::flex();
    let ids = u32s(&expected(dir)["prompts"][0]["ids"]);
    let run = |plan: &str| {
        let m = load(dir, &device, plan);
        let mut cache = m.new_cache(1, ids.len());
        to_host_f32(m.forward(std::slice::from_ref(&ids), &mut cache, Logits::All).unwrap())
    };
    assert_eq!(run("fused"), run("reference"));
}

#[test]
fn mixed_plan_file_round_trips_and_is_checked() {
    let dir = &fixtures()[0];
    let model = load(dir, &Device::flex(), "reference");
    let n = model.config.num_hidden_layers;
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("plan.json");
    std::fs::write(&path, r#"{"all": {"rms_norm_qkv": "fused-f32", "silu_mul": "fused"}, "layers": {"0": {"rms_norm_qkv": "reference"}}}"#).unwrap();
    let plan = KernelPlan::parse(path.to_str().unwrap(), &model.config).unwrap();
    assert_eq!(plan.layers[0].rms_norm_qkv, OpChoice::Reference);
    assert_eq!(plan.layers[n - 1].rms_norm_qkv, OpChoice::Fused(Precision::F32));
    assert_eq!(plan.layers[1].silu_mul, OpChoice::Fused(Precision::Torch));
    assert_eq!(plan.layers[1].add_rms_norm, OpChoice::Reference);
    // The JSON form reads back to the same plan.
    std::fs::write(&path, plan.to_json()).unwrap();
    assert_eq!(KernelPlan::parse(path.to_str().unwrap(), &model.config).unwrap(), plan);
    // A layer the model does not have, an unknown op, an unknown choice: errors naming the field.
    for (text, field) in [
        (format!(r#"{{"layers": {{"{n}": {{"silu_mul": "fused"}}}}}}"#), format!("layers.{n}")),
        (r#"{"layers": {"0": {"softmax": "fused"}}}"#.to_string(), "layers.0.softmax".to_string()),
        (r#"{"all": {"silu_mul": "fast"}}"#.to_string(), "fast".to_string()),
    ] {
        std::fs::write(&path, &text).unwrap();
        let err = KernelPlan::parse(path.to_str().unwrap(), &model.config).unwrap_err().to_string();
        assert!(err.contains(&field) && err.contains("plan.json"), "{text} -> {err}");
    }
}
