//! Deterministic layer placement: which node holds which contiguous layer range.
//!
//! Every agent runs [`plan`] on the same gossiped inputs and gets the same [`Plan`]:
//! nodes are sorted by `node_id`, capacities are quantised ([`QUANTUM`]) so small
//! fluctuations of free memory do not move layers (budgets to [`QUANTUM`],
//! weights to [`WEIGHT_UNIT`]), and the search is exact and
//! integer-only (a dynamic program over layer boundaries), so no float rounding
//! can differ between machines.
//!
//! Rules:
//! - ranges follow node-id order, are contiguous, non-empty and cover `[0, n_layers)`;
//! - a node never gets more than its [`Capacity::budget`]; the first stage also pays
//!   `embed_bytes`, the last stage pays `head_bytes` (tied heads: both ends pay);
//! - within those limits, layer counts are as close as possible (least squares) to
//!   shares proportional to [`Capacity::weight`];
//! - every usable node gets at least one layer while nodes <= layers; a node that
//!   cannot hold even one layer gets nothing; with more nodes than layers the
//!   lightest nodes are left out.

use std::collections::BTreeSet;

use crate::hash::Fnv64;

/// Granularity of memory budgets: 64 MiB (fine enough for small containers).
pub const QUANTUM: u64 = 64 * 1024 * 1024;

/// Granularity of the memory part of weights: 256 MiB (coarse, so shares are stable).
pub const WEIGHT_UNIT: u64 = 256 * 1024 * 1024;

/// Memory needs of a model, from its GGUF tensors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelFootprint {
    /// Transformer layers.
    pub n_layers: usize,
    /// Bytes of each layer's tensors (`len() == n_layers`).
    pub layer_bytes: Vec<u64>,
    /// Token embedding (paid by the first stage).
    pub embed_bytes: u64,
    /// Final norm and output head (paid by the last stage; equals the embedding when tied).
    pub head_bytes: u64,
}

impl ModelFootprint {
    /// Footprint with `n_layers` layers of `layer` bytes each.
    pub fn uniform(n_layers: usize, layer: u64, embed_bytes: u64, head_bytes: u64) -> Self {
        Self {
            n_layers,
            layer_bytes: vec![layer; n_layers],
            embed_bytes,
            head_bytes,
        }
    }

    /// Bytes of the whole model on one node.
    pub fn total_bytes(&self) -> u64 {
        self.layer_bytes.iter().sum::<u64>() + self.embed_bytes + self.head_bytes
    }
}

/// Resources a node offers, as gossiped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capacity {
    /// Unique node id (sort key of the plan).
    pub node_id: String,
    /// Memory available for model weights. Agents should add back the bytes of the
    /// layers they already hold, or loading a plan would shrink it and cause a re-plan.
    pub memory_available: u64,
    /// Optional hard cap (e.g. `--max-memory` or a cgroup limit).
    pub memory_limit: Option<u64>,
    /// Logical CPU cores.
    pub cpu_cores: u32,
    /// Total GPU memory (only raises the weight; weights are held in host memory).
    pub gpu_memory: u64,
}

impl Capacity {
    /// Bytes of layers this node may hold: `min(memory_available, memory_limit)`
    /// rounded down to [`QUANTUM`].
    pub fn budget(&self) -> u64 {
        let m = self
            .memory_limit
            .map_or(self.memory_available, |l| l.min(self.memory_available));
        m / QUANTUM * QUANTUM
    }

    /// Relative share of layers:
    /// `max(1, (budget + gpu_memory) / WEIGHT_UNIT) * isqrt(16 * cores)`.
    /// Memory dominates; more cores or GPU memory raise the share sub-linearly.
    pub fn weight(&self) -> u128 {
        let units = (self.budget() / WEIGHT_UNIT + self.gpu_memory / WEIGHT_UNIT).min(1 << 24);
        let cores = u64::from(self.cpu_cores.clamp(1, 4096));
        u128::from(units.max(1)) * u128::from((16 * cores).isqrt())
    }
}

/// One node's slice of the model: layers `[start, end)`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Assignment {
    /// Node holding the slice.
    pub node_id: String,
    /// First layer (inclusive).
    pub start: usize,
    /// End of the slice (exclusive).
    pub end: usize,
}

impl Assignment {
    /// Layers in the slice.
    pub fn len(&self) -> usize {
        self.end.saturating_sub(self.start)
    }

    /// True when the slice holds no layer.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A complete placement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Stable FNV-1a hash of `n_layers` and the assignments: equal on every agent.
    pub version: u64,
    /// Transformer layers of the model.
    pub n_layers: usize,
    /// Slices ordered by `start`.
    pub assignments: Vec<Assignment>,
}

impl Plan {
    /// Builds a plan from assignments (sorted by start) and computes its version.
    pub fn new(n_layers: usize, mut assignments: Vec<Assignment>) -> Self {
        assignments.sort_by_key(|a| a.start);
        let version = plan_version(n_layers, &assignments);
        Self {
            version,
            n_layers,
            assignments,
        }
    }

    /// The slice held by `node_id`, if any.
    pub fn stage_of(&self, node_id: &str) -> Option<&Assignment> {
        self.assignments.iter().find(|a| a.node_id == node_id)
    }

    /// Index of `node_id`'s stage in pipeline order.
    pub fn stage_index(&self, node_id: &str) -> Option<usize> {
        self.assignments.iter().position(|a| a.node_id == node_id)
    }

    /// The stage after `node_id`'s (None for the last stage or an unknown node).
    pub fn next_stage(&self, node_id: &str) -> Option<&Assignment> {
        self.assignments.get(self.stage_index(node_id)? + 1)
    }

    /// The stage holding layer 0.
    pub fn first(&self) -> Option<&Assignment> {
        self.assignments.first()
    }

    /// True when the slices are non-empty, contiguous, without overlap and cover
    /// `[0, n_layers)` exactly.
    pub fn covers_all(&self) -> bool {
        if self.n_layers == 0 || self.assignments.is_empty() {
            return false;
        }
        let mut next = 0;
        for a in &self.assignments {
            if a.start != next || a.end <= a.start {
                return false;
            }
            next = a.end;
        }
        next == self.n_layers
    }
}

/// Stable version of a set of assignments.
pub fn plan_version(n_layers: usize, assignments: &[Assignment]) -> u64 {
    let mut h = Fnv64::default();
    h.u64(n_layers as u64).u64(assignments.len() as u64);
    for a in assignments {
        h.str(&a.node_id).u64(a.start as u64).u64(a.end as u64);
    }
    h.finish()
}

/// Why no plan could be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlacementError {
    /// The model has no layers or `layer_bytes` does not match `n_layers`.
    #[error("invalid model footprint: n_layers = {n_layers} but {layer_bytes} layer sizes")]
    InvalidModel {
        /// Declared layers.
        n_layers: usize,
        /// Entries of `layer_bytes`.
        layer_bytes: usize,
    },
    /// No node was given.
    #[error("no nodes to place the model on")]
    NoNodes,
    /// Two capacities share a node id.
    #[error("duplicate node id {0:?} in placement input")]
    DuplicateNode(String),
    /// The nodes together cannot hold the model.
    #[error(
        "model does not fit: needs {needed} bytes, usable nodes offer {available} bytes \
         ({usable} of {nodes} nodes can hold a layer); {missing} more bytes are missing"
    )]
    InsufficientMemory {
        /// Bytes of the whole model.
        needed: u64,
        /// Sum of the budgets of the nodes able to hold at least one layer.
        available: u64,
        /// Least extra memory that would make a plan possible.
        missing: u64,
        /// Nodes able to hold at least one layer.
        usable: usize,
        /// Nodes given.
        nodes: usize,
    },
}

/// Computes the placement of `model` on `nodes` (any order; see the module docs).
pub fn plan(model: &ModelFootprint, nodes: &[Capacity]) -> Result<Plan, PlacementError> {
    if model.n_layers == 0 || model.layer_bytes.len() != model.n_layers {
        return Err(PlacementError::InvalidModel {
            n_layers: model.n_layers,
            layer_bytes: model.layer_bytes.len(),
        });
    }
    if nodes.is_empty() {
        return Err(PlacementError::NoNodes);
    }
    let mut seen = BTreeSet::new();
    for n in nodes {
        if !seen.insert(n.node_id.as_str()) {
            return Err(PlacementError::DuplicateNode(n.node_id.clone()));
        }
    }
    let smallest_layer = model.layer_bytes.iter().copied().min().unwrap_or(0);
    let mut usable: Vec<&Capacity> = nodes
        .iter()
        .filter(|n| n.budget() >= smallest_layer)
        .collect();
    usable.sort_by(|a, b| a.node_id.cmp(&b.node_id));

    let table = CostTable::new(model);
    let budgets: Vec<u64> = usable.iter().map(|n| n.budget()).collect();
    let weights: Vec<u128> = usable.iter().map(|n| n.weight()).collect();

    match best_split(&table, &budgets, &weights) {
        Some(counts) => {
            let mut start = 0;
            let mut assignments = Vec::new();
            for (node, count) in usable.iter().zip(counts) {
                if count > 0 {
                    assignments.push(Assignment {
                        node_id: node.node_id.clone(),
                        start,
                        end: start + count,
                    });
                }
                start += count;
            }
            Ok(Plan::new(model.n_layers, assignments))
        }
        None => {
            let available: u64 = budgets.iter().sum();
            let needed = model.total_bytes();
            Err(PlacementError::InsufficientMemory {
                needed,
                available,
                missing: min_overflow(&table, &budgets).max(needed.saturating_sub(available)),
                usable: usable.len(),
                nodes: nodes.len(),
            })
        }
    }
}

/// Prefix sums of layer bytes, for O(1) range costs.
struct CostTable {
    prefix: Vec<u64>,
    embed: u64,
    head: u64,
}

impl CostTable {
    fn new(model: &ModelFootprint) -> Self {
        let mut prefix: Vec<u64> = Vec::with_capacity(model.n_layers + 1);
        prefix.push(0);
        for b in &model.layer_bytes {
            prefix.push(prefix.last().copied().unwrap_or(0u64).saturating_add(*b));
        }
        Self {
            prefix,
            embed: model.embed_bytes,
            head: model.head_bytes,
        }
    }

    fn n_layers(&self) -> usize {
        self.prefix.len() - 1
    }

    /// Bytes needed to hold layers `[s, e)` (0 when empty).
    fn cost(&self, s: usize, e: usize) -> u64 {
        if e <= s {
            return 0;
        }
        let mut c = self.prefix[e] - self.prefix[s];
        if s == 0 {
            c = c.saturating_add(self.embed);
        }
        if e == self.n_layers() {
            c = c.saturating_add(self.head);
        }
        c
    }
}

/// Shortest-path over layer boundaries: node `i` (in order) takes `[s, e)`.
/// `step(i, s, e)` is the cost of that choice or None when forbidden. Returns the
/// per-node layer counts of the cheapest complete split (ties: earliest boundaries).
fn split_dp(
    n_nodes: usize,
    n_layers: usize,
    step: impl Fn(usize, usize, usize) -> Option<u128>,
) -> Option<(u128, Vec<usize>)> {
    let width = n_layers + 1;
    let mut best = vec![None::<u128>; (n_nodes + 1) * width];
    let mut parent = vec![0usize; (n_nodes + 1) * width];
    best[0] = Some(0);
    for i in 0..n_nodes {
        for s in 0..=n_layers {
            let Some(base) = best[i * width + s] else {
                continue;
            };
            for e in s..=n_layers {
                let Some(c) = step(i, s, e) else { continue };
                let total = base.saturating_add(c);
                let slot = (i + 1) * width + e;
                if best[slot].is_none_or(|b| total < b) {
                    best[slot] = Some(total);
                    parent[slot] = s;
                }
            }
        }
    }
    let total = best[n_nodes * width + n_layers]?;
    let mut counts = vec![0; n_nodes];
    let mut e = n_layers;
    for i in (0..n_nodes).rev() {
        let s = parent[(i + 1) * width + e];
        counts[i] = e - s;
        e = s;
    }
    Some((total, counts))
}

/// Counts per node minimising the squared deviation from proportional shares,
/// subject to budgets; an empty node costs more than any deviation.
fn best_split(table: &CostTable, budgets: &[u64], weights: &[u128]) -> Option<Vec<usize>> {
    let n_layers = table.n_layers();
    let total_w: u128 = weights.iter().sum::<u128>().max(1);
    let l = n_layers as u128;
    // Each squared term is at most (l * total_w)^2; an empty node must outweigh them all.
    let max_term = (l * total_w).saturating_mul(l * total_w);
    let empty_penalty = max_term.saturating_mul(weights.len() as u128 + 1);
    split_dp(budgets.len(), n_layers, |i, s, e| {
        if e > s && table.cost(s, e) > budgets[i] {
            return None;
        }
        let dev = ((e - s) as u128 * total_w).abs_diff(l * weights[i]);
        let sq = dev.saturating_mul(dev);
        Some(if e == s {
            empty_penalty.saturating_add(sq)
        } else {
            sq
        })
    })
    .map(|(_, counts)| counts)
}

/// Least total bytes over budget among all splits (budgets may be exceeded).
fn min_overflow(table: &CostTable, budgets: &[u64]) -> u64 {
    if budgets.is_empty() {
        return table.cost(0, table.n_layers());
    }
    split_dp(budgets.len(), table.n_layers(), |i, s, e| {
        Some(u128::from(table.cost(s, e).saturating_sub(budgets[i])))
    })
    .map_or(u64::MAX, |(t, _)| u64::try_from(t).unwrap_or(u64::MAX))
}

#[cfg(test)]
#[path = "placement_tests.rs"]
mod tests;
