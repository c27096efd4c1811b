//! Chat messages to prompt tokens through the model's chat template, with tools: given to
//! the template when it renders them, else described in a system message in the generic
//! call format the tool grammar enforces (`<tool_call>\n{"name", "arguments"}\n</tool_call>`).

use engine::constrain::{CALL_CLOSE, CALL_OPEN};
use engine::ChatMessage;
use serde_json::{json, Value};

use crate::api::openai::{validate_messages, Message, ToolCall, ToolSetup};
use crate::node::state::AgentState;
use crate::serving::GenError;

/// Prompt tokens of a chat (generation prompt added).
pub fn chat_tokens(
    state: &AgentState,
    messages: &[Message],
    tools: Option<&ToolSetup>,
) -> Result<Vec<u32>, GenError> {
    validate_messages(messages).map_err(GenError::BadRequest)?;
    let template = &state.model.template;
    let native = template.supports_tools();
    let mut msgs: Vec<ChatMessage> = messages.iter().map(|m| to_chat(m, native)).collect();
    let mut opts = engine::chat::RenderOptions {
        add_generation_prompt: true,
        ..Default::default()
    };
    if let Some(t) = tools {
        let defs = serde_json::to_value(&t.tools).unwrap_or(Value::Null);
        if native {
            opts.tools = Some(defs);
        } else {
            let text = generic_instructions(&defs, t.parallel);
            match msgs.first_mut() {
                Some(m) if m.role == "system" => m.content = format!("{}\n\n{text}", m.content),
                _ => msgs.insert(0, ChatMessage::new("system", &text)),
            }
        }
    }
    let text = template
        .render_with(&msgs, &opts)
        .map_err(|e| GenError::BadRequest(format!("chat template: {e}")))?;
    state
        .model
        .tokenizer
        .encode(&text)
        .map_err(|e| GenError::Internal(format!("tokenizer: {e}")))
}

/// A request message as the template sees it. Assistant calls go as `tool_calls` with
/// their arguments as objects (templates write them with `tojson`) for a template that
/// renders tools, else as the generic call text in the content.
fn to_chat(m: &Message, native: bool) -> ChatMessage {
    let role = if m.role == "developer" {
        "system"
    } else {
        &m.role
    };
    let calls = m.tool_calls.as_deref().unwrap_or_default();
    let mut c = if native || calls.is_empty() {
        ChatMessage::new(role, &m.content)
    } else {
        let mut text = m.content.clone();
        for call in calls {
            if !text.is_empty() {
                text.push('\n');
            }
            text.push_str(&format!("{CALL_OPEN}{}{CALL_CLOSE}", call_json(call)));
        }
        ChatMessage::new(role, &text)
    };
    if native && !calls.is_empty() {
        let calls: Vec<Value> = calls
            .iter()
            .map(|t| {
                json!({"id": t.id, "type": "function",
                       "function": {"name": t.function.name, "arguments": arguments(t)}})
            })
            .collect();
        c = c.with("tool_calls", Value::Array(calls));
    }
    if let Some(id) = &m.tool_call_id {
        c = c.with("tool_call_id", json!(id));
    }
    if let Some(name) = &m.name {
        c = c.with("name", json!(name));
    }
    c
}

/// A call's arguments as JSON (the text as a string if it does not parse).
fn arguments(t: &ToolCall) -> Value {
    serde_json::from_str(&t.function.arguments)
        .unwrap_or_else(|_| Value::String(t.function.arguments.clone()))
}

/// `{"name": ..., "arguments": ...}` of a call, as the grammar writes it.
fn call_json(t: &ToolCall) -> String {
    format!(
        "{{\"name\": {}, \"arguments\": {}}}",
        json!(t.function.name),
        arguments(t)
    )
}

/// The system text describing tools for a template that does not render them.
fn generic_instructions(defs: &Value, parallel: bool) -> String {
    let many = if parallel {
        "one or more calls"
    } else {
        "one call"
    };
    format!(
        "You can call these tools:\n{defs}\n\nTo call a tool, answer with {many}, each as:\n\
         {CALL_OPEN}{{\"name\": <tool name>, \"arguments\": <arguments as a JSON object>}}{CALL_CLOSE}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::openai::FunctionCall;

    fn call() -> ToolCall {
        ToolCall {
            id: "c1".into(),
            kind: "function".into(),
            function: FunctionCall {
                name: "add".into(),
                arguments: r#"{"x": 1}"#.into(),
            },
        }
    }

    #[test]
    fn calls_as_text_or_as_fields() {
        let m = Message {
            role: "assistant".into(),
            tool_calls: Some(vec![call()]),
            ..Default::default()
        };
        let generic = to_chat(&m, false);
        assert_eq!(
            generic.content,
            "<tool_call>\n{\"name\": \"add\", \"arguments\": {\"x\":1}}\n</tool_call>"
        );
        let native = to_chat(&m, true);
        assert_eq!(native.content, "");
        assert_eq!(
            native.extra["tool_calls"][0]["function"]["arguments"]["x"],
            1
        );
    }
}
