//! Links between agents: one long-lived `PipelineService.Link` stream per peer this agent
//! sends to, carrying frames of messages of every sequence (opened on first use, again
//! after a failure; a broken link is announced to [`Links::down`]'s subscribers); and the
//! server side, which hands incoming messages to an [`Inbound`] (the router). Each link is
//! pinged every few seconds; the round trip is the link's latency.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use futures::Stream;
use proto::v1::{link_msg, LinkFrame, LinkHello, LinkMsg};
use proto::{PipelineService, PipelineServiceClient};
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::msg::Msg;
use super::wire;
use crate::node::state::AgentState;

/// Most messages per frame.
const FRAME_MSGS: usize = 256;
/// Largest gRPC message (a long prompt's hidden states).
pub const MAX_MESSAGE: usize = 256 << 20;
/// Interval of the latency pings.
const PING_EVERY: Duration = Duration::from_secs(2);

/// The queues of the open links, by peer node id.
type Peers = Mutex<HashMap<String, mpsc::UnboundedSender<Msg>>>;

/// Outgoing links, one per peer node.
pub struct Links {
    state: Arc<AgentState>,
    /// Held here alone: a link task keeps a weak reference, so dropping the links ends
    /// their tasks (their queues close).
    peers: Arc<Peers>,
    down: broadcast::Sender<String>,
    /// The runtime link tasks run on (senders may be plain threads: the stage worker).
    runtime: tokio::runtime::Handle,
}

impl Links {
    /// Links of `state`'s agent; call from within the tokio runtime.
    pub fn new(state: Arc<AgentState>) -> Self {
        Self {
            state,
            peers: Arc::new(Mutex::new(HashMap::new())),
            down: broadcast::channel(64).0,
            runtime: tokio::runtime::Handle::current(),
        }
    }

    /// Node ids whose link broke, as they break.
    pub fn down(&self) -> broadcast::Receiver<String> {
        self.down.subscribe()
    }

    /// Queues `msg` on the link to `to` (node id, API address), opening it if needed.
    pub fn send(&self, to: &(String, String), msg: Msg) {
        let mut peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        let tx = peers
            .entry(to.0.clone())
            .or_insert_with(|| self.open(to.clone()));
        if let Err(e) = tx.send(msg) {
            // The link task ended (peer gone): a fresh link gets the message.
            let tx = self.open(to.clone());
            let _ = tx.send(e.0);
            peers.insert(to.0.clone(), tx);
        }
    }

    fn open(&self, peer: (String, String)) -> mpsc::UnboundedSender<Msg> {
        let (tx, rx) = mpsc::unbounded_channel();
        let state = self.state.clone();
        let peers = Arc::downgrade(&self.peers);
        let down = self.down.clone();
        self.runtime.spawn(async move {
            if let Err(e) = run_link(&state, &peers, &peer, rx).await {
                tracing::warn!(peer = %peer.0, addr = %peer.1, "pipeline link down: {e}");
            }
            if let Some(peers) = peers.upgrade() {
                forget(&peers, &peer.0);
                let _ = down.send(peer.0.clone());
            }
        });
        tx
    }
}

/// Drops the queue of `node`'s link if its task has ended.
fn forget(peers: &Peers, node: &str) {
    let mut peers = peers.lock().unwrap_or_else(|p| p.into_inner());
    if peers.get(node).is_some_and(|tx| tx.is_closed()) {
        peers.remove(node);
    }
}

fn frame(msgs: Vec<LinkMsg>) -> LinkFrame {
    LinkFrame { msgs }
}

fn micros_since(t0: Instant) -> u64 {
    t0.elapsed().as_micros() as u64
}

/// Runs one link until its queue closes or the stream breaks (quietly when the links
/// themselves are gone).
async fn run_link(
    state: &AgentState,
    peers: &Weak<Peers>,
    peer: &(String, String),
    mut rx: mpsc::UnboundedReceiver<Msg>,
) -> Result<(), String> {
    let channel = state.channel(&peer.1)?;
    let (ftx, frx) = mpsc::channel::<LinkFrame>(32);
    let hello = LinkMsg {
        msg: Some(link_msg::Msg::Hello(LinkHello {
            node_id: state.node_id.clone(),
            api_addr: state.addrs.api.clone(),
            model: state.model.id.clone(),
        })),
    };
    let _ = ftx.send(frame(vec![hello])).await;
    let mut client = PipelineServiceClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE);
    let mut answers = client
        .link(crate::security::with_cluster_token(Request::new(
            ReceiverStream::new(frx),
        )))
        .await
        .map_err(|s| format!("{:?}: {}", s.code(), s.message()))?
        .into_inner();
    let t0 = Instant::now();
    let metrics = state.metrics.clone();
    let peer_id = peer.0.clone();
    let reader = tokio::spawn(async move {
        while let Ok(Some(f)) = answers.message().await {
            for m in f.msgs {
                match m.msg {
                    Some(link_msg::Msg::Pong(sent)) => {
                        let rtt = micros_since(t0).saturating_sub(sent) as f64 / 1e6;
                        metrics.hop(&peer_id, rtt);
                    }
                    Some(link_msg::Msg::Fault(f)) => {
                        tracing::warn!(peer = %peer_id, seq = f.seq, "peer refused a message: {}", f.message)
                    }
                    _ => {}
                }
            }
        }
    });
    let mut ping = tokio::time::interval(PING_EVERY);
    let result = loop {
        let first = tokio::select! {
            m = rx.recv() => match m {
                Some(m) => m,
                None => break Ok(()),
            },
            _ = ping.tick() => {
                let p = LinkMsg { msg: Some(link_msg::Msg::Ping(micros_since(t0))) };
                if ftx.send(frame(vec![p])).await.is_err() {
                    break Err("stream closed".to_string());
                }
                continue;
            }
        };
        let mut msgs = vec![wire::encode(&first)];
        while msgs.len() < FRAME_MSGS {
            match rx.try_recv() {
                Ok(m) => msgs.push(wire::encode(&m)),
                Err(_) => break,
            }
        }
        let f = frame(msgs);
        state.metrics.sent(&peer.0, prost::Message::encoded_len(&f));
        if ftx.send(f).await.is_err() {
            break Err("stream closed".to_string());
        }
        if reader.is_finished() {
            break Err("the peer closed the link".to_string());
        }
    };
    reader.abort();
    if peers.strong_count() == 0 {
        return Ok(());
    }
    result
}

/// The sequence a wire message is about (0 when none).
fn seq_of(m: &link_msg::Msg) -> u64 {
    match m {
        link_msg::Msg::Open(o) => o.seq,
        link_msg::Msg::Step(s) => s.seq,
        link_msg::Msg::Close(s) => *s,
        link_msg::Msg::Token(t) => t.seq,
        link_msg::Msg::Fault(f) => f.seq,
        link_msg::Msg::Embedding(e) => e.seq,
        _ => 0,
    }
}

/// Where the server side of the links hands what arrives: the router.
pub trait Inbound: Send + Sync + 'static {
    /// This agent's node id (named in the faults of messages refused here).
    fn node_id(&self) -> &str;
    /// Takes a message addressed to this agent.
    fn receive(&self, msg: Msg);
}

/// The `PipelineService` of one agent: incoming links.
pub struct PipelineSvc {
    pub state: Arc<AgentState>,
    pub router: Arc<dyn Inbound>,
}

type LinkStream = Pin<Box<dyn Stream<Item = Result<LinkFrame, Status>> + Send>>;

#[tonic::async_trait]
impl PipelineService for PipelineSvc {
    type LinkStream = LinkStream;

    async fn link(
        &self,
        request: Request<Streaming<LinkFrame>>,
    ) -> Result<Response<LinkStream>, Status> {
        let mut inbound = request.into_inner();
        let hello = match inbound.message().await?.map(|f| f.msgs.into_iter().next()) {
            Some(Some(LinkMsg {
                msg: Some(link_msg::Msg::Hello(h)),
            })) => h,
            _ => return Err(Status::invalid_argument("a link starts with a hello")),
        };
        if !hello.model.is_empty() && hello.model != self.state.model.id {
            return Err(Status::failed_precondition(format!(
                "{} serves model '{}', not '{}'",
                self.state.node_id, self.state.model.id, hello.model
            )));
        }
        let (tx, rx) = mpsc::channel(16);
        let router = self.router.clone();
        let metrics = self.state.metrics.clone();
        tokio::spawn(async move {
            let peer = hello.node_id;
            tracing::debug!(%peer, "pipeline link opened");
            loop {
                let f = match inbound.message().await {
                    Ok(Some(f)) => f,
                    Ok(None) => break,
                    Err(s) => {
                        tracing::debug!(%peer, "pipeline link ended: {s}");
                        break;
                    }
                };
                metrics.received(&peer, prost::Message::encoded_len(&f));
                for m in f.msgs {
                    let Some(m) = m.msg else { continue };
                    if let link_msg::Msg::Ping(t) = m {
                        let pong = LinkMsg {
                            msg: Some(link_msg::Msg::Pong(t)),
                        };
                        let _ = tx.try_send(Ok(frame(vec![pong])));
                        continue;
                    }
                    let seq = seq_of(&m);
                    match wire::decode(m) {
                        Ok(Some(msg)) => router.receive(msg),
                        Ok(None) => {}
                        Err(e) => {
                            // Tell the sender: the message goes no further.
                            tracing::warn!(%peer, "bad pipeline message dropped: {e}");
                            let fault = LinkMsg {
                                msg: Some(link_msg::Msg::Fault(proto::v1::SeqFault {
                                    seq,
                                    kind: proto::v1::FaultKind::FaultFailed as i32,
                                    node_id: router.node_id().to_string(),
                                    message: e,
                                })),
                            };
                            let _ = tx.try_send(Ok(frame(vec![fault])));
                        }
                    }
                }
            }
            tracing::debug!(%peer, "pipeline link closed");
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
