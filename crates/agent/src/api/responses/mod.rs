//! `POST /v1/responses`, the OpenAI Responses API (what current OpenAI SDKs and agent
//! frameworks default to): text or item input, `instructions`, function tools and
//! function-call items, `text.format` (JSON object or schema), streaming as typed events,
//! and `previous_response_id` over a bounded in-memory store of this agent
//! (`GET`/`DELETE /v1/responses/{id}` too). A request becomes a chat request and runs
//! through the same [`core`](crate::api::core) as `/v1/chat/completions`.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::Json;
use serde_json::{json, Value};

use crate::api::chat::prepare;
use crate::api::core::{self, ApiError, ApiRoute, Fold};
use crate::api::openai::{unix_now, Message};
use crate::api::App;
use crate::metrics::RequestStatus;

mod body;
mod convert;
mod stream;

use body::{call_item, finish, message_item, new_id, Echo};
pub use convert::ResponsesRequest;

/// Responses kept for `previous_response_id` and `GET` (oldest dropped first).
pub const STORE_CAPACITY: usize = 512;

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

    /// Keeps a finished response when its request asked to (`store`, default true).
    fn keep(&self, echo: &Echo, body: &Value, conversation: Vec<Message>) {
        if echo.store {
            let body = body.clone();
            self.put(
                echo.id.clone(),
                Stored {
                    body,
                    messages: conversation,
                },
            );
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

/// The handler of `POST /v1/responses`.
async fn create(State(s): State<Arc<App>>, body: core::RawBody) -> Response {
    let r = async {
        let req: ResponsesRequest = core::parse_body(body)?;
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
        let (chat, conversation) = convert::chat_request(&req, history).map_err(ApiError::bad)?;
        let p = prepare(&s, &chat)?;
        let v = &p.validated;
        let echo = Echo {
            id: new_id("resp"),
            created_at: unix_now(),
            model: s.state.model.id.clone(),
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
            Ok(stream::stream(s.clone(), echo, conversation, events, fold))
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
            s.responses.keep(&echo, &body, conversation);
            Ok::<_, ApiError>(Json(body).into_response())
        }
    };
    r.await.unwrap_or_else(|e| {
        s.state.metrics.finish_request(RequestStatus::Rejected);
        e.into_response()
    })
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
