//! `bench`: prompt-processing and generation speed, time to first token, peak memory and load
//! time of the engine on a GGUF model — and of llama.cpp on the same file, when it is
//! installed: `llama-bench` from `$LLAMA_CPP_BIN` (`eval "$(scripts/llama-cpp.sh env)"`), from
//! `--llama-bench` or from PATH, else the Python package `llama-cpp-python`.
//!
//! `--json` prints one JSON object on stdout instead of the human report (what
//! `scripts/bench-matrix.py` reads).

use clap::Parser;
use engine::{argmax, ChatMessage, Generator};
use serde_json::json;
use std::path::{Path, PathBuf};
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
    /// llama-bench binary (default: $LLAMA_CPP_BIN/llama-bench, else llama-bench on PATH).
    #[arg(long)]
    llama_bench: Option<PathBuf>,
    /// Print one JSON object (engine and llama.cpp figures, and the llama.cpp command) on
    /// stdout instead of the human report.
    #[arg(long)]
    json: bool,
}

#[derive(Default, Clone)]
struct Numbers {
    pp: f64,
    tg: f64,
}

/// One llama.cpp measurement and how it was obtained.
struct Llama {
    how: String,
    command: String,
    n: Numbers,
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
    let t = Instant::now();
    let g = Generator::load(&model, 1)?;
    let load_ms = t.elapsed().as_secs_f64() * 1e3;
    let info = g.stages[0].info().clone();
    // the human report goes to stdout, or to stderr when stdout carries the JSON
    let say = |s: String| {
        if a.json {
            eprintln!("{s}")
        } else {
            println!("{s}")
        }
    };
    say(format!(
        "model: {} ({}, {}, {} layers, {:.1} MiB, loaded in {:.0} ms)",
        model.display(),
        info.name,
        info.architecture,
        info.n_layers,
        info.file_bytes as f64 / 1048576.0,
        load_ms
    ));
    say(format!(
        "threads: {threads}   prompt: {} tokens   generation: {} tokens   best of {}",
        a.prompt_tokens, a.gen_tokens, a.repeat
    ));

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
    let mut best = Numbers::default();
    let mut rounds: Vec<Numbers> = Vec::new();
    let mut llama: Option<Llama> = None;
    let mut llama_rounds: Vec<Numbers> = Vec::new();
    let mut llama_missing = a.no_llama_cpp;
    for _ in 0..a.repeat.max(1) {
        let mut caches = g.new_caches();
        let t = Instant::now();
        let logits = g.logits(&prompt, &mut caches)?;
        let pp = prompt.len() as f64 / t.elapsed().as_secs_f64();
        let mut tok = argmax(&logits);
        let t = Instant::now();
        for _ in 0..a.gen_tokens {
            tok = argmax(&g.logits(&[tok], &mut caches)?);
        }
        let tg = a.gen_tokens as f64 / t.elapsed().as_secs_f64();
        best.pp = best.pp.max(pp);
        best.tg = best.tg.max(tg);
        rounds.push(Numbers { pp, tg });
        if !llama_missing {
            match llama_cpp(&a, &model, threads) {
                Some(r) => {
                    llama_rounds.push(r.n.clone());
                    let e = llama.get_or_insert(Llama {
                        n: Numbers::default(),
                        ..r
                    });
                    e.n.pp = e.n.pp.max(r.n.pp);
                    e.n.tg = e.n.tg.max(r.n.tg);
                }
                None => llama_missing = true,
            }
        }
    }
    // Time to first token of a real chat request (template, tokenizer, prompt, sampling).
    let message = "Tell me a short story about a robot who learns to paint.";
    let t = Instant::now();
    let chat = g.chat_tokens(&[ChatMessage::new("user", message)])?;
    let mut caches = g.new_caches();
    let _first = argmax(&g.logits(&chat, &mut caches)?);
    let ttft = t.elapsed().as_secs_f64() * 1e3;
    let rss = peak_rss_mib();

    if a.json {
        let r = |v: &[Numbers]| -> serde_json::Value {
            json!({"pp_tok_s": v.iter().map(|n| n.pp).collect::<Vec<_>>(),
                   "tg_tok_s": v.iter().map(|n| n.tg).collect::<Vec<_>>()})
        };
        let out = json!({
            "model": model.display().to_string(),
            "model_bytes": info.file_bytes,
            "architecture": info.architecture,
            "threads": threads,
            "prompt_tokens": a.prompt_tokens,
            "gen_tokens": a.gen_tokens,
            "repeat": a.repeat.max(1),
            "engine": {
                "pp_tok_s": best.pp,
                "tg_tok_s": best.tg,
                "ttft_ms": ttft,
                "ttft_prompt_tokens": chat.len(),
                "peak_rss_mib": rss,
                "load_ms": load_ms,
                "rounds": r(&rounds),
            },
            "llama_cpp": llama.as_ref().map(|l| json!({
                "how": l.how,
                "command": l.command,
                "pp_tok_s": l.n.pp,
                "tg_tok_s": l.n.tg,
                "rounds": r(&llama_rounds),
            })),
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!();
    println!("engine     prompt processing {:>7.1} tok/s   generation {:>6.1} tok/s   TTFT ({} prompt tokens) {:>6.1} ms   peak RSS {:.0} MiB",
        best.pp, best.tg, chat.len(), ttft, rss);
    match llama {
        Some(l) => {
            println!(
                "llama.cpp  prompt processing {:>7.1} tok/s   generation {:>6.1} tok/s   ({})",
                l.n.pp, l.n.tg, l.how
            );
            println!(
                "ratio engine/llama.cpp: prompt processing {:.2}x, generation {:.2}x",
                best.pp / l.n.pp,
                best.tg / l.n.tg
            );
            println!("llama.cpp command: {}", l.command);
        }
        None if a.no_llama_cpp => {}
        None => println!("llama.cpp: not installed (scripts/llama-cpp.sh builds llama-bench; `eval \"$(scripts/llama-cpp.sh env)\"` puts it in LLAMA_CPP_BIN)"),
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

/// The llama-bench binary: --llama-bench, else $LLAMA_CPP_BIN/llama-bench, else PATH.
fn llama_bench_path(a: &Args) -> PathBuf {
    if let Some(p) = &a.llama_bench {
        return p.clone();
    }
    if let Ok(dir) = std::env::var("LLAMA_CPP_BIN") {
        let p = Path::new(&dir).join("llama-bench");
        if p.is_file() {
            return p;
        }
    }
    PathBuf::from("llama-bench")
}

fn shell_quote(s: &str) -> String {
    if s.chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// One round of llama.cpp on the same model and thread count, if it can be found.
fn llama_cpp(a: &Args, model: &Path, threads: usize) -> Option<Llama> {
    let m = model.to_str()?;
    let bin = llama_bench_path(a);
    let args = [
        "-m".to_string(),
        m.to_string(),
        "-t".into(),
        threads.to_string(),
        "-p".into(),
        a.prompt_tokens.to_string(),
        "-n".into(),
        a.gen_tokens.to_string(),
        "-r".into(),
        "1".into(),
        "-o".into(),
        "json".into(),
    ];
    if let Ok(out) = Command::new(&bin).args(&args).output() {
        if out.status.success() {
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
            let mut n = Numbers::default();
            for r in v.as_array()? {
                let ts = r["avg_ts"].as_f64().unwrap_or(0.0);
                if r["n_prompt"].as_u64().unwrap_or(0) > 0 {
                    n.pp = ts
                } else {
                    n.tg = ts
                }
            }
            let build = v
                .as_array()
                .and_then(|a| a.first())
                .map(|r| {
                    format!(
                        "llama-bench {} build {}",
                        r["build_commit"].as_str().unwrap_or("?"),
                        r["build_number"]
                    )
                })
                .unwrap_or_else(|| "llama-bench".into());
            let command = std::iter::once(bin.display().to_string())
                .chain(args.iter().cloned())
                .map(|s| shell_quote(&s))
                .collect::<Vec<_>>()
                .join(" ");
            return Some(Llama {
                how: build,
                command,
                n,
            });
        }
    }
    let script = format!(
        r#"
import time, llama_cpp
m = llama_cpp.Llama(model_path={m:?}, n_threads={threads}, n_threads_batch={threads}, n_ctx=2048, n_batch=512, verbose=False)
text = b"The quick brown fox jumps over the lazy dog while the robot paints a picture of the sea. "
toks = m.tokenize(text * 40, add_bos=False)[:{pp}]
m.reset(); t = time.perf_counter(); m.eval(toks); pp = len(toks) / (time.perf_counter() - t)
t = time.perf_counter()
for i in range({tg}):
    m.eval([toks[i % len(toks)]])
print(pp, {tg} / (time.perf_counter() - t))
"#,
        pp = a.prompt_tokens,
        tg = a.gen_tokens
    );
    let python = std::env::var("PY").unwrap_or_else(|_| "python3".into());
    let out = Command::new(&python).args(["-c", &script]).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let s = String::from_utf8_lossy(&out.stdout);
    let mut it = s.split_whitespace().filter_map(|x| x.parse::<f64>().ok());
    let n = Numbers {
        pp: it.next()?,
        tg: it.next()?,
    };
    Some(Llama {
        how: format!("llama-cpp-python {}", version(&python)),
        command: format!("{python} -c <script in bench.rs>"),
        n,
    })
}

fn version(python: &str) -> String {
    Command::new(python)
        .args(["-c", "import llama_cpp; print(llama_cpp.__version__)"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}
