use burn::module::Module;
use burn::tensor::{Device, DType, Tensor, TensorData};

/// NeoX-style rotary position embedding (`rotate_half`), with HF's inverse frequencies.
/// Angles, cosines and sines are computed on the host in f32 (as HF does) and cast to the
/// activation dtype only when applied, as HF does.
#[derive(Module, Debug)]
pub struct RotaryEmbedding {
    /// `[head_dim / 2]`: `theta^(-2i / head_dim)`
    #[module(skip)]
    pub inv_freq: Vec<f32>,
}

/// cos and sin for a run of positions: each `[seq, head_dim]` in f32 (the fused kernel reads
/// them as they are; the reference path casts them to the activation dtype, as HF does).
pub struct Rope {
    pub cos: Tensor<2>,
    pub sin: Tensor<2>,
}

impl RotaryEmbedding {
    pub fn new(head_dim: usize, theta: f64) -> Self {
        let inv_freq = (0..head_dim / 2)
            .map(|i| {
                let exponent = (2 * i) as f32 / head_dim as f32;
                1.0 / (theta as f32).powf(exponent)
            })
            .collect();
        Self { inv_freq }
    }

    /// Tables for positions `start..start + len`.
    pub fn tables(&self, start: usize, len: usize, device: &Device) -> Rope {
        let half = self.inv_freq.len();
        let dim = half * 2;
        let mut cos = Vec::with_capacity(len * dim);
        let mut sin = Vec::with_capacity(len * dim);
        for p in start..start + len {
            let row: Vec<f32> = self.inv_freq.iter().map(|f| p as f32 * f).collect();
            for _ in 0..2 {
                cos.extend(row.iter().map(|a| a.cos()));
                sin.extend(row.iter().map(|a| a.sin()));
            }
        }
        let make = |v: Vec<f32>| Tensor::<2>::from_data(TensorData::new(v, [len, dim]), (device, DType::F32));
        Rope { cos: make(cos), sin: make(sin) }
    }
}

impl Rope {
    /// Rotates `x: [batch, heads, seq, head_dim]` in its own dtype (HF's rounding points).
    pub fn apply(&self, x: Tensor<4>) -> Tensor<4> {
        let [b, h, t, d] = x.dims();
        let dtype = x.dtype();
        let cos = self.cos.clone().cast(dtype).reshape([1, 1, t, d]).expand([b, h, t, d]);
        let sin = self.sin.clone().cast(dtype).reshape([1, 1, t, d]).expand([b, h, t, d]);
        crate::ops::reference::rotate(x, cos, sin)
    }
}
