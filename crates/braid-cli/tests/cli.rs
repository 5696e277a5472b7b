//! `braid-cli generate` end to end: output, exit codes and error messages.

use std::path::PathBuf;
use std::process::{Command, Output};

use serde_json::Value;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn braid(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_braid-cli"))
        .args(args)
        .env_remove("BRAID_MODEL")
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn generate_with_the_default_model_prints_english_and_a_summary() {
    let out = braid(&["generate", "--prompt", "It was a truth", "--max-tokens", "24", "--seed", "1"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.starts_with("It was a truth"), "{stdout}");
    let words = stdout.split_whitespace().filter(|w| w.chars().all(|c| c.is_ascii_alphabetic())).count();
    assert!(words >= 10, "braid-tiny writes words: {stdout}");
    let stderr = text(&out.stderr);
    assert!(stderr.contains("4 prompt tokens") && stderr.contains("decode"), "{stderr}");
}

#[test]
fn json_greedy_output_equals_hf_greedy_ids() {
    let dir = repo().join("tests/fixtures/untied-gqa1-hd16-f32-sharded");
    let expected: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    let case = &expected["prompts"][0];
    let out = braid(&[
        "generate", "--model", dir.to_str().unwrap(), "--prompt", case["text"].as_str().unwrap(),
        "--temperature", "0", "--ignore-eos", "--max-tokens", "24", "--format", "json",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let got: Value = serde_json::from_str(&text(&out.stdout)).unwrap();
    assert_eq!(got["prompt_ids"], case["ids"]);
    assert_eq!(got["output_ids"], case["greedy_ids"]);
    assert_eq!(got["finish"], "length");
    for key in ["text", "prefill_tok_per_s", "decode_tok_per_s", "prefill_secs", "decode_secs"] {
        assert!(got.get(key).is_some(), "missing {key}");
    }
}

/// Several prompts (flags and a file) run as one batch: each gets HF's greedy ids, in order.
#[test]
fn several_prompts_run_as_one_batch_with_hf_greedy_ids() {
    let dir = repo().join("tests/fixtures/untied-gqa1-hd16-f32-sharded");
    let expected: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    let cases = expected["prompts"].as_array().unwrap();
    assert!(cases.len() >= 2);
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("prompts.txt");
    let rest: Vec<&str> = cases[1..].iter().map(|c| c["text"].as_str().unwrap()).collect();
    std::fs::write(&file, format!("{}\n\n", rest.join("\n"))).unwrap();
    let out = braid(&[
        "generate", "--model", dir.to_str().unwrap(), "--prompt", cases[0]["text"].as_str().unwrap(),
        "--prompts-file", file.to_str().unwrap(), "--plan", "fused",
        "--temperature", "0", "--ignore-eos", "--max-tokens", "24", "--format", "json",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let got: Value = serde_json::from_str(&text(&out.stdout)).unwrap();
    let gens = got["generations"].as_array().unwrap();
    assert_eq!(gens.len(), cases.len());
    for (g, c) in gens.iter().zip(cases) {
        assert_eq!(g["prompt_ids"], c["ids"]);
        assert_eq!(g["output_ids"], c["greedy_ids"]);
    }
    assert!(got["stats"]["max_batch"].as_u64().unwrap() >= 2);
    // An empty prompts file alone is an error naming the file.
    let empty = tmp.path().join("empty.txt");
    std::fs::write(&empty, "\n").unwrap();
    let out = braid(&["generate", "--model", dir.to_str().unwrap(), "--prompts-file", empty.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("empty.txt"), "{}", text(&out.stderr));
}

#[test]
fn chat_mode_renders_the_template() {
    let out = braid(&["generate", "--chat", "--no-think", "--prompt", "Hello", "--max-tokens", "4", "--temperature", "0"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).starts_with("<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"));
}

#[test]
fn a_truncated_checkpoint_fails_cleanly_naming_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let src = repo().join("models/braid-tiny");
    for f in ["config.json", "tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(src.join(f), tmp.path().join(f)).unwrap();
    }
    let bytes = std::fs::read(src.join("model.safetensors")).unwrap();
    std::fs::write(tmp.path().join("model.safetensors"), &bytes[..bytes.len() / 2]).unwrap();
    let out = braid(&["generate", "--model", tmp.path().to_str().unwrap(), "--prompt", "x"]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(stderr.contains("model.safetensors") && stderr.contains("truncated"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn over_long_prompt_and_missing_device_are_errors() {
    let fixture = repo().join("tests/fixtures/tied-gqa2-hd32-bf16");
    let long = "whale ".repeat(600);
    let out = braid(&["generate", "--model", fixture.to_str().unwrap(), "--prompt", &long]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("max_position_embeddings"), "{}", text(&out.stderr));

    let out = braid(&["generate", "--prompt", "x", "--device", "cuda"]);
    if cfg!(not(feature = "cuda")) {
        assert!(!out.status.success());
        assert!(text(&out.stderr).contains("--features cuda"), "{}", text(&out.stderr));
    }
    assert!(!text(&out.stderr).contains("panicked"));
}

#[test]
fn a_bad_tokenizer_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let src = repo().join("tests/fixtures/tied-gqa2-hd32-bf16");
    for f in ["config.json", "model.safetensors", "tokenizer_config.json"] {
        std::fs::copy(src.join(f), tmp.path().join(f)).unwrap();
    }
    std::fs::write(tmp.path().join("tokenizer.json"), "{\"version\": \"1.0\"").unwrap();
    let out = braid(&["generate", "--model", tmp.path().to_str().unwrap(), "--prompt", "x"]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("tokenizer.json"), "{}", text(&out.stderr));
}

#[test]
fn plans_run_and_a_bad_plan_is_named() {
    let fixture = repo().join("tests/fixtures/tied-gqa2-hd32-bf16");
    let model = fixture.to_str().unwrap();
    // The fused plans on the CPU run the reference twins: the same greedy text as the reference.
    let run = |plan: &str| {
        braid(&["generate", "--model", model, "--prompt", "the", "--max-tokens", "6", "--temperature", "0", "--plan", plan])
    };
    let reference = run("reference");
    assert!(reference.status.success(), "{}", text(&reference.stderr));
    let fused = run("fused");
    assert!(fused.status.success(), "{}", text(&fused.stderr));
    assert_eq!(text(&fused.stdout), text(&reference.stdout));
    assert!(text(&fused.stderr).contains("plan fused-torch"), "{}", text(&fused.stderr));

    // A plan file naming a layer the model does not have: the file and the field are named.
    let tmp = tempfile::tempdir().unwrap();
    let plan = tmp.path().join("plan.json");
    std::fs::write(&plan, r#"{"layers": {"99": {"attention": "fused"}}}"#).unwrap();
    let out = run(plan.to_str().unwrap());
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("plan.json") && err.contains("layers.99"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    // Not a preset and not a file.
    let out = run("fastest");
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("fastest") && !text(&out.stderr).contains("panicked"));
}

#[test]
fn inspect_reports_a_loadable_folder_and_its_extreme_norms() {
    let fixture = repo().join("tests/fixtures/tied-stored-gqa3-hd128-f32");
    let out = braid(&["inspect", fixture.to_str().unwrap(), "--format", "json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["loadable"], true);
    assert_eq!(r["layers"], 2);
    // The fixture's k_norm maxima (96.5 in layer 0) are flagged, nothing else is.
    let k0 = r["norms"][0]["k_norm"].as_f64().unwrap();
    assert!((k0 - 96.5).abs() < 1e-3, "{k0}");
    assert_eq!(r["norms"][0]["extreme"].as_array().unwrap().len(), 1);
    assert!(r["norms"][0]["input_layernorm"].as_f64().unwrap() < 10.0);
    // Every stored tensor has statistics; the parameter count adds them up.
    let tensors = r["tensors"].as_array().unwrap();
    let total: u64 = tensors.iter().map(|t| t["count"].as_u64().unwrap()).sum();
    assert_eq!(r["parameters"].as_u64().unwrap(), total);
    assert!(tensors.iter().all(|t| t["nan"] == 0 && t["inf"] == 0));
}

#[test]
fn inspect_lists_every_problem_and_fails() {
    use safetensors::tensor::{Dtype, TensorView};
    let src = repo().join("tests/fixtures/tied-stored-gqa3-hd128-f32");
    let tmp = tempfile::tempdir().unwrap();
    std::fs::copy(src.join("config.json"), tmp.path().join("config.json")).unwrap();
    // The fixture's tensors, plus a phantom bias (attention_bias is false) and a NaN in a norm,
    // less one projection.
    let bytes = std::fs::read(src.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut owned: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(n, v)| (n, v.dtype(), v.shape().to_vec(), v.data().to_vec()))
        .collect();
    let norm = owned.iter_mut().find(|t| t.0 == "model.layers.1.input_layernorm.weight").unwrap();
    norm.3[0..4].copy_from_slice(&f32::NAN.to_le_bytes());
    owned.push(("model.layers.0.self_attn.q_proj.bias".into(), Dtype::F32, vec![768], vec![0u8; 768 * 4]));
    owned.retain(|t| t.0 != "model.layers.1.mlp.down_proj.weight");
    let views: Vec<(String, TensorView<'_>)> =
        owned.iter().map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap())).collect();
    safetensors::serialize_to_file(views, None, &tmp.path().join("model.safetensors")).unwrap();

    let out = braid(&["inspect", tmp.path().to_str().unwrap(), "--format", "json"]);
    assert!(!out.status.success());
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["loadable"], false);
    let errors: Vec<String> = r["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["severity"] == "error")
        .map(|f| f["message"].as_str().unwrap().to_string())
        .collect();
    assert!(errors.iter().any(|e| e.contains("q_proj.bias") && e.contains("attention_bias")), "{errors:#?}");
    assert!(errors.iter().any(|e| e.contains("layers.1.input_layernorm") && e.contains("non-finite")), "{errors:#?}");
    assert!(errors.iter().any(|e| e.contains("layers.1.mlp.down_proj.weight") && e.contains("missing")), "{errors:#?}");
    let stderr = text(&out.stderr);
    assert!(stderr.contains("not loadable") && !stderr.contains("panicked"), "{stderr}");

    // A truncated file: an error naming it, no panic.
    let bytes = std::fs::read(tmp.path().join("model.safetensors")).unwrap();
    std::fs::write(tmp.path().join("model.safetensors"), &bytes[..bytes.len() / 2]).unwrap();
    let out = braid(&["inspect", tmp.path().to_str().unwrap()]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(stderr.contains("model.safetensors") && !stderr.contains("panicked"), "{stderr}");
}

#[test]
fn diff_compares_every_path_with_f32_layer_by_layer() {
    let out = braid(&["diff", "--prompt", "It was a truth", "--new-tokens", "4", "--format", "json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let paths = r["paths"].as_array().unwrap();
    assert_eq!(paths.len(), 3);
    for p in paths {
        let errs = p["rel_err"].as_array().unwrap();
        assert_eq!(errs.len(), 8, "braid-tiny has 8 layers");
        // bf16 against f32: small but not zero.
        assert!(errs.iter().all(|e| e.as_f64().unwrap() > 0.0 && e.as_f64().unwrap() < 0.05), "{p}");
        assert!(p["greedy_agree"].as_u64().unwrap() <= 4);
    }
    // On the CPU the fused torch path runs the twins, which are the reference ops.
    assert_eq!(paths[0]["rel_err"], paths[1]["rel_err"]);
    assert_eq!(paths[1]["first_worse_layer"], serde_json::Value::Null);
}

fn braid_env(args: &[&str], env: &[(&str, &std::path::Path)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_braid-cli"));
    c.args(args).env_remove("BRAID_MODEL");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

#[test]
fn diff_taps_every_sub_step() {
    let out = braid(&["diff", "--prompt", "It was a truth", "--new-tokens", "2", "--format", "json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    let names = |p: &Value| -> Vec<String> { p["taps"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap().to_string()).collect() };
    let reference = names(&r["paths"][0]);
    // embed + 8 layers x 13 taps + norm + logits
    assert_eq!(reference.len(), 1 + 8 * 13 + 2, "{reference:?}");
    assert_eq!(reference[1], "layers.0.input_norm");
    assert_eq!(reference.last().unwrap(), "logits");
    // Fused, the input norm is never materialised: every other tap is there.
    let fused = names(&r["paths"][1]);
    assert_eq!(fused.len(), 1 + 8 * 12 + 2);
    assert!(!fused.iter().any(|n| n.ends_with("input_norm")));
    for t in r["paths"][0]["taps"].as_array().unwrap() {
        let e = t["rel_err"].as_f64().unwrap();
        if t["name"] == "embed" {
            assert_eq!(e, 0.0, "embedding rows are exact in bf16");
        } else {
            assert!(e > 0.0 && e < 0.05, "{t}");
        }
    }
}

#[test]
fn diff_against_an_hf_dump_matches_at_every_tap() {
    // tests/fixtures/tied-gqa2-hd32-bf16/hf_taps_f32.safetensors was written by
    // `python scripts/hf_dump.py tests/fixtures/tied-gqa2-hd32-bf16 --prompt "The quick brown
    // fox jumps over the lazy dog" --new-tokens 16 --device cpu --out ...` (transformers 5.17, f32).
    let dir = repo().join("tests/fixtures/tied-gqa2-hd32-bf16");
    let dump = dir.join("hf_taps_f32.safetensors");
    let out = braid(&[
        "diff", "--model", dir.to_str().unwrap(), "--against", dump.to_str().unwrap(),
        "--new-tokens", "16", "--format", "json",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    let hf = &r["paths"][3];
    assert_eq!(hf["name"], "HF transformers float32");
    let taps = hf["taps"].as_array().unwrap();
    assert_eq!(taps.len(), 1 + 2 * 13 + 2, "every tap of the dump lines up with one of Braid's");
    for t in taps {
        // Braid's f32 reference and PyTorch's f32 eager path: the same computation.
        assert!(t["rel_err"].as_f64().unwrap() < 2e-6, "{t}");
    }
    assert_eq!(hf["greedy_agree"], 16);
    assert_eq!(hf["top1_agrees"], true);

    // A prompt that is not the dump's is refused; so is a file that is not a dump.
    let out = braid(&["diff", "--model", dir.to_str().unwrap(), "--against", dump.to_str().unwrap(), "--prompt", "Other"]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("input_ids differ"), "{}", text(&out.stderr));
    let tmp = tempfile::tempdir().unwrap();
    let bad = tmp.path().join("cut.safetensors");
    let bytes = std::fs::read(&dump).unwrap();
    std::fs::write(&bad, &bytes[..bytes.len() / 2]).unwrap();
    let out = braid(&["diff", "--model", dir.to_str().unwrap(), "--against", bad.to_str().unwrap()]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(stderr.contains("cut.safetensors") && !stderr.contains("panicked"), "{stderr}");
}

#[test]
fn write_plan_calibrates_and_records_what_it_measured() {
    let tmp = tempfile::tempdir().unwrap();
    let plan = tmp.path().join("plan.json");
    let out = braid(&[
        "diff", "--prompt", "It was a truth", "--prompt", "The sea was calm", "--new-tokens", "1",
        "--write-plan", plan.to_str().unwrap(), "--format", "json",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let p: Value = serde_json::from_str(&std::fs::read_to_string(&plan).unwrap()).unwrap();
    let cal = &p["calibration"];
    assert_eq!(cal["calibrated_on"]["checkpoint_sha256"].as_str().unwrap().len(), 64);
    assert_eq!(cal["calibrated_on"]["prompt_tokens"].as_array().unwrap().len(), 2);
    assert_eq!(cal["measured"]["settings"]["margin"], 1.05);
    let ops = cal["measured"]["ops"].as_array().unwrap();
    assert_eq!(ops.len(), 8 * 6 + 1);
    for op in ops {
        // The chosen candidate's error is within the reference's (default margin 1.05), and
        // the plan file says what was chosen.
        let errs = &op["errors"];
        let chosen = op["chosen"].as_str().unwrap();
        assert!(errs[chosen].as_f64().unwrap() <= errs["reference"].as_f64().unwrap() * 1.05, "{op}");
        let in_file = match op["layer"].as_u64() {
            Some(l) => p["layers"][l.to_string()][op["op"].as_str().unwrap()].clone(),
            None => p["lm_head"].clone(),
        };
        assert_eq!(in_file, chosen, "{op}");
    }
    // The written plan runs.
    let out = braid(&["generate", "--prompt", "It was", "--max-tokens", "4", "--dtype", "bf16", "--plan", plan.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn plan_auto_calibrates_once_then_loads_the_cached_plan() {
    let cache = tempfile::tempdir().unwrap();
    let args = ["generate", "--prompt", "It was", "--max-tokens", "6", "--dtype", "bf16", "--temperature", "0", "--plan", "auto"];
    let first = braid_env(&args, &[("BRAID_CACHE_DIR", cache.path())]);
    assert!(first.status.success(), "{}", text(&first.stderr));
    assert!(text(&first.stderr).contains("calibrating"), "{}", text(&first.stderr));
    let files: Vec<_> = std::fs::read_dir(cache.path().join("plans")).unwrap().collect();
    assert_eq!(files.len(), 1);
    let second = braid_env(&args, &[("BRAID_CACHE_DIR", cache.path())]);
    assert!(second.status.success(), "{}", text(&second.stderr));
    let stderr = text(&second.stderr);
    assert!(stderr.contains("from") && !stderr.contains("calibrating"), "{stderr}");
    assert_eq!(first.stdout, second.stdout);
}

#[test]
fn bench_kernels_prints_a_table_and_writes_json() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("kernels.json");
    let out = braid(&["bench", "kernels", "--rows", "2", "--iters", "1", "--json", json.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("rms_norm_qkv") && stdout.contains("tuned us"), "{stdout}");
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let ops: Vec<&str> = report["ops"].as_array().unwrap().iter().map(|o| o["op"].as_str().unwrap()).collect();
    for op in ["rms_norm_qkv", "qk_norm_rope", "attention", "paged_attention", "add_rms_norm", "linear o_proj", "gate_up_silu", "linear lm_head", "silu_mul"] {
        assert!(ops.contains(&op), "{op} missing from {ops:?}");
    }
    for o in report["ops"].as_array().unwrap() {
        assert!(o["graph_us"].as_f64().unwrap() > 0.0 && o["floor_us"].as_f64().unwrap() > 0.0, "{o}");
        assert_eq!(o["rows"], 2);
    }
    // The CPU has no untuned-matmul alternative; the matmul rows are still timed.
    let mm = report["matmuls"].as_array().unwrap();
    assert_eq!(mm.len(), 6);
    assert!(mm.iter().all(|m| m["tuned_us"].as_f64().unwrap() > 0.0 && m["untuned_us"].is_null()));
    assert!(report["bandwidth_gb_s"].as_f64().unwrap() > 0.0 && report["matmul_tflops"].as_f64().unwrap() > 0.0);
}

#[test]
fn bench_kernels_grid_barrier_needs_a_cubecl_device() {
    // The grid barrier probe launches raw kernels: on the CPU it is a clear error, not a panic
    // (on wgpu it prints why it did not run; CUDA runs it).
    let out = braid(&["bench", "kernels", "--rows", "1", "--iters", "1", "--no-matmul", "--grid-barrier"]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(stderr.contains("--grid-barrier needs a CubeCL device") && !stderr.contains("panicked"), "{stderr}");
}

#[test]
fn bench_latency_runs_the_chosen_ways_and_check_kernels_the_chosen_groups() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("latency.json");
    let out = braid(&["bench", "latency", "--ways", "steps,graph", "--runs", "1", "--new-tokens", "4", "--prompt-len", "8", "--json", json.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let ways: Vec<&str> = report["ways"].as_array().unwrap().iter().map(|w| w["name"].as_str().unwrap()).collect();
    assert_eq!(ways, ["device-state steps", "graph replay"]);
    assert_eq!(report["tokens_identical"], true);
    let out = braid(&["bench", "latency", "--ways", "steps,nope"]);
    assert!(!out.status.success() && text(&out.stderr).contains("unknown way 'nope'"), "{}", text(&out.stderr));

    let out = braid(&["check-kernels", "--only", "argmax,linear"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let ops: std::collections::BTreeSet<&str> =
        stdout.lines().skip(2).filter_map(|l| l.split_whitespace().next()).collect();
    assert_eq!(ops.into_iter().collect::<Vec<_>>(), ["argmax", "linear"], "{stdout}");
    let out = braid(&["check-kernels", "--only", "lm_head"]);
    assert!(!out.status.success() && text(&out.stderr).contains("unknown check group 'lm_head'"), "{}", text(&out.stderr));
}

#[test]
fn tune_runs_decode_sizes_and_prefills() {
    let out = braid(&["tune", "--max-seqs", "4", "--max-len", "256", "--prefill-lens", "8", "--prefill-batch-tokens", "300"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    for line in ["decode batch sizes", "prefill      8 tokens", "prefill batch    300 tokens", "tuned "] {
        assert!(stdout.contains(line), "{line:?} missing from {stdout}");
    }
}
