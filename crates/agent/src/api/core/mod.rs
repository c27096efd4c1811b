//! The protocol-neutral core that every door is a thin adapter over (OpenAI chat and
//! text completions, the Responses API, Ollama, gRPC):
//!
//! - [`error`]: errors in OpenAI's format, request bodies parsed into 400s, SSE;
//! - [`route`]: one entry of the HTTP route table;
//! - [`setup`]: constraint checks and starting `n` choices of one prompt;
//! - [`choice`]: one choice's text as it arrives (content released, tool calls held and
//!   parsed, a call cut short by `max_tokens` still returned as a call);
//! - [`fold`]: one fold over the merged generation events of a request's choices, giving
//!   protocol-neutral steps (a delta, an end) that the adapters format.

pub mod choice;
pub mod error;
pub mod fold;
pub mod route;
pub mod setup;

pub use choice::{ChoiceState, Ending, Sampled};
pub use error::{
    error_event, parse_body, parse_json, sse_response, ApiError, RawBody, RETRY_AFTER_SECS,
};
pub use fold::{collect, Fold, Step, Whole};
pub use route::ApiRoute;
pub use setup::{check_constraint, start_choices, token_logprob, tool_constraint};
