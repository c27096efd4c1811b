//! The one fold over a request's generation events: the events of its `n` choices,
//! merged and tagged with the choice's index, become protocol-neutral [`Step`]s that
//! each door formats its own way (SSE chunks, NDJSON lines, gRPC messages, a whole body).

use engine::constrain::ToolMode;
use futures::stream::BoxStream;
use futures::StreamExt;

use super::choice::{ChoiceState, Ending, Sampled};
use crate::api::openai::{ToolCall, Usage};
use crate::serving::{GenError, GenEvent};

/// What one event means to the client.
#[derive(Debug)]
pub enum Step {
    /// Content released for a choice, with the tokens it came from.
    Delta {
        choice: u32,
        text: String,
        sampled: Vec<Sampled>,
    },
    /// A choice ended.
    End { choice: u32, ending: Ending },
}

/// The state of a request's choices.
pub struct Fold {
    choices: Vec<ChoiceState>,
}

impl Fold {
    /// `n` choices; `tools` holds text that may be a call.
    pub fn new(n: u32, tools: Option<ToolMode>) -> Self {
        Fold {
            choices: (0..n).map(|_| ChoiceState::new(tools)).collect(),
        }
    }

    /// The step of one event of choice `i` (`None`: nothing to tell yet). A failure of
    /// any choice fails the request.
    pub fn step(&mut self, i: u32, ev: GenEvent) -> Result<Option<Step>, GenError> {
        let st = self
            .choices
            .get_mut(i as usize)
            .ok_or_else(|| GenError::Internal(format!("event of unknown choice {i}")))?;
        let released = match ev {
            GenEvent::Token {
                id,
                text,
                logprob,
                top,
            } => st.push_token(Sampled {
                id,
                text,
                logprob,
                top,
            }),
            GenEvent::Text(text) => st.push(&text, None),
            GenEvent::Failed(e) => return Err(e),
            GenEvent::Done(f) => {
                return Ok(Some(Step::End {
                    choice: i,
                    ending: st.finish(f),
                }))
            }
        };
        Ok(released.map(|(text, sampled)| Step::Delta {
            choice: i,
            text,
            sampled,
        }))
    }

    /// Choices in the request.
    pub fn len(&self) -> usize {
        self.choices.len()
    }

    /// Whether the request has no choice (never: `n` >= 1).
    pub fn is_empty(&self) -> bool {
        self.choices.is_empty()
    }

    /// Whether every choice has ended.
    pub fn all_done(&self) -> bool {
        self.choices.iter().all(ChoiceState::is_done)
    }

    /// Token counts of the ended choices (the prompt counted once).
    pub fn usage(&self) -> Usage {
        Usage::of_choices(self.choices.iter().filter_map(ChoiceState::finished))
    }
}

/// One choice, whole.
#[derive(Debug, Clone)]
pub struct Whole {
    pub content: String,
    pub calls: Vec<ToolCall>,
    pub sampled: Vec<Sampled>,
    pub reason: String,
    pub finished: crate::serving::Finished,
}

/// Runs the fold to the end: every choice whole, and the usage.
pub async fn collect(
    mut events: BoxStream<'static, (u32, GenEvent)>,
    mut fold: Fold,
) -> Result<(Vec<Whole>, Usage), GenError> {
    let n = fold.len();
    let mut texts = vec![String::new(); n];
    let mut sampled: Vec<Vec<Sampled>> = vec![Vec::new(); n];
    let mut wholes: Vec<Option<Whole>> = vec![None; n];
    while let Some((i, ev)) = events.next().await {
        match fold.step(i, ev)? {
            None => {}
            Some(Step::Delta {
                choice,
                text,
                sampled: s,
            }) => {
                texts[choice as usize].push_str(&text);
                sampled[choice as usize].extend(s);
            }
            Some(Step::End { choice, ending }) => {
                let k = choice as usize;
                let mut content = std::mem::take(&mut texts[k]);
                content.push_str(ending.content.as_deref().unwrap_or_default());
                let mut s = std::mem::take(&mut sampled[k]);
                s.extend(ending.sampled);
                wholes[k] = Some(Whole {
                    content,
                    calls: ending.calls,
                    sampled: s,
                    reason: ending.reason,
                    finished: ending.finished,
                });
                if fold.all_done() {
                    break;
                }
            }
        }
    }
    let wholes = wholes
        .into_iter()
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| GenError::Internal("generation ended without a result".into()))?;
    Ok((wholes, fold.usage()))
}
