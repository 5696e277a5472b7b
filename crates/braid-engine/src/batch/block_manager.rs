//! Blocks of the paged KV cache: who owns which, which are free, and which hold a known
//! prefix (prefix caching).
//!
//! A full block is identified by a hash chained over every token of the sequence up to its
//! end, so two sequences share a block only when their whole prefixes agree. A freed block
//! keeps its hash and contents until it is handed out again (freed blocks are reused oldest
//! first), so a later prompt with the same prefix finds it.

use std::collections::{HashMap, VecDeque};
use std::hash::{DefaultHasher, Hash, Hasher};

use super::sequence::Sequence;

#[derive(Debug, Clone, Default)]
struct Block {
    refs: u32,
    /// Hash of the prefix ending with this block, when the block is full and registered.
    hash: Option<u64>,
    /// The block's tokens, to confirm a hash hit.
    tokens: Vec<u32>,
}

/// Hands out blocks of `page` positions from a fixed pool.
#[derive(Debug)]
pub struct BlockManager {
    page: usize,
    blocks: Vec<Block>,
    free: VecDeque<u32>,
    by_hash: HashMap<u64, u32>,
    /// Blocks found in the prefix cache so far (positions not recomputed = hits * page).
    pub hits: usize,
}

fn chain(prev: Option<u64>, tokens: &[u32]) -> u64 {
    let mut h = DefaultHasher::new();
    prev.hash(&mut h);
    tokens.hash(&mut h);
    h.finish()
}

impl BlockManager {
    pub fn new(blocks: usize, page: usize) -> Self {
        Self {
            page,
            blocks: vec![Block::default(); blocks],
            free: (0..blocks as u32).collect(),
            by_hash: HashMap::new(),
            hits: 0,
        }
    }

    pub fn page(&self) -> usize {
        self.page
    }

    pub fn total(&self) -> usize {
        self.blocks.len()
    }

    pub fn free(&self) -> usize {
        self.free.len()
    }

    /// Blocks a sequence of `len` positions needs.
    pub fn blocks_for(&self, len: usize) -> usize {
        len.div_ceil(self.page)
    }

    /// Whether a waiting sequence's whole context fits in the free blocks (not counting
    /// prefix hits, which may lower the need).
    pub fn can_allocate(&self, seq: &Sequence) -> bool {
        self.free.len() >= self.blocks_for(seq.len())
    }

    /// Gives a waiting sequence the blocks of its context, reusing cached blocks of its
    /// longest cached prefix; sets `seq.cached` to the positions that need no recomputing.
    /// The block holding the last position is never taken from the cache: the step must run
    /// at least that token to get its logits.
    pub fn allocate(&mut self, seq: &mut Sequence) {
        debug_assert!(seq.blocks.is_empty());
        let len = seq.len();
        let mut prev = None;
        let mut hit_all = true;
        seq.cached = 0;
        for i in 0..self.blocks_for(len) {
            let end = ((i + 1) * self.page).min(len);
            let tokens = &seq.tokens[i * self.page..end];
            let full = tokens.len() == self.page;
            let hash = full.then(|| chain(prev, tokens));
            // Only full blocks extend the chain (a partial block is the last one).
            prev = hash.or(prev);
            let cached = match hash {
                Some(h) if hit_all && end < len => self.by_hash.get(&h).copied().filter(|&b| self.blocks[b as usize].tokens == tokens),
                _ => None,
            };
            let id = match cached {
                Some(b) => {
                    if self.blocks[b as usize].refs == 0 {
                        let at = self.free.iter().position(|&f| f == b).expect("an unreferenced block is free");
                        self.free.remove(at);
                    }
                    self.blocks[b as usize].refs += 1;
                    seq.cached += self.page;
                    self.hits += 1;
                    b
                }
                None => {
                    hit_all = false;
                    let b = self.take();
                    if let Some(h) = hash {
                        self.register(b, h, tokens);
                    }
                    b
                }
            };
            seq.blocks.push(id);
        }
        seq.hashed = len / self.page;
        seq.last_hash = prev;
    }

    /// Returns a sequence's blocks (the last reference frees a block; its hash stays for
    /// reuse).
    pub fn deallocate(&mut self, seq: &mut Sequence) {
        for &b in seq.blocks.iter().rev() {
            let block = &mut self.blocks[b as usize];
            block.refs -= 1;
            if block.refs == 0 {
                self.free.push_back(b);
            }
        }
        seq.blocks.clear();
        seq.cached = 0;
        seq.hashed = 0;
        seq.last_hash = None;
    }

    /// Whether a running sequence can take its next decode step (a new block when its last
    /// position starts one).
    pub fn can_append(&self, seq: &Sequence) -> bool {
        let need = self.blocks_for(seq.len()).saturating_sub(seq.blocks.len());
        self.free.len() >= need
    }

    /// Before a decode step: a new block if the last position needs one.
    pub fn may_append(&mut self, seq: &mut Sequence) {
        while seq.blocks.len() < self.blocks_for(seq.len()) {
            let b = self.take();
            seq.blocks.push(b);
        }
    }

    /// After a step: registers the sequence's blocks that became full, so later prompts with
    /// the same prefix can share them.
    pub fn seal_full(&mut self, seq: &mut Sequence) {
        let full = seq.cached / self.page;
        while seq.hashed < full {
            let i = seq.hashed;
            let tokens = &seq.tokens[i * self.page..(i + 1) * self.page];
            let h = chain(seq.last_hash, tokens);
            let b = seq.blocks[i];
            if self.blocks[b as usize].hash.is_none() {
                let tokens = tokens.to_vec();
                self.register(b, h, &tokens);
            }
            seq.last_hash = Some(h);
            seq.hashed += 1;
        }
    }

    fn take(&mut self) -> u32 {
        let b = self.free.pop_front().expect("callers check for free blocks first");
        let block = &mut self.blocks[b as usize];
        if let Some(h) = block.hash.take()
            && self.by_hash.get(&h) == Some(&b)
        {
            self.by_hash.remove(&h);
        }
        block.tokens.clear();
        block.refs = 1;
        b
    }

    fn register(&mut self, b: u32, h: u64, tokens: &[u32]) {
        let block = &mut self.blocks[b as usize];
        block.hash = Some(h);
        block.tokens = tokens.to_vec();
        self.by_hash.insert(h, b);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sampler::SamplingParams;

    fn seq(id: usize, tokens: &[u32]) -> Sequence {
        Sequence::new(id, tokens, 16, true, SamplingParams::default())
    }

    #[test]
    fn allocates_frees_and_reuses_blocks() {
        let mut m = BlockManager::new(4, 4);
        let mut a = seq(0, &[1, 2, 3, 4, 5, 6]);
        assert!(m.can_allocate(&a));
        m.allocate(&mut a);
        assert_eq!((a.blocks.len(), a.cached, m.free()), (2, 0, 2));
        // Decode to 8 positions: no new block; the 9th needs one.
        a.tokens.extend([7, 8]);
        assert!(m.can_append(&a));
        m.may_append(&mut a);
        assert_eq!(a.blocks.len(), 2);
        a.tokens.push(9);
        m.may_append(&mut a);
        assert_eq!((a.blocks.len(), m.free()), (3, 1));
        m.deallocate(&mut a);
        assert_eq!((a.blocks.len(), m.free()), (0, 4));
    }

    #[test]
    fn shares_a_cached_prefix_but_never_the_last_position() {
        let mut m = BlockManager::new(8, 4);
        let mut a = seq(0, &[1, 2, 3, 4, 5, 6, 7, 8, 9]);
        m.allocate(&mut a);
        a.cached = a.len();
        m.seal_full(&mut a);
        // Same first 8 tokens: two blocks shared, the third fresh.
        let mut b = seq(1, &[1, 2, 3, 4, 5, 6, 7, 8, 10, 11]);
        m.allocate(&mut b);
        assert_eq!(b.cached, 8);
        assert_eq!(b.blocks[..2], a.blocks[..2]);
        assert_ne!(b.blocks[2], a.blocks[2]);
        // A different first block shares nothing, even with an equal second block.
        let mut c = seq(2, &[0, 2, 3, 4, 5, 6, 7, 8, 1]);
        m.allocate(&mut c);
        assert_eq!(c.cached, 0);
        // Exactly the cached prefix: the block holding the last position is recomputed.
        let mut d = seq(3, &[1, 2, 3, 4, 5, 6, 7, 8]);
        m.allocate(&mut d);
        assert_eq!(d.cached, 4);
        assert_eq!(d.blocks[0], a.blocks[0]);
        assert_ne!(d.blocks[1], a.blocks[1]);
    }

    #[test]
    fn a_block_filled_by_decoding_chains_from_its_prefix() {
        let mut m = BlockManager::new(8, 2);
        // [1, 2] full at allocation, [3] partial; decoding 4 fills the second block.
        let mut a = seq(0, &[1, 2, 3]);
        m.allocate(&mut a);
        a.cached = a.len();
        m.seal_full(&mut a);
        a.tokens.push(4);
        m.may_append(&mut a);
        a.cached = a.len();
        m.seal_full(&mut a);
        // A prompt starting with [3, 4] must not find that block (its keys sit after [1, 2]).
        let mut b = seq(1, &[3, 4, 5]);
        m.allocate(&mut b);
        assert_eq!(b.cached, 0);
        // The whole prefix does.
        let mut c = seq(2, &[1, 2, 3, 4, 9]);
        m.allocate(&mut c);
        assert_eq!((c.cached, c.blocks[..2].to_vec()), (4, a.blocks[..2].to_vec()));
    }

    #[test]
    fn freed_blocks_stay_cached_until_reused() {
        let mut m = BlockManager::new(3, 2);
        let mut a = seq(0, &[1, 2, 3]);
        m.allocate(&mut a);
        a.cached = a.len();
        m.seal_full(&mut a);
        let first = a.blocks[0];
        m.deallocate(&mut a);
        assert_eq!(m.free(), 3);
        let mut b = seq(1, &[1, 2, 9]);
        m.allocate(&mut b);
        assert_eq!((b.cached, b.blocks[0], m.free()), (2, first, 1));
        m.deallocate(&mut b);
        // Unrelated sequences take every block: the cached one is overwritten and forgotten.
        let mut c = seq(2, &[5, 6, 7, 8, 9, 10]);
        m.allocate(&mut c);
        m.deallocate(&mut c);
        let mut d = seq(3, &[1, 2, 9]);
        m.allocate(&mut d);
        assert_eq!(d.cached, 0);
    }
}
