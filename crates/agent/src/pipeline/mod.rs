//! The pipeline: a stage worker runs this agent's layers for every sequence routed
//! through it (continuous batches), links carry messages between agents, and the router
//! switches them. See [`msg`] for the protocol.

pub mod link;
pub mod msg;
pub mod prefix;
pub mod router;
pub mod wire;
pub mod worker;

use std::sync::Arc;

use crate::node::state::AgentState;
use router::Router;
use worker::{Worker, WorkerConfig};

/// Settings of the stage worker.
#[derive(Debug, Clone)]
pub struct PipelineConfig {
    /// KV cache memory (bytes) the stage may use for sequences and its prefix cache;
    /// 0 = a quarter of the memory available when the stage loads.
    pub kv_memory: u64,
    /// Most prompt positions in one batch.
    pub chunk: usize,
    /// Most sequences in one batch.
    pub max_batch: usize,
}

/// This agent's pipeline.
pub struct Pipeline {
    pub router: Arc<Router>,
    /// KV positions of the running stage worker (0: none).
    pub capacity: tokio::sync::watch::Receiver<usize>,
}

impl Pipeline {
    /// Starts the router and a stage worker that follows the stage this agent holds.
    pub fn start(state: Arc<AgentState>, cfg: PipelineConfig) -> Pipeline {
        let router = Router::new(state.clone());
        let r = router.clone();
        let mut stages = state.watch_stage();
        let (cap_tx, capacity) = tokio::sync::watch::channel(0);
        tokio::spawn(async move {
            loop {
                let stage = stages.borrow_and_update().clone();
                let cap = stage.as_ref().map_or(0, |s| kv_capacity(&state, s, &cfg));
                r.set_worker(stage.map(|s| start_worker(&state, &r, s, cap, &cfg)));
                cap_tx.send_replace(cap);
                if stages.changed().await.is_err() {
                    break;
                }
            }
        });
        Pipeline { router, capacity }
    }
}

/// KV positions a stage may hold.
fn kv_capacity(state: &AgentState, stage: &engine::Stage, cfg: &PipelineConfig) -> usize {
    let budget = if cfg.kv_memory > 0 {
        cfg.kv_memory
    } else {
        state.resources().memory_available / 4
    };
    let per = stage.kv_bytes_per_token().max(1) as u64;
    ((budget / per) as usize).max(stage.info().context_length)
}

/// Runs a worker for `stage` on its own thread; returns its inbox.
fn start_worker(
    state: &Arc<AgentState>,
    router: &Arc<Router>,
    stage: Arc<engine::Stage>,
    capacity: usize,
    cfg: &PipelineConfig,
) -> std::sync::mpsc::Sender<msg::Msg> {
    tracing::info!(
        layers = %crate::node::view::fmt_layers(&stage.range()),
        kv_positions = capacity,
        "stage worker started"
    );
    state.metrics.kv_capacity.set(capacity as i64);
    let worker = Worker::new(
        stage.clone(),
        WorkerConfig {
            node_id: state.node_id.clone(),
            api_addr: state.addrs.api.clone(),
            eog: state.model.stop_tokens.clone(),
            kv_capacity: capacity,
            chunk: cfg.chunk,
            max_batch: cfg.max_batch,
            token_env: stage.is_last().then(|| state.model.token_env()).flatten(),
        },
    );
    let (tx, rx) = std::sync::mpsc::channel();
    let deliver = router.clone();
    let metrics = state.metrics.clone();
    let mut prefix_seen = (0, 0);
    worker::spawn(
        worker,
        rx,
        move |e| deliver.deliver(e),
        move |w, r| {
            if let Some(r) = r.filter(|r| r.sequences > 0) {
                metrics
                    .stage_forward
                    .observe_batch(r.compute.as_secs_f64(), r.sequences as u64);
                metrics.batch_sequences.observe(r.sequences as f64);
                metrics.batch_positions.observe(r.positions as f64);
            }
            metrics.pipeline_sessions.set(w.open_sequences() as i64);
            metrics.stage_queue_steps.set(w.queued_steps() as i64);
            let (seqs, prefix) = w.kv_bytes();
            metrics.set_kv_bytes(seqs as u64, prefix as u64);
            let (hits, misses) = w.prefix_stats();
            metrics.prefix_hits.inc_by(hits - prefix_seen.0);
            metrics.prefix_misses.inc_by(misses - prefix_seen.1);
            prefix_seen = (hits, misses);
        },
    );
    tx
}
