//! Gossip membership on top of chitchat.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chitchat::transport::UdpTransport;
use chitchat::{
    spawn_chitchat, ChitchatConfig, ChitchatHandle, ChitchatId, FailureDetectorConfig,
    ProtocolVersion,
};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::advert::{Member, NodeAdvert, ADVERT_KEY};
use crate::auth::{AuthUdpTransport, GossipAuth};
use crate::error::ClusterError;
use crate::seeds;
use crate::view::{self, HeartbeatTracker};

/// Settings of [`Membership::start`].
#[derive(Debug, Clone)]
pub struct MembershipConfig {
    /// Unique node id.
    pub node_id: String,
    /// Incarnation number; a restart must use a higher one (e.g. start time in ms).
    pub generation: u64,
    /// UDP address to bind (port 0 picks a free port).
    pub listen: SocketAddr,
    /// Address peers gossip to; must be routable (not 0.0.0.0). Port 0 means the
    /// listen port.
    pub advertise: SocketAddr,
    /// Seeds, `host:port` (names are re-resolved every few seconds).
    pub seeds: Vec<String>,
    /// Gossips of different cluster ids ignore each other.
    pub cluster_id: String,
    /// Period of gossip rounds (default 200 ms).
    pub gossip_interval: Duration,
    /// Silence after which a peer is declared dead (default 3 s; adaptive, phi accrual).
    pub dead_after: Duration,
    /// Shared-secret authentication of every datagram (`None`: open gossip).
    pub auth: Option<GossipAuth>,
}

impl MembershipConfig {
    /// Defaults: generation = now in ms, cluster `distributed-llm`, 200 ms gossip,
    /// dead after 3 s, no seeds, advertise = listen.
    pub fn new(node_id: impl Into<String>, listen: SocketAddr) -> Self {
        Self {
            node_id: node_id.into(),
            generation: generation_now(),
            listen,
            advertise: listen,
            seeds: Vec::new(),
            cluster_id: "distributed-llm".into(),
            gossip_interval: Duration::from_millis(200),
            dead_after: Duration::from_secs(3),
            auth: None,
        }
    }

    fn failure_detector(&self) -> FailureDetectorConfig {
        let interval = self.gossip_interval.max(Duration::from_millis(10));
        // phi = silence / mean heartbeat interval; the mean starts at the gossip interval.
        let phi = (self.dead_after.as_secs_f64() / interval.as_secs_f64()).clamp(2.0, 1000.0);
        FailureDetectorConfig {
            phi_threshold: phi,
            sampling_window_size: 100,
            max_interval: self.dead_after.max(interval * 2),
            initial_interval: interval,
            dead_node_grace_period: self.forget_after(),
        }
    }

    /// How long a dead node stays listed (as Dead) before it is forgotten.
    pub fn forget_after(&self) -> Duration {
        (self.dead_after * 20).max(Duration::from_secs(60))
    }
}

/// A generation id from the wall clock (ms since the Unix epoch): grows on restart.
pub fn generation_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A running gossip member. Dropping it stops gossip without waiting (peers will see
/// it die); [`Membership::shutdown`] also waits for the gossip task to end.
pub struct Membership {
    handle: Arc<ChitchatHandle>,
    cfg: MembershipConfig,
    tracker: Arc<Mutex<HeartbeatTracker>>,
    rx: watch::Receiver<Vec<Member>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Membership {
    /// Binds the gossip socket, publishes `initial` and starts gossiping.
    pub async fn start(
        mut cfg: MembershipConfig,
        initial: NodeAdvert,
    ) -> Result<Membership, ClusterError> {
        if cfg.node_id.trim().is_empty() {
            return Err(ClusterError::Config("node id is empty".into()));
        }
        if cfg.listen.port() == 0 {
            cfg.listen.set_port(free_udp_port(cfg.listen).await?);
        }
        if cfg.advertise.port() == 0 {
            cfg.advertise.set_port(cfg.listen.port());
        }
        if cfg.advertise.ip().is_unspecified() {
            return Err(ClusterError::Config(format!(
                "advertise address {} is unspecified; peers need a routable address",
                cfg.advertise
            )));
        }
        let advert_json = encode(&cfg, &initial)?;
        let id = ChitchatId::new(cfg.node_id.clone(), cfg.generation, cfg.advertise);
        let config = ChitchatConfig {
            chitchat_id: id.clone(),
            cluster_id: cfg.cluster_id.clone(),
            gossip_interval: cfg.gossip_interval,
            listen_addr: cfg.listen,
            seed_nodes: cfg.seeds.clone(),
            failure_detector_config: cfg.failure_detector(),
            marked_for_deletion_grace_period: Duration::from_secs(3600),
            catchup_callback: None,
            extra_liveness_predicate: None,
            protocol_version: ProtocolVersion::V0,
        };
        let kv = vec![(ADVERT_KEY.into(), advert_json)];
        let spawned = match &cfg.auth {
            Some(auth) => {
                let t = AuthUdpTransport { auth: auth.clone() };
                spawn_chitchat(config, kv, &t).await
            }
            None => spawn_chitchat(config, kv, &UdpTransport).await,
        };
        let handle = spawned.map_err(|e| ClusterError::Bind {
            addr: cfg.listen,
            reason: format!("{:#}", e),
        })?;
        let handle = Arc::new(handle);
        info!(node = ?id, seeds = ?cfg.seeds, "gossip started");

        let tracker = Arc::new(Mutex::new(HeartbeatTracker::default()));
        let suspect_after = cfg.dead_after / 2;
        let first = handle
            .with_chitchat(|c| {
                let mut t = tracker.lock().unwrap_or_else(|p| p.into_inner());
                view::members(c, &mut t, suspect_after)
            })
            .await;
        let (tx, rx) = watch::channel(first);
        let mut tasks = vec![tokio::spawn(watch_loop(
            handle.clone(),
            tracker.clone(),
            tx,
            cfg.gossip_interval,
            suspect_after,
        ))];
        if !cfg.seeds.is_empty() {
            tasks.push(tokio::spawn(seeds::refresh_loop(
                handle.clone(),
                cfg.seeds.clone(),
                [cfg.advertise, cfg.listen],
            )));
        }
        Ok(Membership {
            handle,
            cfg,
            tracker,
            rx,
            tasks,
        })
    }

    /// This node's gossip identity.
    pub fn chitchat_id(&self) -> &ChitchatId {
        self.handle.chitchat_id()
    }

    /// The configuration in force (ports resolved).
    pub fn config(&self) -> &MembershipConfig {
        &self.cfg
    }

    /// Gossip datagrams dropped because they failed authentication (0 without a secret).
    pub fn rejected_datagrams(&self) -> u64 {
        self.cfg.auth.as_ref().map_or(0, GossipAuth::rejected)
    }

    /// Publishes a new advert for this node (no-op when unchanged).
    /// `node_id` and `generation` are forced to this member's identity.
    pub async fn set_advert(&self, advert: &NodeAdvert) {
        match encode(&self.cfg, advert) {
            Ok(json) => {
                self.handle
                    .with_chitchat(|c| c.self_node_state().set(ADVERT_KEY, &json))
                    .await
            }
            Err(e) => warn!(error = %e, "advert not published"),
        }
    }

    /// All members, self included, sorted by node id (newest generation per id).
    pub async fn members(&self) -> Vec<Member> {
        let suspect_after = self.cfg.dead_after / 2;
        self.handle
            .with_chitchat(|c| {
                let mut t = self.tracker.lock().unwrap_or_else(|p| p.into_inner());
                view::members(c, &mut t, suspect_after)
            })
            .await
    }

    /// Member list updates: a new value whenever a member joins, leaves, changes
    /// state or changes its advert (checked every gossip interval).
    pub fn subscribe(&self) -> watch::Receiver<Vec<Member>> {
        self.rx.clone()
    }

    /// Stops gossiping and waits for the gossip task to end.
    pub async fn shutdown(mut self) {
        let tasks = std::mem::take(&mut self.tasks);
        for t in &tasks {
            t.abort();
        }
        for t in tasks {
            let _ = t.await;
        }
        let handle = self.handle.clone();
        drop(self); // asks chitchat to stop
        match Arc::try_unwrap(handle) {
            Ok(h) => {
                if let Err(e) = h.shutdown().await {
                    warn!(error = %e, "gossip task ended with an error");
                }
            }
            Err(h) => h.abort(),
        }
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        let _ = self.handle.initiate_shutdown();
    }
}

fn encode(cfg: &MembershipConfig, advert: &NodeAdvert) -> Result<String, ClusterError> {
    let mut a = advert.clone();
    a.node_id = cfg.node_id.clone();
    a.generation = cfg.generation;
    if a.gossip_addr.is_empty() {
        a.gossip_addr = cfg.advertise.to_string();
    }
    Ok(serde_json::to_string(&a)?)
}

async fn free_udp_port(listen: SocketAddr) -> Result<u16, ClusterError> {
    let sock = tokio::net::UdpSocket::bind(listen)
        .await
        .map_err(|e| ClusterError::Bind {
            addr: listen,
            reason: e.to_string(),
        })?;
    sock.local_addr()
        .map(|a| a.port())
        .map_err(|e| ClusterError::Config(e.to_string()))
}

async fn watch_loop(
    handle: Arc<ChitchatHandle>,
    tracker: Arc<Mutex<HeartbeatTracker>>,
    tx: watch::Sender<Vec<Member>>,
    every: Duration,
    suspect_after: Duration,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = handle
            .with_chitchat(|c| {
                let mut t = tracker.lock().unwrap_or_else(|p| p.into_inner());
                view::members(c, &mut t, suspect_after)
            })
            .await;
        tx.send_if_modified(|cur| {
            if *cur == now {
                false
            } else {
                *cur = now;
                true
            }
        });
    }
}
