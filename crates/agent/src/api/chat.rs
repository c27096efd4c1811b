//! `POST /v1/chat/completions`: `n` choices, log-probabilities, `response_format` and
//! tool calls (both as constrained decoding on the last stage), streamed as server-sent
//! events or answered whole.

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::Event;
use axum::response::{IntoResponse, Response};
use axum::Json;
use engine::constrain::{parse_tool_calls, tool_grammar, Constraint, ToolMode, CALL_OPEN};
use futures::stream::BoxStream;
use futures::StreamExt;
use serde_json::{json, Value};

use crate::api::http::{error_event, sse_response, ApiError};
use crate::api::openai::*;
use crate::api::{choices, prompt, App};
use crate::metrics::RequestStatus;
use crate::node::state::AgentState;
use crate::serving::{Finished, GenEvent};

/// The handler.
pub async fn chat_completions(
    State(s): State<Arc<App>>,
    body: Result<Json<ChatCompletionRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let reject = |e: ApiError| {
        s.metrics.finish_request(RequestStatus::Rejected);
        e
    };
    let Json(req) = body.map_err(|r| reject(ApiError::new(r.status(), r.body_text())))?;
    let vocab = s.model.tokenizer.vocab_size();
    let v = req
        .validate(&s.model.id, vocab)
        .map_err(|m| reject(ApiError::new(StatusCode::BAD_REQUEST, m)))?;
    let prompt_tokens =
        prompt::chat_tokens(&s, &v.messages, v.tools.as_ref()).map_err(|e| reject(e.into()))?;
    let constraint = match &v.tools {
        Some(t) => Some(tool_constraint(t)),
        None => v.constraint.clone(),
    };
    if let Some(c) = &constraint {
        check_constraint(&s, c).map_err(reject)?;
    }
    let id = format!("chatcmpl-{}", uuid::Uuid::new_v4().simple());
    let events = choices::start(
        &s.serving,
        &id,
        prompt_tokens,
        &v.params,
        constraint.as_ref(),
        v.n,
    )
    .map_err(|e| reject(e.into()))?;
    let states = (0..v.n)
        .map(|_| {
            ChoiceState::new(
                v.tools.as_ref().map(|t| t.mode),
                v.params.logprobs.is_some(),
            )
        })
        .collect();
    let run = Run {
        app: s.clone(),
        id,
        model: s.model.id.clone(),
        states,
    };
    if v.stream {
        Ok(run.stream(events, v.include_usage))
    } else {
        run.collect(events).await
    }
}

/// The grammar of `tools`: calls in the generic format, arguments per tool schema.
pub fn tool_constraint(t: &ToolSetup) -> Constraint {
    let tools: Vec<(String, Value)> = t
        .tools
        .iter()
        .map(|t| {
            let params = t
                .function
                .parameters
                .clone()
                .unwrap_or_else(|| json!({"type": "object"}));
            (t.function.name.clone(), params)
        })
        .collect();
    Constraint::Lark(tool_grammar(&tools, t.mode, t.parallel))
}

/// Compiles the constraint here first, so that a bad schema is a 400 before any work.
pub fn check_constraint(s: &AgentState, c: &Constraint) -> Result<(), ApiError> {
    let env = s.model.token_env().ok_or_else(|| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "constrained decoding is not available for this model's vocabulary",
        )
    })?;
    engine::constrain::Matcher::new(&env, c)
        .map(|_| ())
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("response constraint: {e}")))
}

/// One choice's text as it arrives: released as content at once, unless tools are on
/// and the text may still be (or is) a tool call, which is held to the end and parsed.
pub struct ChoiceState {
    tools: Option<ToolMode>,
    logprobs: bool,
    text: String,
    sent: usize,
    /// Whether the text is known to be a call (`Some(true)`) or content (`Some(false)`).
    call: Option<bool>,
    pending: Vec<TokenLogprob>,
    done: Option<Finished>,
}

/// What a choice ends with.
pub struct Ending {
    pub content: Option<String>,
    pub calls: Vec<ToolCall>,
    pub logprobs: Vec<TokenLogprob>,
}

impl ChoiceState {
    pub fn new(tools: Option<ToolMode>, logprobs: bool) -> Self {
        let call = match tools {
            None => Some(false),
            Some(ToolMode::Required) => Some(true),
            Some(ToolMode::Auto) => None,
        };
        ChoiceState {
            tools,
            logprobs,
            text: String::new(),
            sent: 0,
            call,
            pending: Vec::new(),
            done: None,
        }
    }

    /// Adds text (and a token's log-probability); gives what can be sent now.
    pub fn push(
        &mut self,
        text: &str,
        lp: Option<TokenLogprob>,
    ) -> Option<(String, Vec<TokenLogprob>)> {
        self.text.push_str(text);
        self.pending.extend(lp);
        if self.call.is_none() {
            let open = CALL_OPEN.trim_end();
            let t = self.text.trim_start();
            if t.starts_with(open) {
                self.call = Some(true);
            } else if !open.starts_with(t) {
                self.call = Some(false);
            }
        }
        if self.call != Some(false) {
            return None;
        }
        let content = self.text[self.sent..].to_string();
        self.sent = self.text.len();
        let lps = std::mem::take(&mut self.pending);
        (!content.is_empty() || !lps.is_empty()).then_some((content, lps))
    }

    /// The rest of the choice: unsent content, or the parsed calls.
    pub fn finish(&mut self) -> Ending {
        let logprobs = std::mem::take(&mut self.pending);
        if self.tools.is_some() && self.call != Some(false) {
            let (before, calls) = parse_tool_calls(&self.text);
            if !calls.is_empty() {
                let calls = calls.iter().map(to_tool_call).collect();
                return Ending {
                    content: (!before.is_empty()).then_some(before),
                    calls,
                    logprobs,
                };
            }
        }
        let rest = self.text[self.sent..].to_string();
        self.sent = self.text.len();
        Ending {
            content: (!rest.is_empty()).then_some(rest),
            calls: Vec::new(),
            logprobs,
        }
    }

    fn finish_reason(&self, ending: &Ending) -> String {
        if !ending.calls.is_empty() {
            return "tool_calls".into();
        }
        self.done
            .as_ref()
            .map_or("stop", |f| f.finish_reason)
            .into()
    }
}

/// `{"name", "arguments"}` from the model to an OpenAI tool call.
fn to_tool_call(v: &Value) -> ToolCall {
    let id = uuid::Uuid::new_v4().simple().to_string();
    ToolCall {
        id: format!("call_{}", &id[..24]),
        kind: "function".into(),
        function: FunctionCall {
            name: v["name"].as_str().unwrap_or_default().into(),
            arguments: v.get("arguments").map_or("{}".into(), Value::to_string),
        },
    }
}

/// One request's choices and what they need to answer.
struct Run {
    app: Arc<App>,
    id: String,
    model: String,
    states: Vec<ChoiceState>,
}

impl Run {
    fn logprob(&self, i: u32, id: u32, lp: f32, top: &[(u32, f32)]) -> Option<TokenLogprob> {
        self.states[i as usize]
            .logprobs
            .then(|| choices::token_logprob(&self.app.model.tokenizer, id, lp, top))
    }

    fn usage(&self) -> Usage {
        Usage::of_choices(self.states.iter().filter_map(|c| c.done.as_ref()))
    }

    fn chunk(&self, choices: Vec<ChunkChoice>, usage: Option<Usage>) -> Event {
        let c = ChatCompletionChunk {
            id: self.id.clone(),
            object: "chat.completion.chunk",
            created: unix_now(),
            model: self.model.clone(),
            choices,
            usage,
        };
        Event::default().data(serde_json::to_string(&c).unwrap_or_default())
    }

    fn content_chunk(&self, i: u32, content: String, lps: Vec<TokenLogprob>) -> Event {
        let logprobs = self.states[i as usize]
            .logprobs
            .then_some(ChoiceLogprobs { content: lps });
        let delta = Delta {
            content: Some(content),
            ..Default::default()
        };
        self.chunk(vec![chunk_choice(i, delta, logprobs, None)], None)
    }

    /// The events of one generation event of choice `i`.
    fn on_event(&mut self, i: u32, ev: GenEvent, include_usage: bool) -> (Vec<Event>, bool) {
        let (text, lp) = match ev {
            GenEvent::Token {
                id,
                text,
                logprob,
                top,
            } => {
                let lp = self.logprob(i, id, logprob, &top);
                (text, lp)
            }
            GenEvent::Text(text) => (text, None),
            GenEvent::Failed(e) => {
                return (
                    vec![
                        error_event(&ApiError::from(e)),
                        Event::default().data("[DONE]"),
                    ],
                    true,
                )
            }
            GenEvent::Done(f) => {
                let st = &mut self.states[i as usize];
                st.done = Some(f);
                let ending = st.finish();
                let reason = st.finish_reason(&ending);
                let mut out = Vec::new();
                if ending.content.is_some() || !ending.logprobs.is_empty() {
                    let content = ending.content.clone().unwrap_or_default();
                    out.push(self.content_chunk(i, content, ending.logprobs.clone()));
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
                let all_done = self.states.iter().all(|c| c.done.is_some());
                // Usage rides on the last finish chunk (as before `stream_options`), or,
                // asked for, in a final chunk without choices (OpenAI's form).
                let usage = (all_done && !include_usage).then(|| self.usage());
                out.push(self.chunk(
                    vec![chunk_choice(i, Delta::default(), None, Some(reason))],
                    usage,
                ));
                if all_done {
                    if include_usage {
                        out.push(self.chunk(Vec::new(), Some(self.usage())));
                    }
                    out.push(Event::default().data("[DONE]"));
                }
                return (out, all_done);
            }
        };
        let out = self.states[i as usize]
            .push(&text, lp)
            .map(|(content, lps)| self.content_chunk(i, content, lps));
        (out.into_iter().collect(), false)
    }

    fn stream(
        mut self,
        mut events: BoxStream<'static, (u32, GenEvent)>,
        include_usage: bool,
    ) -> Response {
        let (tx, rx) = tokio::sync::mpsc::channel::<Event>(64);
        let first: Vec<Event> = (0..self.states.len() as u32)
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
                let (out, end) = self.on_event(i, ev, include_usage);
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
        mut self,
        mut events: BoxStream<'static, (u32, GenEvent)>,
    ) -> Result<Response, ApiError> {
        let n = self.states.len();
        let mut texts = vec![String::new(); n];
        let mut lps: Vec<Vec<TokenLogprob>> = vec![Vec::new(); n];
        let mut endings: Vec<Option<(Ending, String)>> = (0..n).map(|_| None).collect();
        while let Some((i, ev)) = events.next().await {
            let k = i as usize;
            match ev {
                GenEvent::Token {
                    id,
                    text,
                    logprob,
                    top,
                } => {
                    let lp = self.logprob(i, id, logprob, &top);
                    if let Some((c, l)) = self.states[k].push(&text, lp) {
                        texts[k].push_str(&c);
                        lps[k].extend(l);
                    }
                }
                GenEvent::Text(text) => {
                    if let Some((c, l)) = self.states[k].push(&text, None) {
                        texts[k].push_str(&c);
                        lps[k].extend(l);
                    }
                }
                GenEvent::Failed(e) => return Err(e.into()),
                GenEvent::Done(f) => {
                    let st = &mut self.states[k];
                    st.done = Some(f);
                    let ending = st.finish();
                    let reason = st.finish_reason(&ending);
                    endings[k] = Some((ending, reason));
                    if endings.iter().all(Option::is_some) {
                        break;
                    }
                }
            }
        }
        let mut out = Vec::with_capacity(n);
        for (k, e) in endings.into_iter().enumerate() {
            let Some((ending, reason)) = e else {
                return Err(ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "generation ended without a result",
                ));
            };
            let mut content = std::mem::take(&mut texts[k]);
            content.push_str(ending.content.as_deref().unwrap_or_default());
            lps[k].extend(ending.logprobs);
            let calls = (!ending.calls.is_empty()).then_some(ending.calls);
            out.push(Choice {
                index: k as u32,
                message: ResponseMessage {
                    role: "assistant",
                    content: (calls.is_none() || !content.is_empty()).then_some(content),
                    tool_calls: calls,
                },
                logprobs: self.states[k].logprobs.then(|| ChoiceLogprobs {
                    content: std::mem::take(&mut lps[k]),
                }),
                finish_reason: reason,
            });
        }
        let body = ChatCompletion {
            id: self.id.clone(),
            object: "chat.completion",
            created: unix_now(),
            model: self.model.clone(),
            choices: out,
            usage: self.usage(),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_released_unless_it_may_be_a_call() {
        let mut plain = ChoiceState::new(None, false);
        assert_eq!(plain.push("<tool", None).unwrap().0, "<tool");

        let mut auto = ChoiceState::new(Some(ToolMode::Auto), false);
        assert!(auto.push(" <to", None).is_none(), "may still be a call");
        assert!(auto
            .push(
                "ol_call>\n{\"name\": \"f\", \"arguments\": {}}\n</tool_call>",
                None
            )
            .is_none());
        let e = auto.finish();
        assert_eq!((e.calls.len(), e.content), (1, None));
        assert_eq!(e.calls[0].function.name, "f");
        assert_eq!(e.calls[0].function.arguments, "{}");

        let mut prose = ChoiceState::new(Some(ToolMode::Auto), false);
        assert!(prose.push("<", None).is_none());
        assert_eq!(prose.push("b>old", None).unwrap().0, "<b>old");
        assert!(prose.finish().calls.is_empty());

        // A call cut short by max_tokens comes back as text.
        let mut cut = ChoiceState::new(Some(ToolMode::Required), false);
        assert!(cut.push("<tool_call>\n{\"name\": ", None).is_none());
        let e = cut.finish();
        assert!(e.calls.is_empty());
        assert_eq!(e.content.unwrap(), "<tool_call>\n{\"name\": ");
    }
}
