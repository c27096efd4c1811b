//! Shared state of a running agent.

use std::collections::HashMap;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use engine::{ChatTemplate, ModelInfo, Stage, Tokenizer};
use tonic::transport::Channel;

use crate::metrics::Metrics;
use crate::resources::{ResourceMonitor, Resources};
use crate::view::{ClusterView, RouteHop};

/// The served model: metadata, tokenizer and chat template (no weights).
pub struct ModelHandle {
    pub path: PathBuf,
    /// Model id used in requests (file stem).
    pub id: String,
    pub info: ModelInfo,
    pub tokenizer: Tokenizer,
    pub template: ChatTemplate,
    /// Tokens that end generation (EOS and ChatML end markers).
    pub stop_tokens: Vec<u32>,
}

impl ModelHandle {
    /// Read metadata, tokenizer and template of a GGUF file.
    pub fn open(path: PathBuf) -> anyhow::Result<Self> {
        let info = ModelInfo::read(&path)?;
        let tokenizer = Tokenizer::from_gguf(&path)?;
        let template = ChatTemplate::from_gguf(&path)?;
        let mut stop_tokens = vec![info.eos_token_id, tokenizer.eos()];
        for s in ["<|im_end|>", "<|endoftext|>", "<|eot_id|>"] {
            if let Ok(ids) = tokenizer.encode(s) {
                if ids.len() == 1 && tokenizer.is_special(ids[0]) {
                    stop_tokens.push(ids[0]);
                }
            }
        }
        stop_tokens.sort_unstable();
        stop_tokens.dedup();
        let id = model_id(&path);
        Ok(Self {
            path,
            id,
            info,
            tokenizer,
            template,
            stop_tokens,
        })
    }
}

/// Model id of a GGUF path: its file stem.
pub fn model_id(path: &std::path::Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into())
}

/// Addresses this agent advertises.
#[derive(Debug, Clone)]
pub struct Addresses {
    pub api: String,
    pub gossip: String,
    pub metrics: String,
}

/// Everything the API, the pipeline and the placement loop share.
pub struct AgentState {
    pub node_id: String,
    pub addrs: Addresses,
    pub generation: u64,
    pub started: Instant,
    pub model: ModelHandle,
    pub metrics: Arc<Metrics>,
    pub monitor: ResourceMonitor,
    pub resources: RwLock<Resources>,
    /// The stage this agent serves now (`None` while it holds nothing).
    pub stage: RwLock<Option<Arc<Stage>>>,
    /// Members and plan, refreshed by the membership loop.
    pub view: RwLock<ClusterView>,
    channels: Mutex<HashMap<String, Channel>>,
    pub last_ttft_ms: Mutex<f64>,
    /// Bounded admission (running + waiting requests).
    pub admission: crate::admission::Admission,
    /// How long a request waits for a covering plan after a stage failed.
    pub recovery_timeout: std::time::Duration,
}

impl AgentState {
    pub fn new(
        node_id: String,
        addrs: Addresses,
        generation: u64,
        model: ModelHandle,
        metrics: Arc<Metrics>,
    ) -> Self {
        let monitor = ResourceMonitor::new();
        let resources = RwLock::new(monitor.sample());
        Self {
            node_id,
            addrs,
            generation,
            started: Instant::now(),
            model,
            metrics,
            monitor,
            resources,
            stage: RwLock::new(None),
            view: RwLock::new(ClusterView::default()),
            channels: Mutex::new(HashMap::new()),
            last_ttft_ms: Mutex::new(0.0),
            admission: crate::admission::Admission::new(32, 32),
            recovery_timeout: crate::pipeline::RECOVERY_TIMEOUT,
        }
    }

    /// The stage held now.
    pub fn stage(&self) -> Option<Arc<Stage>> {
        self.stage.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The layer range held now.
    pub fn local_range(&self) -> Option<Range<usize>> {
        self.stage().map(|s| s.range())
    }

    /// A snapshot of the cluster view.
    pub fn view(&self) -> ClusterView {
        self.view.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Latest resource sample.
    pub fn resources(&self) -> Resources {
        self.resources
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The pipeline route for a new request.
    pub fn route(&self) -> Result<(u64, Vec<RouteHop>), String> {
        crate::view::route(&self.view(), &self.node_id, self.local_range())
    }

    /// Healthy: the plan covers the model and this agent holds its planned range.
    pub fn health(&self) -> (bool, String) {
        let view = self.view();
        let Some(plan) = view.plan.as_ref() else {
            let why = view.plan_error.as_deref().unwrap_or("none computed yet");
            return (false, format!("no placement plan: {why}"));
        };
        if !plan.is_complete() {
            return (
                false,
                format!(
                    "plan {} does not cover the model",
                    crate::view::fmt_plan(plan.version)
                ),
            );
        }
        let held = self.local_range();
        match plan.slice_of(&self.node_id) {
            Some(s) if held.as_ref() != Some(&s.range) => (
                false,
                format!("loading layers {}", crate::view::fmt_layers(&s.range)),
            ),
            None if held.is_none() => (
                true,
                "serving as coordinator only (no layers planned)".into(),
            ),
            _ => (true, "ok".into()),
        }
    }

    /// A (lazily connecting, shared) gRPC channel to another agent.
    pub fn channel(&self, addr: &str) -> Result<Channel, String> {
        let mut map = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = map.get(addr) {
            return Ok(c.clone());
        }
        let ch = Channel::from_shared(format!("http://{addr}"))
            .map_err(|e| format!("bad peer address {addr}: {e}"))?
            .connect_timeout(std::time::Duration::from_secs(3))
            .tcp_nodelay(true)
            .http2_adaptive_window(true)
            .connect_lazy();
        map.insert(addr.to_string(), ch.clone());
        Ok(ch)
    }
}
