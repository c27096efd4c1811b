//! `POST /v1/embeddings` (OpenAI-compatible): vectors pooled from the model's final
//! hidden states, computed through the pipeline like a prompt (see
//! [`Serving::embed`](crate::serving::Serving::embed)).
//!
//! Pooling is the model's own (`{arch}.pooling_type` in its GGUF, as embedding models
//! converted for llama.cpp carry it); a model without one (a generative model) is pooled
//! on its last token, as vLLM does. Vectors are L2-normalized, as OpenAI's are.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use axum::extract::State;
use axum::routing::post;
use axum::Json;
use engine::Pooling;
use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::api::core::{ApiError, ApiRoute};
use crate::api::App;
use crate::metrics::RequestStatus;

/// Most inputs in one request.
pub const MAX_INPUTS: usize = 256;
/// Inputs of one request computed at once (each is its own sequence).
const CONCURRENT_INPUTS: usize = 8;

/// Routes of the embeddings API.
pub fn routes() -> Vec<ApiRoute> {
    vec![ApiRoute::new("POST", "/v1/embeddings", post(embeddings))]
}

/// An embeddings request.
#[derive(Debug, Deserialize)]
pub struct EmbeddingRequest {
    /// A string, a list of strings, a list of token ids or a list of lists of token ids.
    pub input: Value,
    #[serde(default)]
    pub model: Option<String>,
    /// `float` (default) or `base64` (little-endian f32 bytes).
    #[serde(default)]
    pub encoding_format: Option<String>,
    /// Accepted only when equal to the model's width (no truncation).
    #[serde(default)]
    pub dimensions: Option<u64>,
    /// End-user id (accepted, unused).
    #[serde(default)]
    pub user: Option<String>,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// One input: text to tokenize or token ids as given.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    Text(String),
    Tokens(Vec<u32>),
}

#[derive(Debug, Serialize)]
struct EmbeddingResponse {
    object: &'static str,
    data: Vec<EmbeddingData>,
    model: String,
    usage: EmbeddingUsage,
}

#[derive(Debug, Serialize)]
struct EmbeddingData {
    object: &'static str,
    index: usize,
    /// A list of floats, or a base64 string.
    embedding: Value,
}

#[derive(Debug, Serialize)]
struct EmbeddingUsage {
    prompt_tokens: usize,
    total_tokens: usize,
}

/// The inputs of a request's `input` field, or why it is malformed.
pub fn parse_input(input: &Value) -> Result<Vec<Input>, String> {
    let token = |v: &Value| v.as_u64().and_then(|t| u32::try_from(t).ok());
    let tokens = |items: &[Value]| items.iter().map(token).collect::<Option<Vec<u32>>>();
    let inputs = match input {
        Value::String(s) => vec![Input::Text(s.clone())],
        Value::Array(items) if items.is_empty() => {
            return Err("'input' must not be an empty list".into())
        }
        Value::Array(items) if items.iter().all(Value::is_string) => items
            .iter()
            .map(|v| Input::Text(v.as_str().unwrap_or_default().to_string()))
            .collect(),
        Value::Array(items) if items.iter().all(Value::is_number) => {
            vec![Input::Tokens(tokens(items).ok_or(
                "'input' as token ids must hold non-negative integers below 2^32",
            )?)]
        }
        Value::Array(items) if items.iter().all(Value::is_array) => items
            .iter()
            .map(|v| {
                tokens(v.as_array().map(Vec::as_slice).unwrap_or_default())
                    .map(Input::Tokens)
                    .ok_or_else(|| {
                        "'input' as lists of token ids must hold non-negative integers below 2^32"
                            .to_string()
                    })
            })
            .collect::<Result<_, _>>()?,
        _ => {
            return Err(
                "'input' must be a string, a list of strings, a list of token ids or \
                 a list of lists of token ids"
                    .into(),
            )
        }
    };
    if inputs.len() > MAX_INPUTS {
        return Err(format!(
            "'input' holds {} inputs; at most {MAX_INPUTS} are allowed",
            inputs.len()
        ));
    }
    for (i, x) in inputs.iter().enumerate() {
        let empty = match x {
            Input::Text(t) => t.is_empty(),
            Input::Tokens(t) => t.is_empty(),
        };
        if empty {
            return Err(format!("input[{i}] is empty"));
        }
    }
    Ok(inputs)
}

/// The pooling used for the model at `path`: its `{arch}.pooling_type` when it names one
/// that gives one vector (mean, CLS or last), else the last token. Read once per model.
pub fn pooling_for(path: &Path, arch: &str) -> Pooling {
    static CACHE: OnceLock<Mutex<HashMap<PathBuf, Option<Pooling>>>> = OnceLock::new();
    let mut cache = CACHE
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    let named = *cache.entry(path.to_path_buf()).or_insert_with(|| {
        let f = engine::GgufFile::open(path).ok()?;
        let p = f.md().usize(&format!("{arch}.pooling_type")).ok()?;
        Pooling::from_gguf(p as u64)
    });
    match named {
        Some(p @ (Pooling::Mean | Pooling::Cls | Pooling::Last)) => p,
        Some(Pooling::None) | None => Pooling::Last,
    }
}

/// Standard base64 (with padding) of the little-endian bytes of `v`, as OpenAI's
/// `encoding_format: "base64"` sends them.
pub fn base64_f32(v: &[f32]) -> String {
    use base64::Engine;
    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

async fn embeddings(
    State(s): State<Arc<App>>,
    body: crate::api::core::RawBody,
) -> Result<Json<Value>, ApiError> {
    let reject = |e: ApiError| {
        s.state.metrics.finish_request(RequestStatus::Rejected);
        e
    };
    let bad = |m: String| reject(ApiError::bad(m));
    let req: EmbeddingRequest = crate::api::core::parse_body(body).map_err(reject)?;
    let model = &s.state.model;
    if let Some(m) = crate::api::openai::unknown_model(req.model.as_deref(), &model.id) {
        return Err(reject(ApiError::model_not_found(m, &model.id)));
    }
    if let Some(k) = req.other.keys().next() {
        return Err(bad(format!("unknown field '{k}'")));
    }
    let base64 = match req.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(f) => {
            return Err(bad(format!(
                "encoding_format must be 'float' or 'base64', got '{f}'"
            )))
        }
    };
    let width = model.info.hidden_size;
    if let Some(d) = req.dimensions {
        if d != width as u64 {
            return Err(bad(format!(
                "dimensions={d} is not supported: this model's embeddings have {width} \
                 dimensions (pass {width} or leave it out)"
            )));
        }
    }
    let _ = req.user;
    let inputs = parse_input(&req.input).map_err(bad)?;
    let (ctx, vocab) = (model.info.context_length, model.info.vocab_size);
    let mut all = Vec::with_capacity(inputs.len());
    for (i, x) in inputs.into_iter().enumerate() {
        let tokens = match x {
            Input::Text(t) => model
                .tokenizer
                .tokenize(&t, true, false)
                .map_err(|e| bad(format!("input[{i}]: {e}")))?,
            Input::Tokens(t) => {
                if let Some(id) = t.iter().find(|id| **id as usize >= vocab) {
                    return Err(bad(format!(
                        "input[{i}]: token id {id} is outside the vocabulary of {vocab}"
                    )));
                }
                t
            }
        };
        if tokens.len() > ctx {
            return Err(bad(format!(
                "input[{i}] has {} tokens; the model's context is {ctx} tokens",
                tokens.len()
            )));
        }
        all.push(tokens);
    }
    let pooling = pooling_for(&model.path, &model.info.architecture);
    let prompt_tokens: usize = all.iter().map(Vec::len).sum();
    // A few inputs at a time: each is admitted like a request, and a large batch must
    // not fill the admission line by itself.
    let vectors: Vec<Vec<f32>> = futures::stream::iter(
        all.into_iter()
            .map(|tokens| s.serving.embed(tokens, pooling, true)),
    )
    .buffered(CONCURRENT_INPUTS)
    .try_collect()
    .await
    .map_err(ApiError::from)?;
    let data = vectors
        .into_iter()
        .enumerate()
        .map(|(index, v)| EmbeddingData {
            object: "embedding",
            index,
            embedding: if base64 {
                Value::String(base64_f32(&v))
            } else {
                serde_json::json!(v)
            },
        })
        .collect();
    let resp = EmbeddingResponse {
        object: "list",
        data,
        model: model.id.clone(),
        usage: EmbeddingUsage {
            prompt_tokens,
            total_tokens: prompt_tokens,
        },
    };
    Ok(Json(serde_json::to_value(resp).unwrap_or_default()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn inputs_parse_or_say_why_not() {
        assert_eq!(
            parse_input(&json!("hi")).unwrap(),
            vec![Input::Text("hi".into())]
        );
        assert_eq!(
            parse_input(&json!(["a", "b"])).unwrap(),
            vec![Input::Text("a".into()), Input::Text("b".into())]
        );
        assert_eq!(
            parse_input(&json!([1, 2, 3])).unwrap(),
            vec![Input::Tokens(vec![1, 2, 3])]
        );
        assert_eq!(
            parse_input(&json!([[1], [2, 3]])).unwrap(),
            vec![Input::Tokens(vec![1]), Input::Tokens(vec![2, 3])]
        );
        for bad in [
            json!([]),
            json!(""),
            json!(["a", ""]),
            json!([[]]),
            json!([1, "a"]),
            json!([-1]),
            json!([1.5]),
            json!({"text": "a"}),
            json!(null),
            json!(vec!["x"; MAX_INPUTS + 1]),
        ] {
            assert!(parse_input(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn base64_is_standard_with_padding() {
        // 1.0f32 = 00 00 80 3f; 2.0 = 00 00 00 40.
        assert_eq!(base64_f32(&[1.0]), "AACAPw==");
        assert_eq!(base64_f32(&[1.0, 2.0]), "AACAPwAAAEA=");
        assert_eq!(base64_f32(&[1.0, 2.0, -0.5]), "AACAPwAAAEAAAAC/");
        assert_eq!(base64_f32(&[]), "");
    }
}
