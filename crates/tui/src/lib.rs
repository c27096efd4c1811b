//! The `tui` of distributed-llm: discovers agents (seed list, Docker, Kubernetes),
//! shows the cluster live and chats with the model over the agents' gRPC API.
//!
//! - [`discovery`]: one [`discovery::Discovery`] trait, three modes.
//! - [`client`]: gRPC calls, the background poller (reconnects on its own).
//! - [`app`]: state and key handling (pure).
//! - [`ui`]: rendering, one module per view.
//! - [`cli`]: flags, logging to a file, building the discovery.

pub mod app;
pub mod cli;
pub mod client;
pub mod discovery;
pub mod ui;

#[cfg(test)]
pub(crate) mod fixture;
