//! `braid-cli bench kernels`: each fused op against its reference twin and its floor at
//! Qwen3-0.6B's shapes, for a list of row counts (decode batch sizes, prefill lengths), then
//! Burn's matmul at the model's projection shapes, autotuned and untuned.
//!
//! Two references are measured in the same process: the elementwise bandwidth (a large add:
//! the byte floor) and the rate of a large square matmul (the compute floor). An op's floor is
//! the larger of its bytes over the bandwidth and its flops over the matmul rate; "of floor" is
//! that floor over the op's device time (graph-replayed), so 100% would be the card's limit.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use braid_model::ops::{PrefillTiles, decode_row_max_keys, set_decode_row_max_keys};
use braid_model::ops::gemv_rows::{GemvOp, gemv_max_rows, gemv_max_rows_set, set_gemv_max_rows};
use braid_model::ops::{self, Precision, QkShape, reference};
use braid_model::timing::{per_call, per_call_graph};
use braid_model::{DType, Device};
use burn::tensor::{Int, Tensor, TensorData};
use serde::Serialize;

use crate::device::{self, DTypeArg, DeviceArg};

#[derive(Debug, clap::Args)]
pub struct KernelsArgs {
    #[arg(long, value_enum, default_value_t = DeviceArg::Cpu)]
    device: DeviceArg,
    #[arg(long, value_enum, default_value_t = DTypeArg::F32)]
    dtype: DTypeArg,
    /// Calls back to back per timed batch (the median of 7 batches is reported).
    #[arg(long, default_value_t = 20)]
    iters: usize,
    /// Row counts to time: decode batch sizes and prefill lengths.
    #[arg(long, value_delimiter = ',', default_value = "1,64,256,4096")]
    rows: Vec<usize>,
    /// Keys per row of the paged decode attention.
    #[arg(long, default_value_t = 1024)]
    context: usize,
    /// The compute floor's rate in TFLOP/s (e.g. PyTorch's cuBLAS rate measured on the same
    /// card by scripts/torch_kernels.py); default: the large Burn matmul measured here.
    #[arg(long)]
    matmul_tflops: Option<f64>,
    /// Also time the prefill attention with these tile shapes (`ROWSxKEYSxGROUPS`, e.g.
    /// `64x64x16,64x32x8`; default: only the shape the kernel picks).
    #[arg(long, value_delimiter = ',')]
    prefill_tiles: Vec<String>,
    /// Skip the matmul section (autotuned vs untuned Burn matmul at the projection shapes).
    #[arg(long)]
    no_matmul: bool,
    /// Only the matmul section (skips the fused ops and the GEMV-vs-matmul paths).
    #[arg(long, conflicts_with = "no_matmul")]
    matmul_only: bool,
    /// Only the GEMV-vs-matmul paths (where each op's row limit should sit).
    #[arg(long, conflicts_with_all = ["no_matmul", "matmul_only"])]
    paths_only: bool,
    /// Also time each grid barrier (every cube of a launch waiting for all; what `decode_mlp`
    /// runs between its phases) and check that each round sees every cube's write: CUDA only.
    #[arg(long)]
    grid_barrier: bool,
    /// Only the grid barriers (`--grid-barrier` without the other sections).
    #[arg(long, conflicts_with_all = ["matmul_only", "paths_only"])]
    grid_barrier_only: bool,
    /// Write the results here as JSON too.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// One fused op at one row count.
#[derive(Serialize)]
struct OpRow {
    op: &'static str,
    rows: usize,
    /// Host-driven (launch cost included) and graph-replayed (device time) microseconds per call.
    fused_us: f64,
    graph_us: f64,
    /// Whether the replay ran as a hardware graph (else `graph_us` includes launches).
    hardware_graph: bool,
    twin_us: f64,
    floor_us: f64,
    /// floor_us / graph_us.
    of_floor: f64,
}

/// Burn's matmul `[rows, k] @ [k, n]` at one projection shape.
#[derive(Serialize)]
struct MatmulRow {
    name: &'static str,
    rows: usize,
    n: usize,
    k: usize,
    /// Graph-replayed microseconds per call: autotuned (what the model runs in cuda builds) and
    /// untuned (Burn's single default strategy).
    tuned_us: f64,
    untuned_us: Option<f64>,
    /// Braid's tensor-core kernel (`tc_linear`), where the device runs it.
    tc_us: Option<f64>,
    floor_us: f64,
    of_floor: f64,
}

#[derive(Serialize)]
struct Report {
    device: String,
    dtype: String,
    bandwidth_gb_s: f64,
    /// The compute floor's rate (`matmul_reference` says where it came from) and the large
    /// square Burn matmul's measured rate.
    matmul_tflops: f64,
    matmul_reference: String,
    burn_matmul_tflops: f64,
    ops: Vec<OpRow>,
    paths: Vec<PathRow>,
    matmuls: Vec<MatmulRow>,
    /// `--grid-barrier`: graph-replayed us per barrier and wrong reads seen (0 expected), per
    /// kind of barrier.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    grid_barrier: Vec<GridBarrierRow>,
}

#[derive(Serialize)]
struct GridBarrierRow {
    kind: &'static str,
    cubes: u32,
    us_per_barrier: f64,
    one_round_us: f64,
    rounds_65_us: f64,
    wrong_reads: u64,
}

/// A GEMV-capable op on each path at one row count.
#[derive(Serialize)]
struct PathRow {
    op: &'static str,
    rows: usize,
    gemv_us: f64,
    matmul_us: f64,
    /// The path the op's current row limit picks at this row count.
    default: &'static str,
}

pub fn run(args: KernelsArgs) -> Result<()> {
    let device = device::open(args.device)?;
    let dtype = args.dtype.dtype();
    if !device.supports_dtype(dtype) {
        bail!("{:?} does not support {dtype:?}", args.device);
    }
    if args.rows.is_empty() || args.rows.contains(&0) || args.context == 0 {
        bail!("--rows takes row counts of at least 1, --context at least 1 key");
    }
    let tiles = args.prefill_tiles.iter().map(|t| parse_tiles(t)).collect::<Result<Vec<_>>>()?;
    // The compute reference: a square matmul large enough to be compute-bound on a GPU
    // (smaller on the CPU, where that one would take minutes).
    let mm_n = if args.device == DeviceArg::Cpu { 512 } else { 8192 };
    let mut bench = Bench::new(&device, dtype, args.iters, mm_n)?;
    if let Some(t) = args.matmul_tflops {
        bench.flops = t * 1e12;
        bench.mm_name = format!("given with --matmul-tflops; Burn's {} matmul ran at {:.0}", bench.mm_name, bench.measured / 1e12);
    }
    println!(
        "bench kernels: {:?} {dtype:?}; elementwise bandwidth {:.0} GB/s, compute floor {:.0} TFLOP/s ({}); per call, {} calls back to back then a sync, median of 7",
        args.device,
        bench.bw / 1e9,
        bench.flops / 1e12,
        bench.mm_name,
        args.iters
    );
    let others = !args.grid_barrier_only;
    if others && !args.matmul_only && !args.paths_only {
        println!("fused us: host-driven (launches included); graph us: replayed as one graph (device time; * = no hardware graph); of floor: floor / graph us");
        println!("{:<15} {:>6} {:>11} {:>11} {:>11} {:>8} {:>10} {:>9}", "op", "rows", "fused us", "graph us", "twin us", "speedup", "floor us", "of floor");
    }
    let mut ops_rows = Vec::new();
    for &rows in args.rows.iter().filter(|_| others && !args.matmul_only && !args.paths_only) {
        bench.ops(rows, args.context, &tiles, &mut ops_rows)?;
    }
    let mut path_rows = Vec::new();
    if others && dtype != DType::F32 && !args.matmul_only {
        println!("\nGEMV kernel vs matmul path for the GEMV-capable ops (graph-replayed device us); `default` is the path the op's row limit picks");
        println!("{:<15} {:>6} {:>10} {:>10} {:>8}", "op", "rows", "gemv us", "matmul us", "default");
        for &rows in args.rows.iter().filter(|&&r| r <= 512) {
            bench.paths(rows, &mut path_rows)?;
        }
    }
    let mut mm_rows = Vec::new();
    if others && !args.no_matmul && !args.paths_only {
        println!("\nmatmuls at the projection shapes (graph-replayed device time): Burn's autotuned and untuned (its default strategy), Braid's tensor-core tc_linear; of floor: Burn's autotuned; tc TFLOP/s: tc_linear's rate");
        println!("{:<10} {:>6} {:>7} {:>6} {:>10} {:>11} {:>8} {:>10} {:>9} {:>9}", "matmul", "rows", "n", "k", "tuned us", "untuned us", "tc us", "floor us", "of floor", "tc TFLOP/s");
        for &rows in &args.rows {
            bench.matmuls(rows, &mut mm_rows)?;
        }
    }
    let grid_barrier = if args.grid_barrier || args.grid_barrier_only { bench.grid_barrier()? } else { Vec::new() };
    if let Some(path) = &args.json {
        let report = Report {
            device: format!("{:?}", args.device),
            dtype: format!("{dtype:?}"),
            bandwidth_gb_s: bench.bw / 1e9,
            matmul_tflops: bench.flops / 1e12,
            matmul_reference: bench.mm_name.clone(),
            burn_matmul_tflops: bench.measured / 1e12,
            ops: ops_rows,
            paths: path_rows,
            matmuls: mm_rows,
            grid_barrier,
        };
        std::fs::write(path, serde_json::to_string_pretty(&report)?).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// `64x64x16` -> rows 64, keys 64, groups 16.
pub(crate) fn parse_tiles(s: &str) -> Result<PrefillTiles> {
    let v: Vec<usize> = s.split('x').map(|x| x.trim().parse::<usize>()).collect::<Result<_, _>>().with_context(|| format!("--prefill-tiles: {s:?} is not ROWSxKEYSxGROUPS"))?;
    match v[..] {
        [rows, keys, groups] => Ok(PrefillTiles { rows, keys, groups }),
        _ => bail!("--prefill-tiles: {s:?} is not ROWSxKEYSxGROUPS"),
    }
}

fn rand2(rows: usize, cols: usize, scale: f32, device: &Device, dtype: DType) -> Tensor<2> {
    Tensor::<2>::random([rows, cols], burn::tensor::Distribution::Uniform(-1.0, 1.0), (device, DType::F32)).mul_scalar(scale).cast(dtype)
}

// Qwen3-0.6B's shapes.
const HIDDEN: usize = 1024;
const HEADS: usize = 16;
const KV: usize = 8;
const HD: usize = 128;
const INTER: usize = 3072;
const VOCAB: usize = 151_936;
const EPS: f64 = 1e-6;

struct Bench<'d> {
    device: &'d Device,
    dtype: DType,
    iters: usize,
    /// Bytes per second (elementwise) and flop per second (large matmul), same process.
    bw: f64,
    flops: f64,
    /// The large Burn matmul's rate (`flops` unless --matmul-tflops replaced it).
    measured: f64,
    mm_name: String,
}

impl<'d> Bench<'d> {
    fn new(device: &'d Device, dtype: DType, iters: usize, n: usize) -> Result<Self> {
        let size = dtype.size();
        let big = rand2(8192, 8192, 1.0, device, dtype);
        let t_copy = per_call(device, iters.min(20), 7, || {
            let _ = big.clone().add_scalar(0.5);
        })
        .map_err(anyhow::Error::msg)?;
        let bw = (2 * 8192 * 8192 * size) as f64 / t_copy;
        let a = rand2(n, n, 1.0, device, dtype);
        let t_mm = per_call(device, 3, 5, || {
            let _ = a.clone().matmul(a.clone());
        })
        .map_err(anyhow::Error::msg)?;
        let flops = 2.0 * (n as f64).powi(3) / t_mm;
        Ok(Self { device, dtype, iters, bw, flops, measured: flops, mm_name: format!("{n}x{n}x{n}") })
    }

    /// One grid barrier of `BARRIER_CUBES` cubes, each kind (`counter`: every cube spins on the
    /// ticket counter; `flag`: on a flag the last arrival sets; `light`: the counter without
    /// the acquire fence): graph-replayed launches of 1
    /// and 65 rounds, `(t65 - t1) / 64` per barrier; the wrong reads the probe counted over all
    /// its launches. Empty (with a line saying why) where the device cannot run it.
    fn grid_barrier(&self) -> Result<Vec<GridBarrierRow>> {
        use braid_model::ops::{BARRIER_CUBES, BARRIER_WORDS, BarrierKind};
        let zeros = |n: usize| Tensor::<1, Int>::from_data(TensorData::new(vec![0u32; n], [n]), (self.device, DType::U32));
        let mut rows = Vec::new();
        for barrier in [BarrierKind::Counter, BarrierKind::Flag, BarrierKind::Light] {
            let kind = barrier.name();
            let (bar, slots) = (zeros(BARRIER_WORDS), zeros(2 * BARRIER_CUBES as usize));
            match ops::grid_barrier_probe(&bar, &slots, 1, barrier) {
                None => bail!("--grid-barrier needs a CubeCL device (cuda)"),
                Some(Err(e)) => {
                    println!("\ngrid barrier: not run: {e}");
                    return Ok(rows);
                }
                Some(Ok(())) => {}
            }
            let mut t = [0.0; 2];
            for (i, rounds) in [1u32, 65].into_iter().enumerate() {
                t[i] = self.graph(&mut || {
                    let _ = ops::grid_barrier_probe(&bar, &slots, rounds, barrier);
                })?
                .0;
            }
            let wrong = bar.narrow(0, 1, 1).into_data().convert::<i64>().try_to_vec::<i64>().map_err(|e| anyhow::anyhow!("{e:?}"))?[0] as u64;
            let row = GridBarrierRow { kind, cubes: BARRIER_CUBES, us_per_barrier: (t[1] - t[0]) / 64.0 * 1e6, one_round_us: t[0] * 1e6, rounds_65_us: t[1] * 1e6, wrong_reads: wrong };
            println!(
                "{}grid barrier, {} ({} cubes, graph-replayed): {:.2} us per barrier (1 round {:.1} us, 65 rounds {:.1} us); wrong reads {} (0 expected)",
                if rows.is_empty() { "\n" } else { "" },
                row.kind,
                row.cubes,
                row.us_per_barrier,
                row.one_round_us,
                row.rounds_65_us,
                row.wrong_reads
            );
            rows.push(row);
        }
        Ok(rows)
    }

    fn floor(&self, bytes: usize, flops: usize) -> f64 {
        (bytes as f64 / self.bw).max(flops as f64 / self.flops)
    }

    fn time(&self, f: &mut dyn FnMut()) -> Result<f64> {
        per_call(self.device, self.iters, 7, f).map_err(anyhow::Error::msg)
    }

    fn graph(&self, f: &mut dyn FnMut()) -> Result<(f64, bool)> {
        per_call_graph(self.device, self.iters, 7, f).map_err(anyhow::Error::msg)
    }

    #[allow(clippy::too_many_arguments)]
    fn row(&self, out: &mut Vec<OpRow>, op: &'static str, rows: usize, bytes: usize, flops: usize, fused: &mut dyn FnMut(), twin: &mut dyn FnMut()) -> Result<()> {
        let tf = self.time(fused)?;
        let (tg, hw) = self.graph(fused)?;
        let tt = self.time(twin)?;
        let floor = self.floor(bytes, flops);
        println!(
            "{op:<15} {rows:>6} {:>11.1} {:>10.1}{} {:>11.1} {:>7.2}x {:>10.2} {:>8.0}%",
            tf * 1e6,
            tg * 1e6,
            if hw { " " } else { "*" },
            tt * 1e6,
            tt / tf,
            floor * 1e6,
            100.0 * floor / tg
        );
        out.push(OpRow { op, rows, fused_us: tf * 1e6, graph_us: tg * 1e6, hardware_graph: hw, twin_us: tt * 1e6, floor_us: floor * 1e6, of_floor: floor / tg });
        Ok(())
    }

    fn ops(&self, rows: usize, context: usize, tiles: &[PrefillTiles], out: &mut Vec<OpRow>) -> Result<()> {
        let (device, dtype, size) = (self.device, self.dtype, self.dtype.size());
        let p = Precision::Torch;
        let x = rand2(rows, HIDDEN, 1.0, device, dtype);
        let g = rand2(1, HIDDEN, 1.0, device, dtype).reshape([HIDDEN]);
        let wq = rand2(HEADS * HD, HIDDEN, 0.05, device, dtype);
        let wk = rand2(KV * HD, HIDDEN, 0.05, device, dtype);
        let wv = rand2(KV * HD, HIDDEN, 0.05, device, dtype);
        let qkv_out = (HEADS + 2 * KV) * HD;
        self.row(
            out,
            "rms_norm_qkv",
            rows,
            (qkv_out * HIDDEN + rows * (HIDDEN + qkv_out) + HIDDEN) * size,
            2 * rows * HIDDEN * qkv_out,
            &mut || {
                let _ = ops::rms_norm_qkv(x.clone(), g.clone(), wq.clone(), wk.clone(), wv.clone(), EPS, p);
            },
            &mut || {
                let _ = reference::rms_norm_qkv(x.clone(), g.clone(), wq.clone(), wk.clone(), wv.clone(), EPS, p);
            },
        )?;
        let qkv = rand2(rows, qkv_out, 1.0, device, dtype);
        let (nq, nk) = (HEADS * HD, KV * HD);
        let w = rand2(1, HD, 1.0, device, dtype).reshape([HD]);
        let rope = braid_model::nn::RotaryEmbedding::new(HD, 1e6).tables(100, rows, device);
        let shape = QkShape { batch: 1, seq: rows, heads: HEADS, kv_heads: KV, head_dim: HD };
        let views = || (qkv.clone().narrow(1, 0, nq), qkv.clone().narrow(1, nq, nk), qkv.clone().narrow(1, nq + nk, nk));
        self.row(
            out,
            "qk_norm_rope",
            rows,
            2 * rows * qkv_out * size + 2 * rows * HD * 4,
            0,
            &mut || {
                let (q, k, v) = views();
                let _ = ops::qk_norm_rope(q, k, v, w.clone(), w.clone(), rope.cos.clone(), rope.sin.clone(), shape, EPS, p);
            },
            &mut || {
                let (q, k, v) = views();
                let _ = reference::qk_norm_rope(q, k, v, w.clone(), w.clone(), rope.cos.clone(), rope.sin.clone(), shape, EPS, p);
            },
        )?;
        // Attention: `rows` new queries at the end of a cache of max(512, rows) positions
        // (a prefill when rows fill it); causal, so a query at position i reads i + 1 keys.
        let cache = rows.max(512);
        if cache <= ops::ATTENTION_MAX_KEYS {
            let past = cache - rows;
            let q4 = rand2(HEADS * rows, HD, 1.0, device, dtype).reshape([1, HEADS, rows, HD]);
            let kc = rand2(KV * cache, HD, 1.0, device, dtype).reshape([1, KV, cache, HD]);
            let vc = rand2(KV * cache, HD, 1.0, device, dtype).reshape([1, KV, cache, HD]);
            // Score and value products over the causal keys of every query row.
            let keys: usize = (past + 1..=cache).sum();
            self.row(
                out,
                "attention",
                rows,
                (2 * KV * cache * HD + 2 * HEADS * rows * HD) * size,
                4 * HEADS * HD * keys,
                &mut || {
                    let _ = ops::attention(q4.clone(), kc.clone(), vc.clone(), past, p);
                },
                &mut || {
                    let _ = reference::attention(q4.clone(), kc.clone(), vc.clone(), past, p);
                },
            )?;
            if rows == 1 {
                // The same decode row on the one-pass row kernel instead of the split one.
                let before = decode_row_max_keys();
                set_decode_row_max_keys(cache);
                let r = self.row(
                    out,
                    "attention row",
                    rows,
                    (2 * KV * cache * HD + 2 * HEADS * rows * HD) * size,
                    4 * HEADS * HD * keys,
                    &mut || {
                        let _ = ops::attention(q4.clone(), kc.clone(), vc.clone(), past, p);
                    },
                    &mut || {
                        let _ = reference::attention(q4.clone(), kc.clone(), vc.clone(), past, p);
                    },
                );
                set_decode_row_max_keys(before);
                r?;
            }
        }
        // Tiled prefill attention over the paged pool: one fresh prompt of `rows` tokens (the
        // `attention` row above at rows >= 512 is the per-row kernel on the same work), in the
        // kernel's default tile shape and any asked for.
        if rows > 1 {
            let blocks = rows.div_ceil(ops::PAGE_SIZE);
            let slots = blocks * ops::PAGE_SIZE;
            let kp = rand2(slots * KV, HD, 1.0, device, dtype).reshape([slots, KV, HD]);
            let vp = rand2(slots * KV, HD, 1.0, device, dtype).reshape([slots, KV, HD]);
            let qp = rand2(HEADS * rows, HD, 1.0, device, dtype).reshape([1, HEADS, rows, HD]);
            let table = Tensor::<2, Int>::from_data(TensorData::new((0..blocks as u32).collect::<Vec<_>>(), [1, blocks]), (device, DType::U32));
            let spans = [ops::PrefillSpan { len: rows, start: 0 }];
            let keys = rows * (rows + 1) / 2;
            // The default shape in both modes (f32: one pass), then each asked-for shape in
            // torch mode.
            let runs = [(None, p), (None, Precision::F32)].into_iter().chain(tiles.iter().map(|t| (Some(*t), p)));
            for (t, p) in runs {
                if let Some(t) = t
                    && !ops::prefill_tiles_fit(device, &t, HD)
                {
                    println!("  ({t:?} does not fit this device)");
                    continue;
                }
                let name = match (t, p) {
                    (None, Precision::F32) => "prefill_attn f32",
                    (None, _) => "prefill_attn",
                    (Some(t), _) => Box::leak(format!("prefill {}x{}x{}", t.rows, t.keys, t.groups).into_boxed_str()),
                };
                self.row(
                    out,
                    name,
                    rows,
                    (2 * slots * KV * HD + 2 * HEADS * rows * HD) * size,
                    4 * HEADS * HD * keys,
                    &mut || {
                        let _ = ops::paged_prefill_attention_tiled(qp.clone(), kp.clone(), vp.clone(), table.clone(), &spans, p, t);
                    },
                    &mut || {
                        let _ = reference::paged_prefill_attention(qp.clone(), kp.clone(), vp.clone(), table.clone(), &spans, p);
                    },
                )?;
            }
        }
        // Paged decode attention: `rows` sequences of `context` keys each in their own blocks
        // (decode batch sizes only).
        if rows <= 512 {
            let per_seq = context.div_ceil(ops::PAGE_SIZE);
            let slots = rows * per_seq * ops::PAGE_SIZE;
            let kp = rand2(slots * KV, HD, 1.0, device, dtype).reshape([slots, KV, HD]);
            let vp = rand2(slots * KV, HD, 1.0, device, dtype).reshape([slots, KV, HD]);
            let qp = rand2(HEADS * rows, HD, 1.0, device, dtype).reshape([1, HEADS, rows, HD]);
            let table: Vec<u32> = (0..(rows * per_seq) as u32).collect();
            let table = Tensor::<2, Int>::from_data(TensorData::new(table, [rows, per_seq]), (device, DType::U32));
            let lens = Tensor::<1, Int>::from_data(TensorData::new(vec![context as u32; rows], [rows]), (device, DType::U32));
            for (name, p) in [("paged_attention", p), ("paged_attn f32", Precision::F32)] {
                self.row(
                    out,
                    name,
                    rows,
                    (2 * rows * context * KV * HD + 2 * HEADS * rows * HD) * size,
                    4 * rows * HEADS * HD * context,
                    &mut || {
                        let _ = ops::paged_attention(qp.clone(), kp.clone(), vp.clone(), table.clone(), lens.clone(), p);
                    },
                    &mut || {
                        let _ = reference::paged_attention(qp.clone(), kp.clone(), vp.clone(), table.clone(), lens.clone(), p);
                    },
                )?;
            }
        }
        let r = rand2(rows, HIDDEN, 1.0, device, dtype);
        self.row(
            out,
            "add_rms_norm",
            rows,
            4 * rows * HIDDEN * size,
            0,
            &mut || {
                let _ = ops::add_rms_norm(r.clone(), x.clone(), g.clone(), EPS, p);
            },
            &mut || {
                let _ = reference::add_rms_norm(r.clone(), x.clone(), g.clone(), EPS, p);
            },
        )?;
        let xo = rand2(rows, HEADS * HD, 1.0, device, dtype);
        let wo = rand2(HIDDEN, HEADS * HD, 0.05, device, dtype);
        self.row(
            out,
            "linear o_proj",
            rows,
            (HIDDEN * HEADS * HD + rows * (HIDDEN + HEADS * HD)) * size,
            2 * rows * HIDDEN * HEADS * HD,
            &mut || {
                let _ = ops::linear(xo.clone(), wo.clone());
            },
            &mut || {
                let _ = reference::linear(xo.clone(), wo.clone());
            },
        )?;
        let wg = rand2(INTER, HIDDEN, 0.05, device, dtype);
        let wu = rand2(INTER, HIDDEN, 0.05, device, dtype);
        self.row(
            out,
            "gate_up_silu",
            rows,
            (2 * INTER * HIDDEN + rows * (HIDDEN + INTER)) * size,
            4 * rows * HIDDEN * INTER,
            &mut || {
                let _ = ops::gate_up_silu(x.clone(), wg.clone(), wu.clone(), p);
            },
            &mut || {
                let _ = reference::gate_up_silu(x.clone(), wg.clone(), wu.clone(), p);
            },
        )?;
        // The head runs on the last row of each sequence: decode batch sizes only.
        if rows <= 512 {
            let head = rand2(VOCAB, HIDDEN, 0.05, device, dtype);
            self.row(
                out,
                "linear lm_head",
                rows,
                (VOCAB * HIDDEN + rows * (HIDDEN + VOCAB)) * size,
                2 * rows * HIDDEN * VOCAB,
                &mut || {
                    let _ = ops::linear(x.clone(), head.clone());
                },
                &mut || {
                    let _ = reference::linear(x.clone(), head.clone());
                },
            )?;
            if rows == 1 {
                // The batch-1 step's end: `greedy_head` against the five fused ops it replaces
                // (its "twin" column here: add_rms_norm, linear, argmax_device, advance,
                // decode_inputs). The state moves on a position a call, in both (~27 calls an
                // iteration in all: warm-ups, capture, replays): tables with room for them all.
                let cap = (32 * self.iters + 1024).next_power_of_two();
                let down = rand2(1, HIDDEN, 1.0, device, dtype);
                let tables = braid_model::nn::RotaryEmbedding::new(HD, 1e6).tables(0, cap, device);
                let u32s = |v: Vec<u32>| {
                    let n = v.len();
                    Tensor::<1, burn::tensor::Int>::from_data(burn::tensor::TensorData::new(v, [n]), (device, DType::U32))
                };
                let (state, history) = (u32s(vec![1, 0]), u32s(vec![0; cap]));
                let next = [rand2(1, HIDDEN, 1.0, device, dtype), rand2(1, HD, 1.0, device, DType::F32), rand2(1, HD, 1.0, device, DType::F32)];
                self.row(
                    out,
                    "greedy_head",
                    rows,
                    (VOCAB * HIDDEN + 3 * HIDDEN) * size,
                    2 * HIDDEN * VOCAB,
                    &mut || {
                        let t = [head.clone(), tables.cos.clone(), tables.sin.clone()];
                        let _ = ops::greedy_head(x.clone(), down.clone(), g.clone(), EPS, p, head.clone(), state.clone(), history.clone(), t, next.clone());
                    },
                    &mut || {
                        let (_, n) = ops::add_rms_norm(x.clone(), down.clone(), g.clone(), EPS, p);
                        let (st, _) = ops::advance(ops::argmax_device(ops::linear(n, head.clone())), state.clone(), history.clone());
                        let _ = ops::decode_inputs(head.clone(), tables.cos.clone(), tables.sin.clone(), st);
                    },
                )?;
            }
        }
        let gate = rand2(rows, INTER, 3.0, device, dtype);
        let up = rand2(rows, INTER, 1.0, device, dtype);
        self.row(
            out,
            "silu_mul",
            rows,
            3 * rows * INTER * size,
            0,
            &mut || {
                let _ = ops::silu_mul(gate.clone(), up.clone(), p);
            },
            &mut || {
                let _ = reference::silu_mul(gate.clone(), up.clone(), p);
            },
        )?;
        Ok(())
    }

    /// Each GEMV-capable op timed on its GEMV kernel and on the matmul path (row limit set to
    /// the maximum, then to 0; restored after).
    fn paths(&self, rows: usize, out: &mut Vec<PathRow>) -> Result<()> {
        let (device, dtype) = (self.device, self.dtype);
        let p = Precision::Torch;
        let x = rand2(rows, HIDDEN, 1.0, device, dtype);
        let g = rand2(1, HIDDEN, 1.0, device, dtype).reshape([HIDDEN]);
        let w = |n: usize, k: usize| rand2(n, k, 0.05, device, dtype);
        let (wq, wk, wv) = (w(HEADS * HD, HIDDEN), w(KV * HD, HIDDEN), w(KV * HD, HIDDEN));
        let (wg, wu) = (w(INTER, HIDDEN), w(INTER, HIDDEN));
        let (wo, xo) = (w(HIDDEN, HEADS * HD), rand2(rows, HEADS * HD, 1.0, device, dtype));
        let (wd, xd) = (w(HIDDEN, INTER), rand2(rows, INTER, 1.0, device, dtype));
        let head = w(VOCAB, HIDDEN);
        // Whether the matmul path runs Braid's tensor-core kernel here (it moves the defaults).
        let tc = ops::linear_tc(x.clone(), wq.clone()).is_some();
        let cases: [(&'static str, GemvOp, &mut dyn FnMut()); 5] = [
            ("rms_norm_qkv", GemvOp::Qkv, &mut || {
                let _ = ops::rms_norm_qkv(x.clone(), g.clone(), wq.clone(), wk.clone(), wv.clone(), EPS, p);
            }),
            ("gate_up_silu", GemvOp::GateUp, &mut || {
                let _ = ops::gate_up_silu(x.clone(), wg.clone(), wu.clone(), p);
            }),
            ("linear o_proj", GemvOp::Linear, &mut || {
                let _ = ops::linear(xo.clone(), wo.clone());
            }),
            ("linear down", GemvOp::Linear, &mut || {
                let _ = ops::linear(xd.clone(), wd.clone());
            }),
            ("linear lm_head", GemvOp::Head, &mut || {
                let _ = ops::linear(x.clone(), head.clone());
            }),
        ];
        for (name, op, f) in cases {
            let (saved, limit) = (gemv_max_rows_set(op), gemv_max_rows(op, tc));
            set_gemv_max_rows(op, Some(usize::MAX));
            let gemv = self.graph(&mut *f);
            set_gemv_max_rows(op, Some(0));
            let matmul = self.graph(&mut *f);
            set_gemv_max_rows(op, saved);
            let (gemv, matmul) = (gemv?.0, matmul?.0);
            let default = if rows > limit { "matmul" } else { "gemv" };
            println!("{name:<15} {rows:>6} {:>10.1} {:>10.1} {default:>8}", gemv * 1e6, matmul * 1e6);
            out.push(PathRow { op: name, rows, gemv_us: gemv * 1e6, matmul_us: matmul * 1e6, default });
        }
        Ok(())
    }

    fn matmuls(&self, rows: usize, out: &mut Vec<MatmulRow>) -> Result<()> {
        let (device, dtype, size) = (self.device, self.dtype, self.dtype.size());
        let shapes: [(&'static str, usize, usize); 6] = [
            ("qkv", (HEADS + 2 * KV) * HD, HIDDEN),
            ("q", HEADS * HD, HIDDEN),
            ("o_proj", HIDDEN, HEADS * HD),
            ("gate", INTER, HIDDEN),
            ("down", HIDDEN, INTER),
            ("lm_head", VOCAB, HIDDEN),
        ];
        for (name, n, k) in shapes {
            if name == "lm_head" && rows > 512 {
                continue;
            }
            let xk = rand2(rows, k, 1.0, device, dtype);
            let w = rand2(n, k, 0.05, device, dtype);
            let (tuned, _) = self.graph(&mut || {
                let _ = xk.clone().matmul(w.clone().transpose());
            })?;
            let untuned = match ops::matmul_untuned(xk.clone(), w.clone()) {
                Some(_) => Some(
                    self.graph(&mut || {
                        let _ = ops::matmul_untuned(xk.clone(), w.clone());
                    })?
                    .0,
                ),
                None => None,
            };
            let tc = match ops::linear_tc(xk.clone(), w.clone()) {
                Some(_) => Some(
                    self.graph(&mut || {
                        let _ = ops::linear_tc(xk.clone(), w.clone());
                    })?
                    .0,
                ),
                None => None,
            };
            let floor = self.floor((n * k + rows * (n + k)) * size, 2 * rows * n * k);
            let us = |t: Option<f64>| t.map_or("-".to_string(), |u| format!("{:.1}", u * 1e6));
            println!(
                "{name:<10} {rows:>6} {n:>7} {k:>6} {:>10.1} {:>11} {:>8} {:>10.2} {:>8.0}% {:>9}",
                tuned * 1e6,
                us(untuned),
                us(tc),
                floor * 1e6,
                100.0 * floor / tuned,
                tc.map_or("-".to_string(), |t| format!("{:.0}", 2.0 * (rows * n * k) as f64 / t / 1e12))
            );
            out.push(MatmulRow {
                name,
                rows,
                n,
                k,
                tuned_us: tuned * 1e6,
                untuned_us: untuned.map(|u| u * 1e6),
                tc_us: tc.map(|u| u * 1e6),
                floor_us: floor * 1e6,
                of_floor: floor / tuned,
            });
        }
        Ok(())
    }
}
