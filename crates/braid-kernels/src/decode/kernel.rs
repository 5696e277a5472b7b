use cubecl::prelude::*;

/// The inputs of one decode step, read from the device-side step state (so a captured graph
/// replays it unchanged): the embedding row of token `state[0]` and the RoPE rows of position
/// `state[1]`. One unit per output element: `hidden` embedding values, then `hd` cos, `hd` sin.
#[cube(launch)]
pub(super) fn inputs_kernel<F: Float>(
    embed: &Tensor<F>,     // [vocab, hidden]
    cos_table: &Tensor<f32>, // [capacity, hd]
    sin_table: &Tensor<f32>, // [capacity, hd]
    state: &Tensor<u32>,   // [2]: token, position
    x: &mut Tensor<F>,     // [1, hidden]
    cos: &mut Tensor<f32>, // [1, hd]
    sin: &mut Tensor<f32>, // [1, hd]
    #[define(F)] _dtype: ElemType,
) {
    let i = ABSOLUTE_POS;
    let hidden = embed.shape(1);
    let hd = cos_table.shape(1);
    let token = state[0] as usize;
    let pos = state[1] as usize;
    // (A token past the embedding's rows, as the fused argmax gives where no logit was finite,
    // gathers zeros, and a position past the tables zeros: `greedy_head`'s rules.)
    if i < hidden {
        let mut v = F::new(0.0);
        if token < embed.shape(0) {
            v = embed[token * hidden + i];
        }
        x[i] = v;
    } else if i < hidden + hd {
        let d = i - hidden;
        let mut c = 0.0f32;
        if pos < cos_table.shape(0) {
            c = cos_table[pos * hd + d];
        }
        cos[d] = c;
    } else if i < hidden + 2 * hd {
        let d = i - hidden - hd;
        let mut t = 0.0f32;
        if pos < sin_table.shape(0) {
            t = sin_table[pos * hd + d];
        }
        sin[d] = t;
    }
}

/// Writes the new keys and values `[batch, kv, 1, hd]` into the caches at position `state[1]`,
/// in place. One unit per (batch, kv head, channel).
#[cube(launch)]
pub(super) fn kv_write_kernel<F: Float>(
    k_cache: &mut Tensor<F>, // [batch, kv, capacity, hd] (last dim contiguous)
    v_cache: &mut Tensor<F>, // [batch, kv, capacity, hd]
    k: &Tensor<F>,           // [batch, kv, 1, hd] contiguous
    v: &Tensor<F>,           // [batch, kv, 1, hd] contiguous
    state: &Tensor<u32>,     // [2]: token, position
    #[define(F)] _dtype: ElemType,
) {
    let i = ABSOLUTE_POS;
    let kv = k.shape(1);
    let hd = k.shape(3);
    if i < k.shape(0) * kv * hd {
        let d = i % hd;
        let h = (i / hd) % kv;
        let b = i / (hd * kv);
        let pos = state[1] as usize;
        let ko = b * k_cache.stride(0) + h * k_cache.stride(1) + pos * k_cache.stride(2) + d;
        let vo = b * v_cache.stride(0) + h * v_cache.stride(1) + pos * v_cache.stride(2) + d;
        k_cache[ko] = k[i];
        v_cache[vo] = v[i];
    }
}

/// Advances the step state by one greedy token: `state = [ids[0], state[1] + 1]` and
/// `history[state[1] + 1] = ids[0]`. One unit.
#[cube(launch)]
pub(super) fn advance_kernel(
    ids: &Tensor<u32>,         // [1]: the step's argmax
    state: &mut Tensor<u32>,   // [2]: token, position
    history: &mut Tensor<u32>, // [capacity]: token at each position
) {
    if ABSOLUTE_POS == 0 {
        let next = ids[0];
        let pos = state[1] + 1;
        state[0] = next;
        state[1] = pos;
        if (pos as usize) < history.shape(0) {
            history[pos as usize] = next;
        }
    }
}

/// The inputs of a batched decode step from device buffers: row `r` gets the embedding of
/// `ids[r]` and the RoPE rows of `pos[r]`. One unit per output element of one row (`hidden`
/// embedding values, `hd` cos, `hd` sin); `CUBE_POS_Y` is the row.
#[cube(launch)]
pub(super) fn rows_kernel<F: Float>(
    embed: &Tensor<F>,       // [vocab, hidden]
    cos_table: &Tensor<f32>, // [capacity, hd]
    sin_table: &Tensor<f32>, // [capacity, hd]
    ids: &Tensor<u32>,       // [rows]
    pos: &Tensor<u32>,       // [rows]
    x: &mut Tensor<F>,       // [rows, hidden]
    cos: &mut Tensor<f32>,   // [rows, hd]
    sin: &mut Tensor<f32>,   // [rows, hd]
    #[define(F)] _dtype: ElemType,
) {
    let i = (CUBE_POS_X * CUBE_DIM_X + UNIT_POS_X) as usize;
    let r = CUBE_POS_Y as usize;
    let hidden = embed.shape(1);
    let hd = cos_table.shape(1);
    let token = ids[r] as usize;
    let p = pos[r] as usize;
    if i < hidden {
        x[r * hidden + i] = embed[token * hidden + i];
    } else if i < hidden + hd {
        let d = i - hidden;
        cos[r * hd + d] = cos_table[p * hd + d];
    } else if i < hidden + 2 * hd {
        let d = i - hidden - hd;
        sin[r * hd + d] = sin_table[p * hd + d];
    }
}

/// `dst[i] = src[i]`, in place (refreshes a captured graph's input buffer).
#[cube(launch)]
pub(super) fn copy_kernel(src: &Tensor<u32>, dst: &mut Tensor<u32>) {
    let i = ABSOLUTE_POS;
    if i < src.len() {
        dst[i] = src[i];
    }
}
