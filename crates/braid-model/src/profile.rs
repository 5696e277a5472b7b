//! Opt-in per-phase timing of the batch step (`BRAID_PROFILE=1`): after each phase the device
//! is synchronised and the wall time since the previous mark is added to the phase's total.
//! The syncs slow the run down; the totals show where a step's time goes, not its speed.
//! `BRAID_PROFILE=layers` charges each decoder layer's phases separately (`prefill/L03/...`) and
//! reports any phase over 50 ms on stderr as it happens.

use std::sync::{Mutex, OnceLock};
use std::time::Instant;

use burn::tensor::Device;

static ENABLED: OnceLock<bool> = OnceLock::new();
static LAYERS: OnceLock<bool> = OnceLock::new();
static TOTALS: Mutex<Vec<Phase>> = Mutex::new(Vec::new());

/// One phase's totals: name, seconds, times, and the shortest and longest time.
#[derive(Debug, Clone, PartialEq)]
pub struct Phase {
    pub name: String,
    pub secs: f64,
    pub times: usize,
    pub min: f64,
    pub max: f64,
}

pub fn enabled() -> bool {
    *ENABLED.get_or_init(|| std::env::var_os("BRAID_PROFILE").is_some_and(|v| v != "0"))
}

/// The phase prefix of decoder layer `layer`: `base` (e.g. `prefill/`), or `base` + `Lnn/`
/// under `BRAID_PROFILE=layers`.
pub fn layer_prefix(base: &str, layer: usize) -> String {
    if layers() {
        format!("{base}L{layer:02}/")
    } else {
        base.to_string()
    }
}

fn layers() -> bool {
    *LAYERS.get_or_init(|| std::env::var("BRAID_PROFILE").is_ok_and(|v| v == "layers"))
}

/// A running mark: [`Mark::phase`] charges the time since the last mark to `name`.
pub struct Mark<'a> {
    device: &'a Device,
    prefix: String,
    at: Option<Instant>,
}

impl<'a> Mark<'a> {
    pub fn new(device: &'a Device, prefix: impl Into<String>) -> Self {
        let prefix = prefix.into();
        let at = enabled().then(|| {
            let _ = device.sync();
            Instant::now()
        });
        Self { device, prefix, at }
    }

    pub fn phase(&mut self, name: &str) {
        let Some(at) = self.at else { return };
        let _ = self.device.sync();
        let now = Instant::now();
        let key = format!("{}{}", self.prefix, name);
        let dt = (now - at).as_secs_f64();
        if dt > 0.05 && layers() {
            // As it happens, between whatever else goes to stderr (e.g. CubeCL's logs).
            eprintln!("profile: slow phase {key}: {:.1} ms", dt * 1e3);
        }
        let mut t = TOTALS.lock().expect("profile lock");
        match t.iter_mut().find(|p| p.name == key) {
            Some(p) => {
                p.secs += dt;
                p.times += 1;
                p.min = p.min.min(dt);
                p.max = p.max.max(dt);
            }
            None => t.push(Phase { name: key, secs: dt, times: 1, min: dt, max: dt }),
        }
        self.at = Some(now);
    }
}

/// Every phase so far, in first-seen order.
pub fn totals() -> Vec<Phase> {
    TOTALS.lock().expect("profile lock").clone()
}

pub fn reset() {
    TOTALS.lock().expect("profile lock").clear();
}
