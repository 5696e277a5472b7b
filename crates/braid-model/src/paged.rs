//! The paged KV cache and the batch step over it.
//!
//! Keys and values of every sequence live in one pool per layer, `[blocks * PAGE_SIZE,
//! kv_heads, head_dim]`, cut into blocks of [`PAGE_SIZE`] positions. A sequence owns a list of
//! block ids (its block table, kept by the engine's block manager); position `p` of the
//! sequence lives in slot `table[p / PAGE_SIZE] * PAGE_SIZE + p % PAGE_SIZE`. A batch step
//! ([`Qwen3::forward_paged`]) runs the new tokens of several sequences as the rows of one set
//! of launches: the projections, norms and MLP see `[rows, hidden]`, RoPE takes each row's own
//! position, the new keys and values go to their slots, and attention reads each sequence's
//! keys through its table.

use burn::tensor::{DType, Device, Int, Tensor, TensorData};

use crate::config::Qwen3Config;
use crate::error::ForwardError;
use crate::nn::Rope;
use crate::ops::{self, reference};
use crate::plan::OpChoice;
use crate::qwen3::Qwen3;

pub use crate::ops::PAGE_SIZE;

/// One layer's pools.
#[derive(Debug, Clone)]
pub struct PagedLayer {
    /// `[blocks * PAGE_SIZE, kv_heads, head_dim]`
    pub k: Tensor<3>,
    /// `[blocks * PAGE_SIZE, kv_heads, head_dim]`
    pub v: Tensor<3>,
}

/// Every layer's pools, and RoPE tables for every position a sequence may reach.
#[derive(Debug, Clone)]
pub struct PagedKvCache {
    pub layers: Vec<PagedLayer>,
    blocks: usize,
    max_len: usize,
    /// `[max_len, head_dim]` f32
    cos: Tensor<2>,
    /// `[max_len, head_dim]` f32
    sin: Tensor<2>,
    /// Fused prefills can run the tiled prefill kernel (some tile shape fits the device; else
    /// their attention takes the reference path). Probed once, here.
    prefill_kernel: bool,
}

impl PagedKvCache {
    /// Bytes one block takes over all layers (keys and values).
    pub fn bytes_per_block(config: &Qwen3Config, dtype: DType) -> usize {
        2 * config.num_hidden_layers * PAGE_SIZE * config.num_kv_heads() * config.head_dim() * dtype.size()
    }

    /// Pools of `blocks` blocks for `model`, for sequences of up to `max_len` positions.
    pub fn new(model: &Qwen3, blocks: usize, max_len: usize) -> Self {
        let c = &model.config;
        let device = model.device();
        let dtype = model.dtype();
        let shape = [blocks.max(1) * PAGE_SIZE, c.num_kv_heads(), c.head_dim()];
        let layers = (0..c.num_hidden_layers)
            .map(|_| PagedLayer { k: Tensor::zeros(shape, (&device, dtype)), v: Tensor::zeros(shape, (&device, dtype)) })
            .collect();
        let rope = model.rotary.tables(0, max_len, &device);
        let prefill_kernel = ops::prefill_kernel_runs(&device, c.head_dim());
        Self { layers, blocks, max_len, cos: rope.cos, sin: rope.sin, prefill_kernel }
    }

    pub fn blocks(&self) -> usize {
        self.blocks
    }

    /// The longest sequence the RoPE tables cover.
    pub fn max_len(&self) -> usize {
        self.max_len
    }
}

/// One sequence's part of a batch step: its new tokens at positions `start..start + len`,
/// and its block table, which must cover them.
#[derive(Debug, Clone, Copy)]
pub struct SeqStep<'a> {
    pub tokens: &'a [u32],
    pub start: usize,
    pub blocks: &'a [u32],
}

/// A batch step's layout on the device (and on the host for the per-sequence paths).
#[derive(Debug, Clone)]
pub struct BatchMeta {
    /// `[rows]` u32: where each new row's key and value go.
    pub slots: Tensor<1, Int>,
    /// `[seqs, max_blocks]` u32: block tables, padded with 0.
    pub table: Tensor<2, Int>,
    /// `[seqs]` u32: keys each sequence attends to after the step (`start + len`).
    pub lens: Tensor<1, Int>,
    /// Every sequence has one new row (a decode batch): row `i` is sequence `i`.
    pub decode: bool,
    /// A fused prefill can run the tiled prefill kernel ([`PagedKvCache`]'s probe).
    pub prefill_kernel: bool,
    /// Per sequence: first row, rows, start position, block ids.
    pub seqs: Vec<(usize, usize, usize, Vec<usize>)>,
}

fn u32s<const D: usize>(v: Vec<u32>, shape: [usize; D], device: &Device) -> Tensor<D, Int> {
    Tensor::from_data(TensorData::new(v, shape), (device, DType::U32))
}

fn ints(v: Vec<i64>, device: &Device) -> Tensor<1, Int> {
    let n = v.len();
    Tensor::from_data(TensorData::new(v, [n]), device)
}

/// Attention of a batch step: `q: [1, heads, rows, hd]`, this step's `k, v: [1, kv, rows, hd]`
/// (already written to the pools; `None` where only the pools hold them: the reference path
/// then gathers a fresh prompt's keys from its blocks too) -> `[rows, heads * hd]`. Fused, a
/// decode batch runs the split decode attention and a batch with prefills the tiled prefill attention, both over
/// the pools through the block tables. The reference twin runs each sequence alone: a fresh
/// prompt attends to its own new keys, a sequence with cached positions to the keys gathered
/// from its blocks.
pub(crate) fn attention(q: Tensor<4>, k: Option<Tensor<4>>, v: Option<Tensor<4>>, pools: &PagedLayer, batch: &BatchMeta, c: OpChoice) -> Tensor<2> {
    if let OpChoice::Fused(p) = c {
        let table = batch.table.clone();
        if batch.decode {
            return ops::paged_attention(q, pools.k.clone(), pools.v.clone(), table, batch.lens.clone(), p);
        }
        if batch.prefill_kernel {
            let spans: Vec<ops::PrefillSpan> = batch.seqs.iter().map(|(_, n, start, _)| ops::PrefillSpan { len: *n, start: *start }).collect();
            return ops::paged_prefill_attention(q, pools.k.clone(), pools.v.clone(), table, &spans, p);
        }
    }
    if batch.decode {
        return reference::paged_attention(q, pools.k.clone(), pools.v.clone(), batch.table.clone(), batch.lens.clone(), ops::Precision::Torch);
    }
    let parts: Vec<Tensor<2>> = batch
        .seqs
        .iter()
        .map(|(row, n, start, blocks)| {
            let qs = q.clone().narrow(2, *row, *n);
            let (ks, vs) = if let (0, Some(k), Some(v)) = (*start, &k, &v) {
                (k.clone().narrow(2, *row, *n), v.clone().narrow(2, *row, *n))
            } else {
                let len = start + n;
                (
                    reference::paged_gather(pools.k.clone(), blocks, len, PAGE_SIZE),
                    reference::paged_gather(pools.v.clone(), blocks, len, PAGE_SIZE),
                )
            };
            reference::attention(qs, ks, vs, *start, ops::Precision::Torch)
        })
        .collect();
    Tensor::cat(parts, 0)
}

impl Qwen3 {
    /// One batch step over the paged cache: runs every sequence's new tokens, writes their keys
    /// and values to their slots, and returns f32 logits `[seqs, vocab]` of each sequence's
    /// last new token.
    pub fn forward_paged(&self, seqs: &[SeqStep<'_>], cache: &mut PagedKvCache) -> Result<Tensor<2>, ForwardError> {
        let device = self.device();
        let vocab = self.config.vocab_size;
        let limit = cache.max_len.min(self.config.max_position_embeddings);
        if seqs.is_empty() {
            return Err(ForwardError::EmptyInput);
        }
        let mut ids = Vec::new();
        let mut positions = Vec::new();
        let mut slots = Vec::new();
        let mut last_rows = Vec::with_capacity(seqs.len());
        let mut meta = Vec::with_capacity(seqs.len());
        for s in seqs {
            let end = s.start + s.tokens.len();
            if s.tokens.is_empty() {
                return Err(ForwardError::EmptyInput);
            }
            if end > limit {
                return Err(ForwardError::ContextOverflow { needed: end, limit });
            }
            if let Some(&id) = s.tokens.iter().find(|&&id| id as usize >= vocab) {
                return Err(ForwardError::TokenOutOfRange { id, vocab });
            }
            if s.blocks.len() * PAGE_SIZE < end || s.blocks.iter().any(|&b| b as usize >= cache.blocks) {
                return Err(ForwardError::BlockTable(format!(
                    "block table of {} blocks (pool of {}) does not cover {end} positions",
                    s.blocks.len(),
                    cache.blocks
                )));
            }
            meta.push((ids.len(), s.tokens.len(), s.start, s.blocks.iter().map(|&b| b as usize).collect::<Vec<_>>()));
            for (i, &t) in s.tokens.iter().enumerate() {
                let p = s.start + i;
                ids.push(t as i64);
                positions.push(p as i64);
                slots.push(s.blocks[p / PAGE_SIZE] * PAGE_SIZE as u32 + (p % PAGE_SIZE) as u32);
            }
            last_rows.push(ids.len() as i64 - 1);
        }
        let rows = ids.len();
        let max_blocks = seqs.iter().map(|s| s.blocks.len()).max().unwrap_or(1).max(1);
        let mut table = vec![0u32; seqs.len() * max_blocks];
        for (i, s) in seqs.iter().enumerate() {
            table[i * max_blocks..i * max_blocks + s.blocks.len()].copy_from_slice(s.blocks);
        }
        let lens: Vec<u32> = seqs.iter().map(|s| (s.start + s.tokens.len()) as u32).collect();
        let batch = BatchMeta {
            slots: u32s(slots, [rows], &device),
            table: u32s(table, [seqs.len(), max_blocks], &device),
            lens: u32s(lens, [seqs.len()], &device),
            decode: seqs.iter().all(|s| s.tokens.len() == 1),
            prefill_kernel: cache.prefill_kernel,
            seqs: meta,
        };
        let pos = ints(positions, &device);
        let rope = Rope { cos: cache.cos.clone().select(0, pos.clone()), sin: cache.sin.clone().select(0, pos) };

        let prefix = if batch.decode { "decode/" } else { "prefill/" };
        let mut mark = crate::profile::Mark::new(&device, prefix);
        // [rows, hidden]
        let x = self.model.embed_tokens.val().select(0, ints(ids, &device));
        mark.phase("inputs");
        let x = match self.paged_layers(x, &rope, cache, &batch) {
            (x, Some(down)) => x + down,
            (x, None) => x,
        };
        // [seqs, hidden] -> f32 [seqs, vocab]
        let mut mark = crate::profile::Mark::new(&device, prefix);
        let last = x.select(0, ints(last_rows, &device));
        let logits = self.head(self.model.norm.forward(last));
        mark.phase("norm+lm_head");
        Ok(logits)
    }
}

/// The device-side inputs of a decode batch of `rows` sequences, in one u32 buffer so that a
/// captured graph reads them from fixed addresses and one copy refreshes them: token ids,
/// positions, slots, key counts (`rows` each), then the block tables (`rows x max_blocks`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeLayout {
    pub rows: usize,
    pub max_blocks: usize,
}

impl DecodeLayout {
    pub fn len(&self) -> usize {
        self.rows * (4 + self.max_blocks)
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// The host buffer for `seqs` (one new token each, at most `rows` of them); rows past them
    /// are padding: token 0 at position 0 of block `scratch`, whose output nobody reads.
    pub fn host(&self, seqs: &[SeqStep<'_>], scratch: u32) -> Vec<u32> {
        let (r, mb) = (self.rows, self.max_blocks);
        let mut v = vec![0u32; self.len()];
        for i in 0..r {
            let (token, pos, blocks): (u32, usize, &[u32]) = match seqs.get(i) {
                Some(s) => (s.tokens[0], s.start, s.blocks),
                None => (0, 0, std::slice::from_ref(&scratch)),
            };
            v[i] = token;
            v[r + i] = pos as u32;
            v[2 * r + i] = blocks[pos / PAGE_SIZE] * PAGE_SIZE as u32 + (pos % PAGE_SIZE) as u32;
            v[3 * r + i] = pos as u32 + 1;
            v[4 * r + i * mb..4 * r + i * mb + blocks.len()].copy_from_slice(blocks);
        }
        v
    }

    /// Checks `seqs` against the layout and the cache before a step.
    pub fn check(&self, seqs: &[SeqStep<'_>], cache: &PagedKvCache) -> Result<(), ForwardError> {
        if seqs.len() > self.rows || seqs.iter().any(|s| s.tokens.len() != 1) {
            return Err(ForwardError::BlockTable(format!("a decode batch of {} rows takes up to that many sequences of one new token", self.rows)));
        }
        for s in seqs {
            if s.start >= cache.max_len || s.blocks.len() > self.max_blocks || s.blocks.len() * PAGE_SIZE <= s.start || s.blocks.iter().any(|&b| b as usize >= cache.blocks) {
                return Err(ForwardError::BlockTable(format!("position {} with {} blocks does not fit the decode layout", s.start, s.blocks.len())));
            }
        }
        Ok(())
    }
}

impl Qwen3 {
    /// One decode step of a batch whose inputs live on the device (`meta`, see
    /// [`DecodeLayout`]): no host data, so the step can be captured once per batch size and
    /// replayed. Returns the greedy token of every row, on the device (`[rows]`). The same ops
    /// as a decode batch of [`Self::forward_paged`], so both give the same tokens.
    pub fn decode_paged(&self, meta: &Tensor<1, Int>, layout: DecodeLayout, cache: &mut PagedKvCache) -> Tensor<1, Int> {
        let r = layout.rows;
        let view = |i: usize| meta.clone().narrow(0, i * r, r);
        let batch = BatchMeta {
            slots: view(2),
            table: meta.clone().narrow(0, 4 * r, r * layout.max_blocks).reshape([r, layout.max_blocks]),
            lens: view(3),
            decode: true,
            prefill_kernel: false,
            seqs: Vec::new(),
        };
        let (x, cos, sin) = ops::batch_inputs(self.model.embed_tokens.val(), cache.cos.clone(), cache.sin.clone(), view(0), view(1));
        let (x, pending) = self.paged_layers(x, &Rope { cos, sin }, cache, &batch);
        self.greedy_ids(x, pending)
    }

    /// Every decoder layer over the paged cache, each layer's last residual add carried into
    /// the next layer's first op (`DecoderLayer::paged_step`): `[rows, hidden]` -> the last
    /// layer's residual stream and its pending MLP output (to be added), `[rows, hidden]` each.
    fn paged_layers(&self, mut x: Tensor<2>, rope: &Rope, cache: &mut PagedKvCache, batch: &BatchMeta) -> (Tensor<2>, Option<Tensor<2>>) {
        let mut pending = None;
        for (i, ((layer, pools), plan)) in self.model.layers.iter().zip(cache.layers.iter_mut()).zip(&self.plan().layers).enumerate() {
            let (nx, down) = layer.paged_step(i, x, pending, rope, pools, batch, plan);
            x = nx;
            pending = Some(down);
        }
        (x, pending)
    }
}
