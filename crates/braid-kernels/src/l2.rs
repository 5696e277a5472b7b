//! Reading tensors into L2 from cubes a kernel does not need: a decode kernel that leaves SMs
//! idle (the batch-1 attention) or DRAM idle (GEMVs whose weights are already in L2) reads the
//! weights of the ops that follow, so those find them in L2 instead of HBM.

use cubecl::prelude::*;

/// Reads cube `cube`'s share (of `cubes`) of `t`'s vectors, four loads in flight per unit;
/// returns their sum (f32).
#[cube]
pub(crate) fn touch<F: Float, N: Size>(t: &Tensor<Vector<F, N>>, cube: usize, cubes: usize, #[comptime] block: usize) -> f32 {
    let vs = t.vector_size();
    let n = t.len();
    let per = n.div_ceil(cubes);
    let start = cube * per;
    let end = min(start + per, n);
    let unit = UNIT_POS_X as usize;
    let mut acc = 0.0f32;
    let mut i = start + unit;
    while i < end {
        let mut regs = Array::<Vector<F, N>>::new(4usize);
        #[unroll]
        for u in 0..4usize {
            let j = i + u * block;
            if j < end {
                regs[u] = t[j];
            }
        }
        #[unroll]
        for u in 0..4usize {
            if i + u * block < end {
                let v = regs[u];
                #[unroll]
                for e in 0..vs {
                    acc += f32::cast_from(v.extract(e));
                }
            }
        }
        i += 4 * block;
    }
    acc
}
