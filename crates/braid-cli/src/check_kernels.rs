//! `braid-cli check-kernels`: every fused op against its reference twin and an f64 truth on the
//! chosen device (the same checks as the test suite), then, with `--bench`, each op's time
//! against its twin and the device's elementwise bandwidth at Qwen3-0.6B's shapes.


use anyhow::{Result, bail};
use braid_model::ops::verify::{passes, verify_all};
use braid_model::ops::{self, Precision, QkShape, reference};
use braid_model::{DType, Device};
use burn::tensor::Tensor;

use crate::device::{self, DTypeArg, DeviceArg};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[arg(long, value_enum, default_value_t = DeviceArg::Cpu)]
    device: DeviceArg,
    #[arg(long, value_enum, default_value_t = DTypeArg::F32)]
    dtype: DTypeArg,
    /// Seed of the random data (default: from the clock; printed).
    #[arg(long)]
    seed: Option<u64>,
    /// Also time each op (per call, --iters calls back to back) against its twin at
    /// Qwen3-0.6B's shapes.
    #[arg(long)]
    bench: bool,
    #[arg(long, default_value_t = 50)]
    iters: usize,
    /// With --bench: the row counts (decode batch sizes) to time.
    #[arg(long, value_delimiter = ',', default_value = "1,16,512")]
    bench_rows: Vec<usize>,
    /// With --bench: keys per row of the paged decode attention.
    #[arg(long, default_value_t = 1024)]
    bench_context: usize,
}

pub fn run(args: Args) -> Result<()> {
    let device = device::open(args.device)?;
    let dtype = args.dtype.dtype();
    if !device.supports_dtype(dtype) {
        bail!("{:?} does not support {dtype:?}", args.device);
    }
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
    });
    println!("check-kernels: {:?} {dtype:?} seed {seed}", args.device);
    println!("{:<14} {:<12} {:<6} {:>10} {:>10} {:>13}  verdict", "op", "case", "mode", "fused", "twin", "fused-vs-twin");
    let mut failed = 0;
    for c in verify_all(&device, dtype, seed) {
        let verdict = passes(&c, dtype);
        println!(
            "{:<14} {:<12} {:<6} {:>10.3e} {:>10.3e} {:>13.3e}  {}",
            c.op,
            c.case,
            c.precision.name(),
            c.fused_err,
            c.twin_err,
            c.fused_vs_twin,
            match &verdict {
                Ok(()) => "ok".to_string(),
                Err(e) => format!("FAIL: {e}"),
            }
        );
        failed += verdict.is_err() as usize;
    }
    if args.bench {
        bench(&device, dtype, args.iters, &args.bench_rows, args.bench_context)?;
    }
    if failed > 0 {
        bail!("{failed} checks failed (seed {seed})");
    }
    Ok(())
}

/// Seconds per call of `f`: `iters` calls back to back then a sync, median of 7 batches.
fn time(device: &Device, iters: usize, f: impl FnMut()) -> Result<f64> {
    braid_model::timing::per_call(device, iters, 7, f).map_err(anyhow::Error::msg)
}

fn rand2(rows: usize, cols: usize, scale: f32, device: &Device, dtype: DType) -> Tensor<2> {
    Tensor::<2>::random([rows, cols], burn::tensor::Distribution::Uniform(-1.0, 1.0), (device, DType::F32)).mul_scalar(scale).cast(dtype)
}

fn bench(device: &Device, dtype: DType, iters: usize, rows_list: &[usize], context: usize) -> Result<()> {
    let size = dtype.size();
    // The bandwidth reference: a large elementwise op (reads + writes), same call.
    let big = rand2(8192, 8192, 1.0, device, dtype);
    let t_copy = time(device, iters.min(20), || {
        let _ = big.clone().add_scalar(0.5);
    })?;
    let bw = (2 * 8192 * 8192 * size) as f64 / t_copy;
    println!(
        "\nbench: elementwise bandwidth {:.0} GB/s ({:?}); per call, {iters} calls back to back then a sync, median of 7",
        bw / 1e9,
        dtype
    );
    println!(
        "fused us: host-driven (launch cost included); graph us: the same calls replayed as one graph (device time; * = no hardware graph here); of floor: floor / graph us"
    );
    println!("{:<15} {:>6} {:>11} {:>11} {:>11} {:>8} {:>12} {:>9}", "op", "rows", "fused us", "graph us", "twin us", "speedup", "floor us", "of floor");
    let (hidden, heads, kv, hd, inter, eps) = (1024, 16, 8, 128, 3072, 1e-6);
    for &rows in rows_list {
        let x = rand2(rows, hidden, 1.0, device, dtype);
        let g = rand2(1, hidden, 1.0, device, dtype).reshape([hidden]);
        let wq = rand2(heads * hd, hidden, 0.05, device, dtype);
        let wk = rand2(kv * hd, hidden, 0.05, device, dtype);
        let wv = rand2(kv * hd, hidden, 0.05, device, dtype);
        let p = Precision::Torch;
        let row = |name: &str, bytes: usize, fused: &mut dyn FnMut(), twin: &mut dyn FnMut()| -> Result<()> {
            let tf = time(device, iters, &mut *fused)?;
            let (tg, hw) = braid_model::timing::per_call_graph(device, iters, 7, fused).map_err(anyhow::Error::msg)?;
            let tt = time(device, iters, twin)?;
            let floor = bytes as f64 / bw;
            println!(
                "{name:<15} {rows:>6} {:>11.1} {:>10.1}{} {:>11.1} {:>7.2}x {:>12.2} {:>8.0}%",
                tf * 1e6,
                tg * 1e6,
                if hw { " " } else { "*" },
                tt * 1e6,
                tt / tf,
                floor * 1e6,
                100.0 * floor / tg
            );
            Ok(())
        };
        let qkv_out = (heads + 2 * kv) * hd;
        row(
            "rms_norm_qkv",
            (qkv_out * hidden + rows * (hidden + qkv_out) + hidden) * size,
            &mut || {
                let _ = ops::rms_norm_qkv(x.clone(), g.clone(), wq.clone(), wk.clone(), wv.clone(), eps, p);
            },
            &mut || {
                let _ = reference::rms_norm_qkv(x.clone(), g.clone(), wq.clone(), wk.clone(), wv.clone(), eps, p);
            },
        )?;
        let qkv = rand2(rows, qkv_out, 1.0, device, dtype);
        let (nq, nk) = (heads * hd, kv * hd);
        let w = rand2(1, hd, 1.0, device, dtype).reshape([hd]);
        let rope = braid_model::nn::RotaryEmbedding::new(hd, 1e6).tables(100, rows, device);
        let shape = QkShape { batch: 1, seq: rows, heads, kv_heads: kv, head_dim: hd };
        let views = || (qkv.clone().narrow(1, 0, nq), qkv.clone().narrow(1, nq, nk), qkv.clone().narrow(1, nq + nk, nk));
        row(
            "qk_norm_rope",
            2 * rows * qkv_out * size + 2 * rows * hd * 4,
            &mut || {
                let (q, k, v) = views();
                let _ = ops::qk_norm_rope(q, k, v, w.clone(), w.clone(), rope.cos.clone(), rope.sin.clone(), shape, eps, p);
            },
            &mut || {
                let (q, k, v) = views();
                let _ = reference::qk_norm_rope(q, k, v, w.clone(), w.clone(), rope.cos.clone(), rope.sin.clone(), shape, eps, p);
            },
        )?;
        // Attention: `rows` new queries at the end of a 512-position cache.
        let past = 512 - rows;
        let q4 = rand2(heads * rows, hd, 1.0, device, dtype).reshape([1, heads, rows, hd]);
        let kc = rand2(kv * 512, hd, 1.0, device, dtype).reshape([1, kv, 512, hd]);
        let vc = rand2(kv * 512, hd, 1.0, device, dtype).reshape([1, kv, 512, hd]);
        row(
            "attention",
            (2 * kv * 512 * hd + 2 * heads * rows * hd) * size,
            &mut || {
                let _ = ops::attention(q4.clone(), kc.clone(), vc.clone(), past, p);
            },
            &mut || {
                let _ = reference::attention(q4.clone(), kc.clone(), vc.clone(), past, p);
            },
        )?;
        // Paged decode attention: `rows` sequences of `context` keys each in their own blocks.
        let per_seq = context.div_ceil(ops::PAGE_SIZE);
        let slots = rows * per_seq * ops::PAGE_SIZE;
        let kp = rand2(slots * kv, hd, 1.0, device, dtype).reshape([slots, kv, hd]);
        let vp = rand2(slots * kv, hd, 1.0, device, dtype).reshape([slots, kv, hd]);
        let qp = rand2(heads * rows, hd, 1.0, device, dtype).reshape([1, heads, rows, hd]);
        let table: Vec<u32> = (0..(rows * per_seq) as u32).collect();
        let table = Tensor::<2, burn::tensor::Int>::from_data(burn::tensor::TensorData::new(table, [rows, per_seq]), (device, DType::U32));
        let lens = Tensor::<1, burn::tensor::Int>::from_data(burn::tensor::TensorData::new(vec![context as u32; rows], [rows]), (device, DType::U32));
        row(
            "paged_attention",
            (2 * rows * context * kv * hd + 2 * heads * rows * hd) * size,
            &mut || {
                let _ = ops::paged_attention(qp.clone(), kp.clone(), vp.clone(), table.clone(), lens.clone(), p);
            },
            &mut || {
                let _ = reference::paged_attention(qp.clone(), kp.clone(), vp.clone(), table.clone(), lens.clone(), p);
            },
        )?;
        drop((kp, vp));
        let r = rand2(rows, hidden, 1.0, device, dtype);
        row(
            "add_rms_norm",
            4 * rows * hidden * size,
            &mut || {
                let _ = ops::add_rms_norm(r.clone(), x.clone(), g.clone(), eps, p);
            },
            &mut || {
                let _ = reference::add_rms_norm(r.clone(), x.clone(), g.clone(), eps, p);
            },
        )?;
        // GEMV-shaped projections: o_proj, down_proj, the MLP's gate/up + SiLU, the lm_head.
        let xo = rand2(rows, heads * hd, 1.0, device, dtype);
        let wo = rand2(hidden, heads * hd, 0.05, device, dtype);
        row(
            "linear o_proj",
            (hidden * heads * hd + rows * (hidden + heads * hd)) * size,
            &mut || {
                let _ = ops::linear(xo.clone(), wo.clone());
            },
            &mut || {
                let _ = reference::linear(xo.clone(), wo.clone());
            },
        )?;
        let wg = rand2(inter, hidden, 0.05, device, dtype);
        let wu = rand2(inter, hidden, 0.05, device, dtype);
        row(
            "gate_up_silu",
            (2 * inter * hidden + rows * (hidden + inter)) * size,
            &mut || {
                let _ = ops::gate_up_silu(x.clone(), wg.clone(), wu.clone(), p);
            },
            &mut || {
                let _ = reference::gate_up_silu(x.clone(), wg.clone(), wu.clone(), p);
            },
        )?;
        let vocab = 151_936;
        let head = rand2(vocab, hidden, 0.05, device, dtype);
        row(
            "linear lm_head",
            (vocab * hidden + rows * (hidden + vocab)) * size,
            &mut || {
                let _ = ops::linear(x.clone(), head.clone());
            },
            &mut || {
                let _ = reference::linear(x.clone(), head.clone());
            },
        )?;
        let gate = rand2(rows, inter, 3.0, device, dtype);
        let up = rand2(rows, inter, 1.0, device, dtype);
        row(
            "silu_mul",
            3 * rows * inter * size,
            &mut || {
                let _ = ops::silu_mul(gate.clone(), up.clone(), p);
            },
            &mut || {
                let _ = reference::silu_mul(gate.clone(), up.clone(), p);
            },
        )?;
    }
    Ok(())
}
