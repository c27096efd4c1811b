//! A fixed cluster state for unit and render tests.

use std::time::Instant;

use proto::v1 as pb;

use crate::app::App;
use crate::client::Update;

const GIB: u64 = 1 << 30;

/// Node info of `agent-N` at `127.0.0.1:1808N` holding `layers`.
pub fn info(n: u32, layers: (u32, u32)) -> pb::NodeInfo {
    pb::NodeInfo {
        node_id: format!("agent-{n}"),
        version: "0.1.0".into(),
        api_addr: format!("127.0.0.1:1808{n}"),
        gossip_addr: format!("127.0.0.1:1794{n}"),
        metrics_addr: format!("127.0.0.1:1909{n}"),
        resources: Some(pb::Resources {
            cpu_cores: 2,
            cpu_usage_percent: 10.0,
            memory_total_bytes: 24 * GIB,
            memory_used_bytes: 6 * GIB,
            memory_available_bytes: 18 * GIB,
            gpus: vec![],
            cpu_limit_cores: 2.0,
        }),
        layers: Some(pb::LayerRange {
            start: layers.0,
            end: layers.1,
        }),
        models: vec!["SmolLM2-135M-Instruct.Q4_1".into()],
        healthy: true,
        generation: STARTED_MS,
        uptime_seconds: 3723,
        plan_version: 77,
        ..Default::default()
    }
}

/// Start time of the fixture's agents (2025-11-24 14:03:27 UTC), their generation.
pub const STARTED_MS: u64 = 1_763_993_007_000;

/// A metrics snapshot of `agent-N` at `t_ms` while agent-2 is the entry of a request
/// generating 20 tokens/s: every stage runs 20 steps/s; agent-2 sends to agent-1 and
/// agent-3 on links it times (`sent` bytes to each so far, half of it received back);
/// agent-1 and agent-3 report agent-2 only as a sender (`round_trips` 0).
pub fn metrics(n: u32, t_ms: u64, cpu: f32, sent: u64) -> pb::MetricsSnapshot {
    let peer = |id: u32, round_trips: u64| pb::PeerNetworkStats {
        peer_id: format!("agent-{id}"),
        bytes_sent: sent,
        bytes_received: sent / 2,
        messages_sent: 10,
        messages_received: 10,
        hop_latency_ms_avg: if round_trips > 0 { 2.5 } else { 0.0 },
        hop_latency_ms_p50: if round_trips > 0 { 2.0 } else { 0.0 },
        hop_latency_ms_p99: if round_trips > 0 { 9.0 } else { 0.0 },
        round_trips,
    };
    pb::MetricsSnapshot {
        node_id: format!("agent-{n}"),
        timestamp_ms: t_ms,
        cpu_usage_percent: cpu,
        memory_used_bytes: (6 + n as u64) * GIB,
        memory_total_bytes: 24 * GIB,
        requests_in_flight: u32::from(n == 2),
        tokens_generated_total: if n == 2 { t_ms / 50 } else { 0 },
        tokens_per_second: 40.0 + n as f64,
        ttft_last_ms: 120.0,
        cpu_cores: 2,
        cpu_limit_cores: 2.0,
        layers: None,
        stage_steps_total: t_ms / 50,
        peers: if n == 2 {
            vec![peer(1, t_ms / 50), peer(3, t_ms / 50)]
        } else {
            vec![peer(2, 0)]
        },
        ..Default::default()
    }
}

/// Member list entry for a node info.
pub fn member(i: &pb::NodeInfo, state: pb::MemberState) -> pb::Member {
    pb::Member {
        advert: Some(pb::NodeAdvert {
            node_id: i.node_id.clone(),
            api_addr: i.api_addr.clone(),
            gossip_addr: i.gossip_addr.clone(),
            metrics_addr: i.metrics_addr.clone(),
            resources: i.resources.clone(),
            models: i.models.clone(),
            layers: i.layers,
            healthy: true,
            generation: STARTED_MS,
            version: "0.1.0".into(),
            plan_version: 77,
        }),
        state: state as i32,
        is_self: false,
    }
}

/// The plan 0-10 / 10-20 / 20-30 over agent-1..3.
pub fn plan() -> pb::Plan {
    let a = |n: u32, s, e| pb::Assignment {
        node_id: format!("agent-{n}"),
        start: s,
        end: e,
        api_addr: format!("127.0.0.1:1808{n}"),
    };
    pb::Plan {
        version: 77,
        model: "SmolLM2-135M-Instruct.Q4_1".into(),
        n_layers: 30,
        assignments: vec![a(1, 0, 10), a(2, 10, 20), a(3, 20, 30)],
    }
}

/// The model list.
pub fn models() -> Vec<pb::ModelInfo> {
    let shard = |n: u32, s, e| pb::ModelShard {
        node_id: format!("agent-{n}"),
        api_addr: format!("127.0.0.1:1808{n}"),
        layers: Some(pb::LayerRange { start: s, end: e }),
    };
    vec![pb::ModelInfo {
        id: "SmolLM2-135M-Instruct.Q4_1".into(),
        name: "SmolLM2 135M Instruct".into(),
        path: "/models/SmolLM2-135M-Instruct.Q4_1.gguf".into(),
        architecture: "llama".into(),
        n_layers: 30,
        context_length: 8192,
        hidden_size: 576,
        vocab_size: 49152,
        file_bytes: 90_000_000,
        shards: vec![shard(1, 0, 10), shard(2, 10, 20), shard(3, 20, 30)],
    }]
}

/// Three agents: agent-1 and agent-2 answer (two snapshots each), agent-3 is down
/// and declared dead by gossip.
pub fn app() -> App {
    let mut app = App::new("/tmp/tui.log");
    let now = Instant::now();
    let infos = [info(1, (0, 10)), info(2, (10, 20)), info(3, (20, 30))];
    app.on_update(
        Update::Discovered {
            mode: "seeds".into(),
            addrs: vec!["127.0.0.1:18081".into()],
        },
        now,
    );
    for (t, sent) in [(1000u64, 0u64), (2000, 4096)] {
        for i in &infos {
            let n: u32 = i.node_id[6..].parse().unwrap();
            app.on_update(
                Update::Node {
                    addr: i.api_addr.clone(),
                    info: Box::new(i.clone()),
                    metrics: Box::new(metrics(n, t, 20.0 * n as f32, sent * n as u64)),
                },
                now,
            );
        }
    }
    app.on_update(
        Update::NodeDown {
            addr: infos[2].api_addr.clone(),
            error: "connection refused".into(),
        },
        now,
    );
    app.on_update(
        Update::Members {
            from: infos[0].api_addr.clone(),
            members: vec![
                member(&infos[0], pb::MemberState::Alive),
                member(&infos[1], pb::MemberState::Alive),
                member(&infos[2], pb::MemberState::Dead),
            ],
            plan: Some(plan()),
        },
        now,
    );
    app.on_update(Update::Models(models()), now);
    app
}
