//! `--device` and `--dtype`: which Burn device runs the model, in which float type.

use anyhow::{Result, bail};
use braid_model::{DType, Device};
use clap::ValueEnum;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DeviceArg {
    /// Burn's Flex CPU backend.
    Cpu,
    /// The default wgpu adapter (Vulkan, Metal, ...).
    Wgpu,
    /// CUDA device 0 (build with `--features cuda`).
    Cuda,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DTypeArg {
    F32,
    Bf16,
    F16,
}

impl DTypeArg {
    pub fn dtype(self) -> DType {
        match self {
            DTypeArg::F32 => DType::F32,
            DTypeArg::Bf16 => DType::BF16,
            DTypeArg::F16 => DType::F16,
        }
    }
}

/// Opens the device, turning a missing GPU into an error instead of a panic.
pub fn open(arg: DeviceArg) -> Result<Device> {
    let device = match arg {
        DeviceArg::Cpu => Device::flex(),
        DeviceArg::Wgpu => Device::wgpu(burn::tensor::DeviceKind::DefaultDevice),
        DeviceArg::Cuda => cuda()?,
    };
    if arg != DeviceArg::Cpu {
        probe(&device, arg)?;
    }
    Ok(device)
}

#[cfg(feature = "cuda")]
fn cuda() -> Result<Device> {
    Ok(Device::cuda(0))
}

#[cfg(not(feature = "cuda"))]
fn cuda() -> Result<Device> {
    bail!("--device cuda: this binary was built without CUDA; rebuild with `--features cuda`")
}

/// Runs one tiny op so that a machine without the device fails here, with a message.
fn probe(device: &Device, arg: DeviceArg) -> Result<()> {
    let device = device.clone();
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let ok = std::panic::catch_unwind(move || {
        let t = burn::tensor::Tensor::<1>::from_floats([1.0, 2.0], &device);
        t.sum().into_scalar::<f32>()
    });
    std::panic::set_hook(hook);
    match ok {
        Ok(3.0) => Ok(()),
        Ok(v) => bail!("--device {arg:?}: the device computed 1 + 2 = {v}"),
        Err(_) => bail!("--device {}: no usable device found on this machine", format!("{arg:?}").to_lowercase()),
    }
}

/// The default compute dtype: the checkpoint's on a GPU that supports it, else f32.
pub fn default_dtype(arg: DeviceArg, checkpoint: Option<&str>, device: &Device) -> DType {
    let wanted = match (arg, checkpoint) {
        (DeviceArg::Cpu, _) => DType::F32,
        (_, Some("bfloat16")) => DType::BF16,
        (_, Some("float16")) => DType::F16,
        _ => DType::F32,
    };
    if device.supports_dtype(wanted) { wanted } else { DType::F32 }
}

/// What a command needs before loading: the model folder (`--model`, else the default model),
/// its config, the opened device and the compute dtype (`--dtype`, else [`default_dtype`]).
pub struct Target {
    pub dir: std::path::PathBuf,
    pub config: braid_model::Qwen3Config,
    pub device: Device,
    pub dtype: DType,
}

pub fn target(model: &Option<std::path::PathBuf>, arg: DeviceArg, dtype: Option<DTypeArg>) -> Result<Target> {
    let dir = match model {
        Some(d) => d.clone(),
        None => crate::generate::default_model()?,
    };
    let config = braid_model::Qwen3Config::from_file(&dir.join("config.json"))?;
    let device = open(arg)?;
    let dtype = match dtype {
        Some(d) => d.dtype(),
        None => default_dtype(arg, config.checkpoint_dtype(), &device),
    };
    Ok(Target { dir, config, device, dtype })
}
