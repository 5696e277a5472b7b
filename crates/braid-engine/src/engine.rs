//! A loaded model folder (weights, tokenizer, chat template, generation defaults) and the
//! generation loop: prefill once, then one token per step through the KV cache.

use std::path::{Path, PathBuf};
use std::time::Instant;

use braid_model::graph_decode::{GreedyDecoder, StepMode};
use braid_model::{DType, Device, Logits, Qwen3, qwen3::Progress, to_host_f32};
use serde::Serialize;

use crate::chat::{ChatTemplate, Message};
use crate::error::EngineError;
use crate::generation_config::GenerationConfig;
use crate::sampler::{Sampler, SamplingParams};
use crate::tokenizer::{TextStream, Tokenizer};

/// Everything needed to turn a prompt into text.
pub struct Engine {
    pub dir: PathBuf,
    pub model: Qwen3,
    pub tokenizer: Tokenizer,
    pub generation: GenerationConfig,
    /// Token ids that end generation (config.json and generation_config.json together).
    pub eos: Vec<u32>,
}

/// One generation request.
#[derive(Debug, Clone)]
pub struct Request {
    pub max_tokens: usize,
    pub sampling: SamplingParams,
    pub ignore_eos: bool,
}

/// Why generation stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Finish {
    /// An end-of-sequence token was produced (it is not part of the output).
    Eos,
    /// `max_tokens` were produced.
    Length,
    /// The model's context is full.
    Context,
}

/// The result of one request.
#[derive(Debug, Clone, Serialize)]
pub struct Generation {
    pub prompt_ids: Vec<u32>,
    /// Generated ids only (a final eos is not included).
    pub output_ids: Vec<u32>,
    pub text: String,
    pub finish: Finish,
    /// Seconds from start to the first generated token (prefill).
    pub prefill_secs: f64,
    /// Seconds spent on the decode steps after the first token.
    pub decode_secs: f64,
    pub prefill_tok_per_s: f64,
    pub decode_tok_per_s: f64,
    /// Whether decode steps ran on device-side state, replayed as one captured graph per token
    /// (pure greedy with every layer's attention fused; see `braid_model::graph_decode`).
    pub graph: bool,
    /// Seconds the graph capture took (its warm-up steps, first-use compilation and tuning);
    /// not part of `decode_secs`, whose rate covers the tokens decoded after it.
    pub graph_setup_secs: f64,
}

impl Engine {
    /// Loads a Hugging Face model folder.
    pub fn load(dir: &Path, device: &Device, dtype: DType, progress: Progress<'_>) -> Result<Self, EngineError> {
        let model = Qwen3::load(dir, device, dtype, progress)?;
        let tok_path = dir.join("tokenizer.json");
        let tokenizer = Tokenizer::from_file(&tok_path)?;
        if tokenizer.vocab_size() > model.config.vocab_size {
            return Err(EngineError::Tokenizer {
                path: tok_path,
                message: format!(
                    "{} tokens, more than config.json's vocab_size = {}",
                    tokenizer.vocab_size(),
                    model.config.vocab_size
                ),
            });
        }
        let generation = GenerationConfig::from_dir(dir)?;
        let mut eos = model.config.eos_token_ids();
        if let Some(ids) = &generation.eos_token_id {
            eos.extend(ids.to_vec());
        }
        eos.sort_unstable();
        eos.dedup();
        Ok(Self { dir: dir.to_path_buf(), model, tokenizer, generation, eos })
    }

    /// The checkpoint's sampling defaults (greedy when it sets none or `do_sample: false`).
    pub fn default_sampling(&self) -> SamplingParams {
        let g = &self.generation;
        let base = SamplingParams::default();
        if g.do_sample != Some(true) {
            return base;
        }
        SamplingParams {
            temperature: g.temperature.unwrap_or(1.0),
            top_k: g.top_k.unwrap_or(0),
            top_p: g.top_p.unwrap_or(1.0),
            min_p: g.min_p.unwrap_or(0.0),
            repetition_penalty: g.repetition_penalty.unwrap_or(1.0),
            ..base
        }
    }

    /// Renders a single user turn with the folder's chat template.
    pub fn chat_prompt(&self, user: &str, thinking: bool) -> Result<String, EngineError> {
        let template = ChatTemplate::from_tokenizer_config(&self.dir.join("tokenizer_config.json"))?;
        template.render(&[Message::new("user", user)], true, Some(thinking))
    }

    /// Encodes and checks a prompt against the context.
    pub fn encode_prompt(&self, prompt: &str) -> Result<Vec<u32>, EngineError> {
        let ids = self.tokenizer.encode(prompt)?;
        self.check_prompt(&ids)?;
        Ok(ids)
    }

    /// A prompt needs at least one token and room for one more in the context.
    fn check_prompt(&self, ids: &[u32]) -> Result<(), EngineError> {
        let limit = self.model.config.max_position_embeddings;
        match ids.len() {
            0 => Err(EngineError::EmptyPrompt),
            n if n >= limit => Err(EngineError::PromptTooLong { tokens: n, limit }),
            _ => Ok(()),
        }
    }

    /// Generates from `prompt_ids`, calling `on_text` with each completed piece of text.
    pub fn generate(&self, prompt_ids: &[u32], req: &Request, on_text: &mut dyn FnMut(&str)) -> Result<Generation, EngineError> {
        req.sampling.validate()?;
        self.check_prompt(prompt_ids)?;
        let limit = self.model.config.max_position_embeddings;
        let budget = req.max_tokens.min(limit - prompt_ids.len());
        let mut sampler = Sampler::new(req.sampling.clone());
        let mut stream = TextStream::new(&self.tokenizer);
        let mut context = prompt_ids.to_vec();
        let mut output = Vec::new();
        let mut text = String::new();
        let mut finish = if budget < req.max_tokens { Finish::Context } else { Finish::Length };

        let start = Instant::now();
        let mut first_token_at = None;
        let mut next = prompt_ids.to_vec();
        // Pure greedy picks the token on the device: only its id crosses to the host. With every
        // layer's attention fused, the steps run on device-side state as one replayed graph.
        let on_device = req.sampling.is_greedy() && !req.sampling.has_penalties();
        let graph_limit = limit;
        let mut decoder = if on_device && self.model.device_decode_ready() && prompt_ids.len() + budget + braid_model::graph_decode::SLACK <= graph_limit {
            Some(GreedyDecoder::new(&self.model, prompt_ids, budget, StepMode::Graph)?)
        } else {
            None
        };
        let mut cache = match decoder {
            Some(_) => None,
            None => Some(self.model.new_cache(1, prompt_ids.len() + budget)),
        };
        let graph = decoder.as_ref().is_some();
        let ready_at_start = decoder.as_ref().map_or(0, |d| d.ready());
        while output.len() < budget {
            let id = if let Some(d) = decoder.as_mut() {
                d.next_token()?
            } else {
                let logits = self.model.forward(&[next], cache.as_mut().expect("a cache without a decoder"), Logits::Last)?;
                if on_device {
                    let vocab = logits.dims()[2];
                    braid_model::ops::argmax(logits.reshape([1, vocab]))[0]
                } else {
                    let mut logits = to_host_f32(logits);
                    sampler.sample(&mut logits, &context, &output)
                }
            };
            if id as usize >= self.model.config.vocab_size {
                return Err(EngineError::NoFiniteLogit { index: output.len() });
            }
            first_token_at.get_or_insert_with(Instant::now);
            if !req.ignore_eos && self.eos.contains(&id) {
                finish = Finish::Eos;
                break;
            }
            output.push(id);
            context.push(id);
            if let Some(piece) = stream.push(id)? {
                on_text(&piece);
                text.push_str(&piece);
            }
            next = vec![id];
        }
        if let Some(piece) = stream.finish()? {
            on_text(&piece);
            text.push_str(&piece);
        }
        let end = Instant::now();
        let first = first_token_at.unwrap_or(end);
        let eos_step = usize::from(finish == Finish::Eos && !output.is_empty());
        let (prefill_secs, decode_secs, decode_steps, graph_setup_secs) = match &decoder {
            // The capture runs the first steps (their tokens come out at once): the rate covers
            // the steps after it (and counts the tokens used: on an end of sequence, the steps
            // of its chunk past it ran unread, `GreedyDecoder::next_token`).
            Some(d) => (
                d.prefill_secs,
                ((end - start).as_secs_f64() - d.prefill_secs - d.setup_secs).max(0.0),
                (output.len() + eos_step).saturating_sub(ready_at_start),
                d.setup_secs,
            ),
            None => (
                (first - start).as_secs_f64(),
                (end - first).as_secs_f64(),
                output.len().saturating_sub(1) + eos_step,
                0.0,
            ),
        };
        Ok(Generation {
            prompt_ids: prompt_ids.to_vec(),
            output_ids: output,
            text,
            finish,
            prefill_secs,
            decode_secs,
            prefill_tok_per_s: rate(prompt_ids.len(), prefill_secs),
            decode_tok_per_s: rate(decode_steps, decode_secs),
            graph,
            graph_setup_secs,
        })
    }
}

fn rate(n: usize, secs: f64) -> f64 {
    if secs > 0.0 { n as f64 / secs } else { 0.0 }
}
