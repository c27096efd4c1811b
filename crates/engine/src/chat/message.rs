//! One chat message: a role, its text, and any other fields a template may read
//! (`tool_calls`, `tool_call_id`, `name`, `reasoning_content`, content parts …).

use crate::error::{EngineError, Result};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// One chat message as the template sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
    /// Further fields, passed to the template as they are. A `content` here (null, or a
    /// list of parts) replaces the text above.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl ChatMessage {
    /// A plain text message.
    pub fn new(role: &str, content: &str) -> Self {
        ChatMessage {
            role: role.into(),
            content: content.into(),
            extra: Map::new(),
        }
    }

    /// A message from an OpenAI-style JSON object (`role` required; `content` may be a
    /// string, null or a list of parts; `tool_calls`, `tool_call_id`, `name` … kept).
    pub fn from_json(value: Value) -> Result<Self> {
        let Value::Object(mut map) = value else {
            return Err(EngineError::InvalidInput(
                "a chat message must be a JSON object".into(),
            ));
        };
        let role = match map.remove("role") {
            Some(Value::String(r)) => r,
            _ => {
                return Err(EngineError::InvalidInput(
                    "a chat message needs a string 'role'".into(),
                ))
            }
        };
        let content = match map.get("content") {
            Some(Value::String(s)) => {
                let s = s.clone();
                map.remove("content");
                s
            }
            _ => String::new(),
        };
        Ok(ChatMessage {
            role,
            content,
            extra: map,
        })
    }

    /// Adds a field, e.g. `.with("tool_calls", json!([...]))`.
    pub fn with(mut self, key: &str, value: Value) -> Self {
        self.extra.insert(key.into(), value);
        self
    }

    /// The message as the JSON object the template gets: role, content, then the rest.
    pub fn to_json(&self) -> Value {
        let mut map = Map::new();
        map.insert("role".into(), Value::String(self.role.clone()));
        map.insert("content".into(), Value::String(self.content.clone()));
        for (k, v) in &self.extra {
            map.insert(k.clone(), v.clone());
        }
        Value::Object(map)
    }
}
