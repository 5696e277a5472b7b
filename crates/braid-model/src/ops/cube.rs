//! The CubeCL backend launches Braid's kernels.

use braid_kernels::{KernelError, TensorHandle};
use burn::backend::Cube;
use burn::backend::ops::FloatTensorOps;
use burn::backend::tensor::{FloatTensor, IntTensor};
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::tensor::CubeTensor;

use super::gemv_rows::{GemvOp, gemv_max_rows, gemv_tuning};
use super::{FusedOps, Precision, PrefillSpan, PrefillTiles, QkShape};

// Past an op's GEMV row limit (`super::gemv_rows`), `linear` and `gate_up_silu` (torch mode)
// run a matmul (and the `silu_mul` kernel), and `rms_norm_qkv` in torch mode the fused RMSNorm
// kernel and a matmul (same rounding points), except in f32 compute: the GEMV kernel reads each
// weight once per 8 rows and suits decode. The matmul is `matmul_nt`: Braid's tensor-core
// kernel where the device has one, else Burn's. f32 mode keeps the kernel at every
// size (its normalised rows never leave f32), and so does f32 compute: Burn's f32 matmul on
// CUDA is TF32-accurate (2.8e-4 from an f64 truth on an H200, 2026-11-25), the kernel 1e-7.

/// Whether a call past the GEMV row limit may leave the kernel for a matmul (see above).
fn matmul_allowed(precision: Precision, dtype: burn::tensor::DType) -> bool {
    precision == Precision::Torch && dtype != burn::tensor::DType::F32
}

/// `[x @ w_0^T | x @ w_1^T | ...]` past the GEMV's rows: Braid's tensor-core kernel
/// (`braid_kernels::tc_linear`) where the device has 16x16x16 cooperative matrices for the
/// dtype and the width suits it, else Burn's (autotuned) matmul.
fn matmul_nt(x: CubeTensor, ws: Vec<CubeTensor>) -> CubeTensor {
    let (like, dtype) = (x.clone(), x.dtype);
    let xh = handle(x.clone());
    if braid_kernels::tc_linear::tc_linear_supported(&like.client, xh.dtype, x.meta.shape()[1]) {
        let ws: Vec<TensorHandle> = ws.into_iter().map(handle).collect();
        let out = launched(braid_kernels::tc_linear::tc_linear_cat(&like.client, xh, &ws));
        return tensor(&like, out, dtype);
    }
    let parts: Vec<CubeTensor> = ws.into_iter().map(|w| Cube::float_matmul(x.clone(), Cube::float_transpose(w))).collect();
    if parts.len() == 1 { parts.into_iter().next().expect("one part") } else { Cube::float_cat(parts, 1) }
}

/// `silu(x @ w_gate^T) * (x @ w_up^T)` in torch mode on Braid's tensor-core kernel
/// (`braid_kernels::tc_linear::tc_gate_up_silu`: both products and the activation in one
/// launch, the arithmetic of the two `tc_linear` products and `silu_mul`), where the device runs
/// `tc_linear` on its cooperative-matrix kernel; `None` elsewhere, where the products would
/// run on its `mma.sync` kernel (large prefills: the fused kernel was measured at 16-256 rows
/// only, 2026-11-27), or with `$BRAID_TC_GATE_UP=0` (comparisons; read once).
fn tc_gate_up_silu(x: &CubeTensor, w_gate: &CubeTensor, w_up: &CubeTensor) -> Option<CubeTensor> {
    use braid_kernels::tc_linear::{takes_mma, tc_linear_supported};
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let on = *ON.get_or_init(|| std::env::var("BRAID_TC_GATE_UP").map_or(true, |s| s.trim() != "0"));
    let dtype = view(x.clone()).dtype;
    let (m, n) = (x.meta.shape()[0], w_gate.meta.shape()[0]);
    if !on || !tc_linear_supported(&x.client, dtype, x.meta.shape()[1]) || takes_mma(&x.client, dtype, m, n) {
        return None;
    }
    let out = launched(braid_kernels::tc_linear::tc_gate_up_silu(&x.client, handle(x.clone()), handle(w_gate.clone()), handle(w_up.clone())));
    Some(tensor(x, out, x.dtype))
}

/// The GEMV row limit of `op` for a call on `x` (lower where `matmul_nt` would take the
/// tensor-core kernel, see `GemvOp::default_limit`).
fn gemv_limit(op: GemvOp, x: &CubeTensor) -> usize {
    let dtype = view(x.clone()).dtype; // (`view`: no copy of a strided `x` for its dtype)
    gemv_max_rows(op, braid_kernels::tc_linear::tc_linear_supported(&x.client, dtype, x.meta.shape()[1]))
}

/// `[n @ wq^T | n @ wk^T | n @ wv^T]` (see [`matmul_nt`]).
fn qkv_matmul(n: CubeTensor, wq: CubeTensor, wk: CubeTensor, wv: CubeTensor) -> CubeTensor {
    matmul_nt(n, vec![wq, wk, wv])
}

/// `qk_norm_rope` with the keys and values written where `into` says; returns q and, for
/// `KvOut::New`, the new k and v. `t`: q, k, v (row views), q_weight, k_weight, cos, sin.
fn qk_norm_rope_into(
    t: [CubeTensor; 7],
    shape: QkShape,
    eps: f64,
    precision: Precision,
    into: braid_kernels::qk_norm_rope::KvOut<'_>,
) -> (CubeTensor, Option<(CubeTensor, CubeTensor)>) {
    let [q, k, v, qw, kw, cos, sin] = t;
    let (like, dtype) = (q.clone(), q.dtype);
    let (q, kv) = launched(braid_kernels::qk_norm_rope::qk_norm_rope_into(
        &like.client,
        view(q),
        view(k),
        view(v),
        handle(qw),
        handle(kw),
        handle(cos),
        handle(sin),
        shape,
        eps as f32,
        precision,
        into,
    ));
    (tensor(&like, q, dtype), kv.map(|(k, v)| (tensor(&like, k, dtype), tensor(&like, v, dtype))))
}

/// `attention_at` with `prefetch` read into L2 beside it (none: plain `attention_at`).
fn attention_at_with(
    q: CubeTensor,
    k_cache: CubeTensor,
    v_cache: CubeTensor,
    state: CubeTensor,
    precision: Precision,
    prefetch: Vec<CubeTensor>,
) -> CubeTensor {
    let (like, dtype) = (q.clone(), q.dtype);
    let prefetch: Vec<TensorHandle> = prefetch.into_iter().map(view).collect();
    let out = launched(braid_kernels::attention::attention_at_prefetch(
        &like.client,
        handle(q),
        view(k_cache),
        view(v_cache),
        TensorHandle::from(state),
        precision,
        &prefetch,
    ));
    tensor(&like, out, dtype)
}

/// Whether `decode_mlp_qkv`'s one launch serves a batch-1 row `attn: [1, q_dim]` with o_proj
/// `wo` and gate `w_gate` and the next layer's heads `shape` on this device.
fn layer_launch_fits(
    attn: &FloatTensor<Cube>,
    wo: &FloatTensor<Cube>,
    w_gate: &FloatTensor<Cube>,
    shape: QkShape,
    options: braid_kernels::decode_mlp::DecodeMlpOptions,
) -> bool {
    let [rows, q_dim] = [attn.meta.shape()[0], attn.meta.shape()[1]];
    let (hidden, inter) = (wo.meta.shape()[0], w_gate.meta.shape()[0]);
    rows == 1 && braid_kernels::decode_mlp::unsupported_qkv(&attn.client, view(attn.clone()).dtype, q_dim, hidden, inter, shape, options).is_none()
}

/// `decode_mlp`'s inputs (the weights contiguous, the barrier buffer as it is).
#[allow(clippy::too_many_arguments)]
fn mlp_args(
    attn: FloatTensor<Cube>,
    residual: FloatTensor<Cube>,
    gamma: FloatTensor<Cube>,
    wo: FloatTensor<Cube>,
    wg: FloatTensor<Cube>,
    wu: FloatTensor<Cube>,
    wd: FloatTensor<Cube>,
    barrier: IntTensor<Cube>,
) -> braid_kernels::decode_mlp::DecodeMlpArgs {
    braid_kernels::decode_mlp::DecodeMlpArgs {
        attn: handle(attn),
        residual: handle(residual),
        gamma: handle(gamma),
        wo: handle(wo),
        wg: handle(wg),
        wu: handle(wu),
        wd: handle(wd),
        bar: TensorHandle::from(barrier),
    }
}

/// A layer's attention inputs past the stream (`qkv_rope::HeadInputs`); the caches are
/// written in place, so they pass as views.
#[allow(clippy::too_many_arguments)]
fn head_inputs(
    gamma: FloatTensor<Cube>,
    wq: FloatTensor<Cube>,
    wk: FloatTensor<Cube>,
    wv: FloatTensor<Cube>,
    q_weight: FloatTensor<Cube>,
    k_weight: FloatTensor<Cube>,
    cos: FloatTensor<Cube>,
    sin: FloatTensor<Cube>,
    k_cache: &FloatTensor<Cube>,
    v_cache: &FloatTensor<Cube>,
    state: IntTensor<Cube>,
) -> braid_kernels::qkv_rope::HeadInputs {
    braid_kernels::qkv_rope::HeadInputs {
        gamma: handle(gamma),
        wq: handle(wq),
        wk: handle(wk),
        wv: handle(wv),
        q_weight: handle(q_weight),
        k_weight: handle(k_weight),
        cos: handle(cos),
        sin: handle(sin),
        k_cache: view(k_cache.clone()),
        v_cache: view(v_cache.clone()),
        state: TensorHandle::from(state),
    }
}

/// The head's spread for [`FusedOps::greedy_head`] on `t`'s device: the candidate
/// `super::greedy_head_choice` names, else the strategy `linear` runs at one row (`gemv_tuning`:
/// plane-1, or `$BRAID_GEMV`'s; `unit` where the device has no plane operations), so that the
/// logits have `linear`'s bits, four features a plane on the plane path; `None` where it is switched off or names no candidate this
/// device runs.
fn greedy_head_config(t: &CubeTensor) -> Option<braid_kernels::gemv::GemvConfig> {
    use braid_kernels::gemv::{GemvConfig, GemvStrategy, Tuning, named_configs};
    let choice = super::greedy_head_choice()?;
    if !choice.is_empty() {
        return named_configs().into_iter().find(|(n, c)| n == choice && c.strategy.supported(&t.client)).map(|(_, c)| c);
    }
    match gemv_tuning(&t.client, &t.device, 1) {
        // Four features a plane: the plane path's dot order (its bits) does not depend on how
        // many; fewer cubes redo the norm and leave fewer partials to pick from (H100,
        // 2026-11-27 20:47, the norm inside: 1,460.9 tok/s, two a plane 1,461.2, against 1,448.7
        // for the four launches it replaces).
        Tuning::Fixed(c) if c.strategy == GemvStrategy::Plane => Some(GemvConfig { strategy: GemvStrategy::Plane, features_per_plane: Some(4) }),
        Tuning::Fixed(c) => Some(c),
        // Only `unit` to tune among without plane operations.
        Tuning::Autotune(_) => Some(GemvConfig { strategy: GemvStrategy::Unit, features_per_plane: None }),
    }
}

/// A kernel's handle from a contiguous copy of `t` (no copy when already contiguous).
fn handle(t: FloatTensor<Cube>) -> TensorHandle {
    TensorHandle::from(into_contiguous(t))
}

/// A row view (`narrow` along columns) as it is: the kernels read strided rows.
fn view(t: FloatTensor<Cube>) -> TensorHandle {
    TensorHandle::from(t)
}

/// Back to a Burn tensor on `like`'s device.
fn tensor(like: &CubeTensor, out: TensorHandle, dtype: burn::tensor::DType) -> CubeTensor {
    CubeTensor::new(like.client.clone(), out.handle, *out.metadata, like.device.clone(), dtype)
}

/// Shapes are checked by the model before it picks a fused op (`KernelPlan::check`); an error
/// here is a bug in Braid, not bad input.
fn launched<T>(r: Result<T, KernelError>) -> T {
    r.unwrap_or_else(|e| panic!("fused kernel refused a launch the plan allowed: {e}"))
}

impl FusedOps for Cube {
    fn add_rms_norm(
        residual: FloatTensor<Self>,
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        eps: f64,
        precision: Precision,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let (like, dtype) = (x.clone(), x.dtype);
        let (h, n) = launched(braid_kernels::add_rms_norm::add_rms_norm(
            &like.client,
            handle(residual),
            handle(x),
            handle(weight),
            eps as f32,
            precision,
        ));
        (tensor(&like, h, dtype), tensor(&like, n, dtype))
    }

    fn rms_norm_qkv(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        wq: FloatTensor<Self>,
        wk: FloatTensor<Self>,
        wv: FloatTensor<Self>,
        eps: f64,
        precision: Precision,
    ) -> FloatTensor<Self> {
        let (like, dtype) = (x.clone(), x.dtype);
        let rows = x.meta.shape()[0];
        if rows > gemv_limit(GemvOp::Qkv, &x) && matmul_allowed(precision, dtype) {
            let n = launched(braid_kernels::add_rms_norm::rms_norm(
                &like.client,
                handle(x),
                handle(gamma),
                eps as f32,
                precision,
            ));
            return qkv_matmul(tensor(&like, n, dtype), wq, wk, wv);
        }
        let tuning = gemv_tuning(&like.client, &like.device, like.meta.shape()[0]);
        let out = launched(braid_kernels::rms_norm_qkv::rms_norm_qkv(
            &like.client,
            handle(x),
            handle(gamma),
            handle(wq),
            handle(wk),
            handle(wv),
            eps as f32,
            precision,
            tuning,
        ));
        tensor(&like, out, dtype)
    }

    fn qk_norm_rope(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        q_weight: FloatTensor<Self>,
        k_weight: FloatTensor<Self>,
        cos: FloatTensor<Self>,
        sin: FloatTensor<Self>,
        shape: QkShape,
        eps: f64,
        precision: Precision,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let (q, kv) = qk_norm_rope_into([q, k, v, q_weight, k_weight, cos, sin], shape, eps, precision, braid_kernels::qk_norm_rope::KvOut::New);
        let (k, v) = kv.expect("new keys and values");
        (q, k, v)
    }

    fn attention(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        past: usize,
        precision: Precision,
    ) -> FloatTensor<Self> {
        let (like, dtype) = (q.clone(), q.dtype);
        // The kernel takes prefills too (up to `attention::MAX_KEYS` keys; the layer's dispatch
        // sends longer ones to the reference path): on the throughput workload's prefills
        // (sequences of 100-1,024 tokens) Burn's matmuls took 90.9 ms per layer and step, the
        // kernel 12.7 ms (H200, 2026-11-26, `BRAID_PROFILE`).
        let out = launched(braid_kernels::attention::attention(&like.client, handle(q), view(k), view(v), past, precision));
        tensor(&like, out, dtype)
    }

    fn linear(x: FloatTensor<Self>, w: FloatTensor<Self>) -> FloatTensor<Self> {
        if x.meta.shape()[0] > gemv_limit(GemvOp::for_linear(w.meta.shape()[0]), &x) && x.dtype != burn::tensor::DType::F32 {
            return matmul_nt(x, vec![w]);
        }
        let (like, dtype) = (x.clone(), x.dtype);
        let tuning = gemv_tuning(&like.client, &like.device, like.meta.shape()[0]);
        let out = launched(braid_kernels::gemv::linear(&like.client, handle(x), handle(w), tuning));
        tensor(&like, out, dtype)
    }

    fn gate_up_silu(
        x: FloatTensor<Self>,
        w_gate: FloatTensor<Self>,
        w_up: FloatTensor<Self>,
        precision: Precision,
    ) -> FloatTensor<Self> {
        if x.meta.shape()[0] > gemv_limit(GemvOp::GateUp, &x) && matmul_allowed(precision, x.dtype) {
            if let Some(out) = tc_gate_up_silu(&x, &w_gate, &w_up) {
                return out;
            }
            let gate = matmul_nt(x.clone(), vec![w_gate]);
            let up = matmul_nt(x, vec![w_up]);
            return Self::silu_mul(gate, up, precision);
        }
        let (like, dtype) = (x.clone(), x.dtype);
        let tuning = gemv_tuning(&like.client, &like.device, like.meta.shape()[0]);
        let out = launched(braid_kernels::gemv::gate_up_silu(
            &like.client,
            handle(x),
            handle(w_gate),
            handle(w_up),
            precision,
            tuning,
        ));
        tensor(&like, out, dtype)
    }

    fn argmax(logits: FloatTensor<Self>) -> IntTensor<Self> {
        let like = logits.clone();
        let out = launched(match super::argmax_slices() {
            Some(slices) => braid_kernels::argmax::argmax_in(&like.client, handle(logits), slices),
            None => braid_kernels::argmax::argmax(&like.client, handle(logits)),
        });
        tensor(&like, out, burn::tensor::DType::U32)
    }

    fn qk_norm_rope_cache(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        q_weight: FloatTensor<Self>,
        k_weight: FloatTensor<Self>,
        cos: FloatTensor<Self>,
        sin: FloatTensor<Self>,
        shape: QkShape,
        eps: f64,
        precision: Precision,
        k_cache: FloatTensor<Self>,
        v_cache: FloatTensor<Self>,
        state: IntTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let (kh, vh, state) = (view(k_cache.clone()), view(v_cache.clone()), TensorHandle::from(state));
        let into = braid_kernels::qk_norm_rope::KvOut::Cache { k: &kh, v: &vh, state: &state };
        (qk_norm_rope_into([q, k, v, q_weight, k_weight, cos, sin], shape, eps, precision, into).0, k_cache, v_cache)
    }

    fn qkv_rope_cache(
        x: FloatTensor<Self>,
        residual: FloatTensor<Self>,
        add_residual: bool,
        gamma: FloatTensor<Self>,
        wq: FloatTensor<Self>,
        wk: FloatTensor<Self>,
        wv: FloatTensor<Self>,
        q_weight: FloatTensor<Self>,
        k_weight: FloatTensor<Self>,
        cos: FloatTensor<Self>,
        sin: FloatTensor<Self>,
        shape: QkShape,
        eps: f64,
        qk_eps: f64,
        precision: Precision,
        k_cache: FloatTensor<Self>,
        v_cache: FloatTensor<Self>,
        state: IntTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let (like, dtype) = (x.clone(), x.dtype);
        let args = braid_kernels::qkv_rope::QkvRopeArgs {
            x: handle(x.clone()),
            residual: add_residual.then(|| handle(residual)),
            head: head_inputs(gamma, wq, wk, wv, q_weight, k_weight, cos, sin, &k_cache, &v_cache, state),
        };
        let (sum, q) = launched(braid_kernels::qkv_rope::qkv_rope_cache(
            &like.client,
            args,
            shape,
            eps as f32,
            qk_eps as f32,
            precision,
            qkv_rope_block(),
            qkv_rope_ahead(),
        ));
        let h = sum.map_or(x, |s| tensor(&like, s, dtype));
        (h, tensor(&like, q, dtype), k_cache, v_cache)
    }

    fn qk_norm_rope_pool(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        q_weight: FloatTensor<Self>,
        k_weight: FloatTensor<Self>,
        cos: FloatTensor<Self>,
        sin: FloatTensor<Self>,
        shape: QkShape,
        eps: f64,
        precision: Precision,
        k_pool: FloatTensor<Self>,
        v_pool: FloatTensor<Self>,
        slots: IntTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let (kh, vh, slots) = (view(k_pool.clone()), view(v_pool.clone()), TensorHandle::from(into_contiguous(slots)));
        let into = braid_kernels::qk_norm_rope::KvOut::Pool { k: &kh, v: &vh, slots: &slots };
        (qk_norm_rope_into([q, k, v, q_weight, k_weight, cos, sin], shape, eps, precision, into).0, k_pool, v_pool)
    }

    fn silu_mul(gate: FloatTensor<Self>, up: FloatTensor<Self>, precision: Precision) -> FloatTensor<Self> {
        let (like, dtype) = (gate.clone(), gate.dtype);
        let out = launched(braid_kernels::silu_mul::silu_mul(&like.client, handle(gate), handle(up), precision));
        tensor(&like, out, dtype)
    }

    fn decode_inputs(
        embed: FloatTensor<Self>,
        cos_table: FloatTensor<Self>,
        sin_table: FloatTensor<Self>,
        state: IntTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let (like, dtype) = (embed.clone(), embed.dtype);
        let (x, c, s) = launched(braid_kernels::decode::inputs(
            &like.client,
            handle(embed),
            handle(cos_table),
            handle(sin_table),
            TensorHandle::from(state),
        ));
        let f32_t = burn::tensor::DType::F32;
        (tensor(&like, x, dtype), tensor(&like, c, f32_t), tensor(&like, s, f32_t))
    }

    fn kv_write(
        k_cache: FloatTensor<Self>,
        v_cache: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        state: IntTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let (kh, vh) = (view(k_cache.clone()), view(v_cache.clone()));
        let client = k_cache.client.clone();
        launched(braid_kernels::decode::kv_write(&client, &kh, &vh, handle(k), handle(v), TensorHandle::from(state)));
        (k_cache, v_cache)
    }

    fn attention_at(
        q: FloatTensor<Self>,
        k_cache: FloatTensor<Self>,
        v_cache: FloatTensor<Self>,
        state: IntTensor<Self>,
        precision: Precision,
    ) -> FloatTensor<Self> {
        attention_at_with(q, k_cache, v_cache, state, precision, vec![])
    }

    fn attention_at_prefetch(
        q: FloatTensor<Self>,
        k_cache: FloatTensor<Self>,
        v_cache: FloatTensor<Self>,
        state: IntTensor<Self>,
        precision: Precision,
        w0: FloatTensor<Self>,
        w1: FloatTensor<Self>,
        w2: FloatTensor<Self>,
        w3: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        attention_at_with(q, k_cache, v_cache, state, precision, vec![w0, w1, w2, w3])
    }

    fn advance(ids: IntTensor<Self>, state: IntTensor<Self>, history: IntTensor<Self>) -> (IntTensor<Self>, IntTensor<Self>) {
        let client = state.client.clone();
        let (sh, hh) = (TensorHandle::from(state.clone()), TensorHandle::from(history.clone()));
        launched(braid_kernels::decode::advance(&client, TensorHandle::from(ids), &sh, &hh));
        (state, history)
    }

    fn greedy_head(
        residual: FloatTensor<Self>,
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        eps: f64,
        precision: Precision,
        w: FloatTensor<Self>,
        state: IntTensor<Self>,
        history: IntTensor<Self>,
        embed: FloatTensor<Self>,
        cos_table: FloatTensor<Self>,
        sin_table: FloatTensor<Self>,
        next_x: FloatTensor<Self>,
        next_cos: FloatTensor<Self>,
        next_sin: FloatTensor<Self>,
    ) -> (IntTensor<Self>, IntTensor<Self>, FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let client = x.client.clone();
        let [rows, hidden] = [x.meta.shape()[0], x.meta.shape()[1]];
        let (sh, hh) = (TensorHandle::from(state.clone()), TensorHandle::from(history.clone()));
        // The outputs as they are (written in place), the tables as contiguous handles.
        let [embed, cos_table, sin_table] = [embed, cos_table, sin_table].map(handle);
        let next = (next_x, next_cos, next_sin);
        let [nx, nc, ns] = [next.0.clone(), next.1.clone(), next.2.clone()].map(TensorHandle::from);
        if let Some(config) = greedy_head_config(&x)
            && rows == 1
            && hidden <= braid_kernels::gemv::SHARED_F32
        {
            let inputs = braid_kernels::greedy_head::NextInputs { embed, cos_table, sin_table, x: nx, cos: nc, sin: ns };
            launched(braid_kernels::greedy_head::greedy_head(
                &client,
                handle(residual),
                handle(x),
                handle(gamma),
                eps as f32,
                precision,
                handle(w),
                &sh,
                &hh,
                config,
                super::greedy_head_norm_inside(),
                Some(inputs),
            ));
            return (state, history, next.0, next.1, next.2);
        }
        // Off batch 1 or switched off: the launches it replaces, the inputs into `next`.
        let (_, normed) = Self::add_rms_norm(residual, x, gamma, eps, precision);
        let ids = Self::argmax(Self::linear(normed, w));
        let (state, history) = Self::advance(ids, state, history);
        launched(braid_kernels::decode::inputs_into(&client, embed, cos_table, sin_table, TensorHandle::from(state.clone()), &nx, &nc, &ns));
        (state, history, next.0, next.1, next.2)
    }

    fn add_rms_norm_qkv(
        residual: FloatTensor<Self>,
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        wq: FloatTensor<Self>,
        wk: FloatTensor<Self>,
        wv: FloatTensor<Self>,
        eps: f64,
        precision: Precision,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let (like, dtype) = (x.clone(), x.dtype);
        let past_gemv = x.meta.shape()[0] > gemv_limit(GemvOp::Qkv, &x);
        if past_gemv && matmul_allowed(precision, dtype) {
            let (h, n) = Self::add_rms_norm(residual, x, gamma, eps, precision);
            return (h, qkv_matmul(n, wq, wk, wv));
        }
        if past_gemv {
            // Past the GEMV's rows: the two ops (the GEMV prologue suits decode).
            let h = Cube::float_add(residual, x);
            return (h.clone(), Self::rms_norm_qkv(h, gamma, wq, wk, wv, eps, precision));
        }
        let tuning = gemv_tuning(&like.client, &like.device, like.meta.shape()[0]);
        let (h, qkv) = launched(braid_kernels::rms_norm_qkv::add_rms_norm_qkv(
            &like.client,
            handle(residual),
            handle(x),
            handle(gamma),
            handle(wq),
            handle(wk),
            handle(wv),
            eps as f32,
            precision,
            tuning,
        ));
        (tensor(&like, h, dtype), tensor(&like, qkv, dtype))
    }

    fn add_rms_norm_gate_up(
        residual: FloatTensor<Self>,
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        w_gate: FloatTensor<Self>,
        w_up: FloatTensor<Self>,
        eps: f64,
        precision: Precision,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let (like, dtype) = (x.clone(), x.dtype);
        if x.meta.shape()[0] > gemv_limit(GemvOp::GateUp, &x) {
            let (h, n) = Self::add_rms_norm(residual, x, gamma, eps, precision);
            return (h, Self::gate_up_silu(n, w_gate, w_up, precision));
        }
        let tuning = gemv_tuning(&like.client, &like.device, like.meta.shape()[0]);
        let (h, act) = launched(braid_kernels::gemv::add_rms_norm_gate_up_silu(
            &like.client,
            handle(residual),
            handle(x),
            handle(gamma),
            handle(w_gate),
            handle(w_up),
            eps as f32,
            precision,
            tuning,
        ));
        (tensor(&like, h, dtype), tensor(&like, act, dtype))
    }

    fn decode_mlp(
        attn: FloatTensor<Self>,
        residual: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        wo: FloatTensor<Self>,
        w_gate: FloatTensor<Self>,
        w_up: FloatTensor<Self>,
        w_down: FloatTensor<Self>,
        eps: f64,
        precision: Precision,
        barrier: IntTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let (like, dtype) = (attn.clone(), attn.dtype);
        let [rows, q_dim] = [attn.meta.shape()[0], attn.meta.shape()[1]];
        let (hidden, inter) = (wo.meta.shape()[0], w_gate.meta.shape()[0]);
        let one_launch = rows == 1
            && braid_kernels::decode_mlp::unsupported(&like.client, view(attn.clone()).dtype, q_dim, hidden, inter, super::decode_mlp_options()).is_none();
        if !one_launch {
            let o = Self::linear(attn, wo);
            let (h, act) = Self::add_rms_norm_gate_up(residual, o, gamma, w_gate, w_up, eps, precision);
            return (h, Self::linear(act, w_down));
        }
        let args = mlp_args(attn, residual, gamma, wo, w_gate, w_up, w_down, barrier);
        let (h, out) = launched(braid_kernels::decode_mlp::decode_mlp(&like.client, args, eps as f32, precision, super::decode_mlp_options()));
        (tensor(&like, h, dtype), tensor(&like, out, dtype))
    }

    fn decode_mlp_qkv(
        attn: FloatTensor<Self>,
        residual: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        wo: FloatTensor<Self>,
        w_gate: FloatTensor<Self>,
        w_up: FloatTensor<Self>,
        w_down: FloatTensor<Self>,
        eps: f64,
        precision: Precision,
        barrier: IntTensor<Self>,
        gamma_in: FloatTensor<Self>,
        wq: FloatTensor<Self>,
        wk: FloatTensor<Self>,
        wv: FloatTensor<Self>,
        q_weight: FloatTensor<Self>,
        k_weight: FloatTensor<Self>,
        cos: FloatTensor<Self>,
        sin: FloatTensor<Self>,
        shape: QkShape,
        eps_in: f64,
        qk_eps: f64,
        k_cache: FloatTensor<Self>,
        v_cache: FloatTensor<Self>,
        state: IntTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let (like, dtype) = (attn.clone(), attn.dtype);
        let options = super::decode_mlp_options();
        let one_launch = layer_launch_fits(&attn, &wo, &w_gate, shape, options);
        if !one_launch {
            let (h, out) = Self::decode_mlp(attn, residual, gamma, wo, w_gate, w_up, w_down, eps, precision, barrier);
            return Self::qkv_rope_cache(
                out, h, true, gamma_in, wq, wk, wv, q_weight, k_weight, cos, sin, shape, eps_in, qk_eps, precision, k_cache, v_cache, state,
            );
        }
        let args = mlp_args(attn, residual, gamma, wo, w_gate, w_up, w_down, barrier);
        let next = braid_kernels::decode_mlp::NextLayer {
            head: head_inputs(gamma_in, wq, wk, wv, q_weight, k_weight, cos, sin, &k_cache, &v_cache, state),
            shape,
            eps: eps_in as f32,
            qk_eps: qk_eps as f32,
            attend: None,
        };
        let out = launched(braid_kernels::decode_mlp::decode_mlp_qkv(&like.client, args, next, eps as f32, precision, options));
        (tensor(&like, out.stream, dtype), tensor(&like, out.q, dtype), k_cache, v_cache)
    }

    fn decode_mlp_attn(
        attn: FloatTensor<Self>,
        residual: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        wo: FloatTensor<Self>,
        w_gate: FloatTensor<Self>,
        w_up: FloatTensor<Self>,
        w_down: FloatTensor<Self>,
        eps: f64,
        precision: Precision,
        barrier: IntTensor<Self>,
        gamma_in: FloatTensor<Self>,
        wq: FloatTensor<Self>,
        wk: FloatTensor<Self>,
        wv: FloatTensor<Self>,
        q_weight: FloatTensor<Self>,
        k_weight: FloatTensor<Self>,
        cos: FloatTensor<Self>,
        sin: FloatTensor<Self>,
        shape: QkShape,
        eps_in: f64,
        qk_eps: f64,
        k_cache: FloatTensor<Self>,
        v_cache: FloatTensor<Self>,
        state: IntTensor<Self>,
        w0: FloatTensor<Self>,
        w1: FloatTensor<Self>,
        w2: FloatTensor<Self>,
        w3: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let (like, dtype) = (attn.clone(), attn.dtype);
        let options = super::decode_mlp_options();
        let pf = [w0, w1, w2, w3];
        let one_launch = layer_launch_fits(&attn, &wo, &w_gate, shape, options);
        if one_launch {
            let args = mlp_args(attn.clone(), residual.clone(), gamma.clone(), wo.clone(), w_gate.clone(), w_up.clone(), w_down.clone(), barrier.clone());
            let count = braid_kernels::attention::l2_prefetch_count().min(4);
            let next = braid_kernels::decode_mlp::NextLayer {
                head: head_inputs(
                    gamma_in.clone(),
                    wq.clone(),
                    wk.clone(),
                    wv.clone(),
                    q_weight.clone(),
                    k_weight.clone(),
                    cos.clone(),
                    sin.clone(),
                    &k_cache,
                    &v_cache,
                    state.clone(),
                ),
                shape,
                eps: eps_in as f32,
                qk_eps: qk_eps as f32,
                attend: Some(pf[..count].iter().map(|t| handle(t.clone())).collect()),
            };
            match braid_kernels::decode_mlp::decode_mlp_qkv(&like.client, args, next, eps as f32, precision, options) {
                Ok(out) => {
                    let a = out.attn.expect("an attending launch returns the attention");
                    return (tensor(&like, out.stream, dtype), tensor(&like, a, dtype), k_cache, v_cache);
                }
                // The caches' length or layout (the row attention's limits): the two steps below.
                Err(KernelError::Unsupported { .. }) => {}
                Err(e) => launched::<()>(Err(e)),
            }
        }
        let (h, q, kc, vc) = Self::decode_mlp_qkv(
            attn, residual, gamma, wo, w_gate, w_up, w_down, eps, precision, barrier, gamma_in, wq, wk, wv, q_weight, k_weight, cos, sin, shape, eps_in, qk_eps, k_cache,
            v_cache, state.clone(),
        );
        let [p0, p1, p2, p3] = pf;
        let a = Self::attention_at_prefetch(q, kc.clone(), vc.clone(), state, precision, p0, p1, p2, p3);
        (h, a, kc, vc)
    }

    fn decode_layers(
        attn: FloatTensor<Self>,
        residual: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        wo: FloatTensor<Self>,
        w_gate: FloatTensor<Self>,
        w_up: FloatTensor<Self>,
        w_down: FloatTensor<Self>,
        eps: f64,
        precision: Precision,
        barrier: IntTensor<Self>,
        gamma_in: FloatTensor<Self>,
        wq: FloatTensor<Self>,
        wk: FloatTensor<Self>,
        wv: FloatTensor<Self>,
        q_weight: FloatTensor<Self>,
        k_weight: FloatTensor<Self>,
        cos: FloatTensor<Self>,
        sin: FloatTensor<Self>,
        shape: QkShape,
        eps_in: f64,
        qk_eps: f64,
        k_cache: FloatTensor<Self>,
        v_cache: FloatTensor<Self>,
        state: IntTensor<Self>,
        w0: FloatTensor<Self>,
        w1: FloatTensor<Self>,
        w2: FloatTensor<Self>,
        w3: FloatTensor<Self>,
        layers: usize,
        pre: bool,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let (like, dtype) = (residual.clone(), residual.dtype);
        let options = super::decode_mlp_options();
        let pf = [w0, w1, w2, w3];
        // (With `pre` the kernel does not read `attn`: the stream stands in.)
        let attn = if pre { residual.clone() } else { attn };
        if layers > 1 || pre {
            let args = mlp_args(attn.clone(), residual.clone(), gamma.clone(), wo.clone(), w_gate.clone(), w_up.clone(), w_down.clone(), barrier.clone());
            let count = braid_kernels::attention::l2_prefetch_count().min(4);
            let next = braid_kernels::decode_mlp::NextLayer {
                head: head_inputs(
                    gamma_in.clone(),
                    wq.clone(),
                    wk.clone(),
                    wv.clone(),
                    q_weight.clone(),
                    k_weight.clone(),
                    cos.clone(),
                    sin.clone(),
                    &k_cache,
                    &v_cache,
                    state.clone(),
                ),
                shape,
                eps: eps_in as f32,
                qk_eps: qk_eps as f32,
                attend: Some(pf[..count].iter().map(|t| handle(t.clone())).collect()),
            };
            match braid_kernels::decode_mlp::decode_layers(&like.client, args, next, layers, 1, pre, eps as f32, precision, options) {
                Ok(out) => {
                    let a = out.attn.expect("an attending launch returns the attention");
                    return (tensor(&like, out.stream, dtype), tensor(&like, a, dtype), k_cache, v_cache);
                }
                // The device, the dtype, the options or the caches (one layer a launch below).
                Err(KernelError::Unsupported { .. }) => {}
                Err(e) => launched::<()>(Err(e)),
            }
        }
        // `qkv_rope_cache` + `attention_at_units` (with `pre`), then one `decode_mlp_attn` a
        // layer over its rows of the stacks; the caches written back (a no-op where the slice is
        // a view of the stack, as at aligned offsets).
        let rows = |t: &FloatTensor<Self>, l: usize, of: usize| {
            let n = t.meta.shape()[0] / of;
            Self::float_slice(t.clone(), &[burn::tensor::Slice::from(l * n..(l + 1) * n)])
        };
        let heads = layers + 1;
        let (mut x, mut a, mut kc, mut vc) = (residual, attn, k_cache, v_cache);
        if pre {
            let at = [burn::tensor::Slice::from(0..1)];
            let (h, q, k, v) = Self::qkv_rope_cache(
                x.clone(),
                x,
                false,
                rows(&gamma_in, 0, heads),
                rows(&wq, 0, heads),
                rows(&wk, 0, heads),
                rows(&wv, 0, heads),
                rows(&q_weight, 0, heads),
                rows(&k_weight, 0, heads),
                cos.clone(),
                sin.clone(),
                shape,
                eps_in,
                qk_eps,
                precision,
                Self::float_slice(kc.clone(), &at),
                Self::float_slice(vc.clone(), &at),
                state.clone(),
            );
            let att = Self::attention_at_units(q, k.clone(), v.clone(), state.clone(), precision, super::decode_mlp_units());
            kc = Self::float_slice_assign(kc, &at, k);
            vc = Self::float_slice_assign(vc, &at, v);
            let n = att.meta.shape().iter().product::<usize>();
            (x, a) = (h, Self::float_reshape(att, burn::tensor::Shape::new([1, n])));
        }
        for l in 0..layers {
            let n = l + 1;
            let at = [burn::tensor::Slice::from(n..n + 1)];
            let (h, next, k, v) = Self::decode_mlp_attn(
                a,
                x,
                rows(&gamma, l, layers),
                rows(&wo, l, layers),
                rows(&w_gate, l, layers),
                rows(&w_up, l, layers),
                rows(&w_down, l, layers),
                eps,
                precision,
                barrier.clone(),
                rows(&gamma_in, n, heads),
                rows(&wq, n, heads),
                rows(&wk, n, heads),
                rows(&wv, n, heads),
                rows(&q_weight, n, heads),
                rows(&k_weight, n, heads),
                cos.clone(),
                sin.clone(),
                shape,
                eps_in,
                qk_eps,
                Self::float_slice(kc.clone(), &at),
                Self::float_slice(vc.clone(), &at),
                state.clone(),
                pf[0].clone(),
                pf[1].clone(),
                pf[2].clone(),
                pf[3].clone(),
            );
            kc = Self::float_slice_assign(kc, &at, k);
            vc = Self::float_slice_assign(vc, &at, v);
            let n = next.meta.shape().iter().product::<usize>();
            (x, a) = (h, Self::float_reshape(next, burn::tensor::Shape::new([1, n])));
        }
        let n = a.meta.shape()[1];
        (x, Self::float_reshape(a, burn::tensor::Shape::new([1, 1, n])), kc, vc)
    }

    fn attention_at_units(
        q: FloatTensor<Self>,
        k_cache: FloatTensor<Self>,
        v_cache: FloatTensor<Self>,
        state: IntTensor<Self>,
        precision: Precision,
        units: usize,
    ) -> FloatTensor<Self> {
        let (like, dtype) = (q.clone(), q.dtype);
        let out =
            launched(braid_kernels::attention::attention_at_units(&like.client, handle(q), view(k_cache), view(v_cache), TensorHandle::from(state), precision, units));
        tensor(&like, out, dtype)
    }

    fn paged_kv_write(
        k_pool: FloatTensor<Self>,
        v_pool: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        slots: IntTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let (kh, vh) = (view(k_pool.clone()), view(v_pool.clone()));
        let client = k_pool.client.clone();
        launched(braid_kernels::paged::kv_write(&client, &kh, &vh, view(k), view(v), TensorHandle::from(into_contiguous(slots))));
        (k_pool, v_pool)
    }

    fn paged_attention(
        q: FloatTensor<Self>,
        k_pool: FloatTensor<Self>,
        v_pool: FloatTensor<Self>,
        table: IntTensor<Self>,
        lens: IntTensor<Self>,
        precision: Precision,
    ) -> FloatTensor<Self> {
        let (like, dtype) = (q.clone(), q.dtype);
        let out = launched(braid_kernels::attention::paged_attention(
            &like.client,
            handle(q),
            view(k_pool),
            view(v_pool),
            TensorHandle::from(into_contiguous(table)),
            TensorHandle::from(into_contiguous(lens)),
            precision,
        ));
        tensor(&like, out, dtype)
    }

    fn paged_prefill_attention(
        q: FloatTensor<Self>,
        k_pool: FloatTensor<Self>,
        v_pool: FloatTensor<Self>,
        table: IntTensor<Self>,
        spans: Vec<PrefillSpan>,
        precision: Precision,
        tiles: Option<PrefillTiles>,
    ) -> FloatTensor<Self> {
        let (like, dtype) = (q.clone(), q.dtype);
        let out = launched(braid_kernels::attention::paged_prefill_attention(
            &like.client,
            handle(q),
            view(k_pool),
            view(v_pool),
            TensorHandle::from(into_contiguous(table)),
            &spans,
            precision,
            tiles,
        ));
        tensor(&like, out, dtype)
    }

    fn batch_inputs(
        embed: FloatTensor<Self>,
        cos_table: FloatTensor<Self>,
        sin_table: FloatTensor<Self>,
        ids: IntTensor<Self>,
        pos: IntTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let (like, dtype) = (embed.clone(), embed.dtype);
        let (x, c, s) = launched(braid_kernels::decode::batch_inputs(
            &like.client,
            handle(embed),
            handle(cos_table),
            handle(sin_table),
            TensorHandle::from(into_contiguous(ids)),
            TensorHandle::from(into_contiguous(pos)),
        ));
        let f32_t = burn::tensor::DType::F32;
        (tensor(&like, x, dtype), tensor(&like, c, f32_t), tensor(&like, s, f32_t))
    }

    fn copy_into(dst: IntTensor<Self>, src: IntTensor<Self>) -> IntTensor<Self> {
        let client = dst.client.clone();
        launched(braid_kernels::decode::copy_into(&client, &TensorHandle::from(dst.clone()), TensorHandle::from(into_contiguous(src))));
        dst
    }
}

/// Units per cube of the one-launch QKV + RoPE kernel: `$BRAID_QKV_ROPE_BLOCK` (256, 512 or
/// 1,024; read once per process), else 512.
fn qkv_rope_block() -> usize {
    static BLOCK: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *BLOCK.get_or_init(|| std::env::var("BRAID_QKV_ROPE_BLOCK").ok().and_then(|s| s.trim().parse().ok()).unwrap_or(512))
}

/// Features a plane of that kernel has in flight: `$BRAID_QKV_ROPE_AHEAD` (2 or 4; read once
/// per process), else 2.
fn qkv_rope_ahead() -> usize {
    static AHEAD: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *AHEAD.get_or_init(|| std::env::var("BRAID_QKV_ROPE_AHEAD").ok().and_then(|s| s.trim().parse().ok()).unwrap_or(2))
}
