use cubecl::prelude::*;

/// One cube per row: the index of the largest value (the first one on ties, as `torch.argmax`;
/// NaN and -inf never win (WGSL has no infinity literal; the start value is f32::MIN); a row
/// without a finite number gives `vocab`). Units scan strided columns, then a shared-memory tree keeps (value, index).
#[cube(launch)]
pub(super) fn argmax_kernel<F: Float>(
    logits: &Tensor<F>,   // [rows, vocab]
    out: &mut Tensor<u32>, // [rows]
    #[comptime] block: usize,
    #[define(F)] _dtype: ElemType,
) {
    let row = CUBE_POS_X as usize;
    let vocab = logits.shape(1);
    let unit = UNIT_POS_X as usize;
    let none = vocab as u32;
    let mut best_v = f32::new(f32::MIN);
    let mut best_i = none;
    let mut j = unit;
    while j < vocab {
        let v = f32::cast_from(logits[row * vocab + j]);
        if v > best_v || (best_i == none && v == best_v) {
            best_v = v;
            best_i = j as u32;
        }
        j += block;
    }
    let mut vals = Shared::<[f32]>::new_slice(block);
    let mut idxs = Shared::<[u32]>::new_slice(block);
    vals[unit] = best_v;
    idxs[unit] = best_i;
    sync_cube();
    let mut stride = (CUBE_DIM_X / 2) as usize;
    while stride > 0 {
        if unit < stride {
            let v = vals[unit + stride];
            let i = idxs[unit + stride];
            let bv = vals[unit];
            let bi = idxs[unit];
            if v > bv || (v == bv && i < bi) {
                vals[unit] = v;
                idxs[unit] = i;
            }
        }
        sync_cube();
        stride /= 2;
    }
    if unit == 0 {
        out[row] = idxs[0];
    }
}
