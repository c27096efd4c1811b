//! `agent generate`: the whole model in this process (optionally split in stages,
//! with the f32 wire format between them), text streamed to stdout.

use std::io::Write;

use anyhow::{bail, Context, Result};
use engine::{ChatMessage, Generator, SamplingParams};

use crate::config::GenerateArgs;

/// Run a local generation and print timings to stderr.
pub async fn run(args: GenerateArgs) -> Result<()> {
    if args.stages == 0 {
        bail!("--stages must be at least 1");
    }
    let path = crate::config::model_path(args.model.clone()).await?;
    tokio::task::spawn_blocking(move || generate(&args, &path)).await?
}

fn generate(args: &GenerateArgs, path: &std::path::Path) -> Result<()> {
    let gen = Generator::load(path, args.stages).context("loading the model")?;
    let prompt = if args.raw {
        gen.tokenizer.encode(&args.prompt)?
    } else {
        gen.chat_tokens(&[ChatMessage::new("user", &args.prompt)])?
    };
    let params = SamplingParams {
        temperature: args.temperature,
        seed: Some(args.seed),
        max_tokens: args.max_tokens as usize,
        ..SamplingParams::default()
    };
    let mut out = std::io::stdout();
    let g = gen
        .generate(&prompt, &params, |piece| {
            let _ = out.write_all(piece.as_bytes());
            let _ = out.flush();
            true
        })
        .context("generation failed")?;
    println!();
    eprintln!(
        "[{} prompt tokens, {} generated, finish={}, ttft={:.1} ms, {:.1} tok/s]",
        g.prompt_tokens,
        g.tokens.len(),
        g.finish.as_str(),
        g.time_to_first_token.as_secs_f64() * 1000.0,
        g.tokens_per_second()
    );
    Ok(())
}
