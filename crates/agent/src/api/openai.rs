//! OpenAI-compatible request/response types and request validation.

use serde::{Deserialize, Serialize};

/// Largest `max_tokens` accepted.
pub const MAX_TOKENS_LIMIT: u32 = 4096;
/// Default `max_tokens` when the request gives none.
pub const DEFAULT_MAX_TOKENS: u32 = 256;

/// One chat message. `content` may also be a list of parts (`{"type":"text","text":..}`),
/// whose texts are joined.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Message {
    pub role: String,
    #[serde(deserialize_with = "content_text")]
    pub content: String,
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
    match Content::deserialize(d)? {
        Content::Text(t) => Ok(t),
        Content::Parts(parts) => {
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
    #[serde(default)]
    pub stream: bool,
    #[serde(default)]
    pub max_tokens: Option<i64>,
    #[serde(default)]
    pub max_completion_tokens: Option<i64>,
    #[serde(default)]
    pub temperature: Option<f32>,
    #[serde(default)]
    pub top_p: Option<f32>,
    #[serde(default)]
    pub top_k: Option<u32>,
    #[serde(default)]
    pub seed: Option<u64>,
    #[serde(default)]
    pub stop: Option<Stop>,
    #[serde(default)]
    pub repeat_penalty: Option<f32>,
}

/// A validated generation request.
#[derive(Debug, Clone, PartialEq)]
pub struct Validated {
    pub messages: Vec<Message>,
    pub max_tokens: u32,
    pub temperature: f32,
    pub top_p: f32,
    pub top_k: u32,
    pub seed: Option<u64>,
    pub stop: Vec<String>,
    pub repeat_penalty: f32,
}

impl ChatCompletionRequest {
    /// Check the request against the served model; errors are client errors.
    pub fn validate(&self, served_model: &str) -> Result<Validated, String> {
        if let Some(m) = self.model.as_deref() {
            if !m.is_empty() && !model_matches(m, served_model) {
                return Err(format!(
                    "unknown model '{m}'; this cluster serves '{served_model}'"
                ));
            }
        }
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
                content: m.content.clone(),
            })
            .collect();
        let max_tokens = validate_max_tokens(self.max_completion_tokens.or(self.max_tokens))?;
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
        Ok(Validated {
            messages,
            max_tokens,
            temperature,
            top_p,
            top_k: self.top_k.unwrap_or(0),
            seed: self.seed,
            stop,
            repeat_penalty,
        })
    }
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
            "system" | "developer" | "user" | "assistant"
        ) {
            return Err(format!(
                "messages[{i}].role must be 'system', 'user' or 'assistant', got '{}'",
                m.role
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

/// Error body: `{"error": {"message", "type", "code"}}`.
#[derive(Debug, Serialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize)]
pub struct ErrorDetail {
    pub message: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub code: u16,
}

#[derive(Debug, Serialize)]
pub struct Usage {
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    pub total_tokens: u32,
    pub prompt_tokens_details: PromptTokensDetails,
}

/// Prompt tokens the stages took from their prefix caches.
#[derive(Debug, Serialize, Default)]
pub struct PromptTokensDetails {
    pub cached_tokens: u32,
}

impl Usage {
    pub fn of(f: &crate::serving::Finished) -> Usage {
        Usage {
            prompt_tokens: f.prompt_tokens,
            completion_tokens: f.completion_tokens,
            total_tokens: f.prompt_tokens + f.completion_tokens,
            prompt_tokens_details: PromptTokensDetails {
                cached_tokens: f.cached_tokens,
            },
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Choice {
    pub index: u32,
    pub message: Message,
    pub finish_reason: String,
}

/// Non-streaming response.
#[derive(Debug, Serialize)]
pub struct ChatCompletion {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub model: String,
    pub choices: Vec<Choice>,
    pub usage: Usage,
}

#[derive(Debug, Serialize, Default)]
pub struct Delta {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct ChunkChoice {
    pub index: u32,
    pub delta: Delta,
    pub finish_reason: Option<String>,
}

/// One server-sent event of a streaming response.
#[derive(Debug, Serialize)]
pub struct ChatCompletionChunk {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub model: String,
    pub choices: Vec<ChunkChoice>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

#[derive(Debug, Serialize)]
pub struct ModelCard {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub owned_by: &'static str,
}

#[derive(Debug, Serialize)]
pub struct ModelList {
    pub object: &'static str,
    pub data: Vec<ModelCard>,
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
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
            .validate("m")
            .unwrap();
        assert_eq!(v.max_tokens, DEFAULT_MAX_TOKENS);
        assert!(v.stop.is_empty());
    }

    #[test]
    fn rejects_bad_input() {
        let cases = [
            r#"{"messages":[]}"#,
            r#"{"model":"gpt-4","messages":[{"role":"user","content":"hi"}]}"#,
            r#"{"messages":[{"role":"user","content":"hi"}],"max_tokens":0}"#,
            r#"{"messages":[{"role":"user","content":"hi"}],"max_tokens":100000000}"#,
            r#"{"messages":[{"role":"robot","content":"hi"}]}"#,
            r#"{"messages":[{"role":"user","content":"hi"}],"temperature":5}"#,
        ];
        for c in cases {
            assert!(req(c).validate("m").is_err(), "accepted {c}");
        }
    }

    #[test]
    fn content_parts_and_developer_role() {
        let v = req(r#"{"messages":[{"role":"developer","content":"be brief"},
            {"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]}]}"#)
        .validate("m")
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
                .validate("m")
                .unwrap();
        assert_eq!(v.stop, vec!["END"]);
        let v = req(r#"{"messages":[{"role":"user","content":"x"}],"stop":["a","b"]}"#)
            .validate("m")
            .unwrap();
        assert_eq!(v.stop, vec!["a", "b"]);
    }
}
