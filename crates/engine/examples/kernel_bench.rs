//! Micro-benchmark of the weight kernels, format against format in the same harness.
//!
//! - decode: GB/s of weights streamed by `tile::<4, 1>` over a matrix much bigger than L3
//!   (one thread calling the kernel directly), the same over ~4 MiB (L3-resident: the
//!   kernel's own speed), and `matmul::run` with all threads;
//! - prompt: GMAC/s of `tile::<2, 4>` on two cache-resident rows (one thread), and of
//!   `matmul::run` on 64 tokens x 4096x4096 (all threads);
//! - the machine's read bandwidth (a plain streaming sum) as a reference;
//! - with `--llama BIN`, llama.cpp's `ggml_mul_mat` on the same shapes (formats it repacks
//!   on this CPU in its REPACK buffer, as llama.cpp loads them), run in the same rounds.
//!   BIN is `llama_matmul_bench.c` next to this file, built against the anchor build of
//!   `scripts/llama-cpp.sh`:
//!   `R=~/.cache/distributed-llm/llama.cpp/0.3.36; gcc -O2 -o /tmp/llama_matmul_bench
//!   crates/engine/examples/llama_matmul_bench.c
//!   -I$R/src/llama_cpp_python-0.3.36/vendor/llama.cpp/ggml/include -L$R/build/bin
//!   -lggml -lggml-base -lggml-cpu -Wl,-rpath,$R/build/bin`
//!
//! Weights are random blocks with sane f16 scales; activations are quantized once, outside
//! the timings. Formats alternate within each round and the best round is reported, since
//! the machine is shared. Run:
//!
//! ```text
//! cargo run --release -p engine --example kernel_bench -- [--rounds 5] [--rows 16384]
//!     [--cols 8192] [--formats Q4_K,Q5_K,...] [--threads 2] [--llama /tmp/llama_matmul_bench]
//! ```

use engine::quant::{
    matmul, Act, Format, Input, Kernel, IQ4_NL, Q2_K, Q3_K, Q4_0, Q4_1, Q4_K, Q5_0, Q5_1, Q5_K,
    Q6_K, Q8_0,
};
use std::hint::black_box;
use std::time::Instant;

/// Byte offsets of the f16 fields of a block (set to a sane value; the rest is random).
fn f16_fields(f: Format) -> &'static [usize] {
    match f {
        Format::Q4_0 | Format::Q5_0 | Format::Q8_0 | Format::IQ4_NL => &[0],
        Format::Q4_1 | Format::Q5_1 | Format::Q4_K | Format::Q5_K => &[0, 2],
        Format::Q2_K => &[80, 82],
        Format::Q3_K => &[108],
        Format::Q6_K => &[208],
        _ => &[],
    }
}

fn parse_format(s: &str) -> Format {
    match s {
        "Q4_0" => Format::Q4_0,
        "Q4_1" => Format::Q4_1,
        "Q5_0" => Format::Q5_0,
        "Q5_1" => Format::Q5_1,
        "Q8_0" => Format::Q8_0,
        "Q2_K" => Format::Q2_K,
        "Q3_K" => Format::Q3_K,
        "Q4_K" => Format::Q4_K,
        "Q5_K" => Format::Q5_K,
        "Q6_K" => Format::Q6_K,
        "IQ4_NL" => Format::IQ4_NL,
        _ => panic!("unknown format {s}"),
    }
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Random blocks of format `f` for `values` weights, 8-byte aligned.
fn weights(f: Format, values: usize, rng: &mut Rng) -> Vec<u64> {
    let bytes = values / f.block_values() * f.block_bytes();
    let mut w: Vec<u64> = (0..bytes.div_ceil(8)).map(|_| rng.next()).collect();
    let b = as_bytes_mut(&mut w);
    let half = half::f16::from_f32(0.01).to_le_bytes();
    for blk in b[..bytes].chunks_exact_mut(f.block_bytes()) {
        for &o in f16_fields(f) {
            blk[o..o + 2].copy_from_slice(&half);
        }
    }
    w
}

fn as_bytes_mut(w: &mut [u64]) -> &mut [u8] {
    // SAFETY: u64 -> u8 view of the same memory.
    unsafe { std::slice::from_raw_parts_mut(w.as_mut_ptr() as *mut u8, w.len() * 8) }
}

fn as_bytes(w: &[u64]) -> &[u8] {
    // SAFETY: u64 -> u8 view of the same memory.
    unsafe { std::slice::from_raw_parts(w.as_ptr() as *const u8, w.len() * 8) }
}

fn blocks<K: Kernel>(data: &[u8], n: usize) -> &[K::W] {
    assert!(data.len() >= n * std::mem::size_of::<K::W>());
    assert_eq!(data.as_ptr() as usize % std::mem::align_of::<K::W>(), 0);
    // SAFETY: the blocks are plain old data; length and alignment checked.
    unsafe { std::slice::from_raw_parts(data.as_ptr() as *const K::W, n) }
}

/// Seconds for one pass of `tile::<4, 1>` over all rows (one thread).
fn decode_pass<K: Kernel>(data: &[u8], rows: usize, cols: usize, a: &[K::A]) -> f64 {
    let bpr = cols / K::QK;
    let w = blocks::<K>(data, rows * bpr);
    let row = |r: usize| &w[r * bpr..(r + 1) * bpr];
    let t = Instant::now();
    let mut s = 0f32;
    for r in (0..rows).step_by(4) {
        let o = K::tile::<4, 1>([row(r), row(r + 1), row(r + 2), row(r + 3)], [a]);
        s += o[0][0] + o[3][0];
    }
    black_box(s);
    t.elapsed().as_secs_f64()
}

/// Seconds for `reps` calls of `tile::<2, 4>` on 2 cache-resident rows of `cols`.
fn tile24<K: Kernel>(data: &[u8], cols: usize, a: &[K::A], reps: usize) -> f64 {
    let bpr = cols / K::QK;
    let w = blocks::<K>(data, 2 * bpr);
    let act = |t: usize| &a[t * bpr..(t + 1) * bpr];
    let t = Instant::now();
    let mut s = 0f32;
    for _ in 0..reps {
        let o = K::tile::<2, 4>(
            [black_box(&w[..bpr]), &w[bpr..2 * bpr]],
            [act(0), act(1), act(2), act(3)],
        );
        s += o[0][0] + o[1][3];
    }
    black_box(s);
    t.elapsed().as_secs_f64()
}

/// Seconds for one `matmul::run` of `n` tokens.
fn driver(f: Format, data: &[u8], rows: usize, cols: usize, input: &Input, out: &mut [f32]) -> f64 {
    let bytes = rows * cols / f.block_values() * f.block_bytes();
    let t = Instant::now();
    matmul::run(
        input,
        &mut [matmul::Job {
            format: f,
            data: &data[..bytes],
            rows,
            cols,
            packed: None,
            out,
        }],
    );
    t.elapsed().as_secs_f64()
}

/// Seconds to read `buf` once with `threads` threads.
fn stream(buf: &[u64], threads: usize) -> f64 {
    let t = Instant::now();
    let chunk = buf.len().div_ceil(threads);
    let s: u64 = std::thread::scope(|sc| {
        let hs: Vec<_> = buf
            .chunks(chunk)
            .map(|c| sc.spawn(move || c.iter().fold(0u64, |a, &b| a.wrapping_add(b))))
            .collect();
        hs.into_iter()
            .map(|h| h.join().unwrap())
            .fold(0, u64::wrapping_add)
    });
    black_box(s);
    t.elapsed().as_secs_f64()
}

#[derive(Default, Clone, Copy)]
struct Best {
    decode1: f64,
    decode_l3: f64,
    decode_mt: f64,
    tile: f64,
    prompt_mt: f64,
    llama_decode1: f64,
    llama_decode_mt: f64,
    llama_prompt_mt: f64,
}

fn min(a: &mut f64, b: f64) {
    if *a == 0.0 || b < *a {
        *a = b;
    }
}

/// What every format's round shares: the matrix shape and the inputs.
struct Ctx<'a> {
    rows: usize,
    cols: usize,
    threads: usize,
    /// The rows of the L3-resident decode case (`cols` wide).
    l3_rows: usize,
    x1: Input<'a>,
    x4: Input<'a>,
    x64: Input<'a>,
    llama: Option<String>,
}

/// One round of every measurement for format `K` (`f`), weights `big`.
fn round<K: Kernel>(c: &Ctx, f: Format, big: &[u8], best: &mut Best, out: &mut [f32]) {
    let a1 = <K::A as Act>::of(&c.x1);
    let a4 = <K::A as Act>::of(&c.x4);
    for _ in 0..3 {
        min(&mut best.decode1, decode_pass::<K>(big, c.rows, c.cols, a1));
    }
    for _ in 0..10 {
        min(
            &mut best.decode_l3,
            decode_pass::<K>(big, c.l3_rows, c.cols, a1),
        );
    }
    for _ in 0..3 {
        min(
            &mut best.decode_mt,
            driver(f, big, c.rows, c.cols, &c.x1, &mut out[..c.rows]),
        );
    }
    min(&mut best.tile, tile24::<K>(big, 4096, a4, 2000));
    for _ in 0..2 {
        min(
            &mut best.prompt_mt,
            driver(f, big, 4096, 4096, &c.x64, &mut out[..64 * 4096]),
        );
    }
    if let Some(bin) = &c.llama {
        let name = ggml_name(f);
        let (r, cl, t) = (
            c.rows.to_string(),
            c.cols.to_string(),
            c.threads.to_string(),
        );
        min(
            &mut best.llama_decode1,
            llama(bin, &[name, &r, &cl, "1", "1", "5"]),
        );
        min(
            &mut best.llama_decode_mt,
            llama(bin, &[name, &r, &cl, "1", &t, "5"]),
        );
        min(
            &mut best.llama_prompt_mt,
            llama(bin, &[name, "4096", "4096", "64", &t, "3"]),
        );
    }
}

/// ggml's name of a format.
fn ggml_name(f: Format) -> &'static str {
    match f {
        Format::Q4_0 => "q4_0",
        Format::Q4_1 => "q4_1",
        Format::Q5_0 => "q5_0",
        Format::Q5_1 => "q5_1",
        Format::Q8_0 => "q8_0",
        Format::Q2_K => "q2_K",
        Format::Q3_K => "q3_K",
        Format::Q4_K => "q4_K",
        Format::Q5_K => "q5_K",
        Format::Q6_K => "q6_K",
        Format::IQ4_NL => "iq4_nl",
        _ => unreachable!(),
    }
}

/// Seconds of llama.cpp's matmul (best of its own repetitions), from the harness's
/// "NAME BUFT RxC n=N threads=T: X ms, ..." line.
fn llama(bin: &str, args: &[&str]) -> f64 {
    let o = std::process::Command::new(bin)
        .args(args)
        .stderr(std::process::Stdio::null())
        .output()
        .expect("llama.cpp harness");
    let s = String::from_utf8_lossy(&o.stdout);
    let ms: f64 = s
        .split(": ")
        .nth(1)
        .and_then(|r| r.split(" ms").next())
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("unexpected output from {bin}: {s}"));
    ms / 1e3
}

fn main() {
    let mut rounds = 5;
    let mut rows = 16384;
    let mut cols = 8192;
    let mut threads = 2;
    let mut llama_bin = None;
    let mut formats: Vec<Format> = ["Q4_K", "Q5_K", "Q6_K", "Q4_0", "Q8_0"]
        .iter()
        .map(|s| parse_format(s))
        .collect();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        let v = args.get(i + 1).cloned().unwrap_or_default();
        match args[i].as_str() {
            "--rounds" => rounds = v.parse().unwrap(),
            "--rows" => rows = v.parse().unwrap(),
            "--cols" => cols = v.parse().unwrap(),
            "--threads" => threads = v.parse().unwrap(),
            "--formats" => formats = v.split(',').map(parse_format).collect(),
            "--llama" => llama_bin = Some(v),
            a => panic!("unknown argument {a}"),
        }
        i += 2;
    }
    engine::init_threads(threads);
    // The L3-resident case: ~4 MiB of weights whatever the format.
    let l3_rows = ((4usize << 20) * 2 / cols).next_multiple_of(4);
    assert!(rows * cols >= 4096 * 4096 && rows >= l3_rows && rows % 4 == 0);
    let mut rng = Rng(0x9e3779b97f4a7c15);
    let data: Vec<Vec<u64>> = formats
        .iter()
        .map(|&f| weights(f, rows * cols, &mut rng))
        .collect();
    let xs = |n: usize, c: usize, rng: &mut Rng| -> Vec<f32> {
        (0..n * c)
            .map(|_| (rng.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0)
            .collect()
    };
    let (v1, v4, v64) = (
        xs(1, cols, &mut rng),
        xs(4, 4096, &mut rng),
        xs(64, 4096, &mut rng),
    );
    let ctx = Ctx {
        rows,
        cols,
        threads,
        l3_rows,
        x1: Input::new(&v1, 1),
        x4: Input::new(&v4, 4),
        x64: Input::new(&v64, 64),
        llama: llama_bin,
    };
    let mut out = vec![0f32; (64 * 4096).max(rows)];
    let sbuf: Vec<u64> = (0..(256usize << 20) / 8).map(|i| i as u64).collect();
    let mut best = vec![Best::default(); formats.len()];
    let (mut s1, mut smt) = (0f64, 0f64);
    for _ in 0..rounds {
        min(&mut s1, stream(&sbuf, 1));
        min(&mut smt, stream(&sbuf, threads));
        for (k, &f) in formats.iter().enumerate() {
            let d = as_bytes(&data[k]);
            let b = &mut best[k];
            macro_rules! go {
                ($($F:ident),*) => {
                    match f {
                        $(Format::$F => round::<$F>(&ctx, f, d, b, &mut out),)*
                        _ => unreachable!(),
                    }
                };
            }
            go!(Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_NL);
        }
    }
    let gb = |bytes: f64, s: f64| bytes / s / 1e9;
    let mib = (256u64 << 20) as f64;
    println!(
        "read bandwidth (256 MiB, plain sum): 1 thread {:.1} GB/s, {threads} threads {:.1} GB/s",
        gb(mib, s1),
        gb(mib, smt)
    );
    println!(
        "best of {rounds} rounds. decode: {rows}x{cols} weights x 1 token (tile<4,1> on 1 thread, \
         matmul::run on {threads}), L3: {l3_rows}x{cols}; tile: tile<2,4> on 2 cached rows of 4096; \
         prompt: matmul::run of 4096x4096 x 64 tokens"
    );
    println!(
        "{:<7}{:>7} | {:>9} {:>8} {:>9} {:>9} | {:>9} {:>10} | llama.cpp: {:>9} {:>9} {:>10}",
        "format",
        "MiB",
        "decode1t",
        "Gw/s",
        "L3 1t",
        "decode2t",
        "tile2x4",
        "prompt2t",
        "decode1t",
        "decode2t",
        "prompt2t"
    );
    println!(
        "{:<7}{:>7} | {:>9} {:>8} {:>9} {:>9} | {:>9} {:>10} | {:>20} {:>9} {:>10}",
        "", "", "GB/s", "", "GB/s", "GB/s", "GMAC/s", "GMAC/s", "GB/s", "GB/s", "GMAC/s"
    );
    for (k, &f) in formats.iter().enumerate() {
        let bytes = (rows * cols / f.block_values() * f.block_bytes()) as f64;
        let l3_bytes = bytes * l3_rows as f64 / rows as f64;
        let prompt = 64.0 * 4096.0 * 4096.0;
        let b = best[k];
        let opt = |s: f64, v: f64| {
            if s > 0.0 {
                format!("{:.1}", v / s / 1e9)
            } else {
                "-".into()
            }
        };
        println!(
            "{:<7}{:>7.1} | {:>9.1} {:>8.1} {:>9.1} {:>9.1} | {:>9.1} {:>10.1} | {:>20} {:>9} {:>10}",
            format!("{f:?}"),
            bytes / (1 << 20) as f64,
            gb(bytes, b.decode1),
            (rows * cols) as f64 / b.decode1 / 1e9,
            gb(l3_bytes, b.decode_l3),
            gb(bytes, b.decode_mt),
            2.0 * 4.0 * 4096.0 * 2000.0 / b.tile / 1e9,
            prompt / b.prompt_mt / 1e9,
            opt(b.llama_decode1, bytes),
            opt(b.llama_decode_mt, bytes),
            opt(b.llama_prompt_mt, prompt),
        );
    }
}
