//! Running `n` choices of one prompt: one generation request each (seeds `seed + i`),
//! their events merged into one stream tagged with the choice's index; and the token
//! facts (text, bytes, log-probabilities) a response reports.

use std::sync::Arc;

use futures::stream::{self, BoxStream, StreamExt};
use tokio_stream::wrappers::ReceiverStream;

use crate::api::openai::{TokenLogprob, TopLogprob};
use crate::serving::{GenError, GenEvent, GenRequest, Serving};

/// Starts `n` generations of `prompt_tokens`; all are admitted or none is (the ones
/// started are dropped, which cancels them).
pub fn start(
    serving: &Arc<Serving>,
    id: &str,
    prompt_tokens: Vec<u32>,
    params: &engine::SamplingParams,
    constraint: Option<&engine::constrain::Constraint>,
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
pub fn token_logprob(
    tok: &engine::Tokenizer,
    id: u32,
    logprob: f32,
    top: &[(u32, f32)],
) -> TokenLogprob {
    let (token, bytes) = token_text(tok, id);
    TokenLogprob {
        token,
        logprob,
        bytes,
        top_logprobs: top
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
