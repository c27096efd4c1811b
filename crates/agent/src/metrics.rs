//! Prometheus metrics of the agent (names are the contract in `docs/metrics.md`).

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::AtomicU64;
use std::sync::Mutex;

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Float gauge.
pub type FGauge = Gauge<f64, AtomicU64>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PeerLabel {
    pub peer: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GpuLabel {
    pub gpu: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabel {
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    pub state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct InfoLabels {
    pub version: String,
    pub api_addr: String,
}

/// How a generation request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestStatus {
    Ok,
    Error,
    Rejected,
    Cancelled,
}

impl RequestStatus {
    fn as_str(self) -> &'static str {
        match self {
            RequestStatus::Ok => "ok",
            RequestStatus::Error => "error",
            RequestStatus::Rejected => "rejected",
            RequestStatus::Cancelled => "cancelled",
        }
    }
}

type HistFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// Pipeline traffic with one peer, kept for the gRPC metrics snapshot.
#[derive(Debug, Clone, Default)]
pub struct PeerStats {
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub messages_sent: u64,
    pub messages_received: u64,
    /// Most recent hop round trips in seconds (bounded window).
    pub recent_hops: VecDeque<f64>,
    pub hops: u64,
    pub hop_seconds_total: f64,
}

impl PeerStats {
    /// Quantile (0..=1) of the recent hop round trips, in seconds.
    pub fn hop_quantile(&self, q: f64) -> f64 {
        if self.recent_hops.is_empty() {
            return 0.0;
        }
        let mut v: Vec<f64> = self.recent_hops.iter().copied().collect();
        v.sort_by(|a, b| a.total_cmp(b));
        let i = ((v.len() - 1) as f64 * q.clamp(0.0, 1.0)).round() as usize;
        v[i]
    }
}

const HOP_WINDOW: usize = 512;

/// The stage compute histogram, plus the number of its observations (pipeline steps run
/// on this agent's layers) for the gRPC snapshot: prometheus-client has no count getter.
#[derive(Clone, Debug)]
pub struct StepHistogram {
    hist: Histogram,
    steps: std::sync::Arc<AtomicU64>,
}

impl StepHistogram {
    fn new() -> Self {
        Self {
            hist: latency_histogram(),
            steps: Default::default(),
        }
    }

    /// Record one batch's compute time and the sequence steps it ran.
    pub fn observe_batch(&self, seconds: f64, steps: u64) {
        self.hist.observe(seconds);
        self.steps
            .fetch_add(steps, std::sync::atomic::Ordering::Relaxed);
    }

    /// Steps recorded so far.
    pub fn count(&self) -> u64 {
        self.steps.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// All metrics of one agent, plus the registry that encodes them.
pub struct Metrics {
    registry: Registry,
    pub peers: Mutex<BTreeMap<String, PeerStats>>,
    pub node_info: Family<InfoLabels, Gauge>,
    pub node_health: Gauge,
    pub cpu_cores: Gauge,
    pub cpu_usage_percent: FGauge,
    pub cpu_limit: FGauge,
    pub memory_total: Gauge,
    pub memory_used: Gauge,
    pub memory_available: Gauge,
    pub process_rss: Gauge,
    pub gpu_count: Gauge,
    pub gpu_memory_total: Family<GpuLabel, Gauge>,
    pub gpu_memory_used: Family<GpuLabel, Gauge>,
    pub gpu_utilization: Family<GpuLabel, FGauge>,
    pub bytes_sent: Family<PeerLabel, Counter>,
    pub bytes_received: Family<PeerLabel, Counter>,
    pub messages_sent: Family<PeerLabel, Counter>,
    pub messages_received: Family<PeerLabel, Counter>,
    pub hop_latency: HistFamily<PeerLabel>,
    pub requests: Family<StatusLabel, Counter>,
    pub active_requests: Gauge,
    pub request_duration: Histogram,
    pub ttft: Histogram,
    pub tokens_generated: Counter,
    pub prompt_tokens: Counter,
    pub tokens_per_second: FGauge,
    pub stage_forward: StepHistogram,
    pub batch_sequences: Histogram,
    pub batch_positions: Histogram,
    pub stage_queue_steps: Gauge,
    pub kv_bytes: Family<KindLabel, Gauge>,
    pub kv_capacity: Gauge,
    pub prefix_hits: Counter,
    pub prefix_misses: Counter,
    pub pipeline_sessions: Gauge,
    pub pipeline_recoveries: Counter,
    pub queued_requests: Gauge,
    pub members: Family<StateLabel, Gauge>,
    /// Gossip datagrams dropped for a missing or wrong cluster-secret tag.
    pub gossip_rejected: Counter,
    pub plan_version: Gauge,
    pub layers_held: Gauge,
    pub layer_start: Gauge,
    pub layer_end: Gauge,
    pub model_layers: Gauge,
}

impl Metrics {
    /// Register every metric under the `distributed_llm` prefix with a `node` label.
    pub fn new(node_id: &str) -> Self {
        let mut r = Registry::with_prefix_and_labels(
            "distributed_llm",
            [("node".into(), node_id.to_string().into())].into_iter(),
        );
        let m = Self {
            registry: Registry::default(),
            peers: Mutex::new(BTreeMap::new()),
            node_info: Family::default(),
            node_health: Gauge::default(),
            cpu_cores: Gauge::default(),
            cpu_usage_percent: FGauge::default(),
            cpu_limit: FGauge::default(),
            memory_total: Gauge::default(),
            memory_used: Gauge::default(),
            memory_available: Gauge::default(),
            process_rss: Gauge::default(),
            gpu_count: Gauge::default(),
            gpu_memory_total: Family::default(),
            gpu_memory_used: Family::default(),
            gpu_utilization: Family::default(),
            bytes_sent: Family::default(),
            bytes_received: Family::default(),
            messages_sent: Family::default(),
            messages_received: Family::default(),
            hop_latency: Family::new_with_constructor(latency_histogram),
            requests: Family::default(),
            active_requests: Gauge::default(),
            request_duration: Histogram::new(exponential_buckets(0.01, 2.0, 14)),
            ttft: Histogram::new(exponential_buckets(0.005, 2.0, 14)),
            tokens_generated: Counter::default(),
            prompt_tokens: Counter::default(),
            tokens_per_second: FGauge::default(),
            stage_forward: StepHistogram::new(),
            batch_sequences: Histogram::new(exponential_buckets(1.0, 2.0, 8)),
            batch_positions: Histogram::new(exponential_buckets(1.0, 2.0, 12)),
            stage_queue_steps: Gauge::default(),
            kv_bytes: Family::default(),
            kv_capacity: Gauge::default(),
            prefix_hits: Counter::default(),
            prefix_misses: Counter::default(),
            pipeline_sessions: Gauge::default(),
            pipeline_recoveries: Counter::default(),
            queued_requests: Gauge::default(),
            members: Family::default(),
            gossip_rejected: Counter::default(),
            plan_version: Gauge::default(),
            layers_held: Gauge::default(),
            layer_start: Gauge::default(),
            layer_end: Gauge::default(),
            model_layers: Gauge::default(),
        };
        macro_rules! reg {
            ($name:expr, $help:expr, $metric:expr) => {
                r.register($name, $help, $metric.clone())
            };
        }
        reg!("node_info", "Agent information (always 1)", m.node_info);
        reg!("node_health", "1 when the agent is healthy", m.node_health);
        reg!("node_cpu_cores", "Logical CPU cores", m.cpu_cores);
        reg!(
            "node_cpu_usage_percent",
            "CPU use of this agent's process as a percentage of the CPUs it may use, 0-100",
            m.cpu_usage_percent
        );
        reg!(
            "node_cpu_limit_cores",
            "CPUs this agent may use: its cgroup CPU quota, else its logical cores",
            m.cpu_limit
        );
        reg!(
            "node_memory_total_bytes",
            "Physical memory or cgroup limit",
            m.memory_total
        );
        reg!("node_memory_used_bytes", "Memory in use", m.memory_used);
        reg!(
            "node_memory_available_bytes",
            "Memory available",
            m.memory_available
        );
        reg!(
            "process_resident_memory_bytes",
            "This agent's RSS",
            m.process_rss
        );
        reg!(
            "node_gpu_count",
            "NVIDIA GPUs seen through NVML",
            m.gpu_count
        );
        reg!(
            "node_gpu_memory_total_bytes",
            "GPU memory",
            m.gpu_memory_total
        );
        reg!(
            "node_gpu_memory_used_bytes",
            "GPU memory used",
            m.gpu_memory_used
        );
        reg!(
            "node_gpu_utilization_percent",
            "GPU utilisation",
            m.gpu_utilization
        );
        reg!(
            "network_bytes_sent",
            "Pipeline payload bytes sent",
            m.bytes_sent
        );
        reg!(
            "network_bytes_received",
            "Pipeline payload bytes received",
            m.bytes_received
        );
        reg!(
            "network_messages_sent",
            "Pipeline messages sent",
            m.messages_sent
        );
        reg!(
            "network_messages_received",
            "Pipeline messages received",
            m.messages_received
        );
        reg!(
            "hop_latency_seconds",
            "Round trip of one pipeline hop",
            m.hop_latency
        );
        reg!(
            "inference_requests",
            "Finished generation requests",
            m.requests
        );
        reg!(
            "inference_active_requests",
            "Generation requests in flight",
            m.active_requests
        );
        reg!(
            "inference_request_duration_seconds",
            "Whole request",
            m.request_duration
        );
        reg!(
            "inference_time_to_first_token_seconds",
            "Time to first token",
            m.ttft
        );
        reg!(
            "inference_tokens_generated",
            "Generated tokens",
            m.tokens_generated
        );
        reg!(
            "inference_prompt_tokens",
            "Prompt tokens processed",
            m.prompt_tokens
        );
        reg!(
            "inference_tokens_per_second",
            "Speed of the last request",
            m.tokens_per_second
        );
        reg!(
            "stage_forward_seconds",
            "Compute time of this agent's layers per batch",
            m.stage_forward.hist
        );
        reg!(
            "stage_batch_sequences",
            "Sequences in each batch this agent's layers ran",
            m.batch_sequences
        );
        reg!(
            "stage_batch_positions",
            "Positions (tokens) in each batch this agent's layers ran",
            m.batch_positions
        );
        reg!(
            "stage_queued_steps",
            "Sequence steps waiting for this agent's layers",
            m.stage_queue_steps
        );
        reg!(
            "kv_cache_bytes",
            "KV cache memory of this agent's stage: open sequences and the prefix cache",
            m.kv_bytes
        );
        reg!(
            "kv_cache_capacity_positions",
            "KV positions this agent's stage may hold",
            m.kv_capacity
        );
        reg!(
            "prefix_cache_hits",
            "Sequences opened on a cached prefix",
            m.prefix_hits
        );
        reg!(
            "prefix_cache_misses",
            "Sequences that asked for a prefix no longer cached",
            m.prefix_misses
        );
        reg!(
            "pipeline_sessions",
            "Open sequences (KV caches) on this agent's stage",
            m.pipeline_sessions
        );
        reg!(
            "pipeline_recoveries",
            "Requests re-routed after a stage failed mid-generation",
            m.pipeline_recoveries
        );
        reg!(
            "inference_queued_requests",
            "Generation requests waiting for a slot",
            m.queued_requests
        );
        reg!("cluster_members", "Members by gossip state", m.members);
        reg!(
            "gossip_rejected",
            "Gossip datagrams dropped: missing or wrong cluster-secret tag",
            m.gossip_rejected
        );
        reg!(
            "cluster_plan_version",
            "Placement plan version in force",
            m.plan_version
        );
        reg!(
            "cluster_layers_held",
            "Layers this agent holds",
            m.layers_held
        );
        reg!("cluster_layer_start", "First layer held", m.layer_start);
        reg!(
            "cluster_layer_end",
            "End of the range held (exclusive)",
            m.layer_end
        );
        reg!(
            "cluster_model_layers",
            "Transformer layers of the model",
            m.model_layers
        );
        for s in ["ok", "error", "rejected", "cancelled"] {
            let _ = m.requests.get_or_create(&StatusLabel { status: s.into() });
        }
        for s in ["alive", "dead"] {
            let _ = m.members.get_or_create(&StateLabel { state: s.into() });
        }
        m.set_kv_bytes(0, 0);
        Self { registry: r, ..m }
    }

    /// Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }

    /// Set the `node_info` series.
    pub fn set_info(&self, api_addr: &str) {
        self.node_info
            .get_or_create(&InfoLabels {
                version: env!("CARGO_PKG_VERSION").into(),
                api_addr: api_addr.into(),
            })
            .set(1);
    }

    /// Count one finished request.
    pub fn finish_request(&self, status: RequestStatus) {
        self.requests
            .get_or_create(&StatusLabel {
                status: status.as_str().into(),
            })
            .inc();
    }

    /// Count one pipeline message sent to `peer`.
    pub fn sent(&self, peer: &str, bytes: usize) {
        let l = PeerLabel { peer: peer.into() };
        self.bytes_sent.get_or_create(&l).inc_by(bytes as u64);
        self.messages_sent.get_or_create(&l).inc();
        self.with_peer(peer, |p| {
            p.bytes_sent += bytes as u64;
            p.messages_sent += 1;
        });
    }

    fn with_peer(&self, peer: &str, f: impl FnOnce(&mut PeerStats)) {
        let mut peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        f(peers.entry(peer.to_string()).or_default());
    }

    /// Count one pipeline message received from `peer`.
    pub fn received(&self, peer: &str, bytes: usize) {
        let l = PeerLabel { peer: peer.into() };
        self.bytes_received.get_or_create(&l).inc_by(bytes as u64);
        self.messages_received.get_or_create(&l).inc();
        self.with_peer(peer, |p| {
            p.bytes_received += bytes as u64;
            p.messages_received += 1;
        });
    }

    /// Record one hop's round trip to `peer`.
    pub fn hop(&self, peer: &str, seconds: f64) {
        self.hop_latency
            .get_or_create(&PeerLabel { peer: peer.into() })
            .observe(seconds);
        self.with_peer(peer, |p| {
            p.hops += 1;
            p.hop_seconds_total += seconds;
            if p.recent_hops.len() == HOP_WINDOW {
                p.recent_hops.pop_front();
            }
            p.recent_hops.push_back(seconds);
        });
    }

    /// Finished requests with this status so far.
    pub fn requests_with(&self, status: RequestStatus) -> u64 {
        self.requests
            .get_or_create(&StatusLabel {
                status: status.as_str().into(),
            })
            .get()
    }

    /// Set the KV cache gauges.
    pub fn set_kv_bytes(&self, sequences: u64, prefix: u64) {
        for (kind, v) in [("sequences", sequences), ("prefix", prefix)] {
            self.kv_bytes
                .get_or_create(&KindLabel { kind: kind.into() })
                .set(v as i64);
        }
    }

    /// Set the layer range held (`None`: nothing held).
    pub fn set_layers(&self, range: Option<std::ops::Range<usize>>) {
        let r = range.unwrap_or(0..0);
        self.layers_held.set(r.len() as i64);
        self.layer_start.set(r.start as i64);
        self.layer_end.set(r.end as i64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_node_label_follow_the_contract() {
        let m = Metrics::new("n1");
        m.set_info("127.0.0.1:8080");
        m.finish_request(RequestStatus::Ok);
        m.sent("n2", 10);
        m.hop("n2", 0.01);
        m.set_layers(Some(3..10));
        let text = m.encode();
        for name in [
            "distributed_llm_node_info{",
            "distributed_llm_node_health{",
            "distributed_llm_network_bytes_sent_total{",
            "distributed_llm_hop_latency_seconds_bucket{",
            "distributed_llm_inference_requests_total{",
            "distributed_llm_inference_tokens_generated_total{",
            "distributed_llm_cluster_members{",
            "distributed_llm_cluster_layers_held{",
        ] {
            assert!(text.contains(name), "missing {name} in\n{text}");
        }
        assert!(text.contains("node=\"n1\""));
        assert!(text.contains("distributed_llm_cluster_layers_held{node=\"n1\"} 7"));
        for line in text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
        {
            assert!(
                line.contains("node=\"n1\""),
                "series without node label: {line}"
            );
        }
    }
}
