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
