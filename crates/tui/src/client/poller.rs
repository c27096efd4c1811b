//! Background poller: runs discovery, polls every known agent (node info and a
//! metrics snapshot), learns the other members from whichever agent answers, and
//! reports agents that stop answering. Broken channels are dropped and rebuilt on
//! the next tick, so an agent that comes back is picked up without a restart.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::join_all;
use proto::v1 as pb;
use tokio::sync::mpsc;
use tonic::transport::Channel;

use super::{connect, error_text, Update};
use crate::discovery::Discovery;

/// Timing of the poller.
#[derive(Debug, Clone)]
pub struct PollerConfig {
    /// Period between polls.
    pub refresh: Duration,
    /// Period between discovery runs while agents answer.
    pub rediscover: Duration,
    /// Timeout of each call (connect included).
    pub call_timeout: Duration,
}

impl Default for PollerConfig {
    fn default() -> Self {
        Self {
            refresh: Duration::from_secs(1),
            rediscover: Duration::from_secs(15),
            call_timeout: Duration::from_secs(3),
        }
    }
}

type Sample = (Channel, pb::NodeInfo, pb::MetricsSnapshot);

/// Polls the cluster and sends [`Update`]s until the receiver is dropped.
pub struct Poller {
    discovery: Arc<dyn Discovery>,
    cfg: PollerConfig,
    tx: mpsc::Sender<Update>,
    channels: HashMap<String, Channel>,
    discovered: BTreeSet<String>,
    learned: BTreeSet<String>,
    last_discovery: Option<Instant>,
}

impl Poller {
    /// A poller over `discovery`, reporting to `tx`.
    pub fn new(discovery: Arc<dyn Discovery>, cfg: PollerConfig, tx: mpsc::Sender<Update>) -> Self {
        Self {
            discovery,
            cfg,
            tx,
            channels: HashMap::new(),
            discovered: BTreeSet::new(),
            learned: BTreeSet::new(),
            last_discovery: None,
        }
    }

    /// Poll forever (until the app goes away).
    pub async fn run(mut self) {
        while self.tick().await {
            tokio::time::sleep(self.cfg.refresh).await;
        }
    }

    /// Addresses polled now: discovered first, then learned from member lists.
    pub fn addresses(&self) -> Vec<String> {
        let mut v: Vec<String> = self.discovered.iter().cloned().collect();
        v.extend(
            self.learned
                .iter()
                .filter(|a| !self.discovered.contains(*a))
                .cloned(),
        );
        v
    }

    /// One round; `false` once the receiver is gone.
    pub async fn tick(&mut self) -> bool {
        let answered_before = !self.channels.is_empty();
        let due = match self.last_discovery {
            None => true,
            Some(t) if !answered_before => t.elapsed() >= self.cfg.refresh * 3,
            Some(t) => t.elapsed() >= self.cfg.rediscover,
        };
        if due {
            let addrs = self.discovery.discover().await;
            tracing::debug!(?addrs, mode = self.discovery.mode(), "discovery");
            self.discovered.extend(addrs.iter().cloned());
            self.last_discovery = Some(Instant::now());
            let up = Update::Discovered {
                mode: self.discovery.mode().into(),
                addrs,
            };
            if self.tx.send(up).await.is_err() {
                return false;
            }
        }

        let addrs = self.addresses();
        let t = self.cfg.call_timeout;
        let polls = addrs.iter().map(|a| {
            let ch = self.channels.get(a).cloned();
            poll_one(a.clone(), ch, t)
        });
        let results = join_all(polls).await;

        let mut answered: Vec<(String, String)> = Vec::new(); // (addr, node id)
        for (addr, res) in addrs.into_iter().zip(results) {
            let up = match res {
                Ok((ch, info, metrics)) => {
                    self.channels.insert(addr.clone(), ch);
                    answered.push((addr.clone(), info.node_id.clone()));
                    Update::Node {
                        addr,
                        info: Box::new(info),
                        metrics: Box::new(metrics),
                    }
                }
                Err(e) => {
                    if self.channels.remove(&addr).is_some() {
                        tracing::info!(%addr, "agent stopped answering: {e}");
                    }
                    Update::NodeDown { addr, error: e }
                }
            };
            if self.tx.send(up).await.is_err() {
                return false;
            }
        }
        self.drop_duplicates(&answered);
        self.cluster_lists(&answered).await
    }

    /// Forget learned addresses that reach a node already answering elsewhere.
    fn drop_duplicates(&mut self, answered: &[(String, String)]) {
        for (addr, node) in answered {
            let dup = answered
                .iter()
                .any(|(a, n)| n == node && a != addr && self.discovered.contains(a));
            if dup && self.learned.remove(addr) && !self.discovered.contains(addr) {
                self.channels.remove(addr);
            }
        }
    }

    /// Members, plan and models from the first agent that answers; learns addresses.
    async fn cluster_lists(&mut self, answered: &[(String, String)]) -> bool {
        let t = self.cfg.call_timeout;
        for (addr, _) in answered {
            let Some(ch) = self.channels.get(addr).cloned() else {
                continue;
            };
            let mut c = super::node_client(ch);
            let members =
                match tokio::time::timeout(t, c.list_members(pb::ListMembersRequest {})).await {
                    Ok(Ok(r)) => r.into_inner(),
                    Ok(Err(e)) => {
                        tracing::debug!(%addr, "ListMembers: {}", e.message());
                        continue;
                    }
                    Err(_) => continue,
                };
            let known_nodes: BTreeSet<&str> = answered.iter().map(|(_, n)| n.as_str()).collect();
            for m in &members.members {
                let Some(adv) = &m.advert else { continue };
                if adv.api_addr.is_empty() || known_nodes.contains(adv.node_id.as_str()) {
                    continue;
                }
                if !self.discovered.contains(&adv.api_addr)
                    && self.learned.insert(adv.api_addr.clone())
                {
                    tracing::info!(addr = %adv.api_addr, node = %adv.node_id, "learned from member list");
                }
            }
            let up = Update::Members {
                from: addr.clone(),
                members: members.members,
                plan: members.plan,
            };
            if self.tx.send(up).await.is_err() {
                return false;
            }
            if let Ok(Ok(r)) =
                tokio::time::timeout(t, c.list_models(pb::ListModelsRequest {})).await
            {
                if self
                    .tx
                    .send(Update::Models(r.into_inner().models))
                    .await
                    .is_err()
                {
                    return false;
                }
            }
            break;
        }
        !self.tx.is_closed()
    }
}

/// Node info and a metrics snapshot from one agent (reusing `ch` when given).
async fn poll_one(addr: String, ch: Option<Channel>, t: Duration) -> Result<Sample, String> {
    let call = async {
        let ch = match ch {
            Some(c) => c,
            None => connect(&addr).await?,
        };
        let mut c = super::node_client(ch.clone());
        let info = c
            .get_node_info(pb::GetNodeInfoRequest {})
            .await?
            .into_inner();
        let metrics = c.get_metrics(pb::GetMetricsRequest {}).await?.into_inner();
        anyhow::Ok((ch, info, metrics))
    };
    match tokio::time::timeout(t, call).await {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(e)) => Err(error_text(&e)),
        Err(_) => Err(format!("no answer within {t:?}")),
    }
}
