//! `block_sum_pair` (two sums through one reduction, `decode_mlp`'s phase E) on wgpu
//! (CI: lavapipe): each of its sums is `block_sum`'s bit for bit, on values whose sum depends
//! on the order of the additions (magnitudes from 1e-6 to 1e6, both signs), and near the f64 sum.

mod common;

use braid_kernels::{TensorHandle, block_sum_pair_probe};
use cubecl::ir::FloatKind;
use cubecl::prelude::*;

fn next(seed: &mut u64) -> u64 {
    *seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    *seed >> 11
}

/// A value of magnitude 10^-6..10^6, either sign.
fn wide(seed: &mut u64) -> f32 {
    let u = (next(seed) as f64) / ((1u64 << 53) as f64);
    let sign = if next(seed) & 1 == 0 { 1.0 } else { -1.0 };
    (sign * 10f64.powf(12.0 * u - 6.0)) as f32
}

#[test]
fn a_pair_of_sums_through_one_tree_gives_each_sum_bit_for_bit() {
    let Some(client) = common::client() else { return };
    let mut seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64;
    println!("seed {seed}");
    for n in [1usize, 2, 32, 64, 128, 256] {
        for _ in 0..4 {
            let values: Vec<f32> = (0..2 * n).map(|_| wide(&mut seed)).collect();
            let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            let t = TensorHandle::new_contiguous(vec![2, n], client.create_from_slice(&bytes), ElemType::Float(FloatKind::F32));
            let out = block_sum_pair_probe(&client, &t).expect("a valid probe");
            let got: Vec<f32> = client.read_one(out.handle.clone()).expect("read back").chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
            for row in 0..2 {
                let (single, pair) = (got[row], got[2 + row]);
                assert_eq!(single.to_bits(), pair.to_bits(), "n {n} row {row}: block_sum {single:e}, the pair's {pair:e} (seed {seed})");
                let exact: f64 = values[row * n..(row + 1) * n].iter().map(|&v| f64::from(v)).sum();
                let scale: f64 = values[row * n..(row + 1) * n].iter().map(|&v| f64::from(v).abs()).sum();
                assert!((f64::from(single) - exact).abs() <= 1e-6 * scale, "n {n} row {row}: {single:e} against the f64 sum {exact:e} (seed {seed})");
            }
        }
    }
}

#[test]
fn the_probe_refuses_a_width_one_cube_cannot_hold() {
    let Some(client) = common::client() else { return };
    for shape in [vec![2usize, 3], vec![2, 512], vec![3, 4], vec![8]] {
        let len: usize = shape.iter().product();
        let t = TensorHandle::new_contiguous(shape.clone(), client.create_from_slice(&vec![0u8; 4 * len]), ElemType::Float(FloatKind::F32));
        assert!(block_sum_pair_probe(&client, &t).is_err(), "{shape:?} accepted");
    }
}
