//! Flex (CPU) runs the reference twins.

use burn::backend::Flex;
use burn::backend::tensor::{FloatTensor, IntTensor};
use burn::tensor::{Int, Tensor};

use super::{FusedOps, Precision, PrefillSpan, PrefillTiles, QkShape, reference};

fn wrap<const D: usize>(p: FloatTensor<Flex>) -> Tensor<D> {
    Tensor::from_primitive::<Flex>(p)
}

fn unwrap<const D: usize>(t: Tensor<D>) -> FloatTensor<Flex> {
    t.try_into_primitive::<Flex>().expect("a reference twin of a Flex tensor stays on Flex")
}

fn iwrap(p: IntTensor<Flex>) -> Tensor<1, Int> {
    Tensor::from_primitive::<Flex>(p)
}

fn iunwrap(t: Tensor<1, Int>) -> IntTensor<Flex> {
    t.try_into_primitive::<Flex>().expect("a reference twin of a Flex tensor stays on Flex")
}

impl FusedOps for Flex {
    fn add_rms_norm(
        residual: FloatTensor<Self>,
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        eps: f64,
        precision: Precision,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let (h, n) = reference::add_rms_norm(wrap(residual), wrap(x), wrap(weight), eps, precision);
        (unwrap(h), unwrap(n))
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
        unwrap(reference::rms_norm_qkv(wrap(x), wrap(gamma), wrap(wq), wrap(wk), wrap(wv), eps, precision))
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
        let (q, k, v) = reference::qk_norm_rope(
            wrap(q),
            wrap(k),
            wrap(v),
            wrap(q_weight),
            wrap(k_weight),
            wrap(cos),
            wrap(sin),
            shape,
            eps,
            precision,
        );
        (unwrap(q), unwrap(k), unwrap(v))
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
        let (q, k, v) = reference::qk_norm_rope_cache(
            wrap(q),
            wrap(k),
            wrap(v),
            wrap(q_weight),
            wrap(k_weight),
            wrap(cos),
            wrap(sin),
            shape,
            eps,
            precision,
            wrap(k_cache),
            wrap(v_cache),
            iwrap(state),
        );
        (unwrap(q), unwrap(k), unwrap(v))
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
        let (h, q, k, v) = reference::qkv_rope_cache(
            wrap(x),
            wrap(residual),
            add_residual,
            wrap(gamma),
            wrap(wq),
            wrap(wk),
            wrap(wv),
            wrap(q_weight),
            wrap(k_weight),
            wrap(cos),
            wrap(sin),
            shape,
            eps,
            qk_eps,
            precision,
            wrap(k_cache),
            wrap(v_cache),
            iwrap(state),
        );
        (unwrap(h), unwrap(q), unwrap(k), unwrap(v))
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
        let (q, k, v) = reference::qk_norm_rope_pool(
            wrap(q),
            wrap(k),
            wrap(v),
            wrap(q_weight),
            wrap(k_weight),
            wrap(cos),
            wrap(sin),
            shape,
            eps,
            precision,
            wrap(k_pool),
            wrap(v_pool),
            iwrap(slots),
        );
        (unwrap(q), unwrap(k), unwrap(v))
    }

    fn silu_mul(gate: FloatTensor<Self>, up: FloatTensor<Self>, precision: Precision) -> FloatTensor<Self> {
        unwrap(reference::silu_mul(wrap(gate), wrap(up), precision))
    }

    fn attention(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        past: usize,
        precision: Precision,
    ) -> FloatTensor<Self> {
        let q: Tensor<4> = wrap(q);
        let [b, nh, t, hd] = q.dims();
        unwrap(reference::attention(q, wrap(k), wrap(v), past, precision).reshape([b, t, nh * hd]))
    }

    fn linear(x: FloatTensor<Self>, w: FloatTensor<Self>) -> FloatTensor<Self> {
        unwrap(reference::linear(wrap(x), wrap(w)))
    }

    fn gate_up_silu(
        x: FloatTensor<Self>,
        w_gate: FloatTensor<Self>,
        w_up: FloatTensor<Self>,
        precision: Precision,
    ) -> FloatTensor<Self> {
        unwrap(reference::gate_up_silu(wrap(x), wrap(w_gate), wrap(w_up), precision))
    }

    fn argmax(logits: FloatTensor<Self>) -> IntTensor<Self> {
        let ids: Tensor<1, Int> = reference::argmax(wrap(logits));
        ids.try_into_primitive::<Flex>().expect("a reference twin of a Flex tensor stays on Flex")
    }

    fn decode_inputs(
        embed: FloatTensor<Self>,
        cos_table: FloatTensor<Self>,
        sin_table: FloatTensor<Self>,
        state: IntTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let (x, c, s) = reference::decode_inputs(wrap(embed), wrap(cos_table), wrap(sin_table), iwrap(state));
        (unwrap(x), unwrap(c), unwrap(s))
    }

    fn kv_write(
        k_cache: FloatTensor<Self>,
        v_cache: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        state: IntTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let (k, v) = reference::kv_write(wrap(k_cache), wrap(v_cache), wrap(k), wrap(v), iwrap(state));
        (unwrap(k), unwrap(v))
    }

    fn attention_at(
        q: FloatTensor<Self>,
        k_cache: FloatTensor<Self>,
        v_cache: FloatTensor<Self>,
        state: IntTensor<Self>,
        precision: Precision,
    ) -> FloatTensor<Self> {
        let q: Tensor<4> = wrap(q);
        let [b, nh, _, hd] = q.dims();
        let out = reference::attention_at(q, wrap(k_cache), wrap(v_cache), iwrap(state), precision);
        unwrap(out.reshape([b, 1, nh * hd]))
    }

    fn attention_at_prefetch(
        q: FloatTensor<Self>,
        k_cache: FloatTensor<Self>,
        v_cache: FloatTensor<Self>,
        state: IntTensor<Self>,
        precision: Precision,
        _w0: FloatTensor<Self>,
        _w1: FloatTensor<Self>,
        _w2: FloatTensor<Self>,
        _w3: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        // No L2 to fill on the CPU.
        Self::attention_at(q, k_cache, v_cache, state, precision)
    }

    fn advance(ids: IntTensor<Self>, state: IntTensor<Self>, history: IntTensor<Self>) -> (IntTensor<Self>, IntTensor<Self>) {
        let (s, h) = reference::advance(iwrap(ids), iwrap(state), iwrap(history));
        (iunwrap(s), iunwrap(h))
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
        let tables = [wrap(embed), wrap(cos_table), wrap(sin_table)];
        let next = [wrap(next_x), wrap(next_cos), wrap(next_sin)];
        let (s, h, [x, c, si]) = reference::greedy_head(wrap(residual), wrap(x), wrap(gamma), eps, precision, wrap(w), iwrap(state), iwrap(history), tables, next);
        (iunwrap(s), iunwrap(h), unwrap(x), unwrap(c), unwrap(si))
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
        let (h, qkv) = reference::add_rms_norm_qkv(wrap(residual), wrap(x), wrap(gamma), wrap(wq), wrap(wk), wrap(wv), eps, precision);
        (unwrap(h), unwrap(qkv))
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
        let (h, act) = reference::add_rms_norm_gate_up(wrap(residual), wrap(x), wrap(gamma), wrap(w_gate), wrap(w_up), eps, precision);
        (unwrap(h), unwrap(act))
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
        _barrier: IntTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let (h, out) =
            reference::decode_mlp(wrap(attn), wrap(residual), wrap(gamma), wrap(wo), wrap(w_gate), wrap(w_up), wrap(w_down), eps, precision);
        (unwrap(h), unwrap(out))
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
        _barrier: IntTensor<Self>,
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
        let (h, q, k, v) = reference::decode_mlp_qkv(
            wrap(attn),
            wrap(residual),
            wrap(gamma),
            wrap(wo),
            wrap(w_gate),
            wrap(w_up),
            wrap(w_down),
            eps,
            precision,
            wrap(gamma_in),
            wrap(wq),
            wrap(wk),
            wrap(wv),
            wrap(q_weight),
            wrap(k_weight),
            wrap(cos),
            wrap(sin),
            shape,
            eps_in,
            qk_eps,
            wrap(k_cache),
            wrap(v_cache),
            iwrap(state),
        );
        (unwrap(h), unwrap(q), unwrap(k), unwrap(v))
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
        _barrier: IntTensor<Self>,
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
        _w0: FloatTensor<Self>,
        _w1: FloatTensor<Self>,
        _w2: FloatTensor<Self>,
        _w3: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let (h, a, k, v) = reference::decode_mlp_attn(
            wrap(attn),
            wrap(residual),
            wrap(gamma),
            wrap(wo),
            wrap(w_gate),
            wrap(w_up),
            wrap(w_down),
            eps,
            precision,
            wrap(gamma_in),
            wrap(wq),
            wrap(wk),
            wrap(wv),
            wrap(q_weight),
            wrap(k_weight),
            wrap(cos),
            wrap(sin),
            shape,
            eps_in,
            qk_eps,
            wrap(k_cache),
            wrap(v_cache),
            iwrap(state),
        );
        let [b, n] = a.dims();
        (unwrap(h), unwrap(a.reshape([b, 1, n])), unwrap(k), unwrap(v))
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
        _barrier: IntTensor<Self>,
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
        _w0: FloatTensor<Self>,
        _w1: FloatTensor<Self>,
        _w2: FloatTensor<Self>,
        _w3: FloatTensor<Self>,
        layers: usize,
        pre: bool,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let (h, a, k, v) = reference::decode_layers(
            wrap(attn),
            wrap(residual),
            wrap(gamma),
            wrap(wo),
            wrap(w_gate),
            wrap(w_up),
            wrap(w_down),
            eps,
            precision,
            wrap(gamma_in),
            wrap(wq),
            wrap(wk),
            wrap(wv),
            wrap(q_weight),
            wrap(k_weight),
            wrap(cos),
            wrap(sin),
            shape,
            eps_in,
            qk_eps,
            wrap(k_cache),
            wrap(v_cache),
            iwrap(state),
            layers,
            pre,
        );
        let [b, n] = a.dims();
        (unwrap(h), unwrap(a.reshape([b, 1, n])), unwrap(k), unwrap(v))
    }

    fn attention_at_units(
        q: FloatTensor<Self>,
        k_cache: FloatTensor<Self>,
        v_cache: FloatTensor<Self>,
        state: IntTensor<Self>,
        precision: Precision,
        _units: usize,
    ) -> FloatTensor<Self> {
        Self::attention_at(q, k_cache, v_cache, state, precision)
    }

    fn paged_kv_write(
        k_pool: FloatTensor<Self>,
        v_pool: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        slots: IntTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let (k, v) = reference::paged_kv_write(wrap(k_pool), wrap(v_pool), wrap(k), wrap(v), iwrap(slots));
        (unwrap(k), unwrap(v))
    }

    fn paged_attention(
        q: FloatTensor<Self>,
        k_pool: FloatTensor<Self>,
        v_pool: FloatTensor<Self>,
        table: IntTensor<Self>,
        lens: IntTensor<Self>,
        precision: Precision,
    ) -> FloatTensor<Self> {
        let table = Tensor::<2, Int>::from_primitive::<Flex>(table);
        unwrap(reference::paged_attention(wrap(q), wrap(k_pool), wrap(v_pool), table, iwrap(lens), precision))
    }

    fn paged_prefill_attention(
        q: FloatTensor<Self>,
        k_pool: FloatTensor<Self>,
        v_pool: FloatTensor<Self>,
        table: IntTensor<Self>,
        spans: Vec<PrefillSpan>,
        precision: Precision,
        _tiles: Option<PrefillTiles>,
    ) -> FloatTensor<Self> {
        let table = Tensor::<2, Int>::from_primitive::<Flex>(table);
        unwrap(reference::paged_prefill_attention(wrap(q), wrap(k_pool), wrap(v_pool), table, &spans, precision))
    }

    fn batch_inputs(
        embed: FloatTensor<Self>,
        cos_table: FloatTensor<Self>,
        sin_table: FloatTensor<Self>,
        ids: IntTensor<Self>,
        pos: IntTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let (x, c, s) = reference::batch_inputs(wrap(embed), wrap(cos_table), wrap(sin_table), iwrap(ids), iwrap(pos));
        (unwrap(x), unwrap(c), unwrap(s))
    }

    fn copy_into(dst: IntTensor<Self>, src: IntTensor<Self>) -> IntTensor<Self> {
        iunwrap(reference::copy_into(iwrap(dst), iwrap(src)))
    }
}
