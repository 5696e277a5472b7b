//! `cargo bench -p braid-model --bench kernels`: each fused op at decode batch sizes against its
//! reference twin, on wgpu when an adapter works (`BRAID_BENCH_DEVICE=flex` forces the CPU, where
//! both sides are the twin). Median of 5 batches of back-to-back calls, each timed to a device
//! sync. For the CUDA card use `braid-cli check-kernels --bench` (graph-replayed device times and
//! bandwidth floors); this bench is the same comparison for any machine with cargo.

use braid_model::ops::{self, Precision, reference};
use braid_model::timing::per_call;
use burn::tensor::{DType, Device, Distribution, Int, Tensor, TensorData};

fn device() -> Device {
    if std::env::var("BRAID_BENCH_DEVICE").as_deref() == Ok("flex") {
        return Device::flex();
    }
    std::panic::catch_unwind(|| {
        let d = Device::wgpu(burn::tensor::DeviceKind::DefaultDevice);
        (Tensor::<1>::zeros([4], &d) + 1.0).into_data();
        d
    })
    .unwrap_or_else(|_| Device::flex())
}

fn rand<const D: usize>(shape: [usize; D], device: &Device) -> Tensor<D> {
    Tensor::random(shape, Distribution::Uniform(-1.0, 1.0), (device, DType::F32))
}

fn main() {
    let device = device();
    // Qwen3-0.6B's widths, f32 (what every wgpu adapter supports).
    let (hidden, heads, kv, hd, inter, context): (usize, usize, usize, usize, usize, usize) = (1024, 16, 8, 128, 3072, 256);
    println!("device {device:?}, f32; per call in us (median of 5 x 5 calls)");
    println!("{:<16} {:>5} {:>11} {:>11} {:>8}", "op", "rows", "fused", "twin", "twin/fused");
    let time = |f: &mut dyn FnMut()| per_call(&device, 5, 5, f).expect("device sync") * 1e6;
    for rows in [1usize, 16, 64] {
        let report = |name: &str, fused: &mut dyn FnMut(), twin: &mut dyn FnMut()| {
            let (tf, tt) = (time(fused), time(twin));
            println!("{name:<16} {rows:>5} {tf:>11.1} {tt:>11.1} {:>7.2}x", tt / tf);
        };
        let x = rand([rows, hidden], &device);
        let g = rand([hidden], &device);
        let (wq, wk, wv) = (rand([heads * hd, hidden], &device), rand([kv * hd, hidden], &device), rand([kv * hd, hidden], &device));
        let p = Precision::Torch;
        report(
            "rms_norm_qkv",
            &mut || drop(ops::rms_norm_qkv(x.clone(), g.clone(), wq.clone(), wk.clone(), wv.clone(), 1e-6, p)),
            &mut || drop(reference::rms_norm_qkv(x.clone(), g.clone(), wq.clone(), wk.clone(), wv.clone(), 1e-6, p)),
        );
        let (wg, wu) = (rand([inter, hidden], &device), rand([inter, hidden], &device));
        report(
            "gate_up_silu",
            &mut || drop(ops::gate_up_silu(x.clone(), wg.clone(), wu.clone(), p)),
            &mut || drop(reference::gate_up_silu(x.clone(), wg.clone(), wu.clone(), p)),
        );
        // Paged decode attention: `rows` sequences of `context` keys in their own blocks.
        let per_seq = context.div_ceil(ops::PAGE_SIZE);
        let slots = rows * per_seq * ops::PAGE_SIZE;
        let (kp, vp) = (rand([slots, kv, hd], &device), rand([slots, kv, hd], &device));
        let q = rand([1, heads, rows, hd], &device);
        let table: Vec<u32> = (0..(rows * per_seq) as u32).collect();
        let table = Tensor::<2, Int>::from_data(TensorData::new(table, [rows, per_seq]), (&device, DType::U32));
        let lens = Tensor::<1, Int>::from_data(TensorData::new(vec![context as u32; rows], [rows]), (&device, DType::U32));
        report(
            "paged_attention",
            &mut || drop(ops::paged_attention(q.clone(), kp.clone(), vp.clone(), table.clone(), lens.clone(), p)),
            &mut || drop(reference::paged_attention(q.clone(), kp.clone(), vp.clone(), table.clone(), lens.clone(), p)),
        );
    }
}
