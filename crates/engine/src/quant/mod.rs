//! Weight formats, one file each, behind one trait ([`Kernel`]), so that a projection
//! never knows how its weights are stored.
//!
//! Weights stay in their GGUF layout, or, for the projections of the integer formats,
//! are repacked at load into 8-row interleaved groups ([`packed`]); the same bits either
//! way. Activations are quantized per row to the 8-bit blocks the integer kernels take
//! (or rounded to bf16 for BF16 weights, [`act`]). AVX2/FMA/F16C kernels are chosen at run
//! time (with AVX512-VNNI's `vpdpbusd` and AVX512-BF16's `vdpbf16ps` where present, giving
//! the same results), with portable fallbacks. Every kernel computes each output with the
//! same operations whatever tile it falls in, so results never depend on the batch.

pub mod act;
mod bf16;
mod f16;
mod f32;
mod iq4_nl;
pub mod matmul;
pub mod packed;
mod q2_k;
mod q3_k;
mod q4_0;
mod q4_1;
mod q4_k;
mod q5_0;
mod q5_1;
mod q5_k;
mod q6_k;
mod q8_0;
pub mod simd;

pub use act::{Act, BF16x8, F32x8, Input, Q8Block, Q8KBlock};
pub use bf16::{BlockBF16, BF16};
pub use f16::{BlockF16, F16};
pub use f32::{BlockF32, F32};
pub use iq4_nl::{BlockIQ4_NL, IQ4_NL};
pub use q2_k::{BlockQ2_K, Q2_K};
pub use q3_k::{BlockQ3_K, Q3_K};
pub use q4_0::{BlockQ4_0, Q4_0};
pub use q4_1::{BlockQ4_1, Q4_1};
pub use q4_k::{BlockQ4_K, Q4_K};
pub use q5_0::{BlockQ5_0, Q5_0};
pub use q5_1::{BlockQ5_1, Q5_1};
pub use q5_k::{BlockQ5_K, Q5_K};
pub use q6_k::{BlockQ6_K, Q6_K};
pub use q8_0::{BlockQ8_0, Q8_0};

use candle_core::quantized::GgmlDType;

/// A weight format: its stored block, the activations it takes and its kernels.
pub trait Kernel: 'static {
    /// One block of weights, byte for byte as stored in GGUF.
    type W: Copy + Send + Sync + 'static;
    /// The activation blocks the kernel multiplies the weights with.
    type A: Act;
    /// Values per block (weights and activations alike).
    const QK: usize;

    /// Dot products of `R` weight rows with `T` activation rows (all of equal length).
    /// Each result is computed by the same operations whatever `R` and `T` are.
    fn tile<const R: usize, const T: usize>(
        w: [&[Self::W]; R],
        a: [&[Self::A]; T],
    ) -> [[f32; T]; R];

    /// Writes the values of a row of blocks into `out` (`blocks * QK` values).
    fn dequantize(w: &[Self::W], out: &mut [f32]);

    /// Rows per tile when processing a prompt (tiles of rows × 4 tokens): 2 or 4 (for
    /// kernels with registers to spare on this CPU).
    #[inline]
    fn prompt_rows() -> usize {
        2
    }
}

/// The weight formats this engine runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Format {
    F32,
    F16,
    BF16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    #[allow(non_camel_case_types)]
    Q4_K,
    #[allow(non_camel_case_types)]
    Q5_K,
    #[allow(non_camel_case_types)]
    Q6_K,
    #[allow(non_camel_case_types)]
    Q2_K,
    #[allow(non_camel_case_types)]
    Q3_K,
    /// Not in candle's GGUF reader's types yet, so never returned by `from_ggml`.
    #[allow(non_camel_case_types)]
    IQ4_NL,
}

/// The formats, as named in errors.
pub const SUPPORTED: &str =
    "F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K";

impl Format {
    /// The format of a GGUF tensor type, if this engine runs it.
    pub fn from_ggml(d: GgmlDType) -> Option<Format> {
        Some(match d {
            GgmlDType::F32 => Format::F32,
            GgmlDType::F16 => Format::F16,
            GgmlDType::BF16 => Format::BF16,
            GgmlDType::Q4_0 => Format::Q4_0,
            GgmlDType::Q4_1 => Format::Q4_1,
            GgmlDType::Q5_0 => Format::Q5_0,
            GgmlDType::Q5_1 => Format::Q5_1,
            GgmlDType::Q8_0 => Format::Q8_0,
            GgmlDType::Q4K => Format::Q4_K,
            GgmlDType::Q5K => Format::Q5_K,
            GgmlDType::Q6K => Format::Q6_K,
            GgmlDType::Q2K => Format::Q2_K,
            GgmlDType::Q3K => Format::Q3_K,
            _ => return None,
        })
    }

    /// Values per block.
    pub fn block_values(self) -> usize {
        dispatch!(self, K => K::QK)
    }

    /// Bytes per block.
    pub fn block_bytes(self) -> usize {
        dispatch!(self, K => std::mem::size_of::<<K as Kernel>::W>())
    }
}

/// Runs `$body` with `$K` bound to the kernel type of format `$f`.
macro_rules! dispatch {
    ($f:expr, $K:ident => $body:expr) => {{
        use $crate::quant::Format as Fm;
        match $f {
            Fm::F32 => {
                type $K = $crate::quant::F32;
                $body
            }
            Fm::F16 => {
                type $K = $crate::quant::F16;
                $body
            }
            Fm::BF16 => {
                type $K = $crate::quant::BF16;
                $body
            }
            Fm::Q4_0 => {
                type $K = $crate::quant::Q4_0;
                $body
            }
            Fm::Q4_1 => {
                type $K = $crate::quant::Q4_1;
                $body
            }
            Fm::Q5_0 => {
                type $K = $crate::quant::Q5_0;
                $body
            }
            Fm::Q5_1 => {
                type $K = $crate::quant::Q5_1;
                $body
            }
            Fm::Q8_0 => {
                type $K = $crate::quant::Q8_0;
                $body
            }
            Fm::Q4_K => {
                type $K = $crate::quant::Q4_K;
                $body
            }
            Fm::Q5_K => {
                type $K = $crate::quant::Q5_K;
                $body
            }
            Fm::Q6_K => {
                type $K = $crate::quant::Q6_K;
                $body
            }
            Fm::Q2_K => {
                type $K = $crate::quant::Q2_K;
                $body
            }
            Fm::Q3_K => {
                type $K = $crate::quant::Q3_K;
                $body
            }
            Fm::IQ4_NL => {
                type $K = $crate::quant::IQ4_NL;
                $body
            }
        }
    }};
}
pub(crate) use dispatch;

/// Portable tile: each result is `dot(row, act)` summed block by block.
#[inline(always)]
pub(crate) fn portable_tile<W, A, const R: usize, const T: usize>(
    w: [&[W]; R],
    a: [&[A]; T],
    dot: impl Fn(&W, &A) -> f32,
) -> [[f32; T]; R] {
    std::array::from_fn(|r| {
        std::array::from_fn(|t| w[r].iter().zip(a[t]).map(|(w, a)| dot(w, a)).sum())
    })
}

#[cfg(test)]
pub(crate) mod testing;
