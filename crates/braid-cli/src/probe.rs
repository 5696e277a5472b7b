//! One prompt through the model with taps: what `dump` writes and `diff` compares.

use anyhow::Result;
use braid_engine::sampler::argmax;
use braid_model::{HostTaps, Logits, Qwen3, Taps, to_host_f32};

/// Every tap of [`braid_model::taps`] (f32, on the host, `logits` included) and a greedy
/// continuation.
pub struct Probe {
    pub taps: HostTaps,
    /// `[vocab]`, f32: the last prompt position.
    pub logits: Vec<f32>,
    pub greedy: Vec<u32>,
}

impl Probe {
    /// The residual stream after layer `l`, `[seq, hidden]` flattened.
    pub fn layer_output(&self, l: usize) -> &[f32] {
        self.taps.get(&braid_model::taps::layer_tap(l, "output")).expect("every layer records its output")
    }
}

/// Runs `ids` (one sequence) and then `n` greedy tokens (picked on the host from f32 logits,
/// the same way for every path compared).
pub fn probe(model: &Qwen3, ids: &[u32], n: usize) -> Result<Probe> {
    let t = ids.len();
    let mut cache = model.new_cache(1, t + n + 1);
    let mut taps = Taps::default();
    let hidden = model.hidden_states_tapped(&[ids.to_vec()], &mut cache, Some(&mut taps))?;
    let mut taps = taps.to_host();
    let h = model.config.hidden_size;
    let logits = to_host_f32(model.head(hidden.narrow(1, t - 1, 1).reshape([1, h])));
    taps.insert("logits".into(), vec![logits.len()], logits.clone());
    let mut greedy = Vec::with_capacity(n);
    let mut next = argmax(&logits);
    for _ in 0..n {
        greedy.push(next);
        next = argmax(&to_host_f32(model.forward(&[vec![next]], &mut cache, Logits::Last)?));
    }
    Ok(Probe { taps, logits, greedy })
}
