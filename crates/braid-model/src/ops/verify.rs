//! Each fused op against its reference twin and an f64 host truth, on fresh random data: the
//! kernel tests run this on wgpu (CI), `braid-cli check-kernels` on any device (the GPU machine).
//!
//! Errors are normwise: `||out - truth||_2 / ||truth||_2` over the whole output, with the truth
//! computed in f64 from the same (already rounded) inputs. Outputs are poisoned first: a NaN
//! buffer of the output's size is allocated and dropped before each launch so that the memory
//! pool hands it to the kernel, and unwritten elements show up as non-finite values.

use burn::tensor::{DType, Device, FloatDType, Tensor, TensorData};

use super::{Precision, QkShape, reference};
use crate::nn::RotaryEmbedding;

/// One op, one case, one precision.
#[derive(Debug, Clone)]
pub struct OpCheck {
    pub op: &'static str,
    pub case: String,
    pub precision: Precision,
    /// Fused op (kernel on CubeCL devices) vs f64 truth.
    pub fused_err: f64,
    /// Reference twin (plain Burn ops, same precision mode) vs f64 truth.
    pub twin_err: f64,
    /// Fused vs twin.
    pub fused_vs_twin: f64,
    /// Every output element finite (nothing left unwritten).
    pub finite: bool,
}

/// A tiny deterministic generator (splitmix64) so a failing seed can be replayed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `[-1, 1)`.
    pub fn unit(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
    pub fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.unit() * scale).collect()
    }
    /// Norm weights `center +- spread`, with a few channels at `peak` (k_norm-like outliers).
    pub fn norm_weights(&mut self, n: usize, center: f32, spread: f32, peak: f32) -> Vec<f32> {
        let mut w: Vec<f32> = (0..n).map(|_| center + self.unit() * spread).collect();
        if peak != 0.0 {
            for i in (0..n).step_by(7.max(n / 5)) {
                w[i] = peak * (1.0 - 0.03 * self.unit().abs());
            }
        }
        w
    }
}

/// Inputs are rounded to `dtype` on upload; the truth reads them back so it sees the same values.
struct Ctx<'a> {
    device: &'a Device,
    dtype: DType,
}

impl Ctx<'_> {
    fn t<const D: usize>(&self, v: Vec<f32>, shape: [usize; D]) -> Tensor<D> {
        Tensor::<D>::from_data(TensorData::new(v, shape), (self.device, DType::F32)).cast(self.dtype)
    }
    /// A u32 vector (decode state, ids, history) on the device.
    fn u32s(&self, v: Vec<u32>) -> Tensor<1, burn::tensor::Int> {
        let n = v.len();
        Tensor::<1, burn::tensor::Int>::from_data(TensorData::new(v, [n]), (self.device, DType::U32))
    }
    /// Allocates and drops a NaN buffer the size of an output, so the pool reuses it.
    fn poison(&self, len: usize) {
        let nan = Tensor::<1>::full([len], f32::NAN, (self.device, self.dtype));
        let _ = nan.into_data();
    }
}

/// An integer tensor's values on the host, as f64 (to sit beside float outputs).
fn host_ints(t: Tensor<1, burn::tensor::Int>) -> Vec<f64> {
    t.into_data().convert::<i64>().try_to_vec::<i64>().expect("ints").into_iter().map(|x| x as f64).collect()
}

fn host<const D: usize>(t: Tensor<D>) -> Vec<f64> {
    t.cast(FloatDType::F32).into_data().try_to_vec::<f32>().expect("f32 data").into_iter().map(f64::from).collect()
}

/// `||a - b|| / ||b||` (0 when both vanish).
pub fn rel_err(a: &[f64], b: &[f64]) -> f64 {
    let num: f64 = a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum::<f64>().sqrt();
    let den: f64 = b.iter().map(|y| y * y).sum::<f64>().sqrt();
    if den == 0.0 { num } else { num / den }
}

fn finite(v: &[f64]) -> bool {
    v.iter().all(|x| x.is_finite())
}

fn record(op: &'static str, case: &str, p: Precision, fused: &[f64], twin: &[f64], truth: &[f64]) -> OpCheck {
    OpCheck {
        op,
        case: case.to_string(),
        precision: p,
        fused_err: rel_err(fused, truth),
        twin_err: rel_err(twin, truth),
        fused_vs_twin: rel_err(fused, twin),
        finite: finite(fused) && fused.len() == truth.len(),
    }
}

fn rms_rows(x: &[f64], w: &[f64], rows: usize, dim: usize, eps: f64) -> Vec<f64> {
    let mut out = vec![0.0; rows * dim];
    for r in 0..rows {
        let row = &x[r * dim..(r + 1) * dim];
        let inv = 1.0 / (row.iter().map(|v| v * v).sum::<f64>() / dim as f64 + eps).sqrt();
        for j in 0..dim {
            out[r * dim + j] = row[j] * inv * w[j];
        }
    }
    out
}

/// Sizes and magnitudes of one case.
#[derive(Debug, Clone, Copy)]
pub struct Case {
    pub name: &'static str,
    pub rows: usize,
    pub scale: f32,
    /// Norm-weight outliers (0 = none).
    pub peak: f32,
    pub zero_row: bool,
}

/// The standard cases: plain, odd sizes, adversarial magnitudes, long prefill.
pub fn cases() -> Vec<Case> {
    vec![
        Case { name: "decode", rows: 1, scale: 1.0, peak: 0.0, zero_row: false },
        Case { name: "prefill-odd", rows: 37, scale: 2.0, peak: 0.0, zero_row: true },
        // (3 rows: inside every GEMV row limit, tensor-core devices' included.)
        Case { name: "adversarial", rows: 3, scale: 1.0e4, peak: 100.0, zero_row: true },
        // Past the GEMV row limits: the Cube dispatch takes its prefill paths (RMSNorm kernel
        // + matmul for rms_norm_qkv in torch mode; attention stays on its kernel).
        Case { name: "prefill-long", rows: 160, scale: 1.0, peak: 10.0, zero_row: false },
    ]
}

/// The projections on `tc_linear`'s `mma.sync` kernel (forced on for these checks, see
/// [`verify_some`]): `linear` and `rms_norm_qkv` only (nine 128-row tiles, the last partial;
/// partial column tiles; q/k/v at odd column offsets; 34 32-wide k slabs).
pub const MMA_CASE: Case = Case { name: "prefill-mma", rows: 1024 + 37, scale: 1.0, peak: 10.0, zero_row: false };

/// The projections on `tc_linear`'s cooperative-matrix kernel with k split a set number of
/// ways (see [`verify_some`]; the policy splits `prefill-long`'s products 4 ways on an H100):
/// unsplit (one launch over all of q | k | v's column tiles), and 17 ways (one 64-wide k slab
/// per split, `prefill-long`'s width). `linear`, `rms_norm_qkv` and `gate_up_silu` (its
/// one-launch kernel, `tc_gate_up_silu`, in torch mode) only.
pub const SPLIT_CASES: [(Case, usize); 2] = [
    (Case { name: "tc-whole-k", rows: 160, scale: 1.0, peak: 10.0, zero_row: false }, 1),
    (Case { name: "tc-split-17", rows: 64 + 3, scale: 1.0, peak: 10.0, zero_row: false }, 17),
];

/// Runs every op for every case in both precisions on `device` in `dtype`.
pub fn verify_all(device: &Device, dtype: DType, seed: u64) -> Vec<OpCheck> {
    verify_some(device, dtype, seed, &|_| true)
}

/// The check groups [`verify_some`] filters on (each names the op, or ops, it checks).
pub const CHECK_GROUPS: [&str; 19] = [
    "add_rms_norm",
    "rms_norm_qkv",
    "qk_norm_rope",
    "qk_rope_into",
    "silu_mul",
    "attention",
    "linear",
    "gate_up_silu",
    "add_rms_norm_qkv",
    "add_rms_norm_gate_up",
    "qkv_rope_cache",
    "decode_mlp",
    "decode_mlp_qkv",
    "decode_layers",
    "greedy_head",
    "argmax",
    "paged",
    "paged_prefill",
    "decode_state",
];

/// [`verify_all`] restricted to the check groups ([`CHECK_GROUPS`]) `want` accepts.
pub fn verify_some(device: &Device, dtype: DType, seed: u64, want: &dyn Fn(&str) -> bool) -> Vec<OpCheck> {
    // (A name below missing from CHECK_GROUPS could never be selected.)
    let want = |g: &str| {
        debug_assert!(CHECK_GROUPS.contains(&g), "check group {g} not in CHECK_GROUPS");
        want(g)
    };
    let ctx = Ctx { device, dtype };
    let mut rng = Rng::new(seed);
    let mut out = Vec::new();
    for case in cases() {
        for p in [Precision::Torch, Precision::F32] {
            if want("add_rms_norm") {
                out.push(check_add_rms_norm(&ctx, &mut rng, case, p));
            }
            if want("rms_norm_qkv") {
                out.push(check_rms_norm_qkv(&ctx, &mut rng, case, p));
            }
            if want("qk_norm_rope") {
                out.push(check_qk_norm_rope(&ctx, &mut rng, case, p));
            }
            if want("qk_rope_into") {
                out.extend(check_qk_rope_into(&ctx, &mut rng, case, p));
            }
            if want("silu_mul") {
                out.push(check_silu_mul(&ctx, &mut rng, case, p));
            }
            if want("attention") {
                out.extend(check_attention(&ctx, &mut rng, case, p));
            }
            if want("linear") {
                out.push(check_linear(&ctx, &mut rng, case, p));
            }
            if want("gate_up_silu") {
                out.push(check_gate_up_silu(&ctx, &mut rng, case, p));
            }
            if want("add_rms_norm_qkv") {
                out.push(check_add_then(&ctx, &mut rng, case, p, false));
            }
            if want("add_rms_norm_gate_up") {
                out.push(check_add_then(&ctx, &mut rng, case, p, true));
            }
            if want("qkv_rope_cache") {
                out.extend(check_qkv_rope(&ctx, &mut rng, case, p));
            }
            if want("decode_mlp") {
                out.extend(check_decode_mlp(&ctx, &mut rng, case, p));
            }
            if want("decode_mlp_qkv") {
                out.extend(check_decode_mlp_qkv(&ctx, &mut rng, case, p));
            }
            if want("decode_layers") {
                out.extend(check_decode_layers(&ctx, &mut rng, case, p));
            }
            if want("greedy_head") {
                out.extend(check_greedy_head(&ctx, &mut rng, case, p));
            }
        }
        if want("argmax") {
            out.push(check_argmax(&ctx, &mut rng, case));
        }
        if want("paged") {
            out.extend(check_paged(&ctx, &mut rng, case));
        }
        if want("paged_prefill") {
            out.extend(check_paged_prefill(&ctx, &mut rng, case));
        }
        if want("decode_state") {
            out.push(check_decode_state(&ctx, &mut rng, case));
        }
    }
    // The mma kernel forced on (its thresholds would leave shapes this small to the other
    // kernel): a no-op where the device has no mma (Flex, wgpu).
    braid_kernels::tc_linear::force_mma(Some(true));
    for p in [Precision::Torch, Precision::F32] {
        if want("linear") {
            out.push(check_linear(&ctx, &mut rng, MMA_CASE, p));
        }
        if want("rms_norm_qkv") {
            out.push(check_rms_norm_qkv(&ctx, &mut rng, MMA_CASE, p));
        }
    }
    braid_kernels::tc_linear::force_mma(None);
    // Set k splits of the other kernel (no-ops where the device has no tensor-core path).
    for (case, splits) in SPLIT_CASES {
        braid_kernels::tc_linear::force_splits(Some(splits));
        for p in [Precision::Torch, Precision::F32] {
            if want("linear") {
                out.push(check_linear(&ctx, &mut rng, case, p));
            }
            if want("rms_norm_qkv") {
                out.push(check_rms_norm_qkv(&ctx, &mut rng, case, p));
            }
            if want("gate_up_silu") {
                out.push(check_gate_up_silu(&ctx, &mut rng, case, p));
            }
        }
    }
    braid_kernels::tc_linear::force_splits(None);
    out
}

/// The graph-ready decode ops that move data (`decode_inputs`, `kv_write`, `advance`): exact
/// against the host (error = fraction of wrong values). The caches' other rows must not change;
/// `decode_inputs` of a token and a position out of range gathers zeros.
fn check_decode_state(ctx: &Ctx, rng: &mut Rng, case: Case) -> OpCheck {
    let (vocab, hidden, kv, cap, hd) = (50, 24 + case.rows % 7, 2, 9, 8);
    let (token, pos) = (case.rows % vocab, (case.rows * 3) % cap);
    let state = ctx.u32s(vec![token as u32, pos as u32]);
    let embed = ctx.t(rng.vec(vocab * hidden, case.scale), [vocab, hidden]);
    let cos_t = Tensor::<2>::from_data(TensorData::new(rng.vec(cap * hd, 1.0), [cap, hd]), (ctx.device, DType::F32));
    let sin_t = Tensor::<2>::from_data(TensorData::new(rng.vec(cap * hd, 1.0), [cap, hd]), (ctx.device, DType::F32));
    let kc = ctx.t(rng.vec(kv * cap * hd, 1.0), [1, kv, cap, hd]);
    let vc = ctx.t(rng.vec(kv * cap * hd, 1.0), [1, kv, cap, hd]);
    let k = ctx.t(rng.vec(kv * hd, case.scale), [1, kv, 1, hd]);
    let v = ctx.t(rng.vec(kv * hd, case.scale), [1, kv, 1, hd]);
    let (eh, ch, sh, kch, vch, kh, vh) =
        (host(embed.clone()), host(cos_t.clone()), host(sin_t.clone()), host(kc.clone()), host(vc.clone()), host(k.clone()), host(v.clone()));
    let mut truth = Vec::new();
    truth.extend_from_slice(&eh[token * hidden..(token + 1) * hidden]);
    truth.extend_from_slice(&ch[pos * hd..(pos + 1) * hd]);
    truth.extend_from_slice(&sh[pos * hd..(pos + 1) * hd]);
    let mut kt = kch.clone();
    let mut vt = vch.clone();
    for h in 0..kv {
        for d in 0..hd {
            kt[(h * cap + pos) * hd + d] = kh[h * hd + d];
            vt[(h * cap + pos) * hd + d] = vh[h * hd + d];
        }
    }
    truth.extend(kt);
    truth.extend(vt);
    let next = (token * 7 + 1) % vocab;
    let history_len = cap + 1;
    truth.extend([next as f64, (pos + 1) as f64]);
    let mut hist_t = vec![0.0; history_len];
    hist_t[pos + 1] = next as f64;
    truth.extend(hist_t);
    // A token past the embedding's rows (what the fused argmax gives where no logit was
    // finite) and a position past the tables gather zeros.
    truth.extend(vec![0.0; hidden + 2 * hd]);
    let outside = ctx.u32s(vec![(vocab + case.rows % 3) as u32, cap as u32]);
    let run = |fused: bool| -> Vec<f64> {
        let (x, c, s) = if fused {
            super::decode_inputs(embed.clone(), cos_t.clone(), sin_t.clone(), state.clone())
        } else {
            reference::decode_inputs(embed.clone(), cos_t.clone(), sin_t.clone(), state.clone())
        };
        // Fresh copies of the caches: the fused op writes in place.
        let (k2, v2) = (kc.clone() + 0.0, vc.clone() + 0.0);
        let (k2, v2) = if fused {
            super::kv_write(k2, v2, k.clone(), v.clone(), state.clone())
        } else {
            reference::kv_write(k2, v2, k.clone(), v.clone(), state.clone())
        };
        let st = ctx.u32s(vec![token as u32, pos as u32]);
        let hist = ctx.u32s(vec![0; history_len]);
        let ids = ctx.u32s(vec![next as u32]);
        let (st, hist) = if fused { super::advance(ids, st, hist) } else { reference::advance(ids, st, hist) };
        let mut out = Vec::new();
        out.extend(host(x));
        out.extend(host(c));
        out.extend(host(s));
        out.extend(host(k2));
        out.extend(host(v2));
        out.extend(host_ints(st));
        out.extend(host_ints(hist));
        let (x, c, s) = if fused {
            super::decode_inputs(embed.clone(), cos_t.clone(), sin_t.clone(), outside.clone())
        } else {
            reference::decode_inputs(embed.clone(), cos_t.clone(), sin_t.clone(), outside.clone())
        };
        out.extend(host(x));
        out.extend(host(c));
        out.extend(host(s));
        out
    };
    let (fused, twin) = (run(true), run(false));
    let wrong = |a: &[f64]| {
        if a.len() != truth.len() {
            return 1.0;
        }
        a.iter().zip(&truth).filter(|(x, y)| x != y).count() as f64 / truth.len() as f64
    };
    OpCheck {
        op: "decode_state",
        case: case.name.to_string(),
        precision: Precision::Torch,
        fused_err: wrong(&fused),
        twin_err: wrong(&twin),
        fused_vs_twin: if fused.len() == twin.len() { fused.iter().zip(&twin).filter(|(a, b)| a != b).count() as f64 } else { 1.0 },
        finite: finite(&fused) && fused.len() == truth.len(),
    }
}

/// Errors are the fraction of rows whose index differs from the truth (first index on ties;
/// NaN and -inf never win; `vocab` for a row with nothing else).
fn check_argmax(ctx: &Ctx, rng: &mut Rng, case: Case) -> OpCheck {
    // Qwen3's vocabulary at decode (16-byte vector loads, several rounds per unit); an odd
    // width (scalar loads) and a small even one elsewhere.
    let vocab = match case.name {
        "decode" => 151_936,
        "prefill-odd" | "adversarial" => 5000 + 11,
        _ => 4096 + 8,
    };
    let rows = case.rows;
    let mut v = rng.vec(rows * vocab, case.scale);
    for r in 0..rows {
        // A planted tie: the row's maximum twice; the first must win.
        let (a, b) = ((r * 7919) % vocab, (r * 104_729 + 13) % vocab);
        let (a, b) = (a.min(b), a.max(b));
        v[r * vocab + a] = 2.0 * case.scale;
        v[r * vocab + b] = 2.0 * case.scale;
        // NaN and -inf never win (the kernels' rule; `reference::argmax` keeps it): every
        // third row has NaNs ahead of its maximum and -inf; with three rows or more, the last
        // has nothing else, which gives `vocab`.
        if r % 3 == 1 {
            for i in [0, a / 2, vocab - 1] {
                v[r * vocab + i] = f32::NAN;
            }
            v[r * vocab + (a + 1) % vocab] = f32::NEG_INFINITY;
        }
        if rows >= 3 && r == rows - 1 {
            for (i, x) in v[r * vocab..(r + 1) * vocab].iter_mut().enumerate() {
                *x = if i % 5 == 0 { f32::NAN } else { f32::NEG_INFINITY };
            }
        }
    }
    let logits = ctx.t(v, [rows, vocab]);
    let host_vals = host(logits.clone());
    let truth: Vec<f64> = (0..rows)
        .map(|r| {
            let row = &host_vals[r * vocab..(r + 1) * vocab];
            let mut best: Option<usize> = None;
            for (i, &x) in row.iter().enumerate() {
                if !x.is_nan() && x != f64::NEG_INFINITY && best.is_none_or(|b| x > row[b]) {
                    best = Some(i);
                }
            }
            best.unwrap_or(vocab) as f64
        })
        .collect();
    let fused: Vec<f64> = super::argmax(logits.clone()).into_iter().map(f64::from).collect();
    let twin: Vec<f64> = reference::argmax(logits).into_data().convert::<i64>().try_to_vec::<i64>().expect("ids").into_iter().map(|i| i as f64).collect();
    let miss = |a: &[f64]| a.iter().zip(&truth).filter(|(x, y)| x != y).count() as f64 / rows as f64;
    OpCheck {
        op: "argmax",
        case: case.name.to_string(),
        precision: Precision::Torch,
        fused_err: miss(&fused),
        twin_err: miss(&twin),
        fused_vs_twin: fused.iter().zip(&twin).filter(|(x, y)| x != y).count() as f64 / rows as f64,
        finite: fused.len() == rows,
    }
}

/// `greedy_head` (the decode step's last add, final norm, head, argmax, advance and the next
/// step's inputs, the head doubling as the embedding), twice:
/// - `greedy_head`: exact against the host, with a planted winner: head row `a` is the sign
///   of the f64 normalised row (its logit is the row's L1 norm, far above every random row's),
///   and rows `a + 1` and one in another cube's range are copies of it (ties of equal bits: the
///   first index must win, within a cube and across cubes); the next inputs are row `a` and the
///   RoPE rows of the next position;
/// - `greedy_head_bits`: every value equal to the launches it replaces (`add_rms_norm`,
///   `linear`, `argmax_device`, `advance`, `decode_inputs`), on random rows (near-ties among the
///   rounded logits), on rows with a planted rounding tie (below), and with NaN logits and an
///   overflowing winner in the last row (whichever the device's argmax makes of them).
///
/// Qwen3's vocabulary at decode (the pick over thousands of partials on a GPU), odd widths
/// elsewhere.
fn check_greedy_head(ctx: &Ctx, rng: &mut Rng, case: Case, p: Precision) -> Vec<OpCheck> {
    let (vocab, hidden) = match case.name {
        "decode" => (151_936, 128),
        "prefill-odd" | "adversarial" => (5000 + 11, 200 + 13),
        _ => (4096 + 8, 96),
    };
    let (eps, cap) = (1e-6, 12);
    let pos = (case.rows * 5) % (cap - 1);
    let res = ctx.t(rng.vec(hidden, case.scale), [1, hidden]);
    let x = ctx.t(rng.vec(hidden, case.scale), [1, hidden]);
    let gamma = ctx.t(rng.norm_weights(hidden, 1.0, 0.2, case.peak), [hidden]);
    let (hr, xr, gr) = (host(res.clone()), host(x.clone()), host(gamma.clone()));
    let h: Vec<f64> = hr.iter().zip(&xr).map(|(a, b)| a + b).collect();
    let normed = rms_rows(&h, &gr, 1, hidden, eps);
    // The planted winner and its copies.
    let a = (rng.next_u64() as usize) % (vocab / 2);
    let far = a + vocab / 2;
    let mut wv = rng.vec(vocab * hidden, 0.05);
    for k in 0..hidden {
        let s = if normed[k] < 0.0 { -1.0 } else { 1.0 };
        for row in [a, a + 1, far] {
            wv[row * hidden + k] = s;
        }
    }
    let w = ctx.t(wv, [vocab, hidden]);
    // The next step's inputs: the head is the embedding (tied, as Qwen3-0.6B's), RoPE tables
    // of `cap` rows; the fused op writes into NaN buffers (unwritten values show).
    let hd = 8;
    let cos_t = Tensor::<2>::from_data(TensorData::new(rng.vec(cap * hd, 1.0), [cap, hd]), (ctx.device, DType::F32));
    let sin_t = Tensor::<2>::from_data(TensorData::new(rng.vec(cap * hd, 1.0), [cap, hd]), (ctx.device, DType::F32));
    let (ch, sh) = (host(cos_t.clone()), host(sin_t.clone()));
    let run = |w: &Tensor<2>, way: u8| -> Vec<f64> {
        let (st, hist) = (ctx.u32s(vec![7, pos as u32]), ctx.u32s(vec![0; cap]));
        let next = [
            Tensor::<2>::full([1, hidden], f32::NAN, (ctx.device, ctx.dtype)),
            Tensor::<2>::full([1, hd], f32::NAN, (ctx.device, DType::F32)),
            Tensor::<2>::full([1, hd], f32::NAN, (ctx.device, DType::F32)),
        ];
        let tables = [w.clone(), cos_t.clone(), sin_t.clone()];
        let (st, hist, [nx, nc, ns]) = match way {
            0 => super::greedy_head(res.clone(), x.clone(), gamma.clone(), eps, p, w.clone(), st, hist, tables, next),
            1 => reference::greedy_head(res.clone(), x.clone(), gamma.clone(), eps, p, w.clone(), st, hist, tables, next),
            _ => {
                let (_, n) = super::add_rms_norm(res.clone(), x.clone(), gamma.clone(), eps, p);
                let (st, hist) = super::advance(super::argmax_device(super::linear(n, w.clone())), st, hist);
                let (nx, nc, ns) = super::decode_inputs(w.clone(), cos_t.clone(), sin_t.clone(), st.clone());
                (st, hist, [nx, nc, ns])
            }
        };
        let mut out = host_ints(st);
        out.extend(host_ints(hist));
        out.extend(host(nx));
        out.extend(host(nc));
        out.extend(host(ns));
        out
    };
    let mut truth = vec![a as f64, (pos + 1) as f64];
    let mut hist = vec![0.0; cap];
    hist[pos + 1] = a as f64;
    truth.extend(hist);
    // Row `a` of the head as uploaded (signs: exact in every dtype).
    truth.extend((0..hidden).map(|k| if normed[k] < 0.0 { -1.0 } else { 1.0 }));
    truth.extend_from_slice(&ch[(pos + 1) * hd..(pos + 2) * hd]);
    truth.extend_from_slice(&sh[(pos + 1) * hd..(pos + 2) * hd]);
    let wrong = |x: &[f64], y: &[f64]| {
        if x.len() != y.len() {
            return 1.0;
        }
        // (A NaN matches only a NaN: an unwritten output counts as wrong against the truth,
        // which has none; against the launches a NaN row gathered by both is the same value.)
        x.iter().zip(y).filter(|(u, v)| u != v && !(u.is_nan() && v.is_nan())).count() as f64 / y.len() as f64
    };
    let (fused, twin) = (run(&w, 0), run(&w, 1));
    let planted = OpCheck {
        op: "greedy_head",
        case: case.name.to_string(),
        precision: p,
        fused_err: wrong(&fused, &truth),
        twin_err: wrong(&twin, &truth),
        fused_vs_twin: wrong(&fused, &twin),
        finite: fused.len() == truth.len(),
    };
    let w = ctx.t(rng.vec(vocab * hidden, 1.0 / (hidden as f32).sqrt()), [vocab, hidden]);
    let (mut fused, mut launches) = (run(&w, 0), run(&w, 2));
    // A rounding tie: row `b < a` is row `a` with one weight 2^-7 smaller, so its f32 logit is
    // a hair below `a`'s and (but where the two straddle a rounding point) rounds to the same
    // stored value, which makes `b` the first index of the largest: a pick that compared
    // unrounded logits would take `a`.
    let b = a / 2;
    let mut wv = rng.vec(vocab * hidden, 0.05);
    for k in 0..hidden {
        let s = if normed[k] < 0.0 { -1.0 } else { 1.0 };
        wv[a * hidden + k] = s;
        wv[b * hidden + k] = if k == 0 { s * (1.0 - 1.0 / 128.0) } else { s };
    }
    let w = ctx.t(wv, [vocab, hidden]);
    fused.extend(run(&w, 0));
    launches.extend(run(&w, 2));
    // NaN logits (rows of NaN weights, the first cube's first among them) and the last row
    // with a logit past f16's range (+inf there): the kernels' argmax lets no NaN win (the last
    // row does), Burn's, which the twin runs, takes the first NaN as PyTorch's does; either
    // way the op must pick as the launches it replaces do on the same device.
    let mut wv = rng.vec(vocab * hidden, 1.0 / (hidden as f32).sqrt());
    // (Row `vocab - 2` shares the winner's cube: on the plane path, where a plane keeps the
    // best of several rows and the cube scans its planes in order, a unit that let a NaN win
    // would lose the winner; the unit path's tree drops NaN slots either way, so lavapipe
    // cannot show that.)
    for row in [0, vocab / 3, vocab - 2] {
        wv[row * hidden..(row + 1) * hidden].iter_mut().for_each(|v| *v = f32::NAN);
    }
    for k in 0..hidden {
        wv[(vocab - 1) * hidden + k] = if normed[k] < 0.0 { -1.0e4 } else { 1.0e4 };
    }
    let w = ctx.t(wv, [vocab, hidden]);
    fused.extend(run(&w, 0));
    launches.extend(run(&w, 2));
    let diff = wrong(&fused, &launches);
    let bits = OpCheck {
        op: "greedy_head_bits",
        case: case.name.to_string(),
        precision: p,
        fused_err: diff,
        twin_err: diff,
        fused_vs_twin: diff,
        finite: fused.len() == launches.len(),
    };
    vec![planted, bits]
}

fn input(rng: &mut Rng, rows: usize, dim: usize, case: Case) -> Vec<f32> {
    let mut v = rng.vec(rows * dim, case.scale);
    if case.zero_row && rows > 1 {
        v[dim..2 * dim].iter_mut().for_each(|x| *x = 0.0);
    }
    v
}

fn check_add_rms_norm(ctx: &Ctx, rng: &mut Rng, case: Case, p: Precision) -> OpCheck {
    let (rows, dim, eps) = (case.rows, 200 + 13, 1e-6);
    let mut res = input(rng, rows, dim, case);
    let mut x = rng.vec(rows * dim, case.scale);
    if case.zero_row && rows > 1 {
        x[dim..2 * dim].iter_mut().for_each(|v| *v = 0.0);
        res[dim..2 * dim].iter_mut().for_each(|v| *v = 0.0);
    }
    let w = rng.norm_weights(dim, 1.0, 0.2, case.peak);
    let (res, x, w) = (ctx.t(res, [rows, dim]), ctx.t(x, [rows, dim]), ctx.t(w, [dim]));
    let (hr, xr, wr) = (host(res.clone()), host(x.clone()), host(w.clone()));
    let h: Vec<f64> = hr.iter().zip(&xr).map(|(a, b)| a + b).collect();
    let truth = rms_rows(&h, &wr, rows, dim, eps);
    ctx.poison(rows * dim);
    let (_, fused) = super::add_rms_norm(res.clone(), x.clone(), w.clone(), eps, p);
    let (_, twin) = reference::add_rms_norm(res, x, w, eps, p);
    record("add_rms_norm", case.name, p, &host(fused), &host(twin), &truth)
}

fn check_rms_norm_qkv(ctx: &Ctx, rng: &mut Rng, case: Case, p: Precision) -> OpCheck {
    // Odd widths (prefill-odd: nothing is a multiple of a vector or plane width, so the kernel
    // reads scalars) and vector-friendly ones (16-byte weight vectors).
    let hidden = gemv_width(case);
    let (rows, nq, nk, eps) = (case.rows, 64 + 3, 32 + 1, 1e-6);
    let x = input(rng, rows, hidden, case);
    let g = rng.norm_weights(hidden, 1.0, 0.2, case.peak);
    let ws: Vec<Vec<f32>> = [nq, nk, nk].iter().map(|&n| rng.vec(n * hidden, 0.1)).collect();
    let x = ctx.t(x, [rows, hidden]);
    let g = ctx.t(g, [hidden]);
    let [wq, wk, wv] = [0, 1, 2].map(|i| ctx.t(ws[i].clone(), [[nq, nk, nk][i], hidden]));
    let normed = rms_rows(&host(x.clone()), &host(g.clone()), rows, hidden, eps);
    let total = nq + 2 * nk;
    let mut truth = vec![0.0; rows * total];
    let mut col = 0;
    for w in [&wq, &wk, &wv] {
        let n = w.dims()[0];
        let wh = host(w.clone());
        for r in 0..rows {
            for o in 0..n {
                truth[r * total + col + o] = (0..hidden).map(|k| normed[r * hidden + k] * wh[o * hidden + k]).sum();
            }
        }
        col += n;
    }
    ctx.poison(rows * total);
    let fused = super::rms_norm_qkv(x.clone(), g.clone(), wq.clone(), wk.clone(), wv.clone(), eps, p);
    let twin = reference::rms_norm_qkv(x, g, wq, wk, wv, eps, p);
    record("rms_norm_qkv", case.name, p, &host(fused), &host(twin), &truth)
}

fn check_qk_norm_rope(ctx: &Ctx, rng: &mut Rng, case: Case, p: Precision) -> OpCheck {
    let (batch, seq) = if case.rows == 1 { (1, 1) } else { (2, case.rows.div_ceil(2)) };
    let shape = QkShape { batch, seq, heads: 4, kv_heads: 2, head_dim: 48 };
    let (rows, hd, eps) = (batch * seq, shape.head_dim, 1e-6);
    let (nq, nk) = (shape.heads * hd, shape.kv_heads * hd);
    // One [rows, q | k | v] buffer viewed as three, as the model does.
    let qkv = ctx.t(input(rng, rows, nq + 2 * nk, case), [rows, nq + 2 * nk]);
    let qw = ctx.t(rng.norm_weights(hd, 1.0, 0.2, 0.0), [hd]);
    let kw = ctx.t(rng.norm_weights(hd, 1.0, 0.2, case.peak), [hd]);
    let past = 1000 + 17 * case.rows; // positions well past 256 (bf16 angles would fail there)
    let rope = RotaryEmbedding::new(hd, 1.0e6).tables(past, seq, ctx.device);
    let (cos, sin) = (rope.cos, rope.sin);
    let truth = qk_truth(&host(qkv.clone()), &host(qw.clone()), &host(kw.clone()), &host(cos.clone()), &host(sin.clone()), shape, eps).concat();
    let views = |t: &Tensor<2>| (t.clone().narrow(1, 0, nq), t.clone().narrow(1, nq, nk), t.clone().narrow(1, nq + nk, nk));
    let flat = |(q, k, v): (Tensor<4>, Tensor<4>, Tensor<4>)| {
        let mut out = host(q);
        out.extend(host(k));
        out.extend(host(v));
        out
    };
    ctx.poison(rows * nq);
    let (q, k, v) = views(&qkv);
    let fused = flat(super::qk_norm_rope(q, k, v, qw.clone(), kw.clone(), cos.clone(), sin.clone(), shape, eps, p));
    let (q, k, v) = views(&qkv);
    let twin = flat(reference::qk_norm_rope(q, k, v, qw, kw, cos, sin, shape, eps, p));
    record("qk_norm_rope", case.name, p, &fused, &twin, &truth)
}

/// The f64 truth of `qk_norm_rope` from the `[rows, q | k | v]` buffer: `[q, k, v]` in the
/// output layouts `[batch, heads | kv_heads, seq, hd]`.
fn qk_truth(all: &[f64], qwh: &[f64], kwh: &[f64], cosh: &[f64], sinh: &[f64], shape: QkShape, eps: f64) -> [Vec<f64>; 3] {
    let QkShape { batch, seq, heads, kv_heads, head_dim: hd } = shape;
    let (nq, nk) = (heads * hd, kv_heads * hd);
    [(0, heads, Some(qwh)), (nq, kv_heads, Some(kwh)), (nq + nk, kv_heads, None)].map(|(off, heads, w)| {
        let mut out = Vec::new();
        for b in 0..batch {
            for h in 0..heads {
                for t in 0..seq {
                    let row = &all[(b * seq + t) * (nq + 2 * nk) + off + h * hd..][..hd];
                    let Some(w) = w else {
                        out.extend_from_slice(row);
                        continue;
                    };
                    let n = rms_rows(row, w, 1, hd, eps);
                    let half = hd / 2;
                    for i in 0..hd {
                        let rot = if i < half { -n[i + half] } else { n[i - half] };
                        out.push(n[i] * cosh[t * hd + i] + rot * sinh[t * hd + i]);
                    }
                }
            }
        }
        out
    })
}

/// `qk_norm_rope` writing its keys and values in place: into a cache at the decode state's
/// position (`qk_rope_cache`: two sequences, or one decode row) and into shuffled pool slots
/// (`qk_rope_pool`: one batch of rows). The truth is q and the whole cache or pool, random
/// beforehand: the rows not written must keep their values.
fn check_qk_rope_into(ctx: &Ctx, rng: &mut Rng, case: Case, p: Precision) -> Vec<OpCheck> {
    let (heads, kv_heads, hd, eps) = (4, 2, 48, 1e-6);
    let mut out = Vec::new();
    for pool in [false, true] {
        let (batch, seq) = if pool || case.rows == 1 { (1, case.rows) } else { (2, case.rows.div_ceil(2)) };
        let shape = QkShape { batch, seq, heads, kv_heads, head_dim: hd };
        let rows = batch * seq;
        let (nq, nk) = (heads * hd, kv_heads * hd);
        let qkv = ctx.t(input(rng, rows, nq + 2 * nk, case), [rows, nq + 2 * nk]);
        let qw = ctx.t(rng.norm_weights(hd, 1.0, 0.2, 0.0), [hd]);
        let kw = ctx.t(rng.norm_weights(hd, 1.0, 0.2, case.peak), [hd]);
        let pos = 5 + case.rows % 4;
        let rope = RotaryEmbedding::new(hd, 1.0e6).tables(pos, seq, ctx.device);
        let (cos, sin) = (rope.cos, rope.sin);
        let [tq, tk, tv] = qk_truth(&host(qkv.clone()), &host(qw.clone()), &host(kw.clone()), &host(cos.clone()), &host(sin.clone()), shape, eps);
        // Cache [batch, kv, cap, hd] or pool [slots, kv, hd] (as [slots, kv, 1, hd] here).
        let (cap, n_slots) = (pos + seq + 3, 2 * rows + 3);
        let dims = if pool { [n_slots, kv_heads, 1, hd] } else { [batch, kv_heads, cap, hd] };
        let len = dims.iter().product();
        let (k_dev, v_dev) = (ctx.t(rng.vec(len, 1.0), dims), ctx.t(rng.vec(len, 1.0), dims));
        let mut slots: Vec<u32> = (0..n_slots as u32).collect();
        for i in (1..slots.len()).rev() {
            let j = ((rng.unit() + 1.0) * 0.5 * (i + 1) as f32) as usize % (i + 1);
            slots.swap(i, j);
        }
        slots.truncate(rows);
        let (mut kt, mut vt) = (host(k_dev.clone()), host(v_dev.clone()));
        for b in 0..batch {
            for h in 0..kv_heads {
                for t in 0..seq {
                    let src = ((b * kv_heads + h) * seq + t) * hd;
                    let dst = if pool { (slots[b * seq + t] as usize * kv_heads + h) * hd } else { ((b * kv_heads + h) * cap + pos + t) * hd };
                    kt[dst..dst + hd].copy_from_slice(&tk[src..src + hd]);
                    vt[dst..dst + hd].copy_from_slice(&tv[src..src + hd]);
                }
            }
        }
        let truth = [tq, kt, vt].concat();
        let run = |fused: bool| -> Vec<f64> {
            let (q, k, v) = (qkv.clone().narrow(1, 0, nq), qkv.clone().narrow(1, nq, nk), qkv.clone().narrow(1, nq + nk, nk));
            // Fresh copies: the fused op writes in place.
            let (k2, v2) = (k_dev.clone() + 0.0, v_dev.clone() + 0.0);
            let (qw, kw, cos, sin) = (qw.clone(), kw.clone(), cos.clone(), sin.clone());
            let (q, k2, v2) = if pool {
                let (k2, v2, st) = (k2.reshape([n_slots, kv_heads, hd]), v2.reshape([n_slots, kv_heads, hd]), ctx.u32s(slots.clone()));
                let (q, k2, v2) = if fused {
                    super::qk_norm_rope_pool(q, k, v, qw, kw, cos, sin, shape, eps, p, k2, v2, st)
                } else {
                    reference::qk_norm_rope_pool(q, k, v, qw, kw, cos, sin, shape, eps, p, k2, v2, st)
                };
                (q, host(k2), host(v2))
            } else {
                let st = ctx.u32s(vec![1, pos as u32]);
                let (q, k2, v2) = if fused {
                    super::qk_norm_rope_cache(q, k, v, qw, kw, cos, sin, shape, eps, p, k2, v2, st)
                } else {
                    reference::qk_norm_rope_cache(q, k, v, qw, kw, cos, sin, shape, eps, p, k2, v2, st)
                };
                (q, host(k2), host(v2))
            };
            [host(q), k2, v2].concat()
        };
        ctx.poison(rows * nq);
        let (fused, twin) = (run(true), run(false));
        out.push(record(if pool { "qk_rope_pool" } else { "qk_rope_cache" }, case.name, p, &fused, &twin, &truth));
    }
    out
}

fn check_silu_mul(ctx: &Ctx, rng: &mut Rng, case: Case, p: Precision) -> OpCheck {
    let (rows, n) = (case.rows, 300 + 7);
    // SiLU saturates: keep the gate where both branches matter (and |silu * up| < f16's max).
    let scale = case.scale.min(5.0);
    let gate = ctx.t(rng.vec(rows * n, scale), [rows, n]);
    let up = ctx.t(rng.vec(rows * n, case.scale), [rows, n]);
    let truth: Vec<f64> = host(gate.clone())
        .iter()
        .zip(host(up.clone()))
        .map(|(g, u)| g / (1.0 + (-g).exp()) * u)
        .collect();
    ctx.poison(rows * n);
    let fused = super::silu_mul(gate.clone(), up.clone(), p);
    let twin = reference::silu_mul(gate, up, p);
    record("silu_mul", case.name, p, &host(fused), &host(twin), &truth)
}

/// Unit roundoff of a dtype (half an ulp at 1.0).
pub fn unit_roundoff(dtype: DType) -> f64 {
    match dtype {
        DType::BF16 => 2f64.powi(-8),
        DType::F16 => 2f64.powi(-11),
        _ => 2f64.powi(-24),
    }
}

/// Checks whose "twin" is the launches a fused op replaces: they must agree bit for bit.
pub const BITWISE_OPS: [&str; 8] = ["greedy_head_bits", "decode_layers_first_bits", "qkv_rope_bits", "decode_mlp_bits", "decode_mlp_qkv_bits", "decode_mlp_attn_bits", "decode_layers_bits", "decode_layers_pre_bits"];

/// Ops whose f32 mode rounds more than once by design: `decode_layers` over three layers hands
/// each layer's stream and attention output on in the dtype and stores each layer's keys,
/// values and residual sums there, so the last layer's outputs carry three layers' roundings
/// and their propagation, not one (Flex bf16, 2026-11-27, seed 1795814536909225837:
/// `prefill-long` 7.833e-3 against 2u = 7.812e-3, with the twin's error the same to the bit;
/// the later layers' new key rows ~6u off the f64 truth). They keep the other rules (8u, and
/// no further from the truth than the twin plus 2u), not the f32 mode's one-rounding bound.
pub const STACKED_OPS: [&str; 2] = ["decode_layers", "decode_layers_pre"];

/// Ops that only move data, checked for exact equality.
pub const EXACT_OPS: [&str; 3] = ["decode_state", "paged_io", "greedy_head"];

/// The pass rule, the same in tests and `braid-cli check-kernels`:
/// - every output element written and finite;
/// - the fused op within `8 u` of the f64 truth (normwise; `u` the dtype's unit roundoff, floor
///   `1e-6` for f32 where transcendental functions and the f32 accumulation dominate);
/// - the fused op no further from the truth than its twin plus `2 u` (it may differ in summation
///   order only);
/// - f32 mode within `2 u` of the truth: one rounding at the output ([`STACKED_OPS`], several
///   layers in one op, round at every layer and are held to the two rules above);
/// - argmax: exactly the truth's index (the first on ties) in every row; the data-movement ops
///   ([`EXACT_OPS`]): every value exact; [`BITWISE_OPS`]: the fused op equal, every bit, to the
///   launches it replaces (its accuracy is checked under its own name).
pub fn passes(c: &OpCheck, dtype: DType) -> Result<(), String> {
    let u = unit_roundoff(dtype).max(if dtype == DType::F32 { 1e-6 } else { 0.0 });
    if !c.finite {
        return Err("non-finite or unwritten output".into());
    }
    if c.op == "argmax" {
        // Exact: the first index of the maximum, in every row.
        return if c.fused_err == 0.0 { Ok(()) } else { Err(format!("{:.0}% of rows wrong", 100.0 * c.fused_err)) };
    }
    if BITWISE_OPS.contains(&c.op) {
        return if c.fused_vs_twin == 0.0 { Ok(()) } else { Err(format!("differs from the launches it replaces: {:.3e} normwise", c.fused_vs_twin)) };
    }
    if EXACT_OPS.contains(&c.op) {
        // Data movement: every value exactly where it belongs (the error is a fraction of wrong
        // values, which the dtype's roundoff must not excuse).
        return if c.fused_err == 0.0 && c.twin_err == 0.0 { Ok(()) } else { Err(format!("{:.3e} of values wrong", c.fused_err)) };
    }
    if c.fused_err > 8.0 * u {
        return Err(format!("fused error {:.3e} > 8u = {:.3e}", c.fused_err, 8.0 * u));
    }
    if c.fused_err > c.twin_err + 2.0 * u {
        return Err(format!("fused error {:.3e} > twin error {:.3e} + 2u", c.fused_err, c.twin_err));
    }
    // The one-rounding bound is about a 16-bit dtype's rounding points, which f32 mode skips;
    // in f32 data both modes round nowhere but in f32 and a long reduction's own f32 error
    // passes 2u (the 4,201-key attention: 1.09e-6 to 2.23e-6 over 300 seeds, torch mode alike).
    if c.precision == Precision::F32 && dtype != DType::F32 && !STACKED_OPS.contains(&c.op) && c.fused_err > 2.0 * u {
        return Err(format!("f32 mode error {:.3e} > 2u = {:.3e}", c.fused_err, 2.0 * u));
    }
    Ok(())
}

fn check_attention(ctx: &Ctx, rng: &mut Rng, case: Case, p: Precision) -> Vec<OpCheck> {
    // GQA 3:1, head_dim 40 (not a multiple of the block), a cache longer than what is read,
    // its unused rows poisoned with NaN (reading past the keys would show).
    let (b, nh, nkv, hd) = if case.rows == 1 { (1, 6, 2, 40) } else { (2, 3, 1, 40) };
    let t = match case.name {
        "decode" => 1,
        "prefill-long" => case.rows / 2,
        // Within the attention kernel's row limit.
        _ => case.rows.div_ceil(2).min(13),
    };
    // The decode row sits past `ATTENTION_MAX_KEYS` (4,096): decode rows are split over the
    // keys and take any length.
    let past = if case.rows == 1 { 4200 } else { 5 };
    let cap = past + t + 3;
    // Adversarial: Qwen3's pattern, one channel of k scaled by ~96 (k_norm) and the same channel
    // of q divided by it (q_norm compensating), so scores keep their scale. (Uniformly huge q and
    // k would put torch mode's bf16-rounded scores in a chaotic regime where one ulp of a score
    // moves the output by more than the tolerance, for any implementation.)
    let (scale, peak) = if case.peak != 0.0 { (2.0, 96.0) } else { (1.0, 1.0) };
    let mut qv = rng.vec(b * nh * t * hd, scale);
    qv.iter_mut().skip(3).step_by(hd).for_each(|x| *x /= peak);
    let q = ctx.t(qv, [b, nh, t, hd]);
    let mut kv = |s: f32, peak: f32| {
        let mut v = rng.vec(b * nkv * cap * hd, s);
        v.iter_mut().skip(3).step_by(hd).for_each(|x| *x *= peak);
        for bi in 0..b {
            for h in 0..nkv {
                for j in past + t..cap {
                    let o = ((bi * nkv + h) * cap + j) * hd;
                    v[o..o + hd].iter_mut().for_each(|x| *x = f32::NAN);
                }
            }
        }
        ctx.t(v, [b, nkv, cap, hd])
    };
    let (kc, vc) = (kv(scale, peak), kv(case.scale.min(1e3), 1.0));
    let (qh, kh, vh) = (host(q.clone()), host(kc.clone()), host(vc.clone()));
    let mut truth = vec![0.0; b * t * nh * hd];
    for bi in 0..b {
        for h in 0..nh {
            let g = h / (nh / nkv);
            for i in 0..t {
                let n = past + i + 1;
                let qr = &qh[((bi * nh + h) * t + i) * hd..][..hd];
                let o = (bi * t + i) * nh * hd + h * hd;
                host_attend(qr, &kh, &vh, n, |j| ((bi * nkv + g) * cap + j) * hd, &mut truth[o..o + hd]);
            }
        }
    }
    // The model passes the cache sliced to the keys written so far.
    let view = |c: &Tensor<4>| c.clone().narrow(2, 0, past + t);
    ctx.poison(b * t * nh * hd);
    let fused = super::attention(q.clone(), view(&kc), view(&vc), past, p);
    let twin = reference::attention(q.clone(), view(&kc), view(&vc), past, p);
    let main = record("attention", case.name, p, &host(fused), &host(twin), &truth);
    // Graph-ready decode: the last query row of batch 0, its position read from a device-side
    // state, over the whole cache (whose NaN tail it must not read).
    let pos = past + t - 1;
    let state = Tensor::<1, burn::tensor::Int>::from_data(TensorData::new(vec![0u32, pos as u32], [2]), (ctx.device, DType::U32));
    let q1 = q.narrow(0, 0, 1).narrow(2, t - 1, 1);
    let (k1, v1) = (kc.narrow(0, 0, 1), vc.narrow(0, 0, 1));
    ctx.poison(nh * hd);
    let fused = super::attention_at(q1.clone(), k1.clone(), v1.clone(), state.clone(), p);
    let twin = reference::attention_at(q1.clone(), k1, v1, state, p);
    let truth_at = &truth[(t - 1) * nh * hd..t * nh * hd];
    let at = record("attention_at", case.name, p, &host(fused), &host(twin), truth_at);
    // The same graph-ready decode row on a short cache, which the one-pass row kernel serves
    // (`decode_row_max_keys` raised to its capacity for the call): positions past the row's
    // are NaN.
    // Past four rounds of every value unit (up to 102 parts at head_dim 40: 408 keys), so the
    // value loop runs several steps.
    let cap_s = 900 + case.rows % 7;
    let pos_s = cap_s - 4;
    let mut short = |s: f32, peak: f32| {
        let mut v = rng.vec(nkv * cap_s * hd, s);
        v.iter_mut().skip(3).step_by(hd).for_each(|x| *x *= peak);
        for h in 0..nkv {
            v[(h * cap_s + pos_s + 1) * hd..(h + 1) * cap_s * hd].iter_mut().for_each(|x| *x = f32::NAN);
        }
        ctx.t(v, [1, nkv, cap_s, hd])
    };
    let (ks, vs) = (short(scale, peak), short(case.scale.min(1e3), 1.0));
    let (ksh, vsh) = (host(ks.clone()), host(vs.clone()));
    let mut truth_s = vec![0.0; nh * hd];
    for h in 0..nh {
        let g = h / (nh / nkv);
        let qr = &qh[(h * t + t - 1) * hd..][..hd];
        host_attend(qr, &ksh, &vsh, pos_s + 1, |j| (g * cap_s + j) * hd, &mut truth_s[h * hd..(h + 1) * hd]);
    }
    let state_s = Tensor::<1, burn::tensor::Int>::from_data(TensorData::new(vec![0u32, pos_s as u32], [2]), (ctx.device, DType::U32));
    let before = super::decode_row_max_keys();
    super::set_decode_row_max_keys(cap_s);
    ctx.poison(nh * hd);
    // With the L2 prefetch of four other tensors (what the decode step passes: its next
    // weights), which must not change the result; on CUDA the prefetching cubes run.
    let other = || ctx.t(filler(4096 * 8 + 24), [4096 + 3, 8]);
    let fused = host(super::attention_at_prefetch(q1.clone(), ks.clone(), vs.clone(), state_s.clone(), p, [other(), other(), other(), other()]));
    super::set_decode_row_max_keys(before);
    let twin = host(reference::attention_at(q1, ks, vs, state_s, p));
    vec![main, at, record("attention_row", case.name, p, &fused, &twin, &truth_s)]
}

/// A block table for sequences of `needed[r]` blocks each, drawn in a shuffled order
/// (Fisher-Yates on the generator) from a pool of their sum plus `spare` blocks: `(table: [rows,
/// max_blocks], max_blocks, pool blocks)`. Unused entries are block 0, or with `pad_unused` an
/// unused block in one more column than the longest row needs.
fn shuffled_table(rng: &mut Rng, needed: &[usize], spare: usize, pad_unused: bool) -> (Vec<u32>, usize, usize) {
    let n_blocks = needed.iter().sum::<usize>() + spare;
    let mut ids: Vec<usize> = (0..n_blocks).collect();
    for i in (1..n_blocks).rev() {
        let j = ((rng.unit() + 1.0) * 0.5 * (i + 1) as f32) as usize % (i + 1);
        ids.swap(i, j);
    }
    let max_blocks = needed.iter().max().copied().unwrap_or(1).max(1) + usize::from(pad_unused);
    let pad = if pad_unused { ids[n_blocks - 1] as u32 } else { 0 };
    let mut table = vec![pad; needed.len() * max_blocks];
    let mut next = 0;
    for (r, &n) in needed.iter().enumerate() {
        for b in 0..n {
            table[r * max_blocks + b] = ids[next] as u32;
            next += 1;
        }
    }
    (table, max_blocks, n_blocks)
}

/// The tiled prefill attention over a paged pool, in both modes and every tile shape the device
/// fits: four sequences in one batch (a prompt longer than a 64-row tile, a one-token prompt,
/// rows after a cached prefix that cross blocks, one row deep into its sequence) in shuffled
/// blocks of a pool whose unused slots are NaN. head_dim 40 (vectors of 4), 42 for
/// `prefill-odd` (vectors of 2), 8 for `decode` (small enough for the larger tiles to fit a
/// 32 KiB device) and Qwen3's 128 for `prefill-long`.
fn check_paged_prefill(ctx: &Ctx, rng: &mut Rng, case: Case) -> Vec<OpCheck> {
    use super::{PREFILL_TILES, PrefillTiles};
    use burn::tensor::Int;
    let page = super::PAGE_SIZE;
    let hd = match case.name {
        "decode" => 8,
        "prefill-odd" => 42,
        "prefill-long" => 128,
        _ => 40,
    };
    let (nh, nkv) = (6, 2);
    let spans = [
        super::PrefillSpan { len: case.rows.max(70 + case.rows % 5), start: 0 },
        super::PrefillSpan { len: 1, start: 0 },
        super::PrefillSpan { len: 45 + case.rows % 3, start: 83 },
        super::PrefillSpan { len: 1, start: 130 + case.rows % 4 },
    ];
    let rows: usize = spans.iter().map(|s| s.len).sum();
    let needed: Vec<usize> = spans.iter().map(|s| (s.start + s.len).div_ceil(page)).collect();
    // Table rows padded with an unused block (NaN, never to be read) in one more column.
    let (table, max_blocks, n_blocks) = shuffled_table(rng, &needed, 3, true);
    let slot = |r: usize, j: usize| table[r * max_blocks + j / page] as usize * page + j % page;
    let (scale, peak) = if case.peak != 0.0 { (2.0, 96.0) } else { (1.0, 1.0) };
    let n_slots = n_blocks * page;
    let mut pool = |s: f32, peak: f32| {
        let mut v = vec![f32::NAN; n_slots * nkv * hd];
        for (r, span) in spans.iter().enumerate() {
            for j in 0..span.start + span.len {
                let o = slot(r, j) * nkv * hd;
                v[o..o + nkv * hd].copy_from_slice(&rng.vec(nkv * hd, s));
                v[o..o + nkv * hd].iter_mut().skip(3).step_by(hd).for_each(|x| *x *= peak);
            }
        }
        v
    };
    let (kp, vp) = (pool(scale, peak), pool(case.scale.min(1e3), 1.0));
    let mut qv = rng.vec(nh * rows * hd, scale);
    qv.iter_mut().skip(3).step_by(hd).for_each(|x| *x /= peak);
    let k_pool = ctx.t(kp, [n_slots, nkv, hd]);
    let v_pool = ctx.t(vp, [n_slots, nkv, hd]);
    let q = ctx.t(qv, [1, nh, rows, hd]);
    let table_t = Tensor::<2, Int>::from_data(TensorData::new(table.clone(), [spans.len(), max_blocks]), (ctx.device, DType::U32));

    let (qh, kh, vh) = (host(q.clone()), host(k_pool.clone()), host(v_pool.clone()));
    let mut truth = vec![0.0; rows * nh * hd];
    let mut row = 0;
    for (s, span) in spans.iter().enumerate() {
        for i in 0..span.len {
            let r = row + i;
            for h in 0..nh {
                let g = h / (nh / nkv);
                let qr = &qh[(h * rows + r) * hd..][..hd];
                let o = (r * nh + h) * hd;
                host_attend(qr, &kh, &vh, span.start + i + 1, |j| (slot(s, j) * nkv + g) * hd, &mut truth[o..o + hd]);
            }
        }
        row += span.len;
    }
    // The default tile shape, then every other one the device fits (a GPU may default to one
    // this device cannot run). Each record names the shape that ran.
    let default = super::prefill_tiles(ctx.device, hd);
    let shapes: Vec<Option<PrefillTiles>> =
        std::iter::once(None).chain(PREFILL_TILES.iter().filter(|t| Some(**t) != default && super::prefill_tiles_fit(ctx.device, t, hd)).map(|t| Some(*t))).collect();
    let mut out = Vec::new();
    for p in [Precision::Torch, Precision::F32] {
        let twin = host(reference::paged_prefill_attention(q.clone(), k_pool.clone(), v_pool.clone(), table_t.clone(), &spans, p));
        for tiles in &shapes {
            ctx.poison(rows * nh * hd);
            let fused = host(super::paged_prefill_attention_tiled(q.clone(), k_pool.clone(), v_pool.clone(), table_t.clone(), &spans, p, *tiles));
            let mut c = record("prefill_attn", case.name, p, &fused, &twin, &truth);
            if let Some(t) = tiles.or(default) {
                c.case = format!("{}/{}x{}", case.name, t.rows, t.keys);
            }
            out.push(c);
        }
    }
    out
}

/// One query row's attention in f64: `qr` over the `n` keys whose rows start at `row(j)` in
/// `k` and `v` (scaled by `1 / sqrt(hd)`, exact softmax) -> `out: [hd]`.
fn host_attend(qr: &[f64], k: &[f64], v: &[f64], n: usize, row: impl Fn(usize) -> usize, out: &mut [f64]) {
    let hd = qr.len();
    let s: Vec<f64> = (0..n).map(|j| qr.iter().zip(&k[row(j)..row(j) + hd]).map(|(a, c)| a * c).sum::<f64>() / (hd as f64).sqrt()).collect();
    let m = s.iter().cloned().fold(f64::MIN, f64::max);
    let e: Vec<f64> = s.iter().map(|x| (x - m).exp()).collect();
    let z: f64 = e.iter().sum();
    for (d, o) in out.iter_mut().enumerate() {
        *o = (0..n).map(|j| e[j] / z * v[row(j) + d]).sum();
    }
}

/// Host `x [rows, inp] @ w^T`, `w [out, inp]`.
fn host_matmul_t(x: &[f64], w: &[f64], rows: usize, inp: usize, out: usize) -> Vec<f64> {
    let mut y = vec![0.0; rows * out];
    for r in 0..rows {
        for o in 0..out {
            y[r * out + o] = (0..inp).map(|k| x[r * inp + k] * w[o * inp + k]).sum();
        }
    }
    y
}

fn gemv_width(case: Case) -> usize {
    // An odd width (scalar weight reads); Qwen-sized rows at decode and in the long prefill
    // (several 16-byte vectors per lane of a plane, the last round partial: the register-loaded
    // GEMV path); small vector-friendly ones elsewhere. (Not the adversarial case: its 1e4
    // inputs over thousands of products overflow f16, in the twin as in the kernel.)
    match case.name {
        "prefill-odd" => 96 + 5,
        "decode" => 3072 + 64,
        "prefill-long" | "prefill-mma" | "tc-whole-k" | "tc-split-17" => 1024 + 64,
        _ => 128 + 64 * (case.rows % 3),
    }
}

/// The batch-1 decode step's one-launch (add +) norm + QKV + QK-norm + RoPE + KV write, where
/// the device runs it (`ops::qkv_rope_supported`; nothing elsewhere), with and without the
/// residual add: `qkv_rope_cache` = outputs `[h | q | k_cache | v_cache]` against the f64 truth
/// and the twin; `qkv_rope_bits` = the same outputs against the two fused launches it replaces
/// (`add_rms_norm_qkv` or `rms_norm_qkv`, then `qk_norm_rope_cache`), which must be bit for bit
/// equal. One row whatever the case (its sizes and magnitudes are the case's).
fn check_qkv_rope(ctx: &Ctx, rng: &mut Rng, case: Case, p: Precision) -> Vec<OpCheck> {
    use burn::tensor::Int;
    let hidden = gemv_width(case);
    let (heads, kv_heads, eps) = (4, 2, 1e-6);
    // Qwen3's head_dim at decode; a head smaller than a cube's planes x 2 elsewhere.
    let hd = if case.rows == 1 || case.rows > 64 { 128 } else { 40 };
    let probe = ctx.t(vec![0.0; hidden], [1, hidden]);
    if !super::qkv_rope_supported(&probe) {
        return Vec::new();
    }
    let shape = QkShape { batch: 1, seq: 1, heads, kv_heads, head_dim: hd };
    let (nq, nk) = (heads * hd, kv_heads * hd);
    let pos = 3 + case.rows % 5;
    let cap = pos + 4;
    let rope = RotaryEmbedding::new(hd, 1.0e6).tables(pos, 1, ctx.device);
    let (cos, sin) = (rope.cos, rope.sin);
    let state = Tensor::<1, Int>::from_data(TensorData::new(vec![1u32, pos as u32], [2]), (ctx.device, DType::U32));
    let mut out = Vec::new();
    for add in [true, false] {
        let res = ctx.t(input(rng, 1, hidden, case), [1, hidden]);
        let x = ctx.t(rng.vec(hidden, case.scale), [1, hidden]);
        let g = ctx.t(rng.norm_weights(hidden, 1.0, 0.2, case.peak), [hidden]);
        let ws: Vec<Tensor<2>> = [nq, nk, nk].iter().map(|&n| ctx.t(rng.vec(n * hidden, 0.1), [n, hidden])).collect();
        let qw = ctx.t(rng.norm_weights(hd, 1.0, 0.2, 0.0), [hd]);
        let kw = ctx.t(rng.norm_weights(hd, 1.0, 0.2, case.peak), [hd]);
        let dims = [1, kv_heads, cap, hd];
        let len = kv_heads * cap * hd;
        let (k_dev, v_dev) = (ctx.t(rng.vec(len, 1.0), dims), ctx.t(rng.vec(len, 1.0), dims));
        // Truth: h, its norm and projections in f64, then the per-head norm + RoPE.
        let h: Vec<f64> = if add { host(res.clone()).iter().zip(host(x.clone())).map(|(a, b)| a + b).collect() } else { host(x.clone()) };
        let normed = rms_rows(&h, &host(g.clone()), 1, hidden, eps);
        let mut proj = Vec::with_capacity(nq + 2 * nk);
        for w in &ws {
            proj.extend(host_matmul_t(&normed, &host(w.clone()), 1, hidden, w.dims()[0]));
        }
        // The projections are stored in the dtype in both modes (the op's rounding point, which
        // the two launches it replaces share): the truth rounds them too.
        let proj = host(ctx.t(proj.iter().map(|&v| v as f32).collect(), [1, nq + 2 * nk]));
        let [tq, tk, tv] = qk_truth(&proj, &host(qw.clone()), &host(kw.clone()), &host(cos.clone()), &host(sin.clone()), shape, eps);
        let (mut kt, mut vt) = (host(k_dev.clone()), host(v_dev.clone()));
        for hh in 0..kv_heads {
            let dst = (hh * cap + pos) * hd;
            kt[dst..dst + hd].copy_from_slice(&tk[hh * hd..(hh + 1) * hd]);
            vt[dst..dst + hd].copy_from_slice(&tv[hh * hd..(hh + 1) * hd]);
        }
        let truth = [h, tq, kt, vt].concat();
        // 0: the one launch; 1: the reference twin; 2: the two fused launches it replaces.
        let run = |way: usize| -> Vec<f64> {
            // Fresh copies: the ops write the caches in place.
            let (k2, v2) = (k_dev.clone() + 0.0, v_dev.clone() + 0.0);
            let (x, res, g, qw, kw, cos, sin, st) = (x.clone(), res.clone(), g.clone(), qw.clone(), kw.clone(), cos.clone(), sin.clone(), state.clone());
            let [wq, wk, wv] = [ws[0].clone(), ws[1].clone(), ws[2].clone()];
            let (h, q, k2, v2) = match way {
                0 => super::qkv_rope_cache(x, res, add, g, wq, wk, wv, qw, kw, cos, sin, shape, eps, eps, p, k2, v2, st),
                1 => reference::qkv_rope_cache(x, res, add, g, wq, wk, wv, qw, kw, cos, sin, shape, eps, eps, p, k2, v2, st),
                _ => {
                    let (h, qkv) = if add {
                        super::add_rms_norm_qkv(res, x, g, wq, wk, wv, eps, p)
                    } else {
                        (x.clone(), super::rms_norm_qkv(x, g, wq, wk, wv, eps, p))
                    };
                    let (q, k, v) = (qkv.clone().narrow(1, 0, nq), qkv.clone().narrow(1, nq, nk), qkv.narrow(1, nq + nk, nk));
                    let (q, k2, v2) = super::qk_norm_rope_cache(q, k, v, qw, kw, cos, sin, shape, eps, p, k2, v2, st);
                    (h, q, k2, v2)
                }
            };
            [host(h), host(q), host(k2), host(v2)].concat()
        };
        ctx.poison(nq);
        let fused = run(0);
        let (twin, two) = (run(1), run(2));
        let name = if add { format!("{}+add", case.name) } else { case.name.to_string() };
        out.push(record("qkv_rope_cache", &name, p, &fused, &twin, &truth));
        out.push(record("qkv_rope_bits", &name, p, &fused, &two, &truth));
    }
    out
}

/// The batch-1 decode step's persistent o_proj + add + norm + gate/up + SiLU + down launch,
/// where the device runs it (`ops::decode_mlp_supported`; nothing elsewhere): `decode_mlp` =
/// outputs `[h | mlp_out]` against the f64 truth and the twin; `decode_mlp_bits` = the same
/// against the three fused launches it replaces (`linear`, `add_rms_norm_gate_up`, `linear`),
/// bit for bit, plus the barrier counter after the launch (two barriers of every cube). One row
/// whatever the case: Qwen3-0.6B's widths at decode (gate/up features past the grid's planes),
/// odd multiples of a vector elsewhere (partial lane rounds); the case's magnitudes in the
/// residual stream and the norm weights.
fn check_decode_mlp(ctx: &Ctx, rng: &mut Rng, case: Case, p: Precision) -> Vec<OpCheck> {
    use burn::tensor::Int;
    let (q_dim, hidden, inter) = if case.name == "decode" { (2048, 1024, 3072) } else { (1096, 264, 2056) };
    let eps = 1e-6;
    if !super::decode_mlp_supported(&ctx.t(vec![0.0; q_dim], [1, q_dim]), q_dim, hidden, inter) {
        return Vec::new();
    }
    let attn = ctx.t(rng.vec(q_dim, 1.0), [1, q_dim]);
    let res = ctx.t(input(rng, 1, hidden, case), [1, hidden]);
    let g = ctx.t(rng.norm_weights(hidden, 1.0, 0.2, case.peak), [hidden]);
    let wo = ctx.t(rng.vec(hidden * q_dim, 0.02), [hidden, q_dim]);
    let wg = ctx.t(rng.vec(inter * hidden, 0.1), [inter, hidden]);
    let wu = ctx.t(rng.vec(inter * hidden, 0.1), [inter, hidden]);
    let wd = ctx.t(rng.vec(hidden * inter, 0.02), [hidden, inter]);
    // Truth in f64 from the stored inputs.
    let o = host_matmul_t(&host(attn.clone()), &host(wo.clone()), 1, q_dim, hidden);
    let h: Vec<f64> = host(res.clone()).iter().zip(&o).map(|(a, b)| a + b).collect();
    let normed = rms_rows(&h, &host(g.clone()), 1, hidden, eps);
    let gg = host_matmul_t(&normed, &host(wg.clone()), 1, hidden, inter);
    let uu = host_matmul_t(&normed, &host(wu.clone()), 1, hidden, inter);
    let act: Vec<f64> = gg.iter().zip(&uu).map(|(g, u)| g / (1.0 + (-g).exp()) * u).collect();
    let down = host_matmul_t(&act, &host(wd.clone()), 1, inter, hidden);
    let truth = [h, down].concat();
    let words = super::decode_sync_words(hidden, inter, 0, 0, 0);
    let bar = Tensor::<1, Int>::from_data(TensorData::new(vec![0u32; words], [words]), (ctx.device, DType::U32));
    ctx.poison(2 * hidden);
    let (fh, fo) = super::decode_mlp(attn.clone(), res.clone(), g.clone(), wo.clone(), wg.clone(), wu.clone(), wd.clone(), eps, p, &bar);
    let fused = [host(fh), host(fo)].concat();
    let count = bar.into_data().convert::<i64>().try_to_vec::<i64>().expect("int tensor")[0] as f64;
    let (th, to) = reference::decode_mlp(attn.clone(), res.clone(), g.clone(), wo.clone(), wg.clone(), wu.clone(), wd.clone(), eps, p);
    let twin = [host(th), host(to)].concat();
    let o = super::linear(attn, wo);
    let (h3, act3) = super::add_rms_norm_gate_up(res, o, g, wg, wu, eps, p);
    let three = [host(h3), host(super::linear(act3, wd))].concat();
    let two_rounds = f64::from(super::decode_mlp_rounds(false, ctx.dtype) * super::BARRIER_CUBES);
    let with = |v: &[f64], c: f64| -> Vec<f64> { v.iter().copied().chain([c]).collect() };
    vec![
        record("decode_mlp", case.name, p, &fused, &twin, &truth),
        record("decode_mlp_bits", case.name, p, &with(&fused, count), &with(&three, two_rounds), &with(&truth, two_rounds)),
    ]
}

/// The persistent MLP launch running on into the next layer's attention inputs, where the
/// device runs it (`ops::decode_mlp_qkv_supported`; nothing elsewhere): `decode_mlp_qkv` =
/// outputs `[stream | q | k_cache | v_cache]` against the f64 truth and the twin;
/// `decode_mlp_qkv_bits` = the same against `decode_mlp` then `qkv_rope_cache` with the
/// residual add, bit for bit, plus the barrier counter after the launch (its rounds of every
/// cube, `ops::decode_mlp_rounds`). Then the same launch running the next layer's attention too: `decode_mlp_attn` =
/// `[stream | attn | k_cache | v_cache]` against the truth (attention in f64 over the truth's
/// caches) and the twin; `decode_mlp_attn_bits` = against `decode_mlp_qkv` then
/// `attention_at_units` at the launch's cube width, bit for bit. Qwen3-0.6B's widths and heads
/// at decode (the attention over 301 keys: more than a cube's units), odd widths and a small
/// head elsewhere; the case's magnitudes in the residual stream and both norms' weights.
fn check_decode_mlp_qkv(ctx: &Ctx, rng: &mut Rng, case: Case, p: Precision) -> Vec<OpCheck> {
    use burn::tensor::Int;
    let decode = case.name == "decode";
    let (q_dim, hidden, inter) = if decode { (2048, 1024, 3072) } else { (1096, 264, 2056) };
    let (heads, kv_heads, hd) = if decode { (16, 8, 128) } else { (4, 2, 40) };
    let shape = QkShape { batch: 1, seq: 1, heads, kv_heads, head_dim: hd };
    let eps = 1e-6;
    let probe = ctx.t(vec![0.0; q_dim], [1, q_dim]);
    if !super::decode_mlp_qkv_supported(&probe, q_dim, hidden, inter, shape) || !super::qkv_rope_supported(&probe) {
        return Vec::new();
    }
    let attn = ctx.t(rng.vec(q_dim, 1.0), [1, q_dim]);
    let res = ctx.t(input(rng, 1, hidden, case), [1, hidden]);
    let g = ctx.t(rng.norm_weights(hidden, 1.0, 0.2, case.peak), [hidden]);
    let wo = ctx.t(rng.vec(hidden * q_dim, 0.02), [hidden, q_dim]);
    let wg = ctx.t(rng.vec(inter * hidden, 0.1), [inter, hidden]);
    let wu = ctx.t(rng.vec(inter * hidden, 0.1), [inter, hidden]);
    let wd = ctx.t(rng.vec(hidden * inter, 0.02), [hidden, inter]);
    let (nq, nk) = (heads * hd, kv_heads * hd);
    let g_in = ctx.t(rng.norm_weights(hidden, 1.0, 0.2, case.peak), [hidden]);
    let ws: Vec<Tensor<2>> = [nq, nk, nk].iter().map(|&n| ctx.t(rng.vec(n * hidden, 0.1), [n, hidden])).collect();
    let qw = ctx.t(rng.norm_weights(hd, 1.0, 0.2, 0.0), [hd]);
    let kw = ctx.t(rng.norm_weights(hd, 1.0, 0.2, case.peak), [hd]);
    let pos = if decode { 300 } else { 3 + case.rows % 5 };
    let cap = pos + 4;
    let rope = RotaryEmbedding::new(hd, 1.0e6).tables(pos, 1, ctx.device);
    let (cos, sin) = (rope.cos, rope.sin);
    let state = Tensor::<1, Int>::from_data(TensorData::new(vec![1u32, pos as u32], [2]), (ctx.device, DType::U32));
    let dims = [1, kv_heads, cap, hd];
    let len = kv_heads * cap * hd;
    let (k_dev, v_dev) = (ctx.t(rng.vec(len, 1.0), dims), ctx.t(rng.vec(len, 1.0), dims));
    let pf: Vec<Tensor<2>> = (0..4).map(|i| [&wg, &wu, &wd, &wo][i].clone()).collect();
    let (mut kt, mut vt) = (host(k_dev.clone()), host(v_dev.clone()));
    let h = |t: &Tensor<2>| host(t.clone());
    let h1 = |t: &Tensor<1>| host(t.clone());
    let mats = [h(&wo), h(&wg), h(&wu), h(&wd), h(&ws[0]), h(&ws[1]), h(&ws[2])];
    let norms = [h1(&g), h1(&g_in), h1(&qw), h1(&kw)];
    let (stream, tq, ta) = layer_truth(ctx, &h(&attn), &h(&res), &mats, &norms, (&h(&cos), &h(&sin)), shape, (hidden, inter), (&mut kt, &mut vt), (pos, cap), eps);
    let truth_attn = [stream.clone(), ta, kt.clone(), vt.clone()].concat();
    let truth = [stream, tq, kt, vt].concat();
    let words = super::decode_sync_words(hidden, inter, heads, kv_heads, hd);
    let bar = Tensor::<1, Int>::from_data(TensorData::new(vec![0u32; words], [words]), (ctx.device, DType::U32));
    // 0: the one launch; 1: the twin; 2: `decode_mlp` then `qkv_rope_cache`; 3-5: the same with
    // the attention (5: `decode_mlp_qkv` then `attention_at_units`).
    let run = |way: usize| -> Vec<f64> {
        // Fresh copies: the ops write the caches in place.
        let (k2, v2) = (k_dev.clone() + 0.0, v_dev.clone() + 0.0);
        let (attn, res, g, wo, wg, wu, wd) = (attn.clone(), res.clone(), g.clone(), wo.clone(), wg.clone(), wu.clone(), wd.clone());
        let (g_in, qw, kw, cos, sin, st) = (g_in.clone(), qw.clone(), kw.clone(), cos.clone(), sin.clone(), state.clone());
        let [wq, wk, wv] = [ws[0].clone(), ws[1].clone(), ws[2].clone()];
        let (s, q, k2, v2) = match way {
            0 => super::decode_mlp_qkv(attn, res, g, wo, wg, wu, wd, eps, p, &bar, g_in, wq, wk, wv, qw, kw, cos, sin, shape, eps, eps, k2, v2, st),
            1 => reference::decode_mlp_qkv(attn, res, g, wo, wg, wu, wd, eps, p, g_in, wq, wk, wv, qw, kw, cos, sin, shape, eps, eps, k2, v2, st),
            2 => {
                let (h, out) = super::decode_mlp(attn, res, g, wo, wg, wu, wd, eps, p, &bar);
                super::qkv_rope_cache(out, h, true, g_in, wq, wk, wv, qw, kw, cos, sin, shape, eps, eps, p, k2, v2, st)
            }
            3 => {
                let pf = [pf[0].clone(), pf[1].clone(), pf[2].clone(), pf[3].clone()];
                let (s, a, k2, v2) = super::decode_mlp_attn(attn, res, g, wo, wg, wu, wd, eps, p, &bar, g_in, wq, wk, wv, qw, kw, cos, sin, shape, eps, eps, k2, v2, st, pf);
                return [host(s), host(a), host(k2), host(v2)].concat();
            }
            4 => {
                let (s, a, k2, v2) = reference::decode_mlp_attn(attn, res, g, wo, wg, wu, wd, eps, p, g_in, wq, wk, wv, qw, kw, cos, sin, shape, eps, eps, k2, v2, st);
                return [host(s), host(a), host(k2), host(v2)].concat();
            }
            _ => {
                let (s, q, k2, v2) =
                    super::decode_mlp_qkv(attn, res, g, wo, wg, wu, wd, eps, p, &bar, g_in, wq, wk, wv, qw, kw, cos, sin, shape, eps, eps, k2, v2, st.clone());
                let a = super::attention_at_units(q, k2.clone(), v2.clone(), st, p, super::decode_mlp_units());
                return [host(s), host(a), host(k2), host(v2)].concat();
            }
        };
        [host(s), host(q), host(k2), host(v2)].concat()
    };
    ctx.poison(nq + hidden);
    let fused = run(0);
    // The counter after the one launch alone: its rounds (four, three with tagged phases) of
    // every cube.
    let count = barrier_count(bar.clone());
    let (twin, two) = (run(1), run(2));
    let qkv_rounds = f64::from(super::decode_mlp_rounds(true, ctx.dtype) * super::BARRIER_CUBES);
    let with = |v: &[f64], c: f64| -> Vec<f64> { v.iter().copied().chain([c]).collect() };
    ctx.poison(nq + hidden);
    let before = barrier_count(bar.clone());
    let fused_attn = run(3);
    let count_attn = barrier_count(bar.clone()) - before;
    let (twin_attn, two_attn) = (run(4), run(5));
    vec![
        record("decode_mlp_qkv", case.name, p, &fused, &twin, &truth),
        record("decode_mlp_qkv_bits", case.name, p, &with(&fused, count), &with(&two, qkv_rounds), &with(&truth, qkv_rounds)),
        record("decode_mlp_attn", case.name, p, &fused_attn, &twin_attn, &truth_attn),
        record("decode_mlp_attn_bits", case.name, p, &with(&fused_attn, count_attn), &with(&two_attn, qkv_rounds), &with(&truth_attn, qkv_rounds)),
    ]
}

/// `decode_layers` over three layers where the device runs `decode_mlp_attn`'s launches or
/// their fallbacks (Flex; CubeCL devices with plane operations) (their weights stacked, four layers' attention inputs and
/// caches, fresh random ones each, the case's magnitudes in the residual stream and the norms'
/// weights; Qwen3-0.6B's widths and heads at decode over 301 keys, odd widths and small heads
/// elsewhere), from layer 0's attention output and, as `decode_layers_pre`, from its stream
/// (the launch running layer 0's attention inputs and attention first), on every device:
/// `[stream | attn | k_cache | v_cache]` against the twin and the f64 truth ([`layer_truth`]
/// layer by layer, each layer's stream and attention the next one's); where the device runs
/// the one
/// launch (`ops::decode_mlp_qkv_supported`), `decode_layers_bits` (`_pre_bits`) = the same
/// against three `decode_mlp_attn` launches over the layers' rows (after `qkv_rope_cache` and
/// `attention_at_units` for layer 0), bit for bit, plus the barrier counter after the launch
/// (`braid_kernels::decode_mlp::rounds_layers` of every cube).
fn check_decode_layers(ctx: &Ctx, rng: &mut Rng, case: Case, p: Precision) -> Vec<OpCheck> {
    use burn::tensor::Int;
    const LAYERS: usize = 3;
    let decode = case.name == "decode";
    // (A layer's attention output is the next one's o_proj input: q_dim = heads x hd.)
    let (heads, kv_heads, hd) = if decode { (16, 8, 128) } else { (4, 2, 40) };
    let (q_dim, hidden, inter) = if decode { (2048, 1024, 3072) } else { (heads * hd, 264, 2056) };
    let shape = QkShape { batch: 1, seq: 1, heads, kv_heads, head_dim: hd };
    let eps = 1e-6;
    // (On the CubeCL backend the op, and the launches it falls back to, need the one-launch
    // QKV + RoPE: plane operations. Flex runs the twin.)
    let probe = ctx.t(vec![0.0; q_dim], [1, q_dim]);
    if super::on_cube(&probe) && !super::qkv_rope_supported(&probe) {
        return Vec::new();
    }
    // `l` layers' MLPs, `n` layers' attention inputs and caches (iteration `i` runs `i + 1`'s).
    let (l, n) = (LAYERS, LAYERS + 1);
    let (nq, nk) = (heads * hd, kv_heads * hd);
    let attn = ctx.t(rng.vec(q_dim, 1.0), [1, q_dim]);
    let res = ctx.t(input(rng, 1, hidden, case), [1, hidden]);
    let norms = |rng: &mut Rng, len: usize, of: usize, peak: f32| -> Vec<f32> { (0..of).flat_map(|_| rng.norm_weights(len, 1.0, 0.2, peak)).collect() };
    let g = ctx.t(norms(rng, hidden, l, case.peak), [l * hidden]);
    let wo = ctx.t(rng.vec(l * hidden * q_dim, 0.02), [l * hidden, q_dim]);
    let wg = ctx.t(rng.vec(l * inter * hidden, 0.1), [l * inter, hidden]);
    let wu = ctx.t(rng.vec(l * inter * hidden, 0.1), [l * inter, hidden]);
    let wd = ctx.t(rng.vec(l * hidden * inter, 0.02), [l * hidden, inter]);
    let g_in = ctx.t(norms(rng, hidden, n, case.peak), [n * hidden]);
    let ws: Vec<Tensor<2>> = [nq, nk, nk].iter().map(|&w| ctx.t(rng.vec(n * w * hidden, 0.1), [n * w, hidden])).collect();
    let qw = ctx.t(norms(rng, hd, n, 0.0), [n * hd]);
    let kw = ctx.t(norms(rng, hd, n, case.peak), [n * hd]);
    let pos = if decode { 300 } else { 3 + case.rows % 5 };
    let cap = pos + 4;
    let rope = RotaryEmbedding::new(hd, 1.0e6).tables(pos, 1, ctx.device);
    let (cos, sin) = (rope.cos, rope.sin);
    let state = Tensor::<1, Int>::from_data(TensorData::new(vec![1u32, pos as u32], [2]), (ctx.device, DType::U32));
    let dims = [n, kv_heads, cap, hd];
    let len = n * kv_heads * cap * hd;
    let (k_dev, v_dev) = (ctx.t(rng.vec(len, 1.0), dims), ctx.t(rng.vec(len, 1.0), dims));
    let words = super::decode_sync_words(hidden, inter, heads, kv_heads, hd);
    let bar = Tensor::<1, Int>::from_data(TensorData::new(vec![0u32; words], [words]), (ctx.device, DType::U32));
    let pf = || [wo.clone(), wg.clone(), wu.clone(), wd.clone()];
    // The truth, layer by layer on the host (`pre`: layer 0's attention inputs and attention
    // from the stream first).
    let truth = |pre: bool| -> Vec<f64> {
        let (hm, hv) = (|t: &Tensor<2>| host(t.clone()), |t: &Tensor<1>| host(t.clone()));
        let part = |v: &[f64], i: usize, of: usize| v[i * v.len() / of..(i + 1) * v.len() / of].to_vec();
        let (mlp, inputs) = ([hm(&wo), hm(&wg), hm(&wu), hm(&wd)], [hm(&ws[0]), hm(&ws[1]), hm(&ws[2])]);
        let (g_h, inputs_n) = (hv(&g), [hv(&g_in), hv(&qw), hv(&kw)]);
        let (mut kt, mut vt) = (host(k_dev.clone()), host(v_dev.clone()));
        let per = kt.len() / n;
        let rope = (hm(&cos), hm(&sin));
        let (mut x, mut a) = (hm(&res), hm(&attn));
        if pre {
            let w = inputs.clone().map(|v| part(&v, 0, n));
            let nw = inputs_n.clone().map(|v| part(&v, 0, n));
            let (kc, vc) = (&mut kt[..per], &mut vt[..per]);
            a = head_truth(ctx, &x, &w, &nw, (&rope.0, &rope.1), shape, hidden, (kc, vc), (pos, cap), eps).1;
        }
        for i in 0..l {
            let m = mlp.clone().map(|v| part(&v, i, l));
            let w = inputs.clone().map(|v| part(&v, i + 1, n));
            let nw = inputs_n.clone().map(|v| part(&v, i + 1, n));
            let mats = [m[0].clone(), m[1].clone(), m[2].clone(), m[3].clone(), w[0].clone(), w[1].clone(), w[2].clone()];
            let norms = [part(&g_h, i, l), nw[0].clone(), nw[1].clone(), nw[2].clone()];
            let (kc, vc) = (&mut kt[(i + 1) * per..(i + 2) * per], &mut vt[(i + 1) * per..(i + 2) * per]);
            let (stream, _, ta) = layer_truth(ctx, &a, &x, &mats, &norms, (&rope.0, &rope.1), shape, (hidden, inter), (kc, vc), (pos, cap), eps);
            (x, a) = (stream, ta);
        }
        [x, a, kt, vt].concat()
    };
    // 0: the op; 1: the twin; 2: `qkv_rope_cache` + `attention_at_units` (with `pre`), then one
    // `decode_mlp_attn` a layer.
    let run = |way: usize, pre: bool| -> Vec<f64> {
        // Fresh copies: the ops write the caches in place.
        let (k2, v2) = (k_dev.clone() + 0.0, v_dev.clone() + 0.0);
        let (attn, res, g, wo, wg, wu, wd) = (attn.clone(), res.clone(), g.clone(), wo.clone(), wg.clone(), wu.clone(), wd.clone());
        let (g_in, qw, kw, cos, sin, st) = (g_in.clone(), qw.clone(), kw.clone(), cos.clone(), sin.clone(), state.clone());
        let [wq, wk, wv] = [ws[0].clone(), ws[1].clone(), ws[2].clone()];
        let (s, a, k2, v2) = match way {
            0 => super::decode_layers(attn, res, g, wo, wg, wu, wd, eps, p, &bar, g_in, wq, wk, wv, qw, kw, cos, sin, shape, eps, eps, k2, v2, st, pf(), l, pre),
            1 => reference::decode_layers(attn, res, g, wo, wg, wu, wd, eps, p, g_in, wq, wk, wv, qw, kw, cos, sin, shape, eps, eps, k2, v2, st, l, pre),
            _ => {
                let rows2 = |t: &Tensor<2>, i: usize, of: usize| {
                    let w = t.dims()[0] / of;
                    t.clone().slice(i * w..(i + 1) * w)
                };
                let rows1 = |t: &Tensor<1>, i: usize, of: usize| {
                    let w = t.dims()[0] / of;
                    t.clone().slice(i * w..(i + 1) * w)
                };
                let (mut x, mut a, mut kc, mut vc) = (res, attn, k2, v2);
                if pre {
                    let (h, q, k, v) = super::qkv_rope_cache(
                        x.clone(),
                        x,
                        false,
                        rows1(&g_in, 0, n),
                        rows2(&wq, 0, n),
                        rows2(&wk, 0, n),
                        rows2(&wv, 0, n),
                        rows1(&qw, 0, n),
                        rows1(&kw, 0, n),
                        cos.clone(),
                        sin.clone(),
                        shape,
                        eps,
                        eps,
                        p,
                        kc.clone().slice(0..1) + 0.0,
                        vc.clone().slice(0..1) + 0.0,
                        st.clone(),
                    );
                    a = super::attention_at_units(q, k.clone(), v.clone(), st.clone(), p, super::decode_mlp_units());
                    kc = kc.slice_assign(0..1, k);
                    vc = vc.slice_assign(0..1, v);
                    x = h;
                }
                for i in 0..l {
                    let at = i + 1..i + 2;
                    let (h, next, k, v) = super::decode_mlp_attn(
                        a,
                        x,
                        rows1(&g, i, l),
                        rows2(&wo, i, l),
                        rows2(&wg, i, l),
                        rows2(&wu, i, l),
                        rows2(&wd, i, l),
                        eps,
                        p,
                        &bar,
                        rows1(&g_in, i + 1, n),
                        rows2(&wq, i + 1, n),
                        rows2(&wk, i + 1, n),
                        rows2(&wv, i + 1, n),
                        rows1(&qw, i + 1, n),
                        rows1(&kw, i + 1, n),
                        cos.clone(),
                        sin.clone(),
                        shape,
                        eps,
                        eps,
                        kc.clone().slice(at.clone()) + 0.0,
                        vc.clone().slice(at.clone()) + 0.0,
                        st.clone(),
                        pf(),
                    );
                    kc = kc.slice_assign(at.clone(), k);
                    vc = vc.slice_assign(at, v);
                    (x, a) = (h, next);
                }
                (x, a, kc, vc)
            }
        };
        [host(s), host(a), host(k2), host(v2)].concat()
    };
    let mut out = Vec::new();
    for pre in [false, true] {
        let (name, bits) = if pre { ("decode_layers_pre", "decode_layers_pre_bits") } else { ("decode_layers", "decode_layers_bits") };
        let truth = truth(pre);
        ctx.poison(nq + hidden);
        let before = barrier_count(bar.clone());
        let fused = run(0, pre);
        let count = barrier_count(bar.clone()) - before;
        let twin = run(1, pre);
        out.push(record(name, case.name, p, &fused, &twin, &truth));
        if super::decode_mlp_qkv_supported(&probe, q_dim, hidden, inter, shape) {
            // One launch where its phases are tagged (bf16, f16; `pre` takes no barrier), else
            // `qkv_rope_cache` (none) and one launch a layer.
            let options = super::decode_mlp_options();
            let tagged = ctx.dtype.size() == 2;
            let one = super::decode_layers_rounds(&probe, l, shape, pre).filter(|_| tagged && options.tags);
            let launch = one.unwrap_or(l as u32 * super::decode_mlp_rounds(true, ctx.dtype));
            let rounds = f64::from(launch * super::BARRIER_CUBES);
            let layered = run(2, pre);
            let with = |v: &[f64], c: f64| -> Vec<f64> { v.iter().copied().chain([c]).collect() };
            out.push(record(bits, case.name, p, &with(&fused, count), &with(&layered, rounds), &with(&truth, rounds)));
        }
    }
    // `decode_layers_first`: `pre` with no layer (the first layer's attention inputs and
    // attention alone, as the decode step runs them before the launch over the layers), over
    // layer 0's rows of the stacks and of the caches: `[stream | attn | k_cache | v_cache]` of
    // layer 0 against the twin and the truth; `_first_bits`: against `qkv_rope_cache` +
    // `attention_at_units`, with the barrier counter (one round: no barrier, every cube's ticket
    // at the end).
    let one2 = |t: &Tensor<2>, of: usize| t.clone().slice(0..t.dims()[0] / of);
    let one1 = |t: &Tensor<1>, of: usize| t.clone().slice(0..t.dims()[0] / of);
    let first = |way: usize| -> Vec<f64> {
        let (k2, v2) = (k_dev.clone().slice(0..1) + 0.0, v_dev.clone().slice(0..1) + 0.0);
        let (g_in, wq, wk, wv, qw, kw) = (one1(&g_in, n), one2(&ws[0], n), one2(&ws[1], n), one2(&ws[2], n), one1(&qw, n), one1(&kw, n));
        let (s, a, k2, v2) = match way {
            0 => super::decode_layers(
                res.clone(), res.clone(), one1(&g, l), one2(&wo, l), one2(&wg, l), one2(&wu, l), one2(&wd, l), eps, p, &bar,
                g_in, wq, wk, wv, qw, kw, cos.clone(), sin.clone(), shape, eps, eps, k2, v2, state.clone(), pf(), 0, true,
            ),
            1 => reference::decode_layers(
                res.clone(), res.clone(), one1(&g, l), one2(&wo, l), one2(&wg, l), one2(&wu, l), one2(&wd, l), eps, p,
                g_in, wq, wk, wv, qw, kw, cos.clone(), sin.clone(), shape, eps, eps, k2, v2, state.clone(), 0, true,
            ),
            _ => {
                let (h, q, k, v) = super::qkv_rope_cache(res.clone(), res.clone(), false, g_in, wq, wk, wv, qw, kw, cos.clone(), sin.clone(), shape, eps, eps, p, k2, v2, state.clone());
                let a = super::attention_at_units(q, k.clone(), v.clone(), state.clone(), p, super::decode_mlp_units());
                (h, a, k, v)
            }
        };
        [host(s), host(a), host(k2), host(v2)].concat()
    };
    let truth_first = {
        let (hm, hv) = (|t: &Tensor<2>| host(t.clone()), |t: &Tensor<1>| host(t.clone()));
        let part = |v: &[f64], of: usize| v[..v.len() / of].to_vec();
        let w = [part(&hm(&ws[0]), n), part(&hm(&ws[1]), n), part(&hm(&ws[2]), n)];
        let nw = [part(&hv(&g_in), n), part(&hv(&qw), n), part(&hv(&kw), n)];
        let (mut kt, mut vt) = (part(&host(k_dev.clone()), n), part(&host(v_dev.clone()), n));
        let x = hm(&res);
        let a = head_truth(ctx, &x, &w, &nw, (&hm(&cos), &hm(&sin)), shape, hidden, (&mut kt, &mut vt), (pos, cap), eps).1;
        [x, a, kt, vt].concat()
    };
    ctx.poison(nq + hidden);
    let before = barrier_count(bar.clone());
    let fused = first(0);
    let count = barrier_count(bar.clone()) - before;
    let twin = first(1);
    out.push(record("decode_layers_first", case.name, p, &fused, &twin, &truth_first));
    if super::decode_mlp_qkv_supported(&probe, q_dim, hidden, inter, shape) {
        let tagged = ctx.dtype.size() == 2 && super::decode_mlp_options().tags;
        let one = super::decode_layers_rounds(&probe, 0, shape, true).filter(|_| tagged);
        let rounds = f64::from(one.unwrap_or(0) * super::BARRIER_CUBES);
        let launches = first(2);
        let with = |v: &[f64], c: f64| -> Vec<f64> { v.iter().copied().chain([c]).collect() };
        out.push(record("decode_layers_first_bits", case.name, p, &with(&fused, count), &with(&launches, rounds), &with(&truth_first, rounds)));
    }
    out
}

/// The f64 truth of one layer's decode step from its attention output `attn` and stream `res`
/// (host values) through the next layer's attention, as `decode_mlp_attn` computes it: the MLP
/// half, the stream, the next layer's projections (rounded to the dtype, the op's rounding
/// point in both modes), its QK-norm + RoPE, its new key and value written into the host
/// caches `kt`, `vt` (`[kv_heads, cap, hd]`) at `pos`, and its attention over keys `0..=pos`.
/// `mats = [wo, wg, wu, wd, wq, wk, wv]`, `norms = [gamma, gamma_in, q_weight, k_weight]`.
/// Returns `(stream, q, attn)`.
#[allow(clippy::too_many_arguments)]
fn layer_truth(
    ctx: &Ctx,
    attn: &[f64],
    res: &[f64],
    mats: &[Vec<f64>; 7],
    norms: &[Vec<f64>; 4],
    (cos, sin): (&[f64], &[f64]),
    shape: QkShape,
    (hidden, inter): (usize, usize),
    (kt, vt): (&mut [f64], &mut [f64]),
    (pos, cap): (usize, usize),
    eps: f64,
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let [wo, wg, wu, wd, wq, wk, wv] = mats;
    let [g, g_in, qw, kw] = norms;
    let q_dim = attn.len();
    let o = host_matmul_t(attn, wo, 1, q_dim, hidden);
    let h: Vec<f64> = res.iter().zip(&o).map(|(a, b)| a + b).collect();
    let normed = rms_rows(&h, g, 1, hidden, eps);
    let gg = host_matmul_t(&normed, wg, 1, hidden, inter);
    let uu = host_matmul_t(&normed, wu, 1, hidden, inter);
    let act: Vec<f64> = gg.iter().zip(&uu).map(|(g, u)| g / (1.0 + (-g).exp()) * u).collect();
    let down = host_matmul_t(&act, wd, 1, inter, hidden);
    let stream: Vec<f64> = h.iter().zip(&down).map(|(a, b)| a + b).collect();
    let (tq, ta) = head_truth(ctx, &stream, &[wq.clone(), wk.clone(), wv.clone()], &[g_in.clone(), qw.clone(), kw.clone()], (cos, sin), shape, hidden, (kt, vt), (pos, cap), eps);
    (stream, tq, ta)
}

/// [`layer_truth`]'s second half: from the stream, a layer's input norm, projections (`ws = [wq,
/// wk, wv]`, rounded to the dtype), QK-norm + RoPE (`norms = [gamma_in, q_weight, k_weight]`),
/// its new key and value into `kt`, `vt` at `pos`, and its attention: `(q, attn)`.
#[allow(clippy::too_many_arguments)]
fn head_truth(
    ctx: &Ctx,
    stream: &[f64],
    ws: &[Vec<f64>; 3],
    norms: &[Vec<f64>; 3],
    (cos, sin): (&[f64], &[f64]),
    shape: QkShape,
    hidden: usize,
    (kt, vt): (&mut [f64], &mut [f64]),
    (pos, cap): (usize, usize),
    eps: f64,
) -> (Vec<f64>, Vec<f64>) {
    let QkShape { heads, kv_heads, head_dim: hd, .. } = shape;
    let (nq, nk) = (heads * hd, kv_heads * hd);
    let [wq, wk, wv] = ws;
    let [g_in, qw, kw] = norms;
    let normed_in = rms_rows(stream, g_in, 1, hidden, eps);
    let mut proj = Vec::with_capacity(nq + 2 * nk);
    for (w, n) in [(wq, nq), (wk, nk), (wv, nk)] {
        proj.extend(host_matmul_t(&normed_in, w, 1, hidden, n));
    }
    let proj = host(ctx.t(proj.iter().map(|&v| v as f32).collect(), [1, nq + 2 * nk]));
    let [tq, tk, tv] = qk_truth(&proj, qw, kw, cos, sin, shape, eps);
    for hh in 0..kv_heads {
        let dst = (hh * cap + pos) * hd;
        kt[dst..dst + hd].copy_from_slice(&tk[hh * hd..(hh + 1) * hd]);
        vt[dst..dst + hd].copy_from_slice(&tv[hh * hd..(hh + 1) * hd]);
    }
    // The attention: q head h over keys 0..=pos of KV head h / (heads / kv_heads).
    let mut ta = Vec::with_capacity(nq);
    for h in 0..heads {
        let g = h / (heads / kv_heads);
        let q = &tq[h * hd..(h + 1) * hd];
        let row = |t: &[f64], j: usize| -> Vec<f64> { t[(g * cap + j) * hd..][..hd].to_vec() };
        let scores: Vec<f64> = (0..=pos).map(|j| row(kt, j).iter().zip(q).map(|(a, b)| a * b).sum::<f64>() / (hd as f64).sqrt()).collect();
        let m = scores.iter().copied().fold(f64::MIN, f64::max);
        let e: Vec<f64> = scores.iter().map(|s| (s - m).exp()).collect();
        let z: f64 = e.iter().sum();
        for d in 0..hd {
            ta.push((0..=pos).map(|j| e[j] / z * vt[(g * cap + j) * hd + d]).sum());
        }
    }
    (tq, ta)
}

/// The ticket counter of a barrier buffer (cube arrivals since it was zeros).
fn barrier_count(bar: Tensor<1, burn::tensor::Int>) -> f64 {
    bar.into_data().convert::<i64>().try_to_vec::<i64>().expect("int tensor")[0] as f64
}

fn check_linear(ctx: &Ctx, rng: &mut Rng, case: Case, p: Precision) -> OpCheck {
    // (The op has one rounding whatever the mode; both modes run it.)
    // (For the mma kernel: two 128-wide column tiles, the last partial.)
    let out = if case.name == MMA_CASE.name { 128 + 75 } else { 72 + 3 };
    let (rows, inp) = (case.rows, gemv_width(case));
    let x = ctx.t(input(rng, rows, inp, case), [rows, inp]);
    let w = ctx.t(rng.vec(out * inp, 0.1), [out, inp]);
    let truth = host_matmul_t(&host(x.clone()), &host(w.clone()), rows, inp, out);
    ctx.poison(rows * out);
    let fused = super::linear(x.clone(), w.clone());
    let twin = reference::linear(x, w);
    record("linear", case.name, p, &host(fused), &host(twin), &truth)
}

/// The residual-add fusions of the decode step: `add_rms_norm_qkv` (`gate = false`) and
/// `add_rms_norm_gate_up` (`gate = true`): outputs `[h = residual + x | projections]` against
/// the f64 truth and against the twin (the two unfused ops).
fn check_add_then(ctx: &Ctx, rng: &mut Rng, case: Case, p: Precision, gate: bool) -> OpCheck {
    let hidden = gemv_width(case);
    let (rows, eps) = (case.rows, 1e-6);
    let res = ctx.t(input(rng, rows, hidden, case), [rows, hidden]);
    let x = ctx.t(rng.vec(rows * hidden, case.scale), [rows, hidden]);
    let g = ctx.t(rng.norm_weights(hidden, 1.0, 0.2, case.peak), [hidden]);
    let h: Vec<f64> = host(res.clone()).iter().zip(host(x.clone())).map(|(a, b)| a + b).collect();
    let normed = rms_rows(&h, &host(g.clone()), rows, hidden, eps);
    let mut truth = h.clone();
    let flat = |(a, b): (Tensor<2>, Tensor<2>)| -> Vec<f64> { host(a).into_iter().chain(host(b)).collect() };
    let (fused, twin) = if gate {
        let inter = 96 + 1;
        let wg = ctx.t(rng.vec(inter * hidden, 0.1), [inter, hidden]);
        let wu = ctx.t(rng.vec(inter * hidden, 0.1), [inter, hidden]);
        let gg = host_matmul_t(&normed, &host(wg.clone()), rows, hidden, inter);
        let uu = host_matmul_t(&normed, &host(wu.clone()), rows, hidden, inter);
        truth.extend(gg.iter().zip(&uu).map(|(g, u)| g / (1.0 + (-g).exp()) * u));
        ctx.poison(rows * inter);
        let f = super::add_rms_norm_gate_up(res.clone(), x.clone(), g.clone(), wg.clone(), wu.clone(), eps, p);
        let t = reference::add_rms_norm_gate_up(res, x, g, wg, wu, eps, p);
        (flat(f), flat(t))
    } else {
        let (nq, nk) = (64 + 3, 32 + 1);
        let ws: Vec<Tensor<2>> = [nq, nk, nk].iter().map(|&n| ctx.t(rng.vec(n * hidden, 0.1), [n, hidden])).collect();
        let total = nq + 2 * nk;
        let mut proj = vec![0.0; rows * total];
        let mut col = 0;
        for w in &ws {
            let n = w.dims()[0];
            let wh = host(w.clone());
            for r in 0..rows {
                for o in 0..n {
                    proj[r * total + col + o] = (0..hidden).map(|k| normed[r * hidden + k] * wh[o * hidden + k]).sum();
                }
            }
            col += n;
        }
        truth.extend(proj);
        ctx.poison(rows * total);
        let f = super::add_rms_norm_qkv(res.clone(), x.clone(), g.clone(), ws[0].clone(), ws[1].clone(), ws[2].clone(), eps, p);
        let t = reference::add_rms_norm_qkv(res, x, g, ws[0].clone(), ws[1].clone(), ws[2].clone(), eps, p);
        (flat(f), flat(t))
    };
    let name = if gate { "add_rms_norm_gate_up" } else { "add_rms_norm_qkv" };
    record(name, case.name, p, &fused, &twin, &truth)
}

fn check_gate_up_silu(ctx: &Ctx, rng: &mut Rng, case: Case, p: Precision) -> OpCheck {
    let (rows, inp, inter) = (case.rows, gemv_width(case), 96 + 1);
    // Keep gate pre-activations where SiLU has both branches, products within f16's range.
    let x = ctx.t(input(rng, rows, inp, case).into_iter().map(|v| v.clamp(-3.0, 3.0)).collect(), [rows, inp]);
    let wg = ctx.t(rng.vec(inter * inp, 0.1), [inter, inp]);
    let wu = ctx.t(rng.vec(inter * inp, 0.1 * case.scale.min(100.0)), [inter, inp]);
    let xh = host(x.clone());
    let g = host_matmul_t(&xh, &host(wg.clone()), rows, inp, inter);
    let u = host_matmul_t(&xh, &host(wu.clone()), rows, inp, inter);
    let truth: Vec<f64> = g.iter().zip(&u).map(|(g, u)| g / (1.0 + (-g).exp()) * u).collect();
    ctx.poison(rows * inter);
    let fused = super::gate_up_silu(x.clone(), wg.clone(), wu.clone(), p);
    let twin = reference::gate_up_silu(x, wg, wu, p);
    record("gate_up_silu", case.name, p, &host(fused), &host(twin), &truth)
}

/// The paged cache: `paged_io` = `paged_kv_write`, `batch_inputs` and `copy_into` (exact
/// against the host; error = fraction of wrong values) then `paged_attention` in both modes
/// over what `paged_kv_write` wrote, three sequences of
/// different lengths (one key; exactly one block; several blocks and a partial one) in
/// shuffled blocks of a pool whose unused slots are NaN.
fn check_paged(ctx: &Ctx, rng: &mut Rng, case: Case) -> Vec<OpCheck> {
    use burn::tensor::Int;
    let page = super::PAGE_SIZE;
    // head_dim 40 (vectors that do not divide the cube) and, for the decode case, Qwen3's 128.
    let (nh, nkv, hd) = (6, 2, if case.rows == 1 { 128 } else { 40 });
    let lens = [1, page, 2 * page + 37 + case.rows % 5];
    let rows = lens.len();
    let needed: Vec<usize> = lens.iter().map(|n| n.div_ceil(page)).collect();
    let (table, max_blocks, n_blocks) = shuffled_table(rng, &needed, 2, false);
    let slot = |r: usize, j: usize| table[r * max_blocks + j / page] as usize * page + j % page;
    let slots: Vec<u32> = (0..rows).map(|r| slot(r, lens[r] - 1) as u32).collect();
    // Scores keep their scale under the adversarial case (see `check_attention`).
    let (scale, peak) = if case.peak != 0.0 { (2.0, 96.0) } else { (1.0, 1.0) };
    let n_slots = n_blocks * page;
    let mut pool = |s: f32, peak: f32| {
        let mut v = vec![f32::NAN; n_slots * nkv * hd];
        for (r, &n) in lens.iter().enumerate() {
            // Every key but the last (the one `paged_kv_write` adds).
            for j in 0..n - 1 {
                let o = slot(r, j) * nkv * hd;
                v[o..o + nkv * hd].copy_from_slice(&rng.vec(nkv * hd, s));
                v[o..o + nkv * hd].iter_mut().skip(3).step_by(hd).for_each(|x| *x *= peak);
            }
        }
        v
    };
    let (kp, vp) = (pool(scale, peak), pool(case.scale.min(1e3), 1.0));
    let mut new_rows = |s: f32, peak: f32| {
        let mut v = rng.vec(nkv * rows * hd, s);
        v.iter_mut().skip(3).step_by(hd).for_each(|x| *x *= peak);
        v
    };
    let (kn, vn) = (new_rows(scale, peak), new_rows(case.scale.min(1e3), 1.0));
    let mut qv = rng.vec(nh * rows * hd, scale);
    qv.iter_mut().skip(3).step_by(hd).for_each(|x| *x /= peak);
    let k_pool = ctx.t(kp, [n_slots, nkv, hd]);
    let v_pool = ctx.t(vp, [n_slots, nkv, hd]);
    let k_new = ctx.t(kn, [1, nkv, rows, hd]);
    let v_new = ctx.t(vn, [1, nkv, rows, hd]);
    let q = ctx.t(qv, [1, nh, rows, hd]);
    let u32s = |v: Vec<u32>, shape: [usize; 1]| Tensor::<1, Int>::from_data(TensorData::new(v, shape), (ctx.device, DType::U32));
    let slots_t = u32s(slots.clone(), [rows]);
    let table_t = Tensor::<2, Int>::from_data(TensorData::new(table.clone(), [rows, max_blocks]), (ctx.device, DType::U32));
    let lens_t = u32s(lens.iter().map(|&n| n as u32).collect(), [rows]);

    // The write: the host's expectation from the rounded inputs.
    let (mut kt, mut vt) = (host(k_pool.clone()), host(v_pool.clone()));
    let (knh, vnh) = (host(k_new.clone()), host(v_new.clone()));
    for (r, &s) in slots.iter().enumerate() {
        for h in 0..nkv {
            for d in 0..hd {
                kt[(s as usize * nkv + h) * hd + d] = knh[(h * rows + r) * hd + d];
                vt[(s as usize * nkv + h) * hd + d] = vnh[(h * rows + r) * hd + d];
            }
        }
    }
    let write = |fused: bool| {
        // Fresh copies: the fused op writes in place.
        let (k2, v2) = (k_pool.clone() + 0.0, v_pool.clone() + 0.0);
        if fused {
            super::paged_kv_write(k2, v2, k_new.clone(), v_new.clone(), slots_t.clone())
        } else {
            reference::paged_kv_write(k2, v2, k_new.clone(), v_new.clone(), slots_t.clone())
        }
    };
    let ((kf, vf), (kw, vw)) = (write(true), write(false));
    let same = |a: f64, b: f64| a == b || (a.is_nan() && b.is_nan());
    let wrong = |k: Tensor<3>, v: Tensor<3>| {
        let (k, v) = (host(k), host(v));
        let bad = k.iter().zip(&kt).chain(v.iter().zip(&vt)).filter(|(a, b)| !same(**a, **b)).count();
        bad as f64 / (kt.len() + vt.len()) as f64
    };
    // The graph-ready batch inputs (`batch_inputs`: embedding rows of the ids and RoPE rows
    // of the positions) and the in-place input refresh (`copy_into`), exact as well.
    let (vocab, hidden, cap) = (40, 24 + case.rows % 5, 3 * page);
    let embed = ctx.t(rng.vec(vocab * hidden, case.scale), [vocab, hidden]);
    let f32_table = |v: Vec<f32>| Tensor::<2>::from_data(TensorData::new(v, [cap, hd]), (ctx.device, DType::F32));
    let (cos_t, sin_t) = (f32_table(rng.vec(cap * hd, 1.0)), f32_table(rng.vec(cap * hd, 1.0)));
    let ids: Vec<u32> = (0..rows).map(|r| ((r * 17 + case.rows) % vocab) as u32).collect();
    let pos: Vec<u32> = lens.iter().map(|&n| (n - 1) as u32).collect();
    let (eh, ch, sh) = (host(embed.clone()), host(cos_t.clone()), host(sin_t.clone()));
    let mut moved_truth = Vec::new();
    for &i in &ids {
        moved_truth.extend_from_slice(&eh[i as usize * hidden..(i as usize + 1) * hidden]);
    }
    for t in [&ch, &sh] {
        for &p in &pos {
            moved_truth.extend_from_slice(&t[p as usize * hd..(p as usize + 1) * hd]);
        }
    }
    let src: Vec<u32> = (0..2 * rows + 5).map(|i| (i * 7 + case.rows) as u32).collect();
    moved_truth.extend(src.iter().map(|&x| x as f64));
    let moved = |fused: bool| -> Vec<f64> {
        let (idt, post) = (u32s(ids.clone(), [rows]), u32s(pos.clone(), [rows]));
        let (x, c, sn) = if fused {
            super::batch_inputs(embed.clone(), cos_t.clone(), sin_t.clone(), idt, post)
        } else {
            reference::batch_inputs(embed.clone(), cos_t.clone(), sin_t.clone(), idt, post)
        };
        let (dst, srct) = (u32s(vec![0; src.len()], [src.len()]), u32s(src.clone(), [src.len()]));
        let copied = if fused { super::copy_into(dst, srct) } else { reference::copy_into(dst, srct) };
        let mut v = host(x);
        v.extend(host(c));
        v.extend(host(sn));
        v.extend(copied.into_data().convert::<i64>().try_to_vec::<i64>().expect("ints").into_iter().map(|x| x as f64));
        v
    };
    let moved_wrong = |v: Vec<f64>| -> usize {
        if v.len() != moved_truth.len() {
            return moved_truth.len();
        }
        v.iter().zip(&moved_truth).filter(|(a, b)| a != b).count()
    };
    let total = (kt.len() + vt.len() + moved_truth.len()) as f64;
    let pools = (kt.len() + vt.len()) as f64;
    let fw = (wrong(kf.clone(), vf.clone()) * pools + moved_wrong(moved(true)) as f64) / total;
    let tw = (wrong(kw, vw) * pools + moved_wrong(moved(false)) as f64) / total;
    let mut out = vec![OpCheck {
        op: "paged_io",
        case: case.name.to_string(),
        precision: Precision::Torch,
        fused_err: fw,
        twin_err: tw,
        fused_vs_twin: (fw - tw).abs(),
        finite: true,
    }];

    // Attention over what was written, through the block table.
    let qh = host(q.clone());
    let mut truth = vec![0.0; rows * nh * hd];
    for r in 0..rows {
        let n = lens[r];
        for h in 0..nh {
            let g = h / (nh / nkv);
            let qr = &qh[(h * rows + r) * hd..][..hd];
            let o = (r * nh + h) * hd;
            host_attend(qr, &kt, &vt, n, |j| (slot(r, j) * nkv + g) * hd, &mut truth[o..o + hd]);
        }
    }
    for p in [Precision::Torch, Precision::F32] {
        ctx.poison(rows * nh * hd);
        let fused = super::paged_attention(q.clone(), kf.clone(), vf.clone(), table_t.clone(), lens_t.clone(), p);
        let twin = reference::paged_attention(q.clone(), kf.clone(), vf.clone(), table_t.clone(), lens_t.clone(), p);
        out.push(record("paged_attention", case.name, p, &host(fused), &host(twin), &truth));
    }
    out
}

/// A fixed ramp of `n` values (filler data whose contents do not matter).
fn filler(n: usize) -> Vec<f32> {
    (0..n).map(|i| (i % 97) as f32 * 0.01).collect()
}
