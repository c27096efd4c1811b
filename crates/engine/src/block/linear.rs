//! A weight matrix as stored in the GGUF file (memory-mapped, never converted), and the
//! products of several matrices with one input.

use crate::error::{EngineError, Result};
use crate::gguf::{GgufFile, TensorRef};
use crate::quant::packed::{self, dispatch_packed};
use crate::quant::{dispatch, matmul, Format, Input, Kernel};
use memmap2::Mmap;
use std::ops::Range;
use std::sync::Arc;

/// Row-major `[rows, cols]` weights in their stored format (mapped from the file), and
/// optionally their first `rows / 8 * 8` rows repacked for the packed kernels.
#[derive(Clone)]
pub struct Linear {
    pub rows: usize,
    pub cols: usize,
    pub format: Format,
    map: Arc<Mmap>,
    range: Range<usize>,
    packed: Option<Packed>,
}

/// Repacked 8-row groups: the buffer, the first group used and how many.
#[derive(Clone)]
struct Packed {
    data: Arc<Vec<u64>>,
    group: usize,
    groups: usize,
}

impl Linear {
    /// The matrix `name` of `f`; a 3-D tensor (experts) is taken as its rows stacked.
    pub fn load(f: &GgufFile, name: &str) -> Result<Linear> {
        let t = f.tensor(name)?;
        Self::from_ref(f, &t)
    }

    fn from_ref(f: &GgufFile, t: &TensorRef) -> Result<Linear> {
        let format = Format::from_ggml(t.dtype).ok_or_else(|| unsupported(&t.name, t.dtype))?;
        let (rows, cols) = match t.dims.as_slice() {
            [c] => (1, *c),
            [r, c] => (*r, *c),
            [e, r, c] => (e * r, *c),
            d => {
                return Err(EngineError::InvalidInput(format!(
                    "{}: expected a matrix, got shape {d:?}",
                    t.name
                )))
            }
        };
        let qk = format.block_values();
        if cols % qk != 0 {
            return Err(EngineError::InvalidInput(format!(
                "{}: {cols} columns is not a multiple of the {format:?} block size {qk}",
                t.name
            )));
        }
        let align = dispatch!(format, K => std::mem::align_of::<<K as Kernel>::W>());
        if !(f.map().as_ptr() as usize + t.range.start).is_multiple_of(align) {
            return Err(EngineError::InvalidInput(format!(
                "{}: tensor data is not aligned in the file",
                t.name
            )));
        }
        f.will_need(&t.range);
        Ok(Linear {
            rows,
            cols,
            format,
            map: f.map().clone(),
            range: t.range.clone(),
            packed: None,
        })
    }

    /// This matrix with its rows repacked for the packed kernels when the format and the
    /// CPU have them (a projection; embeddings only look rows up and stay as they are).
    /// The packed copy replaces the mapped pages in memory.
    pub fn pack(mut self) -> Linear {
        let groups = self.rows / 8;
        if groups == 0 || !packed::available() || !packed::packable(self.format) {
            return self;
        }
        let data = dispatch_packed!(self.format, P => {
            let bpr = self.cols / <P as packed::Packed>::K::QK;
            packed::pack::<P>(blocks(self.data()), bpr, groups)
        });
        if self.rows.is_multiple_of(8) {
            // Nothing reads the mapped rows any more: let the kernel drop them from this
            // process (they stay in the page cache).
            // SAFETY: the range lies within the map; no slice of it is alive here.
            let _ = unsafe {
                self.map.unchecked_advise_range(
                    memmap2::UncheckedAdvice::DontNeed,
                    self.range.start,
                    self.range.len(),
                )
            };
        }
        self.packed = Some(Packed {
            data: Arc::new(data),
            group: 0,
            groups,
        });
        self
    }

    /// The packed bytes of this matrix's 8-row groups, if repacked.
    pub fn packed(&self) -> Option<&[u8]> {
        let p = self.packed.as_ref()?;
        let group_bytes = dispatch_packed!(self.format, P => {
            self.cols / <P as packed::Packed>::K::QK * std::mem::size_of::<<P as packed::Packed>::P>()
        });
        // SAFETY: the buffer holds `p.groups` groups past `p.group`.
        let all =
            unsafe { std::slice::from_raw_parts(p.data.as_ptr() as *const u8, p.data.len() * 8) };
        Some(&all[p.group * group_bytes..(p.group + p.groups) * group_bytes])
    }

    /// The raw blocks.
    pub fn data(&self) -> &[u8] {
        &self.map[self.range.clone()]
    }

    /// Bytes of the stored weights.
    pub fn bytes(&self) -> usize {
        self.range.len()
    }

    /// Rows `r` of this matrix (one expert of a stacked expert tensor).
    pub fn rows(&self, r: Range<usize>) -> Linear {
        let row_bytes = self.range.len() / self.rows;
        let start = self.range.start + r.start * row_bytes;
        let packed = self.packed.as_ref().and_then(|p| {
            (r.start.is_multiple_of(8) && r.end <= p.groups * 8 && r.len() >= 8).then(|| Packed {
                data: p.data.clone(),
                group: p.group + r.start / 8,
                groups: r.len() / 8,
            })
        });
        Linear {
            rows: r.len(),
            cols: self.cols,
            format: self.format,
            map: self.map.clone(),
            range: start..start + r.len() * row_bytes,
            packed,
        }
    }

    /// Writes row `r` as f32 into `out` (embedding lookup).
    pub fn row(&self, r: usize, out: &mut [f32]) {
        let row_bytes = self.range.len() / self.rows;
        let data = &self.data()[r * row_bytes..(r + 1) * row_bytes];
        dispatch!(self.format, K => {
            let n = data.len() / std::mem::size_of::<<K as Kernel>::W>();
            // SAFETY: alignment was checked at load; `data` holds `n` whole blocks.
            let w = unsafe { std::slice::from_raw_parts(data.as_ptr() as *const <K as Kernel>::W, n) };
            K::dequantize(w, out)
        })
    }
}

fn unsupported(tensor: &str, dtype: candle_core::quantized::GgmlDType) -> EngineError {
    EngineError::UnsupportedQuantization {
        tensor: tensor.into(),
        dtype: format!("{dtype:?}"),
    }
}

/// Bytes as blocks of `W` (alignment checked at load).
fn blocks<W>(data: &[u8]) -> &[W] {
    // SAFETY: W is a plain-old-data block type; alignment was checked at load and the
    // length is whole blocks.
    unsafe {
        std::slice::from_raw_parts(
            data.as_ptr() as *const W,
            data.len() / std::mem::size_of::<W>(),
        )
    }
}

/// A 1-D tensor (norm weights, biases) as f32.
pub fn load_vector(f: &GgufFile, name: &str) -> Result<Vec<f32>> {
    let t = f.tensor(name)?;
    let format = Format::from_ggml(t.dtype).ok_or_else(|| unsupported(name, t.dtype))?;
    let n: usize = t.dims.iter().product();
    let bytes = f.bytes(&t);
    let mut out = vec![0f32; n.next_multiple_of(format.block_values())];
    match format {
        Format::F32 => {
            for (o, b) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
        }
        Format::F16 => {
            for (o, b) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = half::f16::from_le_bytes([b[0], b[1]]).to_f32();
            }
        }
        _ => {
            let lin = Linear::from_ref(f, &TensorRef { dims: vec![n], ..t })?;
            lin.row(0, &mut out);
        }
    }
    out.truncate(n);
    Ok(out)
}

/// Computes `out_i = input · W_iᵀ` for matrices sharing one input, in one parallel pass.
/// Each `out_i` is `[n, rows_i]`.
pub fn matmul_many(input: &Input, jobs: &mut [(&Linear, &mut [f32])]) {
    let mut js: Vec<matmul::Job> = jobs
        .iter_mut()
        .map(|(lin, out)| matmul::Job {
            format: lin.format,
            data: lin.data(),
            rows: lin.rows,
            cols: lin.cols,
            packed: lin.packed(),
            out,
        })
        .collect();
    matmul::run(input, &mut js);
}

/// `out = input · Wᵀ` for one matrix.
pub fn matmul(input: &Input, w: &Linear, out: &mut [f32]) {
    matmul_many(input, &mut [(w, out)]);
}
