//! Constrained decoding: the tokens a sequence may sample next so that its text follows a
//! JSON schema, a regular expression or a grammar, computed by
//! [llguidance](https://crates.io/crates/llguidance) (the engine llama.cpp and vLLM use).
//!
//! - [`TokenEnv`]: the model's vocabulary as llguidance sees it (each token's bytes,
//!   control tokens marked, the end-of-generation tokens); built once per model, cheap to
//!   clone (shared).
//! - [`Constraint`]: what the output must follow; serde-serializable so that the stage
//!   that samples can be sent it.
//! - [`Matcher`]: one per sequence: [`Matcher::allowed`] gives the bitset
//!   [`Sampler::pick`](crate::Sampler::pick) takes, [`Matcher::accept`] advances it by
//!   the sampled token. It holds no state but the tokens it accepted, so a replacement
//!   stage rebuilds it with [`Matcher::replay`].
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use engine::constrain::{Constraint, Matcher, TokenEnv};
//! use engine::{Sampler, SamplingParams, Tokenizer};
//! let tok = Tokenizer::from_gguf(std::path::Path::new("model.gguf"))?;
//! let env = TokenEnv::new(&tok)?; // once per model
//! let mut m = Matcher::new(&env, &Constraint::JsonObject)?; // once per sequence
//! let sampler = Sampler::new(&SamplingParams::default());
//! # let (mut logits, history) = (vec![0f32; tok.vocab_size()], Vec::<u32>::new());
//! let token = sampler.pick(&mut logits, &history, Some(m.allowed())).token;
//! m.accept(token)?; // then m.is_done(): only an end-of-generation token may follow
//! # Ok(()) }
//! ```
//!
//! ## Grammars (Lark)
//!
//! [`Constraint::Lark`] takes llguidance's variant of Lark
//! (<https://github.com/guidance-ai/llguidance/blob/main/docs/syntax.md>): rules, regex
//! terminals (`/.../`, with `&` and `~` between them), `%json { schema }` for a
//! JSON-schema-shaped part ([`lark_json`] writes one with this module's JSON settings)
//! and `<|name|>` for a control token by its text (`<[id]>` by id). Text that is an
//! ordinary token sequence, like `<tool_call>` in most vocabularies, is a quoted string.
//! A tool-call grammar, "free text, or one or more calls of one of N tools":
//!
//! ```text
//! start: TEXT | calls
//! TEXT: /(?s:.+)/ & ~/(?s:\s*<tool_call>.*)/
//! calls: call          # call+ with parallel calls
//! call: "<tool_call>\n" args "\n</tool_call>" "\n"?
//! args: %json {"anyOf": [{"type": "object", "properties": {"name": {"const": "get_weather"},
//!        "arguments": {...}}, "required": ["name", "arguments"]}, ...]}
//! ```
//!
//! `tool_choice: "required"` is `start: calls`; a named function keeps one schema.
//! [`tool_grammar`] writes this grammar and [`parse_tool_calls`] reads the calls back.

mod env;
mod matcher;
mod tools;

pub use env::TokenEnv;
pub use matcher::{lark_json, Constraint, Matcher};
pub use tools::{parse_tool_calls, tool_grammar, ToolMode, CALL_CLOSE, CALL_OPEN};
