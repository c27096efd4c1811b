//! Micro-benchmark of the weight kernels through the engine's matmul driver
//! (`matmul::run`), format against format and against llama.cpp in the same harness.
//!
//! For each format and path — `plain` (the format's own kernels) and `packed` (the 8-row
//! interleaved copy the engine makes at load, built here outside the timings) — it
//! measures:
//! - decode: GB/s of weights streamed by one product of a matrix much bigger than L3 with
//!   1, 2, 3, 4, 8 tokens (`--tokens`), on 1 thread and on `--threads` threads;
//! - L3: the same with 1 token over ~4 MiB of weights on 1 thread (the kernel's own speed);
//! - prompt: GMAC/s of 4096x4096 x 64 tokens on 1 thread and on `--threads`;
//! - with `--llama BIN`, llama.cpp's `ggml_mul_mat` on the same shapes (formats it repacks
//!   on this CPU in its REPACK buffer, as llama.cpp loads them), in the same rounds.
//!   BIN is `llama_matmul_bench.c` next to this file, built against the anchor build of
//!   `scripts/llama-cpp.sh`:
//!   `R=~/.cache/distributed-llm/llama.cpp/0.3.36; gcc -O2 -o /tmp/llama_matmul_bench
//!   crates/engine/examples/llama_matmul_bench.c
//!   -I$R/src/llama_cpp_python-0.3.36/vendor/llama.cpp/ggml/include -L$R/build/bin
//!   -lggml -lggml-base -lggml-cpu -Wl,-rpath,$R/build/bin`
//!
//! With `--cpu-time` the 1-thread figures are in CPU time (ours: the thread's, llama.cpp's:
//! the process's), which a shared machine's time slices do not disturb.
//! The integer kernels use AVX512-VNNI where the CPU has it; `DLLM_NO_VNNI=1` measures
//! their AVX2 path instead (same results). Weights are random blocks with sane f16 scales;
//! activations are quantized once, outside the timings. Formats and engines alternate
//! within each round and the best round is reported, since the machine is shared. Run:
//!
//! ```text
//! cargo run --release -p engine --example kernel_bench -- [--rounds 5] [--rows 16384]
//!     [--cols 8192] [--formats Q4_K,Q5_K,...] [--threads 2] [--tokens 1,2,3,4,8]
//!     [--paths plain,packed] [--cpu-time] [--llama /tmp/llama_matmul_bench]
//! ```

use engine::quant::{matmul, packed, simd, Format, Input};
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
        "F16" => Format::F16,
        "BF16" => Format::BF16,
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

/// ggml's name of a format.
fn ggml_name(f: Format) -> &'static str {
    match f {
        Format::F16 => "f16",
        Format::BF16 => "bf16",
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

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// Uniform in [-1, 1).
    fn f32(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
}

/// Random weights of format `f` for `values` weights, 8-byte aligned.
fn weights(f: Format, values: usize, rng: &mut Rng) -> Vec<u64> {
    let bytes = values / f.block_values() * f.block_bytes();
    let mut w: Vec<u64> = (0..bytes.div_ceil(8)).map(|_| rng.next()).collect();
    let b = as_bytes_mut(&mut w);
    match f {
        // Sane 16-bit floats (random bits would be NaNs and denormals).
        Format::F16 | Format::BF16 => {
            for v in b[..bytes].chunks_exact_mut(2) {
                let x = rng.f32() * 0.1;
                let h = if f == Format::F16 {
                    half::f16::from_f32(x).to_bits()
                } else {
                    half::bf16::from_f32(x).to_bits()
                };
                v.copy_from_slice(&h.to_le_bytes());
            }
        }
        _ => {
            let half = half::f16::from_f32(0.01).to_le_bytes();
            for blk in b[..bytes].chunks_exact_mut(f.block_bytes()) {
                for &o in f16_fields(f) {
                    blk[o..o + 2].copy_from_slice(&half);
                }
            }
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

/// A matrix as the engine holds it: its blocks and, for the packed path, the packed copy.
#[derive(Clone, Copy)]
struct Matrix<'a> {
    format: Format,
    data: &'a [u8],
    rows: usize,
    cols: usize,
    packed: Option<&'a [u8]>,
}

/// The calling thread's CPU time in seconds (Linux), which time slices given to other
/// processes do not count in.
fn thread_cpu() -> f64 {
    #[repr(C)]
    struct Timespec {
        sec: i64,
        nsec: i64,
    }
    extern "C" {
        fn clock_gettime(clock: i32, t: *mut Timespec) -> i32;
    }
    const CLOCK_THREAD_CPUTIME_ID: i32 = 3;
    let mut t = Timespec { sec: 0, nsec: 0 };
    // SAFETY: clock_gettime writes one timespec.
    let rc = unsafe { clock_gettime(CLOCK_THREAD_CPUTIME_ID, &mut t) };
    assert_eq!(rc, 0, "clock_gettime");
    t.sec as f64 + t.nsec as f64 * 1e-9
}

/// Seconds for one `matmul::run` of `input` with `m`: wall-clock, or with `cpu` the
/// calling thread's CPU time (only meaningful on a 1-thread pool, where all the work runs
/// on the calling thread).
fn driver(m: &Matrix, input: &Input, out: &mut [f32], cpu: bool) -> f64 {
    let bytes = m.rows * m.cols / m.format.block_values() * m.format.block_bytes();
    let c = if cpu { thread_cpu() } else { 0.0 };
    let t = Instant::now();
    matmul::run(
        input,
        &mut [matmul::Job {
            format: m.format,
            data: &m.data[..bytes],
            rows: m.rows,
            cols: m.cols,
            packed: m.packed,
            out: &mut out[..input.n * m.rows],
        }],
    );
    black_box(&out[0]);
    if cpu {
        thread_cpu() - c
    } else {
        t.elapsed().as_secs_f64()
    }
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

/// Best seconds of one engine (a path of ours, or llama.cpp) on one format.
#[derive(Default, Clone)]
struct Best {
    /// `[thread setting][token count]`.
    decode: [Vec<f64>; 2],
    l3: f64,
    prompt: [f64; 2],
}

fn min(a: &mut f64, b: f64) {
    if *a == 0.0 || b < *a {
        *a = b;
    }
}

/// Seconds of llama.cpp's matmul (best of its own repetitions), from the harness's
/// "NAME BUFT RxC n=N threads=T: X ms, ...; cpu Y ms" line: X, or with `cpu` Y (the
/// process's CPU time, the compute time on 1 thread).
fn llama(bin: &str, args: &[&str], cpu: bool) -> f64 {
    let o = std::process::Command::new(bin)
        .args(args)
        .stderr(std::process::Stdio::null())
        .output()
        .expect("llama.cpp harness");
    let s = String::from_utf8_lossy(&o.stdout);
    let field = if cpu { "cpu " } else { ": " };
    let ms: f64 = s
        .split(field)
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
    let mut tokens = vec![1usize, 2, 3, 4, 8];
    let mut cpu = false;
    let mut paths = vec!["plain".to_string(), "packed".to_string()];
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
            "--tokens" => tokens = v.split(',').map(|t| t.parse().unwrap()).collect(),
            "--paths" => paths = v.split(',').map(str::to_string).collect(),
            "--llama" => llama_bin = Some(v),
            "--cpu-time" => {
                cpu = true;
                i += 1;
                continue;
            }
            a => panic!("unknown argument {a}"),
        }
        i += 2;
    }
    let pools = [1, threads].map(|n| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build()
            .unwrap()
    });
    // The L3-resident case: ~4 MiB of weights whatever the format.
    let l3_rows = ((4usize << 20) * 2 / cols).next_multiple_of(8);
    let (prows, pcols, pn) = (4096usize, 4096usize, 64usize);
    assert!(rows * cols >= prows * pcols && rows >= l3_rows && rows % 8 == 0);
    let mut rng = Rng(0x9e3779b97f4a7c15);
    let data: Vec<Vec<u64>> = formats
        .iter()
        .map(|&f| weights(f, rows * cols, &mut rng))
        .collect();
    // The packed copies (as the engine makes them at load): the decode shape, the L3 rows
    // (its first groups) and the prompt shape.
    let t0 = Instant::now();
    let packs: Vec<Option<(Vec<u64>, Vec<u64>)>> = formats
        .iter()
        .zip(&data)
        .map(|(&f, d)| {
            let big = packed::pack_matrix(f, as_bytes(d), cols, rows / 8)?;
            let small = packed::pack_matrix(f, as_bytes(d), pcols, prows / 8)?;
            Some((big, small))
        })
        .collect();
    eprintln!("packed in {:.1} s", t0.elapsed().as_secs_f64());
    let xs =
        |n: usize, c: usize, rng: &mut Rng| -> Vec<f32> { (0..n * c).map(|_| rng.f32()).collect() };
    let vt: Vec<Vec<f32>> = tokens.iter().map(|&n| xs(n, cols, &mut rng)).collect();
    let vp = xs(pn, pcols, &mut rng);
    let inputs: Vec<Input> = vt
        .iter()
        .zip(&tokens)
        .map(|(v, &n)| Input::new(v, n))
        .collect();
    let prompt_in = Input::new(&vp, pn);
    let max_n = tokens.iter().copied().max().unwrap_or(1);
    let mut out = vec![0f32; (pn * prows).max(max_n * rows)];
    let sbuf: Vec<u64> = (0..(256usize << 20) / 8).map(|i| i as u64).collect();
    let empty = Best {
        decode: [vec![0.0; tokens.len()], vec![0.0; tokens.len()]],
        ..Best::default()
    };
    // [format][engine]: the paths asked for, then llama.cpp.
    let engines: Vec<String> = paths
        .iter()
        .cloned()
        .chain(llama_bin.iter().map(|_| "llama.cpp".to_string()))
        .collect();
    let mut best = vec![vec![empty.clone(); engines.len()]; formats.len()];
    let (mut s1, mut smt) = (0f64, 0f64);
    for _ in 0..rounds {
        min(&mut s1, stream(&sbuf, 1));
        min(&mut smt, stream(&sbuf, threads));
        for (k, &f) in formats.iter().enumerate() {
            let d = as_bytes(&data[k]);
            for (e, engine) in engines.iter().enumerate() {
                let b = &mut best[k][e];
                if engine == "llama.cpp" {
                    let bin = llama_bin.as_deref().unwrap();
                    let name = ggml_name(f);
                    let (r, c) = (rows.to_string(), cols.to_string());
                    for (p, th) in [1, threads].iter().enumerate() {
                        let th = th.to_string();
                        let cpu = cpu && p == 0;
                        for (ti, n) in tokens.iter().enumerate() {
                            let n = n.to_string();
                            min(
                                &mut b.decode[p][ti],
                                llama(bin, &[name, &r, &c, &n, &th, "5"], cpu),
                            );
                        }
                        let (pr, pc, pn) = (prows.to_string(), pcols.to_string(), pn.to_string());
                        min(
                            &mut b.prompt[p],
                            llama(bin, &[name, &pr, &pc, &pn, &th, "3"], cpu),
                        );
                    }
                    let l3 = l3_rows.to_string();
                    min(&mut b.l3, llama(bin, &[name, &l3, &c, "1", "1", "10"], cpu));
                    continue;
                }
                let pk = match (engine.as_str(), &packs[k]) {
                    ("plain", _) => None,
                    ("packed", Some(p)) => Some(p),
                    ("packed", None) => continue,
                    (other, _) => panic!("unknown path {other}"),
                };
                let big = Matrix {
                    format: f,
                    data: d,
                    rows,
                    cols,
                    packed: pk.map(|p| as_bytes(&p.0)),
                };
                // The first groups of the packed copy are the packed first rows.
                let l3 = Matrix {
                    rows: l3_rows,
                    ..big
                };
                let small = Matrix {
                    format: f,
                    data: d,
                    rows: prows,
                    cols: pcols,
                    packed: pk.map(|p| as_bytes(&p.1)),
                };
                for (p, pool) in pools.iter().enumerate() {
                    let cpu = cpu && p == 0;
                    pool.install(|| {
                        for (ti, input) in inputs.iter().enumerate() {
                            for _ in 0..3 {
                                min(&mut b.decode[p][ti], driver(&big, input, &mut out, cpu));
                            }
                        }
                        for _ in 0..2 {
                            min(&mut b.prompt[p], driver(&small, &prompt_in, &mut out, cpu));
                        }
                    });
                }
                pools[0].install(|| {
                    for _ in 0..10 {
                        min(&mut b.l3, driver(&l3, &inputs[0], &mut out, cpu));
                    }
                });
            }
        }
    }
    let gb = |bytes: f64, s: f64| {
        if s > 0.0 {
            format!("{:.1}", bytes / s / 1e9)
        } else {
            "-".into()
        }
    };
    let mib = (256u64 << 20) as f64;
    println!(
        "read bandwidth (256 MiB, plain sum): 1 thread {} GB/s, {threads} threads {} GB/s",
        gb(mib, s1),
        gb(mib, smt)
    );
    println!(
        "best of {rounds} rounds{}; integer kernels: {}. decode: {rows}x{cols} weights x n tokens \
         (GB/s of weights), L3: {l3_rows}x{cols} x 1 token on 1 thread, prompt: {prows}x{pcols} \
         x {pn} tokens (GMAC/s)",
        if cpu {
            " (1-thread figures in CPU time)"
        } else {
            ""
        },
        if simd::vnni() {
            "AVX512-VNNI"
        } else if simd::avx2() {
            "AVX2"
        } else {
            "portable"
        }
    );
    let ns: Vec<String> = tokens.iter().map(|n| format!("n={n}")).collect();
    let w = 6;
    let head = |th: usize| format!("decode {th}t");
    println!(
        "{:<7}{:<10}{:>6} | {:<width$} | {:<width$} | {:>6} | {:>7} {:>7}",
        "format",
        "path",
        "MiB",
        head(1),
        head(threads),
        "L3 1t",
        "prompt",
        "",
        width = (w + 1) * tokens.len() - 1
    );
    let cols_n = ns
        .iter()
        .map(|n| format!("{n:>w$}"))
        .collect::<Vec<_>>()
        .join(" ");
    println!(
        "{:<7}{:<10}{:>6} | {cols_n} | {cols_n} | {:>6} | {:>7} {:>7}",
        "",
        "",
        "",
        "GB/s",
        "1t",
        format!("{threads}t")
    );
    for (k, &f) in formats.iter().enumerate() {
        let bytes = (rows * cols / f.block_values() * f.block_bytes()) as f64;
        let l3_bytes = bytes * l3_rows as f64 / rows as f64;
        let macs = (prows * pcols * pn) as f64;
        for (e, engine) in engines.iter().enumerate() {
            let b = &best[k][e];
            if b.l3 == 0.0 {
                continue;
            }
            let dec = |p: usize| {
                b.decode[p]
                    .iter()
                    .map(|&s| format!("{:>w$}", gb(bytes, s)))
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            println!(
                "{:<7}{:<10}{:>6.1} | {} | {} | {:>6} | {:>7} {:>7}",
                format!("{f:?}"),
                engine,
                bytes / (1 << 20) as f64,
                dec(0),
                dec(1),
                gb(l3_bytes, b.l3),
                gb(macs, b.prompt[0]),
                gb(macs, b.prompt[1]),
            );
        }
    }
}
