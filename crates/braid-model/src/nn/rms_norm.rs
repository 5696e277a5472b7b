use burn::module::{Module, Param};
use burn::tensor::Tensor;

use crate::ops::{Precision, reference};

/// RMSNorm with PyTorch's rounding points: statistics in f32, the normalised value cast back to
/// the activation dtype, then multiplied by the weight in that dtype
/// (`w * (x_f32 * rsqrt(mean(x_f32^2) + eps)).to(dtype)`).
#[derive(Module, Debug)]
pub struct RmsNorm {
    /// `[dim]`
    pub weight: Param<Tensor<1>>,
    pub eps: f64,
}

impl RmsNorm {
    pub fn new(weight: Tensor<1>, eps: f64) -> Self {
        Self { weight: Param::from_tensor(weight), eps }
    }

    /// Normalises over the last dimension: `[.., dim] -> [.., dim]`.
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        reference::rms_norm(x, self.weight.val(), self.eps, Precision::Torch)
    }
}
