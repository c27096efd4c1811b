//! `POST /v1/completions` (text in, text out, no chat template; `n`, `echo`, legacy
//! `logprobs`, streaming), and llama-server's `POST /tokenize` and `POST /detokenize`.

use std::sync::Arc;

use axum::extract::State;
use axum::response::sse::Event;
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::stream::BoxStream;
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::api::core::{self, error_event, sse_response, ApiError, Fold, Sampled, Step};
use crate::api::openai::*;
use crate::api::App;
use crate::metrics::RequestStatus;
use crate::serving::GenEvent;

/// The handler of `/v1/completions`.
pub async fn completions(State(s): State<Arc<App>>, body: core::RawBody) -> Response {
    let r = async {
        let req: CompletionRequest = core::parse_body(body)?;
        if let Some(m) = unknown_model(req.model.as_deref(), &s.state.model.id) {
            return Err(ApiError::model_not_found(m, &s.state.model.id));
        }
        let tok = &s.state.model.tokenizer;
        let (prompts, params, n) = req.validate(tok.vocab_size()).map_err(ApiError::bad)?;
        let id = format!("cmpl-{}", uuid::Uuid::new_v4().simple());
        // One merged stream over prompts x n; choice index = prompt * n + i, as OpenAI.
        let mut streams = Vec::new();
        let mut echoes = Vec::new();
        for (p, prompt) in prompts.iter().enumerate() {
            let tokens = match prompt {
                Prompt::Text(t) => tok
                    .tokenize(t, tok.add_bos(), true)
                    .map_err(|e| ApiError::bad(format!("tokenizer: {e}")))?,
                Prompt::Tokens(t) => t.clone(),
            };
            let echo = match prompt {
                Prompt::Text(t) => t.clone(),
                Prompt::Tokens(t) => {
                    String::from_utf8_lossy(&tok.detokenize(t, false, false)).into()
                }
            };
            let base = p as u32 * n;
            let events =
                core::start_choices(&s.serving, &format!("{id}/{p}"), tokens, &params, None, n)?;
            streams.push(events.map(move |(i, ev)| (base + i, ev)).boxed());
            echoes.extend(std::iter::repeat_n(echo, n as usize));
        }
        let events = futures::stream::select_all(streams).boxed();
        let run = Run {
            app: s.clone(),
            fingerprint: core::setup::system_fingerprint(&s.state),
            id,
            model: s.state.model.id.clone(),
            echo: req.echo,
            logprobs: params.logprobs.is_some(),
            fold: Fold::new(echoes.len() as u32, None),
            echoes,
            include_usage: req.sampling.include_usage(),
        };
        Ok(if req.sampling.stream {
            run.stream(events)
        } else {
            run.collect(events).await?
        })
    };
    r.await.unwrap_or_else(|e: ApiError| {
        s.state.metrics.finish_request(RequestStatus::Rejected);
        e.into_response()
    })
}

struct Run {
    app: Arc<App>,
    id: String,
    model: String,
    fingerprint: String,
    echo: bool,
    logprobs: bool,
    /// Each choice's prompt text (for `echo`).
    echoes: Vec<String>,
    include_usage: bool,
    fold: Fold,
}

impl Run {
    fn body(&self, choices: Vec<CompletionChoice>, usage: Option<Usage>) -> TextCompletion {
        TextCompletion {
            id: self.id.clone(),
            object: "text_completion",
            created: unix_now(),
            model: self.model.clone(),
            system_fingerprint: self.fingerprint.clone(),
            choices,
            usage,
        }
    }

    /// Legacy logprobs of `sampled`, the first token's text at `offset` in the choice.
    fn legacy(&self, sampled: &[Sampled], mut offset: usize) -> Option<CompletionLogprobs> {
        self.logprobs.then(|| {
            let mut lp = CompletionLogprobs::default();
            for s in sampled {
                let t = core::token_logprob(&self.app.state.model.tokenizer, s);
                lp.tokens.push(t.token);
                lp.token_logprobs.push(t.logprob);
                lp.top_logprobs.push(
                    t.top_logprobs
                        .into_iter()
                        .map(|a| (a.token, a.logprob))
                        .collect(),
                );
                lp.text_offset.push(offset);
                offset += s.text.len();
            }
            lp
        })
    }

    fn stream(mut self, mut events: BoxStream<'static, (u32, GenEvent)>) -> Response {
        let (tx, rx) = tokio::sync::mpsc::channel::<Event>(64);
        tokio::spawn(async move {
            let n = self.echoes.len();
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
                let out = match self.fold.step(i, ev) {
                    Ok(None) => continue,
                    Ok(Some(Step::Delta {
                        choice: i,
                        text,
                        sampled,
                    })) => {
                        let k = i as usize;
                        let lp = self.legacy(&sampled, offsets[k]);
                        offsets[k] += text.len();
                        vec![send(self.body(vec![choice(i, text, lp, None)], None))]
                    }
                    Ok(Some(Step::End { choice: i, ending })) => {
                        let all = self.fold.all_done();
                        let usage = self.fold.usage();
                        let text = ending.content.unwrap_or_default();
                        let lp = self.legacy(&ending.sampled, offsets[i as usize]);
                        let lp = lp.filter(|l| !l.tokens.is_empty());
                        let mut v = vec![send(self.body(
                            vec![choice(i, text, lp, Some(ending.reason))],
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
                    Err(e) => {
                        let _ = tx.send(error_event(&ApiError::from(e))).await;
                        let _ = tx.send(Event::default().data("[DONE]")).await;
                        return;
                    }
                };
                for e in out {
                    if tx.send(e).await.is_err() {
                        return;
                    }
                }
                if self.fold.all_done() {
                    return;
                }
            }
        });
        sse_response(rx)
    }

    async fn collect(
        mut self,
        events: BoxStream<'static, (u32, GenEvent)>,
    ) -> Result<Response, ApiError> {
        let fold = std::mem::replace(&mut self.fold, Fold::new(0, None));
        let (wholes, usage) = core::collect(events, fold).await?;
        let choices = wholes
            .into_iter()
            .enumerate()
            .map(|(i, w)| {
                let prefix = if self.echo {
                    self.echoes[i].as_str()
                } else {
                    ""
                };
                let lp = self.legacy(&w.sampled, prefix.len());
                choice(
                    i as u32,
                    format!("{prefix}{}", w.content),
                    lp,
                    Some(w.reason),
                )
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
    body: core::RawBody,
) -> Result<Json<Value>, ApiError> {
    let r: TokenizeRequest = core::parse_body(body)?;
    let tok = &s.state.model.tokenizer;
    let ids = tok
        .tokenize(&r.content, r.add_special, r.parse_special)
        .map_err(|e| ApiError::bad(format!("tokenizer: {e}")))?;
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
    body: core::RawBody,
) -> Result<Json<Value>, ApiError> {
    let r: DetokenizeRequest = core::parse_body(body)?;
    let tok = &s.state.model.tokenizer;
    let vocab = tok.vocab_size();
    let ids: Vec<u32> = r
        .tokens
        .iter()
        .map(|&t| {
            u32::try_from(t)
                .ok()
                .filter(|t| (*t as usize) < vocab)
                .ok_or_else(|| {
                    ApiError::bad(format!("token {t} is outside the vocabulary (0..{vocab})"))
                })
        })
        .collect::<Result<_, _>>()?;
    let text = String::from_utf8_lossy(&tok.detokenize(&ids, false, false)).into_owned();
    Ok(Json(json!({ "content": text })))
}
