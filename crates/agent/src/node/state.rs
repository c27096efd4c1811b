//! Shared state of a running agent.

use std::collections::HashMap;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};

use std::time::Instant;
use tokio::sync::watch;

use engine::{ChatTemplate, ModelInfo, Stage, Tokenizer};
use tonic::transport::Channel;

use crate::metrics::Metrics;
use crate::node::resources::{ResourceMonitor, Resources};
use crate::node::view::{ClusterView, RouteHop};

/// The served model: metadata, tokenizer and chat template (no weights).
pub struct ModelHandle {
    pub path: PathBuf,
    /// Model id used in requests (file stem).
    pub id: String,
    pub info: ModelInfo,
    pub tokenizer: Tokenizer,
    pub template: ChatTemplate,
    /// Tokens that end generation (the tokenizer's end-of-generation set).
    pub stop_tokens: Vec<u32>,
    /// The vocabulary as constrained decoding sees it (built on first use).
    token_env: std::sync::OnceLock<Option<Arc<engine::constrain::TokenEnv>>>,
}

impl ModelHandle {
    /// Read metadata, tokenizer and template of a GGUF file.
    pub fn open(path: PathBuf) -> anyhow::Result<Self> {
        let info = ModelInfo::read(&path)?;
        let tokenizer = Tokenizer::from_gguf(&path)?;
        let template = ChatTemplate::from_gguf(&path)?;
        let stop_tokens = tokenizer.eog_ids().to_vec();
        let token_env = std::sync::OnceLock::new();
        let id = model_id(&path);
        Ok(Self {
            path,
            id,
            info,
            tokenizer,
            template,
            stop_tokens,
            token_env,
        })
    }

    /// The vocabulary for constrained decoding (`None` if it cannot be built; logged).
    pub fn token_env(&self) -> Option<Arc<engine::constrain::TokenEnv>> {
        self.token_env
            .get_or_init(|| match engine::constrain::TokenEnv::new(&self.tokenizer) {
                Ok(e) => Some(Arc::new(e)),
                Err(e) => {
                    tracing::warn!("constrained decoding unavailable: {e}");
                    None
                }
            })
            .clone()
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
    /// The stage this agent serves now (`None` while it holds nothing); watchers hear
    /// of every change.
    stage: watch::Sender<Option<Arc<Stage>>>,
    /// Members and plan, refreshed by the placement loop; watchers hear of every change.
    view: watch::Sender<ClusterView>,
    channels: Mutex<HashMap<String, Channel>>,
    pub last_ttft_ms: Mutex<f64>,
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
            stage: watch::Sender::new(None),
            view: watch::Sender::new(ClusterView::default()),
            channels: Mutex::new(HashMap::new()),
            last_ttft_ms: Mutex::new(0.0),
        }
    }

    /// The stage held now.
    pub fn stage(&self) -> Option<Arc<Stage>> {
        self.stage.borrow().clone()
    }

    /// Replaces the stage held (the pipeline restarts its worker on it).
    pub fn set_stage(&self, stage: Option<Arc<Stage>>) {
        self.stage.send_replace(stage);
    }

    /// Hears of every change of the stage held.
    pub fn watch_stage(&self) -> watch::Receiver<Option<Arc<Stage>>> {
        self.stage.subscribe()
    }

    /// The layer range held now.
    pub fn local_range(&self) -> Option<Range<usize>> {
        self.stage().map(|s| s.range())
    }

    /// A snapshot of the cluster view.
    pub fn view(&self) -> ClusterView {
        self.view.borrow().clone()
    }

    /// Publishes a new cluster view (watchers are woken only when it changed).
    pub fn set_view(&self, view: ClusterView) {
        self.view.send_if_modified(|v| {
            let changed = *v != view;
            *v = view;
            changed
        });
    }

    /// Hears of every change of the cluster view (members' states, the plan).
    pub fn watch_view(&self) -> watch::Receiver<ClusterView> {
        self.view.subscribe()
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
        crate::node::view::route(&self.view(), &self.node_id, self.local_range())
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
                    crate::node::view::fmt_plan(plan.version)
                ),
            );
        }
        let held = self.local_range();
        match plan.slice_of(&self.node_id) {
            Some(s) if held.as_ref() != Some(&s.range) => (
                false,
                format!("loading layers {}", crate::node::view::fmt_layers(&s.range)),
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
