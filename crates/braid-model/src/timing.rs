//! Timing device work: the one method the calibration, `check-kernels --bench` and the
//! benchmarks share.

use std::time::Instant;

use burn::tensor::Device;

/// Seconds per call of `f`: `iters` calls enqueued back to back, then one device sync; the
/// median of `reps` such batches, after one warm-up batch (which also compiles kernels).
pub fn per_call(device: &Device, iters: usize, reps: usize, mut f: impl FnMut()) -> Result<f64, String> {
    let iters = iters.max(1);
    let sync = || device.sync().map_err(|e| format!("device sync failed: {e:?}"));
    for _ in 0..iters {
        f();
    }
    sync()?;
    let mut v = Vec::with_capacity(reps.max(1));
    for _ in 0..reps.max(1) {
        let t = Instant::now();
        for _ in 0..iters {
            f();
        }
        sync()?;
        v.push(t.elapsed().as_secs_f64() / iters as f64);
    }
    Ok(median(&mut v))
}

/// The median (upper middle for an even count) of `v`; `NaN` when empty.
pub fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Device seconds per call of `f` without the host: `iters` calls captured once as a graph
/// (`burn::tensor::capture`), the graph replayed `reps` times, each replay timed to its sync;
/// the median over `iters`. Also says whether the replay ran as a hardware graph (CUDA); where
/// it did not, the figure includes the host's launch cost like [`per_call`].
///
/// Everything `f` reads must outlive this call (it does: `f` borrows it); outputs `f` drops are
/// rewritten by every replay, which is harmless here since nothing else runs meanwhile.
pub fn per_call_graph(device: &Device, iters: usize, reps: usize, mut f: impl FnMut()) -> Result<(f64, bool), String> {
    let iters = iters.max(1);
    let mut graph = burn::tensor::capture(device, || {
        for _ in 0..iters {
            f();
        }
    });
    let sync = || device.sync().map_err(|e| format!("device sync failed: {e:?}"));
    sync()?;
    let mut v = Vec::with_capacity(reps.max(1));
    for _ in 0..reps.max(1) {
        let t = Instant::now();
        // SAFETY: the captured closure only touches tensors it borrows from the caller (alive
        // for this whole call) and buffers it allocated during capture; nothing else runs on
        // the device between capture and the last replay's sync.
        unsafe {
            graph.replay();
        }
        sync()?;
        v.push(t.elapsed().as_secs_f64() / iters as f64);
    }
    Ok((median(&mut v), graph.is_hardware()))
}
