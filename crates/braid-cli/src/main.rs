//! `braid-cli`: Braid's command line.

mod autoplan;
mod bench;
mod bench_kernels;
mod check_kernels;
mod device;
mod diff;
mod dump;
mod generate;
mod inspect;
mod probe;
mod throughput;
mod tune;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "braid-cli", version, about = "Braid: a Rust inference engine for Qwen3 models")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate text from a prompt.
    Generate(generate::Args),
    /// Report a model folder's config, tensor statistics, norm-weight maxima and every problem,
    /// without running it.
    Inspect(inspect::Args),
    /// Compare the reference and fused paths (and an HF dump) with the f32 reference, tap by tap,
    /// on a prompt; calibrate the automatic plan.
    Diff(diff::Args),
    /// Benchmarks: `latency` (batch-1 decode: eager loop, device-state steps, graph replay),
    /// `throughput` (nano-vllm's offline workload on the batch engine) and `kernels` (each op
    /// vs its twin and its floor).
    #[command(subcommand)]
    Bench(bench::Which),
    /// Check every fused kernel against its reference twin and f64 on a device.
    CheckKernels(check_kernels::Args),
    /// Run every kernel shape a model needs once (autotuning, compilation, graph captures); cuda
    /// builds keep the results in CubeCL's persistent cache.
    Tune(tune::TuneArgs),
    /// Dump per-layer hidden states, logits and greedy ids for token-id prompts (accuracy runs).
    Dump(dump::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Generate(args) => generate::run(args),
        Command::Inspect(args) => inspect::run(args),
        Command::Diff(args) => diff::run_cmd(args),
        Command::Bench(which) => bench::run(which),
        Command::CheckKernels(args) => check_kernels::run(args),
        Command::Tune(args) => tune::run(args),
        Command::Dump(args) => dump::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
