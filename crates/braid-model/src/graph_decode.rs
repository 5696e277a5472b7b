//! Greedy batch-1 decoding with the step's token and position on the device, so that one
//! captured CUDA graph (`burn::tensor::capture`) replays every step: no host work and no
//! launch overhead per token. The step (`Qwen3::decode_step`) reads `state = [token, position]`
//! (u32) from a device buffer, writes its key/value into the cache in place, and advances
//! `state` by its argmax, recording each token in `history[position]`. CUDA replays a hardware
//! graph; wgpu reports graph support too (the tests replay there); Flex re-runs the step: same
//! tokens, no speed-up.

use burn::tensor::{DType, Graph, Int, Tensor, TensorData, capture};

use crate::error::ForwardError;
use crate::kv_cache::KvCache;
use crate::nn::{Carry, Rope};
use crate::{Logits, Qwen3, ops};

/// Extra cache positions: the capture runs the step up to four times before the first replay.
pub const SLACK: usize = 8;

/// About how long [`GreedyDecoder::next_token`] lets a chunk of steps run before it reads
/// their tokens: short enough that the text looks continuous.
pub const STREAM_CHUNK_SECS: f64 = 0.02;

/// The most steps [`GreedyDecoder::next_token`] takes in one chunk.
pub const STREAM_CHUNK_MAX: usize = 16;

/// The device-side state of a graph-ready decode.
pub struct DecodeState {
    /// `[2]` u32: the token to feed and its position.
    pub state: Tensor<1, Int>,
    /// `[capacity]` u32: the token at each position (from the prompt's last on).
    pub history: Tensor<1, Int>,
    pub cache: KvCache,
    /// f32 `[capacity, hd]` each.
    pub rope: Rope,
    /// `[ops::decode_sync_words]` u32 zeros: the grid barrier counter and tagged words of
    /// `ops::decode_mlp` (one for every layer: each launch leaves the counter a multiple of its
    /// cube count and rewrites the words it uses).
    pub barrier: Tensor<1, Int>,
    /// Where the one launch over the layers runs (`Qwen3::decode_layers_ready`): every layer's
    /// cache, `[n, kv_heads, capacity, hd]` each,
    /// which the step's `ops::decode_layers` launch reads and writes (each layer's own in
    /// `cache` is then a range of these: a view where the backend's slices at its offsets are
    /// views; the step uses only layer 0's, where the launch does not run its attention).
    pub stacked: Option<(Tensor<4>, Tensor<4>)>,
    /// Where the step's end writes them (`Qwen3::step_writes_inputs`): the next step's inputs,
    /// `x: [1, hidden]` and f32 `cos, sin: [1, hd]` (the first step's gathered at construction),
    /// written in place by each step's `ops::greedy_head`; else each step gathers its own
    /// (`ops::decode_inputs`) from `state`.
    pub inputs: Option<[Tensor<2>; 3]>,
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
        let (mut x, cos, sin) = match &s.inputs {
            Some([x, cos, sin]) => (x.clone(), cos.clone(), sin.clone()),
            None => ops::decode_inputs(self.model.embed_tokens.val(), s.rope.cos.clone(), s.rope.sin.clone(), s.state.clone()),
        };
        let rope = Rope { cos, sin };
        let (layers, plans) = (&self.model.layers, &self.plan().layers);
        if let (Some(w), Some((p, first_fused))) = (&self.stacks, self.layers_precision(&x))
            && let Some((kc, vc)) = s.stacked.take()
        {
            // One launch up to the last layer's attention output (from the first layer's
            // attention inputs with `pre`, else from its attention output), the last one's MLP.
            let n = layers.len();
            let (first, last) = (&layers[0], &layers[n - 1]);
            let pre = first_fused && ops::decode_layers_pre();
            let a = &layers[1].self_attn;
            let (x, attn) = if pre {
                (x.clone(), x)
            } else if first_fused && ops::decode_layers_first() {
                // The first layer's attention inputs and attention as a launch of their own
                // (`pre` with no layer), over layer 0's rows of the stacks and of the caches
                // (views at offset 0: the launch writes the stacked caches in place); the one
                // MLP's weights it is given are layer 0's, which its idle cubes read into L2
                // for the launch below.
                let one2 = |t: &Tensor<2>, of: usize| t.clone().slice(0..t.dims()[0] / of);
                let one1 = |t: &Tensor<1>, of: usize| t.clone().slice(0..t.dims()[0] / of);
                let (m, h) = (n - 1, n);
                let (x0, a0, _, _) = ops::decode_layers(
                    x.clone(),
                    x,
                    one1(&w.post_norm, m),
                    one2(&w.wo, m),
                    one2(&w.gate, m),
                    one2(&w.up, m),
                    one2(&w.down, m),
                    first.post_attention_layernorm.eps,
                    p,
                    &s.barrier,
                    one1(&w.input_norm, h),
                    one2(&w.wq, h),
                    one2(&w.wk, h),
                    one2(&w.wv, h),
                    one1(&w.q_norm, h),
                    one1(&w.k_norm, h),
                    rope.cos.clone(),
                    rope.sin.clone(),
                    a.shape(1, 1),
                    first.input_layernorm.eps,
                    a.q_norm.eps,
                    kc.clone().slice(0..1),
                    vc.clone().slice(0..1),
                    s.state.clone(),
                    first.prefetch(),
                    0,
                    true,
                );
                (x0, a0)
            } else {
                first.decode_attention(x, &rope, &mut s.cache.layers[0], &s.state, &plans[0], first.prefetch())
            };
            let layers_launch = |attn: Tensor<2>, x: Tensor<2>, kc: Tensor<4>, vc: Tensor<4>| ops::decode_layers(
                attn,
                x,
                w.post_norm.clone(),
                w.wo.clone(),
                w.gate.clone(),
                w.up.clone(),
                w.down.clone(),
                first.post_attention_layernorm.eps,
                p,
                &s.barrier,
                w.input_norm.clone(),
                w.wq.clone(),
                w.wk.clone(),
                w.wv.clone(),
                w.q_norm.clone(),
                w.k_norm.clone(),
                rope.cos.clone(),
                rope.sin.clone(),
                a.shape(1, 1),
                layers[1].input_layernorm.eps,
                a.q_norm.eps,
                kc,
                vc,
                s.state.clone(),
                last.prefetch(),
                n - 1,
                pre,
            );
            let (mut kc, mut vc) = (kc, vc);
            if ops::decode_probe().2 {
                // (A timing probe: the launch twice with the same inputs. It writes the same
                // keys and values again, so the tokens stay right; the step grows by the
                // launch's time inside the graph.)
                let (_, _, k2, v2) = layers_launch(attn.clone(), x.clone(), kc, vc);
                (kc, vc) = (k2, v2);
            }
            let (x, attn, kc, vc) = layers_launch(attn, x, kc, vc);
            s.stacked = Some((kc, vc));
            let (x, carry) = last.decode_step(x, Carry::Attn(attn), &rope, &mut s.cache.layers[n - 1], &s.state, &s.barrier, &plans[n - 1], None);
            return self.finish_step(s, x, carry);
        }
        let mut carry = Carry::None;
        for i in 0..layers.len() {
            if i > 0 && ops::decode_probe().1 {
                // (A timing probe: one more launch between two layers' launches.)
                let _ = s.state.clone() + 1;
            }
            let (kv, rest) = s.cache.layers[i..].split_first_mut().expect("a cache per layer");
            let next = rest.first_mut().map(|c| (&layers[i + 1], c, &plans[i + 1]));
            let (stream, c) = layers[i].decode_step(x, carry, &rope, kv, &s.state, &s.barrier, &plans[i], next);
            x = stream;
            carry = c;
        }
        self.finish_step(s, x, carry);
    }

    /// The step's end after the last layer (`x` its stream, `carry` what it left): the final
    /// norm (with the pending MLP output added), the head, the argmax, and `state` and `history`
    /// advanced by it, and the next step's inputs where it writes them (`Qwen3::greedy_advance`:
    /// two launches where the head is fused).
    fn finish_step(&self, s: &mut DecodeState, x: Tensor<2>, carry: Carry) {
        // (The last layer has no next to carry a `q` to.)
        let pending = match carry {
            Carry::Down(down) => Some(down),
            Carry::None | Carry::Q(_) | Carry::Attn(_) => None,
        };
        let (state, history, inputs) = self.greedy_advance(x, pending, s.state.clone(), s.history.clone(), &s.rope, s.inputs.take());
        s.inputs = inputs;
        s.state = state;
        s.history = history;
    }

    /// The precision of the batch-1 decode step's one launch over its layers
    /// (`ops::decode_layers`), where the model has its layer stacks and every layer but the last
    /// runs on into the next one's attention in one mode (as `DecoderLayer::decode_step` would
    /// pick it), else `None`; and whether the first layer's attention inputs and attention are
    /// fused in that mode too (the launch may then run them: `pre`).
    fn layers_precision(&self, x: &Tensor<2>) -> Option<(ops::Precision, bool)> {
        self.stacks.as_ref()?;
        let (layers, plans) = (&self.model.layers, &self.plan().layers);
        let p = layers[0].attends_into(&plans[0], &plans[1], x)?;
        let all = (1..layers.len() - 1).all(|i| layers[i].attends_into(&plans[i], &plans[i + 1], x) == Some(p));
        let first = &plans[0];
        let fused = crate::plan::OpChoice::Fused(p);
        all.then_some((p, first.rms_norm_qkv == fused && first.qk_norm_rope == fused && first.attention == fused))
    }

    /// Whether [`GreedyDecoder`] may run this model's plan: every layer's attention fused (the
    /// device-state step always runs the attention kernel, so a `reference` attention would
    /// silently change path).
    pub fn device_decode_ready(&self) -> bool {
        self.plan().layers.iter().all(|l| l.attention != crate::plan::OpChoice::Reference)
    }

    /// Greedy continuation of `prompt` by `n` tokens with [`GreedyDecoder`]; returns the `n`
    /// tokens (the first from the prefill) and timings (decode time over the steps taken after
    /// the decoder was built: the capture's warm-up steps are not timed).
    pub fn generate_greedy(&self, prompt: &[u32], n: usize, mode: StepMode) -> Result<GreedyRun, ForwardError> {
        let mut dec = GreedyDecoder::new(self, prompt, n, mode)?;
        let prefill_secs = dec.prefill_secs;
        if n == 0 {
            return Ok(GreedyRun { tokens: vec![], hardware_graph: false, prefill_secs, timed_steps: 0, decode_secs: 0.0 });
        }
        let ahead = dec.ready();
        let start = std::time::Instant::now();
        // All the steps back to back, one read at the end (no per-token sync).
        let tokens = dec.take(n)?;
        Ok(GreedyRun {
            tokens,
            hardware_graph: dec.hardware_graph(),
            prefill_secs,
            timed_steps: n.saturating_sub(ahead),
            decode_secs: start.elapsed().as_secs_f64(),
        })
    }
}

/// Every layer's cache stacked (`DecodeState::stacked`), each layer's own made a range of the
/// stack (a view where the backend's slices at its offsets are views; else a copy, which the
/// step uses only for layer 0 without `pre`, whose attention alone reads it).
fn stack_caches(cache: &mut KvCache) -> (Tensor<4>, Tensor<4>) {
    let rest = &mut cache.layers[..];
    let k = Tensor::cat(rest.iter().map(|c| c.k.clone()).collect(), 0);
    let v = Tensor::cat(rest.iter().map(|c| c.v.clone()).collect(), 0);
    for (i, c) in rest.iter_mut().enumerate() {
        c.k = k.clone().slice(i..i + 1);
        c.v = v.clone().slice(i..i + 1);
    }
    (k, v)
}

type Out = (Tensor<1, Int>, Tensor<1, Int>);

enum Steps<'m> {
    Eager(Box<DecodeState>),
    Graph(Box<Graph<Out, Box<dyn FnMut() -> Out + 'm>>>),
}

/// A greedy token stream for one prompt (batch 1) on device-side state: the prefill runs at
/// construction; each [`Self::next_token`] returns the next token, taking decode steps (eager
/// steps or graph replays, a chunk of them read back at once) when none is ready. With [`StepMode::Graph`], construction
/// captures the step, which runs it up to four times (real steps: their tokens come first).
pub struct GreedyDecoder<'m> {
    model: &'m Qwen3,
    steps: Steps<'m>,
    prompt_len: usize,
    /// The most tokens this decoder may return (its cache has room for them).
    budget: usize,
    /// Tokens at positions `prompt_len..` known on the host.
    known: Vec<u32>,
    returned: usize,
    /// Steps [`Self::next_token`] takes when it has no token ready.
    chunk: usize,
    /// Seconds the prefill took.
    pub prefill_secs: f64,
    /// Seconds the capture took (its warm-up steps, first-use kernel compilation and tuning
    /// included); 0 for eager steps.
    pub setup_secs: f64,
}

impl<'m> GreedyDecoder<'m> {
    /// Prefills `prompt` and prepares up to `budget` tokens. Errors when the cache would
    /// exceed the context or the fused attention's key limit.
    pub fn new(model: &'m Qwen3, prompt: &[u32], budget: usize, mode: StepMode) -> Result<Self, ForwardError> {
        let t = prompt.len();
        let cap = t + budget + SLACK;
        let limit = model.config.max_position_embeddings;
        if cap > limit {
            return Err(ForwardError::ContextOverflow { needed: cap, limit });
        }
        let device = model.device();
        let start = std::time::Instant::now();
        let mut cache = model.new_cache(1, cap);
        let logits = model.forward(&[prompt.to_vec()], &mut cache, Logits::Last)?;
        let vocab = logits.dims()[2];
        let first = ops::argmax(logits.reshape([1, vocab]))[0];
        let prefill_secs = start.elapsed().as_secs_f64();
        let state = Tensor::<1, Int>::from_data(TensorData::new(vec![first, t as u32], [2]), (&device, DType::U32));
        let mut hist = vec![0u32; cap];
        hist[t] = first;
        let history = Tensor::<1, Int>::from_data(TensorData::new(hist, [cap]), (&device, DType::U32));
        let rope = model.rotary.tables(0, cap, &device);
        let c = &model.config;
        let words = ops::decode_sync_words(c.hidden_size, c.intermediate_size, c.num_attention_heads, c.num_kv_heads(), c.head_dim());
        let barrier = Tensor::<1, Int>::from_data(TensorData::new(vec![0u32; words], [words]), (&device, DType::U32));
        let mut cache = cache;
        // (Only where the one launch runs at this capacity: elsewhere the per-layer steps below.)
        let stacked = model.decode_layers_ready(cap).then(|| stack_caches(&mut cache));
        let inputs = model.step_writes_inputs().then(|| {
            let (x, cos, sin) = ops::decode_inputs(model.model.embed_tokens.val(), rope.cos.clone(), rope.sin.clone(), state.clone());
            [x, cos, sin]
        });
        let mut st = DecodeState { state, history, cache, rope, barrier, stacked, inputs };
        let setup = std::time::Instant::now();
        let (steps, known) = match mode {
            StepMode::Eager => (Steps::Eager(Box::new(st)), vec![first]),
            StepMode::Graph if budget <= 1 => (Steps::Eager(Box::new(st)), vec![first]),
            StepMode::Graph => {
                let step: Box<dyn FnMut() -> Out + 'm> = Box::new(move || {
                    model.decode_step(&mut st);
                    (st.state.clone(), st.history.clone())
                });
                let graph = capture(&device, step);
                let pos = host_u32(&graph.output().0)[1] as usize;
                let history = host_u32(&graph.output().1);
                (Steps::Graph(Box::new(graph)), history[t..=pos].to_vec())
            }
        };
        let setup_secs = if matches!(steps, Steps::Graph(_)) { setup.elapsed().as_secs_f64() } else { 0.0 };
        Ok(Self { model, steps, prompt_len: t, budget, known, returned: 0, chunk: 1, prefill_secs, setup_secs })
    }

    /// Tokens already computed and not yet returned, plus those returned.
    pub fn ready(&self) -> usize {
        self.known.len()
    }

    /// Whether steps replay as a hardware graph.
    pub fn hardware_graph(&self) -> bool {
        matches!(&self.steps, Steps::Graph(g) if g.is_hardware())
    }

    /// The next `n` greedy tokens, taking the steps back to back and reading the device once
    /// at the end (no per-token sync: the latency benchmark's loop).
    pub fn take(&mut self, n: usize) -> Result<Vec<u32>, ForwardError> {
        if self.returned + n > self.budget {
            return Err(ForwardError::ContextOverflow { needed: self.prompt_len + self.returned + n, limit: self.prompt_len + self.budget });
        }
        self.compute_upto(self.returned + n);
        let out = self.known[self.returned..self.returned + n].to_vec();
        self.returned += n;
        Ok(out)
    }

    /// The next greedy token, for a stream. When none is ready it takes the next `chunk`
    /// steps back to back and reads their tokens at once (`compute_upto`), then sets `chunk` so
    /// that a chunk takes about [`STREAM_CHUNK_SECS`] (1 to [`STREAM_CHUNK_MAX`] steps): one
    /// device read per chunk instead of one per token, whose round trip leaves the GPU idle
    /// (34 us a token on an H100 at 0.79 ms a step, 2026-11-27), while the text still comes out
    /// faster than anyone reads it. A caller that stops early (end of sequence) leaves up to
    /// `chunk - 1` steps computed and unread.
    pub fn next_token(&mut self) -> Result<u32, ForwardError> {
        if self.returned >= self.budget {
            return Err(ForwardError::ContextOverflow { needed: self.prompt_len + self.returned + 1, limit: self.prompt_len + self.budget });
        }
        if self.returned == self.known.len() {
            let n = self.chunk.min(self.budget - self.returned);
            let start = std::time::Instant::now();
            self.compute_upto(self.returned + n);
            let per_step = start.elapsed().as_secs_f64() / n as f64;
            self.chunk = if per_step > 0.0 { ((STREAM_CHUNK_SECS / per_step) as usize).clamp(1, STREAM_CHUNK_MAX) } else { STREAM_CHUNK_MAX };
        }
        self.returned += 1;
        Ok(self.known[self.returned - 1])
    }

    /// Runs decode steps until the tokens of positions `prompt_len..prompt_len + upto` are
    /// known (`upto` at most the budget), back to back, then reads them in one device read.
    fn compute_upto(&mut self, upto: usize) {
        let missing = upto.saturating_sub(self.known.len());
        if missing == 0 {
            return;
        }
        let history = match &mut self.steps {
            Steps::Eager(st) => {
                for _ in 0..missing {
                    self.model.decode_step(st);
                }
                host_u32(&st.history)
            }
            Steps::Graph(g) => {
                for _ in 0..missing {
                    // SAFETY: every tensor the step touches is owned by the captured closure
                    // (state, history, cache, rope tables) or by the model, which outlives this
                    // decoder; replays and reads run on the capture's device stream.
                    unsafe {
                        g.replay();
                    }
                }
                host_u32(&g.output().1)
            }
        };
        let t = self.prompt_len;
        self.known = history[t..t + upto].to_vec();
    }
}
