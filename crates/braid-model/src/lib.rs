//! Braid's Qwen3 model: config, checkpoint loading and validation, and the reference forward
//! path in plain Burn tensor ops.

pub mod calibrate;
pub mod checkpoint;
pub mod config;
pub mod error;
pub mod graph_decode;
pub mod inspect;
pub mod kv_cache;
pub mod nn;
pub mod ops;
pub mod paged;
pub mod plan;
pub mod profile;
pub mod qwen3;
pub mod stacks;
pub mod taps;
pub mod timing;
pub mod weights;

pub use checkpoint::Checkpoint;
pub use config::Qwen3Config;
pub use error::{ForwardError, LoadError};
pub use kv_cache::KvCache;
pub use plan::{KernelPlan, LayerPlan, OpChoice};
pub use qwen3::{Logits, Qwen3};
pub use taps::{HostTaps, Taps};

/// Burn's tensor types, re-exported so callers use the same version.
pub use burn::tensor::{DType, Device};

/// Reads a float tensor back to the host as f32 values (row-major).
pub fn to_host_f32<const D: usize>(t: burn::tensor::Tensor<D>) -> Vec<f32> {
    t.cast(burn::tensor::FloatDType::F32)
        .into_data()
        .try_into_vec::<f32>()
        .expect("an f32 tensor reads back as f32")
}
