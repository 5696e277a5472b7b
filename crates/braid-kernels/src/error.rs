use thiserror::Error;

/// Why a fused kernel refused to launch.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum KernelError {
    #[error("{kernel}: `{tensor}` has shape {got:?}, expected {expected}")]
    Shape { kernel: &'static str, tensor: &'static str, got: Vec<usize>, expected: String },
    #[error("{kernel}: `{tensor}` must be contiguous in row-major order (strides {strides:?})")]
    Layout { kernel: &'static str, tensor: &'static str, strides: Vec<usize> },
    #[error("{kernel}: `{tensor}` has dtype {got}, expected {expected}")]
    DType { kernel: &'static str, tensor: &'static str, got: String, expected: String },
    #[error("{kernel}: {what} is not supported by this kernel ({why})")]
    Unsupported { kernel: &'static str, what: String, why: String },
}
