//! `POST /v1/chat/completions`: `n` choices, log-probabilities, `response_format` and
//! tool calls (both as constrained decoding on the last stage), streamed as server-sent
//! events or answered whole. A thin adapter over [`core`](crate::api::core).

use std::sync::Arc;

use axum::extract::State;
use axum::response::sse::Event;
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::stream::BoxStream;
use futures::StreamExt;

use crate::api::core::{self, error_event, sse_response, ApiError, Fold, Sampled, Step};
use crate::api::openai::*;
use crate::api::{prompt, App};
use crate::metrics::RequestStatus;
use crate::serving::GenEvent;

/// A chat request made ready: prompt tokens, constraint, choices.
pub struct Prepared {
    pub prompt_tokens: Vec<u32>,
    pub validated: Validated,
    pub constraint: Option<engine::constrain::Constraint>,
}

/// Validates a chat request and renders its prompt (the Responses API shares this).
pub fn prepare(s: &App, req: &ChatCompletionRequest) -> Result<Prepared, ApiError> {
    if let Some(m) = unknown_model(req.model.as_deref(), &s.state.model.id) {
        return Err(ApiError::model_not_found(m, &s.state.model.id));
    }
    let v = req
        .validate(s.state.model.tokenizer.vocab_size())
        .map_err(ApiError::bad)?;
    let prompt_tokens = prompt::chat_tokens(&s.state, &v.messages, v.tools.as_ref())?;
    let constraint = match &v.tools {
        Some(t) => Some(core::tool_constraint(t)),
        None => v.constraint.clone(),
    };
    if let Some(c) = &constraint {
        core::check_constraint(&s.state, c)?;
    }
    Ok(Prepared {
        prompt_tokens,
        validated: v,
        constraint,
    })
}

/// The handler.
pub async fn chat_completions(State(s): State<Arc<App>>, body: core::RawBody) -> Response {
    let r = async {
        let req: ChatCompletionRequest = core::parse_body(body)?;
        let p = prepare(&s, &req)?;
        let v = &p.validated;
        let id = format!("chatcmpl-{}", uuid::Uuid::new_v4().simple());
        let events = core::start_choices(
            &s.serving,
            &id,
            p.prompt_tokens,
            &v.params,
            p.constraint.as_ref(),
            v.n,
        )?;
        let run = Run {
            app: s.clone(),
            fingerprint: core::setup::system_fingerprint(&s.state),
            id,
            model: s.state.model.id.clone(),
            logprobs: v.params.logprobs.is_some(),
            fold: Fold::new(v.n, v.tools.as_ref().map(|t| t.mode)),
        };
        Ok::<_, ApiError>(if v.stream {
            run.stream(events, v.include_usage)
        } else {
            run.collect(events).await?
        })
    };
    r.await.unwrap_or_else(|e| {
        s.state.metrics.finish_request(RequestStatus::Rejected);
        e.into_response()
    })
}

/// One request's choices and what they need to answer.
struct Run {
    app: Arc<App>,
    id: String,
    model: String,
    fingerprint: String,
    logprobs: bool,
    fold: Fold,
}

impl Run {
    fn logprobs(&self, sampled: &[Sampled]) -> Option<ChoiceLogprobs> {
        let tok = &self.app.state.model.tokenizer;
        self.logprobs.then(|| ChoiceLogprobs {
            content: sampled
                .iter()
                .map(|t| core::token_logprob(tok, t))
                .collect(),
        })
    }

    fn chunk(&self, choices: Vec<ChunkChoice>, usage: Option<Usage>) -> Event {
        let c = ChatCompletionChunk {
            id: self.id.clone(),
            object: "chat.completion.chunk",
            created: unix_now(),
            model: self.model.clone(),
            system_fingerprint: self.fingerprint.clone(),
            choices,
            usage,
        };
        Event::default().data(serde_json::to_string(&c).unwrap_or_default())
    }

    fn content_chunk(&self, i: u32, content: String, sampled: &[Sampled]) -> Event {
        let delta = Delta {
            content: Some(content),
            ..Default::default()
        };
        self.chunk(
            vec![chunk_choice(i, delta, self.logprobs(sampled), None)],
            None,
        )
    }

    /// The events of one step.
    fn events(&self, step: Step, include_usage: bool) -> Vec<Event> {
        let (i, ending) = match step {
            Step::Delta {
                choice,
                text,
                sampled,
            } => return vec![self.content_chunk(choice, text, &sampled)],
            Step::End { choice, ending } => (choice, ending),
        };
        let mut out = Vec::new();
        if ending.content.is_some() || (self.logprobs && !ending.sampled.is_empty()) {
            let content = ending.content.clone().unwrap_or_default();
            out.push(self.content_chunk(i, content, &ending.sampled));
        }
        if !ending.calls.is_empty() {
            let calls = ending
                .calls
                .iter()
                .enumerate()
                .map(|(k, c)| ToolCallDelta {
                    index: k as u32,
                    id: c.id.clone(),
                    kind: "function",
                    function: c.function.clone(),
                })
                .collect();
            let delta = Delta {
                tool_calls: Some(calls),
                ..Default::default()
            };
            out.push(self.chunk(vec![chunk_choice(i, delta, None, None)], None));
        }
        let all_done = self.fold.all_done();
        // Usage rides on the last finish chunk (as before `stream_options`), or, asked
        // for, in a final chunk without choices (OpenAI's form).
        let usage = (all_done && !include_usage).then(|| self.fold.usage());
        out.push(self.chunk(
            vec![chunk_choice(i, Delta::default(), None, Some(ending.reason))],
            usage,
        ));
        if all_done {
            if include_usage {
                out.push(self.chunk(Vec::new(), Some(self.fold.usage())));
            }
            out.push(Event::default().data("[DONE]"));
        }
        out
    }

    fn stream(
        mut self,
        mut events: BoxStream<'static, (u32, GenEvent)>,
        include_usage: bool,
    ) -> Response {
        let (tx, rx) = tokio::sync::mpsc::channel::<Event>(64);
        let first: Vec<Event> = (0..self.fold.len() as u32)
            .map(|i| {
                let delta = Delta {
                    role: Some("assistant".into()),
                    content: Some(String::new()),
                    ..Default::default()
                };
                self.chunk(vec![chunk_choice(i, delta, None, None)], None)
            })
            .collect();
        tokio::spawn(async move {
            for e in first {
                if tx.send(e).await.is_err() {
                    return;
                }
            }
            while let Some((i, ev)) = events.next().await {
                let (out, end) = match self.fold.step(i, ev) {
                    Ok(None) => continue,
                    Ok(Some(step)) => (self.events(step, include_usage), self.fold.all_done()),
                    Err(e) => (
                        vec![
                            error_event(&ApiError::from(e)),
                            Event::default().data("[DONE]"),
                        ],
                        true,
                    ),
                };
                for e in out {
                    if tx.send(e).await.is_err() {
                        return; // the client left: dropping `events` cancels the choices
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
        events: BoxStream<'static, (u32, GenEvent)>,
    ) -> Result<Response, ApiError> {
        let Run {
            app,
            id,
            model,
            fingerprint,
            logprobs,
            fold,
        } = self;
        let (wholes, usage) = core::collect(events, fold).await?;
        let tok = &app.state.model.tokenizer;
        let choices = wholes
            .into_iter()
            .enumerate()
            .map(|(k, w)| {
                let calls = (!w.calls.is_empty()).then_some(w.calls);
                Choice {
                    index: k as u32,
                    message: ResponseMessage {
                        role: "assistant",
                        content: (calls.is_none() || !w.content.is_empty()).then_some(w.content),
                        tool_calls: calls,
                    },
                    logprobs: logprobs.then(|| ChoiceLogprobs {
                        content: w
                            .sampled
                            .iter()
                            .map(|t| core::token_logprob(tok, t))
                            .collect(),
                    }),
                    finish_reason: w.reason,
                }
            })
            .collect();
        let body = ChatCompletion {
            id,
            object: "chat.completion",
            created: unix_now(),
            model,
            system_fingerprint: fingerprint,
            choices,
            usage,
        };
        Ok(Json(body).into_response())
    }
}

fn chunk_choice(
    index: u32,
    delta: Delta,
    logprobs: Option<ChoiceLogprobs>,
    finish: Option<String>,
) -> ChunkChoice {
    ChunkChoice {
        index,
        delta,
        logprobs,
        finish_reason: finish,
    }
}
