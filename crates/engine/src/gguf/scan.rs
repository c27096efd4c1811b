//! A minimal walk over a GGUF header, used only to explain a failure of the real reader:
//! which tensor has a type it does not know.

use std::io::{BufReader, Read};
use std::path::Path;

/// The first tensor whose ggml type id is not one candle's reader knows, if any.
pub fn unknown_tensor_type(path: &Path) -> Option<(String, u32)> {
    let mut r = BufReader::new(std::fs::File::open(path).ok()?);
    let mut magic = [0u8; 4];
    r.read_exact(&mut magic).ok()?;
    let version = u32v(&mut r)?;
    let wide = version >= 2;
    let count = |r: &mut BufReader<std::fs::File>| {
        if wide {
            u64v(r)
        } else {
            u32v(r).map(u64::from)
        }
    };
    let n_tensors = count(&mut r)?;
    let n_kv = count(&mut r)?;
    for _ in 0..n_kv {
        string(&mut r, wide)?;
        let t = u32v(&mut r)?;
        skip_value(&mut r, t, wide)?;
    }
    for _ in 0..n_tensors {
        let name = string(&mut r, wide)?;
        let n_dims = u32v(&mut r)?;
        for _ in 0..n_dims {
            count(&mut r)?;
        }
        let ty = u32v(&mut r)?;
        u64v(&mut r)?;
        if !matches!(ty, 0..=3 | 6..=15 | 30) {
            return Some((name, ty));
        }
    }
    None
}

/// ggml's name of a type id.
pub fn type_name(id: u32) -> String {
    let names = [
        "F32",
        "F16",
        "Q4_0",
        "Q4_1",
        "Q4_2",
        "Q4_3",
        "Q5_0",
        "Q5_1",
        "Q8_0",
        "Q8_1",
        "Q2_K",
        "Q3_K",
        "Q4_K",
        "Q5_K",
        "Q6_K",
        "Q8_K",
        "IQ2_XXS",
        "IQ2_XS",
        "IQ3_XXS",
        "IQ1_S",
        "IQ4_NL",
        "IQ3_S",
        "IQ2_S",
        "IQ4_XS",
        "I8",
        "I16",
        "I32",
        "I64",
        "F64",
        "IQ1_M",
        "BF16",
        "Q4_0_4_4",
        "Q4_0_4_8",
        "Q4_0_8_8",
        "TQ1_0",
        "TQ2_0",
        "IQ4_NL_4_4",
        "IQ4_NL_4_8",
        "IQ4_NL_8_8",
        "MXFP4",
    ];
    names
        .get(id as usize)
        .map(|s| s.to_string())
        .unwrap_or_else(|| format!("type {id}"))
}

fn u32v(r: &mut impl Read) -> Option<u32> {
    let mut b = [0u8; 4];
    r.read_exact(&mut b).ok()?;
    Some(u32::from_le_bytes(b))
}

fn u64v(r: &mut impl Read) -> Option<u64> {
    let mut b = [0u8; 8];
    r.read_exact(&mut b).ok()?;
    Some(u64::from_le_bytes(b))
}

fn skip(r: &mut impl Read, n: u64) -> Option<()> {
    (std::io::copy(&mut r.take(n), &mut std::io::sink()).ok()? == n).then_some(())
}

fn string(r: &mut impl Read, wide: bool) -> Option<String> {
    let n = if wide { u64v(r)? } else { u32v(r)? as u64 };
    if n > 1 << 20 {
        return None;
    }
    let mut b = vec![0u8; n as usize];
    r.read_exact(&mut b).ok()?;
    Some(String::from_utf8_lossy(&b).into_owned())
}

fn skip_value(r: &mut impl Read, t: u32, wide: bool) -> Option<()> {
    match t {
        0 | 1 | 7 => skip(r, 1),
        2 | 3 => skip(r, 2),
        4..=6 => skip(r, 4),
        10..=12 => skip(r, 8),
        8 => string(r, wide).map(|_| ()),
        9 => {
            let et = u32v(r)?;
            let n = if wide { u64v(r)? } else { u32v(r)? as u64 };
            for _ in 0..n {
                skip_value(r, et, wide)?;
            }
            Some(())
        }
        _ => None,
    }
}
