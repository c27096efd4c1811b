//! Typed reads of GGUF metadata values (lenient about the integer width a writer chose).

use crate::error::{EngineError, Result};
use candle_core::quantized::gguf_file::Value;

/// A metadata lookup: key -> value.
pub(super) type Meta<'a> = &'a dyn Fn(&str) -> Option<&'a Value>;

fn int(v: &Value) -> Option<i64> {
    Some(match v {
        Value::U8(x) => *x as i64,
        Value::I8(x) => *x as i64,
        Value::U16(x) => *x as i64,
        Value::I16(x) => *x as i64,
        Value::U32(x) => *x as i64,
        Value::I32(x) => *x as i64,
        Value::U64(x) => *x as i64,
        Value::I64(x) => *x,
        Value::Bool(b) => *b as i64,
        _ => return None,
    })
}

fn float(v: &Value) -> Option<f32> {
    match v {
        Value::F32(x) => Some(*x),
        Value::F64(x) => Some(*x as f32),
        _ => int(v).map(|i| i as f32),
    }
}

/// A string value.
pub(super) fn string(meta: Meta, key: &str) -> Option<String> {
    match meta(key) {
        Some(Value::String(s)) => Some(s.clone()),
        _ => None,
    }
}

/// A token id (`None` when absent or negative).
pub(super) fn id(meta: Meta, key: &str) -> Option<u32> {
    meta(key).and_then(int).and_then(|i| u32::try_from(i).ok())
}

/// A boolean flag.
pub(super) fn flag(meta: Meta, key: &str) -> Option<bool> {
    match meta(key) {
        Some(Value::Bool(b)) => Some(*b),
        Some(v) => int(v).map(|i| i != 0),
        None => None,
    }
}

/// A required array of strings.
pub(super) fn strings(meta: Meta, key: &str) -> Result<Vec<String>> {
    match meta(key) {
        Some(Value::Array(a)) => a
            .iter()
            .map(|x| match x {
                Value::String(s) => Ok(s.clone()),
                _ => Err(EngineError::Tokenizer(format!("{key} holds a non-string"))),
            })
            .collect(),
        Some(_) => Err(EngineError::Tokenizer(format!("{key} is not an array"))),
        None => Err(EngineError::MissingMetadata(key.into())),
    }
}

/// An optional numeric array as f32 (token scores).
pub(super) fn floats(meta: Meta, key: &str) -> Option<Vec<f32>> {
    match meta(key) {
        Some(Value::Array(a)) => Some(a.iter().map(|v| float(v).unwrap_or(0.0)).collect()),
        _ => None,
    }
}

/// An optional integer array (token types).
pub(super) fn ints(meta: Meta, key: &str) -> Option<Vec<i64>> {
    match meta(key) {
        Some(Value::Array(a)) => Some(a.iter().map(|v| int(v).unwrap_or(0)).collect()),
        _ => None,
    }
}
