//! This agent as a cluster member: its shared state, gossip membership, the layer plan
//! and placement loop, and its resources.

pub mod membership;
pub mod placement;
pub mod resources;
pub mod state;
pub mod view;
