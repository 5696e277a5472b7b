//! braid-tiny (the trained default model) and its stress twin: Braid's reference path on CPU in
//! f32 against HF transformers' float32 outputs recorded in `models/braid-tiny/reference.json`.

mod common;

use std::path::{Path, PathBuf};

use braid_model::{DType, Device, Logits, Qwen3, to_host_f32};
use common::*;
use serde_json::Value;

fn tiny_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models/braid-tiny")
}

fn reference() -> Value {
    serde_json::from_str(&std::fs::read_to_string(tiny_dir().join("reference.json")).unwrap()).unwrap()
}

fn load(dir: &Path) -> Qwen3 {
    Qwen3::load(dir, &Device::flex(), DType::F32, &mut |_, _| {}).unwrap()
}

/// Greedy ids and last-position logits for each recorded prompt.
fn check_prompts(model: &Qwen3, cases: &Value, what: &str) {
    for p in cases.as_array().unwrap() {
        let ids = u32s(&p["ids"]);
        let want = u32s(&p["greedy_ids"]);
        let mut cache = model.new_cache(1, ids.len() + want.len());
        let logits = to_host_f32(model.forward(std::slice::from_ref(&ids), &mut cache, Logits::Last).unwrap());
        let err = rel_err(&logits, &f32s(&p["last_logits"]));
        assert!(err < 1e-5, "{what} {:?}: last-logit rel err {err:e}", p["text"]);
        let mut got = vec![braid_argmax(&logits)];
        while got.len() < want.len() {
            let l = to_host_f32(model.forward(&[vec![*got.last().unwrap()]], &mut cache, Logits::Last).unwrap());
            got.push(braid_argmax(&l));
        }
        assert_eq!(got, want, "{what} {:?}: greedy ids", p["text"]);
    }
}

fn braid_argmax(v: &[f32]) -> u32 {
    v.iter().enumerate().fold((0, f32::MIN), |b, (i, &x)| if x > b.1 { (i, x) } else { b }).0 as u32
}

#[test]
fn braid_tiny_matches_hf_logits_and_greedy_ids() {
    check_prompts(&load(&tiny_dir()), &reference()["prompts"], "braid-tiny");
}

#[test]
fn braid_tiny_held_out_perplexity_equals_hf() {
    let model = load(&tiny_dir());
    let r = reference();
    let (mut nll, mut count) = (0f64, 0usize);
    for corpus in r["perplexity"]["windows"].as_array().unwrap() {
        for w in corpus.as_array().unwrap() {
            let ids = u32s(w);
            let mut cache = model.new_cache(1, ids.len());
            let logits = to_host_f32(model.forward(std::slice::from_ref(&ids), &mut cache, Logits::All).unwrap());
            let vocab = logits.len() / ids.len();
            for pos in 0..ids.len() - 1 {
                let row = &logits[pos * vocab..(pos + 1) * vocab];
                let max = row.iter().fold(f32::MIN, |m, &x| m.max(x)) as f64;
                let lse = max + row.iter().map(|&x| (x as f64 - max).exp()).sum::<f64>().ln();
                nll += lse - row[ids[pos + 1] as usize] as f64;
                count += 1;
            }
        }
    }
    let ppl = (nll / count as f64).exp();
    let hf = r["perplexity"]["ppl"].as_f64().unwrap();
    let rel = (ppl - hf).abs() / hf;
    assert!(rel < 1e-3, "Braid perplexity {ppl:.5} vs HF {hf:.5}: rel {rel:e}");
    assert!(ppl < 100.0, "a trained model: perplexity {ppl}");
}

/// The stress twin: braid-tiny with k_norm scaled up (maxima 96.5, 44.5, ...) and q_norm scaled
/// down on the same RoPE pairs, built in a temporary folder from the shipped norms.
#[test]
fn stress_twin_matches_hf_and_stays_close_to_braid_tiny() {
    let tmp = tempfile::tempdir().unwrap();
    for f in ["config.json", "tokenizer.json", "tokenizer_config.json", "generation_config.json"] {
        std::fs::copy(tiny_dir().join(f), tmp.path().join(f)).unwrap();
    }
    let base = std::fs::read(tiny_dir().join("model.safetensors")).unwrap();
    let norms = std::fs::read(tiny_dir().join("stress_twin_norms.safetensors")).unwrap();
    let base = safetensors::SafeTensors::deserialize(&base).unwrap();
    let norms = safetensors::SafeTensors::deserialize(&norms).unwrap();
    let mut tensors: Vec<(String, safetensors::tensor::TensorView<'_>)> = base.tensors();
    for (name, view) in tensors.iter_mut() {
        if let Ok(replacement) = norms.tensor(name) {
            *view = replacement;
        }
    }
    assert_eq!(norms.len(), 16, "q_norm and k_norm of 8 layers");
    safetensors::serialize_to_file(tensors, None, &tmp.path().join("model.safetensors")).unwrap();

    let twin = load(tmp.path());
    let r = reference();
    let k_max: f32 = (0..8)
        .map(|l| twin.model.layers[l].self_attn.k_norm.weight.val().abs().max().into_scalar::<f32>())
        .fold(0.0, f32::max);
    assert_eq!(k_max, 96.5);
    check_prompts(&twin, &r["stress_twin"], "stress twin");
    // Same function in exact arithmetic: HF's twin and HF's braid-tiny differ only by rounding.
    for (t, b) in r["stress_twin"].as_array().unwrap().iter().zip(r["prompts"].as_array().unwrap()) {
        let err = rel_err(&f32s(&t["last_logits"]), &f32s(&b["last_logits"]));
        assert!(err < 2e-2, "twin vs braid-tiny (HF) rel err {err:e}");
    }
}
