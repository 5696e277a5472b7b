//! The tagged word format of `decode_mlp`'s phases (`braid_kernels::tagged`) on wgpu (CI:
//! lavapipe, f16): values published and read back through a partner unit's word come back bit
//! for bit, over stale words of the previous round or zeros,
//! at rounds across the tag's wrap. The decode launches that use it are checked on CUDA by
//! `braid-cli check-kernels` (bitwise against the separate launches).

mod common;

use braid_kernels::TensorHandle;
use braid_kernels::tagged::{TAG_ROUNDS, partner, tagged_probe};
use cubecl::ir::{FloatKind, UIntKind};
use cubecl::prelude::*;

fn next(seed: &mut u64) -> u64 {
    *seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    *seed >> 16
}

/// Random finite f16 bit patterns (normals, subnormals, zeros, infinities; no NaN).
fn f16_bits(seed: &mut u64, n: usize) -> Vec<u16> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let b = next(seed) as u16;
        if b & 0x7c00 == 0x7c00 && b & 0x03ff != 0 {
            continue;
        }
        out.push(b);
    }
    out
}

#[test]
fn tagged_words_carry_f16_values_bit_for_bit() {
    let Some(client) = common::client() else { return };
    let f16 = ElemType::Float(FloatKind::F16);
    if !client.properties().supports_type(f16) {
        eprintln!("f16 unsupported by this adapter: skipped");
        return;
    }
    let mut seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64;
    println!("seed {seed}");
    for (n, round) in [(64usize, 1u32), (200, TAG_ROUNDS - 1), (256, TAG_ROUNDS), (37, u32::MAX)] {
        let bits = f16_bits(&mut seed, n);
        let bytes: Vec<u8> = bits.iter().flat_map(|b| b.to_le_bytes()).collect();
        let values = TensorHandle::new_contiguous(vec![n], client.create_from_slice(&bytes), f16);
        // Stale words: another value under the previous round's tag; or zeros (a fresh buffer).
        let stale_tag = std::env::var("STALE_TAG").ok().and_then(|s| s.parse().ok()).unwrap_or(round.wrapping_sub(1) % TAG_ROUNDS + 1);
        for stale in [true, false] {
            let words: Vec<u32> = (0..n).map(|_| if stale { (next(&mut seed) as u32 & 0xffff_e000) | stale_tag } else { 0 }).collect();
            let wb: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
            let words = TensorHandle::new_contiguous(vec![n], client.create_from_slice(&wb), ElemType::UInt(UIntKind::U32));
            let out = tagged_probe(&client, &values, &words, round).expect("launch");
            let got = client.read_one(out.handle).expect("read back");
            let got: Vec<u16> = got.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect();
            if std::env::var_os("TAGGED_DEBUG").is_some() {
                for u in 0..n {
                    println!("{u}: got {:#06x} want {:#06x}", got[u], bits[partner(u, n)]);
                }
            }
            for u in 0..n {
                let want = bits[partner(u, n)];
                // (Either zero is the same value; a runtime may flush the sign of a zero.)
                let same = got[u] == want || (got[u] & 0x7fff == 0 && want & 0x7fff == 0);
                assert!(same, "n {n} round {round} stale {stale}: unit {u} read {:#06x}, its partner published {want:#06x}", got[u]);
            }
        }
    }
}

#[test]
fn the_probe_refuses_a_32_bit_value() {
    let Some(client) = common::client() else { return };
    let f32_t = ElemType::Float(FloatKind::F32);
    let values = TensorHandle::new_contiguous(vec![4], client.create_from_slice(&[0u8; 16]), f32_t);
    let words = TensorHandle::new_contiguous(vec![4], client.create_from_slice(&[0u8; 16]), ElemType::UInt(UIntKind::U32));
    assert!(tagged_probe(&client, &values, &words, 1).is_err());
}
