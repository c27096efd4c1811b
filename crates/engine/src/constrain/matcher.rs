//! What an output must follow ([`Constraint`]) and the per-sequence state that turns it
//! into the tokens allowed next ([`Matcher`]).

use super::env::TokenEnv;
use llguidance::api::TopLevelGrammar;
use llguidance::toktrie::SimpleVob;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// What the generated text must follow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Constraint {
    /// Any JSON object (OpenAI's `response_format: {"type": "json_object"}`).
    JsonObject,
    /// Text matching a JSON schema (OpenAI's `json_schema`). `strict: false` ignores
    /// keywords llguidance does not implement (unknown formats, ...); `strict: true`
    /// refuses such a schema. An `x-guidance` object at the top of the schema overrides
    /// the JSON layout settings (see [`lark_json`]).
    JsonSchema {
        schema: Value,
        #[serde(default)]
        strict: bool,
    },
    /// Text matching a regular expression (Rust `regex` syntax), whole.
    Regex(String),
    /// A grammar in llguidance's Lark format (see the [module docs](super)).
    Lark(String),
}

/// Most characters of a compile error kept in the message.
const MAX_ERROR: usize = 1000;

/// The JSON settings this engine compiles schemas with: one space after `,` and `:`
/// (as Python's `json.dumps` writes it; models know the layout) and no other
/// whitespace, so that a small model cannot wander off into endless blank lines.
fn json_settings(strict: bool) -> Value {
    json!({
        "whitespace_flexible": false,
        "item_separator": ", ",
        "key_separator": ": ",
        "lenient": !strict,
    })
}

/// `schema` with this engine's JSON settings unless it brings its own `x-guidance`.
fn with_settings(schema: &Value, strict: bool) -> Value {
    let mut s = schema.clone();
    if let Some(obj) = s.as_object_mut() {
        obj.entry("x-guidance")
            .or_insert_with(|| json_settings(strict));
    }
    s
}

/// `%json {...}` for a Lark grammar: `schema` compiled with the same settings as
/// [`Constraint::JsonSchema`] (so that a tool call's arguments look like a
/// `response_format` answer).
pub fn lark_json(schema: &Value, strict: bool) -> String {
    format!("%json {}", with_settings(schema, strict))
}

impl Constraint {
    fn grammar(&self) -> TopLevelGrammar {
        match self {
            Constraint::JsonObject => {
                TopLevelGrammar::from_json_schema(with_settings(&json!({"type": "object"}), true))
            }
            Constraint::JsonSchema { schema, strict } => {
                TopLevelGrammar::from_json_schema(with_settings(schema, *strict))
            }
            Constraint::Regex(rx) => TopLevelGrammar::from_regex(rx),
            Constraint::Lark(g) => TopLevelGrammar::from_lark(g.clone()),
        }
    }

    fn what(&self) -> &'static str {
        match self {
            Constraint::JsonObject | Constraint::JsonSchema { .. } => "JSON schema",
            Constraint::Regex(_) => "regular expression",
            Constraint::Lark(_) => "grammar",
        }
    }
}

fn shorten(mut s: String) -> String {
    if s.len() > MAX_ERROR {
        let mut end = MAX_ERROR;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push_str("...");
    }
    s
}

/// The state of one sequence under a [`Constraint`]: which tokens may come next.
///
/// Its only input is the tokens it accepted, so it can be rebuilt anywhere from a
/// sequence's generated tokens ([`Matcher::replay`]), e.g. after a stage failover.
/// Only generated tokens go in, never the prompt.
pub struct Matcher {
    env: TokenEnv,
    inner: llguidance::Matcher,
    /// The mask of the current state, when `fresh` and not `eog_only`.
    mask: SimpleVob,
    fresh: bool,
    /// The current state allows only end-of-generation tokens.
    eog_only: bool,
    accepted: usize,
}

impl std::fmt::Debug for Matcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Matcher")
            .field("accepted", &self.accepted)
            .field("done", &self.is_done())
            .field("error", &self.error())
            .finish()
    }
}

impl Matcher {
    /// A matcher at the start of the output. Fails with a message naming the problem
    /// (for a client: a 400) when `constraint` cannot be compiled.
    pub fn new(env: &TokenEnv, constraint: &Constraint) -> Result<Matcher, String> {
        let parser = env
            .factory()
            .create_parser(constraint.grammar())
            .map_err(|e| shorten(format!("invalid {}: {e}", constraint.what())))?;
        let inner = llguidance::Matcher::new(Ok(parser));
        if let Some(e) = inner.get_error() {
            return Err(shorten(format!("invalid {}: {e}", constraint.what())));
        }
        Ok(Matcher {
            env: env.clone(),
            inner,
            mask: SimpleVob::new(),
            fresh: false,
            eog_only: false,
            accepted: 0,
        })
    }

    /// A matcher that has accepted `generated` (the tokens sampled so far).
    pub fn replay(
        env: &TokenEnv,
        constraint: &Constraint,
        generated: &[u32],
    ) -> Result<Matcher, String> {
        let mut m = Matcher::new(env, constraint)?;
        for &t in generated {
            m.accept(t)?;
        }
        Ok(m)
    }

    /// The tokens allowed next, as a bitset (bit `i % 32` of word `i / 32` set = token
    /// `i` allowed; `vocab_size().div_ceil(32)` words), the format
    /// [`Sampler::pick`](crate::Sampler::pick) takes. Computed once per state (the
    /// first call after [`accept`](Self::accept)). When the grammar is complete, or
    /// cannot continue ([`error`](Self::error) then says why), only the
    /// end-of-generation tokens are allowed, so the sequence ends.
    pub fn allowed(&mut self) -> &[u32] {
        if !self.fresh {
            self.fresh = true;
            self.eog_only = true;
            if !self.inner.is_stopped() {
                if let Ok(m) = self.inner.compute_mask() {
                    self.mask = m;
                    self.eog_only = false;
                }
            }
        }
        if self.eog_only {
            self.env.eog_mask()
        } else {
            self.mask.as_slice()
        }
    }

    /// Whether `token` may come next (computes the mask if needed).
    pub fn is_allowed(&mut self, token: u32) -> bool {
        let mask = self.allowed();
        mask.get(token as usize / 32)
            .is_some_and(|w| w >> (token % 32) & 1 == 1)
    }

    /// Advances past `token`. A token the constraint does not allow is an error, after
    /// which the matcher allows only end-of-generation tokens. After the grammar is
    /// complete only end-of-generation tokens are accepted.
    pub fn accept(&mut self, token: u32) -> Result<(), String> {
        if let Some(e) = self.inner.get_error() {
            return Err(e);
        }
        if self.inner.is_stopped() {
            if self.env.is_eog(token) {
                self.accepted += 1;
                return Ok(());
            }
            return Err(format!(
                "token {token} after the end of the constrained output (only end of \
                 generation may follow)"
            ));
        }
        self.fresh = false;
        self.inner
            .consume_token(token)
            .map_err(|e| shorten(format!("token {token} breaks the constraint: {e}")))?;
        self.accepted += 1;
        Ok(())
    }

    /// Whether the output is complete: only an end-of-generation token may follow (or
    /// one already did).
    pub fn is_done(&self) -> bool {
        self.inner.is_stopped() && !self.inner.is_error()
    }

    /// Why the matcher cannot continue, if it cannot.
    pub fn error(&self) -> Option<String> {
        self.inner.get_error()
    }

    /// Tokens accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted
    }

    /// The vocabulary this matcher works on.
    pub fn env(&self) -> &TokenEnv {
        &self.env
    }
}
