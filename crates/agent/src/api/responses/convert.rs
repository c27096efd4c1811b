//! A Responses request as a chat request: `input` items as chat turns, Responses tools
//! (flat) as chat tools, `text.format` as `response_format`; fields that would change
//! the output without this server doing it are refused by name.

use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::api::openai::*;

/// Fields accepted without effect on the output (besides the chat API's metadata).
pub(super) const HARMLESS: &[&str] = &[
    "user",
    "service_tier",
    "prompt_cache_key",
    "safety_identifier",
];

/// `POST /v1/responses` body.
#[derive(Debug, Deserialize)]
pub struct ResponsesRequest {
    #[serde(default)]
    pub model: Option<String>,
    pub input: Value,
    #[serde(default)]
    pub instructions: Option<String>,
    #[serde(default)]
    pub max_output_tokens: Option<i64>,
    #[serde(default)]
    pub temperature: Option<f32>,
    #[serde(default)]
    pub top_p: Option<f32>,
    /// An extension (as llama-server takes it): reproducible sampling.
    #[serde(default)]
    pub seed: Option<u64>,
    #[serde(default)]
    pub stream: bool,
    #[serde(default)]
    pub tools: Option<Vec<Value>>,
    #[serde(default)]
    pub tool_choice: Option<Value>,
    #[serde(default)]
    pub parallel_tool_calls: Option<bool>,
    #[serde(default)]
    pub text: Option<Value>,
    #[serde(default)]
    pub previous_response_id: Option<String>,
    #[serde(default)]
    pub store: Option<bool>,
    #[serde(default)]
    pub metadata: Option<Value>,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// Refuses fields that would change the output without this server doing it.
fn check_fields(other: &Map<String, Value>) -> Result<(), String> {
    let mut rest = Map::new();
    for (k, v) in other {
        let harmless = HARMLESS.contains(&k.as_str())
            || v.is_null()
            || (k == "truncation" && v == "disabled")
            || (k == "background" && v == false)
            || (k == "include" && v.as_array().is_some_and(Vec::is_empty));
        if !harmless {
            rest.insert(k.clone(), v.clone());
        }
    }
    check_other(&rest)
}

/// The text of a message's content: a string, or a list of text parts.
fn content_text(v: &Value, at: &str) -> Result<String, String> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Null => Ok(String::new()),
        Value::Array(parts) => {
            let mut text = String::new();
            for (k, p) in parts.iter().enumerate() {
                match p.get("type").and_then(Value::as_str) {
                    Some("input_text" | "output_text" | "text") => text.push_str(
                        p.get("text")
                            .and_then(Value::as_str)
                            .ok_or(format!("{at}.content[{k}]: a text part needs 'text'"))?,
                    ),
                    Some(t) => {
                        return Err(format!(
                        "{at}.content[{k}]: content type '{t}' is not supported (text-only model: \
                         input_text, output_text)"
                    ))
                    }
                    None => return Err(format!("{at}.content[{k}]: a content part needs 'type'")),
                }
            }
            Ok(text)
        }
        other => Err(format!(
            "{at}.content must be a string or a list of parts, got {other}"
        )),
    }
}

fn str_field<'a>(item: &'a Value, key: &str, at: &str) -> Result<&'a str, String> {
    item.get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| format!("{at}: '{key}' (a string) is required"))
}

/// `input` as chat messages: a string is one user turn; items are messages,
/// `function_call` (an assistant's call) and `function_call_output` (its result).
fn input_messages(input: &Value) -> Result<Vec<Message>, String> {
    let items = match input {
        Value::String(s) => return Ok(vec![message("user", s.clone())]),
        Value::Array(items) => items,
        other => {
            return Err(format!(
                "'input' must be a string or a list of items, got {other}"
            ))
        }
    };
    let mut out: Vec<Message> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let at = format!("input[{i}]");
        let kind = item
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("message");
        match kind {
            "message" => {
                let role = str_field(item, "role", &at)?;
                let content = content_text(item.get("content").unwrap_or(&Value::Null), &at)?;
                out.push(message(role, content));
            }
            "function_call" => {
                let call = ToolCall {
                    id: str_field(item, "call_id", &at)?.into(),
                    kind: "function".into(),
                    function: FunctionCall {
                        name: str_field(item, "name", &at)?.into(),
                        arguments: str_field(item, "arguments", &at)?.into(),
                    },
                };
                // Consecutive calls belong to one assistant turn.
                match out.last_mut() {
                    Some(m) if m.role == "assistant" && m.tool_calls.is_some() => {
                        m.tool_calls.get_or_insert_with(Vec::new).push(call)
                    }
                    _ => out.push(Message {
                        role: "assistant".into(),
                        tool_calls: Some(vec![call]),
                        ..Default::default()
                    }),
                }
            }
            "function_call_output" => {
                let output = match item.get("output") {
                    Some(Value::String(s)) => s.clone(),
                    Some(v @ Value::Array(_)) => content_text(v, &at)?,
                    _ => return Err(format!("{at}: 'output' (a string) is required")),
                };
                out.push(Message {
                    role: "tool".into(),
                    content: output,
                    tool_call_id: Some(str_field(item, "call_id", &at)?.into()),
                    ..Default::default()
                });
            }
            other => {
                return Err(format!(
                    "{at}: item type '{other}' is not supported (message, function_call, \
                     function_call_output)"
                ))
            }
        }
    }
    Ok(out)
}

pub(super) fn message(role: &str, content: String) -> Message {
    Message {
        role: role.into(),
        content,
        ..Default::default()
    }
}

/// Responses tools (`{"type": "function", "name", "parameters", ...}`) as chat tools.
fn chat_tools(tools: &[Value]) -> Result<Vec<Tool>, String> {
    tools
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let at = format!("tools[{i}]");
            match t.get("type").and_then(Value::as_str) {
                Some("function") => {}
                Some(other) => {
                    return Err(format!(
                        "{at}: tool type '{other}' is not supported (only 'function')"
                    ))
                }
                None => return Err(format!("{at}: 'type' is required")),
            }
            Ok(Tool {
                kind: "function".into(),
                function: FunctionDef {
                    name: str_field(t, "name", &at)?.into(),
                    description: t.get("description").and_then(Value::as_str).map(Into::into),
                    parameters: t.get("parameters").filter(|p| !p.is_null()).cloned(),
                    strict: t.get("strict").and_then(Value::as_bool),
                },
            })
        })
        .collect()
}

/// `tool_choice` in the chat API's form (`{"type": "function", "name"}` nests the name).
fn chat_tool_choice(c: &Value) -> Value {
    match c.get("name") {
        Some(name) if c.get("function").is_none() => {
            json!({"type": "function", "function": {"name": name}})
        }
        _ => c.clone(),
    }
}

/// `text.format` as a chat `response_format`.
fn response_format(text: Option<&Value>) -> Result<Option<ResponseFormat>, String> {
    if let Some(t) = text.filter(|t| !t.is_null()) {
        let obj = t.as_object().ok_or("'text' must be an object")?;
        // `verbosity` would change the answer without this server doing it.
        if let Some(k) = obj.keys().find(|k| k.as_str() != "format") {
            return Err(format!(
                "the field 'text.{k}' is not supported by this server"
            ));
        }
    }
    let Some(format) = text.and_then(|t| t.get("format")).filter(|f| !f.is_null()) else {
        return Ok(None);
    };
    let kind = str_field(format, "type", "text.format")?;
    let json_schema = (kind == "json_schema").then(|| JsonSchemaFormat {
        name: format.get("name").and_then(Value::as_str).map(Into::into),
        schema: format.get("schema").cloned(),
        strict: format.get("strict").and_then(Value::as_bool),
    });
    if kind == "json_schema" && format.get("schema").is_none() {
        return Err("text.format json_schema needs 'schema'".into());
    }
    Ok(Some(ResponseFormat {
        kind: kind.into(),
        json_schema,
        schema: None,
    }))
}

/// The request as a chat request over the whole conversation.
pub(super) fn chat_request(
    req: &ResponsesRequest,
    history: Vec<Message>,
) -> Result<(ChatCompletionRequest, Vec<Message>), String> {
    check_fields(&req.other)?;
    let mut conversation = history;
    conversation.extend(input_messages(&req.input)?);
    let mut messages = Vec::with_capacity(conversation.len() + 1);
    if let Some(i) = req.instructions.as_ref().filter(|i| !i.is_empty()) {
        messages.push(message("system", i.clone()));
    }
    messages.extend(conversation.iter().cloned());
    let chat = ChatCompletionRequest {
        model: req.model.clone(),
        messages,
        sampling: SamplingFields {
            stream: req.stream,
            temperature: req.temperature,
            top_p: req.top_p,
            seed: req.seed,
            ..Default::default()
        },
        max_completion_tokens: req.max_output_tokens,
        logprobs: None,
        top_logprobs: None,
        response_format: response_format(req.text.as_ref())?,
        tools: req.tools.as_deref().map(chat_tools).transpose()?,
        tool_choice: req.tool_choice.as_ref().map(chat_tool_choice),
        parallel_tool_calls: req.parallel_tool_calls,
        other: Map::new(),
    };
    Ok((chat, conversation))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(v: Value) -> ResponsesRequest {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn input_items_become_chat_turns() {
        let r = req(json!({
            "instructions": "be brief",
            "input": [
                {"role": "user", "content": [{"type": "input_text", "text": "2+3?"}]},
                {"type": "function_call", "call_id": "c1", "name": "add", "arguments": "{\"a\":2}"},
                {"type": "function_call_output", "call_id": "c1", "output": "5"},
            ],
            "tools": [{"type": "function", "name": "add", "parameters": {"type": "object"}}],
            "tool_choice": {"type": "function", "name": "add"},
            "text": {"format": {"type": "json_schema", "name": "x", "schema": {"type": "object"}}},
            "max_output_tokens": 16,
            "store": false, "user": "u", "truncation": "disabled", "include": [],
        }));
        let (chat, conv) = chat_request(&r, vec![message("user", "hi".into())]).unwrap();
        let roles: Vec<_> = chat.messages.iter().map(|m| m.role.as_str()).collect();
        assert_eq!(roles, ["system", "user", "user", "assistant", "tool"]);
        assert_eq!(
            conv.len(),
            4,
            "instructions are not part of the conversation"
        );
        assert_eq!(
            chat.messages[3].tool_calls.as_ref().unwrap()[0]
                .function
                .name,
            "add"
        );
        assert_eq!(chat.messages[4].tool_call_id.as_deref(), Some("c1"));
        assert_eq!(chat.tools.as_ref().unwrap()[0].function.name, "add");
        assert_eq!(chat.tool_choice.unwrap()["function"]["name"], "add");
        assert_eq!(chat.response_format.unwrap().kind, "json_schema");
        assert_eq!(chat.max_completion_tokens, Some(16));
    }

    #[test]
    fn unsupported_input_is_refused_by_name() {
        for (v, what) in [
            (json!({"input": 5}), "'input'"),
            (
                json!({"input": [{"role": "user", "content": [{"type": "input_image"}]}]}),
                "input_image",
            ),
            (json!({"input": [{"type": "reasoning"}]}), "reasoning"),
            (
                json!({"input": "x", "tools": [{"type": "web_search"}]}),
                "web_search",
            ),
            (
                json!({"input": "x", "reasoning": {"effort": "high"}}),
                "reasoning",
            ),
            (json!({"input": "x", "truncation": "auto"}), "truncation"),
            (
                json!({"input": "x", "text": {"verbosity": "low"}}),
                "text.verbosity",
            ),
            (
                json!({"input": "x", "text": {"format": {"type": "json_schema"}}}),
                "schema",
            ),
        ] {
            let e = chat_request(&req(v.clone()), Vec::new()).unwrap_err();
            assert!(e.contains(what), "{v}: {e}");
        }
    }
}
