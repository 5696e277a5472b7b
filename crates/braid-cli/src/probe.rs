//! One prompt through the model with taps: what `dump` writes and `diff` compares.

use anyhow::Result;
use braid_engine::sampler::argmax;
use braid_model::{Logits, Qwen3, to_host_f32};
use burn::tensor::Tensor;

/// The residual stream after every layer, the last position's logits, a greedy continuation.
pub struct Probe {
    /// Per layer, `[seq, hidden]` flattened, f32.
    pub layers: Vec<Vec<f32>>,
    /// `[vocab]`, f32.
    pub logits: Vec<f32>,
    pub greedy: Vec<u32>,
}

/// Runs `ids` (one sequence) and then `n` greedy tokens (picked on the host from f32 logits,
/// the same way for every path compared).
pub fn probe(model: &Qwen3, ids: &[u32], n: usize) -> Result<Probe> {
    let t = ids.len();
    let mut cache = model.new_cache(1, t + n + 1);
    let mut taps: Vec<Tensor<3>> = Vec::new();
    let hidden = model.hidden_states_tapped(&[ids.to_vec()], &mut cache, Some(&mut taps))?;
    let layers = taps.into_iter().map(to_host_f32).collect();
    let h = model.config.hidden_size;
    let logits = to_host_f32(model.head(hidden.narrow(1, t - 1, 1).reshape([1, h])));
    let mut greedy = Vec::with_capacity(n);
    let mut next = argmax(&logits);
    for _ in 0..n {
        greedy.push(next);
        next = argmax(&to_host_f32(model.forward(&[vec![next]], &mut cache, Logits::Last)?));
    }
    Ok(Probe { layers, logits, greedy })
}
