//! What travels along a pipeline: sequences are opened, stepped and closed on every
//! stage of their route; hidden states go stage to stage; the last stage samples, sends
//! the token back to the sequence's origin (the entry agent) and the next step straight
//! to the first stage, so a running sequence circulates without a detour.

use std::ops::Range;
use std::sync::Arc;

use engine::constrain::Constraint;
use engine::{HiddenState, Pooling, SamplingParams};

/// A sequence's id, unique in the cluster (drawn at random by its origin).
pub type SeqId = u64;

/// One stage of a route.
#[derive(Debug, Clone, PartialEq)]
pub struct Hop {
    pub node_id: String,
    /// API address (host:port).
    pub addr: String,
    pub range: Range<usize>,
}

/// The stages a sequence runs through, in layer order, and where its tokens go.
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    pub plan_version: u64,
    pub hops: Vec<Hop>,
    /// Node id and API address of the entry agent.
    pub origin: (String, String),
}

impl Route {
    /// Index of the stage holding `range`.
    pub fn position(&self, range: &Range<usize>) -> Option<usize> {
        self.hops.iter().position(|h| &h.range == range)
    }
}

/// Opens a sequence on a stage (forwarded along the route ahead of its steps; the origin
/// closes it on every stage directly).
#[derive(Debug, Clone)]
pub struct Open {
    pub seq: SeqId,
    pub route: Arc<Route>,
    /// Sampling (used by the last stage), with its seed filled in by the origin.
    pub params: SamplingParams,
    pub prompt_len: usize,
    /// Positions the stages take from their prefix caches instead of computing them:
    /// the first `reuse.len()` tokens of the prompt.
    pub reuse: Vec<u32>,
    /// What the generated text must follow (applied where sampling happens).
    pub constraint: Option<Constraint>,
}

/// What an embedding sequence's last stage returns instead of sampling: the final
/// hidden states of all its positions pooled into one vector (divided by its L2 norm
/// when `normalize`), sent to the origin as an [`Embedding`] after the step marked
/// `sample`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EmbedSpec {
    pub pooling: Pooling,
    pub normalize: bool,
}

/// The next positions of a sequence.
#[derive(Debug, Clone)]
pub struct Step {
    pub seq: SeqId,
    /// Position of the first token (positions already in the stage's cache).
    pub pos: usize,
    pub tokens: Vec<u32>,
    /// Input hidden states (every stage but the first).
    pub hidden: Option<HiddenState>,
    /// Whether the last stage samples after this step (the last chunk of a prompt and
    /// every generated token).
    pub sample: bool,
}

/// Why the last stage stopped a sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    /// An end-of-generation token.
    Eog,
    /// `max_tokens` or the context reached.
    Length,
}

/// A sampled token, sent to the origin.
#[derive(Debug, Clone, PartialEq)]
pub struct Token {
    pub seq: SeqId,
    /// Its position in the sequence.
    pub pos: usize,
    pub id: u32,
    pub logprob: f32,
    pub top: Vec<(u32, f32)>,
    /// Set when the last stage will not continue the sequence.
    pub finish: Option<Finish>,
}

/// A sequence's pooled embedding, sent by the last stage to the origin (the reply to
/// the step marked `sample` of a sequence opened with [`Msg::OpenEmbedding`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Embedding {
    pub seq: SeqId,
    pub data: Vec<f32>,
}

/// What went wrong with a sequence on a stage, sent to its origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FaultKind {
    /// No room for its KV cache now: try again later.
    Busy,
    /// The prefix to reuse is not (or no longer) cached: open again without reuse.
    PrefixMiss,
    /// The stage cannot run it (wrong layers, bad input): re-plan or fail.
    Failed,
}

/// A failure of one sequence on one stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    pub seq: SeqId,
    pub kind: FaultKind,
    pub node_id: String,
    pub message: String,
}

/// A pipeline message.
#[derive(Debug, Clone)]
pub enum Msg {
    Open(Open),
    /// Opens an embedding sequence: like [`Msg::Open`] (with no `reuse`: an embedding
    /// pools every position, so no stage may take positions from its prefix cache), but
    /// its last stage answers with an [`Embedding`] instead of sampling. A message of
    /// its own rather than a field of [`Open`], so that generation's opens stay as
    /// they are.
    OpenEmbedding(Open, EmbedSpec),
    Step(Step),
    Close(SeqId),
    Token(Token),
    Embedding(Embedding),
    Fault(Fault),
}

/// A message and the node it goes to (node id, API address).
#[derive(Debug, Clone)]
pub struct Envelope {
    pub to: (String, String),
    pub msg: Msg,
}
