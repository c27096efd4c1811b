//! OpenAI-compatible API types: requests and their validation ([`request`]), response
//! bodies ([`response`]).

pub mod request;
pub mod response;

pub use request::*;
pub use response::*;
