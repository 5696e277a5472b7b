//! `braid-cli inspect DIR`: a model folder's config, tensors and findings, without running it.
//! Exit 0 when the folder is loadable, 1 with every finding listed when it is not.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use braid_model::inspect::{Report, Severity, inspect};
use indicatif::{ProgressBar, ProgressStyle};

use crate::generate::Format;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Hugging Face model folder.
    dir: PathBuf,
    /// Flag norm weights whose abs-max exceeds this (the seed analysis used 10).
    #[arg(long, default_value_t = 10.0)]
    extreme: f32,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

pub fn run(args: Args) -> Result<()> {
    let bar = ProgressBar::new(0).with_style(
        ProgressStyle::with_template("reading {msg} [{bar:30}] {pos}/{len} tensors").expect("valid template"),
    );
    if args.format == Format::Json {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    bar.set_message(args.dir.display().to_string());
    let report = inspect(&args.dir, args.extreme, &mut |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    })
    .with_context(|| format!("inspecting {}", args.dir.display()))?;
    bar.finish_and_clear();
    match args.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        Format::Text => print_text(&report),
    }
    if !report.loadable {
        let errors = report.findings.iter().filter(|f| f.severity == Severity::Error).count();
        bail!("{}: not loadable ({errors} error(s) above)", args.dir.display());
    }
    Ok(())
}

fn opt(v: Option<f32>) -> String {
    v.map_or("-".into(), |v| format!("{v:.3}"))
}

fn print_text(r: &Report) {
    println!("{}", r.dir);
    println!(
        "  {} | {} layers, hidden {}, intermediate {}, heads {}/{} (head_dim {}), vocab {}, context {}, rope_theta {}",
        r.model_type.as_deref().unwrap_or("?"),
        r.layers,
        r.hidden_size,
        r.intermediate_size,
        r.heads,
        r.kv_heads,
        r.head_dim,
        r.vocab_size,
        r.max_position_embeddings,
        r.rope_theta
    );
    println!(
        "  {} parameters stored, {:.1} MB, dtypes {}, tied embeddings {}, attention bias {}",
        r.parameters,
        r.bytes as f64 / 1e6,
        r.dtypes.join("/"),
        r.tie_word_embeddings,
        r.attention_bias
    );
    println!("\nfindings:");
    for f in &r.findings {
        println!("  {:<7} {}", format!("{:?}", f.severity).to_lowercase(), f.message);
    }
    println!("\nnorm weights, abs-max per layer (flag > {}):", r.extreme_threshold);
    println!("  {:>5} {:>10} {:>10} {:>10} {:>10}", "layer", "input", "post_attn", "q_norm", "k_norm");
    for n in &r.norms {
        println!(
            "  {:>5} {:>10} {:>10} {:>10} {:>10}{}",
            n.layer,
            opt(n.input_layernorm),
            opt(n.post_attention_layernorm),
            opt(n.q_norm),
            opt(n.k_norm),
            if n.extreme.is_empty() { String::new() } else { "  <- extreme".into() }
        );
    }
    println!("\ntensors:");
    println!("  {:<52} {:<5} {:<16} {:>11} {:>11} {:>11} {:>10} {:>5} {:>5}", "name", "dtype", "shape", "min", "max", "abs-max", "mean-abs", "nan", "inf");
    for t in &r.tensors {
        println!(
            "  {:<52} {:<5} {:<16} {:>11.4e} {:>11.4e} {:>11.4e} {:>10.3e} {:>5} {:>5}",
            t.name,
            t.dtype,
            format!("{:?}", t.shape),
            t.min,
            t.max,
            t.abs_max,
            t.mean_abs,
            t.nan,
            t.inf
        );
    }
}
