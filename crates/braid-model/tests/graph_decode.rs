//! Graph-ready greedy decoding (`Qwen3::generate_greedy`): the step reads its token and
//! position from a device buffer and writes the KV cache in place. Eager steps and captured
//! replays (wgpu replays recorded work too; Flex re-runs the step) must give HF's greedy ids exactly,
//! on Flex (the twins) and on wgpu (the kernels: decode inputs, in-place KV write, attention at
//! the device-held position, advance).

mod common;

use braid_model::graph_decode::StepMode;
use braid_model::{DType, Device, KernelPlan, Qwen3};
use common::*;

fn check(device: Device, plan: &str) {
    for dir in fixtures() {
        let mut m = Qwen3::load(&dir, &device, DType::F32, &mut |_, _| {}).unwrap();
        m.set_plan(KernelPlan::parse(plan, &m.config).unwrap()).unwrap();
        for p in expected(&dir)["prompts"].as_array().unwrap() {
            let ids = u32s(&p["ids"]);
            let want = u32s(&p["greedy_ids"]);
            for mode in [StepMode::Eager, StepMode::Graph] {
                let run = m.generate_greedy(&ids, want.len(), mode).unwrap();
                assert_eq!(run.tokens, want, "{plan} {mode:?} (hardware graph: {}): {}", run.hardware_graph, dir.display());
            }
            // Fewer tokens than the capture's warm-up steps: still exactly n.
            let run = m.generate_greedy(&ids, 2, StepMode::Graph).unwrap();
            assert_eq!(run.tokens, want[..2]);
        }
    }
}

#[test]
fn flex_graph_decode_matches_hf() {
    check(Device::flex(), "fused");
    check(Device::flex(), "reference");
}

#[test]
fn wgpu_graph_decode_matches_hf() {
    if let Some(d) = wgpu_device() {
        check(d.clone(), "fused");
        check(d, "fused-f32");
    }
}

#[test]
fn a_too_long_generation_is_an_error() {
    let dir = &fixtures()[0];
    let m = Qwen3::load(dir, &Device::flex(), DType::F32, &mut |_, _| {}).unwrap();
    let n = m.config.max_position_embeddings;
    let err = m.generate_greedy(&[1, 2, 3], n, StepMode::Graph).unwrap_err();
    assert!(err.to_string().contains("exceeds the context"), "{err}");
}

/// In f16 on wgpu (the kernels, low precision): the device-state steps (with their fused
/// residual adds) give the eager loop's tokens.
#[test]
fn wgpu_f16_device_steps_equal_the_eager_loop() {
    let Some(device) = wgpu_device() else { return };
    for plan in ["fused", "fused-f32"] {
        for dir in fixtures() {
            let mut m = Qwen3::load(&dir, &device, DType::F16, &mut |_, _| {}).unwrap();
            m.set_plan(KernelPlan::parse(plan, &m.config).unwrap()).unwrap();
            let ids = u32s(&expected(&dir)["prompts"][0]["ids"]);
            let n = 24;
            let mut cache = m.new_cache(1, ids.len() + n);
            let mut eager = Vec::new();
            let mut next = ids.clone();
            for _ in 0..n {
                let logits = m.forward(&[next], &mut cache, braid_model::Logits::Last).unwrap();
                let vocab = logits.dims()[2];
                let id = braid_model::ops::argmax(logits.reshape([1, vocab]))[0];
                eager.push(id);
                next = vec![id];
            }
            let run = m.generate_greedy(&ids, n, StepMode::Graph).unwrap();
            assert_eq!(run.tokens, eager, "{plan}: {}", dir.display());
        }
    }
}

/// The streamed path (`GreedyDecoder::next_token`: when no token is ready, a chunk of steps read
/// back at once, sized by their time) gives HF's greedy ids exactly, the batched read's
/// (`take`), and stops at the budget with an error, on Flex and on wgpu.
#[test]
fn streamed_tokens_come_in_chunks_and_equal_the_batched_read() {
    use braid_model::graph_decode::GreedyDecoder;
    for device in [Some(Device::flex()), wgpu_device()].into_iter().flatten() {
        for dir in fixtures() {
            let mut m = Qwen3::load(&dir, &device, DType::F32, &mut |_, _| {}).unwrap();
            m.set_plan(KernelPlan::parse("fused", &m.config).unwrap()).unwrap();
            let p = &expected(&dir)["prompts"][0];
            let (ids, want) = (u32s(&p["ids"]), u32s(&p["greedy_ids"]));
            let n = want.len();
            let mut dec = GreedyDecoder::new(&m, &ids, n, StepMode::Graph).unwrap();
            let streamed: Vec<u32> = (0..n).map(|_| dec.next_token().unwrap()).collect();
            assert_eq!(streamed, want, "{}", dir.display());
            assert!(dec.next_token().is_err(), "a token past the budget");
            let mut batched = GreedyDecoder::new(&m, &ids, n, StepMode::Graph).unwrap();
            assert_eq!(batched.take(n).unwrap(), want, "{}", dir.display());
        }
    }
}
