//! The reference path on CPU in f32 reproduces HF transformers' float32 outputs for every
//! fixture: last-position logits, logits of the first position, and greedy continuations.

mod common;

use braid_model::{DType, Device, Logits, Qwen3, to_host_f32};
use common::*;

fn load(dir: &std::path::Path) -> Qwen3 {
    Qwen3::load(dir, &Device::flex(), DType::F32, &mut |_, _| {}).unwrap()
}

fn argmax(v: &[f32]) -> u32 {
    v.iter().enumerate().fold((0, f32::MIN), |b, (i, &x)| if x > b.1 { (i, x) } else { b }).0 as u32
}

#[test]
fn logits_match_hf_float32() {
    for dir in fixtures() {
        let model = load(&dir);
        for p in expected(&dir)["prompts"].as_array().unwrap() {
            let ids = u32s(&p["ids"]);
            let mut cache = model.new_cache(1, ids.len());
            let logits = model.forward(std::slice::from_ref(&ids), &mut cache, Logits::All).unwrap();
            let all: Vec<f32> = to_host_f32(logits);
            let vocab = all.len() / ids.len();
            let last = &all[(ids.len() - 1) * vocab..];
            let err_last = rel_err(last, &f32s(&p["last_logits"]));
            assert!(err_last < 1e-5, "{}: {:?}: last position rel err {err_last:e}", dir.display(), p["text"]);
            for (pos, row) in p["all_logits"].as_array().unwrap().iter().enumerate() {
                let err = rel_err(&all[pos * vocab..(pos + 1) * vocab], &f32s(row));
                assert!(err < 1e-5, "{}: {:?}: position {pos} rel err {err:e}", dir.display(), p["text"]);
            }
        }
    }
}

#[test]
fn greedy_ids_match_hf_with_kv_cache() {
    for dir in fixtures() {
        let model = load(&dir);
        for p in expected(&dir)["prompts"].as_array().unwrap() {
            let ids = u32s(&p["ids"]);
            let want = u32s(&p["greedy_ids"]);
            let mut cache = model.new_cache(1, ids.len() + want.len());
            let mut got = Vec::new();
            let mut next = ids.clone();
            for _ in 0..want.len() {
                let logits: Vec<f32> = to_host_f32(model.forward(&[next], &mut cache, Logits::Last).unwrap());
                let id = argmax(&logits);
                got.push(id);
                next = vec![id];
            }
            assert_eq!(got, want, "{}: {:?}", dir.display(), p["text"]);
        }
    }
}

#[test]
fn incremental_decoding_equals_full_rerun() {
    let dir = &fixtures()[0];
    let model = load(dir);
    let p = &expected(dir)["prompts"][0];
    let ids: Vec<u32> = u32s(&p["ids"]).into_iter().chain(u32s(&p["greedy_ids"]).into_iter().take(6)).collect();
    // Full run over every position.
    let mut cache = model.new_cache(1, ids.len());
    let full: Vec<f32> = to_host_f32(model.forward(std::slice::from_ref(&ids), &mut cache, Logits::All).unwrap());
    let vocab = full.len() / ids.len();
    // Prefill half, then one token at a time.
    let split = ids.len() / 2;
    let mut cache = model.new_cache(1, ids.len());
    let mut inc: Vec<f32> = to_host_f32(model.forward(&[ids[..split].to_vec()], &mut cache, Logits::All).unwrap());
    for &id in &ids[split..] {
        let step: Vec<f32> = to_host_f32(model.forward(&[vec![id]], &mut cache, Logits::Last).unwrap());
        inc.extend(step);
    }
    assert_eq!(inc.len(), full.len());
    for pos in 0..ids.len() {
        let err = rel_err(&inc[pos * vocab..(pos + 1) * vocab], &full[pos * vocab..(pos + 1) * vocab]);
        assert!(err < 1e-5, "position {pos}: rel err {err:e}");
    }
}
