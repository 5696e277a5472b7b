//! Helpers shared by the kernels: reductions across the units of one cube, through shared
//! memory (works on every runtime, planes or not), and rounding to the activation dtype.

use cubecl::prelude::*;

/// Sum of `value` over the `block` units along x of this cube; every unit gets the result.
/// `block` must be a power of two equal to `CUBE_DIM_X`.
#[cube]
pub fn block_sum(value: f32, #[comptime] block: usize) -> f32 {
    block_reduce(value, false, block)
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

/// [`block_sum`] of `a` and of `b` through one tree: each sum bit for bit [`block_sum`]'s (the
/// same additions in the same order), with one set of cube barriers for both.
#[cube]
pub fn block_sum_pair(a: f32, b: f32, #[comptime] block: usize) -> (f32, f32) {
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
#[cube]
pub fn cube_reduce(value: f32, #[comptime] is_max: bool, #[comptime] planes: bool, #[comptime] block: usize) -> f32 {
    if planes {
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
