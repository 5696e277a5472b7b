//! Braid's fused CubeCL kernels for Qwen3.
//!
//! Each kernel lives in its own module: the `#[cube]` code in `kernel.rs`, a safe launch function
//! in `mod.rs` that validates shapes, strides and dtypes and returns [`KernelError`]. The unchecked
//! launches stay private. Nothing here knows about Burn: inputs and outputs are cubecl
//! [`TensorHandle`]s on a [`Client`].

pub mod add_rms_norm;
pub mod argmax;
pub mod attention;
pub mod decode;
pub mod decode_mlp;
pub mod gemv;
pub mod greedy_head;
pub mod grid;
pub mod paged;
pub mod qk_norm_rope;
pub mod qkv_rope;
pub mod rms_norm_qkv;
pub mod silu_mul;
pub mod tagged;
pub mod tc_linear;
mod check;
mod error;
mod precision;
mod reduce;

pub use cubecl;
pub use cubecl::std::tensor::TensorHandle;
pub use error::KernelError;
pub use precision::Precision;
pub use reduce::block_sum_pair_probe;
