//! GGUF files: the header (read with candle's reader), the tensor data memory-mapped, and
//! typed access to metadata. A stage touches only the pages of its own tensors.

mod info;
mod meta;
mod scan;

pub use info::ModelInfo;
pub use meta::Meta;

use crate::error::{EngineError, Result};
use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::quantized::GgmlDType;
use memmap2::Mmap;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// An open GGUF file: parsed header, metadata facts and the mapped tensor data.
pub struct GgufFile {
    pub path: PathBuf,
    pub content: Content,
    pub info: ModelInfo,
    map: Arc<Mmap>,
}

/// Where one tensor's data lies in the file, with its type and shape.
#[derive(Debug, Clone)]
pub struct TensorRef {
    pub name: String,
    pub dtype: GgmlDType,
    /// Row-major, outermost first (`[rows, cols]` for a matrix).
    pub dims: Vec<usize>,
    /// Byte range in the file.
    pub range: Range<usize>,
}

/// A GGUF file's parsed header, before its model facts are read and its data mapped:
/// enough to tell which architecture the file holds.
pub struct Header {
    path: PathBuf,
    content: Content,
    file: File,
    file_bytes: u64,
}

impl Header {
    /// Reads the header of the GGUF file at `path`.
    pub fn read(path: &Path) -> Result<Header> {
        if !path.exists() {
            return Err(EngineError::NotFound(path.to_path_buf()));
        }
        let io = |source| EngineError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(io)?;
        let file_bytes = file.metadata().map_err(io)?.len();
        let mut reader = BufReader::new(file);
        let mut magic = [0u8; 4];
        if reader.read_exact(&mut magic).is_err() || &magic != b"GGUF" {
            return Err(EngineError::NotGguf {
                path: path.to_path_buf(),
                reason: "no GGUF magic at the start".into(),
            });
        }
        reader.seek(SeekFrom::Start(0)).map_err(io)?;
        let content = Content::read(&mut reader).map_err(|e| {
            let msg = e.to_string();
            match scan::unknown_tensor_type(path) {
                Some((tensor, id)) => EngineError::UnsupportedQuantization {
                    tensor,
                    dtype: scan::type_name(id),
                },
                None => EngineError::NotGguf {
                    path: path.to_path_buf(),
                    reason: msg,
                },
            }
        })?;
        Ok(Header {
            path: path.to_path_buf(),
            content,
            file: reader.into_inner(),
            file_bytes,
        })
    }

    /// `general.architecture`.
    pub fn architecture(&self) -> Result<&str> {
        Meta(&self.content).str("general.architecture")
    }

    /// Reads the model facts and maps the data (nothing is read yet).
    pub fn open(self) -> Result<GgufFile> {
        let info = ModelInfo::from_content(&self.content, self.file_bytes)?;
        // SAFETY: the file is opened read-only; like llama.cpp we assume nobody truncates
        // a model file while it is being served.
        let map = unsafe { Mmap::map(&self.file) }.map_err(|source| EngineError::Io {
            path: self.path.clone(),
            source,
        })?;
        Ok(GgufFile {
            path: self.path,
            content: self.content,
            info,
            map: Arc::new(map),
        })
    }
}

impl GgufFile {
    /// Opens a GGUF file: reads its header and maps its data (nothing is read yet).
    pub fn open(path: &Path) -> Result<GgufFile> {
        Header::read(path)?.open()
    }

    /// Metadata value by key.
    pub fn meta(&self, key: &str) -> Option<&Value> {
        self.content.metadata.get(key)
    }

    /// Typed metadata access.
    pub fn md(&self) -> Meta<'_> {
        Meta(&self.content)
    }

    /// Whether the file holds a tensor of this name.
    pub fn has(&self, name: &str) -> bool {
        self.content.tensor_infos.contains_key(name)
    }

    /// Location, type and shape of a tensor.
    pub fn tensor(&self, name: &str) -> Result<TensorRef> {
        let info = self
            .content
            .tensor_infos
            .get(name)
            .ok_or_else(|| EngineError::MissingTensor(name.into()))?;
        let mut dims = info.shape.dims().to_vec();
        if dims.is_empty() {
            dims.push(1);
        }
        let size = tensor_bytes(info.ggml_dtype, info.shape.elem_count());
        let start = (self.content.tensor_data_offset + info.offset) as usize;
        if start + size > self.map.len() {
            return Err(EngineError::NotGguf {
                path: self.path.clone(),
                reason: format!("tensor {name} lies beyond the end of the file (truncated?)"),
            });
        }
        Ok(TensorRef {
            name: name.to_string(),
            dtype: info.ggml_dtype,
            dims,
            range: start..start + size,
        })
    }

    /// The bytes of a tensor (mapped: reading them pages them in).
    pub fn bytes(&self, t: &TensorRef) -> &[u8] {
        &self.map[t.range.clone()]
    }

    /// The shared mapping (weights keep it alive).
    pub fn map(&self) -> &Arc<Mmap> {
        &self.map
    }

    /// Tells the kernel we will read this range soon (read-ahead into the page cache).
    pub fn will_need(&self, range: &Range<usize>) {
        let _ = self
            .map
            .advise_range(memmap2::Advice::WillNeed, range.start, range.len());
    }

    /// Size in bytes of a tensor's data, 0 if absent.
    pub fn tensor_size(content: &Content, name: &str) -> u64 {
        content
            .tensor_infos
            .get(name)
            .map(|i| tensor_bytes(i.ggml_dtype, i.shape.elem_count()) as u64)
            .unwrap_or(0)
    }
}

/// Bytes of `elems` values of type `dtype`.
fn tensor_bytes(dtype: GgmlDType, elems: usize) -> usize {
    elems / dtype.block_size() * dtype.type_size()
}
