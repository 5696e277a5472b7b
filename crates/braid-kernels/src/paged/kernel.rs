use cubecl::prelude::*;

/// Writes each new row's keys and values into its slot of the block pools, in place. One unit
/// per (row, kv head, channel).
#[cube(launch)]
pub(super) fn kv_write_kernel<F: Float>(
    k_pool: &mut Tensor<F>, // [slots, kv, hd] (last dim contiguous)
    v_pool: &mut Tensor<F>, // [slots, kv, hd]
    k: &Tensor<F>,          // [1, kv, rows, hd] (last dim contiguous)
    v: &Tensor<F>,          // [1, kv, rows, hd]
    slots: &Tensor<u32>,    // [rows]
    #[define(F)] _dtype: ElemType,
) {
    let i = ABSOLUTE_POS;
    let kv = k.shape(1);
    let rows = k.shape(2);
    let hd = k.shape(3);
    if i < rows * kv * hd {
        let d = i % hd;
        let h = (i / hd) % kv;
        let r = i / (hd * kv);
        let s = slots[r] as usize;
        let ko = s * k_pool.stride(0) + h * k_pool.stride(1) + d;
        let vo = s * v_pool.stride(0) + h * v_pool.stride(1) + d;
        k_pool[ko] = k[h * k.stride(1) + r * k.stride(2) + d];
        v_pool[vo] = v[h * v.stride(1) + r * v.stride(2) + d];
    }
}
