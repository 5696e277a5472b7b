//! Values published without a barrier: each 32-bit word carries a 16-bit float value (bf16 or
//! f16, held as the f32 it widens to, whose low 13 bits are then zero) and, in those 13 low
//! bits, the tag of the round that wrote it. A reader spins on the word itself until the tag is
//! the current round's: the word is written and read whole (a relaxed device-scope atomic, one
//! naturally aligned 32-bit access), so a word with the right tag holds that round's value,
//! whatever order other words arrive in. No fence: a reader waits for the words it needs, one
//! L2 round trip after they land, instead of behind a grid barrier's release fence. (NCCL's
//! low-latency protocol pairs data and flag in one store the same way.) `decode_mlp` still
//! runs an unfenced barrier between its phases, so that its readers do not poll words still
//! on their way ([`await_words`] then rarely re-reads).
//!
//! The round is the caller's: `decode_mlp` reads its grid barrier's ticket counter at the start
//! of a launch (the same in every cube, higher each launch on a shared counter). A word's stale
//! tag is the round that last wrote it: different from the current one as long as every user of
//! the words rewrites all of them at least once every [`TAG_ROUNDS`] rounds (each decode launch
//! rewrites all of its words every launch). Zeros (a fresh buffer) never match: tags start at 1.

use cubecl::prelude::*;
use cubecl::std::tensor::TensorHandle;

use crate::KernelError;
use crate::check::{Check, output_like};

/// Distinct tags (13 bits, zero excluded): rounds `r` and `r + TAG_ROUNDS` share one.
pub const TAG_ROUNDS: u32 = 8191;

/// The tag of round `round`: `1..=TAG_ROUNDS`.
#[cube]
pub fn tag_of(round: u32) -> u32 {
    round % 8191u32 + 1u32
}

/// Writes `value` (an F of 16 bits: bf16 or f16) with `tag` into `words[at]`.
#[cube]
pub fn publish<F: Float>(words: &Tensor<Atomic<u32>>, at: usize, value: F, tag: u32) {
    let bits = u32::reinterpret(f32::cast_from(value));
    words[at].store(bits | tag);
}

/// The value of a word read with the right tag.
#[cube]
pub fn value_of(word: u32) -> f32 {
    // The tag's 13 low bits cleared.
    f32::reinterpret(word & 0xffff_e000u32)
}

/// Whether `word` was written in the round tagged `tag`.
#[cube]
pub fn has_tag(word: u32, tag: u32) -> bool {
    (word & 0x1fffu32) == tag
}

/// Waits until every `words[i]` (first read from `bar[addr[i]]`) carries `tag`, re-reading all
/// the stale ones together each round (one memory round trip a round, whatever their
/// count, instead of one per word); their values into `vals`.
#[cube]
pub fn await_words(bar: &Tensor<Atomic<u32>>, addr: &Array<usize>, words: &mut Array<u32>, vals: &mut Array<f32>, tag: u32, #[comptime] n: usize) {
    let mut stale = true;
    while stale {
        stale = false;
        #[unroll]
        for i in 0..n {
            if !has_tag(words[i], tag) {
                stale = true;
                words[i] = bar[addr[i]].load();
            }
        }
    }
    #[unroll]
    for i in 0..n {
        vals[i] = value_of(words[i]);
    }
}

/// The probe's launch: unit `u` publishes `values[u]` tagged for `round`, then waits for its
/// partner's word ([`partner`]) and its own ([`await_words`]) and writes the partner's value
/// to `out[u]`.
#[cube(launch)]
fn tagged_probe_kernel<F: Float>(values: &Tensor<F>, words: &Tensor<Atomic<u32>>, out: &mut Tensor<F>, round: u32, #[define(F)] _dtype: ElemType) {
    let n = CUBE_DIM_X as usize;
    let u = UNIT_POS_X as usize;
    // (`partner`'s rule.)
    let tag = tag_of(round);
    publish::<F>(words, u, values[u], tag);
    let mut p = u ^ 1;
    if p >= n {
        p = u;
    }
    // [its partner's word, its own], awaited together.
    let mut addr = Array::<usize>::new(2usize);
    let mut got = Array::<u32>::new(2usize);
    let mut vals = Array::<f32>::new(2usize);
    addr[0] = p;
    addr[1] = u;
    got[0] = words[p].load();
    got[1] = words[u].load();
    await_words(words, &addr, &mut got, &mut vals, tag, 2usize);
    out[u] = F::cast_from(vals[0]);
}

/// The word unit `u` of `n` reads back in [`tagged_probe`]: `u ^ 1` (the same plane: a runtime
/// without forward progress between the planes of a cube, such as lavapipe, would not run a
/// wait on another plane's word to its end), or `u` itself where that is past `n`.
pub fn partner(u: usize, n: usize) -> usize {
    if u ^ 1 < n { u ^ 1 } else { u }
}

/// One cube of `values.len()` units (at most 256) publishes `values` (bf16 or f16) into
/// `words: [len]` u32 tagged for round `round`, and reads each back from its [`partner`]'s word
/// once it carries that tag: `out[u] = values[partner(u, len)]`, bit for bit, whatever `words`
/// held before (a stale tag or zeros). Tests the word format on any runtime with atomics (the
/// waits across cubes are `decode_mlp`'s, checked on CUDA by `braid-cli check-kernels`).
pub fn tagged_probe(client: &Client, values: &TensorHandle, words: &TensorHandle, round: u32) -> Result<TensorHandle, KernelError> {
    let c = Check::new("tagged_probe");
    let dtype = values.dtype;
    if dtype.size() != 2 {
        return Err(KernelError::Unsupported { kernel: "tagged_probe", what: format!("{dtype:?} values"), why: "a tagged word holds a 16-bit float (bf16, f16)".into() });
    }
    let n = values.shape().iter().product::<usize>();
    if n == 0 || n > 256 {
        return Err(c.shape_err("values", values, "[1..=256]".into()));
    }
    c.contiguous("values", values)?;
    c.shape("words", words, &[n])?;
    c.same_dtype("words", words, ElemType::UInt(cubecl::ir::UIntKind::U32))?;
    let out = output_like(client, &[n], dtype);
    tagged_probe_kernel::launch(client, CubeCount::new_1d(1), CubeDim::new_1d(n as u32), values.clone().into_arg(), words.clone().into_arg(), out.clone().into_arg(), round, dtype);
    Ok(out)
}
