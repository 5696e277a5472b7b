//! The batch engine: many requests at once over a paged KV cache, with continuous batching
//! (new sequences join while others decode), prefix caching and preemption. Its parts follow
//! nano-vllm's: [`Sequence`] (one request's state), [`BlockManager`] (the cache's blocks),
//! [`Scheduler`] (which sequences run next) and [`BatchEngine::step`] (one batch through the
//! model, then sampling and stop conditions).

mod block_manager;
mod scheduler;
mod sequence;

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Instant;

use braid_model::paged::{DecodeLayout, PAGE_SIZE, PagedKvCache, SeqStep};
use braid_model::{Qwen3, to_host_f32};
use burn::module::Module;
use burn::tensor::{DType, Graph, Int, Tensor, TensorData, capture};
use serde::Serialize;

pub use block_manager::BlockManager;
pub use scheduler::{Scheduled, Scheduler, SchedulerConfig};
pub use sequence::{Sequence, Status};

use crate::engine::{Engine, Finish, Generation, Request};
use crate::error::EngineError;

/// How big the cache is and how much one step may take.
#[derive(Debug, Clone, Copy)]
pub struct BatchConfig {
    pub scheduler: SchedulerConfig,
    /// Longest sequence (prompt + output); at most the model's `max_position_embeddings`.
    pub max_len: usize,
    /// Cache blocks of [`PAGE_SIZE`] positions; `None` sizes the pool from the device's memory
    /// (`gpu_memory_fraction` of it, less the weights and the activations of the largest step).
    pub blocks: Option<usize>,
    pub gpu_memory_fraction: f64,
    /// Capture each decode batch size's step once and replay it (a CUDA graph on CUDA) when
    /// every sequence of the batch is greedy and every layer's attention is fused.
    pub graphs: bool,
}

impl BatchConfig {
    pub fn new(max_len: usize) -> Self {
        Self { scheduler: SchedulerConfig::default(), max_len, blocks: None, gpu_memory_fraction: 0.9, graphs: true }
    }
}

/// Decode batch sizes with a captured step; a batch runs in the smallest that holds it (the
/// rest of its rows are padding, which cost little: decode reads the weights once whatever
/// the rows, and a padding row attends to one key). Each captured size keeps its own buffers.
const GRAPH_ROWS: [usize; 9] = [1, 2, 4, 8, 16, 32, 64, 128, 256];

fn graph_rows(n: usize, max_seqs: usize) -> usize {
    GRAPH_ROWS.iter().copied().find(|&r| r >= n).unwrap_or(n).min(max_seqs.max(n))
}

/// A token a step generated: `(sequence id, token)`.
pub type Emitted = (usize, u32);

type StepFn<'e> = Box<dyn FnMut() -> Tensor<1, Int> + 'e>;

/// One decode batch size's captured step and its input buffer.
struct DecodeGraph<'e> {
    layout: DecodeLayout,
    meta: Rc<RefCell<Tensor<1, Int>>>,
    graph: Graph<Tensor<1, Int>, StepFn<'e>>,
}

/// Counters of a run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct BatchStats {
    pub prefill_steps: usize,
    pub decode_steps: usize,
    /// Prompt (and recomputed) tokens run through the model.
    pub prefill_tokens: usize,
    /// Tokens generated (eos included).
    pub decode_tokens: usize,
    pub prefill_secs: f64,
    pub decode_secs: f64,
    pub preemptions: usize,
    /// Positions found in the prefix cache (not recomputed).
    pub prefix_hit_tokens: usize,
    /// Largest decode batch.
    pub max_batch: usize,
    pub blocks: usize,
    /// Decode steps replayed from a captured graph, graphs captured, and the seconds the
    /// captures took (their steps included).
    pub graph_steps: usize,
    pub graphs: usize,
    pub capture_secs: f64,
    /// Host seconds spent scheduling (every step; outside `prefill_secs` and `decode_secs`),
    /// and, of `decode_secs`, the seconds the replayed decode steps spent in the replay call
    /// (on CUDA it only enqueues the graph) and then waiting for the device to hand back
    /// their tokens (`device_wait_secs`, the read and the conversion of its bytes, which may
    /// arrive lazily: timing `try_into_data` alone showed ~0).
    pub schedule_secs: f64,
    pub replay_secs: f64,
    pub device_wait_secs: f64,
    /// Of `decode_secs`, the replayed steps' host layout (checks and the table, `layout_secs`)
    /// and its upload into the graph's input buffer (`upload_secs`).
    pub layout_secs: f64,
    pub upload_secs: f64,
}

/// Bytes the activations of one step may need at most: the widest prefill rows, the decode
/// batch's logits and the largest prefill's attention scores (reference path), with room.
fn activation_bytes(model: &Qwen3, config: &BatchConfig) -> usize {
    let c = &model.config;
    let d = model.dtype().size();
    let rows = config.scheduler.max_batched_tokens.max(config.max_len);
    let width = 6 * c.hidden_size + 3 * c.intermediate_size + 2 * (c.num_attention_heads + 2 * c.num_kv_heads()) * c.head_dim();
    let logits = config.scheduler.max_seqs * c.vocab_size * (8 + d);
    let longest = config.max_len.min(rows);
    let scores = 3 * c.num_attention_heads * longest * longest * 4;
    // Each captured decode size keeps its step's buffers (every layer's split-attention
    // partials, the logits): per row, times the rows of every size. (On the H200, eight
    // captured sizes of 48-256 rows took ~12 GB for the 0.6B shape at 2,048 positions, ~10 MB
    // per row; this counts ~13.)
    let chunks = config.max_len.div_ceil(PAGE_SIZE);
    let per_row = 2 * c.vocab_size * (4 + d) + c.num_hidden_layers * c.num_attention_heads * chunks * (c.head_dim() + 64 + 2) * 4;
    let rows_total: usize = GRAPH_ROWS.iter().filter(|&&r| r < config.scheduler.max_seqs).sum::<usize>() + config.scheduler.max_seqs;
    let graphs = if config.graphs { rows_total * per_row } else { 0 };
    2 * rows * width * d + logits + scores + graphs + (1 << 30)
}

/// The blocks to allocate: `config.blocks`, else what fits in `gpu_memory_fraction` of the
/// device's memory; on a device that reports no capacity (CPU, some wgpu), room for
/// `max_seqs` sequences of `max_len` positions at most, and no more than 2 GiB.
pub fn plan_blocks(model: &Qwen3, config: &BatchConfig) -> Result<usize, EngineError> {
    if let Some(b) = config.blocks {
        return Ok(b);
    }
    let per_block = PagedKvCache::bytes_per_block(&model.config, model.dtype());
    let weights = model.num_params() * model.dtype().size();
    let blocks = match braid_model::ops::device_memory(&model.device()) {
        Some(total) => {
            let budget = (total as f64 * config.gpu_memory_fraction) as usize;
            let used = weights + activation_bytes(model, config);
            if budget <= used + per_block {
                return Err(EngineError::Batch(format!(
                    "--gpu-memory-fraction {} of {:.1} GiB leaves no room for the KV cache after {:.1} GiB of weights and activations",
                    config.gpu_memory_fraction,
                    total as f64 / (1u64 << 30) as f64,
                    used as f64 / (1u64 << 30) as f64
                )));
            }
            // No more than every admissible sequence at full length needs (with a tenth more
            // for the prefix cache).
            let most = config.scheduler.max_seqs * config.max_len.div_ceil(PAGE_SIZE) * 11 / 10;
            ((budget - used) / per_block).min(most)
        }
        None => {
            let want = config.scheduler.max_seqs * config.max_len.div_ceil(PAGE_SIZE);
            want.min((2usize << 30) / per_block).max(config.max_len.div_ceil(PAGE_SIZE))
        }
    };
    // Each layer's key (and value) pool is one tensor: it must fit the device's largest
    // allocation (lavapipe's is far below its reported memory).
    let per_pool_block = per_block / (2 * model.config.num_hidden_layers).max(1);
    let blocks = match braid_model::ops::device_max_allocation(&model.device()) {
        Some(max) if per_pool_block > 0 => blocks.min((max as usize / per_pool_block).saturating_sub(1).max(1)),
        _ => blocks,
    };
    Ok(blocks)
}

/// Many sequences through one model, a step at a time.
pub struct BatchEngine<'e> {
    engine: &'e Engine,
    cache: Rc<RefCell<PagedKvCache>>,
    graphs: Vec<DecodeGraph<'e>>,
    use_graphs: bool,
    /// The pool's extra block, written by padding rows of captured decode batches.
    scratch: u32,
    blocks: BlockManager,
    scheduler: Scheduler,
    seqs: Vec<Sequence>,
    max_len: usize,
    device: braid_model::Device,
    pub stats: BatchStats,
}

impl<'e> BatchEngine<'e> {
    /// Allocates the cache (see [`plan_blocks`]).
    pub fn new(engine: &'e Engine, config: BatchConfig) -> Result<Self, EngineError> {
        let limit = engine.model.config.max_position_embeddings;
        if config.max_len == 0 || config.max_len > limit {
            return Err(EngineError::Batch(format!("max length {} must be in 1..={limit} (max_position_embeddings)", config.max_len)));
        }
        if config.scheduler.max_seqs == 0 || config.scheduler.max_batched_tokens == 0 {
            return Err(EngineError::Batch("max sequences and batched tokens must be at least 1".into()));
        }
        let n = plan_blocks(&engine.model, &config)?;
        if n < config.max_len.div_ceil(PAGE_SIZE) {
            return Err(EngineError::Batch(format!(
                "{n} cache blocks of {PAGE_SIZE} positions cannot hold one sequence of {} positions",
                config.max_len
            )));
        }
        // One block more than the manager hands out: the padding rows' scratch.
        let cache = Rc::new(RefCell::new(PagedKvCache::new(&engine.model, n + 1, config.max_len)));
        Ok(Self {
            engine,
            cache,
            graphs: Vec::new(),
            use_graphs: config.graphs && engine.model.device_decode_ready(),
            scratch: n as u32,
            blocks: BlockManager::new(n, PAGE_SIZE),
            scheduler: Scheduler::new(config.scheduler),
            seqs: Vec::new(),
            max_len: config.max_len,
            device: engine.model.device(),
            stats: BatchStats { blocks: n, ..BatchStats::default() },
        })
    }

    /// Queues a request; returns its id (ids count from 0 in the order added).
    pub fn add(&mut self, prompt_ids: &[u32], req: &Request) -> Result<usize, EngineError> {
        req.sampling.validate()?;
        match prompt_ids.len() {
            0 => return Err(EngineError::EmptyPrompt),
            n if n >= self.max_len => return Err(EngineError::PromptTooLong { tokens: n, limit: self.max_len }),
            _ => {}
        }
        let vocab = self.engine.model.config.vocab_size;
        if let Some(&id) = prompt_ids.iter().find(|&&id| id as usize >= vocab) {
            return Err(braid_model::ForwardError::TokenOutOfRange { id, vocab }.into());
        }
        let id = self.seqs.len();
        let max_tokens = req.max_tokens.min(self.max_len - prompt_ids.len());
        let mut seq = Sequence::new(id, prompt_ids, max_tokens, req.ignore_eos, req.sampling.clone());
        if max_tokens == 0 {
            seq.status = Status::Finished;
            seq.finish = Some(if req.max_tokens == 0 { Finish::Length } else { Finish::Context });
            self.seqs.push(seq);
            return Ok(id);
        }
        self.seqs.push(seq);
        self.scheduler.add(id);
        Ok(id)
    }

    pub fn is_done(&self) -> bool {
        self.scheduler.is_idle()
    }

    pub fn sequence(&self, id: usize) -> &Sequence {
        &self.seqs[id]
    }

    /// Runs one batch; returns `(sequence, token)` for every token generated in it (an eos that
    /// ends a sequence is not returned, as in [`Generation::output_ids`]).
    pub fn step(&mut self) -> Result<Vec<(usize, u32)>, EngineError> {
        let scheduling = Instant::now();
        let scheduled = self.scheduler.schedule(&mut self.seqs, &mut self.blocks);
        self.stats.schedule_secs += scheduling.elapsed().as_secs_f64();
        let Some(batch) = scheduled else {
            if let Some(&id) = self.scheduler.waiting.front() {
                return Err(EngineError::Batch(format!(
                    "sequence {id} needs {} cache blocks; the pool has {}",
                    self.blocks.blocks_for(self.seqs[id].len()),
                    self.blocks.total()
                )));
            }
            return Ok(Vec::new());
        };
        let start = Instant::now();
        let device = self.device.clone();
        let mut mark = braid_model::profile::Mark::new(&device, if batch.prefill { "prefill/" } else { "decode/" });
        let steps: Vec<SeqStep<'_>> = batch
            .ids
            .iter()
            .map(|&id| {
                let s = &self.seqs[id];
                SeqStep { tokens: s.pending(), start: s.cached, blocks: &s.blocks }
            })
            .collect();
        let new_tokens: usize = steps.iter().map(|s| s.tokens.len()).sum();
        let hits: usize = if batch.prefill { batch.ids.iter().map(|&id| self.seqs[id].cached).sum() } else { 0 };
        let graph = !batch.prefill && self.use_graphs && batch.ids.iter().all(|&id| self.seqs[id].device_greedy());
        let tokens = if graph {
            let layout = DecodeLayout { rows: graph_rows(steps.len(), self.scheduler.config.max_seqs), max_blocks: self.max_len.div_ceil(PAGE_SIZE) };
            let t = Instant::now();
            layout.check(&steps, &self.cache.borrow())?;
            let host = layout.host(&steps, self.scratch);
            self.stats.layout_secs += t.elapsed().as_secs_f64();
            drop(steps);
            mark.phase("schedule");
            let ids = self.replay(layout, host)?;
            mark.phase("graph");
            ids[..batch.ids.len()].to_vec()
        } else {
            mark.phase("schedule");
            let logits = self.engine.model.forward_paged(&steps, &mut self.cache.borrow_mut())?;
            drop(steps);
            let tokens = self.pick(&batch.ids, logits);
            mark.phase("pick");
            tokens
        };
        // An id past the vocabulary: the argmax's answer to a row with no finite logit.
        if let Some(i) = tokens.iter().position(|&t| t as usize >= self.engine.model.config.vocab_size) {
            let s = &self.seqs[batch.ids[i]];
            return Err(EngineError::NoFiniteLogit { index: s.tokens.len() - s.prompt_len });
        }
        let secs = start.elapsed().as_secs_f64();
        if batch.prefill {
            self.stats.prefill_steps += 1;
            self.stats.prefill_tokens += new_tokens;
            self.stats.prefill_secs += secs;
            self.stats.prefix_hit_tokens += hits;
        } else {
            self.stats.decode_steps += 1;
            self.stats.decode_secs += secs;
            self.stats.max_batch = self.stats.max_batch.max(batch.ids.len());
        }
        self.stats.decode_tokens += tokens.len();
        let now = Instant::now();
        let mut out = Vec::with_capacity(tokens.len());
        for (&id, &tok) in batch.ids.iter().zip(&tokens) {
            let eos = self.engine.eos.contains(&tok);
            let seq = &mut self.seqs[id];
            seq.cached = seq.len();
            self.blocks.seal_full(seq);
            seq.first_token.get_or_insert(now);
            if eos && !seq.ignore_eos {
                seq.finish = Some(Finish::Eos);
            } else {
                seq.tokens.push(tok);
                out.push((id, tok));
                if seq.output().len() >= seq.max_tokens {
                    seq.finish = Some(if seq.len() >= self.max_len { Finish::Context } else { Finish::Length });
                }
            }
            if seq.finish.is_some() {
                seq.status = Status::Finished;
                seq.finished = Some(now);
            }
        }
        self.scheduler.retire(&mut self.seqs, &mut self.blocks);
        self.stats.preemptions = self.scheduler.preemptions;
        Ok(out)
    }

    /// Captures the decode step of every batch size up to `max_seqs` now (padding rows only:
    /// they touch the scratch block alone), so that no capture lands inside a timed run.
    /// Nothing to do when decode steps run eagerly.
    pub fn capture_graphs(&mut self) -> Result<(), EngineError> {
        if !self.use_graphs {
            return Ok(());
        }
        let max_seqs = self.scheduler.config.max_seqs;
        let max_blocks = self.max_len.div_ceil(PAGE_SIZE);
        let mut sizes: Vec<usize> = GRAPH_ROWS.iter().copied().filter(|&r| r < max_seqs).collect();
        sizes.push(graph_rows(max_seqs, max_seqs));
        // Waits of the captures are not decode steps' waits.
        let waited = self.stats.device_wait_secs;
        for rows in sizes {
            let layout = DecodeLayout { rows, max_blocks };
            if !self.graphs.iter().any(|g| g.layout == layout) {
                let host = layout.host(&[], self.scratch);
                self.replay(layout, host)?;
            }
        }
        self.stats.device_wait_secs = waited;
        Ok(())
    }

    /// A decode step from the captured graph of `layout`'s size (capturing it on first use: the
    /// capture runs the step itself); returns every row's greedy token.
    fn replay(&mut self, layout: DecodeLayout, host: Vec<u32>) -> Result<Vec<u32>, EngineError> {
        let upload = Instant::now();
        let src = Tensor::<1, Int>::from_data(TensorData::new(host, [layout.len()]), (&self.device, DType::U32));
        let out = match self.graphs.iter_mut().find(|g| g.layout == layout) {
            Some(g) => {
                let dst = g.meta.borrow().clone();
                *g.meta.borrow_mut() = braid_model::ops::copy_into(dst, src);
                self.stats.upload_secs += upload.elapsed().as_secs_f64();
                // SAFETY: the step reads the weights (owned by the engine, which outlives this
                // batch engine), the cache and the input buffer (owned by the closure through
                // `Rc`s, alive as long as the graph); the input was refreshed in place above,
                // on the same stream.
                let replay = Instant::now();
                unsafe { g.graph.replay() };
                self.stats.replay_secs += replay.elapsed().as_secs_f64();
                self.stats.graph_steps += 1;
                g.graph.output().clone()
            }
            None => {
                let start = Instant::now();
                let meta = Rc::new(RefCell::new(src));
                let (m, cache, model) = (meta.clone(), self.cache.clone(), &self.engine.model);
                let step: StepFn<'e> = Box::new(move || model.decode_paged(&m.borrow(), layout, &mut cache.borrow_mut()));
                let mut graph = capture(&self.device, step);
                // The capture run only records its launches (its output buffer is not written):
                // replay once. Every run of the step (warm-ups, capture, this replay) computes
                // the same step from the same inputs, writing the same keys and values.
                // SAFETY: as for the replays above; nothing was dropped since the capture.
                let out = unsafe { graph.replay() }.clone();
                self.graphs.push(DecodeGraph { layout, meta, graph });
                self.stats.graphs += 1;
                self.stats.capture_secs += start.elapsed().as_secs_f64();
                out
            }
        };
        // A device failure (out of memory in a capture, say) is an error, not a panic.
        // (The read's bytes may arrive lazily: the wait is timed through their conversion.)
        let wait = Instant::now();
        let data = out.try_into_data().map_err(|e| EngineError::Batch(format!("decode step of {} rows failed on the device: {e:?}", layout.rows)))?;
        let ids: Vec<u32> = data.convert::<i64>().try_to_vec::<i64>().expect("int ids").into_iter().map(|v| v as u32).collect();
        self.stats.device_wait_secs += wait.elapsed().as_secs_f64();
        Ok(ids)
    }

    /// The next token of every sequence of the batch: the argmax on the device for greedy
    /// sequences (only ids cross), the host sampler on the rows of the others.
    fn pick(&mut self, ids: &[usize], logits: Tensor<2>) -> Vec<u32> {
        let mut tokens = braid_model::ops::argmax(logits.clone());
        let sampled: Vec<usize> = (0..ids.len()).filter(|&i| !self.seqs[ids[i]].device_greedy()).collect();
        if sampled.is_empty() {
            return tokens;
        }
        let vocab = logits.dims()[1];
        let rows: Vec<i64> = sampled.iter().map(|&i| i as i64).collect();
        let rows = Tensor::<1, Int>::from_data(TensorData::new(rows, [sampled.len()]), &logits.device());
        let host = to_host_f32(logits.select(0, rows));
        for (j, &i) in sampled.iter().enumerate() {
            let seq = &mut self.seqs[ids[i]];
            let mut row = host[j * vocab..(j + 1) * vocab].to_vec();
            tokens[i] = seq.sampler.sample(&mut row, &seq.tokens, &seq.tokens[seq.prompt_len..]);
        }
        tokens
    }

    /// Steps until every queued sequence finishes; `on_tokens` sees each step's new tokens.
    pub fn run(&mut self, on_tokens: &mut dyn FnMut(&[Emitted])) -> Result<(), EngineError> {
        while !self.is_done() {
            let out = self.step()?;
            on_tokens(&out);
        }
        Ok(())
    }

    /// The result of a finished sequence, in [`Engine::generate`]'s form.
    pub fn generation(&self, id: usize) -> Result<Generation, EngineError> {
        let s = &self.seqs[id];
        let text = self.engine.tokenizer.decode(s.output())?;
        let end = s.finished.unwrap_or_else(Instant::now);
        let first = s.first_token.unwrap_or(end);
        let prefill_secs = (first - s.added).as_secs_f64();
        let decode_secs = (end - first).as_secs_f64();
        let steps = s.output().len().saturating_sub(1) + usize::from(s.finish == Some(Finish::Eos) && !s.output().is_empty());
        let rate = |n: usize, t: f64| if t > 0.0 { n as f64 / t } else { 0.0 };
        Ok(Generation {
            prompt_ids: s.tokens[..s.prompt_len].to_vec(),
            output_ids: s.output().to_vec(),
            text,
            finish: s.finish.unwrap_or(Finish::Length),
            prefill_secs,
            decode_secs,
            prefill_tok_per_s: rate(s.prompt_len, prefill_secs),
            decode_tok_per_s: rate(steps, decode_secs),
            graph: false,
            graph_setup_secs: 0.0,
        })
    }
}

impl Engine {
    /// Generates for several prompts at once through the batch engine (greedy output equals
    /// [`Engine::generate`]'s for each prompt alone, up to the batch's summation order).
    pub fn generate_batch(&self, prompts: &[Vec<u32>], reqs: &[Request], config: BatchConfig) -> Result<(Vec<Generation>, BatchStats), EngineError> {
        let mut batch = BatchEngine::new(self, config)?;
        let ids = prompts.iter().zip(reqs).map(|(p, r)| batch.add(p, r)).collect::<Result<Vec<_>, _>>()?;
        batch.run(&mut |_| {})?;
        let gens = ids.iter().map(|&id| batch.generation(id)).collect::<Result<Vec<_>, _>>()?;
        Ok((gens, batch.stats.clone()))
    }
}
