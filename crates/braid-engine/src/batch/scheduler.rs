//! Continuous batching: which sequences run in the next step.
//!
//! Each step is either a prefill batch (waiting sequences join, as many as fit the token
//! budget and the free blocks) or a decode batch (every running sequence advances one token).
//! Prefills go first, so new sequences join as soon as there is room. When a decode step
//! needs a block and none is free, the most recently started sequence is preempted: its blocks
//! are returned and it goes back to the front of the queue, to be recomputed later (its prompt
//! and output so far as one prefill, partly from the prefix cache).

use std::collections::VecDeque;

use super::block_manager::BlockManager;
use super::sequence::{Sequence, Status};

/// Limits of one step.
#[derive(Debug, Clone, Copy)]
pub struct SchedulerConfig {
    /// Sequences in one batch.
    pub max_seqs: usize,
    /// New tokens in one prefill batch (a single longer prompt still runs alone).
    pub max_batched_tokens: usize,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self { max_seqs: 256, max_batched_tokens: 16384 }
    }
}

/// What the next step runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scheduled {
    pub ids: Vec<usize>,
    pub prefill: bool,
}

#[derive(Debug)]
pub struct Scheduler {
    pub config: SchedulerConfig,
    pub waiting: VecDeque<usize>,
    pub running: VecDeque<usize>,
    /// Preemptions so far.
    pub preemptions: usize,
}

impl Scheduler {
    pub fn new(config: SchedulerConfig) -> Self {
        Self { config, waiting: VecDeque::new(), running: VecDeque::new(), preemptions: 0 }
    }

    pub fn add(&mut self, id: usize) {
        self.waiting.push_back(id);
    }

    pub fn is_idle(&self) -> bool {
        self.waiting.is_empty() && self.running.is_empty()
    }

    /// Picks the next batch; `None` when nothing can run (idle, or one waiting sequence that
    /// needs more blocks than the whole pool: the caller reports it).
    pub fn schedule(&mut self, seqs: &mut [Sequence], blocks: &mut BlockManager) -> Option<Scheduled> {
        // Prefill: waiting sequences, in order, while they fit.
        let mut ids = Vec::new();
        let mut tokens = 0;
        while let Some(&id) = self.waiting.front() {
            let seq = &seqs[id];
            let fits_tokens = ids.is_empty() || tokens + seq.len() <= self.config.max_batched_tokens;
            if ids.len() == self.config.max_seqs || self.running.len() + ids.len() == self.config.max_seqs || !fits_tokens || !blocks.can_allocate(seq) {
                break;
            }
            self.waiting.pop_front();
            let seq = &mut seqs[id];
            blocks.allocate(seq);
            tokens += seq.len() - seq.cached;
            seq.status = Status::Running;
            ids.push(id);
        }
        if !ids.is_empty() {
            self.running.extend(ids.iter().copied());
            return Some(Scheduled { ids, prefill: true });
        }
        // Decode: every running sequence one token, preempting from the back for blocks.
        let mut kept = Vec::new();
        while let Some(id) = self.running.pop_front() {
            let mut runs = true;
            while !blocks.can_append(&seqs[id]) {
                match self.running.pop_back() {
                    Some(victim) => self.preempt(&mut seqs[victim], blocks),
                    None => {
                        self.preempt(&mut seqs[id], blocks);
                        runs = false;
                        break;
                    }
                }
            }
            if runs {
                blocks.may_append(&mut seqs[id]);
                kept.push(id);
            }
        }
        self.running.extend(kept.iter().copied());
        if kept.is_empty() { None } else { Some(Scheduled { ids: kept, prefill: false }) }
    }

    fn preempt(&mut self, seq: &mut Sequence, blocks: &mut BlockManager) {
        blocks.deallocate(seq);
        seq.status = Status::Waiting;
        seq.preemptions += 1;
        self.preemptions += 1;
        self.waiting.push_front(seq.id);
    }

    /// Drops finished sequences from the running queue and returns their blocks.
    pub fn retire(&mut self, seqs: &mut [Sequence], blocks: &mut BlockManager) {
        let mut left = VecDeque::with_capacity(self.running.len());
        for id in self.running.drain(..) {
            if seqs[id].status == Status::Finished {
                blocks.deallocate(&mut seqs[id]);
            } else {
                left.push_back(id);
            }
        }
        self.running = left;
    }
}
