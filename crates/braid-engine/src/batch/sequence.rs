//! One request's state in the batch engine.

use std::time::Instant;

use crate::engine::Finish;
use crate::sampler::{Sampler, SamplingParams};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Waiting,
    Running,
    Finished,
}

/// A sequence: its tokens so far (prompt, then output), its blocks in the paged cache and
/// how many of its positions the cache holds.
#[derive(Debug)]
pub struct Sequence {
    pub id: usize,
    /// Prompt then generated tokens.
    pub tokens: Vec<u32>,
    pub prompt_len: usize,
    /// Positions whose keys and values are in the cache; the next step runs
    /// `tokens[cached..]`.
    pub cached: usize,
    /// Block table.
    pub blocks: Vec<u32>,
    /// Full blocks already registered in the prefix cache, and the hash of the last one.
    pub hashed: usize,
    pub last_hash: Option<u64>,
    pub status: Status,
    pub max_tokens: usize,
    pub ignore_eos: bool,
    pub sampling: SamplingParams,
    pub sampler: Sampler,
    pub finish: Option<Finish>,
    /// Times this sequence was preempted (its blocks taken back and its context recomputed).
    pub preemptions: usize,
    pub added: Instant,
    pub first_token: Option<Instant>,
    pub finished: Option<Instant>,
}

impl Sequence {
    pub fn new(id: usize, prompt: &[u32], max_tokens: usize, ignore_eos: bool, sampling: SamplingParams) -> Self {
        Self {
            id,
            tokens: prompt.to_vec(),
            prompt_len: prompt.len(),
            cached: 0,
            blocks: Vec::new(),
            hashed: 0,
            last_hash: None,
            status: Status::Waiting,
            max_tokens,
            ignore_eos,
            sampler: Sampler::new(sampling.clone()),
            sampling,
            finish: None,
            preemptions: 0,
            added: Instant::now(),
            first_token: None,
            finished: None,
        }
    }

    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The tokens the next step runs.
    pub fn pending(&self) -> &[u32] {
        &self.tokens[self.cached..]
    }

    pub fn output(&self) -> &[u32] {
        &self.tokens[self.prompt_len..]
    }

    /// Greedy without penalties: the token is picked on the device.
    pub fn device_greedy(&self) -> bool {
        self.sampling.is_greedy() && !self.sampling.has_penalties()
    }
}
