//! The response object and its output items (messages, function calls), as the
//! Responses API writes them.

use serde_json::{json, Value};

use crate::api::core::Whole;
use crate::api::openai::{Message, ToolCall, Usage};

/// What a response echoes of its request.
pub(super) struct Echo {
    pub(super) id: String,
    pub(super) created_at: u64,
    pub(super) model: String,
    pub(super) instructions: Option<String>,
    pub(super) max_output_tokens: Option<i64>,
    pub(super) previous_response_id: Option<String>,
    pub(super) temperature: f32,
    pub(super) top_p: f32,
    pub(super) tools: Vec<Value>,
    pub(super) tool_choice: Value,
    pub(super) parallel_tool_calls: bool,
    pub(super) text: Value,
    pub(super) store: bool,
    pub(super) metadata: Value,
}

impl Echo {
    /// The response object (`output` and the rest filled in by the caller).
    pub(super) fn body(&self, status: &str) -> Value {
        json!({
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "error": null,
            "incomplete_details": null,
            "instructions": self.instructions,
            "max_output_tokens": self.max_output_tokens,
            "model": self.model,
            "output": [],
            "parallel_tool_calls": self.parallel_tool_calls,
            "previous_response_id": self.previous_response_id,
            "reasoning": {"effort": null, "summary": null},
            "store": self.store,
            "temperature": self.temperature,
            "text": self.text,
            "tool_choice": self.tool_choice,
            "tools": self.tools,
            "top_p": self.top_p,
            "truncation": "disabled",
            "usage": null,
            "metadata": self.metadata,
        })
    }
}

pub(super) fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::new_v4().simple())
}

pub(super) fn message_item(id: &str, text: &str, status: &str) -> Value {
    let content = if status == "in_progress" {
        json!([])
    } else {
        json!([{"type": "output_text", "text": text, "annotations": [], "logprobs": []}])
    };
    json!({"type": "message", "id": id, "status": status, "role": "assistant", "content": content})
}

pub(super) fn call_item(id: &str, c: &ToolCall, arguments: &str, status: &str) -> Value {
    json!({"type": "function_call", "id": id, "call_id": c.id, "name": c.function.name,
           "arguments": arguments, "status": status})
}

fn usage(u: &Usage) -> Value {
    json!({
        "input_tokens": u.prompt_tokens,
        "input_tokens_details": {"cached_tokens": u.prompt_tokens_details.cached_tokens},
        "output_tokens": u.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": u.total_tokens,
    })
}

/// The finished response object, and the conversation it ends.
pub(super) fn finish(
    echo: &Echo,
    w: &Whole,
    u: &Usage,
    output: Vec<Value>,
    mut conversation: Vec<Message>,
) -> (Value, Vec<Message>) {
    let cut = w.reason == "length";
    let mut body = echo.body(if cut { "incomplete" } else { "completed" });
    if cut {
        body["incomplete_details"] = json!({"reason": "max_output_tokens"});
    }
    body["output"] = Value::Array(output);
    body["usage"] = usage(u);
    conversation.push(Message {
        role: "assistant".into(),
        content: w.content.clone(),
        tool_calls: (!w.calls.is_empty()).then(|| w.calls.clone()),
        ..Default::default()
    });
    (body, conversation)
}
