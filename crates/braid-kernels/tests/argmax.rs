//! `argmax` on wgpu (CI: lavapipe), f32 and f16: one cube a row and each row split over 2 to
//! 40 cubes (`argmax_in`) give the host's answer (the largest value, the first index on ties;
//! NaN and -inf never win; a row with neither a finite value nor +inf gives `vocab`) on random
//! rows with planted ties across slice boundaries, the maximum at either end, +inf, NaN and
//! -inf among the values, rows of f32::MIN, and rows with nothing that can win.

mod common;

use braid_kernels::TensorHandle;
use braid_kernels::argmax::{argmax, argmax_in, default_slices};
use cubecl::ir::FloatKind;
use cubecl::prelude::*;

fn next(seed: &mut u64) -> u64 {
    *seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    *seed >> 11
}

fn uniform(seed: &mut u64) -> f32 {
    ((next(seed) as f64) / ((1u64 << 53) as f64) * 2.0 - 1.0) as f32
}

/// The host's argmax of a row: the first index of the largest value that is neither NaN nor
/// -inf, or `row.len()`.
fn truth(row: &[f32]) -> u32 {
    let mut best: Option<usize> = None;
    for (i, &x) in row.iter().enumerate() {
        if x.is_nan() || x == f32::NEG_INFINITY {
            continue;
        }
        if best.is_none_or(|b| x > row[b]) {
            best = Some(i);
        }
    }
    best.unwrap_or(row.len()) as u32
}

/// Row `r`'s values: random, then a pattern chosen by `r` (see the module doc).
fn row(seed: &mut u64, r: usize, vocab: usize, slices: usize) -> Vec<f32> {
    let mut v: Vec<f32> = (0..vocab).map(|_| 10.0 * uniform(seed)).collect();
    let per = vocab.div_ceil(slices.max(1));
    let pick = |seed: &mut u64| (next(seed) as usize) % vocab;
    match r % 8 {
        // A tie across a slice boundary (or anywhere, where the row is one slice).
        0 => {
            let a = pick(seed).min(per.saturating_sub(1));
            let b = (a + per).min(vocab - 1);
            v[a] = 50.0;
            v[b] = 50.0;
        }
        1 => v[vocab - 1] = 60.0,
        2 => v[0] = 60.0,
        3 => {
            for _ in 0..8 {
                let i = pick(seed);
                v[i] = f32::NAN;
            }
            let i = pick(seed);
            v[i] = f32::NEG_INFINITY;
            let j = pick(seed);
            v[j] = 70.0;
        }
        4 => {
            let (a, b) = (pick(seed), pick(seed));
            v[a] = f32::INFINITY;
            v[b] = f32::INFINITY;
        }
        5 => v.iter_mut().for_each(|x| *x = f32::MIN),
        6 => v.iter_mut().enumerate().for_each(|(i, x)| *x = if i % 3 == 0 { f32::NAN } else { f32::NEG_INFINITY }),
        _ => {}
    }
    v
}

fn check(client: &Client, dtype: ElemType, vocab: usize, rows: usize, seed: &mut u64) {
    let splits = [1usize, 2, 3, 7, 19, 40, default_slices(rows, vocab, 1)];
    for &slices in &splits {
        let mut values = Vec::with_capacity(rows * vocab);
        for r in 0..rows {
            values.extend(row(seed, r, vocab, slices));
        }
        let (bytes, host): (Vec<u8>, Vec<f32>) = if dtype == ElemType::Float(FloatKind::F16) {
            let h: Vec<half::f16> = values.iter().map(|&x| half::f16::from_f32(x)).collect();
            (h.iter().flat_map(|x| x.to_le_bytes()).collect(), h.iter().map(|x| x.to_f32()).collect())
        } else {
            (values.iter().flat_map(|x| x.to_le_bytes()).collect(), values.clone())
        };
        let t = TensorHandle::new_contiguous(vec![rows, vocab], client.create_from_slice(&bytes), dtype);
        let runs = [("argmax_in", argmax_in(client, t.clone(), slices).expect("a valid argmax")), ("argmax", argmax(client, t).expect("a valid argmax"))];
        for (name, out) in runs {
            let got: Vec<u32> = client.read_one(out.handle.clone()).expect("read back").chunks_exact(4).map(|b| u32::from_le_bytes(b.try_into().unwrap())).collect();
            for r in 0..rows {
                let want = truth(&host[r * vocab..(r + 1) * vocab]);
                assert_eq!(got[r], want, "{name} {dtype:?} vocab {vocab} row {r} (pattern {}) slices {slices}: {} against {want} (seed {seed})", r % 8, got[r]);
            }
        }
    }
}

#[test]
fn split_and_whole_rows_give_the_first_largest_index() {
    let Some(client) = common::client() else { return };
    let mut seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64;
    println!("seed {seed}");
    let f16 = ElemType::Float(FloatKind::F16);
    for dtype in [ElemType::Float(FloatKind::F32), f16] {
        if !client.properties().supports_type(dtype) {
            eprintln!("{dtype:?} unsupported by this adapter: skipped");
            continue;
        }
        // An odd width (scalar loads), a vector multiple, and Qwen3's vocabulary (8 rows: one
        // of each pattern).
        for (vocab, rows) in [(5011usize, 8usize), (4104, 9), (151_936, 8)] {
            check(&client, dtype, vocab, rows, &mut seed);
        }
    }
}

#[test]
fn a_slice_count_out_of_range_is_refused() {
    let Some(client) = common::client() else { return };
    let t = TensorHandle::new_contiguous(vec![1, 64], client.create_from_slice(&[0u8; 256]), ElemType::Float(FloatKind::F32));
    assert!(argmax_in(&client, t.clone(), 0).is_err());
    assert!(argmax_in(&client, t, 1025).is_err());
}

#[test]
fn few_rows_split_and_many_do_not() {
    // Qwen3's vocabulary in bf16: 18,992 vectors of 8, 1,024 a slice.
    assert_eq!(default_slices(1, 151_936, 8), 19);
    assert_eq!(default_slices(15, 151_936, 8), 19);
    assert_eq!(default_slices(16, 151_936, 8), 1);
    assert_eq!(default_slices(1, 1000, 8), 1);
}
