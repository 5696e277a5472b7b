//! A bad model folder fails at load with an error that names the file and the tensor or field.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use braid_model::{DType, Device, LoadError, Qwen3};
use safetensors::Dtype;

type Tensors = BTreeMap<String, (Dtype, Vec<usize>, Vec<u8>)>;

const FIXTURE: &str = "tied-gqa2-hd32-bf16";

/// Copies the fixture into a temp folder, letting `edit` change its tensors first.
fn edited(edit: impl FnOnce(&mut Tensors)) -> tempfile::TempDir {
    let src = common::fixtures_dir().join(FIXTURE);
    let tmp = tempfile::tempdir().unwrap();
    for f in ["config.json", "tokenizer.json", "tokenizer_config.json", "generation_config.json"] {
        std::fs::copy(src.join(f), tmp.path().join(f)).unwrap();
    }
    let bytes = std::fs::read(src.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: Tensors = st
        .tensors()
        .into_iter()
        .map(|(n, v)| (n, (v.dtype(), v.shape().to_vec(), v.data().to_vec())))
        .collect();
    edit(&mut tensors);
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
        .iter()
        .map(|(n, (d, s, b))| (n.clone(), safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    safetensors::serialize_to_file(views, None, &tmp.path().join("model.safetensors")).unwrap();
    tmp
}

fn load_err(dir: &Path) -> LoadError {
    match Qwen3::load(dir, &Device::flex(), DType::F32, &mut |_, _| {}) {
        Ok(_) => panic!("{} loaded, but it should not", dir.display()),
        Err(e) => e,
    }
}

/// Asserts the message names every one of `needles`.
fn assert_names(e: &LoadError, needles: &[&str]) {
    let msg = e.to_string();
    for n in needles {
        assert!(msg.contains(n), "message {msg:?} does not name {n:?}");
    }
}

#[test]
fn the_unedited_copy_loads() {
    let dir = edited(|_| {});
    Qwen3::load(dir.path(), &Device::flex(), DType::F32, &mut |_, _| {}).unwrap();
}

#[test]
fn truncated_file() {
    let dir = edited(|_| {});
    let f = dir.path().join("model.safetensors");
    let bytes = std::fs::read(&f).unwrap();
    std::fs::write(&f, &bytes[..bytes.len() - 100]).unwrap();
    let e = load_err(dir.path());
    assert!(matches!(e, LoadError::Safetensors { .. }), "{e:?}");
    assert_names(&e, &["model.safetensors", "truncated"]);
}

#[test]
fn malformed_header() {
    let dir = edited(|_| {});
    let f = dir.path().join("model.safetensors");
    let mut bytes = std::fs::read(&f).unwrap();
    bytes[8] = b'#';
    std::fs::write(&f, &bytes).unwrap();
    let e = load_err(dir.path());
    assert!(matches!(e, LoadError::Safetensors { .. }), "{e:?}");
    assert_names(&e, &["model.safetensors"]);
}

#[test]
fn missing_tensor() {
    let dir = edited(|t| {
        t.remove("model.layers.1.mlp.down_proj.weight");
    });
    let e = load_err(dir.path());
    assert!(matches!(e, LoadError::MissingTensor { .. }), "{e:?}");
    assert_names(&e, &["model.safetensors", "model.layers.1.mlp.down_proj.weight"]);
}

#[test]
fn wrong_shape() {
    let dir = edited(|t| {
        let (d, shape, bytes) = t.get_mut("model.layers.0.self_attn.k_proj.weight").unwrap();
        assert_eq!(*d, Dtype::BF16);
        shape[0] -= 1;
        bytes.truncate(shape.iter().product::<usize>() * 2);
    });
    let e = load_err(dir.path());
    assert!(matches!(e, LoadError::Shape { .. }), "{e:?}");
    assert_names(&e, &["model.safetensors", "model.layers.0.self_attn.k_proj.weight", "[63, 64]", "[64, 64]"]);
}

#[test]
fn unsupported_dtype() {
    let dir = edited(|t| {
        let (d, _, bytes) = t.get_mut("model.norm.weight").unwrap();
        *d = Dtype::I16;
        bytes.iter_mut().for_each(|b| *b = 0);
    });
    let e = load_err(dir.path());
    assert!(matches!(e, LoadError::DType { .. }), "{e:?}");
    assert_names(&e, &["model.norm.weight", "I16"]);
}

#[test]
fn phantom_bias_when_attention_bias_is_false() {
    let dir = edited(|t| {
        t.insert("model.layers.0.self_attn.q_proj.bias".into(), (Dtype::BF16, vec![128], vec![0; 256]));
    });
    let e = load_err(dir.path());
    assert!(matches!(e, LoadError::Unexpected { .. }), "{e:?}");
    assert_names(&e, &["model.safetensors", "model.layers.0.self_attn.q_proj.bias", "attention_bias = false"]);
}

#[test]
fn layer_beyond_the_config() {
    let dir = edited(|t| {
        t.insert("model.layers.2.input_layernorm.weight".into(), (Dtype::BF16, vec![64], vec![0; 128]));
    });
    let e = load_err(dir.path());
    assert_names(&e, &["model.layers.2.input_layernorm.weight", "num_hidden_layers = 2"]);
}

#[test]
fn non_finite_weight() {
    let dir = edited(|t| {
        let (_, _, bytes) = t.get_mut("model.layers.1.self_attn.k_norm.weight").unwrap();
        let nan = half::bf16::NAN.to_le_bytes();
        bytes[10..12].copy_from_slice(&nan);
        let inf = half::bf16::INFINITY.to_le_bytes();
        bytes[20..22].copy_from_slice(&inf);
    });
    let e = load_err(dir.path());
    match &e {
        LoadError::NonFinite { count, first, .. } => assert_eq!((*count, *first), (2, 5)),
        other => panic!("{other:?}"),
    }
    assert_names(&e, &["model.layers.1.self_attn.k_norm.weight", "2 non-finite"]);
}

#[test]
fn missing_and_bad_config() {
    let dir = edited(|_| {});
    std::fs::remove_file(dir.path().join("config.json")).unwrap();
    assert_names(&load_err(dir.path()), &["config.json"]);
    std::fs::write(dir.path().join("config.json"), "{ not json").unwrap();
    let e = load_err(dir.path());
    assert!(matches!(e, LoadError::Json { .. }), "{e:?}");
    assert_names(&e, &["config.json"]);
}

#[test]
fn config_that_contradicts_the_tensors() {
    // The tensors are for 2 KV heads; a config saying 4 makes every k/v projection misshapen.
    let dir = edited(|_| {});
    let path = dir.path().join("config.json");
    let text = std::fs::read_to_string(&path).unwrap().replace("\"num_key_value_heads\": 2", "\"num_key_value_heads\": 4");
    std::fs::write(&path, text).unwrap();
    let e = load_err(dir.path());
    assert!(matches!(e, LoadError::Shape { .. }), "{e:?}");
    assert_names(&e, &["k_proj.weight", "[128, 64]"]);
}

#[test]
fn no_weights_at_all() {
    let dir = edited(|_| {});
    std::fs::remove_file(dir.path().join("model.safetensors")).unwrap();
    let e = load_err(dir.path());
    assert!(matches!(e, LoadError::NoWeights { .. }), "{e:?}");
}

#[test]
fn sharded_index_pointing_at_the_wrong_shard() {
    let src = common::fixtures_dir().join("untied-gqa1-hd16-f32-sharded");
    let tmp = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(&src).unwrap() {
        let p = entry.unwrap().path();
        std::fs::copy(&p, tmp.path().join(p.file_name().unwrap())).unwrap();
    }
    let index = tmp.path().join("model.safetensors.index.json");
    let mut json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&index).unwrap()).unwrap();
    let map = json["weight_map"].as_object_mut().unwrap();
    let name = "model.norm.weight";
    let wrong = map.values().find(|f| **f != map[name]).unwrap().clone();
    map.insert(name.into(), wrong);
    std::fs::write(&index, json.to_string()).unwrap();
    let e = load_err(tmp.path());
    assert!(matches!(e, LoadError::IndexMismatch { .. }), "{e:?}");
    assert_names(&e, &["model.safetensors.index.json", name]);
}
