use cubecl::prelude::*;

/// One cube per row: the index of the largest value (the first one on ties, as `torch.argmax`;
/// NaN and -inf never win (WGSL has no infinity literal; the start value is f32::MIN); a row
/// without a finite number gives `vocab`). Units scan strided `N`-element vectors, `batch` of
/// them in flight per unit (a whole vocabulary row is one cube's work: at batch 1 the loads'
/// latency, not their bytes, sets the time), then a shared-memory tree keeps (value, index).
#[cube(launch)]
pub(super) fn argmax_kernel<F: Float, N: Size>(
    logits: &Tensor<Vector<F, N>>, // [rows, vocab / N]
    out: &mut Tensor<u32>,         // [rows]
    vocab: u32,
    #[comptime] block: usize,
    #[comptime] batch: usize,
    #[define(F)] _dtype: ElemType,
) {
    let row = CUBE_POS_X as usize;
    let vs = logits.vector_size();
    let vocab = vocab as usize;
    let nvec = vocab / vs;
    let unit = UNIT_POS_X as usize;
    let none = vocab as u32;
    let mut best_v = f32::new(f32::MIN);
    let mut best_i = none;
    let mut j0 = unit;
    while j0 < nvec {
        let mut regs = Array::<Vector<F, N>>::new(batch);
        // `batch` loads issued before any is compared.
        #[unroll]
        for b in 0..batch {
            let j = j0 + b * block;
            if j < nvec {
                regs[b] = logits[row * nvec + j];
            }
        }
        #[unroll]
        for b in 0..batch {
            let j = j0 + b * block;
            if j < nvec {
                let v = regs[b];
                #[unroll]
                for e in 0..vs {
                    let x = f32::cast_from(v.extract(e));
                    if x > best_v || (best_i == none && x == best_v) {
                        best_v = x;
                        best_i = (j * vs + e) as u32;
                    }
                }
            }
        }
        j0 += batch * block;
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
