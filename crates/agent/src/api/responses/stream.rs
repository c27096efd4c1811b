//! A streamed response: typed, numbered server-sent events.

use std::sync::Arc;

use axum::response::sse::Event;
use axum::response::Response;
use futures::stream::BoxStream;
use futures::StreamExt;
use serde_json::{json, Value};

use super::body::{call_item, finish, message_item, new_id, Echo};
use crate::api::core::{sse_response, ApiError, Fold, Step, Whole};
use crate::api::openai::Message;
use crate::api::App;
use crate::serving::GenEvent;

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
pub(super) fn stream(
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
            s.responses.keep(&echo, &body, conversation);
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
