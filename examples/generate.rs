//! The smallest use of Braid as a library: load a Qwen3 folder, generate greedily, stream text.
//!
//! cargo run -p braid-engine --example generate -- [MODEL_DIR] [PROMPT]

use std::io::Write;
use std::path::PathBuf;

use braid_engine::{Engine, Request, SamplingParams};
use braid_model::{DType, Device};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = args
        .next()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models/braid-tiny"));
    let prompt = args.next().unwrap_or_else(|| "Call me Ishmael.".into());

    let engine = Engine::load(&dir, &Device::flex(), DType::F32, &mut |_, _| {})?;
    let ids = engine.encode_prompt(&prompt)?;
    let req = Request { max_tokens: 48, sampling: SamplingParams::default(), ignore_eos: false };
    print!("{prompt}");
    let out = engine.generate(&ids, &req, &mut |piece| {
        print!("{piece}");
        let _ = std::io::stdout().flush();
    })?;
    println!("\n[{} tokens, {:?}]", out.output_ids.len(), out.finish);
    Ok(())
}
