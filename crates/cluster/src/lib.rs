//! Cluster layer of distributed-llm: gossip membership and deterministic placement.
//!
//! No dependency on the engine or the agent.
//!
//! # Placement ([`placement`])
//!
//! ```ignore
//! let plan = cluster::plan(&ModelFootprint { n_layers, layer_bytes, embed_bytes, head_bytes },
//!                          &[Capacity { node_id, memory_available, memory_limit, cpu_cores, gpu_memory }])?;
//! plan.stage_of("agent-1")  // Option<&Assignment { node_id, start, end }>, [start, end)
//! plan.covers_all()         // contiguous, non-empty, exactly [0, n_layers)
//! plan.version              // stable FNV-1a hash, equal on every agent
//! ```
//!
//! Every agent computes the same plan from the same gossiped capacities: nodes are
//! sorted by id and memory is quantised to 256 MiB. See [`placement`] for the rules.

pub mod hash;
pub mod placement;

pub use placement::{plan, Assignment, Capacity, ModelFootprint, Plan, PlacementError};
