//! Where pipeline messages go: to this agent's stage worker (opens, steps, closes), to
//! the coordinators of sequences that entered here (tokens, embeddings, faults), or over
//! a link to another agent.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{broadcast, mpsc};

use super::link::{Inbound, Links};
use super::msg::{Envelope, Fault, FaultKind, Msg, SeqId};
use crate::node::state::AgentState;

/// Events a coordinator receives for its sequence.
pub type SeqRx = mpsc::UnboundedReceiver<Msg>;

/// The message switch of one agent.
pub struct Router {
    me: (String, String),
    worker: Mutex<Option<std::sync::mpsc::Sender<Msg>>>,
    seqs: Mutex<HashMap<SeqId, mpsc::UnboundedSender<Msg>>>,
    links: Links,
}

impl Router {
    pub fn new(state: Arc<AgentState>) -> Arc<Router> {
        Arc::new(Router {
            me: (state.node_id.clone(), state.addrs.api.clone()),
            worker: Mutex::new(None),
            seqs: Mutex::new(HashMap::new()),
            links: Links::new(state),
        })
    }

    /// This agent's node id and API address.
    pub fn me(&self) -> &(String, String) {
        &self.me
    }

    /// Sends a message to its destination.
    pub fn deliver(&self, e: Envelope) {
        if e.to.0 == self.me.0 {
            self.local(e.msg);
        } else {
            self.links.send(&e.to, e.msg);
        }
    }

    /// Handles a message addressed to this agent.
    pub fn local(&self, msg: Msg) {
        match msg {
            Msg::Token(ref t) => self.to_seq(t.seq, msg),
            Msg::Fault(ref f) => self.to_seq(f.seq, msg),
            Msg::Embedding(ref e) => self.to_seq(e.seq, msg),
            m => {
                let worker = self
                    .worker
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone();
                let undelivered = match worker {
                    Some(w) => w.send(m).err().map(|e| e.0),
                    None => Some(m),
                };
                if let Some(Msg::Open(o) | Msg::OpenEmbedding(o, _)) = undelivered {
                    self.deliver(Envelope {
                        to: o.route.origin.clone(),
                        msg: Msg::Fault(Fault {
                            seq: o.seq,
                            kind: FaultKind::Failed,
                            node_id: self.me.0.clone(),
                            message: format!("{} holds no layers now", self.me.0),
                        }),
                    });
                }
            }
        }
    }

    fn to_seq(&self, seq: SeqId, msg: Msg) {
        let seqs = self.seqs.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tx) = seqs.get(&seq) {
            let _ = tx.send(msg);
        }
    }

    /// The stage worker's inbox from now on (`None`: this agent runs no stage).
    pub fn set_worker(&self, inbox: Option<std::sync::mpsc::Sender<Msg>>) {
        *self.worker.lock().unwrap_or_else(|p| p.into_inner()) = inbox;
    }

    /// Receives the tokens, embeddings and faults of sequence `seq` until [`Router::unregister`].
    pub fn register(&self, seq: SeqId) -> SeqRx {
        let (tx, rx) = mpsc::unbounded_channel();
        self.seqs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(seq, tx);
        rx
    }

    pub fn unregister(&self, seq: SeqId) {
        self.seqs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&seq);
    }

    /// Node ids whose link broke, as they break.
    pub fn link_down(&self) -> broadcast::Receiver<String> {
        self.links.down()
    }
}

impl Inbound for Router {
    fn node_id(&self) -> &str {
        &self.me.0
    }

    fn receive(&self, msg: Msg) {
        self.local(msg)
    }
}
