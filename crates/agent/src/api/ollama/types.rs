//! Ollama request bodies and their mapping onto the engine: `options` to
//! [`SamplingParams`], `format` to a [`Constraint`], and the fields this server refuses.

use engine::constrain::Constraint;
use engine::SamplingParams;
use serde::Deserialize;
use serde_json::{Map, Value};

/// Most tokens generated when `num_predict` is unlimited (-1 or -2, Ollama's default);
/// the room left in the context caps it too.
pub const UNLIMITED_PREDICT: usize = 4096;

/// Options that change nothing here (hardware, context and loading settings), accepted
/// and ignored. Options neither known nor listed here are ignored too, as Ollama does.
const IGNORED: &[&str] = &[
    "num_ctx",
    "num_batch",
    "num_gpu",
    "main_gpu",
    "low_vram",
    "f16_kv",
    "logits_all",
    "vocab_only",
    "use_mmap",
    "use_mlock",
    "numa",
    "num_thread",
    "embedding_only",
    "num_keep",
    "penalize_newline",
    "mirostat_tau",
    "mirostat_eta",
];

/// Options that would change the output but are not implemented, with the value that
/// turns them off (the only one accepted).
const REFUSED: &[(&str, f64)] = &[("mirostat", 0.0), ("tfs_z", 1.0), ("typical_p", 1.0)];

/// One message of `POST /api/chat`.
#[derive(Debug, Clone, Deserialize)]
pub struct Message {
    pub role: String,
    #[serde(default)]
    pub content: Option<String>,
    #[serde(default)]
    pub images: Option<Vec<Value>>,
    #[serde(default)]
    pub tool_calls: Option<Vec<Value>>,
}

/// Fields `/api/chat` and `/api/generate` share.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Common {
    #[serde(default)]
    pub model: String,
    /// Ollama streams unless told otherwise.
    #[serde(default)]
    pub stream: Option<bool>,
    #[serde(default)]
    pub options: Option<Map<String, Value>>,
    #[serde(default)]
    pub format: Option<Value>,
    /// Accepted; the model stays loaded whatever it says (0 only answers "unload").
    #[serde(default)]
    pub keep_alive: Option<Value>,
    #[serde(default)]
    pub think: Option<Value>,
    #[serde(default)]
    pub logprobs: Option<bool>,
}

/// `POST /api/chat` body.
#[derive(Debug, Clone, Deserialize)]
pub struct ChatRequest {
    #[serde(flatten)]
    pub common: Common,
    #[serde(default)]
    pub messages: Vec<Message>,
    #[serde(default)]
    pub tools: Option<Vec<Value>>,
}

/// `POST /api/generate` body.
#[derive(Debug, Clone, Deserialize)]
pub struct GenerateRequest {
    #[serde(flatten)]
    pub common: Common,
    #[serde(default)]
    pub prompt: Option<String>,
    #[serde(default)]
    pub system: Option<String>,
    /// `true`: the prompt goes to the model as it is, without the chat template.
    #[serde(default)]
    pub raw: Option<bool>,
    #[serde(default)]
    pub suffix: Option<String>,
    #[serde(default)]
    pub template: Option<String>,
    #[serde(default)]
    pub context: Option<Vec<Value>>,
    #[serde(default)]
    pub images: Option<Vec<Value>>,
}

/// How to sample, checked; `predict` is `num_predict` (`None`: unlimited).
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub params: SamplingParams,
    pub predict: Option<usize>,
    pub constraint: Option<Constraint>,
}

fn non_empty<T>(v: &Option<Vec<T>>) -> bool {
    v.as_ref().is_some_and(|v| !v.is_empty())
}

impl ChatRequest {
    /// Refuses what this server does not do; the messages as the template takes them.
    pub fn messages(&self) -> Result<Vec<engine::ChatMessage>, String> {
        if non_empty(&self.tools) {
            return Err(
                "'tools' are not supported on the Ollama API yet; use /v1/chat/completions".into(),
            );
        }
        self.messages
            .iter()
            .enumerate()
            .map(|(i, m)| {
                if non_empty(&m.images) {
                    return Err(format!(
                        "messages[{i}].images: images are not supported (the model is text-only)"
                    ));
                }
                if non_empty(&m.tool_calls) || m.role == "tool" {
                    return Err(format!(
                        "messages[{i}]: tool calls are not supported on the Ollama API yet; use /v1/chat/completions"
                    ));
                }
                if !matches!(m.role.as_str(), "system" | "user" | "assistant") {
                    return Err(format!(
                        "messages[{i}].role must be 'system', 'user' or 'assistant', got '{}'",
                        m.role
                    ));
                }
                Ok(engine::ChatMessage::new(
                    &m.role,
                    m.content.as_deref().unwrap_or(""),
                ))
            })
            .collect()
    }
}

impl GenerateRequest {
    /// Refuses the fields this server does not implement.
    pub fn check(&self) -> Result<(), String> {
        let set = |v: &Option<String>| v.as_deref().is_some_and(|s| !s.is_empty());
        if set(&self.template) {
            return Err(
                "'template' is not supported: the model's own chat template is used (or raw: true)"
                    .into(),
            );
        }
        if set(&self.suffix) {
            return Err("'suffix' (fill-in-the-middle) is not supported".into());
        }
        if non_empty(&self.images) {
            return Err("images are not supported (the model is text-only)".into());
        }
        if non_empty(&self.context) {
            return Err("'context' is not supported: send the conversation to /api/chat".into());
        }
        Ok(())
    }
}

impl Common {
    /// Whether to stream (Ollama's default: yes).
    pub fn stream(&self) -> bool {
        self.stream.unwrap_or(true)
    }

    /// Whether `keep_alive` asks to unload (0).
    pub fn unload(&self) -> bool {
        match &self.keep_alive {
            Some(Value::Number(n)) => n.as_f64() == Some(0.0),
            Some(Value::String(s)) => matches!(s.trim(), "0" | "0s" | "0m" | "0h"),
            _ => false,
        }
    }

    /// Checks `think`, `logprobs`, `options` and `format` and maps them.
    pub fn plan(&self) -> Result<Plan, String> {
        match &self.think {
            None | Some(Value::Null) | Some(Value::Bool(false)) => {}
            Some(Value::String(s)) if s.is_empty() => {}
            Some(_) => return Err("'think' is not supported: this model does not think".into()),
        }
        if self.logprobs == Some(true) {
            return Err(
                "'logprobs' are not supported on the Ollama API yet; use /v1/chat/completions"
                    .into(),
            );
        }
        let (params, predict) = options(self.options.as_ref())?;
        Ok(Plan {
            params,
            predict,
            constraint: format(self.format.as_ref())?,
        })
    }
}

/// `format`: `"json"` → any JSON object, a schema object → that schema (not strict: keywords
/// the matcher does not implement are ignored; objects closed after their listed
/// properties unless the schema allows more, as with the OpenAI API), `""`/null → free text.
pub fn format(f: Option<&Value>) -> Result<Option<Constraint>, String> {
    match f {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) if s == "json" => Ok(Some(Constraint::JsonObject)),
        Some(Value::Object(_)) => Ok(Some(Constraint::JsonSchema {
            schema: crate::api::openai::closed_schema(f.cloned().unwrap_or_default()),
            strict: false,
        })),
        Some(other) => Err(format!(
            "format must be \"json\" or a JSON schema object, got {other}"
        )),
    }
}

fn number(key: &str, v: &Value) -> Result<f64, String> {
    v.as_f64()
        .ok_or_else(|| format!("options.{key} must be a number, got {v}"))
}

fn integer(key: &str, v: &Value) -> Result<i64, String> {
    match v.as_i64() {
        Some(n) => Ok(n),
        // 40.0 is fine, 0.5 is not.
        None => match v.as_f64() {
            Some(x) if x.fract() == 0.0 && x.abs() < 9e15 => Ok(x as i64),
            _ => Err(format!("options.{key} must be an integer, got {v}")),
        },
    }
}

/// Ollama's `options` on Ollama's defaults (temperature 0.8, top_k 40, top_p 0.9,
/// repeat_penalty 1.1 over the last 64 tokens, min_p 0, random seed, unlimited
/// `num_predict`). Ranges are checked later by [`SamplingParams::validate`].
pub fn options(
    opts: Option<&Map<String, Value>>,
) -> Result<(SamplingParams, Option<usize>), String> {
    let mut p = SamplingParams {
        temperature: 0.8,
        top_k: 40,
        top_p: 0.9,
        min_p: 0.0,
        repeat_penalty: 1.1,
        repeat_last_n: 64,
        ..Default::default()
    };
    let mut predict = None;
    for (key, v) in opts.into_iter().flatten() {
        if v.is_null() || IGNORED.contains(&key.as_str()) {
            continue;
        }
        match key.as_str() {
            "temperature" => p.temperature = number(key, v)? as f32,
            "top_k" => p.top_k = integer(key, v)?.max(0) as usize,
            "top_p" => p.top_p = number(key, v)? as f32,
            "min_p" => p.min_p = number(key, v)? as f32,
            "repeat_penalty" => p.repeat_penalty = number(key, v)? as f32,
            "frequency_penalty" => p.frequency_penalty = number(key, v)? as f32,
            "presence_penalty" => p.presence_penalty = number(key, v)? as f32,
            // Negative: a random seed.
            "seed" => p.seed = u64::try_from(integer(key, v)?).ok(),
            "repeat_last_n" => {
                p.repeat_last_n = match integer(key, v)? {
                    -1 => u32::MAX as usize, // the whole context (u32: it crosses the wire)
                    n if n >= 0 => n as usize,
                    n => return Err(format!("options.repeat_last_n must be -1 or more, got {n}")),
                }
            }
            "num_predict" => {
                predict = match integer(key, v)? {
                    -1 | -2 => None,
                    n if n > 0 => Some(n as usize),
                    n => {
                        return Err(format!(
                            "options.num_predict must be positive, -1 (unlimited) or -2 (fill the context), got {n}"
                        ))
                    }
                }
            }
            "stop" => {
                p.stop = match v {
                    Value::String(s) => vec![s.clone()],
                    Value::Array(a) => a
                        .iter()
                        .map(|s| s.as_str().map(String::from))
                        .collect::<Option<_>>()
                        .ok_or_else(|| format!("options.stop must be a list of strings, got {v}"))?,
                    _ => return Err(format!("options.stop must be a list of strings, got {v}")),
                };
                p.stop.retain(|s| !s.is_empty());
            }
            k => {
                if let Some((_, off)) = REFUSED.iter().find(|(name, _)| *name == k) {
                    let set = match v {
                        Value::Bool(b) => *b,
                        _ => number(k, v)? != *off,
                    };
                    if set {
                        return Err(format!(
                            "options.{k} is not supported (only {off}, which turns it off)"
                        ));
                    }
                } else {
                    tracing::debug!(option = k, "unknown Ollama option ignored");
                }
            }
        }
    }
    Ok((p, predict))
}

/// Tokens to generate: `num_predict` (or [`UNLIMITED_PREDICT`]) within the room the
/// prompt leaves in the context (at least 1: a prompt that fills the context is refused
/// later with its own message).
pub fn max_tokens(predict: Option<usize>, prompt_len: usize, context_length: usize) -> usize {
    let room = context_length.saturating_sub(prompt_len);
    predict.unwrap_or(UNLIMITED_PREDICT).min(room).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn common(v: Value) -> Common {
        serde_json::from_value(v).unwrap()
    }

    fn opts(v: Value) -> Result<(SamplingParams, Option<usize>), String> {
        options(v.as_object())
    }

    #[test]
    fn defaults_are_ollamas() {
        let c = common(json!({"model": "m"}));
        assert!(c.stream());
        let plan = c.plan().unwrap();
        let p = &plan.params;
        assert_eq!((p.temperature, p.top_k, p.top_p), (0.8, 40, 0.9));
        assert_eq!((p.repeat_penalty, p.repeat_last_n, p.seed), (1.1, 64, None));
        assert_eq!((plan.predict, plan.constraint), (None, None));
        assert!(!common(json!({"stream": false})).stream());
    }

    #[test]
    fn options_map_onto_sampling() {
        let (p, predict) = opts(json!({
            "temperature": 0, "top_k": 5, "top_p": 0.5, "min_p": 0.1, "seed": 42,
            "num_predict": 48, "stop": ["\n", ""], "repeat_penalty": 1.0,
            "repeat_last_n": -1, "frequency_penalty": 0.5, "presence_penalty": -0.5,
            "num_ctx": 8192, "num_thread": 4, "num_gpu": 1, "mirostat": 0, "tfs_z": 1.0,
            "whatever": "ignored", "top_logprobs": null,
        }))
        .unwrap();
        assert_eq!(
            (p.temperature, p.top_k, p.top_p, p.min_p),
            (0.0, 5, 0.5, 0.1)
        );
        assert_eq!((p.seed, predict), (Some(42), Some(48)));
        assert_eq!(p.stop, vec!["\n".to_string()]);
        assert_eq!(
            (p.repeat_penalty, p.repeat_last_n),
            (1.0, u32::MAX as usize)
        );
        assert_eq!((p.frequency_penalty, p.presence_penalty), (0.5, -0.5));
        assert_eq!(
            opts(json!({"seed": -1, "num_predict": -2})).unwrap().0.seed,
            None
        );
        assert_eq!(opts(json!({"num_predict": -1})).unwrap().1, None);
        assert_eq!(opts(json!({"top_k": 40.0})).unwrap().0.top_k, 40);
        assert_eq!(opts(json!({"stop": "END"})).unwrap().0.stop, vec!["END"]);
    }

    #[test]
    fn bad_options_name_the_field() {
        for (o, needle) in [
            (json!({"mirostat": 2}), "options.mirostat"),
            (json!({"tfs_z": 0.5}), "options.tfs_z"),
            (json!({"typical_p": 0.7}), "options.typical_p"),
            (
                json!({"temperature": "hot"}),
                "options.temperature must be a number",
            ),
            (json!({"top_k": 0.5}), "options.top_k must be an integer"),
            (json!({"num_predict": 0}), "options.num_predict"),
            (json!({"repeat_last_n": -3}), "options.repeat_last_n"),
            (json!({"stop": [1]}), "options.stop"),
        ] {
            let e = opts(o.clone()).unwrap_err();
            assert!(e.contains(needle), "{o}: {e}");
        }
    }

    #[test]
    fn format_maps_to_constraints() {
        assert_eq!(format(None).unwrap(), None);
        assert_eq!(format(Some(&json!(""))).unwrap(), None);
        assert_eq!(
            format(Some(&json!("json"))).unwrap(),
            Some(Constraint::JsonObject)
        );
        let schema = json!({"type": "object", "properties": {"a": {"type": "integer"}}});
        let closed = json!({"type": "object", "properties": {"a": {"type": "integer"}},
                            "additionalProperties": false});
        assert_eq!(
            format(Some(&schema)).unwrap(),
            Some(Constraint::JsonSchema {
                schema: closed,
                strict: false
            })
        );
        assert!(format(Some(&json!("yaml"))).unwrap_err().contains("format"));
        assert!(format(Some(&json!(3))).is_err());
    }

    #[test]
    fn unsupported_fields_are_refused() {
        assert!(common(json!({"think": true}))
            .plan()
            .unwrap_err()
            .contains("think"));
        assert!(common(json!({"think": false})).plan().is_ok());
        assert!(common(json!({"logprobs": true})).plan().is_err());
        let chat = |v: Value| serde_json::from_value::<ChatRequest>(v).unwrap().messages();
        let tools = json!({"messages": [{"role": "user", "content": "hi"}], "tools": [{"type": "function"}]});
        assert!(chat(tools).unwrap_err().contains("/v1/chat/completions"));
        let images = json!({"messages": [{"role": "user", "content": "hi", "images": ["aGk="]}]});
        assert!(chat(images).unwrap_err().contains("images"));
        let role = json!({"messages": [{"role": "robot", "content": "hi"}]});
        assert!(chat(role).unwrap_err().contains("role"));
        let ok = chat(json!({"model": "m", "messages": [
            {"role": "system", "content": "be brief"}, {"role": "user", "content": "hi", "images": []},
            {"role": "assistant"}], "tools": [], "keep_alive": "5m"}))
        .unwrap();
        assert_eq!(ok.len(), 3);
        assert_eq!(
            (ok[2].role.as_str(), ok[2].content.as_str()),
            ("assistant", "")
        );

        let gen = |v: Value| {
            serde_json::from_value::<GenerateRequest>(v)
                .unwrap()
                .check()
        };
        assert!(gen(json!({"prompt": "x", "suffix": "", "template": ""})).is_ok());
        for (v, needle) in [
            (
                json!({"prompt": "x", "template": "{{ .Prompt }}"}),
                "template",
            ),
            (json!({"prompt": "x", "suffix": "end"}), "suffix"),
            (json!({"prompt": "x", "images": ["aGk="]}), "images"),
            (json!({"prompt": "x", "context": [1, 2]}), "context"),
        ] {
            assert!(gen(v).unwrap_err().contains(needle));
        }
    }

    #[test]
    fn keep_alive_zero_unloads() {
        assert!(common(json!({"keep_alive": 0})).unload());
        assert!(common(json!({"keep_alive": "0s"})).unload());
        assert!(!common(json!({"keep_alive": "5m"})).unload());
        assert!(!common(json!({})).unload());
    }

    #[test]
    fn max_tokens_fit_the_context() {
        assert_eq!(max_tokens(None, 10, 8192), UNLIMITED_PREDICT);
        assert_eq!(max_tokens(None, 8000, 8192), 192);
        assert_eq!(max_tokens(Some(48), 10, 8192), 48);
        assert_eq!(max_tokens(Some(100_000), 10, 8192), 8182);
        assert_eq!(max_tokens(Some(5), 8192, 8192), 1);
    }
}
