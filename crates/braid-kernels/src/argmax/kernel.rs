use cubecl::prelude::*;

/// One cube per row: the index of the largest value (the first one on ties, as `torch.argmax`;
/// NaN and -inf never win (WGSL has no infinity literal; the start value is f32::MIN); a row
/// without a finite number gives `vocab`). Units scan strided `N`-element vectors, `batch` of
/// them in flight per unit ([`scan`]), then a shared-memory tree keeps (value, index)
/// ([`cube_best`]). The batched rows' path; few rows split each row over cubes instead
/// ([`argmax_part_kernel`], [`argmax_final_kernel`]).
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
    let nvec = vocab as usize / logits.vector_size();
    let mut vals = Shared::<[f32]>::new_slice(block);
    let mut idxs = Shared::<[u32]>::new_slice(block);
    scan::<F, N>(logits, &mut vals, &mut idxs, row, 0usize, nvec, vocab, block, batch);
    cube_best(&mut vals, &mut idxs);
    if UNIT_POS_X == 0 {
        out[row] = idxs[0];
    }
}

/// A row's slice `CUBE_POS_X` of `CUBE_COUNT_X` (row `CUBE_POS_Y`), as [`argmax_kernel`] scans
/// a row: its best (value, index) into `vals` / `idxs` at `row * slices + slice` (f32::MIN and
/// `vocab` where the slice has no finite number), for [`argmax_final_kernel`].
#[cube(launch)]
pub(super) fn argmax_part_kernel<F: Float, N: Size>(
    logits: &Tensor<Vector<F, N>>, // [rows, vocab / N]
    vals: &mut Tensor<f32>,        // [rows * slices]
    idxs: &mut Tensor<u32>,        // [rows * slices]
    vocab: u32,
    #[comptime] block: usize,
    #[comptime] batch: usize,
    #[define(F)] _dtype: ElemType,
) {
    let row = CUBE_POS_Y as usize;
    let slice = CUBE_POS_X as usize;
    let slices = CUBE_COUNT_X as usize;
    let nvec = vocab as usize / logits.vector_size();
    let per = nvec.div_ceil(slices);
    let start = slice * per;
    let end = min(start + per, nvec);
    let mut sv = Shared::<[f32]>::new_slice(block);
    let mut si = Shared::<[u32]>::new_slice(block);
    scan::<F, N>(logits, &mut sv, &mut si, row, start, end, vocab, block, batch);
    cube_best(&mut sv, &mut si);
    if UNIT_POS_X == 0 {
        vals[row * slices + slice] = sv[0];
        idxs[row * slices + slice] = si[0];
    }
}

/// One cube per row: the best of the row's `slices` partial results ([`argmax_part_kernel`]),
/// by the same rule (larger value, then smaller index): the row's argmax.
#[cube(launch)]
pub(super) fn argmax_final_kernel(
    vals: &Tensor<f32>, // [rows * slices]
    idxs: &Tensor<u32>, // [rows * slices]
    out: &mut Tensor<u32>, // [rows]
    slices: u32,
    vocab: u32,
    #[comptime] block: usize,
) {
    let row = CUBE_POS_X as usize;
    let slices = slices as usize;
    let unit = UNIT_POS_X as usize;
    let mut best_v = f32::new(f32::MIN);
    let mut best_i = vocab;
    let mut s = unit;
    while s < slices {
        let v = vals[row * slices + s];
        let i = idxs[row * slices + s];
        if v > best_v || (v == best_v && i < best_i) {
            best_v = v;
            best_i = i;
        }
        s += block;
    }
    let mut sv = Shared::<[f32]>::new_slice(block);
    let mut si = Shared::<[u32]>::new_slice(block);
    sv[unit] = best_v;
    si[unit] = best_i;
    cube_best(&mut sv, &mut si);
    if unit == 0 {
        out[row] = si[0];
    }
}

/// This unit's best (value, index) over vectors `start + unit, start + unit + block, ...` below
/// `end` of row `row`, `batch` loads issued before any is compared, into `vals[unit]` /
/// `idxs[unit]` (f32::MIN and `vocab` where it saw no finite number).
#[cube]
#[allow(clippy::too_many_arguments)]
fn scan<F: Float, N: Size>(
    logits: &Tensor<Vector<F, N>>,
    vals: &mut Shared<[f32]>,
    idxs: &mut Shared<[u32]>,
    row: usize,
    start: usize,
    end: usize,
    vocab: u32,
    #[comptime] block: usize,
    #[comptime] batch: usize,
) {
    let vs = logits.vector_size();
    let nvec = vocab as usize / vs;
    let unit = UNIT_POS_X as usize;
    let none = vocab;
    let mut best_v = f32::new(f32::MIN);
    let mut best_i = none;
    let mut j0 = start + unit;
    while j0 < end {
        let mut regs = Array::<Vector<F, N>>::new(batch);
        #[unroll]
        for b in 0..batch {
            let j = j0 + b * block;
            if j < end {
                regs[b] = logits[row * nvec + j];
            }
        }
        #[unroll]
        for b in 0..batch {
            let j = j0 + b * block;
            if j < end {
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
    vals[unit] = best_v;
    idxs[unit] = best_i;
}

/// The cube's best of `vals[u]` / `idxs[u]` (each unit's, written before the call) into
/// `vals[0]` / `idxs[0]`: a shared-memory tree over `CUBE_DIM_X` (a power of two) units, the
/// larger value winning, then the smaller index.
#[cube]
pub(crate) fn cube_best(vals: &mut Shared<[f32]>, idxs: &mut Shared<[u32]>) {
    let unit = UNIT_POS_X as usize;
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
}
