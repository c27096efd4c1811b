//! OpenAI-compatible requests and their validation.

use std::collections::HashMap;

use engine::constrain::{Constraint, ToolMode};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Largest `max_tokens` accepted.
pub const MAX_TOKENS_LIMIT: u32 = 4096;
/// Default `max_tokens` when the request gives none.
pub const DEFAULT_MAX_TOKENS: u32 = 256;
/// Largest `n` (choices per request).
pub const MAX_N: u32 = 8;
/// Fields accepted and ignored: metadata that does not change the output.
pub const HARMLESS_FIELDS: &[&str] = &[
    "user",
    "metadata",
    "store",
    "service_tier",
    "prompt_cache_key",
    "safety_identifier",
    "cache_prompt",
];

/// One chat message. `content` may also be a list of parts (`{"type":"text","text":..}`),
/// whose texts are joined, or `null` (an assistant turn that only calls tools).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct Message {
    pub role: String,
    #[serde(default, deserialize_with = "content_text")]
    pub content: String,
    /// Calls an assistant turn made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCall>>,
    /// The call a `tool` message answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// A function call in an assistant message (`arguments` is a JSON text, as OpenAI has it).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ToolCall {
    #[serde(default)]
    pub id: String,
    #[serde(rename = "type", default = "function_type")]
    pub kind: String,
    pub function: FunctionCall,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FunctionCall {
    pub name: String,
    #[serde(default)]
    pub arguments: String,
}

fn function_type() -> String {
    "function".into()
}

/// A tool the model may call: `{"type": "function", "function": {name, description, parameters}}`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Tool {
    #[serde(rename = "type")]
    pub kind: String,
    pub function: FunctionDef,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FunctionDef {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strict: Option<bool>,
}

fn content_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    struct Part {
        #[serde(rename = "type")]
        kind: String,
        #[serde(default)]
        text: String,
    }
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Content {
        Text(String),
        Parts(Vec<Part>),
    }
    match Option::<Content>::deserialize(d)? {
        None => Ok(String::new()),
        Some(Content::Text(t)) => Ok(t),
        Some(Content::Parts(parts)) => {
            if let Some(p) = parts.iter().find(|p| p.kind != "text") {
                return Err(serde::de::Error::custom(format!(
                    "content part type '{}' is not supported (only 'text')",
                    p.kind
                )));
            }
            Ok(parts
                .into_iter()
                .map(|p| p.text)
                .collect::<Vec<_>>()
                .join(""))
        }
    }
}

/// `stop` may be one string or a list.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum Stop {
    One(String),
    Many(Vec<String>),
}

/// `POST /v1/chat/completions` body.
#[derive(Debug, Clone, Deserialize)]
pub struct ChatCompletionRequest {
    #[serde(default)]
    pub model: Option<String>,
    pub messages: Vec<Message>,
    #[serde(flatten)]
    pub sampling: SamplingFields,
    #[serde(default)]
    pub max_completion_tokens: Option<i64>,
    #[serde(default)]
    pub logprobs: Option<bool>,
    #[serde(default)]
    pub top_logprobs: Option<u32>,
    #[serde(default)]
    pub response_format: Option<ResponseFormat>,
    #[serde(default)]
    pub tools: Option<Vec<Tool>>,
    #[serde(default)]
    pub tool_choice: Option<Value>,
    #[serde(default)]
    pub parallel_tool_calls: Option<bool>,
    /// Everything else: harmless metadata is accepted, the rest refused by name.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// Sampling and streaming fields shared by chat and text completions.
#[derive(Debug, Clone, Deserialize, Default)]
pub struct SamplingFields {
    #[serde(default)]
    pub stream: bool,
    #[serde(default)]
    pub stream_options: Option<StreamOptions>,
    #[serde(default)]
    pub n: Option<u32>,
    #[serde(default)]
    pub max_tokens: Option<i64>,
    #[serde(default)]
    pub temperature: Option<f32>,
    #[serde(default)]
    pub top_p: Option<f32>,
    #[serde(default)]
    pub top_k: Option<u32>,
    #[serde(default)]
    pub min_p: Option<f32>,
    #[serde(default)]
    pub seed: Option<u64>,
    #[serde(default)]
    pub stop: Option<Stop>,
    #[serde(default)]
    pub repeat_penalty: Option<f32>,
    #[serde(default)]
    pub frequency_penalty: Option<f32>,
    #[serde(default)]
    pub presence_penalty: Option<f32>,
    /// Token id (as a string, as OpenAI sends it) to a bias in -100..=100.
    #[serde(default)]
    pub logit_bias: Option<HashMap<String, f32>>,
}

#[derive(Debug, Clone, Deserialize, Default, PartialEq)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
}

/// `response_format`: `text`, `json_object`, or `json_schema` with `{name, schema, strict}`;
/// llama-server's extension `{"type": "json_object", "schema": {...}}` too.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct ResponseFormat {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub json_schema: Option<JsonSchemaFormat>,
    /// llama-server's schema beside `type` (with `json_object` or `json_schema`).
    #[serde(default)]
    pub schema: Option<Value>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct JsonSchemaFormat {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub schema: Option<Value>,
    #[serde(default)]
    pub strict: Option<bool>,
}

/// Tools offered to the model and how it may use them.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolSetup {
    pub tools: Vec<Tool>,
    pub mode: ToolMode,
    /// More than one call in an answer (`parallel_tool_calls`; off by default, as
    /// llama-server: small models otherwise repeat the call).
    pub parallel: bool,
}

/// A validated chat request.
#[derive(Debug, Clone, PartialEq)]
pub struct Validated {
    pub messages: Vec<Message>,
    pub params: engine::SamplingParams,
    pub n: u32,
    pub stream: bool,
    pub include_usage: bool,
    pub constraint: Option<Constraint>,
    /// Tools the template renders and the grammar allows (`None` with `tool_choice: none`).
    pub tools: Option<ToolSetup>,
}

impl ChatCompletionRequest {
    /// Check the request against the served model (its id and vocabulary size); errors
    /// are client errors.
    pub fn validate(&self, vocab: usize) -> Result<Validated, String> {
        check_other(&self.other)?;
        validate_messages(&self.messages)?;
        let messages: Vec<Message> = self
            .messages
            .iter()
            .map(|m| Message {
                // OpenAI's newer name for the system role.
                role: if m.role == "developer" {
                    "system".into()
                } else {
                    m.role.clone()
                },
                ..m.clone()
            })
            .collect();
        let mut f = self.sampling.clone();
        if self.max_completion_tokens.is_some() {
            f.max_tokens = self.max_completion_tokens;
        }
        let top = match (self.logprobs.unwrap_or(false), self.top_logprobs) {
            (false, Some(k)) if k > 0 => return Err("top_logprobs requires logprobs: true".into()),
            (false, _) => None,
            (true, k) => Some(k.unwrap_or(0) as usize),
        };
        let params = f.params(vocab, top)?;
        let constraint = response_constraint(self.response_format.as_ref())?;
        let tools = tool_setup(
            self.tools.as_deref(),
            self.tool_choice.as_ref(),
            self.parallel_tool_calls,
        )?;
        if constraint.is_some() && tools.is_some() {
            return Err(
                "response_format cannot be combined with tools (use tool_choice: 'none')".into(),
            );
        }
        Ok(Validated {
            messages,
            params,
            n: f.n()?,
            stream: f.stream,
            include_usage: f.include_usage(),
            constraint,
            tools,
        })
    }
}

impl SamplingFields {
    /// `n` in 1..=[`MAX_N`].
    pub fn n(&self) -> Result<u32, String> {
        match self.n.unwrap_or(1) {
            0 => Err("n must be at least 1".into()),
            n if n > MAX_N => Err(format!("n must be at most {MAX_N}, got {n}")),
            n => Ok(n),
        }
    }

    /// `stream_options.include_usage`.
    pub fn include_usage(&self) -> bool {
        self.stream_options
            .as_ref()
            .is_some_and(|o| o.include_usage)
    }

    /// The engine's sampling parameters, checked (`top_logprobs`: alternatives per token
    /// when log-probabilities are asked for). Temperature defaults to 0.7.
    pub fn params(
        &self,
        vocab: usize,
        top_logprobs: Option<usize>,
    ) -> Result<engine::SamplingParams, String> {
        let max_tokens = validate_max_tokens(self.max_tokens)?;
        let temperature = self.temperature.unwrap_or(0.7);
        if !(0.0..=2.0).contains(&temperature) {
            return Err(format!("temperature must be in [0, 2], got {temperature}"));
        }
        let top_p = self.top_p.unwrap_or(1.0);
        if !(top_p > 0.0 && top_p <= 1.0) {
            return Err(format!("top_p must be in (0, 1], got {top_p}"));
        }
        let repeat_penalty = self.repeat_penalty.unwrap_or(1.0);
        if !(repeat_penalty > 0.0 && repeat_penalty.is_finite()) {
            return Err(format!("repeat_penalty must be > 0, got {repeat_penalty}"));
        }
        let stop = match &self.stop {
            None => vec![],
            Some(Stop::One(s)) => vec![s.clone()],
            Some(Stop::Many(v)) => v.clone(),
        };
        if stop.len() > 4 {
            return Err("at most 4 stop strings are allowed".into());
        }
        let mut logit_bias = Vec::new();
        for (k, b) in self.logit_bias.iter().flatten() {
            let id: u32 = k
                .parse()
                .map_err(|_| format!("logit_bias keys must be token ids, got '{k}'"))?;
            if id as usize >= vocab {
                return Err(format!(
                    "logit_bias names token {id}; the vocabulary has {vocab} tokens"
                ));
            }
            logit_bias.push((id, *b));
        }
        logit_bias.sort_by_key(|(id, _)| *id);
        Ok(engine::SamplingParams {
            temperature,
            top_k: self.top_k.unwrap_or(0) as usize,
            top_p,
            min_p: self.min_p.unwrap_or(0.0),
            repeat_penalty,
            repeat_last_n: 64,
            frequency_penalty: self.frequency_penalty.unwrap_or(0.0),
            presence_penalty: self.presence_penalty.unwrap_or(0.0),
            logit_bias,
            seed: self.seed,
            max_tokens: max_tokens as usize,
            stop,
            logprobs: top_logprobs,
        })
    }
}

/// The requested model when it is not the served one (unset or empty means the served
/// one).
pub fn unknown_model<'a>(requested: Option<&'a str>, served: &str) -> Option<&'a str> {
    requested.filter(|m| !m.is_empty() && !model_matches(m, served))
}

/// `schema` with `additionalProperties: false` on every object that lists `properties`
/// and says nothing of others, as OpenAI's strict mode and llama-server treat it (and
/// vLLM with llguidance): a small model otherwise keeps adding keys until `max_tokens`.
/// An explicit `additionalProperties` (true or a schema) is kept.
pub fn closed_schema(mut schema: Value) -> Value {
    fn close(v: &mut Value) {
        match v {
            Value::Object(o) => {
                if o.contains_key("properties") && !o.contains_key("additionalProperties") {
                    o.insert("additionalProperties".into(), Value::Bool(false));
                }
                for (k, child) in o.iter_mut() {
                    // Values under these keys are data, not schemas.
                    if !matches!(k.as_str(), "const" | "enum" | "default" | "examples") {
                        close(child);
                    }
                }
            }
            Value::Array(a) => a.iter_mut().for_each(close),
            _ => {}
        }
    }
    close(&mut schema);
    schema
}

/// Fields outside the implemented set: harmless metadata passes, anything else would
/// change the output without the server doing it, so it is refused by name.
pub fn check_other(other: &Map<String, Value>) -> Result<(), String> {
    let mut refused: Vec<&str> = other
        .iter()
        .filter(|(k, v)| !HARMLESS_FIELDS.contains(&k.as_str()) && !v.is_null())
        .filter(|(k, v)| !(k.as_str() == "modalities" && **v == serde_json::json!(["text"])))
        .map(|(k, _)| k.as_str())
        .collect();
    refused.sort_unstable();
    match refused.as_slice() {
        [] => Ok(()),
        [one] => Err(format!("the field '{one}' is not supported by this server")),
        many => Err(format!(
            "the fields {} are not supported by this server",
            many.iter()
                .map(|k| format!("'{k}'"))
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// `response_format` as a constraint (`None` for plain text).
pub fn response_constraint(f: Option<&ResponseFormat>) -> Result<Option<Constraint>, String> {
    let Some(f) = f else { return Ok(None) };
    let schema_of = |v: &Value, field: &str| match v {
        Value::Object(_) | Value::Bool(true) => Ok(closed_schema(v.clone())),
        other => Err(format!(
            "response_format '{field}' must be a JSON schema object, got {other}"
        )),
    };
    match (f.kind.as_str(), &f.schema) {
        ("text", None) => Ok(None),
        ("json_object", None) => Ok(Some(Constraint::JsonObject)),
        ("json_object", Some(s)) | ("json_schema", Some(s)) if f.json_schema.is_none() => {
            Ok(Some(Constraint::JsonSchema {
                schema: schema_of(s, "schema")?,
                strict: false,
            }))
        }
        ("json_schema", None) => {
            let js = f
                .json_schema
                .as_ref()
                .ok_or("response_format json_schema needs a 'json_schema' object")?;
            let schema = js
                .schema
                .as_ref()
                .ok_or("response_format json_schema needs 'json_schema.schema'")?;
            Ok(Some(Constraint::JsonSchema {
                schema: schema_of(schema, "json_schema.schema")?,
                strict: js.strict.unwrap_or(false),
            }))
        }
        ("text" | "json_object" | "json_schema", Some(_)) => Err(format!(
            "response_format type '{}' does not take 'schema' here (give it once: \
             'json_schema.schema', or 'schema' with json_object)",
            f.kind
        )),
        (other, _) => Err(format!(
            "response_format type '{other}' is not supported (text, json_object, json_schema)"
        )),
    }
}

/// `tools` and `tool_choice` as what the template renders and the grammar allows.
pub fn tool_setup(
    tools: Option<&[Tool]>,
    choice: Option<&Value>,
    parallel: Option<bool>,
) -> Result<Option<ToolSetup>, String> {
    let tools = tools.unwrap_or_default();
    if let Some(t) = tools.iter().find(|t| t.kind != "function") {
        return Err(format!(
            "tool type '{}' is not supported (only 'function')",
            t.kind
        ));
    }
    let auto = Value::String("auto".into());
    let choice = choice.unwrap_or(&auto);
    let (mode, only) = match choice {
        Value::String(c) if c == "none" => return Ok(None),
        Value::String(c) if c == "auto" => (ToolMode::Auto, None),
        Value::String(c) if c == "required" => (ToolMode::Required, None),
        Value::Object(o) => {
            let name = o
                .get("function")
                .and_then(|f| f.get("name"))
                .and_then(Value::as_str)
                .ok_or("tool_choice must be 'none', 'auto', 'required' or {\"type\": \"function\", \"function\": {\"name\": ...}}")?;
            (ToolMode::Required, Some(name.to_string()))
        }
        other => {
            return Err(format!(
                "tool_choice {other} is not supported ('none', 'auto', 'required' or a function)"
            ))
        }
    };
    if tools.is_empty() {
        return if choice == &auto {
            Ok(None)
        } else {
            Err("tool_choice needs 'tools'".into())
        };
    }
    let tools: Vec<Tool> = match only {
        None => tools.to_vec(),
        Some(name) => {
            let t = tools
                .iter()
                .find(|t| t.function.name == name)
                .ok_or_else(|| {
                    format!(
                        "tool_choice names '{name}', which is not among the tools ({})",
                        tools
                            .iter()
                            .map(|t| t.function.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                })?;
            vec![t.clone()]
        }
    };
    Ok(Some(ToolSetup {
        tools,
        mode,
        parallel: parallel.unwrap_or(false),
    }))
}

/// `POST /v1/completions` body (text in, text out; no chat template).
#[derive(Debug, Clone, Deserialize)]
pub struct CompletionRequest {
    #[serde(default)]
    pub model: Option<String>,
    /// A string, a list of strings, a list of token ids or a list of such lists.
    pub prompt: Value,
    #[serde(flatten)]
    pub sampling: SamplingFields,
    #[serde(default)]
    pub echo: bool,
    /// Alternatives per token (0..=20) in the legacy `logprobs` format.
    #[serde(default)]
    pub logprobs: Option<u32>,
    #[serde(default)]
    pub suffix: Option<String>,
    #[serde(default)]
    pub best_of: Option<u32>,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// One prompt of a completion request: text, or token ids.
#[derive(Debug, Clone, PartialEq)]
pub enum Prompt {
    Text(String),
    Tokens(Vec<u32>),
}

/// Most prompts in one completion request.
pub const MAX_PROMPTS: usize = 16;

impl CompletionRequest {
    /// Checks the request; gives the prompts and the sampling parameters.
    pub fn validate(
        &self,
        vocab: usize,
    ) -> Result<(Vec<Prompt>, engine::SamplingParams, u32), String> {
        check_other(&self.other)?;
        if self.suffix.as_deref().is_some_and(|s| !s.is_empty()) {
            return Err("'suffix' (fill-in-the-middle) is not supported".into());
        }
        let n = self.sampling.n()?;
        if self.best_of.is_some_and(|b| b != n) {
            return Err("'best_of' is not supported (only best_of = n)".into());
        }
        if self.echo && self.logprobs.is_some() {
            return Err(
                "'echo' with 'logprobs' is not supported (no prompt log-probabilities)".into(),
            );
        }
        let prompts = prompts(&self.prompt, vocab)?;
        if prompts.len() * n as usize > MAX_PROMPTS {
            return Err(format!(
                "at most {MAX_PROMPTS} prompts x n per request, got {} x {n}",
                prompts.len()
            ));
        }
        let params = self
            .sampling
            .params(vocab, self.logprobs.map(|k| k as usize))?;
        Ok((prompts, params, n))
    }
}

fn prompts(v: &Value, vocab: usize) -> Result<Vec<Prompt>, String> {
    let tokens = |a: &[Value]| -> Result<Vec<u32>, String> {
        a.iter()
            .map(|t| match t.as_u64() {
                Some(id) if (id as usize) < vocab => Ok(id as u32),
                _ => Err(format!("prompt token {t} is not a token id below {vocab}")),
            })
            .collect()
    };
    let out = match v {
        Value::String(s) => vec![Prompt::Text(s.clone())],
        Value::Array(a) if a.is_empty() => return Err("'prompt' is empty".into()),
        Value::Array(a) if a.iter().all(Value::is_string) => a
            .iter()
            .map(|s| Prompt::Text(s.as_str().unwrap_or_default().to_string()))
            .collect(),
        Value::Array(a) if a.iter().all(Value::is_number) => vec![Prompt::Tokens(tokens(a)?)],
        Value::Array(a) if a.iter().all(Value::is_array) => a
            .iter()
            .map(|t| tokens(t.as_array().map(Vec::as_slice).unwrap_or_default()).map(Prompt::Tokens))
            .collect::<Result<_, _>>()?,
        _ => {
            return Err(
                "'prompt' must be a string, a list of strings, a list of token ids or a list of such lists"
                    .into(),
            )
        }
    };
    if out.iter().any(|p| match p {
        Prompt::Text(t) => t.is_empty(),
        Prompt::Tokens(t) => t.is_empty(),
    }) {
        return Err("a prompt is empty".into());
    }
    Ok(out)
}

/// A model id matches the served one by exact id or by file name.
pub fn model_matches(requested: &str, served: &str) -> bool {
    requested == served
        || requested.strip_suffix(".gguf") == Some(served)
        || requested.eq_ignore_ascii_case(served)
}

/// Messages must be non-empty, with known roles.
pub fn validate_messages(messages: &[Message]) -> Result<(), String> {
    if messages.is_empty() {
        return Err("'messages' must contain at least one message".into());
    }
    for (i, m) in messages.iter().enumerate() {
        if !matches!(
            m.role.as_str(),
            "system" | "developer" | "user" | "assistant" | "tool"
        ) {
            return Err(format!(
                "messages[{i}].role must be 'system', 'developer', 'user', 'assistant' or 'tool', got '{}'",
                m.role
            ));
        }
        if m.tool_calls.is_some() && m.role != "assistant" {
            return Err(format!(
                "messages[{i}]: only assistant messages carry tool_calls"
            ));
        }
    }
    Ok(())
}

/// `max_tokens` must be in [1, MAX_TOKENS_LIMIT]; absent means the default.
pub fn validate_max_tokens(v: Option<i64>) -> Result<u32, String> {
    match v {
        None => Ok(DEFAULT_MAX_TOKENS),
        Some(n) if n < 1 => Err(format!("max_tokens must be at least 1, got {n}")),
        Some(n) if n > i64::from(MAX_TOKENS_LIMIT) => Err(format!(
            "max_tokens must be at most {MAX_TOKENS_LIMIT}, got {n}"
        )),
        Some(n) => Ok(n as u32),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(json: &str) -> ChatCompletionRequest {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn valid_request_gets_defaults() {
        let v = req(r#"{"messages":[{"role":"user","content":"hi"}]}"#)
            .validate(1000)
            .unwrap();
        assert_eq!(v.params.max_tokens, DEFAULT_MAX_TOKENS as usize);
        assert!(v.params.stop.is_empty());
        assert_eq!(
            (v.n, v.constraint.clone(), v.tools.clone()),
            (1, None, None)
        );
    }

    #[test]
    fn rejects_bad_input() {
        let cases = [
            r#"{"messages":[]}"#,
            r#"{"messages":[{"role":"user","content":"hi"}],"max_tokens":0}"#,
            r#"{"messages":[{"role":"user","content":"hi"}],"max_tokens":100000000}"#,
            r#"{"messages":[{"role":"robot","content":"hi"}]}"#,
            r#"{"messages":[{"role":"user","content":"hi"}],"temperature":5}"#,
        ];
        for c in cases {
            assert!(req(c).validate(1000).is_err(), "accepted {c}");
        }
    }

    #[test]
    fn content_parts_and_developer_role() {
        let v = req(r#"{"messages":[{"role":"developer","content":"be brief"},
            {"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]}]}"#)
        .validate(1000)
        .unwrap();
        assert_eq!(v.messages[0].role, "system");
        assert_eq!(v.messages[1].content, "ab");
        let bad = r#"{"messages":[{"role":"user","content":[{"type":"image_url"}]}]}"#;
        assert!(serde_json::from_str::<ChatCompletionRequest>(bad).is_err());
    }

    #[test]
    fn model_and_stop_forms() {
        let v =
            req(r#"{"model":"m.gguf","messages":[{"role":"user","content":"x"}],"stop":"END"}"#)
                .validate(1000)
                .unwrap();
        assert_eq!(v.params.stop, vec!["END"]);
        let v = req(r#"{"messages":[{"role":"user","content":"x"}],"stop":["a","b"]}"#)
            .validate(1000)
            .unwrap();
        assert_eq!(v.params.stop, vec!["a", "b"]);
    }

    #[test]
    fn unknown_fields_refused_metadata_accepted() {
        let ok = r#"{"messages":[{"role":"user","content":"x"}],"user":"u","metadata":{"a":"b"},"store":false}"#;
        assert!(req(ok).validate(1000).is_ok());
        let bad =
            r#"{"messages":[{"role":"user","content":"x"}],"audio":{"voice":"x"},"prediction":{}}"#;
        let e = req(bad).validate(1000).unwrap_err();
        assert!(e.contains("'audio'") && e.contains("'prediction'"), "{e}");
    }

    #[test]
    fn n_logprobs_bias_and_formats() {
        let v = req(r#"{"messages":[{"role":"user","content":"x"}],"n":3,"logprobs":true,"top_logprobs":2,
            "logit_bias":{"5":-100},"frequency_penalty":0.5,"response_format":{"type":"json_object"}}"#)
        .validate(1000)
        .unwrap();
        assert_eq!((v.n, v.params.logprobs), (3, Some(2)));
        assert_eq!(v.params.logit_bias, vec![(5, -100.0)]);
        assert_eq!(v.constraint, Some(Constraint::JsonObject));
        for bad in [
            r#""n":9"#,
            r#""top_logprobs":2"#,
            r#""logit_bias":{"5000":1}"#,
            r#""response_format":{"type":"yaml"}"#,
            r#""response_format":{"type":"json_schema"}"#,
            r#""response_format":{"type":"json_object","schema":123}"#,
            r#""response_format":{"type":"json_object","schema":"x"}"#,
            r#""response_format":{"type":"text","schema":{}}"#,
        ] {
            let j = format!(r#"{{"messages":[{{"role":"user","content":"x"}}],{bad}}}"#);
            assert!(req(&j).validate(1000).is_err(), "accepted {bad}");
        }
    }

    #[test]
    fn tools_and_tool_turns() {
        let tools = r#""tools":[{"type":"function","function":{"name":"add","parameters":{"type":"object"}}}]"#;
        let turns = r#"[{"role":"user","content":"1+2?"},
            {"role":"assistant","content":null,"tool_calls":[{"id":"c1","type":"function","function":{"name":"add","arguments":"{\"x\":1}"}}]},
            {"role":"tool","tool_call_id":"c1","content":"3"}]"#;
        let v = req(&format!(
            r#"{{"messages":{turns},{tools},"tool_choice":"required"}}"#
        ))
        .validate(1000)
        .unwrap();
        let t = v.tools.unwrap();
        assert_eq!(
            (t.mode, t.tools.len(), t.parallel),
            (ToolMode::Required, 1, false)
        );
        assert_eq!(v.messages[1].content, "");
        assert_eq!(
            v.messages[1].tool_calls.as_ref().unwrap()[0].function.name,
            "add"
        );
        let none = req(&format!(
            r#"{{"messages":{turns},{tools},"tool_choice":"none"}}"#
        ))
        .validate(1000)
        .unwrap();
        assert!(none.tools.is_none());
        let e = req(&format!(
            r#"{{"messages":{turns},{tools},"tool_choice":{{"type":"function","function":{{"name":"mul"}}}}}}"#
        ))
        .validate(1000)
        .unwrap_err();
        assert!(e.contains("'mul'") && e.contains("add"), "{e}");
    }

    #[test]
    fn completion_prompts() {
        let c = |j: &str| {
            serde_json::from_str::<CompletionRequest>(j)
                .unwrap()
                .validate(100)
        };
        assert_eq!(
            c(r#"{"prompt":"hi"}"#).unwrap().0,
            vec![Prompt::Text("hi".into())]
        );
        assert_eq!(
            c(r#"{"prompt":[1,2]}"#).unwrap().0,
            vec![Prompt::Tokens(vec![1, 2])]
        );
        assert_eq!(c(r#"{"prompt":["a","b"],"n":2}"#).unwrap().0.len(), 2);
        for bad in [
            r#"{"prompt":"hi","suffix":"x"}"#,
            r#"{"prompt":[1,200]}"#,
            r#"{"prompt":[]}"#,
            r#"{"prompt":"hi","echo":true,"logprobs":1}"#,
            r#"{"prompt":"hi","best_of":3}"#,
        ] {
            assert!(c(bad).is_err(), "accepted {bad}");
        }
    }

    #[test]
    fn schemas_close_objects_unless_they_say_otherwise() {
        let s = closed_schema(serde_json::json!({
            "type": "object",
            "properties": {
                "name": {"type": "string"},
                "pet": {"type": "object", "properties": {"kind": {"const": {"properties": 1}}}},
                "tags": {"type": "array", "items": {"type": "object", "properties": {}}},
                "open": {"type": "object", "properties": {}, "additionalProperties": true}
            },
            "$defs": {"d": {"properties": {"x": {}}}}
        }));
        assert_eq!(s["additionalProperties"], false);
        assert_eq!(s["properties"]["pet"]["additionalProperties"], false);
        assert_eq!(
            s["properties"]["tags"]["items"]["additionalProperties"],
            false
        );
        assert_eq!(s["properties"]["open"]["additionalProperties"], true);
        assert_eq!(s["$defs"]["d"]["additionalProperties"], false);
        assert!(s["properties"]["pet"]["properties"]["kind"]["const"]
            .get("additionalProperties")
            .is_none());
        // A bare object type (json_object) stays open.
        assert!(closed_schema(serde_json::json!({"type": "object"}))
            .get("additionalProperties")
            .is_none());
    }

    #[test]
    fn llama_server_schema_beside_json_object_is_honoured() {
        let v = req(r#"{"messages":[{"role":"user","content":"x"}],
            "response_format":{"type":"json_object","schema":{"type":"object","properties":{"a":{"type":"integer"}}}}}"#)
        .validate(1000)
        .unwrap();
        let Some(Constraint::JsonSchema { schema, .. }) = v.constraint else {
            panic!("{:?}", v.constraint)
        };
        assert_eq!(schema["additionalProperties"], false);
        assert_eq!(unknown_model(Some("gpt-4"), "m"), Some("gpt-4"));
        assert_eq!(unknown_model(Some(""), "m"), None);
        assert_eq!(unknown_model(None, "m"), None);
    }
}
