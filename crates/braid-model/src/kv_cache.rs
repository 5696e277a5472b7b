//! The key/value cache for incremental decoding, allocated once per generation.

use burn::tensor::{DType, Device, Tensor};

use crate::config::Qwen3Config;

/// One layer's keys and values.
#[derive(Debug, Clone)]
pub struct LayerCache {
    /// `[batch, kv_heads, capacity, head_dim]`
    pub k: Tensor<4>,
    /// `[batch, kv_heads, capacity, head_dim]`
    pub v: Tensor<4>,
}

impl LayerCache {
    /// Writes `k, v: [batch, kv_heads, new, head_dim]` at positions `past..past + new` and
    /// returns the keys and values of positions `0..past + new`.
    pub fn append(&mut self, past: usize, k: Tensor<4>, v: Tensor<4>) -> (Tensor<4>, Tensor<4>) {
        let [b, h, new, d] = k.dims();
        let end = past + new;
        self.k.inplace(|c| c.slice_assign([0..b, 0..h, past..end, 0..d], k));
        self.v.inplace(|c| c.slice_assign([0..b, 0..h, past..end, 0..d], v));
        (
            self.k.clone().slice([0..b, 0..h, 0..end, 0..d]),
            self.v.clone().slice([0..b, 0..h, 0..end, 0..d]),
        )
    }
}

/// Keys and values of every layer for a batch of sequences that share positions.
#[derive(Debug, Clone)]
pub struct KvCache {
    pub layers: Vec<LayerCache>,
    len: usize,
    capacity: usize,
}

impl KvCache {
    /// Allocates room for `capacity` positions of `batch` sequences.
    pub fn new(config: &Qwen3Config, batch: usize, capacity: usize, dtype: DType, device: &Device) -> Self {
        let shape = [batch, config.num_kv_heads(), capacity, config.head_dim()];
        let layers = (0..config.num_hidden_layers)
            .map(|_| LayerCache {
                k: Tensor::zeros(shape, (device, dtype)),
                v: Tensor::zeros(shape, (device, dtype)),
            })
            .collect();
        Self { layers, len: 0, capacity }
    }

    /// Positions already written.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub(crate) fn advance(&mut self, n: usize) {
        self.len += n;
    }
}
