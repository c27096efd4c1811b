//! Typed reads of GGUF metadata, with errors that name the key.

use crate::error::{EngineError, Result};
use candle_core::quantized::gguf_file::{Content, Value};

/// Typed view of a file's metadata.
#[derive(Clone, Copy)]
pub struct Meta<'a>(pub &'a Content);

impl<'a> Meta<'a> {
    /// The raw value.
    pub fn get(&self, key: &str) -> Option<&'a Value> {
        self.0.metadata.get(key)
    }

    /// An unsigned integer (any integer type).
    pub fn usize(&self, key: &str) -> Result<usize> {
        let v = self
            .get(key)
            .ok_or_else(|| EngineError::MissingMetadata(key.into()))?;
        as_u64(v)
            .map(|n| n as usize)
            .ok_or_else(|| EngineError::MissingMetadata(format!("{key} (not an integer)")))
    }

    /// An integer, or `default` when absent.
    pub fn usize_or(&self, key: &str, default: usize) -> Result<usize> {
        match self.get(key) {
            None => Ok(default),
            Some(_) => self.usize(key),
        }
    }

    /// A float (f32 or f64).
    pub fn f32(&self, key: &str) -> Result<f32> {
        match self.get(key) {
            Some(Value::F32(x)) => Ok(*x),
            Some(Value::F64(x)) => Ok(*x as f32),
            Some(_) => Err(EngineError::MissingMetadata(format!("{key} (not a float)"))),
            None => Err(EngineError::MissingMetadata(key.into())),
        }
    }

    /// A float, or `default` when absent.
    pub fn f32_or(&self, key: &str, default: f32) -> Result<f32> {
        match self.get(key) {
            None => Ok(default),
            Some(_) => self.f32(key),
        }
    }

    /// A boolean, or `default` when absent.
    pub fn bool_or(&self, key: &str, default: bool) -> bool {
        match self.get(key) {
            Some(Value::Bool(b)) => *b,
            Some(v) => as_u64(v).map(|n| n != 0).unwrap_or(default),
            None => default,
        }
    }

    /// A string.
    pub fn str(&self, key: &str) -> Result<&'a str> {
        match self.get(key) {
            Some(Value::String(s)) => Ok(s),
            Some(_) => Err(EngineError::MissingMetadata(format!(
                "{key} (not a string)"
            ))),
            None => Err(EngineError::MissingMetadata(key.into())),
        }
    }

    /// An array of integers (e.g. a per-layer setting), if present.
    pub fn usize_array(&self, key: &str) -> Option<Vec<usize>> {
        match self.get(key) {
            Some(Value::Array(a)) => a.iter().map(|v| as_u64(v).map(|n| n as usize)).collect(),
            _ => None,
        }
    }

    /// An array of floats, if present.
    pub fn f32_array(&self, key: &str) -> Option<Vec<f32>> {
        match self.get(key) {
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| match v {
                    Value::F32(x) => Some(*x),
                    Value::F64(x) => Some(*x as f32),
                    _ => None,
                })
                .collect(),
            _ => None,
        }
    }
}

fn as_u64(v: &Value) -> Option<u64> {
    Some(match v {
        Value::U8(x) => *x as u64,
        Value::I8(x) => *x as u64,
        Value::U16(x) => *x as u64,
        Value::I16(x) => *x as u64,
        Value::U32(x) => *x as u64,
        Value::I32(x) => *x as u64,
        Value::U64(x) => *x,
        Value::I64(x) => *x as u64,
        Value::Bool(b) => *b as u64,
        _ => return None,
    })
}
