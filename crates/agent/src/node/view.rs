//! The cluster as this agent sees it (members and plan), independent of the gossip
//! library, and the pipeline route derived from it.

use std::ops::Range;

/// A layer range as written for people everywhere (logs, `/health`, errors, the TUI):
/// half-open, `[0,10)` = layers 0 to 9.
pub fn fmt_layers(r: &Range<usize>) -> String {
    proto::fmt_layers(r.start as u64, r.end as u64)
}

/// A plan version as written for people everywhere (logs, `/health`, the TUI): 16 hex
/// digits. (Prometheus has the low 53 bits as a number; `/v1/cluster` the full u64.)
pub fn fmt_plan(version: u64) -> String {
    proto::fmt_plan(version)
}

/// Liveness of a member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    Alive,
    Suspect,
    Dead,
}

impl Liveness {
    pub fn label(self) -> &'static str {
        match self {
            Liveness::Alive => "alive",
            Liveness::Suspect => "suspect",
            Liveness::Dead => "dead",
        }
    }
}

/// What one member advertises, plus its liveness.
#[derive(Debug, Clone, PartialEq)]
pub struct MemberView {
    pub node_id: String,
    pub api_addr: String,
    pub gossip_addr: String,
    pub metrics_addr: String,
    pub state: Liveness,
    pub is_self: bool,
    pub cpu_cores: u32,
    pub memory_total: u64,
    pub memory_available: u64,
    pub gpu_count: u32,
    pub gpu_memory_total: u64,
    pub models: Vec<String>,
    pub layers: Option<Range<usize>>,
    pub healthy: bool,
    pub generation: u64,
    pub version: String,
    pub plan_version: u64,
}

/// One slice of the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slice {
    pub node_id: String,
    pub api_addr: String,
    pub range: Range<usize>,
}

/// The layer plan in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanView {
    pub version: u64,
    pub model: String,
    pub n_layers: usize,
    /// Ordered by start.
    pub slices: Vec<Slice>,
}

impl PlanView {
    /// Layers not covered by any slice.
    pub fn gaps(&self) -> Vec<Range<usize>> {
        let mut gaps = Vec::new();
        let mut at = 0;
        for s in &self.slices {
            if s.range.start > at {
                gaps.push(at..s.range.start);
            }
            at = at.max(s.range.end);
        }
        if at < self.n_layers {
            gaps.push(at..self.n_layers);
        }
        gaps
    }

    /// True when the slices tile `[0, n_layers)` exactly.
    pub fn is_complete(&self) -> bool {
        let mut at = 0;
        for s in &self.slices {
            if s.range.start != at || s.range.is_empty() {
                return false;
            }
            at = s.range.end;
        }
        at == self.n_layers && self.n_layers > 0
    }

    /// The slice planned for `node_id`.
    pub fn slice_of(&self, node_id: &str) -> Option<&Slice> {
        self.slices.iter().find(|s| s.node_id == node_id)
    }
}

/// Members (sorted by id) and the plan.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClusterView {
    pub members: Vec<MemberView>,
    pub plan: Option<PlanView>,
    /// Why there is no plan (when `plan` is `None`).
    pub plan_error: Option<String>,
}

impl ClusterView {
    pub fn member(&self, node_id: &str) -> Option<&MemberView> {
        self.members.iter().find(|m| m.node_id == node_id)
    }

    pub fn count(&self, state: Liveness) -> usize {
        self.members.iter().filter(|m| m.state == state).count()
    }
}

/// One hop of a request's pipeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteHop {
    pub node_id: String,
    pub api_addr: String,
    pub range: Range<usize>,
    pub local: bool,
}

/// The stages a request goes through, or a message saying which layers are missing.
/// `local_range` is what this agent has loaded now (fresher than its advert).
pub fn route(
    view: &ClusterView,
    self_id: &str,
    local_range: Option<Range<usize>>,
) -> Result<(u64, Vec<RouteHop>), String> {
    let plan = view.plan.as_ref().ok_or_else(|| match &view.plan_error {
        Some(e) => format!("no placement plan: {e}"),
        None => "no placement plan yet".to_string(),
    })?;
    if !plan.is_complete() {
        let gaps: Vec<String> = plan.gaps().iter().map(fmt_layers).collect();
        return Err(format!(
            "plan {} does not cover layers {} of {}",
            fmt_plan(plan.version),
            gaps.join(", "),
            plan.n_layers
        ));
    }
    let mut hops = Vec::with_capacity(plan.slices.len());
    let mut missing = Vec::new();
    for s in &plan.slices {
        let local = s.node_id == self_id;
        let ready = if local {
            local_range.as_ref() == Some(&s.range)
        } else {
            view.member(&s.node_id)
                .is_some_and(|m| m.state != Liveness::Dead && m.layers.as_ref() == Some(&s.range))
        };
        if !ready {
            missing.push(format!(
                "layers {} (planned on {}, not loaded yet)",
                fmt_layers(&s.range),
                s.node_id
            ));
        }
        hops.push(RouteHop {
            node_id: s.node_id.clone(),
            api_addr: s.api_addr.clone(),
            range: s.range.clone(),
            local,
        });
    }
    if missing.is_empty() {
        Ok((plan.version, hops))
    } else {
        Err(format!("model not available: {}", missing.join("; ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: &str, layers: Option<Range<usize>>, state: Liveness) -> MemberView {
        MemberView {
            node_id: id.into(),
            api_addr: format!("{id}:8080"),
            gossip_addr: String::new(),
            metrics_addr: String::new(),
            state,
            is_self: false,
            cpu_cores: 2,
            memory_total: 1,
            memory_available: 1,
            gpu_count: 0,
            gpu_memory_total: 0,
            models: vec![],
            layers,
            healthy: true,
            generation: 1,
            version: String::new(),
            plan_version: 7,
        }
    }

    fn plan(parts: &[(&str, Range<usize>)]) -> PlanView {
        PlanView {
            version: 7,
            model: "m".into(),
            n_layers: 30,
            slices: parts
                .iter()
                .map(|(id, r)| Slice {
                    node_id: id.to_string(),
                    api_addr: format!("{id}:8080"),
                    range: r.clone(),
                })
                .collect(),
        }
    }

    #[test]
    fn complete_ready_plan_routes() {
        let view = ClusterView {
            members: vec![member("b", Some(10..30), Liveness::Alive)],
            plan: Some(plan(&[("a", 0..10), ("b", 10..30)])),
            plan_error: None,
        };
        let (v, hops) = route(&view, "a", Some(0..10)).unwrap();
        assert_eq!(v, 7);
        assert!(hops[0].local && !hops[1].local);
    }

    #[test]
    fn stale_or_dead_owner_is_reported() {
        let view = ClusterView {
            members: vec![member("b", Some(15..30), Liveness::Alive)],
            plan: Some(plan(&[("a", 0..10), ("b", 10..30)])),
            plan_error: None,
        };
        let e = route(&view, "a", Some(0..10)).unwrap_err();
        assert!(e.contains("layers [10,30) (planned on b"), "{e}");
        let view = ClusterView {
            members: vec![member("b", Some(10..30), Liveness::Dead)],
            ..view
        };
        assert!(route(&view, "a", Some(0..10)).is_err());
    }

    #[test]
    fn gaps_are_named() {
        let view = ClusterView {
            members: vec![],
            plan: Some(plan(&[("a", 0..10), ("b", 12..30)])),
            plan_error: None,
        };
        let e = route(&view, "a", Some(0..10)).unwrap_err();
        assert!(e.contains("does not cover layers [10,12) of 30"), "{e}");
        assert!(!plan(&[("a", 0..10)]).is_complete());
    }

    #[test]
    fn ranges_and_plans_have_one_spelling() {
        assert_eq!(fmt_layers(&(0..10)), "[0,10)");
        assert_eq!(fmt_plan(0x1f), "000000000000001f");
        assert_eq!(fmt_plan(u64::MAX), "ffffffffffffffff");
    }
}
