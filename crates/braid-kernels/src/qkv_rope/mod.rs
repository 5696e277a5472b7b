//! The batch-1 decode step's attention inputs in one launch: (residual add +) RMSNorm + q/k/v
//! projections + QK-norm + RoPE + the KV-cache write. It replaces `add_rms_norm_qkv` (or
//! `rms_norm_qkv`) followed by `qk_norm_rope` into the cache, and gives their bits: the same
//! staging function, per-feature dot order and pair function (see `kernel.rs`). One cube per
//! head, so a head's norm needs no other cube; needs plane operations.

pub(crate) mod kernel;

use cubecl::features::Plane;
use cubecl::prelude::*;
use cubecl::std::tensor::TensorHandle;

use crate::check::{Check, output_like};
use crate::qk_norm_rope::QkShape;
use crate::{KernelError, Precision};

const NAME: &str = "qkv_rope_cache";

/// The inputs of one call (the caches and `state` are written or read in place).
pub struct QkvRopeArgs {
    /// `[1, hidden]`: the layer input, or with `residual` the previous layer's MLP output.
    pub x: TensorHandle,
    /// `[1, hidden]`: the residual stream `x` is added to first (the sum is returned).
    pub residual: Option<TensorHandle>,
    pub head: HeadInputs,
}

/// A layer's attention inputs past the residual stream: what `qkv_rope_cache` and
/// `decode_mlp::decode_mlp_qkv` (which runs them for the next layer) read and write.
pub struct HeadInputs {
    /// `[hidden]`: the input RMSNorm's weight.
    pub gamma: TensorHandle,
    /// `[heads * hd, hidden]`, `[kv_heads * hd, hidden]` x 2.
    pub wq: TensorHandle,
    pub wk: TensorHandle,
    pub wv: TensorHandle,
    /// `[hd]`: q_norm's and k_norm's weights.
    pub q_weight: TensorHandle,
    pub k_weight: TensorHandle,
    /// `[1, hd]` f32: the RoPE rows of the step's position.
    pub cos: TensorHandle,
    pub sin: TensorHandle,
    /// `[1, kv_heads, capacity, hd]`, the last dim contiguous: written at `state[1]`.
    pub k_cache: TensorHandle,
    pub v_cache: TensorHandle,
    /// `[2]` u32: token, position (`state[1] < capacity`: the caller's invariant).
    pub state: TensorHandle,
}

impl HeadInputs {
    /// Shapes, dtypes and layouts against `shape` (batch 1, one row), an input `hidden` wide
    /// and the activations' `dtype`; an even head_dim.
    pub(crate) fn check(&self, c: &Check, shape: QkShape, hidden: usize, dtype: ElemType) -> Result<(), KernelError> {
        self.check_layers(c, shape, hidden, dtype, 1)
    }

    /// [`Self::check`] of `layers` layers' tensors stacked (`decode_mlp::decode_layers`): the
    /// weights' rows and the caches' first dimension `layers` times one layer's.
    pub(crate) fn check_layers(&self, c: &Check, shape: QkShape, hidden: usize, dtype: ElemType, layers: usize) -> Result<(), KernelError> {
        let QkShape { batch, seq, heads, kv_heads, head_dim: hd } = shape;
        if batch != 1 || seq != 1 {
            return Err(KernelError::Unsupported { kernel: c.kernel(), what: format!("{batch} x {seq} rows"), why: "one decode row only".into() });
        }
        if hd == 0 || hd % 2 != 0 {
            return Err(KernelError::Unsupported { kernel: c.kernel(), what: format!("head_dim {hd}"), why: "RoPE pairs need an even head_dim".into() });
        }
        c.shape("gamma", &self.gamma, &[layers * hidden])?;
        c.shape("wq", &self.wq, &[layers * heads * hd, hidden])?;
        c.shape("wk", &self.wk, &[layers * kv_heads * hd, hidden])?;
        c.shape("wv", &self.wv, &[layers * kv_heads * hd, hidden])?;
        c.shape("q_weight", &self.q_weight, &[layers * hd])?;
        c.shape("k_weight", &self.k_weight, &[layers * hd])?;
        for (name, t) in [("gamma", &self.gamma), ("wq", &self.wq), ("wk", &self.wk), ("wv", &self.wv), ("q_weight", &self.q_weight), ("k_weight", &self.k_weight)] {
            c.same_dtype(name, t, dtype)?;
            c.contiguous(name, t)?;
        }
        let f32_ty = ElemType::Float(cubecl::ir::FloatKind::F32);
        for (name, t) in [("cos", &self.cos), ("sin", &self.sin)] {
            c.shape(name, t, &[1, hd])?;
            c.same_dtype(name, t, f32_ty)?;
            c.contiguous(name, t)?;
        }
        for (name, t) in [("k_cache", &self.k_cache), ("v_cache", &self.v_cache)] {
            let s = t.shape();
            if s.len() != 4 || s[0] != layers || s[1] != kv_heads || s[2] == 0 || s[3] != hd {
                return Err(c.shape_err(name, t, format!("[{layers}, {kv_heads}, capacity, {hd}]")));
            }
            c.same_dtype(name, t, dtype)?;
            if hd > 1 && t.strides()[3] != 1 {
                return Err(KernelError::Layout { kernel: c.kernel(), tensor: name, strides: t.strides().to_vec() });
            }
        }
        c.shape("state", &self.state, &[2])?;
        c.same_dtype("state", &self.state, ElemType::UInt(cubecl::ir::UIntKind::U32))
    }
}

/// Whether this device can run the kernel (it sums each feature over a plane).
pub fn supported(client: &Client) -> bool {
    client.properties().features.plane.contains(Plane::Ops)
}

/// Runs the fused step; returns `(sum, q)`: the residual sum `[1, hidden]` when `residual` was
/// given, and `q: [1, heads, 1, hd]`. `block`: units per cube (256, 512 or 1,024); `ahead`:
/// features whose weights a plane has in flight at once (2 or 4).
#[allow(clippy::too_many_arguments)]
pub fn qkv_rope_cache(
    client: &Client,
    args: QkvRopeArgs,
    shape: QkShape,
    eps: f32,
    qk_eps: f32,
    precision: Precision,
    block: usize,
    ahead: usize,
) -> Result<(Option<TensorHandle>, TensorHandle), KernelError> {
    let c = Check::new(NAME);
    let QkShape { heads, kv_heads, head_dim: hd, .. } = shape;
    let [rows, hidden] = c.matrix("x", &args.x)?;
    if rows != 1 {
        return Err(c.shape_err("x", &args.x, format!("[1, {hidden}]")));
    }
    let dtype = args.x.dtype;
    if let Some(r) = &args.residual {
        c.shape("residual", r, &[1, hidden])?;
        c.same_dtype("residual", r, dtype)?;
    }
    args.head.check(&c, shape, hidden, dtype)?;
    let unsupported = |what: String, why: &str| KernelError::Unsupported { kernel: NAME, what, why: why.into() };
    if !supported(client) {
        return Err(unsupported("this device".into(), "no plane operations"));
    }
    if ![256, 512, 1024].contains(&block) || hd / 2 > block {
        return Err(unsupported(format!("{block} units per cube"), "256, 512 or 1,024, at least head_dim / 2"));
    }
    if ahead != 2 && ahead != 4 {
        return Err(unsupported(format!("{ahead} features in flight"), "2 or 4"));
    }
    if hidden > crate::gemv::SHARED_F32 {
        return Err(unsupported(format!("input width {hidden}"), "a staged row must fit the GEMV's shared memory"));
    }
    // 16-byte weight vectors where the row length allows (the GEMV's choice).
    let mut vector = (16 / dtype.size()).max(1);
    while hidden % vector != 0 {
        vector /= 2;
    }
    let q = output_like(client, &[1, heads, 1, hd], dtype);
    let add_residual = args.residual.is_some();
    let sum = args.residual.as_ref().map(|_| output_like(client, &[1, hidden], dtype));
    // Without a residual: `x` stands in for it (never read) and a small buffer for the sum
    // (never written).
    let residual = args.residual.unwrap_or_else(|| args.x.clone());
    let sum_arg = sum.clone().unwrap_or_else(|| output_like(client, &[1], dtype));
    crate::reduce::note_device(client);
    kernel::qkv_rope_kernel::launch(
        client,
        CubeCount::new_1d((heads + 2 * kv_heads) as u32),
        CubeDim::new_1d(block as u32),
        vector,
        args.x.into_arg(),
        residual.into_arg(),
        sum_arg.into_arg(),
        args.head.gamma.into_arg(),
        args.head.wq.into_arg(),
        args.head.wk.into_arg(),
        args.head.wv.into_arg(),
        args.head.q_weight.into_arg(),
        args.head.k_weight.into_arg(),
        args.head.cos.into_arg(),
        args.head.sin.into_arg(),
        q.clone().into_arg(),
        args.head.k_cache.into_arg(),
        args.head.v_cache.into_arg(),
        args.head.state.into_arg(),
        eps,
        qk_eps,
        precision.f32_internal(),
        add_residual,
        hidden,
        crate::gemv::BLOCK,
        block,
        client.properties().hardware.plane_size_min.max(1) as usize,
        hd / 2,
        ahead,
        dtype,
    );
    Ok((sum, q))
}
