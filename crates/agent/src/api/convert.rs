//! Conversions between engine, view and protocol types.

use proto::v1 as pb;

use crate::node::resources::Resources;
use crate::node::view::{Liveness, MemberView, PlanView};

pub use crate::pipeline::wire::{sampling_from_proto, sampling_to_proto};

/// Resources to the wire.
pub fn resources_to_proto(r: &Resources) -> pb::Resources {
    pb::Resources {
        cpu_cores: r.cpu_cores,
        cpu_usage_percent: r.cpu_usage_percent as f32,
        memory_total_bytes: r.memory_total,
        memory_used_bytes: r.memory_used,
        memory_available_bytes: r.memory_available,
        gpus: r.gpus.iter().map(gpu_to_proto).collect(),
        cpu_limit_cores: r.cpu_limit as f32,
    }
}

/// One GPU to the wire.
pub fn gpu_to_proto(g: &crate::node::resources::GpuInfo) -> pb::GpuInfo {
    pb::GpuInfo {
        index: g.index,
        name: g.name.clone(),
        memory_total_bytes: g.memory_total,
        memory_used_bytes: g.memory_used,
        utilization_percent: g.utilization_percent as f32,
    }
}

/// A layer range to the wire (empty range for `None`).
pub fn range_to_proto(r: Option<&std::ops::Range<usize>>) -> pb::LayerRange {
    r.map(|r| pb::LayerRange {
        start: r.start as u32,
        end: r.end as u32,
    })
    .unwrap_or_default()
}

/// A member to the wire.
pub fn member_to_proto(m: &MemberView) -> pb::Member {
    let state = match m.state {
        Liveness::Alive => pb::MemberState::Alive,
        Liveness::Suspect => pb::MemberState::Suspect,
        Liveness::Dead => pb::MemberState::Dead,
    };
    pb::Member {
        advert: Some(pb::NodeAdvert {
            node_id: m.node_id.clone(),
            api_addr: m.api_addr.clone(),
            gossip_addr: m.gossip_addr.clone(),
            metrics_addr: m.metrics_addr.clone(),
            resources: Some(pb::Resources {
                cpu_cores: m.cpu_cores,
                cpu_usage_percent: 0.0,
                memory_total_bytes: m.memory_total,
                memory_used_bytes: m.memory_total.saturating_sub(m.memory_available),
                memory_available_bytes: m.memory_available,
                gpus: (0..m.gpu_count)
                    .map(|i| pb::GpuInfo {
                        index: i,
                        memory_total_bytes: m.gpu_memory_total / u64::from(m.gpu_count.max(1)),
                        ..Default::default()
                    })
                    .collect(),
                // Not gossiped: live CPU figures come from the member's own NodeService.
                cpu_limit_cores: 0.0,
            }),
            models: m.models.clone(),
            layers: Some(range_to_proto(m.layers.as_ref())),
            healthy: m.healthy,
            generation: m.generation,
            version: m.version.clone(),
            plan_version: m.plan_version,
        }),
        state: state as i32,
        is_self: m.is_self,
    }
}

/// A plan to the wire.
pub fn plan_to_proto(p: &PlanView) -> pb::Plan {
    pb::Plan {
        version: p.version,
        model: p.model.clone(),
        n_layers: p.n_layers as u32,
        assignments: p
            .slices
            .iter()
            .map(|s| pb::Assignment {
                node_id: s.node_id.clone(),
                start: s.range.start as u32,
                end: s.range.end as u32,
                api_addr: s.api_addr.clone(),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use engine::SamplingParams;

    #[test]
    fn sampling_round_trips() {
        let p = SamplingParams {
            temperature: 0.5,
            top_k: 7,
            seed: Some(3),
            max_tokens: 9,
            stop: vec!["x".into()],
            ..Default::default()
        };
        assert_eq!(sampling_from_proto(Some(&sampling_to_proto(&p)), 1), p);
        assert_eq!(sampling_from_proto(None, 5).max_tokens, 5);
    }
}
