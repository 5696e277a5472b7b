//! Shared helpers for tests that read the fixtures in `tests/fixtures/`.
#![allow(dead_code)]

use std::path::PathBuf;

use serde_json::Value;

pub fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

/// Every fixture folder (each has an `expected.json`).
pub fn fixtures() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(fixtures_dir())
        .expect("tests/fixtures exists")
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("expected.json").is_file())
        .collect();
    dirs.sort();
    assert!(dirs.len() >= 3, "fixtures missing: run scripts/make_fixtures.py");
    dirs
}

pub fn expected(dir: &std::path::Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap()
}

pub fn f32s(v: &Value) -> Vec<f32> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()
}

pub fn u32s(v: &Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

/// max |a - b| / max |b|
pub fn rel_err(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(0f32, |m, x| m.max(x.abs()));
    let diff = a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
    diff / scale
}

/// The default wgpu adapter, or `None` (with a message) on a machine without one. CI sets
/// `BRAID_REQUIRE_WGPU=1` (Mesa's lavapipe is installed there), which turns a missing adapter
/// into a failure instead of a skip.
pub fn wgpu_device() -> Option<braid_model::Device> {
    let probe = std::panic::catch_unwind(|| {
        let d = braid_model::Device::wgpu(burn::tensor::DeviceKind::DefaultDevice);
        let t = burn::tensor::Tensor::<1>::zeros([4], &d) + 1.0;
        t.into_data();
        d
    });
    match probe {
        Ok(d) => Some(d),
        Err(_) if std::env::var_os("BRAID_REQUIRE_WGPU").is_some() => {
            panic!("BRAID_REQUIRE_WGPU is set but no wgpu adapter works (install mesa-vulkan-drivers)")
        }
        Err(_) => {
            eprintln!("no wgpu adapter on this machine: wgpu kernel tests skipped (CI runs them on lavapipe)");
            None
        }
    }
}
