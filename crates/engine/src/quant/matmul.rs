//! Parallel matrix products over any weight format: the rows of one or more matrices are
//! cut into chunks that the compute pool runs at once; inside a chunk, tiles of rows ×
//! tokens go to the format's kernel: packed 8-row groups × up to 8 tokens (4 without
//! VNNI) where the weights were repacked ([`super::packed`]), else 4 rows × all tokens when decoding
//! 1 to 3 tokens (each weight block unpacked once for them) and 2 (or the kernel's
//! [`Kernel::prompt_rows`]) rows × 4 tokens over blocks of tokens when processing a prompt.

use super::packed::{dispatch_packed, Packed};
use super::{dispatch, Act, Format, Input, Kernel};
use rayon::prelude::*;
use std::ops::Range;

/// One product `out[t * rows + r] = input[t] · W[r]` to compute.
pub struct Job<'a> {
    pub format: Format,
    /// The weight blocks, row after row.
    pub data: &'a [u8],
    pub rows: usize,
    pub cols: usize,
    /// The first `rows / 8 * 8` rows repacked in 8-row groups, if they were.
    pub packed: Option<&'a [u8]>,
    pub out: &'a mut [f32],
}

/// Tokens per block of a prompt (their activations stay in L2 while a chunk of weight
/// rows is swept over them).
const TOKEN_BLOCK: usize = 64;

/// Runs all jobs (which share `input`) in one parallel pass.
pub fn run(input: &Input, jobs: &mut [Job]) {
    let n = input.n;
    let threads = rayon::current_num_threads().max(1);
    let mut tasks: Vec<(usize, Range<usize>)> = Vec::new();
    let mut work = 0usize;
    for (j, job) in jobs.iter().enumerate() {
        debug_assert_eq!(job.out.len(), n * job.rows);
        debug_assert_eq!(job.cols, input.cols);
        work += job.rows * job.cols * n;
        let chunk = (job.rows / (threads * 4))
            .next_multiple_of(8)
            .clamp(16, 1024);
        let mut r = 0;
        while r < job.rows {
            let e = (r + chunk).min(job.rows);
            tasks.push((j, r..e));
            r = e;
        }
    }
    let outs: Vec<SendPtr> = jobs
        .iter_mut()
        .map(|j| SendPtr(j.out.as_mut_ptr()))
        .collect();
    let jobs = &*jobs;
    let one = |(j, rows): &(usize, Range<usize>)| {
        let job = &jobs[*j];
        let mut rows = rows.clone();
        if let Some(packed) = job.packed {
            let end = rows.end.min(job.rows / 8 * 8);
            if rows.start < end {
                dispatch_packed!(job.format, P => sweep_packed::<P>(job, packed, rows.start..end, input, outs[*j]));
                rows.start = end;
            }
        }
        if !rows.is_empty() {
            dispatch!(job.format, K => sweep::<K>(job, rows, input, outs[*j]))
        }
    };
    if tasks.len() == 1 || work < 1 << 16 {
        tasks.iter().for_each(one);
    } else {
        tasks.par_iter().for_each(one);
    }
}

#[derive(Clone, Copy)]
struct SendPtr(*mut f32);
// SAFETY: every task writes a disjoint set of (token, row) cells of a buffer that
// outlives the parallel section.
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

/// Blocks of `data` as `W` (alignment checked when the weights were loaded).
fn blocks<W>(data: &[u8]) -> &[W] {
    let size = std::mem::size_of::<W>();
    debug_assert_eq!(data.len() % size, 0);
    debug_assert_eq!(data.as_ptr() as usize % std::mem::align_of::<W>(), 0);
    // SAFETY: W is a plain-old-data block type; length and alignment checked above (and
    // at load time in release builds).
    unsafe { std::slice::from_raw_parts(data.as_ptr() as *const W, data.len() / size) }
}

/// Computes rows `rows` of one job for every token.
fn sweep<K: Kernel>(job: &Job, rows: Range<usize>, input: &Input, out: SendPtr) {
    let bpr = job.cols / K::QK;
    let w: &[K::W] = blocks(job.data);
    let a: &[K::A] = <K::A as Act>::of(input);
    let n = input.n;
    let row = |r: usize| &w[r * bpr..(r + 1) * bpr];
    let act = |t: usize| &a[t * bpr..(t + 1) * bpr];
    let stride = job.rows;
    // SAFETY: (t, r) lies within the job's output and belongs to this task alone.
    let put = |r: usize, t: usize, v: f32| unsafe { *out.0.add(t * stride + r) = v };
    match n {
        1 => decode::<K, 1>(rows, row, |t| act(t), put),
        2 => decode::<K, 2>(rows, row, |t| act(t), put),
        3 => decode::<K, 3>(rows, row, |t| act(t), put),
        _ if K::prompt_rows() == 4 => prompt::<K, 4>(rows, n, row, |t| act(t), put),
        _ => prompt::<K, 2>(rows, n, row, |t| act(t), put),
    }
}

/// Writes tile `o` of rows `r..` × tokens `t..` with `put`.
#[inline(always)]
fn store<const R: usize, const T: usize>(
    o: [[f32; T]; R],
    r: usize,
    t: usize,
    put: &impl Fn(usize, usize, f32),
) {
    for (i, vs) in o.iter().enumerate() {
        for (k, v) in vs.iter().enumerate() {
            put(r + i, t + k, *v);
        }
    }
}

/// Rows `rows` × `T` tokens (1 to 3): 4 rows × all tokens per kernel call.
#[inline(always)]
fn decode<'w, 'a, K: Kernel, const T: usize>(
    rows: Range<usize>,
    row: impl Fn(usize) -> &'w [K::W],
    act: impl Fn(usize) -> &'a [K::A],
    put: impl Fn(usize, usize, f32),
) {
    let a: [&[K::A]; T] = std::array::from_fn(&act);
    let mut r = rows.start;
    while r + 4 <= rows.end {
        let o = K::tile::<4, T>([row(r), row(r + 1), row(r + 2), row(r + 3)], a);
        store(o, r, 0, &put);
        r += 4;
    }
    for r in r..rows.end {
        store(K::tile::<1, T>([row(r)], a), r, 0, &put);
    }
}

/// Rows `rows` × `n` tokens (4 or more), over blocks of [`TOKEN_BLOCK`] tokens: `RR` rows
/// × 4 tokens per kernel call, the last 1 to 3 tokens of a block in one call.
#[inline(always)]
fn prompt<'w, 'a, K: Kernel, const RR: usize>(
    rows: Range<usize>,
    n: usize,
    row: impl Fn(usize) -> &'w [K::W],
    act: impl Fn(usize) -> &'a [K::A],
    put: impl Fn(usize, usize, f32),
) {
    for tb in (0..n).step_by(TOKEN_BLOCK) {
        let te = (tb + TOKEN_BLOCK).min(n);
        let mut r = rows.start;
        while r + RR <= rows.end {
            let w: [&[K::W]; RR] = std::array::from_fn(|i| row(r + i));
            let mut t = tb;
            while t + 4 <= te {
                let o = K::tile::<RR, 4>(w, [act(t), act(t + 1), act(t + 2), act(t + 3)]);
                store(o, r, t, &put);
                t += 4;
            }
            match te - t {
                0 => {}
                1 => store(K::tile::<RR, 1>(w, [act(t)]), r, t, &put),
                2 => store(K::tile::<RR, 2>(w, [act(t), act(t + 1)]), r, t, &put),
                _ => store(
                    K::tile::<RR, 3>(w, [act(t), act(t + 1), act(t + 2)]),
                    r,
                    t,
                    &put,
                ),
            }
            r += RR;
        }
        for r in r..rows.end {
            let w = [row(r)];
            let mut t = tb;
            while t + 4 <= te {
                let o = K::tile::<1, 4>(w, [act(t), act(t + 1), act(t + 2), act(t + 3)]);
                store(o, r, t, &put);
                t += 4;
            }
            for t in t..te {
                store(K::tile::<1, 1>(w, [act(t)]), r, t, &put);
            }
        }
    }
}

/// Computes rows `rows` (whole 8-row groups) of one job from its packed weights.
fn sweep_packed<P: Packed>(
    job: &Job,
    packed: &[u8],
    rows: Range<usize>,
    input: &Input,
    out: SendPtr,
) {
    let bpr = job.cols / P::K::QK;
    let w: &[P::P] = blocks(packed);
    let a: &[<P::K as Kernel>::A] = <<P::K as Kernel>::A as Act>::of(input);
    let n = input.n;
    let act = |t: usize| &a[t * bpr..(t + 1) * bpr];
    let stride = job.rows;
    // SAFETY: (t, r) lies within the job's output and belongs to this task alone.
    let put = |r: usize, t: usize, v: &[f32; 8]| unsafe {
        for (k, x) in v.iter().enumerate() {
            *out.0.add(t * stride + r + k) = *x;
        }
    };
    debug_assert!(rows.start.is_multiple_of(8) && rows.end.is_multiple_of(8));
    // 8 tokens a call where VNNI's 32 registers hold their accumulators (measured: prompts
    // ~10-20% faster than 4 a call; with AVX2's 16 registers, no faster).
    let eight = super::simd::vnni();
    for g in rows.start / 8..rows.end / 8 {
        let wg = &w[g * bpr..(g + 1) * bpr];
        let mut t = 0;
        while eight && t + 8 <= n {
            let a8 = [
                act(t),
                act(t + 1),
                act(t + 2),
                act(t + 3),
                act(t + 4),
                act(t + 5),
                act(t + 6),
                act(t + 7),
            ];
            for (k, v) in P::tile::<8>(wg, a8).iter().enumerate() {
                put(g * 8, t + k, v);
            }
            t += 8;
        }
        while t + 4 <= n {
            let o = P::tile::<4>(wg, [act(t), act(t + 1), act(t + 2), act(t + 3)]);
            for (k, v) in o.iter().enumerate() {
                put(g * 8, t + k, v);
            }
            t += 4;
        }
        // The last 1 to 3 tokens in one call: each block unpacked once for all of them.
        let o: &[[f32; 8]] = match n - t {
            0 => &[],
            1 => &P::tile::<1>(wg, [act(t)]),
            2 => &P::tile::<2>(wg, [act(t), act(t + 1)]),
            _ => &P::tile::<3>(wg, [act(t), act(t + 1), act(t + 2)]),
        };
        for (k, v) in o.iter().enumerate() {
            put(g * 8, t + k, v);
        }
    }
}
