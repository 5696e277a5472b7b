//! Taps: named intermediate tensors of one forward pass, for `braid-cli diff` and the automatic
//! plan. Names and layouts are shared with `scripts/hf_dump.py`, which records the same taps
//! from Hugging Face transformers with forward hooks, so the two can be compared tensor by tensor.
//!
//! Names (one sequence; `t` positions):
//!
//! | name | layout | what |
//! |---|---|---|
//! | `embed` | `[t, hidden]` | token embeddings (the input of layer 0) |
//! | `layers.L.input_norm` | `[t, hidden]` | `input_layernorm` output (reference path only; fused it is never materialised) |
//! | `layers.L.q` / `.k` / `.v` | `[t, heads*hd]` / `[t, kv*hd]` | `q_proj` / `k_proj` / `v_proj` outputs |
//! | `layers.L.q_rope` / `.k_rope` | `[heads, t, hd]` / `[kv, t, hd]` | after `q_norm`/`k_norm` and RoPE |
//! | `layers.L.attn` | `[t, heads*hd]` | attention output (the input of `o_proj`) |
//! | `layers.L.o_proj` | `[t, hidden]` | `o_proj` output |
//! | `layers.L.residual` | `[t, hidden]` | residual stream after attention |
//! | `layers.L.post_norm` | `[t, hidden]` | `post_attention_layernorm` output |
//! | `layers.L.mlp_act` | `[t, intermediate]` | `silu(gate) * up` (the input of `down_proj`) |
//! | `layers.L.mlp_out` | `[t, hidden]` | `down_proj` output |
//! | `layers.L.output` | `[t, hidden]` | residual stream after the layer |
//! | `norm` | `[t, hidden]` | final norm output |
//! | `logits` | `[vocab]` | f32 logits of the last position |

use std::collections::BTreeMap;
use std::path::Path;

use burn::tensor::{Tensor, TensorData};

use crate::error::LoadError;

/// The taps of one decoder layer, in the order the layer computes them.
pub const LAYER_TAPS: [&str; 13] = [
    "input_norm",
    "q",
    "k",
    "v",
    "q_rope",
    "k_rope",
    "attn",
    "o_proj",
    "residual",
    "post_norm",
    "mlp_act",
    "mlp_out",
    "output",
];

/// The name of tap `tap` of layer `layer`.
pub fn layer_tap(layer: usize, tap: &str) -> String {
    format!("layers.{layer}.{tap}")
}

/// Device tensors recorded during a forward pass (each flattened to 2-D, rows x last dim), in
/// the compute dtype. Recording clones handles; nothing is computed for a tap.
#[derive(Default)]
pub struct Taps {
    pub tensors: Vec<(String, Tensor<2>)>,
}

impl Taps {
    pub fn push<const D: usize>(&mut self, name: String, t: &Tensor<D>) {
        let dims = t.dims();
        let last = dims[D - 1];
        let rows = dims.iter().product::<usize>() / last.max(1);
        self.tensors.push((name, t.clone().reshape([rows, last])));
    }

    /// Reads every tap back as f32.
    pub fn to_host(self) -> HostTaps {
        let mut out = HostTaps::default();
        for (name, t) in self.tensors {
            let shape = t.dims().to_vec();
            out.insert(name, shape, crate::to_host_f32(t));
        }
        out
    }
}

/// A tap file: the float taps, the integer tensors by name, the file's metadata.
pub type TapFile = (HostTaps, BTreeMap<String, Vec<i64>>, BTreeMap<String, String>);

/// Taps on the host, f32, by name.
#[derive(Debug, Clone, Default)]
pub struct HostTaps {
    pub tensors: BTreeMap<String, (Vec<usize>, Vec<f32>)>,
}

impl HostTaps {
    pub fn insert(&mut self, name: String, shape: Vec<usize>, values: Vec<f32>) {
        self.tensors.insert(name, (shape, values));
    }

    pub fn get(&self, name: &str) -> Option<&[f32]> {
        self.tensors.get(name).map(|(_, v)| v.as_slice())
    }

    /// A tap as a device tensor `[rows, last]` in `dtype`.
    pub fn tensor(&self, name: &str, device: &burn::tensor::Device, dtype: burn::tensor::DType) -> Option<Tensor<2>> {
        let (shape, v) = self.tensors.get(name)?;
        let last = *shape.last()?;
        let rows = v.len() / last.max(1);
        Some(Tensor::<2>::from_data(TensorData::new(v.clone(), [rows, last]), (device, dtype)))
    }

    /// Reads a tap file written by `scripts/hf_dump.py` (or [`Self::save`]): f32/f16/bf16
    /// tensors by tap name; integer tensors (`input_ids`, `greedy`) are returned separately.
    pub fn load(path: &Path) -> Result<TapFile, LoadError> {
        let bytes = std::fs::read(path).map_err(|source| LoadError::Io { path: path.into(), source })?;
        let bad = |message: String| LoadError::Safetensors { path: path.into(), message };
        let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| bad(e.to_string()))?;
        let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| bad(e.to_string()))?;
        let mut taps = Self::default();
        let mut ints = BTreeMap::new();
        for (name, view) in st.tensors() {
            let data = view.data();
            let shape = view.shape().to_vec();
            use safetensors::Dtype;
            let floats: Vec<f32> = match view.dtype() {
                Dtype::F32 => data.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
                Dtype::BF16 => data.chunks_exact(2).map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
                Dtype::F16 => data.chunks_exact(2).map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
                Dtype::I64 => {
                    ints.insert(name, data.chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes"))).collect());
                    continue;
                }
                Dtype::I32 => {
                    ints.insert(name, data.chunks_exact(4).map(|b| i32::from_le_bytes(b.try_into().expect("4 bytes")) as i64).collect());
                    continue;
                }
                other => return Err(bad(format!("tensor `{name}` has dtype {other:?}; taps are F32, F16, BF16, I32 or I64"))),
            };
            taps.insert(name, shape, floats);
        }
        let metadata = meta.metadata().clone().unwrap_or_default().into_iter().collect();
        Ok((taps, ints, metadata))
    }
}
