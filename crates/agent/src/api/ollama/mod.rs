//! The Ollama API on the API port: `/api/chat` and `/api/generate` (NDJSON streaming by
//! default), `/api/tags`, `/api/show`, `/api/ps` and `/api/version`, so Ollama clients
//! and web UIs (Open WebUI) connect unchanged. Errors are Ollama's `{"error": "..."}`
//! with the HTTP status. Request bodies are read as JSON whatever their content type
//! (`curl -d` sends none that says so).

mod model;
mod types;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Json;
use futures::stream::BoxStream;
use futures::StreamExt;
use serde_json::{json, Value};

use crate::api::core::{self, ApiError, ApiRoute, Fold, Step, RETRY_AFTER_SECS};
use crate::api::App;
use crate::metrics::RequestStatus;
use crate::serving::{Finished, GenError, GenEvent};
use model::{facts, matches, ollama_name, rfc3339};
use types::{ChatRequest, GenerateRequest, Plan};

type AppState = Arc<App>;

/// Routes of the Ollama API.
pub fn routes() -> Vec<ApiRoute> {
    vec![
        ApiRoute::new("POST", "/api/chat", post(chat)),
        ApiRoute::new("POST", "/api/generate", post(generate)),
        ApiRoute::new("GET", "/api/tags", get(tags)),
        ApiRoute::new("POST", "/api/show", post(show)),
        ApiRoute::new("GET", "/api/ps", get(ps)),
        ApiRoute::new("GET", "/api/version", get(version)),
    ]
}

/// An error in Ollama's format: `{"error": "..."}` with the status (429 with
/// `Retry-After`).
#[derive(Debug)]
pub struct OllamaError {
    pub status: StatusCode,
    pub message: String,
}

impl OllamaError {
    fn bad(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }
}

impl From<GenError> for OllamaError {
    fn from(e: GenError) -> Self {
        let ApiError {
            status, message, ..
        } = e.into();
        Self { status, message }
    }
}

impl IntoResponse for OllamaError {
    fn into_response(self) -> Response {
        let mut resp = (self.status, Json(json!({"error": self.message}))).into_response();
        if self.status == StatusCode::TOO_MANY_REQUESTS {
            resp.headers_mut().insert(
                header::RETRY_AFTER,
                header::HeaderValue::from_static(RETRY_AFTER_SECS),
            );
        }
        resp
    }
}

fn parse<T: serde::de::DeserializeOwned>(body: core::RawBody) -> Result<T, OllamaError> {
    let body = body.map_err(|r| OllamaError {
        status: r.status(),
        message: r.body_text(),
    })?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(OllamaError::bad("missing request body"));
    }
    serde_json::from_slice(&body).map_err(|e| OllamaError::bad(format!("invalid request: {e}")))
}

/// The name to answer with: the requested one when it means the served model (404
/// otherwise, as Ollama says it); the served name when none was given.
fn model_name(s: &App, requested: &str) -> Result<String, OllamaError> {
    if requested.is_empty() {
        return Ok(ollama_name(&s.state.model));
    }
    if matches(requested, &s.state.model) {
        return Ok(requested.to_string());
    }
    Err(OllamaError {
        status: StatusCode::NOT_FOUND,
        message: format!(
            "model \"{requested}\" not found, try pulling it first (this server serves \"{}\")",
            ollama_name(&s.state.model)
        ),
    })
}

/// `/api/chat` answers with `message`, `/api/generate` with `response`.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Chat,
    Generate,
}

/// One answer line (not done) carrying `text`.
fn line(kind: Kind, model: &str, text: &str) -> Value {
    let mut v = json!({"model": model, "created_at": rfc3339(SystemTime::now()), "done": false});
    match kind {
        Kind::Chat => v["message"] = json!({"role": "assistant", "content": text}),
        Kind::Generate => v["response"] = json!(text),
    }
    v
}

/// Marks `v` done with the totals (durations in ns). `load_duration` is the time before
/// generation started (tokenizing, waiting for admission): the model is always loaded.
fn done(mut v: Value, f: &Finished, t0: Instant) -> Value {
    let ns = |d: Duration| d.as_nanos() as u64;
    let elapsed = t0.elapsed();
    v["done"] = json!(true);
    v["done_reason"] = json!(f.finish_reason);
    v["total_duration"] = json!(ns(elapsed));
    v["load_duration"] = json!(ns(elapsed.saturating_sub(f.total)));
    v["prompt_eval_count"] = json!(f.prompt_tokens);
    v["prompt_eval_duration"] = json!(ns(f.ttft));
    v["eval_count"] = json!(f.completion_tokens);
    v["eval_duration"] = json!(ns(f.total.saturating_sub(f.ttft)));
    v
}

/// The answer to a "load" call (no prompt): done at once, `done_reason` "load" (or
/// "unload" with `keep_alive: 0`; the model stays loaded either way).
fn loaded(kind: Kind, model: &str, unload: bool) -> Response {
    let mut v = line(kind, model, "");
    v["done"] = json!(true);
    v["done_reason"] = json!(if unload { "unload" } else { "load" });
    Json(v).into_response()
}

/// Counts a request refused before generation, as the OpenAI API does.
fn rejected(s: &App, r: Result<Response, OllamaError>) -> Response {
    r.unwrap_or_else(|e| {
        s.state.metrics.finish_request(RequestStatus::Rejected);
        e.into_response()
    })
}

async fn chat(State(s): State<AppState>, body: core::RawBody) -> Response {
    let t0 = Instant::now();
    let r = async {
        let req: ChatRequest = parse(body)?;
        let model = model_name(&s, &req.common.model)?;
        let messages = req.messages().map_err(OllamaError::bad)?;
        let plan = req.common.plan().map_err(OllamaError::bad)?;
        if messages.is_empty() {
            return Ok(loaded(Kind::Chat, &model, req.common.unload()));
        }
        let tokens = render(&s, &messages)?;
        run(&s, Kind::Chat, model, tokens, plan, req.common.stream(), t0).await
    };
    rejected(&s, r.await)
}

async fn generate(State(s): State<AppState>, body: core::RawBody) -> Response {
    let t0 = Instant::now();
    let r = async {
        let req: GenerateRequest = parse(body)?;
        let model = model_name(&s, &req.common.model)?;
        req.check().map_err(OllamaError::bad)?;
        let plan = req.common.plan().map_err(OllamaError::bad)?;
        let prompt = req.prompt.as_deref().unwrap_or("");
        let system = req.system.as_deref().unwrap_or("");
        if prompt.is_empty() && system.is_empty() {
            return Ok(loaded(Kind::Generate, &model, req.common.unload()));
        }
        let tokens = if req.raw == Some(true) {
            encode(&s, prompt)?
        } else {
            let mut msgs = Vec::new();
            if !system.is_empty() {
                msgs.push(engine::ChatMessage::new("system", system));
            }
            msgs.push(engine::ChatMessage::new("user", prompt));
            render(&s, &msgs)?
        };
        run(
            &s,
            Kind::Generate,
            model,
            tokens,
            plan,
            req.common.stream(),
            t0,
        )
        .await
    };
    rejected(&s, r.await)
}

/// The conversation through the model's chat template, tokenized.
fn render(s: &App, msgs: &[engine::ChatMessage]) -> Result<Vec<u32>, OllamaError> {
    let text = s
        .state
        .model
        .template
        .render(msgs, true)
        .map_err(|e| OllamaError::bad(format!("chat template: {e}")))?;
    encode(s, &text)
}

fn encode(s: &App, text: &str) -> Result<Vec<u32>, OllamaError> {
    s.state
        .model
        .tokenizer
        .encode(text)
        .map_err(|e| GenError::Internal(format!("tokenizer: {e}")).into())
}

/// Starts the generation and answers: NDJSON lines when streaming, one object otherwise.
async fn run(
    s: &App,
    kind: Kind,
    model: String,
    prompt_tokens: Vec<u32>,
    plan: Plan,
    stream: bool,
    t0: Instant,
) -> Result<Response, OllamaError> {
    let mut params = plan.params;
    params.max_tokens = types::max_tokens(
        plan.predict,
        prompt_tokens.len(),
        s.state.model.info.context_length,
    );
    let events = core::start_choices(
        &s.serving,
        &format!("ollama-{}", uuid::Uuid::new_v4().simple()),
        prompt_tokens,
        &params,
        plan.constraint.as_ref(),
        1,
    )?;
    if stream {
        Ok(stream_lines(kind, model, events, t0))
    } else {
        collect(kind, model, events, t0).await
    }
}

fn ndjson(v: &Value) -> String {
    let mut s = v.to_string();
    s.push('\n');
    s
}

/// Streams one line per piece of text, then the done line (or an `{"error"}` line).
/// Dropping the body (the client went away) drops the events, which cancels.
fn stream_lines(
    kind: Kind,
    model: String,
    events: BoxStream<'static, (u32, GenEvent)>,
    t0: Instant,
) -> Response {
    let mut fold = Fold::new(1, None);
    let body = events
        .filter_map(move |(i, ev)| {
            let out = match fold.step(i, ev) {
                Ok(Some(Step::Delta { text, .. })) if !text.is_empty() => {
                    Some(ndjson(&line(kind, &model, &text)))
                }
                Ok(None | Some(Step::Delta { .. })) => None,
                Ok(Some(Step::End { ending, .. })) => {
                    let text = ending.content.unwrap_or_default();
                    Some(ndjson(&done(
                        line(kind, &model, &text),
                        &ending.finished,
                        t0,
                    )))
                }
                Err(e) => Some(ndjson(&json!({"error": e.to_string()}))),
            };
            futures::future::ready(out.map(Ok::<_, Infallible>))
        })
        .boxed();
    (
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(body),
    )
        .into_response()
}

async fn collect(
    kind: Kind,
    model: String,
    events: BoxStream<'static, (u32, GenEvent)>,
    t0: Instant,
) -> Result<Response, OllamaError> {
    let (wholes, _) = core::collect(events, Fold::new(1, None)).await?;
    let w = wholes
        .into_iter()
        .next()
        .ok_or_else(|| GenError::Internal("generation ended without a result".into()))?;
    Ok(Json(done(line(kind, &model, &w.content), &w.finished, t0)).into_response())
}

async fn model_facts(s: &App) -> Arc<model::Facts> {
    let path = s.state.model.path.clone();
    tokio::task::spawn_blocking(move || facts(&path))
        .await
        .unwrap_or_default()
}

async fn tags(State(s): State<AppState>) -> Json<Value> {
    let f = model_facts(&s).await;
    Json(json!({"models": [model::entry(&s.state.model, &f)]}))
}

/// Far in the future: the model is never unloaded.
const NEVER: &str = "2999-12-31T23:59:59Z";

async fn ps(State(s): State<AppState>) -> Json<Value> {
    let f = model_facts(&s).await;
    let mut e = model::entry(&s.state.model, &f);
    e["expires_at"] = json!(NEVER);
    e["size_vram"] = json!(0);
    e["context_length"] = json!(s.state.model.info.context_length);
    Json(json!({"models": [e]}))
}

async fn show(State(s): State<AppState>, body: core::RawBody) -> Result<Json<Value>, OllamaError> {
    let req: Value = parse(body)?;
    let name = ["model", "name"]
        .iter()
        .find_map(|k| req[k].as_str().filter(|n| !n.is_empty()))
        .ok_or_else(|| OllamaError::bad("'model' is required"))?;
    if !matches(name, &s.state.model) {
        return Err(OllamaError {
            status: StatusCode::NOT_FOUND,
            message: format!("model '{name}' not found"),
        });
    }
    let f = model_facts(&s).await;
    Ok(Json(model::show(&s.state.model, &f)))
}

async fn version() -> Json<Value> {
    Json(json!({"version": env!("CARGO_PKG_VERSION")}))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Bytes;

    fn finished() -> Finished {
        Finished {
            finish_reason: "length",
            prompt_tokens: 7,
            completion_tokens: 3,
            cached_tokens: 0,
            ttft: Duration::from_millis(20),
            total: Duration::from_millis(50),
            tokens_per_second: 0.0,
        }
    }

    #[test]
    fn lines_have_ollamas_shape() {
        let c = line(Kind::Chat, "m:latest", "Hi");
        assert_eq!(c["message"], json!({"role": "assistant", "content": "Hi"}));
        assert_eq!(
            (c["model"].as_str(), c["done"].as_bool()),
            (Some("m:latest"), Some(false))
        );
        assert!(c["created_at"].as_str().unwrap().ends_with('Z'));
        let g = done(line(Kind::Generate, "m", "x"), &finished(), Instant::now());
        assert_eq!(g["response"], "x");
        assert_eq!(
            (g["done"].as_bool(), g["done_reason"].as_str()),
            (Some(true), Some("length"))
        );
        assert_eq!(
            (g["prompt_eval_count"].as_u64(), g["eval_count"].as_u64()),
            (Some(7), Some(3))
        );
        assert_eq!(g["prompt_eval_duration"], 20_000_000);
        assert_eq!(g["eval_duration"], 30_000_000);
        assert!(ndjson(&g).ends_with("}\n"));
    }

    #[test]
    fn errors_are_ollamas() {
        let e = OllamaError::from(GenError::Busy("full".into()));
        assert_eq!(e.status, StatusCode::TOO_MANY_REQUESTS);
        let r = e.into_response();
        assert!(r.headers().contains_key(header::RETRY_AFTER));
        let e = OllamaError::from(GenError::Unavailable("no plan".into()));
        assert_eq!(
            (e.status, e.message.as_str()),
            (StatusCode::SERVICE_UNAVAILABLE, "no plan")
        );
        assert_eq!(
            parse::<Value>(Ok(Bytes::from_static(b" ")))
                .unwrap_err()
                .message,
            "missing request body"
        );
        assert_eq!(
            parse::<Value>(Ok(Bytes::from_static(b"{")))
                .unwrap_err()
                .status,
            StatusCode::BAD_REQUEST
        );
    }
}
