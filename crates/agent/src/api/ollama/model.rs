//! What `/api/tags`, `/api/show` and `/api/ps` say about the served model: facts read
//! once from its GGUF header, in Ollama's shapes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Map, Value};

use crate::node::state::ModelHandle;

/// Facts of a model file that the handles do not keep.
#[derive(Debug, Default)]
pub struct Facts {
    pub size: u64,
    pub modified: Option<SystemTime>,
    pub parameter_count: u64,
    pub quantization: String,
    /// The chat template's source (`tokenizer.chat_template`).
    pub template: String,
    /// Scalar metadata (arrays as null, as Ollama shows them when not verbose).
    pub model_info: Map<String, Value>,
}

/// The facts of a model file, read on first use (blocking: call off the runtime).
pub fn facts(path: &Path) -> Arc<Facts> {
    static CACHE: OnceLock<Mutex<HashMap<PathBuf, Arc<Facts>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(f) = cache.lock().unwrap_or_else(|p| p.into_inner()).get(path) {
        return f.clone();
    }
    let f = Arc::new(read_facts(path).unwrap_or_else(|e| {
        tracing::warn!("reading {}: {e}", path.display());
        Facts::default()
    }));
    cache
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(path.to_path_buf(), f.clone());
    f
}

fn read_facts(path: &Path) -> Result<Facts, engine::EngineError> {
    let file = engine::GgufFile::open(path)?;
    let c = &file.content;
    let parameter_count: u64 = c
        .tensor_infos
        .values()
        .map(|t| t.shape.elem_count() as u64)
        .sum();
    let mut model_info = Map::new();
    for (k, v) in &c.metadata {
        let value = if k == "tokenizer.chat_template" || v.to_vec().is_ok() {
            Value::Null // arrays (vocabularies) and the template, shown as `template`
        } else if let Ok(s) = v.to_string() {
            json!(s)
        } else {
            debug_scalar(&format!("{v:?}"))
        };
        model_info.insert(k.clone(), value);
    }
    model_info
        .entry("general.parameter_count")
        .or_insert(json!(parameter_count));
    let file_type = c
        .metadata
        .get("general.file_type")
        .and_then(|v| v.to_u64().ok());
    let quantization = match file_type.and_then(file_type_name) {
        Some(n) => n.to_string(),
        // No (known) file type: the type holding the most bytes.
        None => {
            let mut by_type: HashMap<String, u64> = HashMap::new();
            for t in c.tensor_infos.values() {
                *by_type.entry(format!("{:?}", t.ggml_dtype)).or_default() +=
                    t.shape.elem_count() as u64;
            }
            by_type
                .into_iter()
                .max_by_key(|(_, n)| *n)
                .map(|(t, _)| t)
                .unwrap_or_default()
        }
    };
    let template = match c.metadata.get("tokenizer.chat_template") {
        Some(v) => v.to_string().cloned().unwrap_or_default(),
        None => String::new(),
    };
    let meta = std::fs::metadata(path).ok();
    Ok(Facts {
        size: file.info.file_bytes,
        modified: meta.and_then(|m| m.modified().ok()),
        parameter_count,
        quantization,
        template,
        model_info,
    })
}

/// A scalar GGUF metadata value from its Debug form `Variant(value)` (the value type is
/// candle's, not named here).
fn debug_scalar(d: &str) -> Value {
    let inner = d
        .split_once('(')
        .and_then(|(_, r)| r.strip_suffix(')'))
        .unwrap_or("");
    if let Ok(b) = inner.parse::<bool>() {
        json!(b)
    } else if let Ok(n) = inner.parse::<i64>() {
        json!(n)
    } else if let Ok(n) = inner.parse::<u64>() {
        json!(n)
    } else {
        inner
            .parse::<f64>()
            .map(|x| json!(x))
            .unwrap_or(Value::Null)
    }
}

/// llama.cpp's names of `general.file_type`.
fn file_type_name(t: u64) -> Option<&'static str> {
    const NAMES: &[(u64, &str)] = &[
        (0, "F32"),
        (1, "F16"),
        (2, "Q4_0"),
        (3, "Q4_1"),
        (7, "Q8_0"),
        (8, "Q5_0"),
        (9, "Q5_1"),
        (10, "Q2_K"),
        (11, "Q3_K_S"),
        (12, "Q3_K_M"),
        (13, "Q3_K_L"),
        (14, "Q4_K_S"),
        (15, "Q4_K_M"),
        (16, "Q5_K_S"),
        (17, "Q5_K_M"),
        (18, "Q6_K"),
        (19, "IQ2_XXS"),
        (20, "IQ2_XS"),
        (21, "Q2_K_S"),
        (22, "IQ3_XS"),
        (23, "IQ3_XXS"),
        (24, "IQ1_S"),
        (25, "IQ4_NL"),
        (26, "IQ3_S"),
        (27, "IQ3_M"),
        (28, "IQ2_S"),
        (29, "IQ2_M"),
        (30, "IQ4_XS"),
        (31, "IQ1_M"),
        (32, "BF16"),
    ];
    NAMES.iter().find(|(n, _)| *n == t).map(|(_, s)| *s)
}

/// Ollama's spelling of a parameter count: `134.52M`, `7.6B`.
pub fn parameter_size(n: u64) -> String {
    let x = n as f64;
    match n {
        1_000_000_000.. => format!("{:.1}B", x / 1e9),
        1_000_000.. => format!("{:.2}M", x / 1e6),
        1_000.. => format!("{:.0}K", x / 1e3),
        _ => n.to_string(),
    }
}

/// The name Ollama clients know the model by: the id with the `:latest` tag.
pub fn ollama_name(m: &ModelHandle) -> String {
    format!("{}:latest", m.id)
}

/// Whether a requested name means the served model: its id, with `:latest`, or its file
/// name (case-insensitive).
pub fn matches(requested: &str, m: &ModelHandle) -> bool {
    let r = requested.strip_suffix(":latest").unwrap_or(requested);
    let file = m.path.file_name().map(|f| f.to_string_lossy());
    r.eq_ignore_ascii_case(&m.id) || file.is_some_and(|f| r.eq_ignore_ascii_case(&f))
}

/// A stable 64-hex-digit digest of the model id (FNV-1a under four seeds). Not the
/// sha256 of the file that Ollama's digests are: hashing gigabytes per request would
/// be slow, and clients only compare digests.
pub fn digest(id: &str) -> String {
    (0u64..4)
        .map(|seed| {
            let mut h = 0xcbf2_9ce4_8422_2325u64 ^ seed.wrapping_mul(0x9e37_79b9_7f4a_7c15);
            for b in id.bytes() {
                h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
            }
            format!("{h:016x}")
        })
        .collect()
}

/// RFC 3339 in UTC with nanoseconds, as Ollama writes times.
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:09}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_nanos()
    )
}

/// `details` of a model.
pub fn details(m: &ModelHandle, f: &Facts) -> Value {
    json!({
        "parent_model": "",
        "format": "gguf",
        "family": m.info.architecture,
        "families": [m.info.architecture],
        "parameter_size": parameter_size(f.parameter_count),
        "quantization_level": f.quantization,
    })
}

/// The model's entry in `/api/tags` (and, with more fields, `/api/ps`).
pub fn entry(m: &ModelHandle, f: &Facts) -> Value {
    let name = ollama_name(m);
    json!({
        "name": name,
        "model": name,
        "modified_at": rfc3339(f.modified.unwrap_or(UNIX_EPOCH)),
        "size": f.size,
        "digest": digest(&m.id),
        "details": details(m, f),
    })
}

/// `/api/show`'s answer.
pub fn show(m: &ModelHandle, f: &Facts) -> Value {
    let parameters = format!(
        "temperature {}\ntop_k {}\ntop_p {}\nrepeat_penalty {}\nrepeat_last_n {}",
        0.8, 40, 0.9, 1.1, 64
    );
    let modelfile = format!(
        "# Modelfile of {} (served by distributed-llm)\nFROM {}\nTEMPLATE \"\"\"{}\"\"\"\n{}\n",
        ollama_name(m),
        m.path.display(),
        f.template,
        parameters
            .lines()
            .map(|l| format!("PARAMETER {l}"))
            .collect::<Vec<_>>()
            .join("\n"),
    );
    let mut info = f.model_info.clone();
    info.insert("general.architecture".into(), json!(m.info.architecture));
    let arch = &m.info.architecture;
    info.insert(
        format!("{arch}.context_length"),
        json!(m.info.context_length),
    );
    json!({
        "license": "",
        "modelfile": modelfile,
        "parameters": parameters,
        "template": f.template,
        "details": details(m, f),
        "model_info": info,
        "capabilities": ["completion"],
        "modified_at": rfc3339(f.modified.unwrap_or(UNIX_EPOCH)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000000000Z");
        let t = UNIX_EPOCH + std::time::Duration::new(1_709_251_199, 5);
        assert_eq!(rfc3339(t), "2024-02-29T23:59:59.000000005Z");
    }

    #[test]
    fn sizes_and_digests() {
        assert_eq!(parameter_size(134_515_008), "134.52M");
        assert_eq!(parameter_size(7_615_616_512), "7.6B");
        let d = digest("SmolLM2-135M-Instruct.Q4_1");
        assert_eq!(d.len(), 64);
        assert!(d.chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(d, digest("SmolLM2-135M-Instruct.Q4_1"));
        assert_ne!(d, digest("other"));
        assert_eq!(file_type_name(3), Some("Q4_1"));
        assert_eq!(debug_scalar("U32(30)"), json!(30));
        assert_eq!(debug_scalar("Bool(true)"), json!(true));
        assert_eq!(debug_scalar("F32(1e-5)"), json!(1e-5));
    }
}
