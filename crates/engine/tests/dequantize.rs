//! The dequantizers against another implementation: random blocks of every weight format
//! with the values the `gguf` Python package (`gguf.quants.dequantize`) gives for them,
//! committed as fixtures by `scripts/dequant-fixtures.py`. The kernel tests compare the
//! SIMD kernels with the engine's own `dequantize`; this keeps a mistake shared by both
//! from hiding. A missing fixture fails the test.

use std::path::PathBuf;

use engine::quant::{
    Kernel, BF16, F16, F32, IQ4_NL, Q2_K, Q3_K, Q4_0, Q4_1, Q4_K, Q5_0, Q5_1, Q5_K, Q6_K, Q8_0,
};

fn fixture(name: &str) -> (PathBuf, Vec<u8>) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/dequantize")
        .join(format!("{name}.bin"));
    let bytes = std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (made by scripts/dequant-fixtures.py)",
            path.display()
        )
    });
    (path, bytes)
}

fn u32_at(b: &[u8], at: usize) -> usize {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap()) as usize
}

/// `K::dequantize` of the fixture's blocks gives the gguf package's values: exactly, or
/// within 2 units in the last place of the block's largest value (the two may round the
/// products of scale and quant in another order).
fn check<K: Kernel>(name: &str) {
    let (path, b) = fixture(name);
    assert_eq!(&b[..4], b"DQF1", "{}: not a fixture", path.display());
    let (block_bytes, block_values, n) = (u32_at(&b, 4), u32_at(&b, 8), u32_at(&b, 12));
    assert_eq!(
        block_bytes,
        std::mem::size_of::<K::W>(),
        "{name}: block size"
    );
    assert_eq!(block_values, K::QK, "{name}: values per block");
    let blocks_at = 16;
    let values_at = blocks_at + n * block_bytes;
    assert_eq!(
        b.len(),
        values_at + n * block_values * 4,
        "{name}: file size"
    );
    let blocks: Vec<K::W> = (0..n)
        .map(|i| {
            let p = b[blocks_at + i * block_bytes..].as_ptr() as *const K::W;
            // SAFETY: `block_bytes` (the block's size) bytes lie at `p`; blocks are plain
            // bytes and f16 fields, valid for every bit pattern.
            unsafe { std::ptr::read_unaligned(p) }
        })
        .collect();
    let want: Vec<f32> = b[values_at..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    let mut got = vec![f32::NAN; n * block_values];
    K::dequantize(&blocks, &mut got);
    for (i, (block_got, block_want)) in got
        .chunks(block_values)
        .zip(want.chunks(block_values))
        .enumerate()
    {
        let top = block_want.iter().fold(0f32, |m, v| m.max(v.abs()));
        let tol = 2.0 * top * f32::EPSILON;
        for (j, (g, w)) in block_got.iter().zip(block_want).enumerate() {
            assert!(
                (g - w).abs() <= tol,
                "{name}: block {i} value {j}: engine {g}, gguf {w}"
            );
        }
    }
}

#[test]
fn q4_0() {
    check::<Q4_0>("Q4_0");
}

#[test]
fn q4_1() {
    check::<Q4_1>("Q4_1");
}

#[test]
fn q5_0() {
    check::<Q5_0>("Q5_0");
}

#[test]
fn q5_1() {
    check::<Q5_1>("Q5_1");
}

#[test]
fn q8_0() {
    check::<Q8_0>("Q8_0");
}

#[test]
fn iq4_nl() {
    check::<IQ4_NL>("IQ4_NL");
}

#[test]
fn q2_k() {
    check::<Q2_K>("Q2_K");
}

#[test]
fn q3_k() {
    check::<Q3_K>("Q3_K");
}

#[test]
fn q4_k() {
    check::<Q4_K>("Q4_K");
}

#[test]
fn q5_k() {
    check::<Q5_K>("Q5_K");
}

#[test]
fn q6_k() {
    check::<Q6_K>("Q6_K");
}

#[test]
fn f32() {
    check::<F32>("F32");
}

#[test]
fn f16() {
    check::<F16>("F16");
}

#[test]
fn bf16() {
    check::<BF16>("BF16");
}
