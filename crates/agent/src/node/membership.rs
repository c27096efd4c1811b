//! Adapter between the agent and the gossip layer (`cluster` crate): publishes this
//! agent's advert, hears of member changes, computes the plan.

use std::net::{SocketAddr, ToSocketAddrs};
use std::ops::Range;

use anyhow::{anyhow, Context, Result};

use crate::node::view::{Liveness, MemberView, PlanView, Slice};

/// What this agent advertises.
#[derive(Debug, Clone, PartialEq)]
pub struct LocalAdvert {
    pub node_id: String,
    pub api_addr: String,
    pub gossip_addr: String,
    pub metrics_addr: String,
    pub cpu_cores: u32,
    pub memory_total: u64,
    pub memory_available: u64,
    pub gpus: Vec<cluster::GpuAdvert>,
    pub models: Vec<String>,
    pub layers: Option<Range<usize>>,
    pub healthy: bool,
    pub generation: u64,
    pub version: String,
    pub plan_version: u64,
}

impl LocalAdvert {
    fn to_cluster(&self) -> cluster::NodeAdvert {
        let r = self.layers.clone().unwrap_or(0..0);
        cluster::NodeAdvert {
            node_id: self.node_id.clone(),
            api_addr: self.api_addr.clone(),
            gossip_addr: self.gossip_addr.clone(),
            metrics_addr: self.metrics_addr.clone(),
            cpu_cores: self.cpu_cores,
            cpu_usage_percent: 0.0,
            memory_total: self.memory_total,
            memory_available: self.memory_available,
            gpus: self.gpus.clone(),
            models: self.models.clone(),
            layer_start: r.start as u32,
            layer_end: r.end as u32,
            healthy: self.healthy,
            generation: self.generation,
            version: self.version.clone(),
            plan_version: self.plan_version,
        }
    }
}

/// Gossip settings.
#[derive(Debug, Clone)]
pub struct GossipConfig {
    pub node_id: String,
    pub generation: u64,
    pub listen: SocketAddr,
    /// `host:port` peers gossip to (resolved once at start).
    pub advertise: String,
    pub seeds: Vec<String>,
    /// Authenticate gossip with this shared secret (`None`: open).
    pub auth: Option<cluster::GossipAuth>,
}

/// Gossip membership handle.
pub struct Membership {
    inner: cluster::Membership,
}

impl Membership {
    /// Join the gossip with `initial` as this agent's advert.
    pub async fn start(cfg: GossipConfig, initial: &LocalAdvert) -> Result<Self> {
        let advertise = resolve(&cfg.advertise)?;
        let mut c = cluster::MembershipConfig::new(cfg.node_id, cfg.listen);
        c.generation = cfg.generation;
        c.advertise = advertise;
        c.auth = cfg.auth;
        c.seeds = cfg
            .seeds
            .into_iter()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
        let inner = cluster::Membership::start(c, initial.to_cluster())
            .await
            .map_err(|e| anyhow!("{e}"))?;
        Ok(Self { inner })
    }

    /// Publish this agent's advert (no-op when unchanged).
    pub async fn publish(&self, advert: &LocalAdvert) {
        self.inner.set_advert(&advert.to_cluster()).await;
    }

    /// The member list, told of every change (a member joins, leaves, changes state or
    /// changes its advert).
    pub fn updates(&self) -> MemberUpdates {
        MemberUpdates(self.inner.subscribe())
    }
}

/// The member list as it changes (see [`Membership::updates`]).
pub struct MemberUpdates(tokio::sync::watch::Receiver<Vec<cluster::Member>>);

impl MemberUpdates {
    /// All members now, self included, sorted by node id; marks them seen.
    pub fn current(&mut self) -> Vec<MemberView> {
        self.0.borrow_and_update().iter().map(to_view).collect()
    }

    /// Waits until the list changed since [`MemberUpdates::current`]; `false` when gossip
    /// has stopped.
    pub async fn changed(&mut self) -> bool {
        self.0.changed().await.is_ok()
    }
}

fn resolve(hostport: &str) -> Result<SocketAddr> {
    let addrs: Vec<SocketAddr> = hostport
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve the advertise address {hostport}"))?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
        .ok_or_else(|| anyhow!("advertise address {hostport} resolves to nothing"))
}

fn to_view(m: &cluster::Member) -> MemberView {
    let a = &m.advert;
    MemberView {
        node_id: a.node_id.clone(),
        api_addr: a.api_addr.clone(),
        gossip_addr: a.gossip_addr.clone(),
        metrics_addr: a.metrics_addr.clone(),
        state: match m.state {
            cluster::MemberState::Alive => Liveness::Alive,
            cluster::MemberState::Suspect => Liveness::Suspect,
            cluster::MemberState::Dead => Liveness::Dead,
        },
        is_self: m.is_self,
        cpu_cores: a.cpu_cores,
        memory_total: a.memory_total,
        memory_available: a.memory_available,
        gpu_count: a.gpus.len() as u32,
        gpu_memory_total: a.gpus.iter().map(|g| g.memory_total).sum(),
        models: a.models.clone(),
        layers: (a.layer_end > a.layer_start)
            .then_some(a.layer_start as usize..a.layer_end as usize),
        healthy: a.healthy,
        generation: a.generation,
        version: a.version.clone(),
        plan_version: a.plan_version,
    }
}

/// The plan over the alive members that serve `model_id` (`Err`: why none).
pub fn plan(
    members: &[MemberView],
    model: &engine::ModelInfo,
    model_id: &str,
) -> Result<PlanView, String> {
    let alive: Vec<&MemberView> = members
        .iter()
        .filter(|m| m.state != Liveness::Dead && m.models.iter().any(|x| x == model_id))
        .collect();
    let footprint = cluster::ModelFootprint {
        n_layers: model.n_layers,
        layer_bytes: model.layer_bytes.clone(),
        embed_bytes: model.embed_bytes,
        head_bytes: model.head_bytes,
    };
    let caps: Vec<cluster::Capacity> = alive
        .iter()
        .map(|m| cluster::Capacity {
            node_id: m.node_id.clone(),
            memory_available: m.memory_available,
            memory_limit: None,
            cpu_cores: m.cpu_cores,
            gpu_memory: m.gpu_memory_total,
        })
        .collect();
    let p = cluster::plan(&footprint, &caps).map_err(|e| e.to_string())?;
    let slices = p
        .assignments
        .iter()
        .filter(|a| a.end > a.start)
        .map(|a| Slice {
            node_id: a.node_id.clone(),
            api_addr: alive
                .iter()
                .find(|m| m.node_id == a.node_id)
                .map(|m| m.api_addr.clone())
                .unwrap_or_default(),
            range: a.start..a.end,
        })
        .collect();
    Ok(PlanView {
        version: p.version,
        model: model_id.to_string(),
        n_layers: p.n_layers,
        slices,
    })
}
