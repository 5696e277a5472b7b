//! The Qwen3 causal language model (reference path) and its loader.

use std::path::Path;

use burn::module::{Module, Param};
use burn::tensor::{DType, Device, Int, Tensor, TensorData};

use crate::checkpoint::{Checkpoint, TensorRef};
use crate::config::Qwen3Config;
use crate::error::{ForwardError, LoadError, Result};
use crate::kv_cache::KvCache;
use crate::nn::{Attention, DecoderLayer, Linear, Mlp, RmsNorm, RotaryEmbedding};
use crate::plan::{KernelPlan, OpChoice};
use crate::stacks::LayerStacks;
use crate::taps::Taps;
use crate::weights;

/// `model.*` of the HF checkpoint.
#[derive(Module, Debug)]
pub struct Qwen3Model {
    /// `[vocab, hidden]`
    pub embed_tokens: Param<Tensor<2>>,
    pub layers: Vec<DecoderLayer>,
    pub norm: RmsNorm,
}

/// Which positions get logits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logits {
    /// Only the last position of each sequence (generation).
    Last,
    /// Every position (perplexity, validation).
    All,
}

/// `Qwen3ForCausalLM`: the decoder stack plus the language-model head.
#[derive(Module, Debug)]
pub struct Qwen3 {
    pub model: Qwen3Model,
    /// `None` when the head is tied to `model.embed_tokens` and no copy is stored.
    pub lm_head: Option<Linear>,
    pub rotary: RotaryEmbedding,
    #[module(skip)]
    pub config: Qwen3Config,
    /// Per layer and op: reference or fused (see [`KernelPlan`]); `reference` after loading.
    #[module(skip)]
    plan: KernelPlan,
    /// The layers' weights stacked per kind for the batch-1 decode step's one launch over its
    /// layers (`ops::decode_layers`), where the device runs it at this model's widths and dtype
    /// (`None` elsewhere, with fewer than three layers, attention biases, or
    /// `$BRAID_DECODE_LAYERS=0`).
    #[module(skip)]
    pub(crate) stacks: Option<LayerStacks>,
}

/// Whether `like`'s device runs `ops::decode_layers` as one launch for `c`'s layers in `like`'s
/// dtype over caches of `capacity` positions.
fn decode_layers_fit(c: &Qwen3Config, like: &Tensor<2>, capacity: usize) -> bool {
    let shape = crate::ops::QkShape { batch: 1, seq: 1, heads: c.num_attention_heads, kv_heads: c.num_kv_heads(), head_dim: c.head_dim() };
    crate::ops::decode_layers_supported(like, c.num_attention_heads * c.head_dim(), c.hidden_size, c.intermediate_size, shape, capacity)
}

/// Progress callback for loading: `(tensors done, tensors total)`.
pub type Progress<'a> = &'a mut dyn FnMut(usize, usize);

impl Qwen3 {
    /// Loads a Hugging Face Qwen3 folder (`config.json` + safetensors) onto `device`, computing
    /// in `dtype`. Every tensor is checked against the config before anything is uploaded.
    pub fn load(dir: &Path, device: &Device, dtype: DType, progress: Progress<'_>) -> Result<Self> {
        let config = Qwen3Config::from_file(&dir.join("config.json"))?;
        let ckpt = Checkpoint::open(dir)?;
        if let Some(first) = weights::check(&config, &ckpt).into_iter().next() {
            return Err(first);
        }
        if !device.supports_dtype(dtype) {
            return Err(LoadError::UnsupportedDType {
                dtype: format!("{dtype:?}"),
                device: format!("{device:?}"),
            });
        }
        Ok(Self::from_checkpoint(config, &ckpt, device, dtype, progress))
    }

    /// Builds the module from a checked checkpoint.
    fn from_checkpoint(c: Qwen3Config, ckpt: &Checkpoint, device: &Device, dtype: DType, progress: Progress<'_>) -> Self {
        let total = weights::expected_tensors(&c).len();
        let mut done = 0;
        let mut get = |name: String| -> Option<TensorData> {
            let t = ckpt.get(&name)?;
            done += 1;
            progress(done, total);
            Some(to_data(&t))
        };
        let t2 = |d: TensorData| Tensor::<2>::from_data(d, (device, dtype));
        let t1 = |d: TensorData| Tensor::<1>::from_data(d, (device, dtype));
        let need = |d: Option<TensorData>| d.expect("checked by weights::check");
        let eps = c.rms_norm_eps;

        let mut layers = Vec::with_capacity(c.num_hidden_layers);
        for l in 0..c.num_hidden_layers {
            let p = format!("model.layers.{l}");
            let mut linear = |name: &str| {
                let w = t2(need(get(format!("{p}.{name}.weight"))));
                let b = if c.attention_bias && name.starts_with("self_attn") {
                    Some(t1(need(get(format!("{p}.{name}.bias")))))
                } else {
                    None
                };
                Linear::new(w, b)
            };
            let (q_proj, k_proj, v_proj, o_proj) = (
                linear("self_attn.q_proj"),
                linear("self_attn.k_proj"),
                linear("self_attn.v_proj"),
                linear("self_attn.o_proj"),
            );
            let mlp = Mlp {
                gate_proj: linear("mlp.gate_proj"),
                up_proj: linear("mlp.up_proj"),
                down_proj: linear("mlp.down_proj"),
            };
            let mut norm = |name: &str| RmsNorm::new(t1(need(get(format!("{p}.{name}.weight")))), eps);
            let self_attn = Attention {
                q_proj,
                k_proj,
                v_proj,
                o_proj,
                q_norm: norm("self_attn.q_norm"),
                k_norm: norm("self_attn.k_norm"),
                num_heads: c.num_attention_heads,
                num_kv_heads: c.num_kv_heads(),
                head_dim: c.head_dim(),
            };
            layers.push(DecoderLayer {
                input_layernorm: norm("input_layernorm"),
                self_attn,
                post_attention_layernorm: norm("post_attention_layernorm"),
                mlp,
            });
        }
        let embed = t2(need(get("model.embed_tokens.weight".into())));
        let stacks = if !c.attention_bias && crate::ops::decode_layers_fused() && decode_layers_fit(&c, &embed, 1) { LayerStacks::build(&mut layers) } else { None };
        let embed_tokens = Param::from_tensor(embed);
        let norm = RmsNorm::new(t1(need(get("model.norm.weight".into()))), eps);
        let lm_head = get("lm_head.weight".into()).map(|w| Linear::new(t2(w), None));
        progress(total, total);
        Self {
            model: Qwen3Model { embed_tokens, layers, norm },
            lm_head,
            rotary: RotaryEmbedding::new(c.head_dim(), c.rope_theta()),
            plan: KernelPlan::uniform(c.num_hidden_layers, OpChoice::Reference),
            config: c,
            stacks,
        }
    }

    /// Whether the batch-1 decode step runs its layers as one launch (`ops::decode_layers`)
    /// over caches of `capacity` positions: the model has its layer stacks and the device runs
    /// that launch at this capacity (`GreedyDecoder` then stacks the caches too).
    pub fn decode_layers_ready(&self, capacity: usize) -> bool {
        self.stacks.is_some() && decode_layers_fit(&self.config, &self.model.embed_tokens.val(), capacity)
    }

    /// The kernel plan in use.
    pub fn plan(&self) -> &KernelPlan {
        &self.plan
    }

    /// Selects, per layer and op, the reference path or a fused kernel. Refuses a plan that does
    /// not fit this model (layer count, attention bias, head_dim).
    pub fn set_plan(&mut self, plan: KernelPlan) -> Result<(), ForwardError> {
        plan.check(&self.config).map_err(ForwardError::Plan)?;
        self.plan = plan;
        Ok(())
    }

    /// The dtype activations are computed in.
    pub fn dtype(&self) -> DType {
        self.model.embed_tokens.val().dtype()
    }

    pub fn device(&self) -> Device {
        self.model.embed_tokens.val().device()
    }

    /// A cache for `batch` sequences of up to `capacity` positions.
    pub fn new_cache(&self, batch: usize, capacity: usize) -> KvCache {
        KvCache::new(&self.config, batch, capacity, self.dtype(), &self.device())
    }

    /// Runs `ids: [batch, seq]` at positions `cache.len()..`, appends to the cache and returns
    /// f32 logits `[batch, seq or 1, vocab]`.
    pub fn forward(&self, ids: &[Vec<u32>], cache: &mut KvCache, logits: Logits) -> Result<Tensor<3>, ForwardError> {
        let hidden = self.hidden_states(ids, cache)?;
        let [b, t, h] = hidden.dims();
        let hidden = match logits {
            Logits::Last => hidden.narrow(1, t - 1, 1),
            Logits::All => hidden,
        };
        let rows = hidden.dims()[1];
        let out = self.head(hidden.reshape([b * rows, h]));
        Ok(out.reshape([b, rows, self.config.vocab_size]))
    }

    /// The language-model head on final-normed rows: `[rows, hidden]` -> f32 `[rows, vocab]`.
    pub fn head(&self, hidden: Tensor<2>) -> Tensor<2> {
        self.head_with(hidden, self.plan.lm_head)
    }

    /// [`Self::head`] with the choice `c` instead of the plan's.
    pub fn head_with(&self, hidden: Tensor<2>, c: OpChoice) -> Tensor<2> {
        self.head_logits(hidden, c).cast(burn::tensor::FloatDType::F32)
    }

    /// The head's logits in the model's dtype (what a greedy step's argmax reads: the f32
    /// cast would change no ranking, only cost a launch and twice the bytes).
    fn head_logits(&self, hidden: Tensor<2>, c: OpChoice) -> Tensor<2> {
        let weight = match &self.lm_head {
            Some(head) => head.weight.val(),
            None => self.model.embed_tokens.val(),
        };
        match c {
            OpChoice::Fused(_) => crate::ops::linear(hidden, weight),
            OpChoice::Reference => crate::ops::reference::linear(hidden, weight),
        }
    }

    /// The greedy token of each row of the last layer's output `x` (`pending`: its last residual
    /// add, not yet applied): final norm, head, argmax, all on the device -> `[rows]`. With a
    /// fused head, the last add and the final norm are one `add_rms_norm` launch in torch mode
    /// (`RmsNorm::forward`'s rounding points: the reference it twins is `x + down` then that norm)
    /// instead of ~10 Burn launches. Its sum of squares runs in another order than Burn's mean,
    /// so the eager loop's final norm may differ in a last bit; its bf16 output matched the
    /// twin's exactly in every H100 check (2026-11-26).
    pub(crate) fn greedy_ids(&self, x: Tensor<2>, pending: Option<Tensor<2>>) -> Tensor<1, burn::tensor::Int> {
        let norm = &self.model.norm;
        let normed = match pending {
            Some(down) if matches!(self.plan.lm_head, OpChoice::Fused(_)) && crate::ops::final_norm_fused() => {
                crate::ops::add_rms_norm(x, down, norm.weight.val(), norm.eps, crate::ops::Precision::Torch).1
            }
            Some(down) => norm.forward(x + down),
            None => norm.forward(x),
        };
        crate::ops::argmax_device(self.head_logits(normed, self.plan.lm_head))
    }

    /// Whether the batch-1 device-state step's end writes the next step's inputs
    /// ([`Self::greedy_advance`] with `next`): a fused head with the fused final norm.
    pub(crate) fn step_writes_inputs(&self) -> bool {
        matches!(self.plan.lm_head, OpChoice::Fused(_)) && crate::ops::final_norm_fused()
    }

    /// The batch-1 device-state step's end: [`Self::greedy_ids`] then `ops::advance` by the
    /// token -> `(state, history, None)`. Where [`Self::step_writes_inputs`] (`next`: the
    /// buffers the next step reads its inputs from; the last add pending, as the decode step
    /// always leaves it), one `ops::greedy_head` instead, which also writes those inputs (in
    /// place on the CubeCL backend) -> `(state, history, Some(next))`: the same ops' bits in two
    /// launches there.
    pub(crate) fn greedy_advance(
        &self,
        x: Tensor<2>,
        pending: Option<Tensor<2>>,
        state: Tensor<1, Int>,
        history: Tensor<1, Int>,
        rope: &crate::nn::Rope,
        next: Option<[Tensor<2>; 3]>,
    ) -> (Tensor<1, Int>, Tensor<1, Int>, Option<[Tensor<2>; 3]>) {
        match (pending, next) {
            (Some(down), Some(next)) if self.step_writes_inputs() => {
                let norm = &self.model.norm;
                let w = match &self.lm_head {
                    Some(head) => head.weight.val(),
                    None => self.model.embed_tokens.val(),
                };
                let tables = [self.model.embed_tokens.val(), rope.cos.clone(), rope.sin.clone()];
                let (s, h, next) = crate::ops::greedy_head(x, down, norm.weight.val(), norm.eps, crate::ops::Precision::Torch, w, state, history, tables, next);
                (s, h, Some(next))
            }
            (pending, next) => {
                debug_assert!(next.is_none(), "the step's end writes the next inputs only with the fused head and the last add pending");
                let (s, h) = crate::ops::advance(self.greedy_ids(x, pending), state, history);
                (s, h, None)
            }
        }
    }

    /// The final-normed hidden states `[batch, seq, hidden]` (cache appended).
    pub fn hidden_states(&self, ids: &[Vec<u32>], cache: &mut KvCache) -> Result<Tensor<3>, ForwardError> {
        self.hidden_states_tapped(ids, cache, None)
    }

    /// As [`Self::hidden_states`], also recording the taps of [`crate::taps`] (`embed`, every
    /// layer's, `norm`) in the compute dtype.
    pub fn hidden_states_tapped(
        &self,
        ids: &[Vec<u32>],
        cache: &mut KvCache,
        mut taps: Option<&mut Taps>,
    ) -> Result<Tensor<3>, ForwardError> {
        let b = ids.len();
        let t = ids.first().map_or(0, Vec::len);
        if t == 0 || ids.iter().any(|s| s.len() != t) {
            return Err(ForwardError::EmptyInput);
        }
        let past = cache.len();
        let limit = cache.capacity().min(self.config.max_position_embeddings);
        if past + t > limit {
            return Err(ForwardError::ContextOverflow { needed: past + t, limit });
        }
        let vocab = self.config.vocab_size;
        if let Some(&id) = ids.iter().flatten().find(|&&id| id as usize >= vocab) {
            return Err(ForwardError::TokenOutOfRange { id, vocab });
        }
        let device = self.device();
        let flat: Vec<i64> = ids.iter().flatten().map(|&id| id as i64).collect();
        let flat = Tensor::<1, Int>::from_data(TensorData::new(flat, [b * t]), &device);

        // 1. Embed (Qwen3 does not scale embeddings). [b, t, hidden]
        let mut x = self.model.embed_tokens.val().select(0, flat).reshape([b, t, self.config.hidden_size]);
        if let Some(taps) = taps.as_deref_mut() {
            taps.push("embed".into(), &x);
        }
        // 2. Decoder layers at positions past..past+t.
        let rope = self.rotary.tables(past, t, &device);
        for (i, ((layer, kv), plan)) in self.model.layers.iter().zip(cache.layers.iter_mut()).zip(&self.plan.layers).enumerate() {
            x = layer.forward(x, &rope, kv, past, plan, taps.as_deref_mut().map(|t| (t, i)));
        }
        cache.advance(t);
        // 3. Final norm.
        let out = self.model.norm.forward(x);
        if let Some(taps) = taps {
            taps.push("norm".into(), &out);
        }
        Ok(out)
    }
}

/// Copies a stored tensor into Burn's host format, keeping its dtype.
fn to_data(t: &TensorRef<'_>) -> TensorData {
    let dtype = match t.dtype {
        safetensors::Dtype::BF16 => DType::BF16,
        safetensors::Dtype::F16 => DType::F16,
        _ => DType::F32,
    };
    TensorData::from_bytes_vec(t.bytes.to_vec(), t.shape.to_vec(), dtype)
}
