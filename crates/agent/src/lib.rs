//! The distributed-llm agent: gossip membership, layer placement, pipeline-parallel
//! generation over gRPC, an OpenAI-compatible HTTP API and Prometheus metrics.

pub mod admission;
pub mod bench;
pub mod config;
pub mod convert;
pub mod generate;
pub mod grpc;
pub mod healthcheck;
pub mod http;
pub mod httpc;
pub mod logging;
pub mod membership;
pub mod metrics;
pub mod openai;
pub mod pipeline;
pub mod placement;
pub mod resources;
pub mod run;
pub mod security;
pub mod server;
pub mod state;
pub mod tls;
pub mod view;
