//! Weight matrices in their stored quantization and parallel matrix-vector products.

use crate::error::{EngineError, Result};
use crate::quant::{
    blocks_from_bytes, dequantize_q4_0, dequantize_q4_1, dequantize_q8_0, quantize_acts, ActBlock,
    BlockQ4_0, BlockQ4_1, BlockQ8_0, VecDot, QK,
};
use candle_core::quantized::ggml_file::qtensor_from_ggml;
use candle_core::quantized::{GgmlDType, QMatMul};
use candle_core::{Device, Module, Tensor};
use rayon::prelude::*;

/// Row-major `[rows, cols]` weights, kept in the file's quantization.
pub enum Matrix {
    Q4_0(Vec<BlockQ4_0>),
    Q4_1(Vec<BlockQ4_1>),
    Q8_0(Vec<BlockQ8_0>),
    F32(Vec<f32>),
    /// Any other ggml type candle supports (K-quants, ...), through candle's kernels.
    Candle(QMatMul),
}

/// A weight matrix with its shape.
pub struct Linear {
    pub rows: usize,
    pub cols: usize,
    pub w: Matrix,
}

impl Linear {
    /// Builds a matrix from a tensor's raw GGUF bytes; `dims` is `[rows, cols]`.
    pub fn from_raw(
        name: &str,
        bytes: Vec<u8>,
        dtype: GgmlDType,
        dims: &[usize],
    ) -> Result<Linear> {
        let (rows, cols) = match dims {
            [r, c] => (*r, *c),
            _ => {
                return Err(EngineError::InvalidInput(format!(
                    "{name}: expected a matrix, got {dims:?}"
                )))
            }
        };
        let w = match dtype {
            GgmlDType::Q4_0 => Matrix::Q4_0(blocks_from_bytes(&bytes)),
            GgmlDType::Q4_1 => Matrix::Q4_1(blocks_from_bytes(&bytes)),
            GgmlDType::Q8_0 => Matrix::Q8_0(blocks_from_bytes(&bytes)),
            GgmlDType::F32 => Matrix::F32(f32_from_bytes(&bytes)),
            GgmlDType::F16 => Matrix::F32(
                bytes
                    .chunks_exact(2)
                    .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                    .collect(),
            ),
            GgmlDType::Q2K
            | GgmlDType::Q3K
            | GgmlDType::Q4K
            | GgmlDType::Q5K
            | GgmlDType::Q6K
            | GgmlDType::Q5_0
            | GgmlDType::Q5_1
            | GgmlDType::BF16 => {
                let qt = qtensor_from_ggml(dtype, &bytes, vec![rows, cols], &Device::Cpu)?;
                Matrix::Candle(QMatMul::from_qtensor(qt)?)
            }
            other => {
                return Err(EngineError::UnsupportedQuantization {
                    tensor: name.into(),
                    dtype: format!("{other:?}"),
                })
            }
        };
        if cols % QK != 0 && !matches!(w, Matrix::F32(_)) {
            return Err(EngineError::InvalidInput(format!(
                "{name}: {cols} columns is not a multiple of {QK}"
            )));
        }
        Ok(Linear { rows, cols, w })
    }

    /// Writes row `r` as f32 into `out` (embedding lookup).
    pub fn row(&self, r: usize, out: &mut [f32]) -> Result<()> {
        let bpr = self.cols / QK;
        match &self.w {
            Matrix::Q8_0(b) => dequantize_q8_0(&b[r * bpr..(r + 1) * bpr], out),
            Matrix::Q4_0(b) => dequantize_q4_0(&b[r * bpr..(r + 1) * bpr], out),
            Matrix::Q4_1(b) => dequantize_q4_1(&b[r * bpr..(r + 1) * bpr], out),
            Matrix::F32(v) => out.copy_from_slice(&v[r * self.cols..(r + 1) * self.cols]),
            Matrix::Candle(m) => {
                let QMatMul::QTensor(t) = m else {
                    return Err(EngineError::InvalidInput(
                        "embedding is not quantized".into(),
                    ));
                };
                let ids = Tensor::new(&[r as u32], &Device::Cpu)?;
                let row = t.embedding(&ids)?.flatten_all()?.to_vec1::<f32>()?;
                out.copy_from_slice(&row);
            }
        }
        Ok(())
    }

    /// Bytes of the stored weights.
    pub fn bytes(&self) -> usize {
        match &self.w {
            Matrix::Q4_0(b) => b.len() * std::mem::size_of::<BlockQ4_0>(),
            Matrix::Q4_1(b) => b.len() * std::mem::size_of::<BlockQ4_1>(),
            Matrix::Q8_0(b) => b.len() * std::mem::size_of::<BlockQ8_0>(),
            Matrix::F32(v) => v.len() * 4,
            Matrix::Candle(_) => self.rows * self.cols / 2,
        }
    }
}

/// Reads little-endian f32 values.
pub fn f32_from_bytes(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

/// An input batch `[n, cols]` in f32 and (lazily) as quantized activations.
pub struct Input<'a> {
    pub x: &'a [f32],
    pub n: usize,
    q: Vec<ActBlock>,
}

impl<'a> Input<'a> {
    pub fn new(x: &'a [f32], n: usize) -> Self {
        let mut q = Vec::new();
        quantize_acts(x, &mut q);
        Input { x, n, q }
    }
}

/// Computes `out_i = input · W_iᵀ` for several matrices sharing one input, in one parallel
/// pass over row chunks of all of them. Each `out_i` is `[n, rows_i]`.
pub fn matmul_many(input: &Input, jobs: &mut [(&Linear, &mut [f32])]) -> Result<()> {
    let n = input.n;
    // Candle-backed matrices run on their own (candle parallelises internally).
    for (lin, out) in jobs.iter_mut() {
        if let Matrix::Candle(m) = &lin.w {
            let x = Tensor::from_slice(input.x, (n, lin.cols), &Device::Cpu)?;
            let y = m.forward(&x)?.flatten_all()?.to_vec1::<f32>()?;
            out.copy_from_slice(&y);
        }
    }
    let threads = rayon::current_num_threads().max(1);
    let mut tasks = Vec::new();
    for (j, (lin, out)) in jobs.iter().enumerate() {
        if matches!(lin.w, Matrix::Candle(_)) {
            continue;
        }
        debug_assert_eq!(out.len(), n * lin.rows);
        let chunk = (lin.rows / (threads * 4)).clamp(8, 512);
        let mut r = 0;
        while r < lin.rows {
            let e = (r + chunk).min(lin.rows);
            tasks.push((j, r, e));
            r = e;
        }
    }
    let outs: Vec<SendPtr> = jobs
        .iter_mut()
        .map(|(_, o)| SendPtr(o.as_mut_ptr()))
        .collect();
    let run = |&(j, r0, r1): &(usize, usize, usize)| {
        let lin = jobs[j].0;
        let out = outs[j];
        for r in r0..r1 {
            let mut t = 0;
            // SAFETY (both writes): every (t, r) pair is written by exactly one task, and
            // the buffer outlives this parallel section.
            while t + 4 <= n {
                for (k, v) in dot_row4(lin, r, t, input).into_iter().enumerate() {
                    unsafe { *out.0.add((t + k) * lin.rows + r) = v };
                }
                t += 4;
            }
            for t in t..n {
                let v = dot_row(lin, r, t, input);
                unsafe { *out.0.add(t * lin.rows + r) = v };
            }
        }
    };
    if tasks.len() == 1 || n * tasks.len() < 4 {
        tasks.iter().for_each(run);
    } else {
        tasks.par_iter().for_each(run);
    }
    Ok(())
}

#[derive(Clone, Copy)]
struct SendPtr(*mut f32);
// SAFETY: used only for disjoint writes inside `matmul_many`.
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

/// Row `r` against tokens `t..t + 4`.
#[inline]
fn dot_row4(lin: &Linear, r: usize, t: usize, input: &Input) -> [f32; 4] {
    let bpr = lin.cols / QK;
    let a: [&[ActBlock]; 4] = std::array::from_fn(|k| &input.q[(t + k) * bpr..(t + k + 1) * bpr]);
    match &lin.w {
        Matrix::Q4_1(b) => BlockQ4_1::dot4(&b[r * bpr..(r + 1) * bpr], a),
        Matrix::Q8_0(b) => BlockQ8_0::dot4(&b[r * bpr..(r + 1) * bpr], a),
        _ => std::array::from_fn(|k| dot_row(lin, r, t + k, input)),
    }
}

#[inline]
fn dot_row(lin: &Linear, r: usize, t: usize, input: &Input) -> f32 {
    let bpr = lin.cols / QK;
    let a = &input.q[t * bpr..(t + 1) * bpr];
    match &lin.w {
        Matrix::Q4_1(b) => BlockQ4_1::dot(&b[r * bpr..(r + 1) * bpr], a),
        Matrix::Q4_0(b) => BlockQ4_0::dot(&b[r * bpr..(r + 1) * bpr], a),
        Matrix::Q8_0(b) => BlockQ8_0::dot(&b[r * bpr..(r + 1) * bpr], a),
        Matrix::F32(w) => {
            let row = &w[r * lin.cols..(r + 1) * lin.cols];
            let x = &input.x[t * lin.cols..(t + 1) * lin.cols];
            crate::ops::dot(row, x)
        }
        Matrix::Candle(_) => unreachable!("handled before the parallel pass"),
    }
}
