//! Launch-time validation shared by the kernels' safe entry points.

use cubecl::prelude::*;
use cubecl::std::tensor::TensorHandle;

use crate::KernelError;

pub(crate) struct Check {
    kernel: &'static str,
}

impl Check {
    pub(crate) fn new(kernel: &'static str) -> Self {
        Self { kernel }
    }

    /// The kernel the errors name.
    pub(crate) fn kernel(&self) -> &'static str {
        self.kernel
    }

    /// Row-major contiguous.
    pub(crate) fn contiguous(&self, name: &'static str, t: &TensorHandle) -> Result<(), KernelError> {
        let shape = t.shape();
        let strides = t.strides();
        let mut expected = 1;
        for d in (0..shape.len()).rev() {
            if shape[d] != 1 && strides[d] != expected {
                return Err(KernelError::Layout {
                    kernel: self.kernel,
                    tensor: name,
                    strides: strides.to_vec(),
                });
            }
            expected *= shape[d];
        }
        Ok(())
    }

    /// A contiguous rank-2 tensor; returns its dims.
    pub(crate) fn matrix(&self, name: &'static str, t: &TensorHandle) -> Result<[usize; 2], KernelError> {
        let shape = t.shape();
        if shape.len() != 2 {
            return Err(self.shape_err(name, t, "[rows, cols]".into()));
        }
        self.contiguous(name, t)?;
        Ok([shape[0], shape[1]])
    }

    /// Exactly `expected`, contiguous.
    pub(crate) fn shape(&self, name: &'static str, t: &TensorHandle, expected: &[usize]) -> Result<(), KernelError> {
        if t.shape().to_vec() != expected {
            return Err(self.shape_err(name, t, format!("{expected:?}")));
        }
        self.contiguous(name, t)
    }

    /// Exactly `expected` rows x cols with contiguous columns; rows may be strided (a view).
    pub(crate) fn rows(&self, name: &'static str, t: &TensorHandle, expected: &[usize; 2]) -> Result<(), KernelError> {
        if t.shape().to_vec() != expected {
            return Err(self.shape_err(name, t, format!("{expected:?}")));
        }
        let strides = t.strides();
        if expected[1] > 1 && strides[1] != 1 || expected[0] > 1 && strides[0] < expected[1] {
            return Err(KernelError::Layout { kernel: self.kernel, tensor: name, strides: strides.to_vec() });
        }
        Ok(())
    }

    pub(crate) fn same_dtype(&self, name: &'static str, t: &TensorHandle, dtype: ElemType) -> Result<(), KernelError> {
        if t.dtype != dtype {
            return Err(KernelError::DType {
                kernel: self.kernel,
                tensor: name,
                got: format!("{}", t.dtype),
                expected: format!("{dtype}"),
            });
        }
        Ok(())
    }

    pub(crate) fn shape_err(&self, name: &'static str, t: &TensorHandle, expected: String) -> KernelError {
        KernelError::Shape { kernel: self.kernel, tensor: name, got: t.shape().to_vec(), expected }
    }
}

/// A fresh contiguous output (at least 64 bytes, so that an empty placeholder can still be bound
/// as a vectorised argument: wgpu checks binding sizes against the shader's vector width).
pub(crate) fn output_like(client: &Client, shape: &[usize], dtype: ElemType) -> TensorHandle {
    let len: usize = shape.iter().product();
    let handle = client.empty((len * dtype.size()).max(64));
    TensorHandle::new_contiguous(shape.to_vec(), handle, dtype)
}
