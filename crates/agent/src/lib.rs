//! The distributed-llm agent: gossip membership, layer placement, pipeline-parallel
//! generation over gRPC, an OpenAI-compatible HTTP API and Prometheus metrics.
//!
//! Layers, each depending only on those below it: `api` (HTTP, gRPC) → `serving`
//! (admission, coordinators) → `pipeline` (stage worker, links, wire) → `node` (state,
//! membership, placement, resources); `metrics` and `security` are shared by all.

pub mod api;
pub mod bench;
pub mod config;
pub mod generate;
pub mod healthcheck;
pub mod httpc;
pub mod logging;
pub mod metrics;
pub mod node;
pub mod pipeline;
pub mod run;
pub mod security;
pub mod serving;
