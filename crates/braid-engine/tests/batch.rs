//! The batch engine (paged KV cache, continuous batching, prefix caching, preemption) against
//! single-sequence generation and transformers' greedy ids, on Flex (the reference twins) and on
//! wgpu (the kernels) when an adapter is present.

use std::path::PathBuf;

use braid_engine::batch::SchedulerConfig;
use braid_engine::{BatchConfig, BatchEngine, Engine, EngineError, Finish, Request, SamplingParams};
use braid_model::{DType, Device, KernelPlan};
use serde_json::Value;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

fn engine(device: &Device, plan: &str) -> Engine {
    let mut e = Engine::load(&repo().join("models/braid-tiny"), device, DType::F32, &mut |_, _| {}).unwrap();
    let plan = KernelPlan::parse(plan, &e.model.config).unwrap();
    e.model.set_plan(plan).unwrap();
    e
}

fn wgpu() -> Option<Device> {
    let probe = std::panic::catch_unwind(|| {
        let d = Device::wgpu(burn::tensor::DeviceKind::DefaultDevice);
        (burn::tensor::Tensor::<1>::zeros([4], &d) + 1.0).into_data();
        d
    });
    match probe {
        Ok(d) => Some(d),
        Err(_) => {
            assert!(std::env::var_os("BRAID_REQUIRE_WGPU").is_none(), "BRAID_REQUIRE_WGPU is set but no wgpu adapter works");
            None
        }
    }
}

fn greedy(n: usize) -> Request {
    Request { max_tokens: n, sampling: SamplingParams::default(), ignore_eos: true }
}

fn config(blocks: Option<usize>, max_seqs: usize, max_batched_tokens: usize) -> BatchConfig {
    BatchConfig { scheduler: SchedulerConfig { max_seqs, max_batched_tokens }, max_len: 192, blocks, gpu_memory_fraction: 0.9, graphs: true }
}

/// The six recorded prompts (HF greedy, 32 tokens each) plus two long prompts sharing a
/// 130-token prefix, all in one batch: outputs equal HF's and single-sequence generation's.
fn batch_matches_single_and_hf(device: Device) {
    let reference: Value = serde_json::from_str(&std::fs::read_to_string(repo().join("models/braid-tiny/reference.json")).unwrap()).unwrap();
    let cases = reference["prompts"].as_array().unwrap();
    for plan in ["reference", "fused", "fused-f32"] {
        let e = engine(&device, plan);
        let mut prompts: Vec<Vec<u32>> = cases.iter().map(|c| ids(&c["ids"])).collect();
        let shared: Vec<u32> = (0..130).map(|i| (i * 37 % 4000 + 5) as u32).collect();
        for tail in [[11, 12, 13], [21, 22, 23]] {
            prompts.push(shared.iter().copied().chain(tail).collect());
        }
        // A pool too small for the last two together: one of them is preempted mid-decode and
        // recomputed later.
        let distinct: Vec<u32> = (0..100).map(|i| (i * 53 % 4000 + 7) as u32).collect();
        let squeezed = vec![prompts[prompts.len() - 1].clone(), distinct];
        // Each prompt alone, once per plan.
        let mut alone = std::collections::HashMap::new();
        for p in prompts.iter().chain(&squeezed) {
            alone.entry(p.clone()).or_insert_with(|| e.generate(p, &greedy(32), &mut |_| {}).unwrap().output_ids);
        }
        for (prompts, blocks, max_seqs) in [(&prompts, None, 16), (&prompts, Some(8), 16), (&squeezed, Some(5), 3)] {
            let reqs: Vec<Request> = prompts.iter().map(|_| greedy(32)).collect();
            let (gens, stats) = e.generate_batch(prompts, &reqs, config(blocks, max_seqs, 256)).unwrap();
            // Decode steps replay captured graphs when every layer's attention is fused; the
            // eager steps give the same tokens.
            assert_eq!(stats.graph_steps > 0, plan != "reference", "{plan}: {stats:?}");
            if plan != "reference" {
                let mut eager = config(blocks, max_seqs, 256);
                eager.graphs = false;
                let (eager_gens, eager_stats) = e.generate_batch(prompts, &reqs, eager).unwrap();
                assert_eq!(eager_stats.graph_steps, 0);
                for (g, eg) in gens.iter().zip(&eager_gens) {
                    assert_eq!(g.output_ids, eg.output_ids, "{plan}: graph vs eager decode steps");
                }
            }
            for (i, g) in gens.iter().enumerate() {
                if blocks.is_none() && i < cases.len() && plan == "reference" {
                    assert_eq!(g.output_ids, ids(&cases[i]["greedy_ids"]), "{plan} prompt {i} vs HF");
                }
                assert_eq!(g.output_ids, alone[&prompts[i]], "{plan} prompt {i}: batch vs single ({blocks:?} blocks)");
                assert_eq!(g.finish, Finish::Length);
            }
            assert!(stats.max_batch > 1, "sequences decoded together: {stats:?}");
            if blocks == Some(5) {
                assert!(stats.preemptions > 0, "a 5-block pool preempts: {stats:?}");
            }
            // The second long prompt finds the first one's two full blocks (128 positions).
            if blocks.is_none() {
                assert_eq!(stats.prefix_hit_tokens, 128, "{stats:?}");
            }
        }
    }
}

#[test]
fn flex_batch_matches_single_and_hf() {
    batch_matches_single_and_hf(Device::flex());
}

#[test]
fn wgpu_batch_matches_single_and_hf() {
    if let Some(d) = wgpu() {
        batch_matches_single_and_hf(d);
    }
}

/// Per-sequence sampling parameters and stop conditions in one batch: a seeded sampled sequence
/// gives the tokens `Engine::generate` gives it alone, eos stops one sequence without emitting
/// it while another ignores it, and `max_tokens` differs per sequence.
#[test]
fn per_sequence_sampling_and_stops() {
    let mut e = engine(&Device::flex(), "reference");
    let prompt = e.encode_prompt("It was a truth").unwrap();
    let free = e.generate(&prompt, &greedy(8), &mut |_| {}).unwrap();
    e.eos = vec![free.output_ids[2]];
    let sampled = Request { max_tokens: 6, sampling: SamplingParams { temperature: 0.8, top_k: 20, seed: 7, ..Default::default() }, ignore_eos: true };
    let stops = Request { max_tokens: 8, sampling: SamplingParams::default(), ignore_eos: false };
    let prompts = vec![prompt.clone(), prompt.clone(), prompt.clone()];
    let reqs = vec![sampled.clone(), stops.clone(), greedy(5)];
    let (gens, _) = e.generate_batch(&prompts, &reqs, config(None, 8, 256)).unwrap();
    let alone = e.generate(&prompt, &sampled, &mut |_| {}).unwrap();
    assert_eq!(gens[0].output_ids, alone.output_ids);
    assert_eq!(gens[1].finish, Finish::Eos);
    assert_eq!(gens[1].output_ids, free.output_ids[..2]);
    assert_eq!(gens[2].output_ids, free.output_ids[..5]);
    assert_eq!(gens[2].finish, Finish::Length);
}

#[test]
fn bad_requests_and_pools_are_errors() {
    let e = engine(&Device::flex(), "reference");
    let mut batch = BatchEngine::new(&e, config(None, 4, 256)).unwrap();
    let long = vec![5u32; 200];
    assert!(matches!(batch.add(&long, &greedy(4)), Err(EngineError::PromptTooLong { tokens: 200, limit: 192 })));
    assert!(matches!(batch.add(&[], &greedy(4)), Err(EngineError::EmptyPrompt)));
    assert!(matches!(batch.add(&[99_999], &greedy(4)), Err(EngineError::Forward(_))));
    let bad = Request { max_tokens: 4, sampling: SamplingParams { top_p: 0.0, ..Default::default() }, ignore_eos: true };
    assert!(matches!(batch.add(&[5], &bad), Err(EngineError::Sampling { .. })));
    // A pool that cannot hold one sequence of the maximum length.
    let err = BatchEngine::new(&e, config(Some(2), 4, 256)).err().expect("too small a pool");
    assert!(err.to_string().contains("cannot hold one sequence"), "{err}");
    // Longer than the model's context.
    let mut c = config(None, 4, 256);
    c.max_len = 100_000;
    assert!(BatchEngine::new(&e, c).is_err());
}
