use cubecl::cmma::{MatrixIdent, MmaDefinition};
use cubecl::prelude::*;

/// Planes per cube: two along the rows, four along the columns.
pub(super) const PLANES: usize = 8;
/// Output columns of one cube (four planes of four 8-column fragments).
pub(super) const BN: usize = 128;
/// Rows of one cube's tile as launched (`fm = ROWS / 32`; 64-row tiles, `fm = 2`, were slower
/// than the cooperative-matrix kernel at 64 rows: qkv 17.4 against 11.9 us, H100 2026-11-26).
pub(super) const ROWS: usize = 128;

/// `out = x @ w^T` on the tensor cores with `mma.sync` (m16n8k16, f32 accumulation, one rounding
/// to F at the output): `x: [m, k]`, `w: [n, k]` (PyTorch's linear layout), `k` a multiple of 32.
///
/// Grid: x over blocks of [`BN`] output columns, y over blocks of `32 * fm` rows; eight planes
/// per cube (`CUBE_DIM = (32, 8)`), plane `p` computing rows `(p / 4) * 16 * fm..` and columns
/// `(p % 4) * 32..` of the cube's tile as `fm x 4` accumulator fragments held in registers.
/// The k loop stages 32-wide slabs of `x` and `w` in shared memory, two stages: the next
/// slab's 16-byte vectors are loaded into registers while the fragments of the current one
/// multiply, then stored to the other stage (one cube barrier per slab). (CubeCL 0.11's LLVM
/// backend for CUDA has no `cp.async`: "Operation barrier.copy_async does not have a
/// conversion to LLVM instruction implemented", H100, 2026-11-26.) A slab row is four 16-byte
/// chunks, chunk `c` of row `r` stored at `r * 4 + (c ^ ((r >> 1) & 3))`, so each `ldmatrix`
/// phase (eight rows of one chunk column) reads eight distinct bank groups. Rows past `m` and
/// `n` are staged as zeros and not written.
#[cube(launch_unchecked)]
pub(super) fn mma_linear_kernel<F: Float, N: Size>(
    x: &Tensor<Vector<F, N>>, // [m, k] contiguous, 16-byte vectors
    w: &Tensor<Vector<F, N>>, // [n, k] contiguous, 16-byte vectors
    out: &mut Tensor<F>,      // [m, out_stride] (columns col0.. of a wider output allowed)
    col0: u32,
    #[comptime] fm: usize,
    #[define(F)] _dtype: ElemType,
) {
    let m = x.shape(0);
    let n = w.shape(0);
    // Vectors per row (shapes count elements, indices vectors).
    let kv = x.shape(1) / x.vector_size().comptime();
    let lane = UNIT_POS_X as usize;
    let plane = UNIT_POS_Y as usize;
    let unit = plane * 32 + lane;
    let bm = comptime!(fm * 32);
    let m0 = CUBE_POS_Y as usize * bm;
    let n0 = CUBE_POS_X as usize * BN;
    let pm = (plane / 4) * comptime!(fm * 16);
    let pn = (plane % 4) * 32;
    let a_stage = comptime!(bm * 4);
    let b_stage = comptime!(BN * 4);
    let a_loads = comptime!(bm * 4 / (PLANES * 32));
    let b_loads = comptime!(BN * 4 / (PLANES * 32));

    let mut xs = Shared::<[Vector<F, N>]>::new_slice(comptime!(2 * bm * 4));
    let mut ws = Shared::<[Vector<F, N>]>::new_slice(comptime!(2 * BN * 4));

    let def = MmaDefinition::<F, F, f32>::new(16usize, 8usize, 16usize);
    // acc[(i * 4 + j) * 2 + h]: fragment (i, j), rows g (h = 0) and g + 8 (h = 1) of it.
    let mut acc = Array::<Vector<f32, Const<2>>>::new(comptime!(fm * 8));
    #[unroll]
    for i in 0..comptime!(fm * 8) {
        acc[i] = Vector::<f32, Const<2>>::new(0.0f32);
    }

    // ldmatrix row addresses (vector index within a stage, before the k step): A's 16x16
    // fragments take lanes 0-15 down the rows of chunk 2kk, 16-31 of chunk 2kk + 1; B's pairs of
    // 8-column fragments take lanes 0-7 and 16-23 down 16 rows of chunk 2kk, 8-15 and 24-31 of
    // chunk 2kk + 1. Fragment bases are multiples of 16 rows, so a lane's swizzle is fixed.
    let a_row = pm + lane % 16;
    let a_half = lane / 16;
    let a_swz = (a_row >> 1) & 3;
    let b_row = pn + lane % 8 + (lane / 16) * 8;
    let b_half = (lane / 8) % 2;
    let b_swz = (b_row >> 1) & 3;

    let mut xr = Array::<Vector<F, N>>::new(a_loads);
    let mut wr = Array::<Vector<F, N>>::new(b_loads);
    load_slab::<F, N>(x, &mut xr, m0, m, kv, 0, unit, a_loads);
    load_slab::<F, N>(w, &mut wr, n0, n, kv, 0, unit, b_loads);
    store_slab::<F, N>(&mut xs, &xr, 0, unit, a_loads);
    store_slab::<F, N>(&mut ws, &wr, 0, unit, b_loads);
    sync_cube();
    let slabs = kv / 4;
    for s in 0..slabs {
        let cur = s % 2;
        if s + 1 < slabs {
            load_slab::<F, N>(x, &mut xr, m0, m, kv, (s + 1) * 4, unit, a_loads);
            load_slab::<F, N>(w, &mut wr, n0, n, kv, (s + 1) * 4, unit, b_loads);
        }
        let xa = cur * a_stage;
        let wa = cur * b_stage;
        #[unroll]
        for kk in 0..2usize {
            let bi0 = wa + b_row * 4 + ((kk * 2 + b_half) ^ b_swz);
            let bi1 = bi0 + 64; // 16 rows on (the swizzle repeats every 8 rows)
            let b01 = def.load_matrix::<Vector<F, N>, Const<2>>(ws.slice(bi0, bi0 + 1), MatrixIdent::B, 4usize, false);
            let b23 = def.load_matrix::<Vector<F, N>, Const<2>>(ws.slice(bi1, bi1 + 1), MatrixIdent::B, 4usize, false);
            #[unroll]
            for i in 0..fm {
                let ai = xa + (a_row + i * 16) * 4 + ((kk * 2 + a_half) ^ a_swz);
                let a = def.load_matrix::<Vector<F, N>, Const<2>>(xs.slice(ai, ai + 1), MatrixIdent::A, 4usize, false);
                #[unroll]
                for j in 0..4usize {
                    let mut b = Array::<Vector<F, Const<2>>>::new(2usize);
                    if comptime!(j < 2) {
                        b[0] = b01[comptime!((j % 2) * 2)];
                        b[1] = b01[comptime!((j % 2) * 2 + 1)];
                    } else {
                        b[0] = b23[comptime!((j % 2) * 2)];
                        b[1] = b23[comptime!((j % 2) * 2 + 1)];
                    }
                    let f = comptime!((i * 4 + j) * 2);
                    let mut c = Array::<Vector<f32, Const<2>>>::new(2usize);
                    c[0] = acc[f];
                    c[1] = acc[comptime!(f + 1)];
                    let d = def.execute(&a, &b, &c);
                    acc[f] = d[0];
                    acc[comptime!(f + 1)] = d[1];
                }
            }
        }
        if s + 1 < slabs {
            let nxt = 1 - cur;
            store_slab::<F, N>(&mut xs, &xr, nxt * a_stage, unit, a_loads);
            store_slab::<F, N>(&mut ws, &wr, nxt * b_stage, unit, b_loads);
        }
        sync_cube();
    }

    // Lane (g, t) holds columns 2t, 2t + 1 of rows g and g + 8 of each fragment.
    let stride = out.stride(0);
    let col0 = col0 as usize;
    let g = lane / 4;
    let t = lane % 4;
    #[unroll]
    for i in 0..fm {
        #[unroll]
        for j in 0..4usize {
            let f = comptime!((i * 4 + j) * 2);
            let c = n0 + pn + j * 8 + 2 * t;
            #[unroll]
            for h in 0..2usize {
                let r = m0 + pm + i * 16 + g + h * 8;
                let v = acc[comptime!(f + h)];
                if r < m {
                    let base = r * stride + col0 + c;
                    if c < n {
                        out[base] = F::cast_from(v.extract(0usize));
                    }
                    if c + 1 < n {
                        out[base + 1] = F::cast_from(v.extract(1usize));
                    }
                }
            }
        }
    }
}

/// Loads 16-byte vectors `k_vec..k_vec + 4` of rows `row0..` into `regs`: vector `u + j * 256`
/// of the slab (row `/ 4`, chunk `% 4`) into `regs[j]`; rows past `rows` as zeros.
#[cube]
#[allow(clippy::too_many_arguments)]
fn load_slab<F: Float, N: Size>(
    t: &Tensor<Vector<F, N>>,
    regs: &mut Array<Vector<F, N>>,
    row0: usize,
    rows: usize,
    kv: usize,
    k_vec: usize,
    unit: usize,
    #[comptime] loads: usize,
) {
    #[unroll]
    for j in 0..loads {
        let idx = unit + j * comptime!(PLANES * 32);
        let r = idx / 4;
        let mut v = Vector::<F, N>::new(F::new(0.0));
        if row0 + r < rows {
            v = t[(row0 + r) * kv + k_vec + idx % 4];
        }
        regs[j] = v;
    }
}

/// Stores a slab loaded by [`load_slab`] at `base` of the stage, swizzled (see the kernel).
#[cube]
fn store_slab<F: Float, N: Size>(
    s: &mut Shared<[Vector<F, N>]>,
    regs: &Array<Vector<F, N>>,
    base: usize,
    unit: usize,
    #[comptime] loads: usize,
) {
    #[unroll]
    for j in 0..loads {
        let idx = unit + j * comptime!(PLANES * 32);
        let r = idx / 4;
        s[base + r * 4 + ((idx % 4) ^ ((r >> 1) & 3))] = regs[j];
    }
}
