//! The GEMV kernel's autotuner (CubeCL's `LocalTuner`): candidates are the strategies and the
//! features per plane; the key buckets rows and output width, so one measurement serves a
//! model's every layer.

use cubecl::ir::ElemType;
use cubecl::tune::{LocalTuner, Tunable, TunableSet, local_tuner};
use cubecl::AutotuneKey;
use serde::{Deserialize, Serialize};

use super::{GemvCall, GemvConfig, GemvStrategy, Mode, launch_config};

/// What decides the fastest candidate.
#[derive(Hash, Eq, PartialEq, Debug, Clone, Serialize, Deserialize, AutotuneKey)]
pub struct GemvKey {
    dtype: ElemType,
    /// 0: RMSNorm + QKV, 1: linear, 2: gate/up + SiLU.
    mode: u8,
    /// Rows of the call, bucketed: 1, 2, 4, ..., 64.
    #[autotune(anchor(exp(max = 64, base = 2)))]
    rows: usize,
    /// Input width (exact: it sizes the shared staging).
    hidden: usize,
    /// Output features, bucketed by powers of two.
    #[autotune(anchor(exp(min = 64, max = 262144, base = 2)))]
    total: usize,
}

fn key(call: &GemvCall) -> GemvKey {
    let mode = match (&call.mode, call.residual.is_some()) {
        (Mode::NormQkv { .. }, false) => 0,
        (Mode::Linear, _) => 1,
        (Mode::GateUpSilu { norm: None }, _) => 2,
        (Mode::NormQkv { .. }, true) => 3,
        (Mode::GateUpSilu { norm: Some(_) }, _) => 4,
    };
    GemvKey::new(call.x.dtype, mode, call.rows, call.hidden, call.total)
}

/// The candidates the device can run, by name (no plane strategies without plane operations:
/// a candidate that refuses to launch returns at once, and the tuner took that for the fastest,
/// then panicked running it; seen on lavapipe, 2026-11-26).
fn candidates(client: &cubecl::prelude::Client) -> Vec<(String, GemvConfig)> {
    let mut c = named_configs();
    c.retain(|(_, config)| config.strategy.supported(client));
    c
}

/// Every candidate by name: `plane-1`, `plane-2`, ..., `plane-16` (output features per plane),
/// `unit` (one unit per feature).
pub fn named_configs() -> Vec<(String, GemvConfig)> {
    let mut c: Vec<(String, GemvConfig)> = [1usize, 2, 4, 8, 16]
        .into_iter()
        .map(|n| {
            (format!("plane-{n}"), GemvConfig { strategy: GemvStrategy::Plane, features_per_plane: Some(n) })
        })
        .collect();
    c.push(("unit".into(), GemvConfig { strategy: GemvStrategy::Unit, features_per_plane: None }));
    c
}

/// Which device (and runtime) a measurement belongs to; built on every call, so nothing in it
/// allocates.
#[derive(Hash, PartialEq, Eq, Clone, Debug)]
struct TuneId {
    device: cubecl::device::DeviceId,
    runtime: &'static str,
}

impl std::fmt::Display for TuneId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}-{}", self.device, self.runtime)
    }
}

/// Runs `call` with the fastest candidate for its key on `device` (measured on first use).
pub(super) fn autotune(device: &cubecl::Device, call: GemvCall) {
    static TUNER: LocalTuner<GemvKey, TuneId> = local_tuner!("braid-gemv");
    let client = call.client.clone();
    let id = TuneId { device: device.to_id(), runtime: client.name() };
    let available = candidates(&client);
    let set = TUNER.init(&id, move || {
        let mut set: TunableSet<GemvKey, GemvCall, ()> = TunableSet::new_cloning_inputs(key);
        for (name, config) in available.iter().cloned() {
            set = set.with(Tunable::new(&name, move |call: GemvCall| launch_config(&call, config)));
        }
        set
    });
    TUNER.execute(&id, &client, set, call);
}
