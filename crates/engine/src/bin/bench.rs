//! `bench`: prompt-processing and generation speed, time to first token and peak memory of
//! the engine on a GGUF model — and of llama.cpp on the same file, when it is installed
//! (`llama-bench` on PATH, or the Python package `llama-cpp-python`).

use clap::Parser;
use engine::{argmax, ChatMessage, Generator};
use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

#[derive(Parser)]
#[command(about = "Benchmark the engine (and llama.cpp, when installed) on a GGUF model")]
struct Args {
    /// GGUF model (default: the default model, fetched if absent).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Compute threads (0 = all cores).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Prompt length for the prompt-processing test.
    #[arg(long, default_value_t = 128)]
    prompt_tokens: usize,
    /// Tokens generated in the generation test.
    #[arg(long, default_value_t = 128)]
    gen_tokens: usize,
    /// Rounds (engine and llama.cpp alternate); the best round of each is reported.
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// Skip the llama.cpp comparison.
    #[arg(long)]
    no_llama_cpp: bool,
}

struct Numbers {
    pp: f64,
    tg: f64,
}

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let threads = if a.threads == 0 {
        std::thread::available_parallelism()?.get()
    } else {
        a.threads
    };
    engine::init_threads(threads);
    let model = match a.model.clone() {
        Some(m) => m,
        None => engine::fetch::ensure_default_model()?,
    };
    let g = Generator::load(&model, 1)?;
    let info = g.stages[0].info().clone();
    println!(
        "model: {} ({}, {} layers, {:.1} MiB)",
        model.display(),
        info.name,
        info.n_layers,
        info.file_bytes as f64 / 1048576.0
    );
    println!(
        "threads: {threads}   prompt: {} tokens   generation: {} tokens   best of {}",
        a.prompt_tokens, a.gen_tokens, a.repeat
    );

    // Prompt tokens: real text, repeated to the wanted length.
    let text =
        "The quick brown fox jumps over the lazy dog while the robot paints a picture of the sea. ";
    let mut prompt = Vec::new();
    while prompt.len() < a.prompt_tokens {
        prompt.extend(g.tokenizer.encode(text)?);
    }
    prompt.truncate(a.prompt_tokens);

    // Rounds alternate engine and llama.cpp so that load from other processes hits both
    // alike; the best round of each is reported.
    let mut best = Numbers { pp: 0.0, tg: 0.0 };
    let mut llama: Option<(String, Numbers)> = None;
    let mut llama_missing = a.no_llama_cpp;
    for _ in 0..a.repeat.max(1) {
        let mut caches = g.new_caches();
        let t = Instant::now();
        let logits = g.logits(&prompt, &mut caches)?;
        best.pp = best.pp.max(prompt.len() as f64 / t.elapsed().as_secs_f64());
        let mut tok = argmax(&logits);
        let t = Instant::now();
        for _ in 0..a.gen_tokens {
            tok = argmax(&g.logits(&[tok], &mut caches)?);
        }
        best.tg = best.tg.max(a.gen_tokens as f64 / t.elapsed().as_secs_f64());
        if !llama_missing {
            match llama_cpp(&model, threads, a.prompt_tokens, a.gen_tokens) {
                Some((how, n)) => {
                    let e = llama.get_or_insert((how, Numbers { pp: 0.0, tg: 0.0 }));
                    e.1.pp = e.1.pp.max(n.pp);
                    e.1.tg = e.1.tg.max(n.tg);
                }
                None => llama_missing = true,
            }
        }
    }
    // Time to first token of a real chat request (template, tokenizer, prompt, sampling).
    let t = Instant::now();
    let chat = g.chat_tokens(&[ChatMessage::new(
        "user",
        "Tell me a short story about a robot who learns to paint.",
    )])?;
    let mut caches = g.new_caches();
    let _first = argmax(&g.logits(&chat, &mut caches)?);
    let ttft = t.elapsed();
    let rss = peak_rss_mib();
    println!();
    println!("engine     prompt processing {:>7.1} tok/s   generation {:>6.1} tok/s   TTFT ({} prompt tokens) {:>6.1} ms   peak RSS {:.0} MiB",
        best.pp, best.tg, chat.len(), ttft.as_secs_f64() * 1e3, rss);
    match llama {
        Some((how, l)) => {
            println!("llama.cpp  prompt processing {:>7.1} tok/s   generation {:>6.1} tok/s   ({how})", l.pp, l.tg);
            println!("ratio engine/llama.cpp: prompt processing {:.2}x, generation {:.2}x", best.pp / l.pp, best.tg / l.tg);
        }
        None if a.no_llama_cpp => {}
        None => println!("llama.cpp: not installed (install `llama-bench` or `pip install llama-cpp-python` to compare)"),
    }
    Ok(())
}

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .map(|l| l.to_string())
        })
        .and_then(|l| {
            l.split_whitespace()
                .nth(1)
                .and_then(|v| v.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

/// One round of llama.cpp on the same model and thread count, if it can be found.
fn llama_cpp(
    model: &std::path::Path,
    threads: usize,
    pp: usize,
    tg: usize,
) -> Option<(String, Numbers)> {
    let m = model.to_str()?;
    if let Ok(out) = Command::new("llama-bench")
        .args([
            "-m",
            m,
            "-t",
            &threads.to_string(),
            "-p",
            &pp.to_string(),
            "-n",
            &tg.to_string(),
            "-r",
            "1",
            "-o",
            "json",
        ])
        .output()
    {
        if out.status.success() {
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
            let mut n = Numbers { pp: 0.0, tg: 0.0 };
            for r in v.as_array()? {
                let ts = r["avg_ts"].as_f64().unwrap_or(0.0);
                if r["n_prompt"].as_u64().unwrap_or(0) > 0 {
                    n.pp = ts
                } else {
                    n.tg = ts
                }
            }
            return Some(("llama-bench".into(), n));
        }
    }
    let script = format!(
        r#"
import time, llama_cpp
m = llama_cpp.Llama(model_path={m:?}, n_threads={threads}, n_threads_batch={threads}, n_ctx=2048, n_batch=512, verbose=False)
text = b"The quick brown fox jumps over the lazy dog while the robot paints a picture of the sea. "
toks = m.tokenize(text * 40, add_bos=False)[:{pp}]
best_pp = best_tg = 0.0
for _ in range(1):
    m.reset(); t = time.perf_counter(); m.eval(toks); best_pp = max(best_pp, len(toks) / (time.perf_counter() - t))
    t = time.perf_counter()
    for i in range({tg}):
        m.eval([toks[i % len(toks)]])
    best_tg = max(best_tg, {tg} / (time.perf_counter() - t))
print(best_pp, best_tg)
"#
    );
    let out = Command::new("python3")
        .args(["-c", &script])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let s = String::from_utf8_lossy(&out.stdout);
    let mut it = s.split_whitespace().filter_map(|x| x.parse::<f64>().ok());
    let n = Numbers {
        pp: it.next()?,
        tg: it.next()?,
    };
    Some((format!("llama-cpp-python {}", version()), n))
}

fn version() -> String {
    Command::new("python3")
        .args(["-c", "import llama_cpp; print(llama_cpp.__version__)"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}
