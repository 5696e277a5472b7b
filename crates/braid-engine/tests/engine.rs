//! Tokenizer, chat template and generation loop against transformers' recorded outputs.

use std::path::PathBuf;

use braid_engine::{ChatTemplate, Engine, EngineError, Finish, Message, Request, SamplingParams, TextStream, Tokenizer};
use braid_model::{DType, Device};
use serde_json::Value;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn fixtures() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(repo().join("tests/fixtures"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("expected.json").is_file())
        .collect();
    v.sort();
    assert!(v.len() >= 3);
    v
}

fn json(path: PathBuf) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

fn tiny() -> Engine {
    Engine::load(&repo().join("models/braid-tiny"), &Device::flex(), DType::F32, &mut |_, _| {}).unwrap()
}

#[test]
fn tokenizer_round_trips_and_matches_transformers() {
    for dir in fixtures() {
        let tok = Tokenizer::from_file(&dir.join("tokenizer.json")).unwrap();
        for case in json(dir.join("expected.json"))["roundtrip"].as_array().unwrap() {
            let text = case["text"].as_str().unwrap();
            let got = tok.encode(text).unwrap();
            assert_eq!(got, ids(&case["ids"]), "{text:?}");
            assert_eq!(tok.decode(&got).unwrap(), text);
        }
        for p in json(dir.join("expected.json"))["prompts"].as_array().unwrap() {
            assert_eq!(tok.encode(p["text"].as_str().unwrap()).unwrap(), ids(&p["ids"]));
        }
    }
}

#[test]
fn chat_template_matches_transformers_apply_chat_template() {
    for dir in fixtures() {
        let template = ChatTemplate::from_tokenizer_config(&dir.join("tokenizer_config.json")).unwrap();
        for case in json(dir.join("expected.json"))["chat"].as_array().unwrap() {
            let messages: Vec<Message> = case["messages"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| Message::new(m["role"].as_str().unwrap(), m["content"].as_str().unwrap()))
                .collect();
            let got = template
                .render(&messages, case["add_generation_prompt"].as_bool().unwrap(), case["enable_thinking"].as_bool())
                .unwrap();
            assert_eq!(got, case["text"].as_str().unwrap());
        }
    }
}

#[test]
fn text_stream_never_splits_a_character() {
    let tok = Tokenizer::from_file(&repo().join("models/braid-tiny/tokenizer.json")).unwrap();
    let text = "Ünïcødé ✓ 🐋 — naïve café, 日本語 and plain words.";
    let all = tok.encode(text).unwrap();
    assert!(all.len() > text.chars().count() / 2, "multi-byte characters span several tokens");
    let mut stream = TextStream::new(&tok);
    let mut out = String::new();
    for &id in &all {
        if let Some(piece) = stream.push(id).unwrap() {
            assert!(!piece.contains('\u{FFFD}'), "piece {piece:?}");
            out.push_str(&piece);
        }
    }
    if let Some(rest) = stream.finish().unwrap() {
        out.push_str(&rest);
    }
    assert_eq!(out, text);
}

#[test]
fn greedy_generation_reproduces_hf_and_streams_the_same_text() {
    let engine = tiny();
    let reference = json(repo().join("models/braid-tiny/reference.json"));
    let case = &reference["prompts"][1];
    let want = ids(&case["greedy_ids"]);
    let req = Request { max_tokens: want.len(), sampling: SamplingParams::default(), ignore_eos: true };
    let mut streamed = String::new();
    let g = engine.generate(&ids(&case["ids"]), &req, &mut |piece| streamed.push_str(piece)).unwrap();
    assert_eq!(g.output_ids, want);
    assert_eq!(g.finish, Finish::Length);
    assert_eq!(streamed, g.text);
    assert_eq!(g.text, engine.tokenizer.decode(&want).unwrap());
}

#[test]
fn fused_greedy_runs_on_the_replayed_graph_path_and_matches_hf() {
    let mut engine = tiny();
    let plan = braid_model::KernelPlan::parse("fused", &engine.model.config).unwrap();
    engine.model.set_plan(plan).unwrap();
    let reference = json(repo().join("models/braid-tiny/reference.json"));
    for case in reference["prompts"].as_array().unwrap().iter().take(3) {
        let want = ids(&case["greedy_ids"]);
        let req = Request { max_tokens: want.len(), sampling: SamplingParams::default(), ignore_eos: true };
        let mut streamed = String::new();
        let g = engine.generate(&ids(&case["ids"]), &req, &mut |piece| streamed.push_str(piece)).unwrap();
        assert!(g.graph, "pure greedy with fused attention takes the device-state path");
        assert_eq!(g.output_ids, want);
        assert_eq!(streamed, g.text);
    }
    // Stops on eos on that path too (the capture's extra steps are not emitted).
    let prompt = engine.encode_prompt("It was a truth").unwrap();
    let req = Request { max_tokens: 8, sampling: SamplingParams::default(), ignore_eos: false };
    let free = engine.generate(&prompt, &req, &mut |_| {}).unwrap();
    engine.eos = vec![free.output_ids[1]];
    let stopped = engine.generate(&prompt, &req, &mut |_| {}).unwrap();
    assert!(stopped.graph);
    assert_eq!(stopped.finish, Finish::Eos);
    assert_eq!(stopped.output_ids, free.output_ids[..1]);
    // Sampling stays on the host loop.
    let sampling = SamplingParams { temperature: 1.0, seed: 3, ..Default::default() };
    let g = engine.generate(&prompt, &Request { max_tokens: 4, sampling, ignore_eos: true }, &mut |_| {}).unwrap();
    assert!(!g.graph);
}

#[test]
fn same_seed_same_text_other_seed_other_text() {
    let engine = tiny();
    let prompt = engine.encode_prompt("The whale").unwrap();
    let run = |seed| {
        let sampling = SamplingParams { temperature: 1.0, top_k: 50, top_p: 0.95, seed, ..Default::default() };
        let req = Request { max_tokens: 24, sampling, ignore_eos: true };
        engine.generate(&prompt, &req, &mut |_| {}).unwrap().output_ids
    };
    assert_eq!(run(1), run(1));
    assert_ne!(run(1), run(2));
}

#[test]
fn stops_on_eos_without_emitting_it() {
    let mut engine = tiny();
    let prompt = engine.encode_prompt("It was a truth").unwrap();
    let req = Request { max_tokens: 8, sampling: SamplingParams::default(), ignore_eos: false };
    let free = engine.generate(&prompt, &req, &mut |_| {}).unwrap();
    // Make the third greedy token an end-of-sequence token.
    engine.eos = vec![free.output_ids[2]];
    let stopped = engine.generate(&prompt, &req, &mut |_| {}).unwrap();
    assert_eq!(stopped.finish, Finish::Eos);
    assert_eq!(stopped.output_ids, free.output_ids[..2]);
}

#[test]
fn eos_ids_come_from_config_and_generation_config() {
    let engine = tiny();
    let im_end = engine.tokenizer.token_to_id("<|im_end|>").unwrap();
    let eot = engine.tokenizer.token_to_id("<|endoftext|>").unwrap();
    assert_eq!(engine.eos, { let mut v = vec![im_end, eot]; v.sort(); v });
    let s = engine.default_sampling();
    assert_eq!((s.temperature, s.top_k, s.top_p), (0.7, 40, 0.9));
}

#[test]
fn prompt_longer_than_the_context_is_an_error_and_the_context_caps_output() {
    let dir = &fixtures()[0];
    let engine = Engine::load(dir, &Device::flex(), DType::F32, &mut |_, _| {}).unwrap();
    let limit = engine.model.config.max_position_embeddings;
    let long = "whale ".repeat(limit * 2);
    match engine.encode_prompt(&long) {
        Err(EngineError::PromptTooLong { tokens, limit: l }) => assert!(tokens >= l && l == limit),
        other => panic!("{:?}", other.map(|v| v.len())),
    }
    let prompt = vec![5u32; limit - 3];
    let req = Request { max_tokens: 50, sampling: SamplingParams::default(), ignore_eos: true };
    let g = engine.generate(&prompt, &req, &mut |_| {}).unwrap();
    assert_eq!((g.output_ids.len(), g.finish), (3, Finish::Context));
}

#[test]
fn bad_sampling_parameters_are_rejected() {
    let engine = tiny();
    let req = Request { max_tokens: 4, sampling: SamplingParams { top_p: 1.5, ..Default::default() }, ignore_eos: true };
    let e = engine.generate(&[5, 6], &req, &mut |_| {}).unwrap_err();
    assert!(e.to_string().contains("top_p"), "{e}");
}
