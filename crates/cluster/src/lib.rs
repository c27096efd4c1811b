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
//! sorted by id and memory is quantised (64 MiB budgets, 256 MiB weight units).
//! See [`placement`] for the rules.
//!
//! # Membership ([`membership`])
//!
//! ```ignore
//! let mut cfg = MembershipConfig::new("agent-1", "0.0.0.0:7946".parse()?);
//! cfg.advertise = "172.20.0.2:7946".parse()?;      // routable, never 0.0.0.0
//! cfg.seeds = vec!["agent-1:7946".into()];         // host:port, re-resolved every 3 s
//! let m = Membership::start(cfg, advert).await?;   // ClusterError::Bind if the port is taken
//! m.set_advert(&advert).await;                     // republish (JSON under key "advert")
//! m.members().await;                               // Vec<Member>, self included, sorted by id
//! let mut rx = m.subscribe();                      // watch: changes of members/states/adverts
//! m.shutdown().await;
//! ```
//!
//! Built on chitchat: identity is `ChitchatId { node_id, generation, advertise }`; a
//! restarted agent uses a higher generation ([`generation_now`]) and replaces its old
//! incarnation. Liveness comes from chitchat's phi-accrual detector, tuned so that a
//! silent peer is Dead after about `dead_after` (default 3 s): Suspect once silent
//! for half of the detector's current timeout, Alive otherwise. Dead members stay listed for
//! [`MembershipConfig::forget_after`]. Do not hold a `watch::Ref` from
//! [`Membership::subscribe`] across an `.await`: it blocks the publisher.
//!
//! # Authenticated gossip ([`auth`])
//!
//! `cfg.auth = Some(GossipAuth::new(secret))` makes every datagram carry an
//! HMAC-SHA256 tag; datagrams without a valid one are dropped and counted
//! ([`Membership::rejected_datagrams`], or a hook via [`GossipAuth::on_reject`]), so
//! nodes without the secret never become members.

pub mod advert;
pub mod auth;
pub mod error;
pub mod hash;
pub mod membership;
pub mod placement;
pub mod seeds;
mod view;

pub use advert::{GpuAdvert, Member, MemberState, NodeAdvert, ADVERT_KEY};
pub use auth::GossipAuth;
pub use error::ClusterError;
pub use membership::{generation_now, Membership, MembershipConfig};
pub use placement::{plan, Assignment, Capacity, ModelFootprint, PlacementError, Plan};
