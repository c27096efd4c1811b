//! `POST /v1/responses`, the OpenAI Responses API (what current OpenAI SDKs and agent
//! frameworks default to): text or item input, `instructions`, function tools and
//! function-call items, `text.format` (JSON object or schema), streaming as typed events,
//! and `previous_response_id` over a bounded in-memory store of this agent
//! (`GET`/`DELETE /v1/responses/{id}` too). A request becomes a chat request and runs
//! through the same [`core`](crate::api::core) as `/v1/chat/completions`.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::sse::Event;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::Json;
use futures::stream::BoxStream;
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::api::chat::prepare;
use crate::api::core::{self, sse_response, ApiError, ApiRoute, Fold, Step, Whole};
use crate::api::openai::*;
use crate::api::App;
use crate::metrics::RequestStatus;
use crate::serving::GenEvent;

/// Responses kept for `previous_response_id` and `GET` (oldest dropped first).
pub const STORE_CAPACITY: usize = 512;

/// Fields accepted without effect on the output (besides the chat API's metadata).
const HARMLESS: &[&str] = &[
    "user",
    "service_tier",
    "prompt_cache_key",
    "safety_identifier",
];

/// Routes of the Responses API.
pub fn routes() -> Vec<ApiRoute> {
    vec![
        ApiRoute::new("POST", "/v1/responses", post(create)),
        ApiRoute::new("GET", "/v1/responses/{id}", get(retrieve)),
        ApiRoute::new("DELETE", "/v1/responses/{id}", delete(remove)),
    ]
}

/// A stored response: its body, and the conversation up to and including its output
/// (without `instructions`, which OpenAI does not carry over to a follow-up).
#[derive(Clone)]
struct Stored {
    body: Value,
    messages: Vec<Message>,
}

/// The bounded store of this agent's responses.
#[derive(Default)]
pub struct Store {
    inner: Mutex<(HashMap<String, Stored>, VecDeque<String>)>,
}

impl Store {
    fn get(&self, id: &str) -> Option<Stored> {
        self.inner.lock().ok()?.0.get(id).cloned()
    }

    fn put(&self, id: String, s: Stored) {
        let Ok(mut g) = self.inner.lock() else { return };
        let (map, order) = &mut *g;
        if map.insert(id.clone(), s).is_none() {
            order.push_back(id);
        }
        while order.len() > STORE_CAPACITY {
            if let Some(old) = order.pop_front() {
                map.remove(&old);
            }
        }
    }

    fn remove(&self, id: &str) -> bool {
        let Ok(mut g) = self.inner.lock() else {
            return false;
        };
        let (map, order) = &mut *g;
        order.retain(|k| k != id);
        map.remove(id).is_some()
    }
}

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

fn message(role: &str, content: String) -> Message {
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
fn chat_request(
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

/// What a response echoes of its request.
struct Echo {
    id: String,
    created_at: u64,
    model: String,
    instructions: Option<String>,
    max_output_tokens: Option<i64>,
    previous_response_id: Option<String>,
    temperature: f32,
    top_p: f32,
    tools: Vec<Value>,
    tool_choice: Value,
    parallel_tool_calls: bool,
    text: Value,
    store: bool,
    metadata: Value,
}

impl Echo {
    /// The response object (`output` and the rest filled in by the caller).
    fn body(&self, status: &str) -> Value {
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

fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::new_v4().simple())
}

fn message_item(id: &str, text: &str, status: &str) -> Value {
    let content = if status == "in_progress" {
        json!([])
    } else {
        json!([{"type": "output_text", "text": text, "annotations": [], "logprobs": []}])
    };
    json!({"type": "message", "id": id, "status": status, "role": "assistant", "content": content})
}

fn call_item(id: &str, c: &ToolCall, arguments: &str, status: &str) -> Value {
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
fn finish(
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

/// The handler of `POST /v1/responses`.
async fn create(State(s): State<Arc<App>>, body: Bytes) -> Response {
    let r = async {
        let req: ResponsesRequest = core::parse_body(&body)?;
        let history = match req.previous_response_id.as_deref() {
            None => Vec::new(),
            Some(id) => {
                s.responses
                    .get(id)
                    .ok_or_else(|| ApiError {
                        code: Some("previous_response_not_found"),
                        param: Some("previous_response_id"),
                        ..ApiError::new(
                            StatusCode::NOT_FOUND,
                            format!(
                                "Previous response with id '{id}' not found (this agent keeps \
                                 its last {STORE_CAPACITY} stored responses; send follow-ups \
                                 to the agent that answered)"
                            ),
                        )
                    })?
                    .messages
            }
        };
        let (chat, conversation) = chat_request(&req, history).map_err(ApiError::bad)?;
        let p = prepare(&s, &chat)?;
        let v = &p.validated;
        let echo = Echo {
            id: new_id("resp"),
            created_at: unix_now(),
            model: s.model.id.clone(),
            instructions: req.instructions.clone(),
            max_output_tokens: req.max_output_tokens,
            previous_response_id: req.previous_response_id.clone(),
            temperature: v.params.temperature,
            top_p: v.params.top_p,
            tools: req.tools.clone().unwrap_or_default(),
            tool_choice: req.tool_choice.clone().unwrap_or(json!("auto")),
            parallel_tool_calls: req.parallel_tool_calls.unwrap_or(false),
            text: req
                .text
                .clone()
                .unwrap_or_else(|| json!({"format": {"type": "text"}})),
            store: req.store.unwrap_or(true),
            metadata: req.metadata.clone().unwrap_or_else(|| json!({})),
        };
        let events = core::start_choices(
            &s.serving,
            &echo.id,
            p.prompt_tokens,
            &v.params,
            p.constraint.as_ref(),
            1,
        )?;
        let fold = Fold::new(1, v.tools.as_ref().map(|t| t.mode));
        if v.stream {
            Ok(stream(s.clone(), echo, conversation, events, fold))
        } else {
            let (wholes, u) = core::collect(events, fold).await?;
            let w = &wholes[0];
            let mut output = Vec::new();
            if !w.content.is_empty() || w.calls.is_empty() {
                output.push(message_item(&new_id("msg"), &w.content, "completed"));
            }
            for c in &w.calls {
                output.push(call_item(
                    &new_id("fc"),
                    c,
                    &c.function.arguments,
                    "completed",
                ));
            }
            let (body, conversation) = finish(&echo, w, &u, output, conversation);
            if echo.store {
                s.responses.put(
                    echo.id.clone(),
                    Stored {
                        body: body.clone(),
                        messages: conversation,
                    },
                );
            }
            Ok::<_, ApiError>(Json(body).into_response())
        }
    };
    r.await.unwrap_or_else(|e| {
        s.metrics.finish_request(RequestStatus::Rejected);
        e.into_response()
    })
}

/// The typed events of a streamed response, numbered.
struct Events {
    tx: tokio::sync::mpsc::Sender<Event>,
    seq: u64,
}

impl Events {
    /// Sends one event; false when the client left.
    async fn send(&mut self, kind: &str, mut data: Value) -> bool {
        data["type"] = json!(kind);
        data["sequence_number"] = json!(self.seq);
        self.seq += 1;
        let e = Event::default().event(kind).data(data.to_string());
        self.tx.send(e).await.is_ok()
    }
}

/// Streams the response: `response.created`, the output items as they grow, then
/// `response.completed` (`response.incomplete` when cut by `max_output_tokens`,
/// `response.failed` on an error).
fn stream(
    s: Arc<App>,
    echo: Echo,
    conversation: Vec<Message>,
    mut events: BoxStream<'static, (u32, GenEvent)>,
    mut fold: Fold,
) -> Response {
    let (tx, rx) = tokio::sync::mpsc::channel::<Event>(64);
    tokio::spawn(async move {
        let mut ev = Events { tx, seq: 0 };
        let created = json!({"response": echo.body("in_progress")});
        if !ev.send("response.created", created.clone()).await
            || !ev.send("response.in_progress", created).await
        {
            return;
        }
        let msg_id = new_id("msg");
        let mut text = String::new();
        let mut open = false;
        let mut output = Vec::new();
        while let Some((i, e)) = events.next().await {
            let step = match fold.step(i, e) {
                Ok(None) => continue,
                Ok(Some(step)) => step,
                Err(e) => {
                    let err = ApiError::from(e);
                    let mut body = echo.body("failed");
                    body["error"] = json!({"code": "server_error", "message": err.message});
                    let _ = ev.send("response.failed", json!({"response": body})).await;
                    return;
                }
            };
            let (delta, end) = match step {
                Step::Delta { text, .. } => (text, None),
                Step::End { ending, .. } => {
                    (ending.content.clone().unwrap_or_default(), Some(ending))
                }
            };
            let at = json!({"item_id": msg_id, "output_index": 0, "content_index": 0});
            let needs_message =
                !delta.is_empty() || end.as_ref().is_some_and(|e| e.calls.is_empty());
            if needs_message && !open {
                open = true;
                let item = message_item(&msg_id, "", "in_progress");
                let part = json!({"type": "output_text", "text": "", "annotations": []});
                if !ev
                    .send(
                        "response.output_item.added",
                        json!({"output_index": 0, "item": item}),
                    )
                    .await
                    || !ev
                        .send(
                            "response.content_part.added",
                            merge(&at, json!({"part": part})),
                        )
                        .await
                {
                    return;
                }
            }
            if !delta.is_empty() {
                text.push_str(&delta);
                let d = merge(&at, json!({"delta": delta, "logprobs": []}));
                if !ev.send("response.output_text.delta", d).await {
                    return;
                }
            }
            let Some(ending) = end else { continue };
            if open {
                let part = json!({"type": "output_text", "text": text, "annotations": []});
                let item = message_item(&msg_id, &text, "completed");
                let ok = ev
                    .send(
                        "response.output_text.done",
                        merge(&at, json!({"text": text, "logprobs": []})),
                    )
                    .await
                    && ev
                        .send(
                            "response.content_part.done",
                            merge(&at, json!({"part": part})),
                        )
                        .await
                    && ev
                        .send(
                            "response.output_item.done",
                            json!({"output_index": 0, "item": item.clone()}),
                        )
                        .await;
                if !ok {
                    return;
                }
                output.push(item);
            }
            for c in &ending.calls {
                let k = output.len();
                let id = new_id("fc");
                let args = &c.function.arguments;
                let at = json!({"item_id": id, "output_index": k});
                let ok = ev
                    .send(
                        "response.output_item.added",
                        json!({"output_index": k, "item": call_item(&id, c, "", "in_progress")}),
                    )
                    .await
                    && ev
                        .send(
                            "response.function_call_arguments.delta",
                            merge(&at, json!({"delta": args})),
                        )
                        .await
                    && ev
                        .send(
                            "response.function_call_arguments.done",
                            merge(&at, json!({"arguments": args, "name": c.function.name})),
                        )
                        .await;
                let item = call_item(&id, c, args, "completed");
                if !ok
                    || !ev
                        .send(
                            "response.output_item.done",
                            json!({"output_index": k, "item": item.clone()}),
                        )
                        .await
                {
                    return;
                }
                output.push(item);
            }
            let w = Whole {
                content: text.clone(),
                calls: ending.calls,
                sampled: Vec::new(),
                reason: ending.reason,
                finished: ending.finished,
            };
            let (body, conversation) = finish(&echo, &w, &fold.usage(), output, conversation);
            if echo.store {
                s.responses.put(
                    echo.id.clone(),
                    Stored {
                        body: body.clone(),
                        messages: conversation,
                    },
                );
            }
            let kind = if w.reason == "length" {
                "response.incomplete"
            } else {
                "response.completed"
            };
            let _ = ev.send(kind, json!({"response": body})).await;
            return;
        }
    });
    sse_response(rx)
}

/// `a`'s fields with `b`'s added.
fn merge(a: &Value, b: Value) -> Value {
    let mut out = a.clone();
    if let (Some(o), Value::Object(extra)) = (out.as_object_mut(), b) {
        o.extend(extra);
    }
    out
}

fn not_found(id: &str) -> ApiError {
    ApiError {
        code: Some("response_not_found"),
        ..ApiError::new(
            StatusCode::NOT_FOUND,
            format!("Response with id '{id}' not found"),
        )
    }
}

/// `GET /v1/responses/{id}`: a stored response.
async fn retrieve(State(s): State<Arc<App>>, Path(id): Path<String>) -> Response {
    match s.responses.get(&id) {
        Some(r) => Json(r.body).into_response(),
        None => not_found(&id).into_response(),
    }
}

/// `DELETE /v1/responses/{id}`.
async fn remove(State(s): State<Arc<App>>, Path(id): Path<String>) -> Response {
    if s.responses.remove(&id) {
        Json(json!({"id": id, "object": "response", "deleted": true})).into_response()
    } else {
        not_found(&id).into_response()
    }
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
                json!({"input": "x", "text": {"format": {"type": "json_schema"}}}),
                "schema",
            ),
        ] {
            let e = chat_request(&req(v.clone()), Vec::new()).unwrap_err();
            assert!(e.contains(what), "{v}: {e}");
        }
    }

    #[test]
    fn the_store_is_bounded() {
        let s = Store::default();
        for i in 0..STORE_CAPACITY + 3 {
            s.put(
                format!("r{i}"),
                Stored {
                    body: json!(i),
                    messages: Vec::new(),
                },
            );
        }
        assert!(s.get("r0").is_none() && s.get("r2").is_none());
        assert!(s.get("r3").is_some());
        assert!(s.remove("r3") && !s.remove("r3"));
    }
}
