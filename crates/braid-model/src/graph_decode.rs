//! Greedy batch-1 decoding with the step's token and position on the device, so that one
//! captured CUDA graph (`burn::tensor::capture`) replays every step: no host work and no
//! launch overhead per token. The step (`Qwen3::decode_step`) reads `state = [token, position]`
//! (u32) from a device buffer, writes its key/value into the cache in place, and advances
//! `state` by its argmax, recording each token in `history[position]`. Backends without graph
//! support (Flex, wgpu) re-run the step eagerly: same tokens, no speed-up.

use burn::tensor::{DType, Int, Tensor, TensorData, capture};

use crate::error::ForwardError;
use crate::kv_cache::KvCache;
use crate::nn::Rope;
use crate::{Logits, Qwen3, ops, to_host_f32};

/// Extra cache positions: the capture runs the step up to four times before the first replay.
const SLACK: usize = 8;

/// The device-side state of a graph-ready decode.
pub struct DecodeState {
    /// `[2]` u32: the token to feed and its position.
    pub state: Tensor<1, Int>,
    /// `[capacity]` u32: the token at each position (from the prompt's last on).
    pub history: Tensor<1, Int>,
    pub cache: KvCache,
    /// f32 `[capacity, hd]` each.
    pub rope: Rope,
}

/// How the decode steps ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepMode {
    /// One call of `Qwen3::decode_step` per token.
    Eager,
    /// Captured once, replayed per token (a CUDA graph where the backend has them).
    Graph,
}

/// The outcome of [`Qwen3::generate_greedy`].
#[derive(Debug, Clone)]
pub struct GreedyRun {
    pub tokens: Vec<u32>,
    /// Whether replays ran as hardware graphs.
    pub hardware_graph: bool,
    pub prefill_secs: f64,
    /// Decode steps timed (after the capture), and their seconds.
    pub timed_steps: usize,
    pub decode_secs: f64,
}

fn host_u32(t: &Tensor<1, Int>) -> Vec<u32> {
    t.clone().into_data().convert::<i64>().try_to_vec::<i64>().expect("int tensor").into_iter().map(|v| v as u32).collect()
}

impl Qwen3 {
    /// One greedy decode step on [`DecodeState`] (batch 1).
    pub fn decode_step(&self, s: &mut DecodeState) {
        let (mut x, cos, sin) =
            ops::decode_inputs(self.model.embed_tokens.val(), s.rope.cos.clone(), s.rope.sin.clone(), s.state.clone());
        let rope = Rope { cos, sin };
        for ((layer, kv), plan) in self.model.layers.iter().zip(s.cache.layers.iter_mut()).zip(&self.plan().layers) {
            x = layer.decode_step(x, &rope, kv, &s.state, plan);
        }
        let h = self.model.norm.forward(x);
        let ids = ops::argmax_device(self.head(h));
        let (state, history) = ops::advance(ids, s.state.clone(), s.history.clone());
        s.state = state;
        s.history = history;
    }

    /// Greedy continuation of `prompt` by `n` tokens: prefill as usual, then device-state decode
    /// steps, eager or captured and replayed. Returns the `n` tokens (the first from the
    /// prefill) and timings.
    pub fn generate_greedy(&self, prompt: &[u32], n: usize, mode: StepMode) -> Result<GreedyRun, ForwardError> {
        let t = prompt.len();
        let cap = t + n + SLACK;
        let limit = ops::ATTENTION_MAX_KEYS.min(self.config.max_position_embeddings);
        if cap > limit {
            return Err(ForwardError::ContextOverflow { needed: cap, limit });
        }
        let device = self.device();
        let start = std::time::Instant::now();
        let mut cache = self.new_cache(1, cap);
        let logits = to_host_f32(self.forward(&[prompt.to_vec()], &mut cache, Logits::Last)?);
        let first = logits
            .iter()
            .enumerate()
            .fold((0usize, f32::MIN), |b, (i, &v)| if v > b.1 { (i, v) } else { b })
            .0 as u32;
        let prefill_secs = start.elapsed().as_secs_f64();
        if n == 0 {
            return Ok(GreedyRun { tokens: vec![], hardware_graph: false, prefill_secs, timed_steps: 0, decode_secs: 0.0 });
        }
        let state = Tensor::<1, Int>::from_data(TensorData::new(vec![first, t as u32], [2]), (&device, DType::U32));
        let mut hist = vec![0u32; cap];
        hist[t] = first;
        let history = Tensor::<1, Int>::from_data(TensorData::new(hist, [cap]), (&device, DType::U32));
        let rope = self.rotary.tables(0, cap, &device);
        let mut st = DecodeState { state, history, cache, rope };
        let last = t + n - 1;
        let (hardware_graph, timed_steps, decode_secs, history) = match mode {
            StepMode::Eager => {
                let start = std::time::Instant::now();
                for _ in 0..n - 1 {
                    self.decode_step(&mut st);
                }
                let h = host_u32(&st.history);
                (false, n - 1, start.elapsed().as_secs_f64(), h)
            }
            StepMode::Graph => {
                let mut graph = capture(&device, move || {
                    self.decode_step(&mut st);
                    (st.state.clone(), st.history.clone())
                });
                let pos = host_u32(&graph.output().0)[1] as usize;
                let steps = last.saturating_sub(pos);
                let start = std::time::Instant::now();
                for _ in 0..steps {
                    // SAFETY: every tensor the step touches is owned by the closure inside
                    // `graph` (state, history, cache, rope tables) or by `self` (weights), which
                    // outlives the graph; replays and reads run on the capture's device stream.
                    unsafe {
                        graph.replay();
                    }
                }
                let h = host_u32(&graph.output().1);
                (graph.is_hardware(), steps, start.elapsed().as_secs_f64(), h)
            }
        };
        Ok(GreedyRun { tokens: history[t..t + n].to_vec(), hardware_graph, prefill_secs, timed_steps, decode_secs })
    }
}
