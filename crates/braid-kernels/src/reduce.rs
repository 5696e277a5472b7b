//! Helpers shared by the kernels: reductions across the units of one cube (the norms' through
//! plane sums where the device has them, else shared memory), and rounding to the activation dtype.

use cubecl::prelude::*;
use cubecl::std::tensor::TensorHandle;

use crate::KernelError;
use crate::check::{Check, output_like};

/// Sum of `value` over the `block` units along x of this cube; every unit gets the result.
/// `block` must be a power of two equal to `CUBE_DIM_X`, on CUDA at least a plane (32: a
/// shuffle over a part of a warp reads lanes that do not exist). Every kernel's RMSNorm and
/// QK-norm sum goes through here (or [`block_sum_pair`]), so their bits stay equal to one
/// another: where the device has plane operations ([`plane_norms`]), one plane sum and the
/// planes' sums through shared memory ([`cube_reduce`]'s), two cube barriers where the
/// shared-memory tree takes ten at 256 units; else that tree. Measured on the H100
/// (2026-11-27 13:22): batch-1 decode 1,329.3 / 1,330.0 tok/s against the tree's 1,301.0 /
/// 1,301.3, same call.
#[cube]
pub fn block_sum(value: f32, #[comptime] block: usize) -> f32 {
    if comptime!(plane_norms()) {
        cube_reduce(value, false, true, block)
    } else {
        block_reduce(value, false, block)
    }
}

static PLANE_NORMS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();

/// Records, once per process, whether the norm sums ([`block_sum`], [`block_sum_pair`]) go
/// through plane operations: whether the device has them. Every launcher whose kernel sums a
/// norm calls it before its launch, so the first device a process launches such a kernel on
/// decides for all (one way for every kernel keeps their bits equal to one another).
pub(crate) fn note_device(client: &Client) {
    PLANE_NORMS.get_or_init(|| client.properties().features.plane.contains(cubecl::features::Plane::Ops));
}

/// Whether the norm sums go through plane operations ([`note_device`]; planes until a device
/// has been noted). Read when a kernel is expanded.
pub fn plane_norms() -> bool {
    *PLANE_NORMS.get().unwrap_or(&true)
}

/// Maximum of `value` over the units of the cube, as [`block_sum`].
#[cube]
pub fn block_max(value: f32, #[comptime] block: usize) -> f32 {
    block_reduce(value, true, block)
}

#[cube]
fn block_reduce(value: f32, #[comptime] is_max: bool, #[comptime] block: usize) -> f32 {
    let mut scratch = Shared::<[f32]>::new_slice(block);
    let unit = UNIT_POS_X as usize;
    scratch[unit] = value;
    sync_cube();
    // A runtime stride: a comptime one, halved in the loop, produced IR that failed
    // verification on wgpu ("expected cube.ptr, found cube.index").
    let mut stride = (CUBE_DIM_X / 2) as usize;
    while stride > 0 {
        if unit < stride {
            if is_max {
                scratch[unit] = max(scratch[unit], scratch[unit + stride]);
            } else {
                scratch[unit] += scratch[unit + stride];
            }
        }
        sync_cube();
        stride /= 2;
    }
    let total = scratch[0];
    sync_cube();
    total
}

/// [`block_sum`] of `a` and of `b` together: each sum bit for bit [`block_sum`]'s (the same
/// additions in the same order), with one set of cube barriers for both.
#[cube]
pub fn block_sum_pair(a: f32, b: f32, #[comptime] block: usize) -> (f32, f32) {
    if comptime!(plane_norms()) {
        // (`cube_reduce`'s plane sums, for both values, the lanes together first: `block_sum`.)
        sync_plane();
        let va = plane_sum(a);
        let vb = plane_sum(b);
        let mut partials = Shared::<[f32]>::new_slice(comptime!(2 * block));
        let unit = UNIT_POS_X as usize;
        let plane = PLANE_DIM as usize;
        if UNIT_POS_PLANE == 0 {
            partials[unit / plane] = va;
            partials[block + unit / plane] = vb;
        }
        sync_cube();
        let mut ta = partials[0];
        let mut tb = partials[block];
        let n = (CUBE_DIM_X / PLANE_DIM) as usize;
        for i in 1..n {
            ta += partials[i];
            tb += partials[block + i];
        }
        sync_cube();
        (ta, tb)
    } else {
        block_sum_pair_tree(a, b, block)
    }
}

/// [`block_sum_pair`] through the shared-memory tree (devices without plane operations).
#[cube]
fn block_sum_pair_tree(a: f32, b: f32, #[comptime] block: usize) -> (f32, f32) {
    let mut scratch = Shared::<[f32]>::new_slice(comptime!(2 * block));
    let unit = UNIT_POS_X as usize;
    scratch[unit] = a;
    scratch[block + unit] = b;
    sync_cube();
    let mut stride = (CUBE_DIM_X / 2) as usize;
    while stride > 0 {
        if unit < stride {
            scratch[unit] += scratch[unit + stride];
            scratch[block + unit] += scratch[block + unit + stride];
        }
        sync_cube();
        stride /= 2;
    }
    let total = (scratch[0], scratch[block]);
    sync_cube();
    total
}

/// [`block_sum`] or [`block_max`], through plane (warp) reductions where `planes` (the device
/// has plane operations): one reduction per plane, then the planes' results through shared
/// memory, two cube barriers instead of `2 + log2(block)`. The order of the f32 additions
/// differs from the shared-memory tree's, so the two paths may differ in the last bits.
/// Called where every unit of the cube arrives (it has cube barriers).
#[cube]
pub fn cube_reduce(value: f32, #[comptime] is_max: bool, #[comptime] planes: bool, #[comptime] block: usize) -> f32 {
    if planes {
        // The plane's lanes together first: CubeCL's CUDA (LLVM) plane operations shuffle among
        // `activemask()`'s lanes, those that happen to be converged, and a reduction may follow
        // branches (a head's words polled, `active` lanes): without this the QK-norm sums came
        // out wrong and varied run to run (decode_mlp_qkv, H100, 2026-11-27 12:57). A no-op for
        // lanes already together, so the bits of a correct run are unchanged.
        sync_plane();
        let v = if is_max { plane_max(value) } else { plane_sum(value) };
        let mut scratch = Shared::<[f32]>::new_slice(block);
        let unit = UNIT_POS_X as usize;
        let plane = PLANE_DIM as usize;
        if UNIT_POS_PLANE == 0 {
            scratch[unit / plane] = v;
        }
        sync_cube();
        let mut total = scratch[0];
        let n = (CUBE_DIM_X / PLANE_DIM) as usize;
        for i in 1..n {
            total = if is_max { max(total, scratch[i]) } else { total + scratch[i] };
        }
        sync_cube();
        total
    } else {
        block_reduce(value, is_max, block)
    }
}

/// `value` rounded to F and back: where PyTorch would store an intermediate in F.
#[cube]
pub fn round<F: Float>(value: f32) -> f32 {
    f32::cast_from(F::cast_from(value))
}

/// The probe's launch: one cube of `block` units, unit `u` holding `values[u]` and
/// `values[block + u]`; `out = [block_sum(a), block_sum(b), block_sum_pair(a, b)]`.
#[cube(launch)]
fn sum_pair_probe_kernel(values: &Tensor<f32>, out: &mut Tensor<f32>, #[comptime] block: usize) {
    let u = UNIT_POS_X as usize;
    let a = values[u];
    let b = values[block + u];
    let sa = block_sum(a, block);
    let sb = block_sum(b, block);
    let (pa, pb) = block_sum_pair(a, b, block);
    if u == 0 {
        out[0] = sa;
        out[1] = sb;
        out[2] = pa;
        out[3] = pb;
    }
}

/// Sums the two rows of `values: [2, n]` (f32, `n` a power of two up to 256: one cube) with
/// [`block_sum`] each and with [`block_sum_pair`] together: `[sum0, sum1, pair0, pair1]`
/// (`[4]` f32). The pair's sums must equal the single ones bit for bit (`decode_mlp`'s phase E
/// relies on it to give `qkv_rope`'s bits); tested on wgpu, where the decode launch cannot run
/// (on CUDA a width under 32 would reduce over a part of a warp: see [`block_sum`]).
pub fn block_sum_pair_probe(client: &Client, values: &TensorHandle) -> Result<TensorHandle, KernelError> {
    let c = Check::new("block_sum_pair_probe");
    let f32_t = ElemType::Float(cubecl::ir::FloatKind::F32);
    c.same_dtype("values", values, f32_t)?;
    c.contiguous("values", values)?;
    let n = values.shape().get(1).copied().unwrap_or(0);
    if values.shape().len() != 2 || values.shape()[0] != 2 || !n.is_power_of_two() || n > 256 {
        return Err(c.shape_err("values", values, "[2, n], n a power of two up to 256".into()));
    }
    let out = output_like(client, &[4], f32_t);
    note_device(client);
    sum_pair_probe_kernel::launch(client, CubeCount::new_1d(1), CubeDim::new_1d(n as u32), values.clone().into_arg(), out.clone().into_arg(), n);
    Ok(out)
}
