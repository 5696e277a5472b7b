//! Braid's fused ops as a Burn backend extension.
//!
//! [`FusedOps`] has one method per fused op. The CubeCL backend (CUDA, wgpu, ...) launches the
//! kernels of `braid-kernels` (`cube.rs`); Flex runs the reference twin of [`reference`], which
//! has the same signature and precision modes and is written in plain Burn tensor ops. The free
//! functions below are what the model calls: they route a [`Tensor`] through Burn's dispatch to
//! whichever backend holds it.

mod cube;
mod flex;
pub mod gemv_rows;
pub mod reference;
pub mod verify;

use burn::backend::tensor::{FloatTensor, IntTensor};
use burn::backend::{Backend, Dispatch, backend_extension};
use burn::tensor::{Int, Tensor};

pub use braid_kernels::Precision;
pub use braid_kernels::attention::{PREFILL_TILES, PrefillSpan, PrefillTiles, decode_row_max_keys, set_decode_row_max_keys, set_prefill_tiles};
pub use braid_kernels::grid::{BARRIER_CUBES, BARRIER_WORDS, BarrierKind};
pub use braid_kernels::qk_norm_rope::QkShape;

/// One method per fused op; see the free functions of this module for shapes.
#[backend_extension(Cube, Flex)]
pub trait FusedOps: Backend {
    fn add_rms_norm(
        residual: FloatTensor<Self>,
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        eps: f64,
        precision: Precision,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);

    #[allow(clippy::too_many_arguments)]
    fn rms_norm_qkv(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        wq: FloatTensor<Self>,
        wk: FloatTensor<Self>,
        wv: FloatTensor<Self>,
        eps: f64,
        precision: Precision,
    ) -> FloatTensor<Self>;

    #[allow(clippy::too_many_arguments)]
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
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);

    #[allow(clippy::too_many_arguments)]
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
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);

    /// See [`qkv_rope_cache`].
    #[allow(clippy::too_many_arguments)]
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
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);

    #[allow(clippy::too_many_arguments)]
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
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);

    fn silu_mul(gate: FloatTensor<Self>, up: FloatTensor<Self>, precision: Precision) -> FloatTensor<Self>;

    fn argmax(logits: FloatTensor<Self>) -> IntTensor<Self>;

    fn linear(x: FloatTensor<Self>, w: FloatTensor<Self>) -> FloatTensor<Self>;

    fn gate_up_silu(
        x: FloatTensor<Self>,
        w_gate: FloatTensor<Self>,
        w_up: FloatTensor<Self>,
        precision: Precision,
    ) -> FloatTensor<Self>;

    fn attention(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        past: usize,
        precision: Precision,
    ) -> FloatTensor<Self>;

    fn decode_inputs(
        embed: FloatTensor<Self>,
        cos_table: FloatTensor<Self>,
        sin_table: FloatTensor<Self>,
        state: IntTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);

    fn kv_write(
        k_cache: FloatTensor<Self>,
        v_cache: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        state: IntTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);

    fn attention_at(
        q: FloatTensor<Self>,
        k_cache: FloatTensor<Self>,
        v_cache: FloatTensor<Self>,
        state: IntTensor<Self>,
        precision: Precision,
    ) -> FloatTensor<Self>;

    /// [`FusedOps::attention_at`], reading `w0..w3` (the next ops' weights) into L2 on the SMs
    /// the attention leaves idle where the backend can (a hint: the result is the same).
    #[allow(clippy::too_many_arguments)]
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
    ) -> FloatTensor<Self>;

    fn advance(ids: IntTensor<Self>, state: IntTensor<Self>, history: IntTensor<Self>) -> (IntTensor<Self>, IntTensor<Self>);

    #[allow(clippy::too_many_arguments, clippy::type_complexity)]
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
    ) -> (IntTensor<Self>, IntTensor<Self>, FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);

    #[allow(clippy::too_many_arguments)]
    fn add_rms_norm_qkv(
        residual: FloatTensor<Self>,
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        wq: FloatTensor<Self>,
        wk: FloatTensor<Self>,
        wv: FloatTensor<Self>,
        eps: f64,
        precision: Precision,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);

    fn batch_inputs(
        embed: FloatTensor<Self>,
        cos_table: FloatTensor<Self>,
        sin_table: FloatTensor<Self>,
        ids: IntTensor<Self>,
        pos: IntTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);

    fn copy_into(dst: IntTensor<Self>, src: IntTensor<Self>) -> IntTensor<Self>;

    fn paged_kv_write(
        k_pool: FloatTensor<Self>,
        v_pool: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        slots: IntTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);

    fn paged_attention(
        q: FloatTensor<Self>,
        k_pool: FloatTensor<Self>,
        v_pool: FloatTensor<Self>,
        table: IntTensor<Self>,
        lens: IntTensor<Self>,
        precision: Precision,
    ) -> FloatTensor<Self>;

    fn paged_prefill_attention(
        q: FloatTensor<Self>,
        k_pool: FloatTensor<Self>,
        v_pool: FloatTensor<Self>,
        table: IntTensor<Self>,
        spans: Vec<PrefillSpan>,
        precision: Precision,
        tiles: Option<PrefillTiles>,
    ) -> FloatTensor<Self>;

    #[allow(clippy::too_many_arguments)]
    fn add_rms_norm_gate_up(
        residual: FloatTensor<Self>,
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        w_gate: FloatTensor<Self>,
        w_up: FloatTensor<Self>,
        eps: f64,
        precision: Precision,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);
    /// See [`decode_mlp`].
    #[allow(clippy::too_many_arguments)]
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
    ) -> (FloatTensor<Self>, FloatTensor<Self>);
    /// See [`decode_mlp_qkv`].
    #[allow(clippy::too_many_arguments)]
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
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);
    /// See [`decode_mlp_attn`].
    #[allow(clippy::too_many_arguments)]
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
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);
    /// See [`decode_layers`].
    #[allow(clippy::too_many_arguments)]
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
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);
    /// See [`attention_at_units`].
    fn attention_at_units(
        q: FloatTensor<Self>,
        k_cache: FloatTensor<Self>,
        v_cache: FloatTensor<Self>,
        state: IntTensor<Self>,
        precision: Precision,
        units: usize,
    ) -> FloatTensor<Self>;
}

/// Whether a fused QK-norm+RoPE writes the new keys and values straight into the KV cache
/// (`qk_norm_rope_cache` / `qk_norm_rope_pool`: one launch per layer fewer) instead of
/// returning them for a separate KV write. On unless `$BRAID_KV_WRITE_FUSED=0` (for
/// comparisons; read once per process).
pub fn kv_write_fused() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("BRAID_KV_WRITE_FUSED").map_or(true, |s| s.trim() != "0"))
}

/// Whether the batch-1 decode step runs its (residual add +) input norm, q/k/v projections,
/// QK-norm + RoPE and KV write as one launch ([`qkv_rope_cache`]) where the device can. On
/// unless `$BRAID_QKV_ROPE_FUSED=0` (the two launches: for comparisons; read once per process).
pub fn qkv_rope_fused() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("BRAID_QKV_ROPE_FUSED").map_or(true, |s| s.trim() != "0"))
}

/// Whether `x`'s device runs [`qkv_rope_cache`] as its one-launch kernel (the CubeCL backend on a
/// device with plane operations); elsewhere the model keeps the two ops it replaces.
pub fn qkv_rope_supported(x: &Tensor<2>) -> bool {
    x.clone().try_into_primitive::<burn::backend::Cube>().is_ok_and(|t| braid_kernels::qkv_rope::supported(&t.client))
}

/// Whether the batch-1 decode step runs o_proj, the residual add + post-attention norm +
/// gate/up + SiLU and down_proj as one persistent launch ([`decode_mlp`]) where the device
/// can. On unless `$BRAID_DECODE_MLP=0` (the three launches: for comparisons; read once per
/// process).
pub fn decode_mlp_fused() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("BRAID_DECODE_MLP").map_or(true, |s| s.trim() != "0"))
}

/// [`decode_mlp`]'s layout: the default, or for comparisons `$BRAID_DECODE_MLP_UNITS=n` (units
/// per cube), `$BRAID_DECODE_MLP_AHEAD=n` (gate/up features a plane loads before the first
/// barrier), `$BRAID_DECODE_MLP_C_EARLY=1` (down's first weights before the first barrier),
/// `$BRAID_DECODE_MLP_BARRIER=counter|light` (the grid barrier), `$BRAID_DECODE_MLP_D_EARLY=0|1`
/// ([`decode_mlp_qkv`]'s q/k/v weights before the second barrier), `$BRAID_DECODE_MLP_LATE_LOADS=0|1`
/// (down's and q/k/v's weight loads after the barrier's fence), `$BRAID_DECODE_MLP_TAGS=0|1`
/// (the phases' outputs through fenced barriers, or as tagged words behind unfenced ones),
/// `$BRAID_DECODE_MLP_E_BARRIER=1` (with tags, a barrier before phase E too),
/// `$BRAID_DECODE_MLP_HOLD=0` (the normed phases' residual and norm weight loaded after their
/// words, not before the barrier), `$BRAID_DECODE_MLP_E_FENCE=1` (phase E's attention behind a
/// fence, not a cube barrier), `$BRAID_DECODE_MLP_C_AT=0|1|2` and `_D_AT=0|1|2` (where down's
/// and the next q/k/v's weights load: after the previous phase's dots, after its staging, after
/// the barrier before it). Read once per process.
pub(crate) fn decode_mlp_options() -> braid_kernels::decode_mlp::DecodeMlpOptions {
    use braid_kernels::decode_mlp::DecodeMlpOptions;
    static OPTIONS: std::sync::OnceLock<DecodeMlpOptions> = std::sync::OnceLock::new();
    *OPTIONS.get_or_init(|| {
        let var = |k: &str| std::env::var(k).ok().map(|s| s.trim().to_string());
        let num = |k: &str| var(k).and_then(|s| s.parse::<usize>().ok());
        let d = DecodeMlpOptions::default();
        DecodeMlpOptions {
            units: num("BRAID_DECODE_MLP_UNITS").unwrap_or(d.units),
            ahead_b: num("BRAID_DECODE_MLP_AHEAD").or(d.ahead_b),
            c_early: var("BRAID_DECODE_MLP_C_EARLY").is_some_and(|s| s == "1"),
            d_early: var("BRAID_DECODE_MLP_D_EARLY").map_or(d.d_early, |s| s == "1"),
            late_loads: var("BRAID_DECODE_MLP_LATE_LOADS").map_or(d.late_loads, |s| s == "1"),
            barrier: match var("BRAID_DECODE_MLP_BARRIER").as_deref() {
                Some("light") => BarrierKind::Light,
                Some("counter") => BarrierKind::Counter,
                _ => d.barrier,
            },
            tags: var("BRAID_DECODE_MLP_TAGS").map_or(d.tags, |s| s != "0"),
            e_barrier: var("BRAID_DECODE_MLP_E_BARRIER").map_or(d.e_barrier, |s| s == "1"),
            hold: var("BRAID_DECODE_MLP_HOLD").map_or(d.hold, |s| s != "0"),
            e_fence: var("BRAID_DECODE_MLP_E_FENCE").is_some_and(|s| s == "1"),
            probe: decode_probe().0,
            c_at: num("BRAID_DECODE_MLP_C_AT").map_or(d.c_at, |n| n as u32),
            d_at: num("BRAID_DECODE_MLP_D_AT").map_or(d.d_at, |n| n as u32),
            e_loads: num("BRAID_DECODE_LAYERS_E_LOADS").map_or(d.e_loads, |n| n as u32),
            e_touch: num("BRAID_DECODE_LAYERS_E_TOUCH").map_or(d.e_touch, |n| n != 0),
            a_barrier: num("BRAID_DECODE_LAYERS_A_BARRIER").map_or(d.a_barrier, |n| n != 0),
            e_touch_qkv: num("BRAID_DECODE_LAYERS_E_TOUCH_QKV").map_or(d.e_touch_qkv, |n| n as u32),
            kv_at: num("BRAID_DECODE_KV_AT").map_or(d.kv_at, |n| n as u32),
            kv_n: num("BRAID_DECODE_KV_N").unwrap_or(d.kv_n),
            kv_early: num("BRAID_DECODE_KV_EARLY").map_or(d.kv_early, |n| n != 0),
            attn_ahead: num("BRAID_DECODE_ATTN_AHEAD").filter(|n| [4, 8, 16].contains(n)).or(d.attn_ahead),
        }
    })
}

/// Timing probes for `bench latency` (`$BRAID_DECODE_PROBE`, comma-separated): `barrier` (one
/// more grid barrier before each of the layer launch's), `hot` (its weight loads all read their
/// matrix's first row; `hot_a` .. `hot_d` only phase A's .. D's), `noattn` (its attention phase skipped), `nowait` (phase E's head cubes
/// do not wait for their words), `novalues` (phase E's attention skips its weighted values),
/// `launch` (an empty launch between the layers of a decode step). Each changes what a step computes (the tokens are
/// then wrong); the difference in step time is what that part costs. `twice` (the one launch
/// over the layers run twice a step with the same inputs: the tokens stay right, the step grows
/// by that launch's time inside the graph). Returns the layer launch's mask
/// (`braid_kernels::decode_mlp::DecodeMlpOptions::probe`), `launch` and `twice`; warns once on
/// stderr when any is set. Read once per process.
pub fn decode_probe() -> (u32, bool, bool) {
    use braid_kernels::decode_mlp::{PROBE_EXTRA_BARRIER, PROBE_HOT_A, PROBE_HOT_B, PROBE_HOT_C, PROBE_HOT_D, PROBE_HOT_WEIGHTS, PROBE_NO_ATTENTION, PROBE_NO_VALUES, PROBE_NO_WAIT};
    static PROBE: std::sync::OnceLock<(u32, bool, bool)> = std::sync::OnceLock::new();
    *PROBE.get_or_init(|| {
        let Ok(list) = std::env::var("BRAID_DECODE_PROBE") else { return (0, false, false) };
        let (mut mask, mut launch, mut twice) = (0, false, false);
        for name in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            match name {
                "barrier" => mask |= PROBE_EXTRA_BARRIER,
                "hot" => mask |= PROBE_HOT_WEIGHTS,
                "hot_a" => mask |= PROBE_HOT_A,
                "hot_b" => mask |= PROBE_HOT_B,
                "hot_c" => mask |= PROBE_HOT_C,
                "hot_d" => mask |= PROBE_HOT_D,
                "noattn" => mask |= PROBE_NO_ATTENTION,
                "nowait" => mask |= PROBE_NO_WAIT,
                "novalues" => mask |= PROBE_NO_VALUES,
                "launch" => launch = true,
                "twice" => twice = true,
                other => eprintln!("warning: $BRAID_DECODE_PROBE: unknown probe {other:?} (barrier, hot, hot_a, hot_b, hot_c, hot_d, noattn, nowait, novalues, launch, twice)"),
            }
        }
        if mask != 0 || launch {
            eprintln!("warning: $BRAID_DECODE_PROBE={list}: timing probes on, decode results are wrong");
        } else if twice {
            eprintln!("warning: $BRAID_DECODE_PROBE={list}: the layers' launch runs twice a step (a timing probe)");
        }
        (mask, launch, twice)
    })
}

/// Words of the barrier buffer the batch-1 decode launches need ([`decode_mlp`],
/// [`decode_mlp_qkv`], [`decode_mlp_attn`]) for a model of these widths and heads: the grid
/// barrier's and the tagged words of their phases (`braid_kernels::decode_mlp::sync_words`).
pub fn decode_sync_words(hidden: usize, inter: usize, heads: usize, kv_heads: usize, head_dim: usize) -> usize {
    braid_kernels::decode_mlp::sync_words(hidden, inter, (heads + 2 * kv_heads) * head_dim, heads * head_dim)
}

/// Whether `x`'s device runs [`decode_mlp`] as its one persistent launch at these widths (the
/// CubeCL backend on a device with plane operations, device-scope ordering, enough SMs and
/// registers: `braid_kernels::decode_mlp::unsupported`); elsewhere it runs the three launches.
pub fn decode_mlp_supported(x: &Tensor<2>, q_dim: usize, hidden: usize, inter: usize) -> bool {
    x.clone().try_into_primitive::<burn::backend::Cube>().is_ok_and(|t| {
        let dtype = braid_kernels::TensorHandle::from(t.clone()).dtype;
        braid_kernels::decode_mlp::unsupported(&t.client, dtype, q_dim, hidden, inter, decode_mlp_options()).is_none()
    })
}

/// Whether the batch-1 decode step runs each layer's persistent MLP launch on into the next
/// layer's input norm, q/k/v, QK-norm + RoPE and KV write ([`decode_mlp_qkv`]) where the device
/// can, so that launch replaces the next layer's `qkv_rope_cache`. On unless
/// `$BRAID_DECODE_MLP_QKV=0` (for comparisons; read once per process).
pub fn decode_mlp_qkv_fused() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("BRAID_DECODE_MLP_QKV").map_or(true, |s| s.trim() != "0"))
}

/// Whether the batch-1 decode step's persistent launch that runs on into the next layer's
/// attention inputs also runs that layer's attention ([`decode_mlp_attn`]: a layer is then
/// one launch) where the device can. On unless `$BRAID_DECODE_MLP_ATTN=0` (for comparisons;
/// read once per process).
pub fn decode_mlp_attn_fused() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("BRAID_DECODE_MLP_ATTN").map_or(true, |s| s.trim() != "0"))
}

/// Whether `x`'s device runs [`decode_mlp_qkv`] as one persistent launch at these widths and the
/// next layer's heads `next` (`braid_kernels::decode_mlp::unsupported_qkv`).
pub fn decode_mlp_qkv_supported(x: &Tensor<2>, q_dim: usize, hidden: usize, inter: usize, next: QkShape) -> bool {
    x.clone().try_into_primitive::<burn::backend::Cube>().is_ok_and(|t| {
        let dtype = braid_kernels::TensorHandle::from(t.clone()).dtype;
        braid_kernels::decode_mlp::unsupported_qkv(&t.client, dtype, q_dim, hidden, inter, next, decode_mlp_options()).is_none()
    })
}

/// The argmax's slices a row, for comparisons: `$BRAID_ARGMAX_SLICES=n` (1 to 1,024; 1: one cube
/// a row, as before the split), else `None`: `braid_kernels::argmax::default_slices` (read once
/// per process; a value out of range is ignored).
pub fn argmax_slices() -> Option<usize> {
    static SLICES: std::sync::OnceLock<Option<usize>> = std::sync::OnceLock::new();
    *SLICES.get_or_init(|| std::env::var("BRAID_ARGMAX_SLICES").ok().and_then(|s| s.trim().parse().ok()).filter(|n| (1..=1024).contains(n)))
}

/// Whether the greedy decode steps run their last residual add and the final norm as one fused
/// `add_rms_norm` launch (torch mode) where the head is fused (`Qwen3::greedy_ids`). On unless
/// `$BRAID_FINAL_NORM_FUSED=0` (Burn's ops: for comparisons; read once per process).
pub fn final_norm_fused() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("BRAID_FINAL_NORM_FUSED").map_or(true, |s| s.trim() != "0"))
}

/// One launch of [`braid_kernels::grid::grid_barrier_probe`] (`rounds` grid barriers, each
/// checked; `kind`: which barrier) on tensors of the CubeCL backend: `bar: [BARRIER_WORDS]`
/// u32 (`bar[1]`: the count of wrong reads), `slots: [2 * BARRIER_CUBES]` u32. `None` off the
/// CubeCL backend; an error where the device cannot run a grid barrier (wgpu: no device-scope
/// ordering).
pub fn grid_barrier_probe(bar: &Tensor<1, Int>, slots: &Tensor<1, Int>, rounds: u32, kind: BarrierKind) -> Option<Result<(), braid_kernels::KernelError>> {
    let b = bar.clone().try_into_primitive::<burn::backend::Cube>().ok()?;
    let s = slots.clone().try_into_primitive::<burn::backend::Cube>().ok()?;
    let client = b.client.clone();
    Some(braid_kernels::grid::grid_barrier_probe(&client, &braid_kernels::TensorHandle::from(b), &braid_kernels::TensorHandle::from(s), rounds, kind))
}

/// The device's memory capacity in bytes, where its runtime reports one (CUDA does; the CPU
/// and some wgpu adapters do not).
pub fn device_memory(device: &burn::tensor::Device) -> Option<u64> {
    let probe = Tensor::<1>::zeros([1], device);
    let t = probe.try_into_primitive::<burn::backend::Cube>().ok()?;
    t.client.properties().memory.max_memory()
}

/// The largest single allocation the device allows, in bytes, on the CubeCL backend (`None`
/// elsewhere): a tensor must fit one.
pub fn device_max_allocation(device: &burn::tensor::Device) -> Option<u64> {
    let probe = Tensor::<1>::zeros([1], device);
    let t = probe.try_into_primitive::<burn::backend::Cube>().ok()?;
    Some(t.client.properties().memory.max_page_size)
}

/// `x @ w^T` through Burn's matmul with its one untuned strategy (`MatmulStrategy::Cube`: what
/// `Tensor::matmul` runs when Burn's `autotune` feature is off), for benchmarks that compare it
/// with the autotuned matmul; `None` off the CubeCL backend.
pub fn matmul_untuned(x: Tensor<2>, w: Tensor<2>) -> Option<Tensor<2>> {
    use burn::backend::ops::FloatTensorOps;
    use burn_cubecl::kernel::matmul::{MatmulStrategy, matmul};
    let dtype = x.dtype();
    let x = x.try_into_primitive::<burn::backend::Cube>().ok()?;
    let w = w.try_into_primitive::<burn::backend::Cube>().ok()?;
    let wt = burn::backend::Cube::float_transpose(w);
    let out = matmul(x, wt, None, MatmulStrategy::Cube, dtype).ok()?;
    Some(Tensor::from_primitive::<burn::backend::Cube>(out))
}

/// `x @ w^T` on Braid's tensor-core kernel (`braid_kernels::tc_linear`), for benchmarks that
/// compare it with Burn's matmul; `None` off the CubeCL backend or where the device has no
/// cooperative matrices for the dtype (or the width does not suit the kernel).
pub fn linear_tc(x: Tensor<2>, w: Tensor<2>) -> Option<Tensor<2>> {
    use braid_kernels::TensorHandle;
    let dtype = x.dtype();
    let x = x.try_into_primitive::<burn::backend::Cube>().ok()?;
    let w = w.try_into_primitive::<burn::backend::Cube>().ok()?;
    let (client, device) = (x.client.clone(), x.device.clone());
    let xh = TensorHandle::from(burn_cubecl::kernel::into_contiguous(x));
    let wh = TensorHandle::from(burn_cubecl::kernel::into_contiguous(w));
    let out = braid_kernels::tc_linear::tc_linear(&client, xh, wh).ok()?;
    let t = burn_cubecl::tensor::CubeTensor::new(client, out.handle, *out.metadata, device, dtype);
    Some(Tensor::from_primitive::<burn::backend::Cube>(t))
}

/// Keys a prefill's query rows may attend to through the fused attention kernel; beyond, the
/// plan's dispatch point takes the reference path. Decode rows (one per sequence) are split
/// over the keys and have no such limit.
pub const ATTENTION_MAX_KEYS: usize = braid_kernels::attention::MAX_KEYS;
/// Slots per block of the paged KV cache (`crate::paged`).
pub const PAGE_SIZE: usize = braid_kernels::attention::PAGE_SIZE;
/// Largest head_dim of the fused attention kernel.
pub const ATTENTION_MAX_HEAD_DIM: usize = braid_kernels::attention::MAX_HEAD_DIM;

/// Causal GQA attention: `q: [b, heads, t, hd]` at positions `past..past + t`, `k, v:
/// [b, kv_heads, >= past + t, hd]` (the cache) -> `[b*t, heads*hd]`.
pub fn attention(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>, past: usize, precision: Precision) -> Tensor<2> {
    let [b, nh, t, hd] = q.dims();
    let out: Tensor<3> = Tensor::from_dispatch(<Dispatch as FusedOps>::attention(
        q.into_dispatch(),
        k.into_dispatch(),
        v.into_dispatch(),
        past,
        precision,
    ));
    out.reshape([b * t, nh * hd])
}

/// `residual, x: [rows, dim]`, `weight: [dim]` -> `(residual + x, rmsnorm(residual + x) * weight)`.
pub fn add_rms_norm(
    residual: Tensor<2>,
    x: Tensor<2>,
    weight: Tensor<1>,
    eps: f64,
    precision: Precision,
) -> (Tensor<2>, Tensor<2>) {
    let (h, n) = <Dispatch as FusedOps>::add_rms_norm(
        residual.into_dispatch(),
        x.into_dispatch(),
        weight.into_dispatch(),
        eps,
        precision,
    );
    (Tensor::from_dispatch(h), Tensor::from_dispatch(n))
}

/// `x: [rows, hidden]`, `gamma: [hidden]`, `wq/wk/wv: [n_i, hidden]` -> `[rows, nq + nk + nv]`.
pub fn rms_norm_qkv(
    x: Tensor<2>,
    gamma: Tensor<1>,
    wq: Tensor<2>,
    wk: Tensor<2>,
    wv: Tensor<2>,
    eps: f64,
    precision: Precision,
) -> Tensor<2> {
    Tensor::from_dispatch(<Dispatch as FusedOps>::rms_norm_qkv(
        x.into_dispatch(),
        gamma.into_dispatch(),
        wq.into_dispatch(),
        wk.into_dispatch(),
        wv.into_dispatch(),
        eps,
        precision,
    ))
}

/// `q: [b*t, heads*hd]`, `k, v: [b*t, kv_heads*hd]` (row views of one buffer are fine),
/// `q_weight, k_weight: [hd]`, f32 `cos, sin: [t, hd]` ->
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
    let (q, k, v) = <Dispatch as FusedOps>::qk_norm_rope(
        q.into_dispatch(),
        k.into_dispatch(),
        v.into_dispatch(),
        q_weight.into_dispatch(),
        k_weight.into_dispatch(),
        cos.into_dispatch(),
        sin.into_dispatch(),
        shape,
        eps,
        precision,
    );
    (Tensor::from_dispatch(q), Tensor::from_dispatch(k), Tensor::from_dispatch(v))
}

/// What [`qk_norm_rope`] and [`kv_write`] do, in one launch on the CubeCL backend: the keys and
/// values go straight into `k_cache, v_cache: [b, kv_heads, capacity, hd]` at position
/// `state[1]` (+ t). Returns `(q, k_cache, v_cache)`.
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
    let (q, k, v) = <Dispatch as FusedOps>::qk_norm_rope_cache(
        q.into_dispatch(),
        k.into_dispatch(),
        v.into_dispatch(),
        q_weight.into_dispatch(),
        k_weight.into_dispatch(),
        cos.into_dispatch(),
        sin.into_dispatch(),
        shape,
        eps,
        precision,
        k_cache.into_dispatch(),
        v_cache.into_dispatch(),
        state.into_dispatch(),
    );
    (Tensor::from_dispatch(q), Tensor::from_dispatch(k), Tensor::from_dispatch(v))
}

/// What [`qk_norm_rope`] and [`paged_kv_write`] do, in one launch on the CubeCL backend: the
/// keys and values of row `r` go straight into the pools `[slots, kv_heads, hd]` at
/// `slots[r]`. Returns `(q, k_pool, v_pool)`.
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
    let (q, k, v) = <Dispatch as FusedOps>::qk_norm_rope_pool(
        q.into_dispatch(),
        k.into_dispatch(),
        v.into_dispatch(),
        q_weight.into_dispatch(),
        k_weight.into_dispatch(),
        cos.into_dispatch(),
        sin.into_dispatch(),
        shape,
        eps,
        precision,
        k_pool.into_dispatch(),
        v_pool.into_dispatch(),
        slots.into_dispatch(),
    );
    (Tensor::from_dispatch(q), Tensor::from_dispatch(k), Tensor::from_dispatch(v))
}

/// `gate, up: [rows, n]` -> `silu(gate) * up`.
pub fn silu_mul(gate: Tensor<2>, up: Tensor<2>, precision: Precision) -> Tensor<2> {
    Tensor::from_dispatch(<Dispatch as FusedOps>::silu_mul(gate.into_dispatch(), up.into_dispatch(), precision))
}

/// `logits: [rows, vocab]` -> the index of each row's largest value (the first on ties), read
/// back to the host: only the ids cross, not the logits.
pub fn argmax(logits: Tensor<2>) -> Vec<u32> {
    let ids: Tensor<1, Int> = Tensor::from_dispatch(<Dispatch as FusedOps>::argmax(logits.into_dispatch()));
    ids.into_data().convert::<i64>().try_to_vec::<i64>().expect("int ids").into_iter().map(|i| i as u32).collect()
}

/// `x: [rows, in] @ w^T` with a PyTorch-layout `w: [out, in]` -> `[rows, out]`.
pub fn linear(x: Tensor<2>, w: Tensor<2>) -> Tensor<2> {
    Tensor::from_dispatch(<Dispatch as FusedOps>::linear(x.into_dispatch(), w.into_dispatch()))
}

/// `silu(x @ w_gate^T) * (x @ w_up^T)`: the MLP's projections and activation in one op.
pub fn gate_up_silu(x: Tensor<2>, w_gate: Tensor<2>, w_up: Tensor<2>, precision: Precision) -> Tensor<2> {
    Tensor::from_dispatch(<Dispatch as FusedOps>::gate_up_silu(
        x.into_dispatch(),
        w_gate.into_dispatch(),
        w_up.into_dispatch(),
        precision,
    ))
}

// Graph-ready decode (batch 1): the step's token and position live in a device buffer
// `state: [token, position]` (u32) rather than in launch arguments, so that a captured CUDA
// graph replays every step (`crate::graph_decode`). On the CubeCL backend the caches, `state`
// and `history` are updated in place (the returned tensors are the same buffers); the twins
// return new tensors, so callers always keep what these functions return.

/// The embedding row of `state[0]` and the f32 RoPE rows of position `state[1]`:
/// `embed: [vocab, hidden]`, `cos_table, sin_table: [capacity, hd]` (f32) ->
/// `(x: [1, hidden], cos: [1, hd], sin: [1, hd])`.
pub fn decode_inputs(embed: Tensor<2>, cos_table: Tensor<2>, sin_table: Tensor<2>, state: Tensor<1, Int>) -> (Tensor<2>, Tensor<2>, Tensor<2>) {
    let (x, c, s) = <Dispatch as FusedOps>::decode_inputs(
        embed.into_dispatch(),
        cos_table.into_dispatch(),
        sin_table.into_dispatch(),
        state.into_dispatch(),
    );
    (Tensor::from_dispatch(x), Tensor::from_dispatch(c), Tensor::from_dispatch(s))
}

/// Writes `k, v: [b, kv, 1, hd]` into `k_cache, v_cache: [b, kv, capacity, hd]` at position
/// `state[1]`; returns the caches.
pub fn kv_write(k_cache: Tensor<4>, v_cache: Tensor<4>, k: Tensor<4>, v: Tensor<4>, state: Tensor<1, Int>) -> (Tensor<4>, Tensor<4>) {
    let (k, v) = <Dispatch as FusedOps>::kv_write(
        k_cache.into_dispatch(),
        v_cache.into_dispatch(),
        k.into_dispatch(),
        v.into_dispatch(),
        state.into_dispatch(),
    );
    (Tensor::from_dispatch(k), Tensor::from_dispatch(v))
}

/// Attention of `q: [b, heads, 1, hd]` at position `state[1]` over keys `0..=state[1]` of the
/// caches -> `[b, heads*hd]` (split over the keys: any cache length).
pub fn attention_at(q: Tensor<4>, k_cache: Tensor<4>, v_cache: Tensor<4>, state: Tensor<1, Int>, precision: Precision) -> Tensor<2> {
    let [b, nh, _, hd] = q.dims();
    let out: Tensor<3> = Tensor::from_dispatch(<Dispatch as FusedOps>::attention_at(
        q.into_dispatch(),
        k_cache.into_dispatch(),
        v_cache.into_dispatch(),
        state.into_dispatch(),
        precision,
    ));
    out.reshape([b, nh * hd])
}

/// [`attention_at`], with the four tensors `prefetch` (the next ops' weights, most useful
/// first) read into L2 meanwhile where the backend can: same result.
pub fn attention_at_prefetch(
    q: Tensor<4>,
    k_cache: Tensor<4>,
    v_cache: Tensor<4>,
    state: Tensor<1, Int>,
    precision: Precision,
    prefetch: [Tensor<2>; 4],
) -> Tensor<2> {
    let [b, nh, _, hd] = q.dims();
    let [w0, w1, w2, w3] = prefetch;
    let out: Tensor<3> = Tensor::from_dispatch(<Dispatch as FusedOps>::attention_at_prefetch(
        q.into_dispatch(),
        k_cache.into_dispatch(),
        v_cache.into_dispatch(),
        state.into_dispatch(),
        precision,
        w0.into_dispatch(),
        w1.into_dispatch(),
        w2.into_dispatch(),
        w3.into_dispatch(),
    ));
    out.reshape([b, nh * hd])
}

/// `state = [ids[0], state[1] + 1]` and `history[state[1] + 1] = ids[0]`; returns
/// `(state, history)`.
pub fn advance(ids: Tensor<1, Int>, state: Tensor<1, Int>, history: Tensor<1, Int>) -> (Tensor<1, Int>, Tensor<1, Int>) {
    let (s, h) = <Dispatch as FusedOps>::advance(ids.into_dispatch(), state.into_dispatch(), history.into_dispatch());
    (Tensor::from_dispatch(s), Tensor::from_dispatch(h))
}

/// The batch-1 decode step's end: `h = residual + x` (`[1, hidden]` each), its RMSNorm with
/// `gamma` (`precision`: `add_rms_norm`'s rounding points), the logits `normed @ w^T` (`w:
/// [vocab, hidden]`), their argmax, [`advance`] by it, and the next step's inputs as
/// [`decode_inputs`] gathers them from the new state (`tables`: the embedding `[vocab, hidden]`
/// and the f32 RoPE tables `[capacity, hd]`). Returns `(state, history, [x, cos, sin])`: on the
/// CubeCL backend `state`, `history` and `next` (`[1, hidden]`, f32 `[1, hd]` twice, contiguous)
/// written in place, so that a captured step reads next time what it wrote; the twin
/// (`reference::greedy_head`, those five ops) returns new inputs. The CubeCL backend runs two
/// launches (`braid_kernels::greedy_head`: no logits written, each cube's best, then one cube
/// picks, advances and gathers) with the bits of [`add_rms_norm`], [`linear`], [`argmax_device`],
/// [`advance`] and [`decode_inputs`], which it runs instead off batch 1 and with
/// `$BRAID_GREEDY_HEAD=0`.
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
    next: [Tensor<2>; 3],
) -> (Tensor<1, Int>, Tensor<1, Int>, [Tensor<2>; 3]) {
    let [embed, cos_table, sin_table] = tables;
    let [nx, nc, ns] = next;
    let (s, h, x, c, si) = <Dispatch as FusedOps>::greedy_head(
        residual.into_dispatch(),
        x.into_dispatch(),
        gamma.into_dispatch(),
        eps,
        precision,
        w.into_dispatch(),
        state.into_dispatch(),
        history.into_dispatch(),
        embed.into_dispatch(),
        cos_table.into_dispatch(),
        sin_table.into_dispatch(),
        nx.into_dispatch(),
        nc.into_dispatch(),
        ns.into_dispatch(),
    );
    (Tensor::from_dispatch(s), Tensor::from_dispatch(h), [Tensor::from_dispatch(x), Tensor::from_dispatch(c), Tensor::from_dispatch(si)])
}

/// How [`greedy_head`] spreads the head over cubes on the CubeCL backend: `$BRAID_GREEDY_HEAD`
/// names one of `gemv`'s candidates (`plane-1`, `plane-2`, ..., `unit`), or is `0`: the four
/// launches it replaces. Unset or `1`: `Some("")`, the strategy [`linear`] runs at one row
/// (so the logits have its bits), four features a plane on the plane path. Read once per process.
pub fn greedy_head_choice() -> Option<&'static str> {
    static CHOICE: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    CHOICE
        .get_or_init(|| match std::env::var("BRAID_GREEDY_HEAD") {
            Ok(s) if s.trim() == "0" => None,
            Ok(s) if !s.trim().is_empty() && s.trim() != "1" => Some(s.trim().to_string()),
            _ => Some(String::new()),
        })
        .as_deref()
}

/// Whether [`greedy_head`]'s head cubes each redo the add and the final norm as they stage their
/// input (default), instead of one `add_rms_norm` launch before them (`$BRAID_GREEDY_HEAD_NORM=0`;
/// H100, 2026-11-27 20:47: 1,457.7 tok/s against 1,460.9, four features a plane). Read once per
/// process.
pub fn greedy_head_norm_inside() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("BRAID_GREEDY_HEAD_NORM").map_or(true, |s| s.trim() != "0"))
}

/// `logits: [rows, vocab]` -> the index of each row's largest value, on the device (u32 on
/// the CubeCL backend).
pub fn argmax_device(logits: Tensor<2>) -> Tensor<1, Int> {
    Tensor::from_dispatch(<Dispatch as FusedOps>::argmax(logits.into_dispatch()))
}

/// The batch-1 decode step's attention inputs in one launch: `h = residual + x` (when
/// `add_residual`; else `h = x`, `residual` unread), the input RMSNorm and q/k/v projections of
/// `h`, QK-norm + RoPE, the new key and value written into `k_cache, v_cache:
/// [1, kv_heads, capacity, hd]` at position `state[1]`. `x, residual: [1, hidden]`, `cos, sin:
/// [1, hd]` f32 -> `(h, q: [1, heads, 1, hd], k_cache, v_cache)`. Bit for bit what
/// [`add_rms_norm_qkv`] (or [`rms_norm_qkv`]) then [`qk_norm_rope_cache`] give
/// (`reference::qkv_rope_cache`); only where [`qkv_rope_supported`].
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
    let (h, q, k, v) = <Dispatch as FusedOps>::qkv_rope_cache(
        x.into_dispatch(),
        residual.into_dispatch(),
        add_residual,
        gamma.into_dispatch(),
        wq.into_dispatch(),
        wk.into_dispatch(),
        wv.into_dispatch(),
        q_weight.into_dispatch(),
        k_weight.into_dispatch(),
        cos.into_dispatch(),
        sin.into_dispatch(),
        shape,
        eps,
        qk_eps,
        precision,
        k_cache.into_dispatch(),
        v_cache.into_dispatch(),
        state.into_dispatch(),
    );
    (Tensor::from_dispatch(h), Tensor::from_dispatch(q), Tensor::from_dispatch(k), Tensor::from_dispatch(v))
}

/// `(h = residual + x, rms_norm_qkv(h, ...))` in one launch at decode shapes: a layer's last
/// residual add fused into the next layer's input norm and QKV projection. Bit for bit the two
/// ops (`reference::add_rms_norm_qkv`).
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
    let (h, qkv) = <Dispatch as FusedOps>::add_rms_norm_qkv(
        residual.into_dispatch(),
        x.into_dispatch(),
        gamma.into_dispatch(),
        wq.into_dispatch(),
        wk.into_dispatch(),
        wv.into_dispatch(),
        eps,
        precision,
    );
    (Tensor::from_dispatch(h), Tensor::from_dispatch(qkv))
}

/// The batch-1 decode step from the attention output `attn: [1, q_dim]` to the MLP output:
/// `o = attn @ wo^T`, `h = residual + o`, `n = post_attention_norm(h)`, `down(silu(gate(n)) *
/// up(n))`. Returns `(h, mlp_out)`. On a CUDA device with enough SMs and registers, one
/// persistent launch (`braid_kernels::decode_mlp`: three GEMV phases, a grid barrier and tagged
/// words between them on `barrier: [decode_sync_words]` u32, zeros before its first use,
/// shareable by all layers of a stream), bit for bit the three launches it replaces; elsewhere those launches (`linear`,
/// `add_rms_norm_gate_up`, `linear`). Twin: `reference::decode_mlp`.
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
    barrier: &Tensor<1, Int>,
) -> (Tensor<2>, Tensor<2>) {
    let (h, out) = <Dispatch as FusedOps>::decode_mlp(
        attn.into_dispatch(),
        residual.into_dispatch(),
        gamma.into_dispatch(),
        wo.into_dispatch(),
        w_gate.into_dispatch(),
        w_up.into_dispatch(),
        w_down.into_dispatch(),
        eps,
        precision,
        barrier.clone().into_dispatch(),
    );
    (Tensor::from_dispatch(h), Tensor::from_dispatch(out))
}

/// [`decode_mlp`] running on into the next layer's attention inputs: `(h, mlp_out)` as there,
/// then `stream = h + mlp_out`, the next layer's input norm (`gamma_in`, `eps_in`) and q/k/v
/// projections of `stream`, its QK-norm + RoPE (`cos, sin: [1, hd]` f32) and its new key and value
/// written into `k_cache, v_cache: [1, kv_heads, capacity, hd]` at `state[1]`. Returns
/// `(stream, q: [1, heads, 1, hd], k_cache, v_cache)`: bit for bit [`decode_mlp`] then
/// [`qkv_rope_cache`] with the residual add. One persistent launch where
/// [`decode_mlp_qkv_supported`] (five phases, a grid barrier then tagged words on `barrier`:
/// [`decode_sync_words`], three barriers; four in f32), else those two
/// ops. Twin: `reference::decode_mlp_qkv`.
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
    barrier: &Tensor<1, Int>,
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
    let (h, q, k, v) = <Dispatch as FusedOps>::decode_mlp_qkv(
        attn.into_dispatch(),
        residual.into_dispatch(),
        gamma.into_dispatch(),
        wo.into_dispatch(),
        w_gate.into_dispatch(),
        w_up.into_dispatch(),
        w_down.into_dispatch(),
        eps,
        precision,
        barrier.clone().into_dispatch(),
        gamma_in.into_dispatch(),
        wq.into_dispatch(),
        wk.into_dispatch(),
        wv.into_dispatch(),
        q_weight.into_dispatch(),
        k_weight.into_dispatch(),
        cos.into_dispatch(),
        sin.into_dispatch(),
        shape,
        eps_in,
        qk_eps,
        k_cache.into_dispatch(),
        v_cache.into_dispatch(),
        state.into_dispatch(),
    );
    (Tensor::from_dispatch(h), Tensor::from_dispatch(q), Tensor::from_dispatch(k), Tensor::from_dispatch(v))
}

/// What [`decode_mlp_next`] leaves for the next layer.
pub enum NextInput {
    /// Its `q: [1, heads, 1, hd]` ([`decode_mlp_qkv`]).
    Q(Tensor<4>),
    /// Its attention output `[1, heads * hd]` ([`decode_mlp_attn`]).
    Attn(Tensor<2>),
}

/// [`decode_mlp_qkv`], or with `attend` (the tensors to prefetch) [`decode_mlp_attn`]:
/// `(stream, what the next layer gets, k_cache, v_cache)`.
#[allow(clippy::too_many_arguments)]
pub fn decode_mlp_next(
    attn: Tensor<2>,
    residual: Tensor<2>,
    gamma: Tensor<1>,
    wo: Tensor<2>,
    w_gate: Tensor<2>,
    w_up: Tensor<2>,
    w_down: Tensor<2>,
    eps: f64,
    precision: Precision,
    barrier: &Tensor<1, Int>,
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
    attend: Option<[Tensor<2>; 4]>,
) -> (Tensor<2>, NextInput, Tensor<4>, Tensor<4>) {
    match attend {
        Some(prefetch) => {
            let (h, a, k, v) = decode_mlp_attn(
                attn, residual, gamma, wo, w_gate, w_up, w_down, eps, precision, barrier, gamma_in, wq, wk, wv, q_weight, k_weight, cos, sin, shape, eps_in, qk_eps,
                k_cache, v_cache, state, prefetch,
            );
            (h, NextInput::Attn(a), k, v)
        }
        None => {
            let (h, q, k, v) = decode_mlp_qkv(
                attn, residual, gamma, wo, w_gate, w_up, w_down, eps, precision, barrier, gamma_in, wq, wk, wv, q_weight, k_weight, cos, sin, shape, eps_in, qk_eps,
                k_cache, v_cache, state,
            );
            (h, NextInput::Q(q), k, v)
        }
    }
}

/// [`decode_mlp_qkv`] running on into the next layer's attention as well: returns `(stream,
/// attn: [1, heads * hd], k_cache, v_cache)`, the attention at `state[1]` over the updated
/// caches. One persistent launch where the device can (each q head's cube attends after its
/// norm + RoPE while the others read `prefetch`, the weights the next launch needs first, into
/// L2): bit for bit [`decode_mlp_qkv`] then [`attention_at_units`] at its cube width. Elsewhere
/// [`decode_mlp_qkv`] then [`attention_at_prefetch`]. Twin: `reference::decode_mlp_attn`.
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
    barrier: &Tensor<1, Int>,
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
    prefetch: [Tensor<2>; 4],
) -> (Tensor<2>, Tensor<2>, Tensor<4>, Tensor<4>) {
    let [w0, w1, w2, w3] = prefetch;
    let (h, a, k, v) = <Dispatch as FusedOps>::decode_mlp_attn(
        attn.into_dispatch(),
        residual.into_dispatch(),
        gamma.into_dispatch(),
        wo.into_dispatch(),
        w_gate.into_dispatch(),
        w_up.into_dispatch(),
        w_down.into_dispatch(),
        eps,
        precision,
        barrier.clone().into_dispatch(),
        gamma_in.into_dispatch(),
        wq.into_dispatch(),
        wk.into_dispatch(),
        wv.into_dispatch(),
        q_weight.into_dispatch(),
        k_weight.into_dispatch(),
        cos.into_dispatch(),
        sin.into_dispatch(),
        shape,
        eps_in,
        qk_eps,
        k_cache.into_dispatch(),
        v_cache.into_dispatch(),
        state.into_dispatch(),
        w0.into_dispatch(),
        w1.into_dispatch(),
        w2.into_dispatch(),
        w3.into_dispatch(),
    );
    let a: Tensor<3> = Tensor::from_dispatch(a);
    let [b, _, n] = a.dims();
    (Tensor::from_dispatch(h), a.reshape([b, n]), Tensor::from_dispatch(k), Tensor::from_dispatch(v))
}

/// [`decode_mlp_attn`] over `layers` consecutive layers, their tensors stacked along the first
/// dimension (layer-major rows): layer `l` of `gamma: [layers * hidden]`, `wo: [layers *
/// hidden, q_dim]`, `w_gate`, `w_up: [layers * inter, hidden]`, `w_down: [layers * hidden,
/// inter]` is decoder layer `l`'s post-attention norm and MLP, and layer `l` of `gamma_in`, `wq:
/// [(layers + 1) * heads * hd, hidden]`, `wk`, `wv`, `q_weight`, `k_weight: [(layers + 1) * hd]`
/// and the caches `[layers + 1, kv_heads, capacity, hd]` decoder layer `l`'s attention inputs
/// (so iteration `l` runs their layer `l + 1`: a model's stacks serve whole). `attn`,
/// `residual`: layer 0's attention output and stream; with `pre`, `residual` is the embedding
/// row and layer 0's attention inputs and attention run first (`qkv_rope_cache` without the add,
/// `attention_at_units`; `attn` unread). Returns the last layer's `(stream, attn: [1, heads *
/// hd], k_cache, v_cache)`: layer `l`'s outputs feed layer `l + 1` as [`decode_mlp_attn`]'s
/// would. On the CubeCL backend one persistent launch for all the layers where the device can
/// (`braid_kernels::decode_mlp::decode_layers`: no launch boundary between the layers, and each
/// layer's first weights in flight during the attention before), `prefetch` read into L2
/// during the last attention; bit for bit [`decode_mlp_attn`] layer by layer, which is what
/// runs where it cannot. Twin: `reference::decode_layers`.
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
    barrier: &Tensor<1, Int>,
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
    prefetch: [Tensor<2>; 4],
    layers: usize,
    pre: bool,
) -> (Tensor<2>, Tensor<2>, Tensor<4>, Tensor<4>) {
    let [w0, w1, w2, w3] = prefetch;
    let (h, a, k, v) = <Dispatch as FusedOps>::decode_layers(
        attn.into_dispatch(),
        residual.into_dispatch(),
        gamma.into_dispatch(),
        wo.into_dispatch(),
        w_gate.into_dispatch(),
        w_up.into_dispatch(),
        w_down.into_dispatch(),
        eps,
        precision,
        barrier.clone().into_dispatch(),
        gamma_in.into_dispatch(),
        wq.into_dispatch(),
        wk.into_dispatch(),
        wv.into_dispatch(),
        q_weight.into_dispatch(),
        k_weight.into_dispatch(),
        cos.into_dispatch(),
        sin.into_dispatch(),
        shape,
        eps_in,
        qk_eps,
        k_cache.into_dispatch(),
        v_cache.into_dispatch(),
        state.into_dispatch(),
        w0.into_dispatch(),
        w1.into_dispatch(),
        w2.into_dispatch(),
        w3.into_dispatch(),
        layers,
        pre,
    );
    let a: Tensor<3> = Tensor::from_dispatch(a);
    let [b, _, n] = a.dims();
    (Tensor::from_dispatch(h), a.reshape([b, n]), Tensor::from_dispatch(k), Tensor::from_dispatch(v))
}

/// The grid barrier rounds one [`decode_layers`] launch of `layers` layers (with `pre` or not)
/// with next layers' heads `shape` takes on `x`'s device, where it runs as one launch in bf16 or f16
/// (`braid_kernels::decode_mlp::rounds_layers` with the options it runs: `layers_options`).
pub fn decode_layers_rounds(x: &Tensor<2>, layers: usize, shape: QkShape, pre: bool) -> Option<u32> {
    let t = x.clone().try_into_primitive::<burn::backend::Cube>().ok()?;
    let nqkv = (shape.heads + 2 * shape.kv_heads) * shape.head_dim;
    let options = braid_kernels::decode_mlp::layers_options(&t.client, decode_mlp_options(), nqkv);
    Some(braid_kernels::decode_mlp::rounds_layers(true, true, options, layers as u32, pre))
}

/// Whether `x`'s device runs [`decode_layers`] as its one launch for layers of these widths and
/// heads in `x`'s dtype over caches of `capacity` positions
/// (`braid_kernels::decode_mlp::unsupported_layers`); elsewhere the model keeps one launch a
/// layer.
pub fn decode_layers_supported(x: &Tensor<2>, q_dim: usize, hidden: usize, inter: usize, shape: QkShape, capacity: usize) -> bool {
    x.clone().try_into_primitive::<burn::backend::Cube>().is_ok_and(|t| {
        let dtype = braid_kernels::TensorHandle::from(t.clone()).dtype;
        braid_kernels::decode_mlp::unsupported_layers(&t.client, dtype, q_dim, hidden, inter, shape, capacity, decode_mlp_options()).is_none()
    })
}

/// Whether `x` lives on the CubeCL backend (CUDA, wgpu), where `braid-kernels` launch.
pub fn on_cube(x: &Tensor<2>) -> bool {
    x.clone().try_into_primitive::<burn::backend::Cube>().is_ok()
}

/// Whether the batch-1 decode step runs all its layers but the last's MLP as one
/// [`decode_layers`] launch where the device can (`$BRAID_DECODE_LAYERS=0`: one
/// [`decode_mlp_attn`] launch a layer, for comparisons).
pub fn decode_layers_fused() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("BRAID_DECODE_LAYERS").map_or(true, |s| s.trim() != "0"))
}

/// Whether that launch runs the first layer's attention inputs and attention too
/// (`decode_layers`' `pre`, `$BRAID_DECODE_LAYERS_PRE=1`). Off: their own launches (1,443.4 /
/// 1,444.1 tok/s against 1,334.0 / 1,329.6 with `pre`, H100, 2026-11-27: bit for bit the same,
/// but the launch with a second copy of phases D and E before its loop needs 255 registers a
/// unit and spills, where it holds 252 and none without).
pub fn decode_layers_pre() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("BRAID_DECODE_LAYERS_PRE").is_ok_and(|s| s.trim() == "1"))
}

/// Whether the first layer's attention inputs and attention run as a launch of their own over
/// every cube (`decode_layers` with `pre` and no layer: phases D and E alone, from the embedding
/// row) before the one launch over the layers (`$BRAID_DECODE_LAYERS_FIRST=1`), instead of
/// `qkv_rope_cache` (a cube a head) and the attention launch (default). Bit for bit the same;
/// slower on the H100 (2026-11-27 21:30: 1,455.5 / 1,457.7 tok/s against 1,460.4 / 1,460.2).
pub fn decode_layers_first() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("BRAID_DECODE_LAYERS_FIRST").is_ok_and(|s| s.trim() == "1"))
}

/// [`attention_at`] with `units` units a cube on the CubeCL backend's row kernel (what
/// [`decode_mlp_attn`] computes; for its checks); the twin elsewhere. `[1, heads * hd]`.
pub fn attention_at_units(q: Tensor<4>, k_cache: Tensor<4>, v_cache: Tensor<4>, state: Tensor<1, Int>, precision: Precision, units: usize) -> Tensor<2> {
    let [b, nh, _, hd] = q.dims();
    let out: Tensor<3> = Tensor::from_dispatch(<Dispatch as FusedOps>::attention_at_units(
        q.into_dispatch(),
        k_cache.into_dispatch(),
        v_cache.into_dispatch(),
        state.into_dispatch(),
        precision,
        units,
    ));
    out.reshape([b, nh * hd])
}

/// The grid barrier rounds one launch of [`decode_mlp`] (`next = false`) or of
/// [`decode_mlp_qkv`] / [`decode_mlp_attn`] takes with `dtype` activations
/// (`braid_kernels::decode_mlp::rounds`): the ticket counter then advances by this many times
/// [`BARRIER_CUBES`] (the checks hold it to that).
pub fn decode_mlp_rounds(next: bool, dtype: burn::tensor::DType) -> u32 {
    braid_kernels::decode_mlp::rounds(next, dtype.size() == 2, decode_mlp_options())
}

/// The units a cube of [`decode_mlp_attn`]'s launch has (its attention's cube width).
pub fn decode_mlp_units() -> usize {
    decode_mlp_options().units
}

/// `add_rms_norm` then `gate_up_silu` in one launch at decode shapes: `(h, act)`. Bit for bit
/// the two ops.
pub fn add_rms_norm_gate_up(
    residual: Tensor<2>,
    x: Tensor<2>,
    gamma: Tensor<1>,
    w_gate: Tensor<2>,
    w_up: Tensor<2>,
    eps: f64,
    precision: Precision,
) -> (Tensor<2>, Tensor<2>) {
    let (h, act) = <Dispatch as FusedOps>::add_rms_norm_gate_up(
        residual.into_dispatch(),
        x.into_dispatch(),
        gamma.into_dispatch(),
        w_gate.into_dispatch(),
        w_up.into_dispatch(),
        eps,
        precision,
    );
    (Tensor::from_dispatch(h), Tensor::from_dispatch(act))
}

// Paged KV cache (`crate::paged`): pools `[blocks * PAGE_SIZE, kv_heads, hd]` shared by every
// sequence of a batch, a block table per sequence. On the CubeCL backend `paged_kv_write`
// updates the pools in place (the returned tensors are the same buffers); the twin returns new
// tensors, so callers keep what it returns. `slots`, `table` and `lens` are u32 on the CubeCL
// backend.

/// Writes `k, v: [1, kv_heads, rows, hd]` into the pools at `slots: [rows]`; returns the pools.
pub fn paged_kv_write(k_pool: Tensor<3>, v_pool: Tensor<3>, k: Tensor<4>, v: Tensor<4>, slots: Tensor<1, Int>) -> (Tensor<3>, Tensor<3>) {
    let (k, v) = <Dispatch as FusedOps>::paged_kv_write(
        k_pool.into_dispatch(),
        v_pool.into_dispatch(),
        k.into_dispatch(),
        v.into_dispatch(),
        slots.into_dispatch(),
    );
    (Tensor::from_dispatch(k), Tensor::from_dispatch(v))
}

/// Decode attention over the paged cache: row `r` of `q: [1, heads, rows, hd]` attends to keys
/// `0..lens[r]` held in blocks `table[r, ..]` (`table: [rows, max_blocks]`) -> `[rows, heads*hd]`.
pub fn paged_attention(
    q: Tensor<4>,
    k_pool: Tensor<3>,
    v_pool: Tensor<3>,
    table: Tensor<2, Int>,
    lens: Tensor<1, Int>,
    precision: Precision,
) -> Tensor<2> {
    Tensor::from_dispatch(<Dispatch as FusedOps>::paged_attention(
        q.into_dispatch(),
        k_pool.into_dispatch(),
        v_pool.into_dispatch(),
        table.into_dispatch(),
        lens.into_dispatch(),
        precision,
    ))
}

/// Causal attention of a prefill batch over the paged cache: the rows of `q: [1, heads, rows,
/// hd]` belong to `spans` in order, span `s`'s rows at positions `start..start + len` of the
/// sequence whose blocks are `table[s, ..]` (`table: [spans, max_blocks]`); this step's keys are
/// already in the pools -> `[rows, heads * hd]`.
pub fn paged_prefill_attention(
    q: Tensor<4>,
    k_pool: Tensor<3>,
    v_pool: Tensor<3>,
    table: Tensor<2, Int>,
    spans: &[PrefillSpan],
    precision: Precision,
) -> Tensor<2> {
    paged_prefill_attention_tiled(q, k_pool, v_pool, table, spans, precision, None)
}

/// [`paged_prefill_attention`] in the tile shape `tiles` where the kernel runs (it must fit the
/// device: [`prefill_tiles_fit`]); `None`: the kernel's default. The twin has no tiles.
pub fn paged_prefill_attention_tiled(
    q: Tensor<4>,
    k_pool: Tensor<3>,
    v_pool: Tensor<3>,
    table: Tensor<2, Int>,
    spans: &[PrefillSpan],
    precision: Precision,
    tiles: Option<PrefillTiles>,
) -> Tensor<2> {
    Tensor::from_dispatch(<Dispatch as FusedOps>::paged_prefill_attention(
        q.into_dispatch(),
        k_pool.into_dispatch(),
        v_pool.into_dispatch(),
        table.into_dispatch(),
        spans.to_vec(),
        precision,
        tiles,
    ))
}

/// The prefill attention's tile shape on `device` for `hd`-wide heads when no call asks for one
/// (`None` off the CubeCL backend, or when none fits).
pub fn prefill_tiles(device: &burn::tensor::Device, hd: usize) -> Option<PrefillTiles> {
    let t = Tensor::<1>::zeros([1], device).try_into_primitive::<burn::backend::Cube>().ok()?;
    braid_kernels::attention::prefill_tiles(&t.client, hd, braid_kernels::attention::prefill_vector(hd), None).ok()
}

/// Whether [`paged_prefill_attention`] can run on `device` for `hd`-wide heads: off the CubeCL
/// backend always (the twin runs), on it when some tile shape fits the device.
pub fn prefill_kernel_runs(device: &burn::tensor::Device, hd: usize) -> bool {
    match Tensor::<1>::zeros([1], device).try_into_primitive::<burn::backend::Cube>() {
        Ok(t) => braid_kernels::attention::prefill_tiles(&t.client, hd, braid_kernels::attention::prefill_vector(hd), None).is_ok(),
        Err(_) => true,
    }
}

/// Whether the prefill attention can run in `tiles` on `device` for `hd`-wide heads (false off
/// the CubeCL backend).
pub fn prefill_tiles_fit(device: &burn::tensor::Device, tiles: &PrefillTiles, hd: usize) -> bool {
    let Ok(t) = Tensor::<1>::zeros([1], device).try_into_primitive::<burn::backend::Cube>() else { return false };
    braid_kernels::attention::prefill_tiles_fit(&t.client, tiles, hd, braid_kernels::attention::prefill_vector(hd))
}

/// The inputs of a batched decode step from device buffers: `embed: [vocab, hidden]`, f32
/// `cos_table, sin_table: [capacity, hd]`, `ids, pos: [rows]` (u32 on the CubeCL backend) ->
/// `(x: [rows, hidden], cos: [rows, hd], sin: [rows, hd])`.
pub fn batch_inputs(embed: Tensor<2>, cos_table: Tensor<2>, sin_table: Tensor<2>, ids: Tensor<1, Int>, pos: Tensor<1, Int>) -> (Tensor<2>, Tensor<2>, Tensor<2>) {
    let (x, c, s) = <Dispatch as FusedOps>::batch_inputs(
        embed.into_dispatch(),
        cos_table.into_dispatch(),
        sin_table.into_dispatch(),
        ids.into_dispatch(),
        pos.into_dispatch(),
    );
    (Tensor::from_dispatch(x), Tensor::from_dispatch(c), Tensor::from_dispatch(s))
}

/// `src`'s values in `dst`'s buffer (`[n]` each, u32 on the CubeCL backend), written in place
/// there so a captured graph reading `dst` sees them; returns `dst` (the twin returns `src`).
pub fn copy_into(dst: Tensor<1, Int>, src: Tensor<1, Int>) -> Tensor<1, Int> {
    Tensor::from_dispatch(<Dispatch as FusedOps>::copy_into(dst.into_dispatch(), src.into_dispatch()))
}
