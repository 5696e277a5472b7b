//! Turning logits into the next token: penalties, then greedy or temperature sampling with
//! top-k, top-p and min-p, from a seeded generator (same seed, same tokens).

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::error::EngineError;

/// How to pick tokens. Neutral values switch a step off.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// 0 picks the most likely token (greedy).
    pub temperature: f32,
    /// Keep the k most likely tokens; 0 keeps all.
    pub top_k: usize,
    /// Keep the smallest set of tokens whose probability sums to at least p; 1 keeps all.
    pub top_p: f32,
    /// Drop tokens less likely than min_p times the most likely one; 0 keeps all.
    pub min_p: f32,
    /// HF's repetition penalty over prompt and output tokens; 1 is off.
    pub repetition_penalty: f32,
    /// Subtracted once from the logit of every token already generated; 0 is off.
    pub presence_penalty: f32,
    pub seed: u64,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self { temperature: 0.0, top_k: 0, top_p: 1.0, min_p: 0.0, repetition_penalty: 1.0, presence_penalty: 0.0, seed: 0 }
    }
}

impl SamplingParams {
    pub fn validate(&self) -> Result<(), EngineError> {
        let bad = |field, message: String| Err(EngineError::Sampling { field, message });
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            return bad("temperature", format!("{} must be >= 0", self.temperature));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return bad("top_p", format!("{} must be in (0, 1]", self.top_p));
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            return bad("min_p", format!("{} must be in [0, 1]", self.min_p));
        }
        if !(self.repetition_penalty > 0.0 && self.repetition_penalty.is_finite()) {
            return bad("repetition_penalty", format!("{} must be > 0", self.repetition_penalty));
        }
        if !self.presence_penalty.is_finite() {
            return bad("presence_penalty", "must be finite".into());
        }
        Ok(())
    }

    pub fn is_greedy(&self) -> bool {
        self.temperature == 0.0
    }

    /// True when repetition or presence penalties change the logits.
    pub fn has_penalties(&self) -> bool {
        self.repetition_penalty != 1.0 || self.presence_penalty != 0.0
    }
}

/// A sampler with its own random stream.
#[derive(Debug)]
pub struct Sampler {
    params: SamplingParams,
    rng: StdRng,
}

impl Sampler {
    pub fn new(params: SamplingParams) -> Self {
        let rng = StdRng::seed_from_u64(params.seed);
        Self { params, rng }
    }

    /// Picks the next token from `logits: [vocab]`. `context` is prompt plus output (for the
    /// repetition penalty), `output` the generated tokens (for the presence penalty).
    pub fn sample(&mut self, logits: &mut [f32], context: &[u32], output: &[u32]) -> u32 {
        let p = &self.params;
        apply_penalties(logits, context, output, p.repetition_penalty, p.presence_penalty);
        if p.is_greedy() {
            return argmax(logits);
        }
        // As the argmax: NaN never drawn, and a row with no finite logit gives no token.
        for x in logits.iter_mut().filter(|x| x.is_nan()) {
            *x = f32::NEG_INFINITY;
        }
        if logits.iter().all(|&x| x == f32::NEG_INFINITY) {
            return logits.len() as u32;
        }
        // Candidates sorted by logit, descending; ties by id for determinism.
        let mut idx: Vec<u32> = (0..logits.len() as u32).collect();
        idx.sort_unstable_by(|&a, &b| logits[b as usize].total_cmp(&logits[a as usize]).then(a.cmp(&b)));
        if p.top_k > 0 {
            idx.truncate(p.top_k.max(1));
        }
        let max = logits[idx[0] as usize] / p.temperature;
        let mut probs: Vec<f32> = idx.iter().map(|&i| (logits[i as usize] / p.temperature - max).exp()).collect();
        let total: f32 = probs.iter().sum();
        probs.iter_mut().for_each(|x| *x /= total);
        if p.top_p < 1.0 {
            let mut cum = 0.0;
            let keep = probs.iter().position(|&x| {
                cum += x;
                cum >= p.top_p
            });
            let n = keep.map_or(probs.len(), |k| k + 1);
            probs.truncate(n);
            idx.truncate(n);
        }
        if p.min_p > 0.0 {
            let cut = probs[0] * p.min_p;
            let n = probs.iter().take_while(|&&x| x >= cut).count().max(1);
            probs.truncate(n);
            idx.truncate(n);
        }
        let total: f32 = probs.iter().sum();
        let mut r = self.rng.random::<f32>() * total;
        for (&id, &q) in idx.iter().zip(&probs) {
            if r < q {
                return id;
            }
            r -= q;
        }
        *idx.last().expect("at least one candidate")
    }
}

/// Index of the largest value (the first on ties). The device argmax's rule: NaN and -inf
/// never win, and a row with nothing else gives `v.len()`, no token (the engine stops with an
/// error on it).
pub fn argmax(v: &[f32]) -> u32 {
    let mut best: Option<usize> = None;
    for (i, &x) in v.iter().enumerate() {
        if x.is_nan() || x == f32::NEG_INFINITY {
            continue;
        }
        if best.is_none_or(|b| x > v[b]) {
            best = Some(i);
        }
    }
    best.unwrap_or(v.len()) as u32
}

fn apply_penalties(logits: &mut [f32], context: &[u32], output: &[u32], repetition: f32, presence: f32) {
    if repetition != 1.0 {
        let mut seen = vec![false; logits.len()];
        for &id in context {
            let i = id as usize;
            if i < logits.len() && !seen[i] {
                seen[i] = true;
                let l = &mut logits[i];
                *l = if *l > 0.0 { *l / repetition } else { *l * repetition };
            }
        }
    }
    if presence != 0.0 {
        let mut seen = vec![false; logits.len()];
        for &id in output {
            let i = id as usize;
            if i < logits.len() && !seen[i] {
                seen[i] = true;
                logits[i] -= presence;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logits() -> Vec<f32> {
        vec![1.0, 3.0, 2.0, -1.0, 2.5]
    }

    #[test]
    fn greedy_picks_argmax() {
        let mut s = Sampler::new(SamplingParams::default());
        assert_eq!(s.sample(&mut logits(), &[], &[]), 1);
    }

    #[test]
    fn nan_and_minus_infinity_never_win_and_no_finite_logit_gives_no_token() {
        let (nan, ninf) = (f32::NAN, f32::NEG_INFINITY);
        assert_eq!(argmax(&[nan, 1.0, ninf, 3.0, nan, 3.0]), 3);
        assert_eq!(argmax(&[ninf, nan, f32::INFINITY, 2.0]), 2);
        assert_eq!(argmax(&[nan, ninf, nan]), 3);
        let mut hot = Sampler::new(SamplingParams { temperature: 2.0, seed: 3, ..Default::default() });
        for _ in 0..64 {
            assert!([1, 3].contains(&hot.sample(&mut [nan, 1.0, ninf, 3.0, nan], &[], &[])));
        }
        assert_eq!(hot.sample(&mut [nan, ninf], &[], &[]), 2);
    }

    #[test]
    fn same_seed_same_tokens_and_other_seed_differs() {
        let params = SamplingParams { temperature: 5.0, seed: 7, ..Default::default() };
        let draw = |p: SamplingParams| {
            let mut s = Sampler::new(p);
            (0..64).map(|_| s.sample(&mut logits(), &[], &[])).collect::<Vec<_>>()
        };
        assert_eq!(draw(params.clone()), draw(params.clone()));
        assert_ne!(draw(params.clone()), draw(SamplingParams { seed: 8, ..params }));
    }

    #[test]
    fn top_k_and_top_p_and_min_p_restrict_the_support() {
        let run = |p: SamplingParams| {
            let mut s = Sampler::new(p);
            let mut seen: Vec<u32> = (0..400).map(|_| s.sample(&mut logits(), &[], &[])).collect();
            seen.sort();
            seen.dedup();
            seen
        };
        let hot = SamplingParams { temperature: 100.0, ..Default::default() };
        assert_eq!(run(hot.clone()), vec![0, 1, 2, 3, 4]);
        assert_eq!(run(SamplingParams { top_k: 2, ..hot.clone() }), vec![1, 4]);
        // At temperature 1: p = [.07, .50, .18, .01, .30]; top-p 0.75 keeps {1, 4}.
        let t1 = SamplingParams { temperature: 1.0, ..Default::default() };
        assert_eq!(run(SamplingParams { top_p: 0.75, ..t1.clone() }), vec![1, 4]);
        // min-p 0.5 keeps tokens with p >= 0.25: {1, 4}.
        assert_eq!(run(SamplingParams { min_p: 0.5, ..t1 }), vec![1, 4]);
    }

    #[test]
    fn penalties_follow_hf_and_presence_semantics() {
        let mut l = vec![2.0, -2.0, 1.0];
        apply_penalties(&mut l, &[0, 1, 1], &[2], 2.0, 0.5);
        assert_eq!(l, vec![1.0, -4.0, 0.5]);
    }

    #[test]
    fn rejects_bad_parameters() {
        for p in [
            SamplingParams { temperature: -1.0, ..Default::default() },
            SamplingParams { top_p: 0.0, ..Default::default() },
            SamplingParams { min_p: 2.0, ..Default::default() },
            SamplingParams { repetition_penalty: 0.0, ..Default::default() },
        ] {
            assert!(p.validate().is_err(), "{p:?}");
        }
    }
}
