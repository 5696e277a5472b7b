//! Causal GQA attention over the KV cache, for prefill (many query rows) and decode (one).
//! The whole score row of a query lives in shared memory, so the keys per query are bounded by
//! [`MAX_KEYS`] for prefill rows; decode rows (one query per sequence) are split over the keys
//! (`split.rs`) and take any length. Longer prefills take the
//! reference path.

pub(crate) mod kernel;
mod prefill;
mod split;

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use cubecl::prelude::*;
use cubecl::std::tensor::TensorHandle;

use crate::check::{Check, output_like};
use crate::{KernelError, Precision};

const NAME: &str = "attention";
/// Units per cube (at most; the device's limit may lower it): two or more groups over the keys
/// for head_dim <= 256.
const BLOCK: usize = 512;
/// Units per cube of a decode row (one query) on the row kernel: the width of
/// `decode_mlp_qkv`'s cubes, which run the same row kernel inside the persistent decode launch
/// (`kernel::attend_row`); the value partials and reductions follow the cube width, so every
/// way of decoding (eager, device-state steps, graph replay) gives the same bits only at one
/// width. (Measured on an H100 at 512 before the persistent launch ran the attention.)
pub const DECODE_ROW_UNITS: usize = 256;
/// Keys per cube of the split decode attention (one query row), and its units.
const SPLIT_CHUNK: usize = 64;
/// At least this many; one unit per key of the chunk (more sat idle in the scores pass and made
/// the reductions wider), and at least one group of `hd / vector` units for the values.
const SPLIT_BLOCK: usize = SPLIT_CHUNK;
/// Slots per block of a paged KV cache: one split chunk per block.
pub const PAGE_SIZE: usize = SPLIT_CHUNK;
/// Keys one query row can attend to (f32 scores in 16 KiB of shared memory).
pub const MAX_KEYS: usize = 4096;
/// Largest head_dim (the query row is staged in shared memory).
pub const MAX_HEAD_DIM: usize = 256;

/// `q: [batch, heads, seq, hd]` (contiguous) at positions `past..past + seq`;
/// `k, v: [batch, kv_heads, >= past + seq, hd]` (the cache, strided views are fine, last dim
/// contiguous) -> `[batch, seq, heads * hd]`.
pub fn attention(
    client: &Client,
    q: TensorHandle,
    k: TensorHandle,
    v: TensorHandle,
    past: usize,
    precision: Precision,
) -> Result<TensorHandle, KernelError> {
    launch(client, q, k, v, past, None, precision, &[], None)
}

/// Decode attention at the position held in the device-side step state (see
/// [`crate::decode`]): `q: [batch, heads, 1, hd]` at position `state[1]` over keys
/// `0..=state[1]` of `k_cache, v_cache: [batch, kv_heads, capacity, hd]` ->
/// `[batch, 1, heads * hd]` (a cache of up to [`decode_row_max_keys`] positions on the one-pass
/// row kernel, longer ones split over the keys: any capacity); `state[1] < capacity` is the
/// caller's invariant.
pub fn attention_at(
    client: &Client,
    q: TensorHandle,
    k_cache: TensorHandle,
    v_cache: TensorHandle,
    state: TensorHandle,
    precision: Precision,
) -> Result<TensorHandle, KernelError> {
    attention_at_prefetch(client, q, k_cache, v_cache, state, precision, &[])
}

/// [`attention_at`], and where the row kernel serves the call (a short cache) on a device that
/// reports its SM count, the SMs the attention leaves idle read `prefetch` (up to four
/// tensors of the query's dtype: the next ops' weights) so that those ops find them in L2.
/// `$BRAID_L2_PREFETCH=n` reads only the first n (0: off).
pub fn attention_at_prefetch(
    client: &Client,
    q: TensorHandle,
    k_cache: TensorHandle,
    v_cache: TensorHandle,
    state: TensorHandle,
    precision: Precision,
    prefetch: &[TensorHandle],
) -> Result<TensorHandle, KernelError> {
    let c = Check::new(NAME);
    check_decode_row(&c, &q, &state)?;
    if prefetch.len() > 4 {
        return Err(KernelError::Unsupported { kernel: NAME, what: format!("{} prefetch tensors", prefetch.len()), why: "at most four".into() });
    }
    for t in prefetch {
        c.same_dtype("prefetch", t, q.dtype)?;
    }
    launch(client, q, k_cache, v_cache, 0, Some(state), precision, prefetch, None)
}

/// [`attention_at`] on the row kernel with `block` units a cube (a power of two, at least
/// head_dim; the cache at most [`decode_row_max_keys`] long): what `decode_mlp_qkv`'s
/// attention phase computes at its cube width, bit for bit (its checks compare the two).
pub fn attention_at_units(
    client: &Client,
    q: TensorHandle,
    k_cache: TensorHandle,
    v_cache: TensorHandle,
    state: TensorHandle,
    precision: Precision,
    block: usize,
) -> Result<TensorHandle, KernelError> {
    if !block.is_power_of_two() || k_cache.shape().get(2).is_none_or(|&n| n > decode_row_max_keys().min(MAX_KEYS)) {
        return Err(KernelError::Unsupported { kernel: NAME, what: format!("{block} units"), why: "a power of two, on a cache the row kernel serves".into() });
    }
    check_decode_row(&Check::new(NAME), &q, &state)?;
    launch(client, q, k_cache, v_cache, 0, Some(state), precision, &[], Some(block))
}

/// A decode row's query (`[batch, heads, 1, hd]`) and step state (`[2]` u32).
fn check_decode_row(c: &Check, q: &TensorHandle, state: &TensorHandle) -> Result<(), KernelError> {
    c.shape("state", state, &[2])?;
    if state.dtype != ElemType::UInt(cubecl::ir::UIntKind::U32) {
        return Err(KernelError::DType { kernel: NAME, tensor: "state", got: format!("{}", state.dtype), expected: "u32".into() });
    }
    if q.shape().len() != 4 || q.shape()[2] != 1 {
        return Err(c.shape_err("q", q, "[batch, heads, 1, head_dim]".into()));
    }
    Ok(())
}

/// How many of the tensors given to [`attention_at_prefetch`] it reads: `$BRAID_L2_PREFETCH`
/// (0 = off), default [`L2_PREFETCH`]; read once per process.
pub fn l2_prefetch_count() -> usize {
    static N: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *N.get_or_init(|| std::env::var("BRAID_L2_PREFETCH").ok().and_then(|s| s.trim().parse().ok()).unwrap_or(L2_PREFETCH).min(4))
}

/// Tensors [`attention_at_prefetch`] (and `decode_mlp_qkv`'s attention phase) read by default
/// (the decode step passes o_proj, gate, up, down: the GEMVs that gain most from L2 first). 2
/// since the persistent launch runs the attention (H100, 2026-11-27: 1,097.5 tok/s against
/// 1,080 with 3; the prefetching cubes no longer outlast the attention); 3 before. With the
/// tagged launch and o_proj first: 2 (o_proj, gate) 1,161.3-1,161.9 tok/s, 3: 1,150.5, 1:
/// 1,117.2; gate and up (the order before): 1,147.9-1,151.0.
pub const L2_PREFETCH: usize = 2;

/// Decode attention over a paged KV cache: query row `r` of `q: [1, heads, rows, hd]`
/// (contiguous) attends to keys `0..lens[r]` stored in the blocks `table[r, ..]` of
/// `k_pool, v_pool: [blocks * PAGE_SIZE, kv_heads, hd]` (block `n` holds slots
/// `n * PAGE_SIZE..(n + 1) * PAGE_SIZE`) -> `[rows, heads * hd]`. `table: [rows, max_blocks]`
/// and `lens: [rows]` are u32; `1 <= lens[r] <= max_blocks * PAGE_SIZE` and every block id in
/// range are the caller's invariants (the kernel does not check device data).
#[allow(clippy::too_many_arguments)]
pub fn paged_attention(
    client: &Client,
    q: TensorHandle,
    k_pool: TensorHandle,
    v_pool: TensorHandle,
    table: TensorHandle,
    lens: TensorHandle,
    precision: Precision,
) -> Result<TensorHandle, KernelError> {
    let c = Check::new("paged_attention");
    let [heads, rows, hd] = check_paged_inputs(&c, "paged_attention", &q, &k_pool, &v_pool)?;
    let ts = table.shape().to_vec();
    if ts.len() != 2 || ts[0] != rows || ts[1] == 0 {
        return Err(c.shape_err("table", &table, format!("[{rows}, max_blocks >= 1]")));
    }
    c.shape("table", &table, &ts)?;
    c.shape("lens", &lens, &[rows])?;
    for (name, t) in [("table", &table), ("lens", &lens)] {
        if t.dtype != u32_type() {
            return Err(KernelError::DType { kernel: "paged_attention", tensor: name, got: format!("{}", t.dtype), expected: "u32".into() });
        }
    }
    if hd > MAX_HEAD_DIM {
        return Err(KernelError::Unsupported {
            kernel: "paged_attention",
            what: format!("head_dim {hd}"),
            why: format!("at most {MAX_HEAD_DIM} (the query row lives in shared memory)"),
        });
    }
    let block = units(client, hd)?;
    let vector = vector_width(&k_pool, &v_pool, hd)?;
    let out = output_like(client, &[rows, heads * hd], q.dtype);
    if rows * heads == 0 {
        return Ok(out);
    }
    let keys = Keys::Paged { table, lens };
    split_decode(client, q, k_pool, v_pool, out.clone(), keys, rows * heads, ts[1], heads, precision, block, vector);
    Ok(out)
}

/// One sequence of a prefill batch: its next `len` query rows (consecutive in `q`, after the
/// previous span's) at positions `start..start + len`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrefillSpan {
    pub len: usize,
    pub start: usize,
}

/// Tile shape of [`paged_prefill_attention`]: `rows` query rows and `keys` keys per step
/// (a divisor of [`PAGE_SIZE`]), `rows / 4 x groups` units (`groups` dividing `keys`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrefillTiles {
    pub rows: usize,
    pub keys: usize,
    pub groups: usize,
}

impl PrefillTiles {
    /// Shared memory of one cube: the query, key and value tiles and the probabilities in f32,
    /// two reduction buffers.
    pub fn shared_bytes(&self, hd: usize, vector: usize) -> usize {
        let padded = hd + vector;
        4 * (self.rows * padded + self.keys * padded + self.keys * hd + self.rows * (self.keys + 1) + 2 * self.rows * self.groups)
    }

    fn valid(&self) -> bool {
        self.rows >= 4 && self.rows.is_multiple_of(4) && self.keys > 0 && PAGE_SIZE.is_multiple_of(self.keys) && self.groups > 0 && self.keys.is_multiple_of(self.groups)
    }
}

/// Tried in order, the first that fits the device: 64x64 tiles first.
pub const PREFILL_TILES: [PrefillTiles; 4] = [
    PrefillTiles { rows: 64, keys: 64, groups: 16 },
    PrefillTiles { rows: 64, keys: 32, groups: 8 },
    PrefillTiles { rows: 32, keys: 32, groups: 8 },
    PrefillTiles { rows: 16, keys: 16, groups: 4 },
];

/// Unset: read `$BRAID_DECODE_ROW_KEYS` (default [`DECODE_ROW_KEYS`]) at first use.
static DECODE_ROW_MAX_KEYS: AtomicUsize = AtomicUsize::new(usize::MAX);

/// Decode rows (one query per sequence, contiguous cache) whose cache holds at most this many
/// positions run the row kernel (one cube per head, all keys in one pass: one launch) instead
/// of the split kernel (two or three launches); longer caches are split over the keys. Measured
/// on an H100 (2026-11-26, `bench kernels` and `bench latency`): at 512 keys the row kernel
/// took 11.4 us of device time against the split kernel's 10.0, but batch-1 graph-replayed
/// decode (cache of 385 positions) ran at 736-737 tok/s against 674-676: in a graph, launches
/// cost more than that difference. The row kernel's one cube per head falls behind the split
/// kernel as the keys grow, hence a short limit.
pub const DECODE_ROW_KEYS: usize = 512;

/// See [`DECODE_ROW_KEYS`]; `$BRAID_DECODE_ROW_KEYS` sets it per process (for measurements).
pub fn decode_row_max_keys() -> usize {
    let v = DECODE_ROW_MAX_KEYS.load(Ordering::Relaxed);
    if v != usize::MAX {
        return v;
    }
    let v = std::env::var("BRAID_DECODE_ROW_KEYS").ok().and_then(|s| s.trim().parse().ok()).unwrap_or(DECODE_ROW_KEYS);
    DECODE_ROW_MAX_KEYS.store(v, Ordering::Relaxed);
    v
}

/// Sets [`decode_row_max_keys`] for this process.
pub fn set_decode_row_max_keys(keys: usize) {
    DECODE_ROW_MAX_KEYS.store(keys.min(usize::MAX - 1), Ordering::Relaxed);
}

static PREFILL_DEFAULT: Mutex<Option<PrefillTiles>> = Mutex::new(None);

/// Replaces the default tile shape of this process's prefill launches (`None`: the first of
/// [`PREFILL_TILES`] that fits), to compare shapes on a whole workload; a shape the device cannot
/// run is ignored. Single calls take a shape of their own (`paged_prefill_attention`'s `tiles`).
pub fn set_prefill_tiles(tiles: Option<PrefillTiles>) {
    *PREFILL_DEFAULT.lock().unwrap_or_else(|e| e.into_inner()) = tiles;
}

/// Whether `tiles` fit the device (shared memory, units per cube) for rows of `hd` elements in
/// vectors of `vector`.
pub fn prefill_tiles_fit(client: &Client, tiles: &PrefillTiles, hd: usize, vector: usize) -> bool {
    let hw = &client.properties().hardware;
    let units = tiles.rows / 4 * tiles.groups;
    tiles.valid() && units <= hw.max_units_per_cube as usize && units <= hw.max_cube_dim.0 as usize && tiles.shared_bytes(hd, vector) <= hw.max_shared_memory_size
}

/// The tile shape a launch with `request` runs: the request itself (an error when it does not
/// fit), else the process default ([`set_prefill_tiles`]) when it fits, else the first of
/// [`PREFILL_TILES`] that fits.
pub fn prefill_tiles(client: &Client, hd: usize, vector: usize, request: Option<PrefillTiles>) -> Result<PrefillTiles, KernelError> {
    let fits = |t: &PrefillTiles| prefill_tiles_fit(client, t, hd, vector);
    if let Some(t) = request {
        return if fits(&t) {
            Ok(t)
        } else {
            Err(KernelError::Unsupported {
                kernel: "paged_prefill_attention",
                what: format!("tiles {t:?} with head_dim {hd}"),
                why: format!("{} bytes of shared memory of {}, or an invalid shape", t.shared_bytes(hd, vector), client.properties().hardware.max_shared_memory_size),
            })
        };
    }
    let default = PREFILL_DEFAULT.lock().unwrap_or_else(|e| e.into_inner()).filter(|t| fits(t));
    default.or_else(|| PREFILL_TILES.iter().copied().find(fits)).ok_or_else(|| KernelError::Unsupported {
        kernel: "paged_prefill_attention",
        what: format!("head_dim {hd}"),
        why: format!("no tile shape fits {} bytes of shared memory", client.properties().hardware.max_shared_memory_size),
    })
}

/// The vector width of the prefill kernel for rows of `hd` elements (up to 4, dividing hd).
pub fn prefill_vector(hd: usize) -> usize {
    [4, 2, 1].into_iter().find(|v| hd.is_multiple_of(*v)).unwrap_or(1)
}

/// Causal attention of a prefill batch over a paged KV cache (tiled: each key row is read once
/// per tile of query rows). The rows of `q: [1, heads, rows, hd]` (contiguous) belong to
/// `spans` in order; span `s`'s rows attend to their positions' keys, which (this step's
/// included) are already in the blocks `table[s, ..]` of `k_pool, v_pool:
/// [blocks * PAGE_SIZE, kv_heads, hd]` -> `[rows, heads * hd]`. `table: [spans, max_blocks]`
/// u32 with every block id in range is the caller's invariant (the kernel does not check
/// device data); each span must fit its table row. `tiles`: a tile shape for this call (it must
/// fit the device), else [`prefill_tiles`]'s default.
#[allow(clippy::too_many_arguments)]
pub fn paged_prefill_attention(
    client: &Client,
    q: TensorHandle,
    k_pool: TensorHandle,
    v_pool: TensorHandle,
    table: TensorHandle,
    spans: &[PrefillSpan],
    precision: Precision,
    tiles: Option<PrefillTiles>,
) -> Result<TensorHandle, KernelError> {
    let name = "paged_prefill_attention";
    let c = Check::new(name);
    let [heads, rows, hd] = check_paged_inputs(&c, name, &q, &k_pool, &v_pool)?;
    let ts = table.shape().to_vec();
    if ts.len() != 2 || ts[0] != spans.len() || ts[1] == 0 {
        return Err(c.shape_err("table", &table, format!("[{}, max_blocks >= 1]", spans.len())));
    }
    c.shape("table", &table, &ts)?;
    if table.dtype != u32_type() {
        return Err(KernelError::DType { kernel: name, tensor: "table", got: format!("{}", table.dtype), expected: "u32".into() });
    }
    let covered: usize = spans.iter().map(|s| s.len).sum();
    if covered != rows || spans.iter().any(|s| s.len == 0 || s.start + s.len > ts[1] * PAGE_SIZE) {
        return Err(KernelError::Unsupported {
            kernel: name,
            what: format!("spans {spans:?} over {rows} rows and {} blocks per sequence", ts[1]),
            why: "the spans must cover the rows in order, each non-empty and within its table row".into(),
        });
    }
    // Vectors of up to 4 elements (the staged tiles are f32 vectors of the same width).
    let vector = prefill_vector(hd);
    if [&k_pool, &v_pool].iter().any(|t| t.strides()[..2].iter().any(|s| s % vector != 0)) {
        return Err(KernelError::Layout { kernel: name, tensor: "k_pool", strides: k_pool.strides().to_vec() });
    }
    let tiles = prefill_tiles(client, hd, vector, tiles)?;
    let out = output_like(client, &[rows, heads * hd], q.dtype);
    if rows * heads == 0 {
        return Ok(out);
    }
    // (span, first row, rows, first position) per tile, the most keys first (they run longest).
    let mut list = Vec::new();
    let mut row = 0;
    for (i, s) in spans.iter().enumerate() {
        let mut t = 0;
        while t < s.len {
            let n = tiles.rows.min(s.len - t);
            list.push([i as u32, (row + t) as u32, n as u32, (s.start + t) as u32]);
            t += n;
        }
        row += s.len;
    }
    list.sort_by_key(|t| std::cmp::Reverse(t[2] + t[3]));
    let bytes: Vec<u8> = list.iter().flatten().flat_map(|x| x.to_le_bytes()).collect();
    let tiles_t = TensorHandle::new_contiguous(vec![list.len(), 4], client.create_from_slice(&bytes), u32_type());
    let dtype = q.dtype;
    prefill::prefill_kernel::launch(
        client,
        CubeCount::new_2d(list.len() as u32, heads as u32),
        CubeDim::new_1d((tiles.rows / 4 * tiles.groups) as u32),
        vector,
        q.into_arg(),
        k_pool.into_arg(),
        v_pool.into_arg(),
        table.into_arg(),
        tiles_t.into_arg(),
        out.clone().into_arg(),
        (hd as f32).powf(-0.5),
        precision != Precision::F32,
        PAGE_SIZE,
        hd,
        tiles.rows,
        tiles.keys,
        tiles.groups,
        dtype,
    );
    Ok(out)
}

/// The query rows `q: [1, heads, rows, hd]` (contiguous) and the pools `k_pool, v_pool:
/// [blocks * PAGE_SIZE, kv_heads dividing heads, hd]` (last dim contiguous, q's dtype) of the
/// paged attentions -> `[heads, rows, hd]`.
fn check_paged_inputs(c: &Check, kernel: &'static str, q: &TensorHandle, k_pool: &TensorHandle, v_pool: &TensorHandle) -> Result<[usize; 3], KernelError> {
    let qs = q.shape().to_vec();
    if qs.len() != 4 || qs[0] != 1 {
        return Err(c.shape_err("q", q, "[1, heads, rows, head_dim]".into()));
    }
    let [_, heads, rows, hd] = [qs[0], qs[1], qs[2], qs[3]];
    c.shape("q", q, &qs)?;
    let ks = k_pool.shape().to_vec();
    for (name, t) in [("k_pool", k_pool), ("v_pool", v_pool)] {
        let s = t.shape();
        if s.len() != 3 || s.to_vec() != ks || s[0] % PAGE_SIZE != 0 || s[2] != hd || s[1] == 0 || heads % s[1] != 0 {
            return Err(c.shape_err(name, t, format!("[blocks * {PAGE_SIZE}, kv_heads dividing {heads}, {hd}], as k_pool")));
        }
        if hd > 1 && t.strides()[2] != 1 {
            return Err(KernelError::Layout { kernel, tensor: name, strides: t.strides().to_vec() });
        }
        c.same_dtype(name, t, q.dtype)?;
    }
    Ok([heads, rows, hd])
}

#[allow(clippy::too_many_arguments)]
fn launch(
    client: &Client,
    q: TensorHandle,
    k: TensorHandle,
    v: TensorHandle,
    past: usize,
    state: Option<TensorHandle>,
    precision: Precision,
    prefetch: &[TensorHandle],
    units_override: Option<usize>,
) -> Result<TensorHandle, KernelError> {
    let c = Check::new(NAME);
    let qs = q.shape().to_vec();
    if qs.len() != 4 {
        return Err(c.shape_err("q", &q, "[batch, heads, seq, head_dim]".into()));
    }
    let [batch, heads, seq, hd] = [qs[0], qs[1], qs[2], qs[3]];
    c.shape("q", &q, &qs)?;
    for (name, t) in [("k", &k), ("v", &v)] {
        let s = t.shape();
        if s.len() != 4 || s[0] != batch || s[3] != hd || s[2] < past + seq || s[1] == 0 || heads % s[1] != 0 {
            return Err(c.shape_err(name, t, format!("[{batch}, kv_heads dividing {heads}, >= {}, {hd}]", past + seq)));
        }
        if hd > 1 && t.strides()[3] != 1 {
            return Err(KernelError::Layout { kernel: NAME, tensor: name, strides: t.strides().to_vec() });
        }
        c.same_dtype(name, t, q.dtype)?;
    }
    if k.shape()[1] != v.shape()[1] {
        return Err(c.shape_err("v", &v, format!("kv_heads = {} as k", k.shape()[1])));
    }
    // Prefill rows keep their scores in shared memory; decode rows are split over the keys.
    if (seq > 1 && past + seq > MAX_KEYS) || hd > MAX_HEAD_DIM {
        return Err(KernelError::Unsupported {
            kernel: NAME,
            what: format!("{} keys with head_dim {hd}", past + seq),
            why: format!("at most {MAX_KEYS} keys and head_dim {MAX_HEAD_DIM} (scores live in shared memory)"),
        });
    }
    let block = match units_override {
        Some(b) if b >= hd && b <= units(client, hd)? => b,
        Some(b) => return Err(KernelError::Unsupported { kernel: NAME, what: format!("{b} units"), why: format!("at least head_dim {hd}, at most the default") }),
        None if seq == 1 => units(client, hd)?.min(DECODE_ROW_UNITS.max(hd)),
        None => units(client, hd)?,
    };
    let dtype = q.dtype;
    let out = output_like(client, &[batch, seq, heads * hd], dtype);
    if batch * heads * seq == 0 {
        return Ok(out);
    }
    let from_state = state.is_some();
    let vector = vector_width(&k, &v, hd)?;
    // A decode row over a short cache runs the one-pass row kernel (one launch); otherwise it
    // is split over the keys (two or three launches, any length).
    if seq == 1 && k.shape()[2] > decode_row_max_keys().min(MAX_KEYS) {
        let keys = match state {
            Some(state) => Keys::State(state),
            None => Keys::Past(past),
        };
        let rows = batch * heads;
        let chunks = k.shape()[2].div_ceil(SPLIT_CHUNK);
        split_decode(client, q, k, v, out.clone(), keys, rows, chunks, heads, precision, block, vector);
        return Ok(out);
    }
    let state = state.unwrap_or_else(|| placeholder(client));
    // Shared memory left for the value partials after the scores, the query row and the
    // two reductions' scratch (f32 each), less 1 KiB; at least one part per output channel.
    let partial_len = row_partial_len(client, hd, block, vector, 0);
    // Prefetch cubes: one per SM the attention leaves idle (decode rows only). Each tensor is
    // read in vectors of the key's width, so its rows must be contiguous multiples of it (the
    // weights are); otherwise nothing is prefetched (a hint, never an error).
    let sms = client.properties().hardware.num_streaming_multiprocessors.unwrap_or(0) as usize;
    let pf_n = prefetch.len().min(l2_prefetch_count());
    let vectorisable = |t: &TensorHandle| {
        t.shape().last().is_some_and(|n| n % vector == 0) && t.strides().last().is_none_or(|&s| s == 1)
    };
    let pf_ok = pf_n > 0 && seq == 1 && prefetch.iter().all(vectorisable);
    let pf_cubes = if pf_ok { sms.saturating_sub(batch * heads) } else { 0 };
    let pf_n = if pf_cubes > 0 { pf_n } else { 0 };
    // (Unread slots: the key cache stands in.)
    let pf: Vec<TensorHandle> = (0..4).map(|i| if i < pf_n { prefetch[i].clone() } else { k.clone() }).collect();
    let sink = output_like(client, &[1], ElemType::Float(cubecl::ir::FloatKind::F32));
    kernel::attention_kernel::launch(
        client,
        CubeCount::new_2d((batch * heads + pf_cubes) as u32, seq as u32),
        CubeDim::new_1d(block as u32),
        vector,
        q.into_arg(),
        k.into_arg(),
        v.into_arg(),
        out.clone().into_arg(),
        past as u32,
        state.into_arg(),
        pf[0].clone().into_arg(),
        pf[1].clone().into_arg(),
        pf[2].clone().into_arg(),
        pf[3].clone().into_arg(),
        sink.into_arg(),
        (hd as f32).powf(-0.5),
        precision.f32_internal(),
        from_state,
        MAX_KEYS,
        hd,
        block,
        partial_len,
        pf_n,
        row_planes(client),
        row_ahead(),
        dtype,
    );
    Ok(out)
}

/// f32 words of the row kernel's value partials: what shared memory leaves after the scores,
/// the query row, the two reductions' scratch and `other_words` (a caller's own), less 1 KiB;
/// at most `block * vector` (one part per group of units), at least one part per channel.
pub(crate) fn row_partial_len(client: &Client, hd: usize, block: usize, vector: usize, other_words: usize) -> usize {
    let used = 4 * (MAX_KEYS + hd + 2 * block + other_words) + 1024;
    (client.properties().hardware.max_shared_memory_size.saturating_sub(used) / 4).min(block * vector).max(hd)
}

/// Value vectors a unit of the row kernel has in flight: 8, or 4 or 16 with
/// `$BRAID_ATTN_ROW_AHEAD=4|16` (for comparisons; read once per process). `decode_mlp`'s attention
/// phase takes the same, so the two keep the same bits. At 256 units a Qwen3-0.6B decode row
/// over 301 keys takes 3 dependent value rounds instead of 5: on an H100 (2026-11-27) batch-1
/// decode 1,080 against 1,065 tok/s with 4, 1,097.5 with the L2 prefetch at 2 tensors.
pub(crate) fn row_ahead() -> usize {
    static N: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *N.get_or_init(|| match std::env::var("BRAID_ATTN_ROW_AHEAD").ok().as_deref().map(str::trim) {
        Some("4") => 4,
        Some("16") => 16,
        _ => 8,
    })
}

/// Whether the row kernel reduces through plane operations: where the device has them, unless
/// `$BRAID_ATTN_ROW_PLANES=0` (the shared-memory tree, for comparisons; read once per process).
pub(crate) fn row_planes(client: &Client) -> bool {
    static OFF: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let off = *OFF.get_or_init(|| std::env::var("BRAID_ATTN_ROW_PLANES").is_ok_and(|s| s.trim() == "0"));
    !off && client.properties().features.plane.contains(cubecl::features::Plane::Ops)
}

/// Units per cube: [`BLOCK`] or the device's largest power of two below it; at least head_dim.
fn units(client: &Client, hd: usize) -> Result<usize, KernelError> {
    let hw = &client.properties().hardware;
    let mut block = BLOCK.min(hw.max_units_per_cube as usize).min(hw.max_cube_dim.0 as usize);
    while !block.is_power_of_two() {
        block &= block - 1;
    }
    if block < hd {
        return Err(KernelError::Unsupported {
            kernel: NAME,
            what: format!("head_dim {hd}"),
            why: format!("the device allows {block} units per cube, fewer than head_dim"),
        });
    }
    Ok(block)
}

/// K/V rows in 16-byte vectors where head_dim allows (a power of two <= 16 bytes that divides
/// hd); every stride but the last must be a multiple of it.
pub(crate) fn vector_width(k: &TensorHandle, v: &TensorHandle, hd: usize) -> Result<usize, KernelError> {
    let mut vector = (16 / k.dtype.size()).max(1);
    while !hd.is_multiple_of(vector) {
        vector /= 2;
    }
    for (name, t) in [("k", k), ("v", v)] {
        let s = t.strides();
        if s[..s.len() - 1].iter().any(|x| x % vector != 0) {
            return Err(KernelError::Layout { kernel: NAME, tensor: name, strides: s.to_vec() });
        }
    }
    Ok(vector)
}

/// Where a split decode row's keys end: `past + 1`, the device state's position + 1, or per
/// row through a block table.
enum Keys {
    Past(usize),
    State(TensorHandle),
    Paged { table: TensorHandle, lens: TensorHandle },
}

/// Unset: read `$BRAID_SPLIT_STAGE` (default on) at first use.
static SPLIT_STAGE: AtomicUsize = AtomicUsize::new(usize::MAX);

/// Whether the split decode attention stages each chunk's key rows in shared memory (coalesced
/// loads) where they fit; `$BRAID_SPLIT_STAGE=0` reads them straight from the cache, one row
/// per unit (the earlier kernel, for comparisons).
pub fn split_stage_keys() -> bool {
    let v = SPLIT_STAGE.load(Ordering::Relaxed);
    if v != usize::MAX {
        return v != 0;
    }
    let on = std::env::var("BRAID_SPLIT_STAGE").map_or(true, |s| s.trim() != "0");
    SPLIT_STAGE.store(on as usize, Ordering::Relaxed);
    on
}

/// Sets [`split_stage_keys`] for this process.
pub fn set_split_stage_keys(on: bool) {
    SPLIT_STAGE.store(on as usize, Ordering::Relaxed);
}

/// Shared memory of one split-attention chunk cube: the query rows, probabilities, value
/// partials and reduction scratch (f32), and with `stage` the padded key tile (activation
/// dtype of `elem` bytes).
fn split_shared_bytes(hd: usize, vector: usize, elem: usize, group: usize, block: usize, stage: bool) -> usize {
    let nvec = hd / vector;
    let parts = block / nvec;
    let tile = if stage { SPLIT_CHUNK * (nvec + 1) * vector * elem } else { 0 };
    tile + 4 * (group * hd + group * SPLIT_CHUNK + group * parts * hd + 4 * block) + 1024
}

/// A u32 buffer a kernel never reads (its comptime mode ignores it).
fn placeholder(client: &Client) -> TensorHandle {
    output_like(client, &[2], u32_type())
}

fn u32_type() -> ElemType {
    ElemType::UInt(cubecl::ir::UIntKind::U32)
}

/// Decode attention split over the keys (many more cubes than heads): `rows` = query rows x
/// heads, `chunks` of [`SPLIT_CHUNK`] keys each. f32 mode in one pass with an online-softmax
/// combine; torch mode in two (its probabilities are rounded after the global normalisation),
/// then a plain ordered sum.
#[allow(clippy::too_many_arguments)]
fn split_decode(
    client: &Client,
    q: TensorHandle,
    k: TensorHandle,
    v: TensorHandle,
    out: TensorHandle,
    keys: Keys,
    rows: usize,
    chunks: usize,
    heads: usize,
    precision: Precision,
    block: usize,
    vector: usize,
) {
    let hd = q.shape()[3];
    let dtype = q.dtype;
    let f32_t = ElemType::Float(cubecl::ir::FloatKind::F32);
    let (past, from_state, paged) = match &keys {
        Keys::Past(p) => (*p, false, false),
        Keys::State(_) => (0, true, false),
        Keys::Paged { .. } => (0, false, true),
    };
    let (state, table, lens) = match keys {
        Keys::Past(_) => (placeholder(client), placeholder(client), placeholder(client)),
        Keys::State(s) => (s, placeholder(client), placeholder(client)),
        Keys::Paged { table, lens } => (placeholder(client), table, lens),
    };
    let m = output_like(client, &[rows, chunks], f32_t);
    let l = output_like(client, &[rows, chunks], f32_t);
    let o = output_like(client, &[rows, chunks, hd], f32_t);
    let split_block = SPLIT_BLOCK.max((hd / vector).next_power_of_two()).min(block);
    // From two query rows on, one cube per (query row, kv head, chunk): the query heads sharing
    // a kv head read its keys and values once. A single row keeps one cube per query head: at
    // 512 keys its fewer cubes were slower (H200, 2026-11-26, `bench kernels`, graph-replayed:
    // 13.1 us grouped vs 9.8 ungrouped at 1 row; 133.7 vs 149.6 at 64 paged rows, 464.7 vs
    // 545.3 at 256).
    let group = if rows / heads >= 2 { heads / k.shape()[1] } else { 1 };
    let grid = CubeCount::new_2d((rows / group) as u32, chunks as u32);
    let scale = (hd as f32).powf(-0.5);
    let f32_mode = precision == Precision::F32;
    let planes = client.properties().features.plane.contains(cubecl::features::Plane::Ops);
    let stage_keys = split_stage_keys() && split_shared_bytes(hd, vector, k.dtype.size(), group, split_block, true) <= client.properties().hardware.max_shared_memory_size;
    // Torch mode's rounded scores (f32 mode: a placeholder the kernel never writes).
    let scores = output_like(client, &[rows, if f32_mode { 1 } else { chunks * SPLIT_CHUNK }], f32_t);
    split::chunk_kernel::launch(
        client,
        grid.clone(),
        CubeDim::new_1d(split_block as u32),
        vector,
        q.into_arg(),
        k.into_arg(),
        v.clone().into_arg(),
        scores.clone().into_arg(),
        m.clone().into_arg(),
        l.clone().into_arg(),
        o.clone().into_arg(),
        past as u32,
        state.clone().into_arg(),
        table.clone().into_arg(),
        lens.clone().into_arg(),
        scale,
        !f32_mode,
        from_state,
        paged,
        SPLIT_CHUNK,
        hd,
        split_block,
        group,
        stage_keys,
        planes,
        dtype,
    );
    if !f32_mode {
        split::value_kernel::launch(
            client,
            grid,
            CubeDim::new_1d(split_block as u32),
            vector,
            v.into_arg(),
            scores.into_arg(),
            m.clone().into_arg(),
            l.clone().into_arg(),
            o.clone().into_arg(),
            heads as u32,
            past as u32,
            state.clone().into_arg(),
            table.into_arg(),
            lens.clone().into_arg(),
            from_state,
            paged,
            SPLIT_CHUNK,
            hd,
            split_block,
            group,
            dtype,
        );
    }
    split::combine_kernel::launch(
        client,
        CubeCount::new_1d(rows as u32),
        CubeDim::new_1d(hd.next_power_of_two().max(32) as u32),
        m.into_arg(),
        l.into_arg(),
        o.into_arg(),
        out.into_arg(),
        heads as u32,
        past as u32,
        state.into_arg(),
        lens.into_arg(),
        from_state,
        paged,
        f32_mode,
        SPLIT_CHUNK,
        hd,
        dtype,
    );
}
