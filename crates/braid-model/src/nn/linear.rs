use burn::module::{Module, Param};
use burn::tensor::Tensor;

/// A linear layer with the PyTorch weight layout.
#[derive(Module, Debug)]
pub struct Linear {
    /// `[out_features, in_features]`, as stored by PyTorch.
    pub weight: Param<Tensor<2>>,
    /// `[out_features]`
    pub bias: Option<Param<Tensor<1>>>,
}

impl Linear {
    pub fn new(weight: Tensor<2>, bias: Option<Tensor<1>>) -> Self {
        Self {
            weight: Param::from_tensor(weight),
            bias: bias.map(Param::from_tensor),
        }
    }

    /// `x @ weight^T + bias` over the last dimension: `[.., in] -> [.., out]`.
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let dims = x.dims();
        let [out, inp] = self.weight.dims();
        let rows: usize = dims[..D - 1].iter().product();
        let y = x.reshape([rows, inp]).matmul(self.weight.val().transpose());
        let y = match &self.bias {
            Some(b) => y + b.val().unsqueeze_dim::<2>(0),
            None => y,
        };
        let mut out_dims = dims;
        out_dims[D - 1] = out;
        y.reshape(out_dims)
    }
}
