//! The batch-1 decode step's second half in one launch: o_proj, the residual add, the
//! post-attention RMSNorm, gate/up + SiLU and down_proj, three GEMV phases of one persistent
//! grid separated by grid barriers ([`crate::grid`]). It replaces three GEMV launches
//! (`linear`, `add_rms_norm_gate_up_silu`, `linear`) and gives their bits (see `kernel.rs`).
//! [`decode_mlp_qkv`] runs on into the next layer: its residual add, input norm and q/k/v
//! (phase D), its QK-norm + RoPE and KV write (phase E), and with [`NextLayer::attend`] its
//! attention (one cube per q head in phase E), so a layer's decode is one launch from its
//! attention output to the next layer's. The point is the weight reads: each plane has its next
//! phase's weights in flight across the barrier that ends the current one, so the DRAM streams
//! across the phase boundaries where separate launches leave it idle at each, and a layer pays
//! no launch boundary.
//!
//! One cube per SM, [`BARRIER_CUBES`] cubes: every cube must be resident at once (the grid
//! barrier's condition, see `grid.rs`).
//!
//! How a phase's output reaches the next phase's cubes. In bf16 and f16 (the default,
//! [`DecodeMlpOptions::tags`]) each output element is also published as a tagged word
//! ([`crate::tagged`]: the value and the launch's round in one 32-bit word, written and read as
//! one relaxed device-scope atomic), and the next phase reads those words until each carries
//! the round. The grid barriers between the phases are then unfenced
//! ([`crate::grid::grid_sync_unfenced`]): they order no memory (the tags do), they only keep
//! the readers from polling words that are still on their way. No unit waits on a release
//! fence, which holds a unit's loads in flight as well as its stores (1.6 us a light barrier
//! on an H100): 1,148.1 tok/s against 1,083.7 with the fenced barriers (H100, 2026-11-27).
//! The launch's round is the ticket counter over the cube count, read by each cube before its
//! first ticket (no round of the launch completes before every cube has taken one, so all
//! read the same); `bar` carries the words after the barrier's ([`sync_words`]). Polling the
//! words with no barrier at all was slower (1,073.5 against 1,100.2): every unit re-reading
//! every word it needs while they arrive loads the L2 the late cubes read their weights from.
//!
//! In f32 (a value fills a word) or with `tags` off, fenced barriers publish the outputs. The
//! default barrier is then [`BarrierKind::Light`] (no acquire fence after the spin). What makes
//! that safe here: each phase reads what other cubes wrote (`o` in B, `act` in C, `sum` and
//! `out` in D, the q/k row and the new value row in E) only after the barrier that publishes it
//! and never reads those words before it in the launch, so an SM can hold no older copy in its
//! L1 (a launch starts with none) unless its own earlier stores to those lines had left one
//! there (NVIDIA's L1 is write-through for global stores; not documented as never allocating).
//! Evidence, not proof: the bitwise checks (every element of the consumers against the
//! separate launches), identical tokens over every run, and the probe (`bench kernels
//! --grid-barrier-only`), which re-reads the same words every round, saw no stale read.
//! `BarrierKind::Counter` (`$BRAID_DECODE_MLP_BARRIER=counter`) is the fully fenced one. In
//! either way the attention's key row at the new position is the cube's own write (its group's
//! other cube writes the same bits), and with tags its value row too (from the value's words),
//! read by the cube's other units after a cube barrier (a `__syncthreads` orders a cube's
//! global accesses for the cube; the device-scope fence it replaced cost 1,213.8 against
//! 1,272.2 tok/s, H100, 2026-11-27).

mod kernel;
mod next;

pub use kernel::{PROBE_EXTRA_BARRIER, PROBE_HOT_A, PROBE_HOT_B, PROBE_HOT_C, PROBE_HOT_D, PROBE_HOT_WEIGHTS, PROBE_NO_ATTENTION, PROBE_NO_VALUES, PROBE_NO_WAIT};

use cubecl::features::Plane;
use cubecl::prelude::*;
use cubecl::std::tensor::TensorHandle;

use crate::check::{Check, output_like};
use crate::grid::{BARRIER_CUBES, BARRIER_WORDS, BarrierKind};
use crate::qk_norm_rope::QkShape;
use crate::qkv_rope::HeadInputs;
use crate::{KernelError, Precision};

const NAME: &str = "decode_mlp";
const NAME_QKV: &str = "decode_mlp_qkv";
const NAME_LAYERS: &str = "decode_layers";

/// How a launch is laid out (comparison knobs; [`Default`] is the measured choice: on an H100,
/// 2026-11-27, batch-1 decode at 256 units 1,015 tok/s with the light barrier against 974
/// with the counter barrier, 1,007 holding one gate/up feature ahead instead of all three,
/// 963 at 512 units (fewer registers a unit), 777 at 1,024; 942 with the three launches;
/// with the layer launch, `late_loads` 1,067 against 1,058, `c_early` 1,044, `d_early`
/// 1,051; with tagged phases, `hold` and no `e_barrier` 1,202.8 against 1,182.2 with neither,
/// then 1,272.2 against `e_fence`'s 1,213.8; `c_early` 1,237, `d_early` 1,240).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeMlpOptions {
    /// Units per cube: 256, 512 or 1,024 (a power of two: phase B's norm sums over a tree of
    /// the whole cube). At one cube per SM a unit may use up to `65,536 / units` registers
    /// (255 at most).
    pub units: usize,
    /// Gate/up features a plane loads before the first barrier; `None`: all of its features,
    /// and a layout where they do not fit the register budget ([`max_held`]) is refused (the
    /// three launches run instead).
    pub ahead_b: Option<usize>,
    /// Phase C's first weights load before the first barrier instead of the second.
    pub c_early: bool,
    /// The grid barrier between phases.
    pub barrier: BarrierKind,
    /// [`decode_mlp_qkv`]: the next layer's first q/k/v weights load with down's, before the
    /// second barrier, instead of after down's dots.
    pub d_early: bool,
    /// Down's and the next q/k/v's weight loads issued after the barrier's release fence
    /// (which waits for a unit's loads in flight too) rather than before it.
    pub late_loads: bool,
    /// The phases publish their outputs as tagged words (`crate::tagged`: a value and its
    /// round in one 32-bit word), which the next phase reads until each carries the launch's
    /// round, and the grid barriers between them are unfenced (`grid::grid_sync_unfenced`:
    /// they order no memory, the tags do; `barrier` is then unused). 16-bit dtypes (bf16, f16;
    /// f32 runs the fenced barriers); needs `bar` of [`sync_words`] words.
    pub tags: bool,
    /// With `tags`: a grid barrier before phase E as well (without it, E's head cubes wait only
    /// for their heads' words and the other cubes go on at once).
    pub e_barrier: bool,
    /// With `tags`: the residual and the norm weights of the normed phases (B, D) are loaded
    /// before the barrier that starts the phase, rather than after its words arrive.
    pub hold: bool,
    /// With `tags`: phase E's attention cubes see their own q, key and value rows through a
    /// device-scope fence (`sync_storage`) rather than a cube barrier (the fenced path, where
    /// the value row is other cubes' write, always keeps the fence).
    pub e_fence: bool,
    /// Timing probes, a mask of [`PROBE_EXTRA_BARRIER`], [`PROBE_HOT_WEIGHTS`] (or one
    /// phase's: [`PROBE_HOT_A`] .. [`PROBE_HOT_D`]), [`PROBE_NO_ATTENTION`], [`PROBE_NO_WAIT`],
    /// [`PROBE_NO_VALUES`]: each makes the launch do more or less than its job (its results
    /// are then wrong), to measure what that part costs. 0 (none) but in benchmarks.
    pub probe: u32,
    /// Where down's first weights load (unless `c_early`): 0 after phase B's dots (before
    /// the second barrier), 1 after B's staging, before its dots (the default: 1,389.6-1,390.2
    /// tok/s against 1,340.0-1,343.1 with 0 at batch 1, H100, 2026-11-27), 2 after the first
    /// barrier, before B's staging (1,308.7-1,309.0 with `d_at` 1, against 1,400.6-1,401.2).
    /// Where a lane's down row does not fit the register budget beside its held gate/up rows,
    /// or without `tags` (the fenced barriers' release fence would wait for the loads), 0.
    pub c_at: u32,
    /// Where the next layer's first q/k/v weights load in [`decode_mlp_qkv`] (unless
    /// `d_early`): 0 after phase C's dots, 1 after C's staging, before its dots (the default:
    /// with `c_at` 1, 1,405.1-1,405.5 tok/s against 1,389.6-1,390.2 with 0), 2 after the second
    /// barrier (1,366.8-1,367.0 against 1,400.6-1,401.2). Where the held q/k/v rows do not fit
    /// beside a down row, or without `tags`, 0.
    pub d_at: u32,
    /// [`decode_layers`]: how many of a plane's first o_proj, gate and up rows (in that order,
    /// 0 to 3) an iteration after the first loads during the previous iteration's phase E, the
    /// rest after the grid barrier that starts its phase A.
    pub e_loads: u32,
    /// [`decode_layers`]: phase E's idle cubes read into L2 the rows the head cubes' planes
    /// load first (those `e_loads` covers), which the head cubes ask for after their attention.
    pub e_touch: bool,
    /// [`decode_layers`]: an unfenced grid barrier before phase A's wait for the previous
    /// iteration's attention output (without it, every unit polls its words).
    pub a_barrier: bool,
    /// [`decode_layers`] with `e_touch`: phase E's idle cubes also read into L2 the next
    /// iteration's weights of a mask: q rows (1), k and v rows (2), down's (4).
    pub e_touch_qkv: u32,
    /// [`decode_mlp_qkv`] with the attention (and [`decode_layers`]): the phase in which every
    /// unit reads into L2 its share of the cached key and value rows the attention of phase E
    /// will read (0 none, 1 A, 2 B, 3 C; after the phase's staging, used after its dots), so
    /// that the attention's reads do not wait behind phase E's weight loads in DRAM. 3 (the
    /// default): batch-1 decode 1,497.0 / 1,497.5 tok/s against 1,464.6 / 1,456.7 with 0
    /// (H100, 2026-11-27, one call; 1 gave 1,495.3, 2 1,492.9).
    pub kv_at: u32,
    /// With `kv_at`: key and value vectors each unit reads (positions past what the grid covers
    /// are not read ahead).
    pub kv_n: usize,
    /// Phase E's attention: value vectors a unit has in flight (4, 8 or 16); `None`: the row
    /// kernel's ([`crate::attention`]'s `row_ahead`), so the two give the same bits.
    pub attn_ahead: Option<usize>,
    /// With the attention: phase E's head cubes issue its first cache loads (the keys before
    /// this step's) before they wait for their head's words, rather than after its norm. On
    /// (the default; with `kv_at` 3, where those loads find L2): batch-1 decode 1,537.4 /
    /// 1,535.3 tok/s against 1,497.3 / 1,495.3 (H100, 2026-11-27, one call).
    pub kv_early: bool,
}

impl Default for DecodeMlpOptions {
    fn default() -> Self {
        Self {
            units: 256,
            ahead_b: None,
            c_early: false,
            barrier: BarrierKind::Light,
            d_early: false,
            late_loads: true,
            tags: true,
            e_barrier: false,
            hold: true,
            e_fence: false,
            probe: 0,
            c_at: 1,
            d_at: 1,
            e_loads: 3,
            e_touch: true,
            a_barrier: false,
            e_touch_qkv: 0,
            kv_at: 3,
            kv_n: 2,
            attn_ahead: None,
            kv_early: true,
        }
    }
}

/// The grid barrier rounds one launch takes (what it adds to the ticket counter, over the cube
/// count): two for [`decode_mlp`]; for [`decode_mlp_qkv`] (`next`) four, or three with tagged
/// phases (`tagged`: `options.tags` and a 16-bit dtype; phase E then waits on its words
/// without a barrier, unless `options.e_barrier`); twice as many with [`PROBE_EXTRA_BARRIER`];
/// for [`decode_layers`] of `layers` layers, that many a layer and with `options.a_barrier` one
/// more before each layer's phase A but the first (the first's too with `pre`); `pre` alone (no
/// layer) one.
pub fn rounds_layers(next: bool, tagged: bool, options: DecodeMlpOptions, layers: u32, pre: bool) -> u32 {
    if layers == 0 {
        // `pre` alone takes no barrier; its cubes move the counter on by one round at the end, so
        // that the next launch tags its words with another round than this one's.
        return u32::from(pre);
    }
    let a = if options.a_barrier { (layers + u32::from(pre)).saturating_sub(1) } else { 0 };
    rounds(next, tagged, options) * layers + a
}

/// `options` as [`decode_layers`] runs them on `client` for next layers of `nqkv` q/k/v
/// features: the barrier before phase A ([`DecodeMlpOptions::a_barrier`]) forced on where the
/// grid may have more planes than features. Without the barrier a cube starts the next
/// iteration's phase A once every head's words exist, which holds back only the cubes whose
/// planes compute a q/k/v feature: a cube with none could still be reading the `o` words the
/// next iteration rewrites (it would then wait for a round that never comes).
pub fn layers_options(client: &Client, options: DecodeMlpOptions, nqkv: usize) -> DecodeMlpOptions {
    let pmin = client.properties().hardware.plane_size_min.max(1) as usize;
    let planes = BARRIER_CUBES as usize * options.units / pmin;
    DecodeMlpOptions { a_barrier: options.a_barrier || nqkv < planes, ..options }
}

/// [`rounds_layers`] of one layer.
pub fn rounds(next: bool, tagged: bool, options: DecodeMlpOptions) -> u32 {
    let barriers = match (next, options.tags && tagged) {
        (false, _) => 2,
        (true, true) if !options.e_barrier => 3,
        (true, _) => 4,
    };
    if options.probe & PROBE_EXTRA_BARRIER != 0 { 2 * barriers } else { barriers }
}

/// The most weight vectors (16 bytes, 4 registers each) a lane may hold at once with `units`
/// units a cube: about 4/7 of the registers a unit may have at one cube per SM (36 at 256
/// units, 18 at 512, 9 at 1,024), the rest for the staging, the sums and the addresses.
pub fn max_held(units: usize) -> usize {
    (65_536 / units.max(1)).min(255) / 7
}

/// The inputs of one call.
pub struct DecodeMlpArgs {
    /// `[1, q_dim]`: the attention output (heads x head_dim).
    pub attn: TensorHandle,
    /// `[1, hidden]`: the residual stream before the attention's output is added.
    pub residual: TensorHandle,
    /// `[hidden]`: post_attention_layernorm's weight.
    pub gamma: TensorHandle,
    /// `[hidden, q_dim]`, `[inter, hidden]` x 2, `[hidden, inter]`: o_proj, gate, up, down.
    pub wo: TensorHandle,
    pub wg: TensorHandle,
    pub wu: TensorHandle,
    pub wd: TensorHandle,
    /// `[BARRIER_WORDS]` u32 at least, [`sync_words`] for the tagged phases
    /// ([`DecodeMlpOptions::tags`]), zeros before the first launch (each launch leaves its
    /// counter a multiple of the cube count); one buffer may serve every layer of a stream.
    pub bar: TensorHandle,
}

/// Words of the `bar` buffer a launch with tagged phases needs ([`DecodeMlpOptions::tags`]):
/// the barrier's, then one per element of `o` (`hidden`), `act` (`inter`), `out` (`hidden`), of
/// the next layer's q/k/v (`nqkv = (heads + 2 * kv_heads) * head_dim`; 0 for [`decode_mlp`])
/// and of its attention output (`q_dim = heads * head_dim`, read by [`decode_layers`]' next
/// iteration; 0 for [`decode_mlp`]).
/// A word read with a stale tag from [`crate::tagged::TAG_ROUNDS`] rounds before would pass
/// for the current round: one buffer per stream whose launches rewrite each region they read
/// at least that often (a decode step rewrites all of them).
pub fn sync_words(hidden: usize, inter: usize, nqkv: usize, q_dim: usize) -> usize {
    kernel::TAGS + 2 * hidden + inter + nqkv + q_dim
}

/// Elements of a 16-byte weight vector: every width must be a multiple (the vector the GEMV
/// picks for each of them, so the staging layout and dot order are the GEMV's).
fn vector(dtype: ElemType) -> usize {
    (16 / dtype.size()).max(1)
}

/// Why this device or shape cannot run the kernel with `options`, or `None`. Needs plane
/// operations, device-scope memory ordering and at least [`BARRIER_CUBES`] SMs (the barrier),
/// each width a multiple of a 16-byte vector and within the GEMV's shared memory, and a lane's
/// held weights within [`max_held`] (larger models keep the three launches: their registers
/// would spill).
pub fn unsupported(client: &Client, dtype: ElemType, q_dim: usize, hidden: usize, inter: usize, options: DecodeMlpOptions) -> Option<String> {
    layout(client, dtype, q_dim, hidden, inter, options).err()
}

/// Why this device or shape cannot run [`decode_mlp_qkv`] (the next layer's heads `next`, one
/// row), or `None`: [`unsupported`]'s conditions, then a cube per q and k head within the grid,
/// half a head within a cube, and at least one q/k/v feature's weights within a lane's budget.
pub fn unsupported_qkv(
    client: &Client,
    dtype: ElemType,
    q_dim: usize,
    hidden: usize,
    inter: usize,
    next: QkShape,
    options: DecodeMlpOptions,
) -> Option<String> {
    layout(client, dtype, q_dim, hidden, inter, options).and_then(|_| next_layout(client, dtype, hidden, inter, next, options)).err()
}

/// The gate/up features a plane holds ahead (see [`DecodeMlpOptions::ahead_b`]), or why the
/// kernel cannot run.
fn layout(client: &Client, dtype: ElemType, q_dim: usize, hidden: usize, inter: usize, options: DecodeMlpOptions) -> Result<usize, String> {
    let props = client.properties();
    if !props.features.plane.contains(Plane::Ops) {
        return Err("no plane operations".into());
    }
    let sms = props.hardware.num_streaming_multiprocessors.unwrap_or(0);
    if !props.features.device_memory_scope || sms < BARRIER_CUBES {
        return Err(format!("a grid barrier needs device-scope ordering and {BARRIER_CUBES} SMs ({sms})"));
    }
    let units = options.units;
    if ![256, 512, 1024].contains(&units) {
        return Err(format!("{units} units per cube: 256, 512 or 1,024 (the norm's reduction tree)"));
    }
    let widest = q_dim.max(hidden).max(inter);
    if widest > crate::gemv::SHARED_F32 || q_dim == 0 || hidden == 0 || inter == 0 {
        return Err(format!("widths {q_dim} / {hidden} / {inter}: each in 1..={}", crate::gemv::SHARED_F32));
    }
    let vs = vector(dtype);
    if [q_dim, hidden, inter].iter().any(|w| w % vs != 0) {
        return Err(format!("widths {q_dim} / {hidden} / {inter}: each a multiple of {vs}"));
    }
    let (pmin, pmax) = (props.hardware.plane_size_min.max(1) as usize, props.hardware.plane_size_max.max(1) as usize);
    held_ahead([q_dim, hidden, inter], vs, (pmin, pmax), units, options.ahead_b)
}

/// The q/k/v features a plane holds ahead in phase D, or why [`decode_mlp_qkv`] cannot run.
fn next_layout(client: &Client, dtype: ElemType, hidden: usize, inter: usize, next: QkShape, options: DecodeMlpOptions) -> Result<usize, String> {
    let QkShape { heads, kv_heads, head_dim: hd, .. } = next;
    if hd == 0 || hd % 2 != 0 || hd / 2 > options.units {
        return Err(format!("head_dim {hd}: even, at most twice the {} units of a cube", options.units));
    }
    if heads + kv_heads > BARRIER_CUBES as usize || heads == 0 || kv_heads == 0 {
        return Err(format!("{heads} + {kv_heads} q and k heads: one cube each, at most {BARRIER_CUBES}"));
    }
    let props = client.properties();
    let (pmin, pmax) = (props.hardware.plane_size_min.max(1) as usize, props.hardware.plane_size_max.max(1) as usize);
    held_next(hidden, inter, (heads + 2 * kv_heads) * hd, vector(dtype), (pmin, pmax), options)
}

/// [`next_layout`]'s register arithmetic: all of a plane's q/k/v features where they fit
/// [`max_held`] beside what the lane holds then (down's row with `d_early`), else as many as
/// fit (the rest one at a time), at least one.
fn held_next(hidden: usize, inter: usize, nqkv: usize, vs: usize, (pmin, pmax): (usize, usize), options: DecodeMlpOptions) -> Result<usize, String> {
    let lanes = |w: usize| lanes_of(w, vs, pmin);
    let (lb, lc) = (lanes(hidden), lanes(inter));
    let planes = (BARRIER_CUBES as usize * options.units / pmax).max(1);
    let limit = max_held(options.units);
    let room = if options.d_early { limit.saturating_sub(lc) } else { limit };
    let fit = room / lb.max(1);
    if fit == 0 {
        return Err(format!("a q/k/v row is {lb} weight vectors a lane, {room} free at {} units", options.units));
    }
    Ok(nqkv.div_ceil(planes).clamp(1, fit))
}

/// [`layout`]'s register arithmetic: `widths = [q_dim, hidden, inter]` in `vs`-element vectors,
/// planes of `pmin..=pmax` lanes, `units` a cube. Each lane holds `la` vectors of an o_proj
/// row, `lb` of a gate and of an up row per gate/up feature held, `lc` of a down row; the
/// default (`want = None`) holds all of a plane's gate/up features and refuses a layout where
/// they do not fit [`max_held`] (measured only where they do: Qwen3-0.6B's widths); `want`
/// holds that many (at most all, at least one), the rest loading one at a time.
fn held_ahead(widths: [usize; 3], vs: usize, (pmin, pmax): (usize, usize), units: usize, want: Option<usize>) -> Result<usize, String> {
    let [q_dim, hidden, inter] = widths;
    let lanes = |w: usize| lanes_of(w, vs, pmin);
    let (la, lb, lc) = (lanes(q_dim), lanes(hidden), lanes(inter));
    // Gate/up features per plane (the fewest planes: the widest).
    let planes = (BARRIER_CUBES as usize * units / pmax).max(1);
    let all = inter.div_ceil(planes);
    let limit = max_held(units);
    let fit = limit.saturating_sub(la) / (2 * lb);
    let ahead = want.unwrap_or(all).clamp(1, all);
    if ahead > fit || lc > limit {
        return Err(format!(
            "{} weight vectors a lane ({la} + 2 x {lb} x {ahead} gate/up features, or {lc}; at most {limit} at {units} units)",
            (la + 2 * lb * ahead).max(lc)
        ));
    }
    Ok(ahead)
}

/// Weight vectors (of `vs` elements) a lane holds of a row `w` elements wide, at planes of at
/// least `pmin` lanes.
fn lanes_of(w: usize, vs: usize, pmin: usize) -> usize {
    (w / vs).div_ceil(pmin)
}

/// Where down's first weights load ([`DecodeMlpOptions::c_at`]): as asked where a lane's down
/// row fits the register budget beside its held gate/up rows (loaded during phase B), else
/// after B's dots (0).
fn c_point(widths: [usize; 3], vs: usize, pmin: usize, units: usize, ahead_b: usize, c_at: u32) -> u32 {
    let lanes = |w: usize| lanes_of(w, vs, pmin);
    let (lb, lc) = (lanes(widths[1]), lanes(widths[2]));
    if 2 * lb * ahead_b + lc <= max_held(units) { c_at.min(2) } else { 0 }
}

/// Where the next layer's first q/k/v weights load ([`DecodeMlpOptions::d_at`]): as asked
/// where a lane's held q/k/v rows fit the register budget beside its down row (loaded during
/// phase C), else after C's dots (0).
fn d_point(hidden: usize, inter: usize, vs: usize, pmin: usize, units: usize, ahead_d: usize, d_at: u32) -> u32 {
    let lanes = |w: usize| lanes_of(w, vs, pmin);
    if ahead_d * lanes(hidden) + lanes(inter) <= max_held(units) { d_at.min(2) } else { 0 }
}

/// Runs the three phases; returns `(sum, out)`: `sum = residual + attn @ wo^T` (rounded: the
/// residual stream) and `out = down(silu(gate(n)) * up(n))` with `n` the normed `sum`, bit
/// for bit what `linear`, `add_rms_norm_gate_up_silu` and `linear` give.
pub fn decode_mlp(
    client: &Client,
    args: DecodeMlpArgs,
    eps: f32,
    precision: Precision,
    options: DecodeMlpOptions,
) -> Result<(TensorHandle, TensorHandle), KernelError> {
    run(client, args, None, eps, precision, options, 1, 0, false).map(|(sum, out, _)| (sum, out))
}

/// The next layer's attention inputs for [`decode_mlp_qkv`].
pub struct NextLayer {
    /// Its input norm, projections, QK norms, the step's RoPE rows, its caches and the state.
    pub head: HeadInputs,
    /// Its heads (batch 1, one row).
    pub shape: QkShape,
    /// Its input norm's and QK norms' epsilons.
    pub eps: f32,
    pub qk_eps: f32,
    /// Whether the launch also runs its attention (one cube per q head, after its norm + RoPE:
    /// `attention::attention_at_units` at the launch's cube width, bit for bit), and up to four
    /// tensors the other cubes read into L2 meanwhile (the weights the next launch reads first).
    pub attend: Option<Vec<TensorHandle>>,
}

/// What [`decode_mlp_qkv`] returns.
pub struct NextOut {
    /// `[1, hidden]`: the residual stream entering the next layer's attention.
    pub stream: TensorHandle,
    /// `[1, heads, 1, hd]`: its q, normed and rotated.
    pub q: TensorHandle,
    /// `[1, 1, heads * hd]`: its attention output, when [`NextLayer::attend`].
    pub attn: Option<TensorHandle>,
}

/// [`decode_mlp`] running on into the next layer's attention inputs (two more phases and
/// barriers): `stream = sum + out` (the residual stream entering the next layer's attention),
/// its `q`, its new key and value written into `next.head`'s caches at `state[1]`, and with
/// `next.attend` its attention output. Bit for bit [`decode_mlp`], `qkv_rope::qkv_rope_cache`
/// with the residual add, and `attention::attention_at_units` at `options.units`.
pub fn decode_mlp_qkv(
    client: &Client,
    args: DecodeMlpArgs,
    next: NextLayer,
    eps: f32,
    precision: Precision,
    options: DecodeMlpOptions,
) -> Result<NextOut, KernelError> {
    let (stream, q, attn) = run(client, args, Some(next), eps, precision, options, 1, 0, false)?;
    Ok(NextOut { stream, q, attn })
}

/// [`decode_mlp_qkv`] with the attention ([`NextLayer::attend`]) over `layers` layers in one
/// launch: iteration `l` runs phases A-C of layer `l` of `args`' stacked weights
/// (`wo: [layers * hidden, q_dim]`, `gamma: [layers * hidden]`, `wg`,
/// `wu: [layers * inter, hidden]`, `wd: [layers * hidden, inter]`) and phases D-E of layer
/// `l + head_from` of `next.head`'s (`gamma: [n * hidden]`, `wq: [n * heads * hd, hidden]`,
/// `wk`, `wv: [n * kv_heads * hd, hidden]`, `q_weight`, `k_weight: [n * hd]`, caches
/// `[n, kv_heads, capacity, hd]`, `n = layers + head_from`: that layer is the one after `args`'
/// layer `l`); the next iteration starts from that attention output (as
/// tagged words, awaited without a barrier unless [`DecodeMlpOptions::a_barrier`]) and the
/// stream (in registers). `args.attn`
/// and `args.residual` enter the first; returns the last's stream and attention output (`q`:
/// the last's q), and the tensors `next.attend` names are read into L2 during the last
/// iteration's attention only. Bit for bit `layers` launches of [`decode_mlp_qkv`] over the
/// layers' views. Needs the tagged phases (bf16 or f16 with [`DecodeMlpOptions::tags`]);
/// `layers == 1` is [`decode_mlp_qkv`].
///
/// `head_from` 1: `next.head`'s stacks and caches have one layer more than `args`' and start
/// one layer before (iteration `l` runs D-E of their layer `l + 1`: the whole model's stacks
/// serve). With `pre` (and `head_from` 1) the launch starts one layer earlier: phases D-E of
/// `next.head`'s layer 0 from the stream `args.residual` itself (the embedding row: no residual
/// add; `args.attn` is not read), bit for bit `qkv_rope::qkv_rope_cache` without the add and
/// `attention::attention_at_units`.
#[allow(clippy::too_many_arguments)]
pub fn decode_layers(
    client: &Client,
    args: DecodeMlpArgs,
    next: NextLayer,
    layers: usize,
    head_from: usize,
    pre: bool,
    eps: f32,
    precision: Precision,
    options: DecodeMlpOptions,
) -> Result<NextOut, KernelError> {
    if head_from > 1 || (pre && head_from != 1) {
        return Err(KernelError::Unsupported { kernel: NAME_LAYERS, what: format!("head_from {head_from}, pre {pre}"), why: "the next layer's stacks start at `args`' layer (0) or one before (1; `pre` needs 1)".into() });
    }
    let (stream, q, attn) = run(client, args, Some(next), eps, precision, options, layers, head_from, pre)?;
    Ok(NextOut { stream, q, attn })
}

/// Why [`decode_mlp_qkv`] cannot attend over `head`'s caches (capacity, layout, units), or the
/// row kernel's `(partial_len, planes)` at this cube width (the standalone's values, so that
/// the bits match `attention_at_units`).
fn attend_layout(client: &Client, head: &HeadInputs, shape: QkShape, units: usize, vs: usize) -> Result<(usize, bool), String> {
    let hd = shape.head_dim;
    attend_limits(head.k_cache.shape()[2], shape, units)?;
    let vector = crate::attention::vector_width(&head.k_cache, &head.v_cache, hd).map_err(|e| e.to_string())?;
    if vector != vs {
        return Err(format!("cache rows in vectors of {vector}, weights of {vs}"));
    }
    Ok((crate::attention::row_partial_len(client, hd, units, vs, 0), crate::attention::row_planes(client)))
}

/// [`attend_layout`]'s conditions that do not depend on the caches' layout: a cache of
/// `capacity` positions, `units` a cube, `shape`'s heads.
fn attend_limits(capacity: usize, shape: QkShape, units: usize) -> Result<(), String> {
    let QkShape { heads, kv_heads, head_dim: hd, .. } = shape;
    let limit = crate::attention::decode_row_max_keys().min(crate::attention::MAX_KEYS);
    if capacity > limit {
        return Err(format!("a cache of {capacity} positions (the row attention serves up to {limit})"));
    }
    if units != crate::attention::DECODE_ROW_UNITS {
        return Err(format!("{units} units: the standalone decode attention runs at {} (the same bits)", crate::attention::DECODE_ROW_UNITS));
    }
    if hd > units || hd > crate::attention::MAX_HEAD_DIM || heads % kv_heads != 0 {
        return Err(format!("head_dim {hd} over {units} units, {heads} heads over {kv_heads}"));
    }
    Ok(())
}

/// Why this device cannot run [`decode_layers`] as one launch (more than one layer) for
/// `q_dim -> hidden -> inter` layers whose attention inputs have `next`'s heads, in `dtype`,
/// over contiguous caches of `capacity` positions, with `options`; or `None`. Where this says
/// `None`, stacked weights and caches of those shapes pass the launch's checks; elsewhere the
/// model keeps one launch a layer (the `ops` fallback, layer by layer over slices of the stacks,
/// serves direct calls only).
#[allow(clippy::too_many_arguments)]
pub fn unsupported_layers(client: &Client, dtype: ElemType, q_dim: usize, hidden: usize, inter: usize, next: QkShape, capacity: usize, options: DecodeMlpOptions) -> Option<String> {
    if !(options.tags && dtype.size() == 2) {
        return Some("the layers hand on tagged words: bf16 or f16 with the tagged phases on".into());
    }
    if next.heads * next.head_dim != q_dim {
        return Some(format!("{} heads of {} against o_proj's {q_dim} inputs", next.heads, next.head_dim));
    }
    if let Some(why) = unsupported_qkv(client, dtype, q_dim, hidden, inter, next, options) {
        return Some(why);
    }
    if let Err(why) = attend_limits(capacity, next, options.units) {
        return Some(why);
    }
    // (Contiguous cache rows: `attention::vector_width`'s vector, the widest dividing head_dim.)
    let vs = vector(dtype);
    let mut rows = vs;
    while !next.head_dim.is_multiple_of(rows) {
        rows /= 2;
    }
    (rows != vs).then(|| format!("head_dim {} in vectors of {rows}, weights of {vs}", next.head_dim))
}

/// [`decode_mlp`] (`next: None`: returns `(sum, out, None)`), [`decode_mlp_qkv`]
/// (`(stream, q, attn)`) or with `layers` > 1 or `pre` [`decode_layers`].
#[allow(clippy::too_many_arguments)]
fn run(
    client: &Client,
    args: DecodeMlpArgs,
    next: Option<NextLayer>,
    eps: f32,
    precision: Precision,
    options: DecodeMlpOptions,
    layers: usize,
    head_from: usize,
    pre: bool,
) -> Result<(TensorHandle, TensorHandle, Option<TensorHandle>), KernelError> {
    let c = Check::new(if layers > 1 || pre { NAME_LAYERS } else if next.is_some() { NAME_QKV } else { NAME });
    // (With `pre` the attention output is the launch's own first phase E's: `attn` is unread.)
    let q_dim = match (&next, pre) {
        (Some(n), true) => n.shape.heads * n.shape.head_dim,
        _ => {
            let [rows, q_dim] = c.matrix("attn", &args.attn)?;
            if rows != 1 {
                return Err(c.shape_err("attn", &args.attn, format!("[1, {q_dim}]")));
            }
            q_dim
        }
    };
    let dtype = args.attn.dtype;
    let [_, hidden] = c.matrix("residual", &args.residual)?;
    c.shape("residual", &args.residual, &[1, hidden])?;
    // (`pre` alone, `layers` 0: one layer's MLP weights, which only phase E's L2 reads touch.)
    let mlp_layers = layers.max(1);
    let [rows_g, _] = c.matrix("wg", &args.wg)?;
    let inter = rows_g / mlp_layers;
    c.shape("wo", &args.wo, &[mlp_layers * hidden, q_dim])?;
    c.shape("wg", &args.wg, &[mlp_layers * inter, hidden])?;
    c.shape("wu", &args.wu, &[mlp_layers * inter, hidden])?;
    c.shape("wd", &args.wd, &[mlp_layers * hidden, inter])?;
    c.shape("gamma", &args.gamma, &[mlp_layers * hidden])?;
    for (name, t) in [("residual", &args.residual), ("gamma", &args.gamma), ("wo", &args.wo), ("wg", &args.wg), ("wu", &args.wu), ("wd", &args.wd)] {
        c.contiguous(name, t)?;
        c.same_dtype(name, t, dtype)?;
    }
    if !pre {
        c.contiguous("attn", &args.attn)?;
    }
    c.same_dtype("bar", &args.bar, ElemType::UInt(cubecl::ir::UIntKind::U32))?;
    c.contiguous("bar", &args.bar)?;
    // Tagged words hold a 16-bit value beside the tag (`crate::tagged`).
    let tags = options.tags && dtype.size() == 2;
    let nqkv = next.as_ref().map_or(0, |n| (n.shape.heads + 2 * n.shape.kv_heads) * n.shape.head_dim);
    let next_q = next.as_ref().map_or(0, |n| n.shape.heads * n.shape.head_dim);
    let words = if tags { sync_words(hidden, inter, nqkv, next_q) } else { BARRIER_WORDS };
    if args.bar.shape().len() != 1 || args.bar.shape()[0] < words {
        let why = if tags { format!("[{words}] or more: the barrier's words and the tagged phases' (sync_words)") } else { format!("[{BARRIER_WORDS}] or more") };
        return Err(c.shape_err("bar", &args.bar, why));
    }
    let refuse = |why: String| KernelError::Unsupported { kernel: c.kernel(), what: format!("{q_dim} -> {hidden} -> {inter} on this device"), why };
    let options = if layers > 1 || pre { layers_options(client, options, nqkv) } else { options };
    // Each iteration after the first reads the one before's attention output as tagged words.
    if (layers == 0 && !pre) || ((layers > 1 || pre || head_from > 0) && !(tags && next.as_ref().is_some_and(|n| n.attend.is_some() && n.shape.heads * n.shape.head_dim == q_dim))) {
        return Err(refuse(format!("{layers} layers in one launch: at least one (none only with `pre`); more need the tagged phases (bf16 or f16 with tags on) and the attention, whose output is the next layer's o_proj input")));
    }
    let ahead_b = layout(client, dtype, q_dim, hidden, inter, options).map_err(refuse)?;
    let units = options.units;
    let vs = vector(dtype);
    let (ahead_d, attend) = match &next {
        Some(n) => {
            n.head.check_layers(&c, n.shape, hidden, dtype, layers + head_from)?;
            let ahead = next_layout(client, dtype, hidden, inter, n.shape, options).map_err(refuse)?;
            let attend = match &n.attend {
                Some(pf) => {
                    if pf.len() > 4 {
                        return Err(refuse(format!("{} prefetch tensors (at most four)", pf.len())));
                    }
                    for t in pf {
                        c.same_dtype("prefetch", t, dtype)?;
                        c.contiguous("prefetch", t)?;
                        if t.shape().last().is_none_or(|&w| w % vs != 0) {
                            return Err(refuse(format!("a prefetch tensor of shape {:?}: rows in vectors of {vs}", t.shape())));
                        }
                    }
                    let (partial_len, planes) = attend_layout(client, &n.head, n.shape, units, vs).map_err(refuse)?;
                    kernel::AttendPhase { on: true, max_keys: crate::attention::MAX_KEYS, partial_len, planes, prefetch: pf.len(), ahead: options.attn_ahead.unwrap_or_else(crate::attention::row_ahead) }
                }
                None => kernel::AttendPhase { on: false, max_keys: 1, partial_len: 1, planes: false, prefetch: 0, ahead: 4 },
            };
            (ahead, attend)
        }
        None => (0, kernel::AttendPhase { on: false, max_keys: 1, partial_len: 1, planes: false, prefetch: 0, ahead: 4 }),
    };
    let o = output_like(client, &[1, hidden], dtype);
    let sum = output_like(client, &[1, hidden], dtype);
    let act = output_like(client, &[1, inter], dtype);
    let out = output_like(client, &[1, hidden], dtype);
    let (shape, eps_in, qk_eps) = next.as_ref().map_or((QkShape { batch: 1, seq: 1, heads: 0, kv_heads: 0, head_dim: 0 }, 0.0, 0.0), |n| (n.shape, n.eps, n.qk_eps));
    let QkShape { heads, kv_heads, head_dim: hd, .. } = shape;
    let (stream, q) = (output_like(client, &[1, hidden], dtype), output_like(client, &[1, heads, 1, hd], dtype));
    let raw = output_like(client, &[((heads + kv_heads) * hd).max(1)], dtype);
    let attn = output_like(client, &[1, 1, (heads * hd).max(1)], dtype);
    let sink = output_like(client, &[1], ElemType::Float(cubecl::ir::FloatKind::F32));
    // (Unread prefetch slots: o_proj's weight stands in.)
    let pf: Vec<TensorHandle> = {
        let given = next.as_ref().and_then(|n| n.attend.clone()).unwrap_or_default();
        (0..4).map(|i| given.get(i).cloned().unwrap_or_else(|| args.wo.clone())).collect()
    };
    // Without a next layer its tensors are never touched: scratch of the right types stands in.
    let head = next.map(|n| n.head).unwrap_or_else(|| {
        let f32_ty = ElemType::Float(cubecl::ir::FloatKind::F32);
        let rope = output_like(client, &[1, 1], f32_ty);
        HeadInputs {
            gamma: args.gamma.clone(),
            wq: args.wo.clone(),
            wk: args.wo.clone(),
            wv: args.wo.clone(),
            q_weight: args.gamma.clone(),
            k_weight: args.gamma.clone(),
            cos: rope.clone(),
            sin: rope,
            k_cache: raw.clone(),
            v_cache: raw.clone(),
            state: args.bar.clone(),
        }
    });
    let then_qkv = heads > 0;
    let pmin = client.properties().hardware.plane_size_min.max(1) as usize;
    crate::reduce::note_device(client);
    // SAFETY: the shapes, dtypes and contiguity the kernel indexes were checked above and the
    // outputs allocated at them; every index stays below its tensor's length (features below
    // their matrix's rows, vectors below a row's; the cache rows at `state[1]`, below the
    // capacity: the caller's invariant, as for `qkv_rope_cache`). Residency of all cubes (the
    // barrier's condition) is what `layout` checks: one cube per SM.
    unsafe {
        kernel::decode_mlp_kernel::launch_unchecked(
            client,
            CubeCount::new_1d(BARRIER_CUBES),
            CubeDim::new_1d(units as u32),
            vs,
            args.attn.into_arg(),
            args.residual.into_arg(),
            args.gamma.into_arg(),
            args.wo.into_arg(),
            args.wg.into_arg(),
            args.wu.into_arg(),
            args.wd.into_arg(),
            o.into_arg(),
            sum.clone().into_arg(),
            act.into_arg(),
            out.clone().into_arg(),
            args.bar.into_arg(),
            head.gamma.into_arg(),
            head.wq.into_arg(),
            head.wk.into_arg(),
            head.wv.into_arg(),
            head.q_weight.into_arg(),
            head.k_weight.into_arg(),
            head.cos.into_arg(),
            head.sin.into_arg(),
            raw.into_arg(),
            stream.clone().into_arg(),
            q.clone().into_arg(),
            head.k_cache.clone().into_arg(),
            head.v_cache.clone().into_arg(),
            head.state.into_arg(),
            // (The caches again, read in vectors by the attention; else a weight stands in.)
            if attend.on { head.k_cache } else { pf[0].clone() }.into_arg(),
            if attend.on { head.v_cache } else { pf[0].clone() }.into_arg(),
            attn.clone().into_arg(),
            pf[0].clone().into_arg(),
            pf[1].clone().into_arg(),
            pf[2].clone().into_arg(),
            pf[3].clone().into_arg(),
            sink.into_arg(),
            eps,
            eps_in,
            qk_eps,
            (hd.max(1) as f32).powf(-0.5),
            precision.f32_internal(),
            q_dim,
            hidden,
            inter,
            BARRIER_CUBES,
            crate::gemv::BLOCK,
            units,
            pmin,
            ahead_b,
            options.c_early,
            options.barrier.code(),
            then_qkv,
            heads,
            kv_heads,
            hd / 2,
            ahead_d,
            options.d_early,
            attend,
            options.late_loads,
            tags,
            options.e_barrier,
            options.hold,
            options.e_fence,
            options.probe,
            // (The fenced path keeps the loads after the dots: its release fence would wait for them.)
            kernel::LoadPoints {
                c_at: if tags { c_point([q_dim, hidden, inter], vs, pmin, units, ahead_b, options.c_at) } else { 0 },
                d_at: if tags { d_point(hidden, inter, vs, pmin, units, ahead_d, options.d_at) } else { 0 },
                e_loads: options.e_loads.min(3),
                e_touch: options.e_touch,
                a_barrier: options.a_barrier,
                e_touch_qkv: options.e_touch_qkv & 7,
                kv_at: if tags { options.kv_at.min(3) } else { 0 },
                kv_n: options.kv_n.clamp(1, 8),
                kv_early: options.kv_early,
            },
            layers,
            pre,
            head_from,
            dtype,
        );
    }
    Ok(if then_qkv { (stream, q, attend.on.then_some(attn)) } else { (sum, out, None) })
}


#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn down_loads_during_b_only_where_its_row_fits_beside_gate_and_up() {
        // Qwen3-0.6B in bf16 at 256 units: 2 x 4 x 3 + 12 = 36, the budget.
        assert_eq!(c_point([2048, 1024, 3072], 8, 32, 256, 3, 1), 1);
        assert_eq!(c_point([2048, 1024, 3072], 8, 32, 256, 3, 7), 2);
        // Wider rows: 2 x 4 x 3 + 16 > 36: after B's dots.
        assert_eq!(c_point([2048, 1024, 4096], 8, 32, 256, 3, 1), 0);
        assert_eq!(c_point([2048, 1024, 3072], 8, 32, 512, 1, 2), 0);
    }

    #[test]
    fn qkv_loads_during_c_only_where_they_fit_beside_down() {
        // Qwen3-0.6B in bf16 at 256 units: 4 x 4 + 12 = 28 of 36.
        assert_eq!(d_point(1024, 3072, 8, 32, 256, 4, 1), 1);
        // At 512 units (18 a lane): 2 x 4 + 12 = 20: after C's dots.
        assert_eq!(d_point(1024, 3072, 8, 32, 512, 2, 2), 0);
        assert_eq!(d_point(1024, 3072, 8, 32, 512, 1, 2), 2);
    }

    #[test]
    fn register_budget_admits_the_measured_layouts_only() {
        assert_eq!((max_held(256), max_held(512), max_held(1024)), (36, 18, 9));
        let nv = (32, 32);
        // Qwen3-0.6B in bf16: 8 + 2 x 4 x 3 = 32 vectors at 256 units, all three features held.
        assert_eq!(held_ahead([2048, 1024, 3072], 8, nv, 256, None), Ok(3));
        // At 512 units its two features per plane do not fit 18; one held on request (measured).
        assert!(held_ahead([2048, 1024, 3072], 8, nv, 512, None).is_err());
        assert_eq!(held_ahead([2048, 1024, 3072], 8, nv, 512, Some(1)), Ok(1));
        assert_eq!(held_ahead([2048, 1024, 3072], 8, nv, 256, Some(9)), Ok(3));
        // Qwen3-1.7B (2,048 / 2,048 / 6,144): six features a plane, one fits: refused by default.
        assert!(held_ahead([2048, 2048, 6144], 8, nv, 256, None).is_err());
        // The checks' odd widths: 5 + 2 x 2 x 3 at 256 units.
        assert_eq!(held_ahead([1096, 264, 2056], 8, nv, 256, None), Ok(3));
    }

    #[test]
    fn tagged_words_follow_the_barrier_words() {
        // Qwen3-0.6B: o and out 1,024 words each, act 3,072, q/k/v (16 + 2 x 8) x 128 = 4,096.
        // and the attention output 16 x 128 = 2,048.
        assert_eq!(sync_words(1024, 3072, 4096, 2048), BARRIER_WORDS + 2 * 1024 + 3072 + 4096 + 2048);
        // `decode_mlp` alone: no q/k/v or attention region.
        assert_eq!(sync_words(1024, 3072, 0, 0), BARRIER_WORDS + 5120);
        assert_eq!(kernel::TAGS, BARRIER_WORDS);
    }

    #[test]
    fn a_launch_takes_its_rounds() {
        let d = DecodeMlpOptions::default();
        let with = |tags: bool, e_barrier: bool, probe: u32| DecodeMlpOptions { tags, e_barrier, probe, ..d };
        // `decode_mlp`: two barriers, tagged or not (f32 is never tagged).
        assert_eq!(rounds(false, true, with(true, false, 0)), 2);
        assert_eq!(rounds(false, false, with(true, false, 0)), 2);
        // The next layer's phases: four barriers, or three tagged (none before E).
        assert_eq!(rounds(true, true, with(true, false, 0)), 3);
        assert_eq!(rounds(true, true, with(true, true, 0)), 4);
        assert_eq!(rounds(true, false, with(true, false, 0)), 4);
        assert_eq!(rounds(true, true, with(false, false, 0)), 4);
        assert_eq!(rounds(true, true, with(true, false, PROBE_EXTRA_BARRIER)), 6);
        // `decode_layers`: three a layer, and with `a_barrier` one before each layer's phase A
        // but the first.
        assert_eq!(rounds_layers(true, true, with(true, false, 0), 27, false), 27 * 3);
        assert_eq!(rounds_layers(true, true, with(true, false, 0), 27, true), 27 * 3);
        let a = DecodeMlpOptions { a_barrier: true, ..with(true, false, 0) };
        assert_eq!(rounds_layers(true, true, a, 27, false), 27 * 3 + 26);
        assert_eq!(rounds_layers(true, true, a, 27, true), 27 * 3 + 27);
        assert_eq!(rounds_layers(true, true, a, 1, false), 3);
        assert_eq!(rounds_layers(true, true, a, 0, true), 1);
        assert_eq!(rounds_layers(true, true, with(true, false, 0), 0, true), 1);
    }

    #[test]
    fn next_layer_holds_its_qkv_features_where_they_fit() {
        let nv = (32, 32);
        let at = |units: usize, d_early: bool| DecodeMlpOptions { units, d_early, ..DecodeMlpOptions::default() };
        // Qwen3-0.6B: 4,096 q/k/v rows over 1,024 planes, 4 vectors a lane each: all 4 held,
        // beside down's 12 vectors too with `d_early`.
        assert_eq!(held_next(1024, 3072, 4096, 8, nv, at(256, false)), Ok(4));
        assert_eq!(held_next(1024, 3072, 4096, 8, nv, at(256, true)), Ok(4));
        // 512 units: 2,048 planes, 2 features a plane; 18 - 12 = 6 free with `d_early`: 1 fits.
        assert_eq!(held_next(1024, 3072, 4096, 8, nv, at(512, false)), Ok(2));
        assert_eq!(held_next(1024, 3072, 4096, 8, nv, at(512, true)), Ok(1));
        // 1,024 units with `d_early`: down's 12 vectors alone pass the 9 a lane may hold.
        assert!(held_next(1024, 3072, 4096, 8, nv, at(1024, true)).is_err());
        // The checks' odd widths (4 + 2 x 2 heads of 40): one feature a plane at most.
        assert_eq!(held_next(264, 2056, 320, 8, nv, at(256, false)), Ok(1));
    }
}
