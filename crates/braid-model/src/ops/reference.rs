//! The reference twins of the fused ops: the same signatures, written in plain Burn tensor ops,
//! so they run on every backend. `Precision::Torch` reproduces PyTorch's rounding points (and
//! the unfused reference path of `nn`); `Precision::F32` computes in f32 and rounds the result
//! once, as the fused kernels' f32 mode does.

use burn::tensor::{Bool, DType, FloatDType, Int, Tensor, TensorData, activation::{silu, softmax}};

use super::{Precision, PrefillSpan, QkShape};

fn f32_of<const D: usize>(t: Tensor<D>) -> Tensor<D> {
    t.cast(FloatDType::F32)
}

fn to<const D: usize>(t: Tensor<D>, dtype: DType) -> Tensor<D> {
    t.cast(dtype)
}

/// `1 / sqrt(mean(x^2) + eps)` over the last dim, f32 `[.., 1]`.
fn inv_rms<const D: usize>(x_f32: Tensor<D>, eps: f64) -> Tensor<D> {
    (x_f32.square().mean_dim(D - 1) + eps).sqrt().recip()
}

/// RMSNorm over the last dim with a `[dim]` weight, in either precision.
pub fn rms_norm<const D: usize>(x: Tensor<D>, weight: Tensor<1>, eps: f64, precision: Precision) -> Tensor<D> {
    let dtype = x.dtype();
    let mut shape = [1; D];
    shape[D - 1] = weight.dims()[0];
    let x = f32_of(x);
    let normed = x.clone() * inv_rms(x, eps);
    match precision {
        Precision::Torch => to(normed, dtype) * weight.reshape(shape),
        Precision::F32 => to(normed * f32_of(weight).reshape(shape), dtype),
    }
}

/// `x: [rows, in] @ w^T: [in, out]`; f32 mode multiplies in f32 and rounds once.
fn matmul_t(x: Tensor<2>, w: Tensor<2>, dtype: DType, precision: Precision) -> Tensor<2> {
    match precision {
        Precision::Torch => x.matmul(w.transpose()),
        Precision::F32 => to(f32_of(x).matmul(f32_of(w).transpose()), dtype),
    }
}

/// `(residual + x, rmsnorm(residual + x) * weight)`; `residual, x: [rows, dim]`.
pub fn add_rms_norm(
    residual: Tensor<2>,
    x: Tensor<2>,
    weight: Tensor<1>,
    eps: f64,
    precision: Precision,
) -> (Tensor<2>, Tensor<2>) {
    let dtype = x.dtype();
    match precision {
        Precision::Torch => {
            let h = residual + x;
            (h.clone(), rms_norm(h, weight, eps, precision))
        }
        Precision::F32 => {
            let h = f32_of(residual) + f32_of(x);
            let dim = weight.dims()[0];
            let normed = h.clone() * inv_rms(h.clone(), eps) * f32_of(weight).reshape([1, dim]);
            (to(h, dtype), to(normed, dtype))
        }
    }
}

/// `[rmsnorm(x) @ wq^T | rmsnorm(x) @ wk^T | rmsnorm(x) @ wv^T]`: `[rows, nq + nk + nv]`.
pub fn rms_norm_qkv(
    x: Tensor<2>,
    gamma: Tensor<1>,
    wq: Tensor<2>,
    wk: Tensor<2>,
    wv: Tensor<2>,
    eps: f64,
    precision: Precision,
) -> Tensor<2> {
    let dtype = x.dtype();
    let n = match precision {
        Precision::Torch => rms_norm(x, gamma, eps, precision),
        // Keep the normalised rows in f32 for the f32 matmul.
        Precision::F32 => {
            let x = f32_of(x);
            let dim = gamma.dims()[0];
            x.clone() * inv_rms(x, eps) * f32_of(gamma).reshape([1, dim])
        }
    };
    let parts = [wq, wk, wv].map(|w| matmul_t(n.clone(), w, dtype, precision));
    Tensor::cat(parts.to_vec(), 1)
}

/// Per-head RMSNorm of q and k, NeoX RoPE with f32 `cos, sin: [seq, hd]`, head-major layout.
/// `q: [b*t, heads*hd]`, `k, v: [b*t, kv_heads*hd]` ->
/// `(q: [b, heads, t, hd], k: [b, kv_heads, t, hd], v: [b, kv_heads, t, hd])`.
#[allow(clippy::too_many_arguments)]
pub fn qk_norm_rope(
    q: Tensor<2>,
    k: Tensor<2>,
    v: Tensor<2>,
    q_weight: Tensor<1>,
    k_weight: Tensor<1>,
    cos: Tensor<2>,
    sin: Tensor<2>,
    shape: QkShape,
    eps: f64,
    precision: Precision,
) -> (Tensor<4>, Tensor<4>, Tensor<4>) {
    let QkShape { batch: b, seq: t, heads, kv_heads, head_dim: hd } = shape;
    let dtype = q.dtype();
    let rope_torch = |x: Tensor<4>, w: Tensor<1>| -> Tensor<4> {
        let n = rms_norm(x, w, eps, Precision::Torch).swap_dims(1, 2); // [b, h, t, hd]
        let h = n.dims()[1];
        // HF casts cos/sin to the activation dtype and rotates in it.
        let (cos, sin) = (to(cos.clone(), dtype), to(sin.clone(), dtype));
        let cos = cos.reshape([1, 1, t, hd]).expand([b, h, t, hd]);
        let sin = sin.reshape([1, 1, t, hd]).expand([b, h, t, hd]);
        rotate(n, cos, sin)
    };
    match precision {
        Precision::Torch => {
            let q = rope_torch(q.reshape([b, t, heads, hd]), q_weight);
            let k = rope_torch(k.reshape([b, t, kv_heads, hd]), k_weight);
            (q, k, v.reshape([b, t, kv_heads, hd]).swap_dims(1, 2))
        }
        Precision::F32 => {
            let norm_f32 = |x: Tensor<4>, w: Tensor<1>| -> Tensor<4> {
                let x = f32_of(x);
                (x.clone() * inv_rms(x, eps) * f32_of(w).reshape([1, 1, 1, hd])).swap_dims(1, 2)
            };
            let q = norm_f32(q.reshape([b, t, heads, hd]), q_weight);
            let k = norm_f32(k.reshape([b, t, kv_heads, hd]), k_weight);
            let table = |c: Tensor<2>, h: usize| c.reshape([1, 1, t, hd]).expand([b, h, t, hd]);
            let q = rotate(q, table(cos.clone(), heads), table(sin.clone(), heads));
            let k = rotate(k, table(cos, kv_heads), table(sin, kv_heads));
            (to(q, dtype), to(k, dtype), v.reshape([b, t, kv_heads, hd]).swap_dims(1, 2))
        }
    }
}

/// `x * cos + rotate_half(x) * sin` over the last dim, `x: [b, h, t, hd]`.
pub fn rotate(x: Tensor<4>, cos: Tensor<4>, sin: Tensor<4>) -> Tensor<4> {
    let d = x.dims()[3];
    let half = d / 2;
    let x1 = x.clone().narrow(3, 0, half);
    let x2 = x.clone().narrow(3, half, half);
    let rotated = Tensor::cat(vec![x2.neg(), x1], 3);
    x * cos + rotated * sin
}

/// `silu(gate) * up`; torch mode rounds SiLU's output first (PyTorch runs two kernels).
pub fn silu_mul(gate: Tensor<2>, up: Tensor<2>, precision: Precision) -> Tensor<2> {
    let dtype = gate.dtype();
    match precision {
        Precision::Torch => to(silu(f32_of(gate)), dtype) * up,
        Precision::F32 => to(silu(f32_of(gate)) * f32_of(up), dtype),
    }
}

/// The index of each row's largest value (the first on ties): `[rows, vocab]` -> `[rows]`.
/// The device kernels' rule, which `torch.argmax` shares but on NaN: NaN and -inf never win
/// (torch takes the first NaN), and a row with nothing else gives `vocab`, no token (the engine
/// stops with an error on it).
pub fn argmax(logits: Tensor<2>) -> Tensor<1, Int> {
    let [rows, vocab] = logits.dims();
    let x = logits.clone().mask_fill(logits.is_nan(), f32::NEG_INFINITY);
    let none = x.clone().max_dim(1).reshape([rows]).equal_elem(f32::NEG_INFINITY);
    x.argmax(1).reshape([rows]).mask_fill(none, vocab as i64)
}

/// Causal GQA attention: `q: [b, heads, t, hd]` at positions `past..past + t`, `k, v:
/// [b, kv_heads, >= past + t, hd]` (the cache; keys `0..past + t` are used) ->
/// `[b*t, heads*hd]`. Torch mode rounds where PyTorch's eager path does (scores and their
/// scaling in the dtype, softmax in f32 rounded back, probabilities @ v in the dtype).
pub fn attention(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>, past: usize, precision: Precision) -> Tensor<2> {
    let [b, nh, t, hd] = q.dims();
    let [_, nkv, _, _] = k.dims();
    let s = past + t;
    let dtype = q.dtype();
    let k = repeat_kv(k.narrow(2, 0, s), nh / nkv);
    let v = repeat_kv(v.narrow(2, 0, s), nh / nkv);
    let scale = (hd as f64).powf(-0.5);
    let (q, k, v) = match precision {
        Precision::Torch => (q, k, v),
        Precision::F32 => (f32_of(q), f32_of(k), f32_of(v)),
    };
    // PyTorch scales in f32 (its scalar is not rounded to bf16, Burn's `mul_scalar` would round
    // it) and rounds the product to the dtype. [b, nh, t, s]
    let scores = match precision {
        Precision::Torch => to(f32_of(q.matmul(k.swap_dims(2, 3))) * scale, dtype),
        Precision::F32 => q.matmul(k.swap_dims(2, 3)) * scale,
    };
    let scores = if t > 1 {
        // Key j is masked for query row i when j > past + i (built on the device).
        let device = scores.device();
        let rows = Tensor::<1, Int>::arange(past as i64..(past + t) as i64, &device).reshape([t, 1]).expand([t, s]);
        let cols = Tensor::<1, Int>::arange(0..s as i64, &device).reshape([1, s]).expand([t, s]);
        let mask: Tensor<2, Bool> = cols.greater(rows);
        scores.mask_fill(mask.reshape([1, 1, t, s]).expand([b, nh, t, s]), f32::NEG_INFINITY)
    } else {
        scores
    };
    let probs = softmax(f32_of(scores), 3);
    let out = match precision {
        Precision::Torch => to(probs, dtype).matmul(v),
        Precision::F32 => probs.matmul(v),
    };
    to(out.swap_dims(1, 2).reshape([b * t, nh * hd]), dtype)
}

/// `[b, kv_heads, s, d] -> [b, kv_heads * n_rep, s, d]`, each kv head repeated for its group.
fn repeat_kv(x: Tensor<4>, n_rep: usize) -> Tensor<4> {
    if n_rep == 1 {
        return x;
    }
    let [b, h, s, d] = x.dims();
    x.unsqueeze_dim::<5>(2).expand([b, h, n_rep, s, d]).reshape([b, h * n_rep, s, d])
}

/// `x @ w^T`, `w: [out, in]` (PyTorch's layout).
pub fn linear(x: Tensor<2>, w: Tensor<2>) -> Tensor<2> {
    x.matmul(w.transpose())
}

/// `silu(x @ w_gate^T) * (x @ w_up^T)`; torch mode rounds each projection, SiLU's output and the
/// product; f32 mode multiplies in f32 and rounds once.
pub fn gate_up_silu(x: Tensor<2>, w_gate: Tensor<2>, w_up: Tensor<2>, precision: Precision) -> Tensor<2> {
    let dtype = x.dtype();
    match precision {
        Precision::Torch => silu_mul(linear(x.clone(), w_gate), linear(x, w_up), precision),
        Precision::F32 => {
            let x = f32_of(x);
            let g = x.clone().matmul(f32_of(w_gate).transpose());
            let u = x.matmul(f32_of(w_up).transpose());
            to(silu(g) * u, dtype)
        }
    }
}

/// The decode step state `[token, position]` on the host.
fn state_of(state: &Tensor<1, Int>) -> (usize, usize) {
    let v = state.clone().into_data().convert::<i64>().try_to_vec::<i64>().expect("int state");
    (v[0] as usize, v[1] as usize)
}

/// Graph-ready decode inputs: the embedding row of `state[0]` and the RoPE rows of position
/// `state[1]`: `embed: [vocab, hidden]`, f32 `cos_table, sin_table: [capacity, hd]` ->
/// `([1, hidden], [1, hd], [1, hd])`.
pub fn decode_inputs(embed: Tensor<2>, cos_table: Tensor<2>, sin_table: Tensor<2>, state: Tensor<1, Int>) -> (Tensor<2>, Tensor<2>, Tensor<2>) {
    let (token, pos) = state_of(&state);
    // Zeros for a row past the table (a token the fused argmax gives where no logit was finite).
    let row = |t: Tensor<2>, i: usize| if i < t.dims()[0] { t.narrow(0, i, 1) } else { t.narrow(0, 0, 1).zeros_like() };
    (row(embed, token), row(cos_table, pos), row(sin_table, pos))
}

/// Writes `k, v: [b, kv, 1, hd]` into the caches at position `state[1]`.
pub fn kv_write(k_cache: Tensor<4>, v_cache: Tensor<4>, k: Tensor<4>, v: Tensor<4>, state: Tensor<1, Int>) -> (Tensor<4>, Tensor<4>) {
    let (_, pos) = state_of(&state);
    let [b, h, _, d] = k.dims();
    (
        k_cache.slice_assign([0..b, 0..h, pos..pos + 1, 0..d], k),
        v_cache.slice_assign([0..b, 0..h, pos..pos + 1, 0..d], v),
    )
}

/// Twin of `ops::qk_norm_rope_cache`: [`qk_norm_rope`], then the keys and values written to
/// the caches at positions `state[1]..state[1] + t` -> `(q, k_cache, v_cache)`.
#[allow(clippy::too_many_arguments)]
pub fn qk_norm_rope_cache(
    q: Tensor<2>,
    k: Tensor<2>,
    v: Tensor<2>,
    q_weight: Tensor<1>,
    k_weight: Tensor<1>,
    cos: Tensor<2>,
    sin: Tensor<2>,
    shape: QkShape,
    eps: f64,
    precision: Precision,
    k_cache: Tensor<4>,
    v_cache: Tensor<4>,
    state: Tensor<1, Int>,
) -> (Tensor<4>, Tensor<4>, Tensor<4>) {
    let (q, k, v) = qk_norm_rope(q, k, v, q_weight, k_weight, cos, sin, shape, eps, precision);
    let (_, pos) = state_of(&state);
    let [b, h, t, d] = k.dims();
    (q, k_cache.slice_assign([0..b, 0..h, pos..pos + t, 0..d], k), v_cache.slice_assign([0..b, 0..h, pos..pos + t, 0..d], v))
}

/// Twin of `ops::qkv_rope_cache`: the residual add (when `add_residual`; else `h = x`),
/// [`rms_norm_qkv`], then [`qk_norm_rope_cache`] on its q, k and v -> `(h, q, k_cache, v_cache)`.
#[allow(clippy::too_many_arguments)]
pub fn qkv_rope_cache(
    x: Tensor<2>,
    residual: Tensor<2>,
    add_residual: bool,
    gamma: Tensor<1>,
    wq: Tensor<2>,
    wk: Tensor<2>,
    wv: Tensor<2>,
    q_weight: Tensor<1>,
    k_weight: Tensor<1>,
    cos: Tensor<2>,
    sin: Tensor<2>,
    shape: QkShape,
    eps: f64,
    qk_eps: f64,
    precision: Precision,
    k_cache: Tensor<4>,
    v_cache: Tensor<4>,
    state: Tensor<1, Int>,
) -> (Tensor<2>, Tensor<4>, Tensor<4>, Tensor<4>) {
    let (nq, nkv) = (wq.dims()[0], wk.dims()[0]);
    let (h, qkv) = if add_residual {
        add_rms_norm_qkv(residual, x, gamma, wq, wk, wv, eps, precision)
    } else {
        (x.clone(), rms_norm_qkv(x, gamma, wq, wk, wv, eps, precision))
    };
    let (q, k, v) = (qkv.clone().narrow(1, 0, nq), qkv.clone().narrow(1, nq, nkv), qkv.narrow(1, nq + nkv, nkv));
    let (q, k_cache, v_cache) = qk_norm_rope_cache(q, k, v, q_weight, k_weight, cos, sin, shape, qk_eps, precision, k_cache, v_cache, state);
    (h, q, k_cache, v_cache)
}

/// Twin of `ops::qk_norm_rope_pool`: [`qk_norm_rope`] (`batch` 1), then [`paged_kv_write`] ->
/// `(q, k_pool, v_pool)`.
#[allow(clippy::too_many_arguments)]
pub fn qk_norm_rope_pool(
    q: Tensor<2>,
    k: Tensor<2>,
    v: Tensor<2>,
    q_weight: Tensor<1>,
    k_weight: Tensor<1>,
    cos: Tensor<2>,
    sin: Tensor<2>,
    shape: QkShape,
    eps: f64,
    precision: Precision,
    k_pool: Tensor<3>,
    v_pool: Tensor<3>,
    slots: Tensor<1, Int>,
) -> (Tensor<4>, Tensor<3>, Tensor<3>) {
    let (q, k, v) = qk_norm_rope(q, k, v, q_weight, k_weight, cos, sin, shape, eps, precision);
    let (k_pool, v_pool) = paged_kv_write(k_pool, v_pool, k, v, slots);
    (q, k_pool, v_pool)
}

/// Decode attention at position `state[1]` over keys `0..=state[1]` of the caches
/// (`q: [b, heads, 1, hd]`) -> `[b, heads*hd]`.
pub fn attention_at(q: Tensor<4>, k_cache: Tensor<4>, v_cache: Tensor<4>, state: Tensor<1, Int>, precision: Precision) -> Tensor<2> {
    let (_, pos) = state_of(&state);
    attention(q, k_cache.narrow(2, 0, pos + 1), v_cache.narrow(2, 0, pos + 1), pos, precision)
}

/// `state = [ids[0], state[1] + 1]`, `history[state[1] + 1] = ids[0]` (skipped past its end).
pub fn advance(ids: Tensor<1, Int>, state: Tensor<1, Int>, history: Tensor<1, Int>) -> (Tensor<1, Int>, Tensor<1, Int>) {
    let (_, pos) = state_of(&state);
    let next = ids.clone().into_data().convert::<i64>().try_to_vec::<i64>().expect("int ids")[0];
    let dtype = state.dtype();
    let device = state.device();
    let state = Tensor::<1, Int>::from_data(TensorData::new(vec![next, pos as i64 + 1], [2]), (&device, dtype));
    let cap = history.dims()[0];
    #[allow(clippy::single_range_in_vec_init)] // one range: a 1-D slice
    let history = if pos + 1 < cap { history.slice_assign(pos + 1..pos + 2, ids.narrow(0, 0, 1).cast(dtype)) } else { history };
    (state, history)
}

/// The batch-1 decode step's end: [`add_rms_norm`], the head ([`linear`]), [`argmax`],
/// [`advance`] and the next step's [`decode_inputs`] (`residual, x: [1, hidden]`, `w: [vocab,
/// hidden]`, `tables`: embedding and RoPE tables) -> `(state, history, [x, cos, sin])`; `next`
/// (the fused op's in-place outputs) is not used: the inputs are new tensors.
#[allow(clippy::too_many_arguments)]
pub fn greedy_head(
    residual: Tensor<2>,
    x: Tensor<2>,
    gamma: Tensor<1>,
    eps: f64,
    precision: Precision,
    w: Tensor<2>,
    state: Tensor<1, Int>,
    history: Tensor<1, Int>,
    tables: [Tensor<2>; 3],
    _next: [Tensor<2>; 3],
) -> (Tensor<1, Int>, Tensor<1, Int>, [Tensor<2>; 3]) {
    let (_, normed) = add_rms_norm(residual, x, gamma, eps, precision);
    let (state, history) = advance(argmax(linear(normed, w)), state, history);
    let [embed, cos_table, sin_table] = tables;
    let (x, cos, sin) = decode_inputs(embed, cos_table, sin_table, state.clone());
    (state, history, [x, cos, sin])
}

/// A residual add then [`rms_norm_qkv`]: `(h = residual + x, rms_norm_qkv(h))` (the decode
/// step's fusion of a layer's last residual add with the next layer's input norm and QKV).
#[allow(clippy::too_many_arguments)]
pub fn add_rms_norm_qkv(
    residual: Tensor<2>,
    x: Tensor<2>,
    gamma: Tensor<1>,
    wq: Tensor<2>,
    wk: Tensor<2>,
    wv: Tensor<2>,
    eps: f64,
    precision: Precision,
) -> (Tensor<2>, Tensor<2>) {
    let h = residual + x;
    (h.clone(), rms_norm_qkv(h, gamma, wq, wk, wv, eps, precision))
}

/// [`add_rms_norm`] then [`gate_up_silu`] on its normalised output: `(h, act)`.
pub fn add_rms_norm_gate_up(
    residual: Tensor<2>,
    x: Tensor<2>,
    gamma: Tensor<1>,
    w_gate: Tensor<2>,
    w_up: Tensor<2>,
    eps: f64,
    precision: Precision,
) -> (Tensor<2>, Tensor<2>) {
    let (h, n) = add_rms_norm(residual, x, gamma, eps, precision);
    (h, gate_up_silu(n, w_gate, w_up, precision))
}

/// Twin of `ops::decode_mlp`: o_proj, the residual add + post-attention norm + gate/up + SiLU,
/// down_proj: `(h = residual + attn @ wo^T, down(silu(gate(n)) * up(n)))`, `n` the normed `h`.
#[allow(clippy::too_many_arguments)]
pub fn decode_mlp(
    attn: Tensor<2>,
    residual: Tensor<2>,
    gamma: Tensor<1>,
    wo: Tensor<2>,
    w_gate: Tensor<2>,
    w_up: Tensor<2>,
    w_down: Tensor<2>,
    eps: f64,
    precision: Precision,
) -> (Tensor<2>, Tensor<2>) {
    let o = linear(attn, wo);
    let (h, act) = add_rms_norm_gate_up(residual, o, gamma, w_gate, w_up, eps, precision);
    (h, linear(act, w_down))
}

/// Twin of `ops::decode_mlp_qkv`: [`decode_mlp`], then [`qkv_rope_cache`] of its output added to
/// its residual sum, for the next layer: `(stream, q, k_cache, v_cache)`.
#[allow(clippy::too_many_arguments)]
pub fn decode_mlp_qkv(
    attn: Tensor<2>,
    residual: Tensor<2>,
    gamma: Tensor<1>,
    wo: Tensor<2>,
    w_gate: Tensor<2>,
    w_up: Tensor<2>,
    w_down: Tensor<2>,
    eps: f64,
    precision: Precision,
    gamma_in: Tensor<1>,
    wq: Tensor<2>,
    wk: Tensor<2>,
    wv: Tensor<2>,
    q_weight: Tensor<1>,
    k_weight: Tensor<1>,
    cos: Tensor<2>,
    sin: Tensor<2>,
    shape: QkShape,
    eps_in: f64,
    qk_eps: f64,
    k_cache: Tensor<4>,
    v_cache: Tensor<4>,
    state: Tensor<1, Int>,
) -> (Tensor<2>, Tensor<4>, Tensor<4>, Tensor<4>) {
    let (h, out) = decode_mlp(attn, residual, gamma, wo, w_gate, w_up, w_down, eps, precision);
    qkv_rope_cache(out, h, true, gamma_in, wq, wk, wv, q_weight, k_weight, cos, sin, shape, eps_in, qk_eps, precision, k_cache, v_cache, state)
}

/// Twin of `ops::decode_mlp_attn`: [`decode_mlp_qkv`], then [`attention_at`] of the next layer's
/// q over its updated caches: `(stream, attn: [1, heads * hd], k_cache, v_cache)`.
#[allow(clippy::too_many_arguments)]
pub fn decode_mlp_attn(
    attn: Tensor<2>,
    residual: Tensor<2>,
    gamma: Tensor<1>,
    wo: Tensor<2>,
    w_gate: Tensor<2>,
    w_up: Tensor<2>,
    w_down: Tensor<2>,
    eps: f64,
    precision: Precision,
    gamma_in: Tensor<1>,
    wq: Tensor<2>,
    wk: Tensor<2>,
    wv: Tensor<2>,
    q_weight: Tensor<1>,
    k_weight: Tensor<1>,
    cos: Tensor<2>,
    sin: Tensor<2>,
    shape: QkShape,
    eps_in: f64,
    qk_eps: f64,
    k_cache: Tensor<4>,
    v_cache: Tensor<4>,
    state: Tensor<1, Int>,
) -> (Tensor<2>, Tensor<2>, Tensor<4>, Tensor<4>) {
    let (h, q, k, v) = decode_mlp_qkv(
        attn, residual, gamma, wo, w_gate, w_up, w_down, eps, precision, gamma_in, wq, wk, wv, q_weight, k_weight, cos, sin, shape, eps_in, qk_eps, k_cache, v_cache,
        state.clone(),
    );
    let a = attention_at(q, k.clone(), v.clone(), state, precision);
    (h, a, k, v)
}

/// Twin of `ops::decode_layers`: with `pre`, [`qkv_rope_cache`] without the add and
/// [`attention_at`] of the attention inputs' layer 0 first; then [`decode_mlp_attn`] layer by
/// layer over the stacks' layers (rows `l * n..(l + 1) * n` of the MLP's, `(l + 1) * n..(l + 2)
/// * n` of the attention inputs', cache `l + 1`), each layer's stream and attention output the
/// next's inputs: the last layer's `(stream, attn, k_cache, v_cache)`.
#[allow(clippy::too_many_arguments)]
pub fn decode_layers(
    attn: Tensor<2>,
    residual: Tensor<2>,
    gamma: Tensor<1>,
    wo: Tensor<2>,
    w_gate: Tensor<2>,
    w_up: Tensor<2>,
    w_down: Tensor<2>,
    eps: f64,
    precision: Precision,
    gamma_in: Tensor<1>,
    wq: Tensor<2>,
    wk: Tensor<2>,
    wv: Tensor<2>,
    q_weight: Tensor<1>,
    k_weight: Tensor<1>,
    cos: Tensor<2>,
    sin: Tensor<2>,
    shape: QkShape,
    eps_in: f64,
    qk_eps: f64,
    k_cache: Tensor<4>,
    v_cache: Tensor<4>,
    state: Tensor<1, Int>,
    layers: usize,
    pre: bool,
) -> (Tensor<2>, Tensor<2>, Tensor<4>, Tensor<4>) {
    // Layer `l` of a stack of `of` layers.
    let rows2 = |t: &Tensor<2>, l: usize, of: usize| {
        let n = t.dims()[0] / of;
        t.clone().slice(l * n..(l + 1) * n)
    };
    let rows1 = |t: &Tensor<1>, l: usize, of: usize| {
        let n = t.dims()[0] / of;
        t.clone().slice(l * n..(l + 1) * n)
    };
    let heads = layers + 1;
    let (mut x, mut a, mut kc, mut vc) = (residual, attn, k_cache, v_cache);
    if pre {
        let (h, q, k, v) = qkv_rope_cache(
            x.clone(),
            x,
            false,
            rows1(&gamma_in, 0, heads),
            rows2(&wq, 0, heads),
            rows2(&wk, 0, heads),
            rows2(&wv, 0, heads),
            rows1(&q_weight, 0, heads),
            rows1(&k_weight, 0, heads),
            cos.clone(),
            sin.clone(),
            shape,
            eps_in,
            qk_eps,
            precision,
            kc.clone().slice(0..1),
            vc.clone().slice(0..1),
            state.clone(),
        );
        a = attention_at(q, k.clone(), v.clone(), state.clone(), precision);
        kc = kc.slice_assign(0..1, k);
        vc = vc.slice_assign(0..1, v);
        x = h;
    }
    let rows2_mlp = |t: &Tensor<2>, l: usize| rows2(t, l, layers);
    let rows1_mlp = |t: &Tensor<1>, l: usize| rows1(t, l, layers);
    for l in 0..layers {
        let n = l + 1;
        let (h, next, k, v) = decode_mlp_attn(
            a,
            x,
            rows1_mlp(&gamma, l),
            rows2_mlp(&wo, l),
            rows2_mlp(&w_gate, l),
            rows2_mlp(&w_up, l),
            rows2_mlp(&w_down, l),
            eps,
            precision,
            rows1(&gamma_in, n, heads),
            rows2(&wq, n, heads),
            rows2(&wk, n, heads),
            rows2(&wv, n, heads),
            rows1(&q_weight, n, heads),
            rows1(&k_weight, n, heads),
            cos.clone(),
            sin.clone(),
            shape,
            eps_in,
            qk_eps,
            kc.clone().slice(n..n + 1),
            vc.clone().slice(n..n + 1),
            state.clone(),
        );
        kc = kc.slice_assign(n..n + 1, k);
        vc = vc.slice_assign(n..n + 1, v);
        (x, a) = (h, next);
    }
    (x, a, kc, vc)
}

fn host_ints<const D: usize>(t: Tensor<D, Int>) -> Vec<usize> {
    t.into_data().convert::<i64>().try_to_vec::<i64>().expect("int tensor").into_iter().map(|i| i as usize).collect()
}

/// Writes `k, v: [1, kv_heads, rows, hd]` into `k_pool, v_pool: [slots, kv_heads, hd]` at
/// `slots: [rows]`.
pub fn paged_kv_write(k_pool: Tensor<3>, v_pool: Tensor<3>, k: Tensor<4>, v: Tensor<4>, slots: Tensor<1, Int>) -> (Tensor<3>, Tensor<3>) {
    let [_, kv, rows, hd] = k.dims();
    let device = k.device();
    let idx: Vec<i64> = host_ints(slots).into_iter().map(|s| s as i64).collect();
    let idx = Tensor::<1, Int>::from_data(TensorData::new(idx, [rows]), &device);
    let rows_of = |t: Tensor<4>| t.swap_dims(1, 2).reshape([rows, kv, hd]);
    let op = burn::tensor::IndexingUpdateOp::Assign;
    (k_pool.select_assign(0, idx.clone(), rows_of(k), op), v_pool.select_assign(0, idx, rows_of(v), op))
}

/// The keys (or values) of one sequence gathered from a pool `[slots, kv, hd]`: positions
/// `0..n` through its block ids -> `[1, kv, n, hd]`.
pub fn paged_gather(pool: Tensor<3>, blocks: &[usize], n: usize, page: usize) -> Tensor<4> {
    let [_, kv, hd] = pool.dims();
    let ids: Vec<i64> = (0..n).map(|j| (blocks[j / page] * page + j % page) as i64).collect();
    let ids = Tensor::<1, Int>::from_data(TensorData::new(ids, [n]), &pool.device());
    pool.select(0, ids).reshape([1, n, kv, hd]).swap_dims(1, 2)
}

/// Each query row of `q: [1, heads, rows, hd]` over its sequence's keys `0..lens[r]`, gathered
/// through `table: [rows, max_blocks]` -> `[rows, heads * hd]`.
pub fn paged_attention(
    q: Tensor<4>,
    k_pool: Tensor<3>,
    v_pool: Tensor<3>,
    table: Tensor<2, Int>,
    lens: Tensor<1, Int>,
    precision: Precision,
) -> Tensor<2> {
    let [_, _, rows, _] = q.dims();
    let cols = table.dims()[1];
    let table = host_ints(table);
    let lens = host_ints(lens);
    let page = super::PAGE_SIZE;
    let out: Vec<Tensor<2>> = (0..rows)
        .map(|r| {
            let (blocks, n) = (&table[r * cols..(r + 1) * cols], lens[r]);
            let k = paged_gather(k_pool.clone(), blocks, n, page);
            let v = paged_gather(v_pool.clone(), blocks, n, page);
            attention(q.clone().narrow(2, r, 1), k, v, n - 1, precision)
        })
        .collect();
    Tensor::cat(out, 0)
}

/// Each span's rows of `q: [1, heads, rows, hd]` over their sequence's keys `0..start + len`,
/// gathered through its row of `table: [spans, max_blocks]`, causally -> `[rows, heads * hd]`.
pub fn paged_prefill_attention(
    q: Tensor<4>,
    k_pool: Tensor<3>,
    v_pool: Tensor<3>,
    table: Tensor<2, Int>,
    spans: &[PrefillSpan],
    precision: Precision,
) -> Tensor<2> {
    let cols = table.dims()[1];
    let table = host_ints(table);
    let page = super::PAGE_SIZE;
    let mut row = 0;
    let out: Vec<Tensor<2>> = spans
        .iter()
        .enumerate()
        .map(|(s, span)| {
            let blocks = &table[s * cols..(s + 1) * cols];
            let n = span.start + span.len;
            let k = paged_gather(k_pool.clone(), blocks, n, page);
            let v = paged_gather(v_pool.clone(), blocks, n, page);
            let out = attention(q.clone().narrow(2, row, span.len), k, v, span.start, precision);
            row += span.len;
            out
        })
        .collect();
    Tensor::cat(out, 0)
}

/// Batched decode inputs: the embedding rows of `ids` and the RoPE rows of `pos`.
pub fn batch_inputs(embed: Tensor<2>, cos_table: Tensor<2>, sin_table: Tensor<2>, ids: Tensor<1, Int>, pos: Tensor<1, Int>) -> (Tensor<2>, Tensor<2>, Tensor<2>) {
    let device = embed.device();
    let idx = |t: Tensor<1, Int>| {
        let v: Vec<i64> = host_ints(t).into_iter().map(|i| i as i64).collect();
        let n = v.len();
        Tensor::<1, Int>::from_data(TensorData::new(v, [n]), &device)
    };
    let p = idx(pos);
    (embed.select(0, idx(ids)), cos_table.select(0, p.clone()), sin_table.select(0, p))
}

/// `src` (the fused op writes it into `dst`'s buffer; here a new tensor stands for it).
pub fn copy_into(_dst: Tensor<1, Int>, src: Tensor<1, Int>) -> Tensor<1, Int> {
    src
}
