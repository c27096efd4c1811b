//! What every door does before generation: check a constraint (a bad schema is a 400
//! before any work), build the tool-call grammar, start `n` choices of one prompt; and
//! the token facts (text, bytes, log-probabilities) responses report.

use std::sync::Arc;

use axum::http::StatusCode;
use engine::constrain::{tool_grammar, Constraint};
use futures::stream::{self, BoxStream, StreamExt};
use serde_json::{json, Value};
use tokio_stream::wrappers::ReceiverStream;

use super::error::ApiError;
use crate::api::openai::{closed_schema, TokenLogprob, ToolSetup, TopLogprob};
use crate::node::state::AgentState;
use crate::serving::{GenError, GenEvent, GenRequest, Serving};

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
                .map_or_else(|| json!({"type": "object"}), closed_schema);
            (t.function.name.clone(), params)
        })
        .collect();
    Constraint::Lark(tool_grammar(&tools, t.mode, t.parallel))
}

/// Compiles the constraint here first, so that a bad schema is a 400 before any work.
pub fn check_constraint(s: &AgentState, c: &Constraint) -> Result<(), ApiError> {
    let env = s.model.token_env().ok_or_else(|| {
        ApiError::bad("constrained decoding is not available for this model's vocabulary")
    })?;
    engine::constrain::Matcher::new(&env, c)
        .map(|_| ())
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("response constraint: {e}")))
}

/// Starts `n` generations of `prompt_tokens` (seeds `seed + i`), their events merged
/// into one stream tagged with the choice's index; all are admitted or none is (the ones
/// started are dropped, which cancels them).
pub fn start_choices(
    serving: &Arc<Serving>,
    id: &str,
    prompt_tokens: Vec<u32>,
    params: &engine::SamplingParams,
    constraint: Option<&Constraint>,
    n: u32,
) -> Result<BoxStream<'static, (u32, GenEvent)>, GenError> {
    let mut streams = Vec::with_capacity(n as usize);
    for i in 0..n {
        let mut params = params.clone();
        if n > 1 {
            // Distinct but reproducible choices; without a seed each draws its own.
            params.seed = params.seed.map(|s| s.wrapping_add(u64::from(i)));
        }
        let rx = serving.start(GenRequest {
            request_id: if n > 1 {
                format!("{id}/{i}")
            } else {
                id.to_string()
            },
            prompt_tokens: prompt_tokens.clone(),
            params,
            constraint: constraint.cloned(),
        })?;
        streams.push(ReceiverStream::new(rx).map(move |ev| (i, ev)).boxed());
    }
    Ok(stream::select_all(streams).boxed())
}

/// A token's text as OpenAI reports it (its bytes, lossy UTF-8).
fn token_text(tok: &engine::Tokenizer, id: u32) -> (String, Vec<u8>) {
    let bytes = tok.piece(id).to_vec();
    (String::from_utf8_lossy(&bytes).into_owned(), bytes)
}

/// The log-probability entry of a sampled token.
pub fn token_logprob(tok: &engine::Tokenizer, s: &super::Sampled) -> TokenLogprob {
    let (token, bytes) = token_text(tok, s.id);
    TokenLogprob {
        token,
        logprob: s.logprob,
        bytes,
        top_logprobs: s
            .top
            .iter()
            .map(|(t, lp)| {
                let (token, bytes) = token_text(tok, *t);
                TopLogprob {
                    token,
                    logprob: *lp,
                    bytes,
                }
            })
            .collect(),
    }
}

/// `system_fingerprint`: this build and the plan in force (`dllm-0.1.0-p1a2b...`), so a
/// client can tell answers of differently configured clusters apart.
pub fn system_fingerprint(s: &AgentState) -> String {
    let plan = s.view().plan.map_or(0, |p| p.version);
    format!("dllm-{}-p{plan:016x}", env!("CARGO_PKG_VERSION"))
}
