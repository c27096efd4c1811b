//! `POST /v1/completions` (text in, text out, no chat template; `n`, `echo`, legacy
//! `logprobs`, streaming), and llama-server's `POST /tokenize` and `POST /detokenize`.

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::Event;
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::api::http::{error_event, sse_response, ApiError};
use crate::api::openai::*;
use crate::api::{choices, App};
use crate::metrics::RequestStatus;
use crate::serving::{Finished, GenEvent};

/// The handler of `/v1/completions`.
pub async fn completions(
    State(s): State<Arc<App>>,
    body: Result<Json<CompletionRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let reject = |e: ApiError| {
        s.metrics.finish_request(RequestStatus::Rejected);
        e
    };
    let bad = |m: String| reject(ApiError::new(StatusCode::BAD_REQUEST, m));
    let Json(req) = body.map_err(|r| reject(ApiError::new(r.status(), r.body_text())))?;
    let tok = &s.model.tokenizer;
    let (prompts, params, n) = req.validate(&s.model.id, tok.vocab_size()).map_err(bad)?;
    let id = format!("cmpl-{}", uuid::Uuid::new_v4().simple());
    // One merged stream over prompts x n; choice index = prompt * n + i, as OpenAI.
    let mut streams = Vec::new();
    let mut echoes = Vec::new();
    for (p, prompt) in prompts.iter().enumerate() {
        let tokens = match prompt {
            Prompt::Text(t) => tok
                .tokenize(t, tok.add_bos(), true)
                .map_err(|e| bad(format!("tokenizer: {e}")))?,
            Prompt::Tokens(t) => t.clone(),
        };
        let echo = match prompt {
            Prompt::Text(t) => t.clone(),
            Prompt::Tokens(t) => String::from_utf8_lossy(&tok.detokenize(t, false, false)).into(),
        };
        let base = p as u32 * n;
        let events = choices::start(&s.serving, &format!("{id}/{p}"), tokens, &params, None, n)
            .map_err(|e| reject(e.into()))?;
        streams.push(events.map(move |(i, ev)| (base + i, ev)).boxed());
        echoes.extend(std::iter::repeat_n(echo, n as usize));
    }
    let events = futures::stream::select_all(streams);
    let run = Run {
        app: s.clone(),
        id,
        model: s.model.id.clone(),
        echo: req.echo,
        logprobs: params.logprobs.is_some(),
        echoes,
        include_usage: req.sampling.include_usage(),
    };
    if req.sampling.stream {
        Ok(run.stream(events))
    } else {
        run.collect(events).await
    }
}

struct Run {
    app: Arc<App>,
    id: String,
    model: String,
    echo: bool,
    logprobs: bool,
    /// Each choice's prompt text (for `echo`).
    echoes: Vec<String>,
    include_usage: bool,
}

impl Run {
    fn body(&self, choices: Vec<CompletionChoice>, usage: Option<Usage>) -> TextCompletion {
        TextCompletion {
            id: self.id.clone(),
            object: "text_completion",
            created: unix_now(),
            model: self.model.clone(),
            choices,
            usage,
        }
    }

    /// Adds a token to legacy logprobs; `offset` is its text's offset in the choice.
    fn add_logprob(
        &self,
        lp: &mut CompletionLogprobs,
        id: u32,
        logprob: f32,
        top: &[(u32, f32)],
        offset: usize,
    ) {
        let t = choices::token_logprob(&self.app.model.tokenizer, id, logprob, top);
        lp.tokens.push(t.token);
        lp.token_logprobs.push(t.logprob);
        lp.top_logprobs.push(
            t.top_logprobs
                .into_iter()
                .map(|a| (a.token, a.logprob))
                .collect(),
        );
        lp.text_offset.push(offset);
    }

    fn stream(
        self,
        mut events: impl futures::Stream<Item = (u32, GenEvent)> + Send + Unpin + 'static,
    ) -> Response {
        let (tx, rx) = tokio::sync::mpsc::channel::<Event>(64);
        tokio::spawn(async move {
            let n = self.echoes.len();
            let mut done: Vec<Option<Finished>> = vec![None; n];
            let mut offsets = vec![0usize; n];
            let send = |c: TextCompletion| {
                Event::default().data(serde_json::to_string(&c).unwrap_or_default())
            };
            if self.echo {
                for (i, e) in self.echoes.iter().enumerate() {
                    offsets[i] = e.len();
                    let c = choice(i as u32, e.clone(), None, None);
                    if tx.send(send(self.body(vec![c], None))).await.is_err() {
                        return;
                    }
                }
            }
            while let Some((i, ev)) = events.next().await {
                let k = i as usize;
                let out = match ev {
                    GenEvent::Token {
                        id,
                        text,
                        logprob,
                        top,
                    } => {
                        let lp = self.logprobs.then(|| {
                            let mut lp = CompletionLogprobs::default();
                            self.add_logprob(&mut lp, id, logprob, &top, offsets[k]);
                            lp
                        });
                        offsets[k] += text.len();
                        vec![send(self.body(vec![choice(i, text, lp, None)], None))]
                    }
                    GenEvent::Text(text) => {
                        offsets[k] += text.len();
                        vec![send(self.body(vec![choice(i, text, None, None)], None))]
                    }
                    GenEvent::Failed(e) => {
                        let _ = tx.send(error_event(&ApiError::from(e))).await;
                        let _ = tx.send(Event::default().data("[DONE]")).await;
                        return;
                    }
                    GenEvent::Done(f) => {
                        let reason = f.finish_reason.to_string();
                        done[k] = Some(f);
                        let all = done.iter().all(Option::is_some);
                        let usage = Usage::of_choices(done.iter().flatten());
                        let mut v = vec![send(self.body(
                            vec![choice(i, String::new(), None, Some(reason))],
                            (all && !self.include_usage).then(|| usage.clone()),
                        ))];
                        if all {
                            if self.include_usage {
                                v.push(send(self.body(Vec::new(), Some(usage))));
                            }
                            v.push(Event::default().data("[DONE]"));
                        }
                        v
                    }
                };
                let end = done.iter().all(Option::is_some);
                for e in out {
                    if tx.send(e).await.is_err() {
                        return;
                    }
                }
                if end {
                    return;
                }
            }
        });
        sse_response(rx)
    }

    async fn collect(
        self,
        mut events: impl futures::Stream<Item = (u32, GenEvent)> + Unpin,
    ) -> Result<Response, ApiError> {
        let n = self.echoes.len();
        let mut texts: Vec<String> = if self.echo {
            self.echoes.clone()
        } else {
            vec![String::new(); n]
        };
        let mut lps = vec![CompletionLogprobs::default(); n];
        let mut done: Vec<Option<Finished>> = vec![None; n];
        while let Some((i, ev)) = events.next().await {
            let k = i as usize;
            match ev {
                GenEvent::Token {
                    id,
                    text,
                    logprob,
                    top,
                } => {
                    if self.logprobs {
                        self.add_logprob(&mut lps[k], id, logprob, &top, texts[k].len());
                    }
                    texts[k].push_str(&text);
                }
                GenEvent::Text(text) => texts[k].push_str(&text),
                GenEvent::Failed(e) => return Err(e.into()),
                GenEvent::Done(f) => {
                    done[k] = Some(f);
                    if done.iter().all(Option::is_some) {
                        break;
                    }
                }
            }
        }
        if done.iter().any(Option::is_none) {
            return Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "generation ended without a result",
            ));
        }
        let usage = Usage::of_choices(done.iter().flatten());
        let choices = texts
            .into_iter()
            .zip(lps)
            .zip(&done)
            .enumerate()
            .map(|(i, ((text, lp), f))| {
                let reason = f.as_ref().map(|f| f.finish_reason.to_string());
                choice(i as u32, text, self.logprobs.then_some(lp), reason)
            })
            .collect();
        Ok(Json(self.body(choices, Some(usage))).into_response())
    }
}

fn choice(
    index: u32,
    text: String,
    logprobs: Option<CompletionLogprobs>,
    finish: Option<String>,
) -> CompletionChoice {
    CompletionChoice {
        index,
        text,
        logprobs,
        finish_reason: finish,
    }
}

/// `POST /tokenize` body (llama-server's).
#[derive(Debug, Deserialize)]
pub struct TokenizeRequest {
    pub content: String,
    #[serde(default)]
    pub add_special: bool,
    #[serde(default = "yes")]
    pub parse_special: bool,
    #[serde(default)]
    pub with_pieces: bool,
}

fn yes() -> bool {
    true
}

/// `POST /tokenize`: `{"tokens": [ids]}`, or `[{"id", "piece"}]` with `with_pieces`.
pub async fn tokenize(
    State(s): State<Arc<App>>,
    body: Result<Json<TokenizeRequest>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let Json(r) = body.map_err(|r| ApiError::new(r.status(), r.body_text()))?;
    let tok = &s.model.tokenizer;
    let ids = tok
        .tokenize(&r.content, r.add_special, r.parse_special)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("tokenizer: {e}")))?;
    if !r.with_pieces {
        return Ok(Json(json!({ "tokens": ids })));
    }
    let pieces: Vec<Value> = ids
        .iter()
        .map(|id| {
            let bytes = tok.piece(*id);
            match std::str::from_utf8(bytes) {
                Ok(t) => json!({"id": id, "piece": t}),
                Err(_) => json!({"id": id, "piece": bytes}),
            }
        })
        .collect();
    Ok(Json(json!({ "tokens": pieces })))
}

/// `POST /detokenize` body.
#[derive(Debug, Deserialize)]
pub struct DetokenizeRequest {
    pub tokens: Vec<i64>,
}

/// `POST /detokenize`: `{"content": text}`; ids outside the vocabulary are a 400.
pub async fn detokenize(
    State(s): State<Arc<App>>,
    body: Result<Json<DetokenizeRequest>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let Json(r) = body.map_err(|r| ApiError::new(r.status(), r.body_text()))?;
    let tok = &s.model.tokenizer;
    let vocab = tok.vocab_size();
    let ids: Vec<u32> = r
        .tokens
        .iter()
        .map(|&t| {
            u32::try_from(t)
                .ok()
                .filter(|t| (*t as usize) < vocab)
                .ok_or_else(|| {
                    ApiError::new(
                        StatusCode::BAD_REQUEST,
                        format!("token {t} is outside the vocabulary (0..{vocab})"),
                    )
                })
        })
        .collect::<Result<_, _>>()?;
    let text = String::from_utf8_lossy(&tok.detokenize(&ids, false, false)).into_owned();
    Ok(Json(json!({ "content": text })))
}
