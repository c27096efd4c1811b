//! The stage worker: one thread per agent that owns the local stage and every sequence's
//! state on it (KV cache, its [`Role`] here, pending steps) and runs continuous batches:
//! each batch takes the next step of every ready sequence — all decoding sequences plus
//! at most one prompt chunk — so a long prompt delays running streams by one chunk at
//! most.
//!
//! ```text
//!   Open ──▶ open (role: Relay | Sample | Pool) ──steps──▶ ... ──Close / idle 10 min──▶ closed
//!              │                                   │
//!              └──── no room, prefix miss, wrong layers, bad step, failed batch ────▶ Fault to
//!                                                                                     the origin,
//!                                                                                     closed
//! ```

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use engine::constrain::{Matcher, TokenEnv};
use engine::{KvCache, Output, Sampler, Seq, Stage, StageInput, StageOutput};

use super::msg::{
    EmbedSpec, Embedding, Envelope, Fault, FaultKind, Finish, Msg, Open, Route, SeqId, Step, Token,
};
use super::prefix::PrefixCache;

/// Steps with at most this many positions count as decoding (always batched).
const DECODE_ROWS: usize = 4;
/// Closed sequences remembered (late steps for them are dropped quietly).
const CLOSED_MEMORY: usize = 4096;

/// Settings of a worker.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub node_id: String,
    pub api_addr: String,
    /// Tokens that end generation.
    pub eog: Vec<u32>,
    /// KV positions this stage may hold (open sequences' reservations plus the prefix
    /// cache).
    pub kv_capacity: usize,
    /// Most prompt positions in one batch.
    pub chunk: usize,
    /// Most sequences in one batch.
    pub max_batch: usize,
    /// The vocabulary for constrained decoding (on the last stage).
    pub token_env: Option<Arc<TokenEnv>>,
}

/// What one batch did (for metrics).
#[derive(Debug, Clone, Default)]
pub struct BatchReport {
    pub sequences: usize,
    pub positions: usize,
    pub compute: Duration,
}

/// What this stage does with a sequence's output: its role here, fixed when it opens.
enum Role {
    /// A stage before the last of the route: hidden states go on to the next one.
    /// `embedding`: an embedding's, whose cache is not kept as a prefix (the origin
    /// never asks for it).
    Relay { embedding: bool },
    /// The last stage of a generation: samples after each step marked `sample`.
    Sample(Box<Sampling>),
    /// The last stage of an embedding: the pooled vector goes to the origin after the
    /// step marked `sample`; its cache is not kept as a prefix.
    Pool,
}

/// The last stage's part of a generation.
struct Sampling {
    sampler: Sampler,
    /// The constraint's state, fed every generated token in order.
    matcher: Option<Matcher>,
    prompt_len: usize,
    max_tokens: usize,
}

/// A sequence open on this stage, from its open to its close (or its first fault, which
/// closes it); a closed sequence's id is remembered so that its late steps and opens are
/// dropped quietly.
struct SeqState {
    cache: KvCache,
    route: Arc<Route>,
    index: usize,
    role: Role,
    /// Every token whose position is in the cache (the prefix cache's key).
    history: Vec<u32>,
    reserved: usize,
    pending: VecDeque<Step>,
    /// When a step last arrived or ran.
    active: Instant,
}

/// A sequence with no step for this long is dropped (its origin vanished without
/// closing it).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(600);

/// A stage and the sequences on it.
pub struct Worker {
    stage: Arc<Stage>,
    cfg: WorkerConfig,
    eog: HashSet<u32>,
    seqs: HashMap<SeqId, SeqState>,
    order: VecDeque<SeqId>,
    closed: VecDeque<SeqId>,
    closed_set: HashSet<SeqId>,
    prefix: PrefixCache,
    reserved: usize,
}

impl Worker {
    pub fn new(stage: Arc<Stage>, cfg: WorkerConfig) -> Self {
        let eog = cfg.eog.iter().copied().collect();
        let prefix = PrefixCache::new(cfg.kv_capacity);
        Self {
            stage,
            cfg,
            eog,
            seqs: HashMap::new(),
            order: VecDeque::new(),
            closed: VecDeque::new(),
            closed_set: HashSet::new(),
            prefix,
            reserved: 0,
        }
    }

    /// The stage this worker runs.
    pub fn stage(&self) -> &Arc<Stage> {
        &self.stage
    }

    /// Open sequences.
    pub fn open_sequences(&self) -> usize {
        self.seqs.len()
    }

    /// Steps waiting to run.
    pub fn queued_steps(&self) -> usize {
        self.seqs.values().map(|s| s.pending.len()).sum()
    }

    /// KV cache bytes of open sequences and of the prefix cache.
    pub fn kv_bytes(&self) -> (usize, usize) {
        (
            self.seqs.values().map(|s| s.cache.bytes()).sum(),
            self.prefix.bytes(),
        )
    }

    /// Prefix cache hits and misses so far.
    pub fn prefix_stats(&self) -> (u64, u64) {
        (self.prefix.hits, self.prefix.misses)
    }

    /// Whether a batch could run now.
    pub fn has_work(&self) -> bool {
        self.seqs.values().any(|s| !s.pending.is_empty())
    }

    fn me(&self) -> (String, String) {
        (self.cfg.node_id.clone(), self.cfg.api_addr.clone())
    }

    fn fault(
        &self,
        route: &Route,
        seq: SeqId,
        kind: FaultKind,
        message: String,
        out: &mut Vec<Envelope>,
    ) {
        tracing::debug!(seq, ?kind, "{message}");
        out.push(Envelope {
            to: route.origin.clone(),
            msg: Msg::Fault(Fault {
                seq,
                kind,
                node_id: self.cfg.node_id.clone(),
                message,
            }),
        });
    }

    /// Takes one message; whatever it causes at once goes to `out`.
    pub fn handle(&mut self, msg: Msg, out: &mut Vec<Envelope>) {
        match msg {
            Msg::Open(o) => self.open(o, None, out),
            Msg::OpenEmbedding(o, e) => self.open(o, Some(e), out),
            Msg::Step(s) => match self.seqs.get_mut(&s.seq) {
                Some(state) => {
                    state.active = Instant::now();
                    state.pending.push_back(s);
                }
                None if self.closed_set.contains(&s.seq) => {}
                None => tracing::debug!(seq = s.seq, "step for a sequence not open here; dropped"),
            },
            Msg::Close(seq) => self.close(seq),
            Msg::Token(_) | Msg::Fault(_) | Msg::Embedding(_) => {
                tracing::warn!("a token, embedding or fault reached the stage worker; dropped")
            }
        }
    }

    fn open(&mut self, o: Open, embed: Option<EmbedSpec>, out: &mut Vec<Envelope>) {
        // Already open, or closed before its open arrived (closes go straight to every
        // stage, opens along the route).
        if self.seqs.contains_key(&o.seq) || self.closed_set.contains(&o.seq) {
            return;
        }
        let range = self.stage.range();
        let Some(index) = o.route.position(&range) else {
            let msg = format!(
                "{} holds layers [{},{}), which the route of this sequence does not use",
                self.cfg.node_id, range.start, range.end
            );
            return self.fault(&o.route, o.seq, FaultKind::Failed, msg, out);
        };
        if embed.is_some() && !o.reuse.is_empty() {
            let msg = format!(
                "{}: an embedding pools every position, so it cannot reuse a cached prefix",
                self.cfg.node_id
            );
            return self.fault(&o.route, o.seq, FaultKind::Failed, msg, out);
        }
        let ctx = self.stage.info().context_length;
        let need = (o.prompt_len + o.params.max_tokens).min(ctx);
        if self.reserved + need > self.cfg.kv_capacity {
            let msg = format!(
                "{}: KV cache full ({} of {} positions reserved, {need} needed)",
                self.cfg.node_id, self.reserved, self.cfg.kv_capacity
            );
            return self.fault(&o.route, o.seq, FaultKind::Busy, msg, out);
        }
        self.prefix
            .shrink_to(self.cfg.kv_capacity - self.reserved - need);
        let cache = if o.reuse.is_empty() {
            let mut cache = self.stage.new_cache();
            if let Some(e) = embed {
                cache.set_output(Output::Embedding {
                    pooling: e.pooling,
                    normalize: e.normalize,
                });
            }
            cache
        } else {
            match self.prefix.take(&o.reuse) {
                Some(c) => c,
                None => {
                    let msg = format!(
                        "{}: prefix of {} positions not cached",
                        self.cfg.node_id,
                        o.reuse.len()
                    );
                    return self.fault(&o.route, o.seq, FaultKind::PrefixMiss, msg, out);
                }
            }
        };
        let last = index + 1 == o.route.hops.len();
        let matcher = match (&o.constraint, last && embed.is_none()) {
            (Some(c), true) => {
                let made = match &self.cfg.token_env {
                    Some(env) => Matcher::new(env, c),
                    None => Err(
                        "this stage cannot constrain decoding (no token environment)".to_string(),
                    ),
                };
                // Generated tokens reused from the prefix cache (a replay) advance it too.
                let generated = o.reuse.get(o.prompt_len..).unwrap_or_default();
                let made = made.and_then(|mut m| {
                    generated.iter().try_for_each(|t| m.accept(*t))?;
                    Ok(m)
                });
                match made {
                    Ok(m) => Some(m),
                    Err(e) => {
                        let msg = format!("{}: constraint: {e}", self.cfg.node_id);
                        return self.fault(&o.route, o.seq, FaultKind::Failed, msg, out);
                    }
                }
            }
            _ => None,
        };
        let role = match (last, embed) {
            (false, e) => {
                let next = &o.route.hops[index + 1];
                out.push(Envelope {
                    to: (next.node_id.clone(), next.addr.clone()),
                    msg: match e {
                        Some(e) => Msg::OpenEmbedding(o.clone(), e),
                        None => Msg::Open(o.clone()),
                    },
                });
                Role::Relay {
                    embedding: e.is_some(),
                }
            }
            (true, Some(_)) => Role::Pool,
            (true, None) => Role::Sample(Box::new(Sampling {
                sampler: Sampler::new(&o.params).with_prompt_len(o.prompt_len),
                matcher,
                prompt_len: o.prompt_len,
                max_tokens: o.params.max_tokens,
            })),
        };
        self.reserved += need;
        self.order.push_back(o.seq);
        self.seqs.insert(
            o.seq,
            SeqState {
                cache,
                index,
                role,
                history: o.reuse,
                reserved: need,
                pending: VecDeque::new(),
                active: Instant::now(),
                route: o.route,
            },
        );
    }

    fn close(&mut self, seq: SeqId) {
        if self.closed_set.insert(seq) {
            self.closed.push_back(seq);
            if self.closed.len() > CLOSED_MEMORY {
                if let Some(old) = self.closed.pop_front() {
                    self.closed_set.remove(&old);
                }
            }
        }
        let Some(s) = self.seqs.remove(&seq) else {
            return;
        };
        self.order.retain(|id| *id != seq);
        self.reserved -= s.reserved;
        let embedding = matches!(s.role, Role::Pool | Role::Relay { embedding: true });
        if !embedding && s.history.len() == s.cache.len() {
            self.prefix.put(s.history, s.cache);
            self.prefix.shrink_to(self.cfg.kv_capacity - self.reserved);
        }
    }

    /// Drops sequences idle for longer than `timeout`; returns how many.
    pub fn sweep_idle(&mut self, timeout: Duration) -> usize {
        let idle: Vec<SeqId> = self
            .seqs
            .iter()
            .filter(|(_, s)| s.pending.is_empty() && s.active.elapsed() > timeout)
            .map(|(id, _)| *id)
            .collect();
        for id in &idle {
            tracing::info!(seq = id, "sequence idle too long; freeing its KV cache");
            self.close(*id);
        }
        idle.len()
    }

    /// Picks the sequences of the next batch, in turn from where the last batch stopped.
    fn select(&mut self) -> Vec<SeqId> {
        let mut picked = Vec::new();
        let mut prompt = 0;
        for _ in 0..self.order.len() {
            let Some(id) = self.order.pop_front() else {
                break;
            };
            self.order.push_back(id);
            let Some(step) = self.seqs.get(&id).and_then(|s| s.pending.front()) else {
                continue;
            };
            let n = step.tokens.len();
            if n > DECODE_ROWS {
                if prompt > 0 && prompt + n > self.cfg.chunk {
                    continue;
                }
                prompt += n;
            }
            picked.push(id);
            if picked.len() >= self.cfg.max_batch {
                break;
            }
        }
        picked
    }

    /// Runs one batch if any step is ready; its outputs go to `out`.
    pub fn run_batch(&mut self, out: &mut Vec<Envelope>) -> Option<BatchReport> {
        let ids = self.select();
        if ids.is_empty() {
            return None;
        }
        let first = self.stage.is_first();
        let mut states = Vec::with_capacity(ids.len());
        let mut inputs = Vec::with_capacity(ids.len());
        for id in ids {
            let mut s = self.seqs.remove(&id).expect("selected from the table");
            let step = s.pending.pop_front().expect("selected with a step");
            let input = if first {
                StageInput::Tokens(step.tokens.clone())
            } else {
                match step.hidden.clone() {
                    Some(h) => StageInput::Hidden(h),
                    None => StageInput::Tokens(Vec::new()),
                }
            };
            let problem = if step.pos != s.cache.len() {
                Some(format!(
                    "step at position {} but the stage holds {} positions",
                    step.pos,
                    s.cache.len()
                ))
            } else {
                self.stage.check_input(&input).err().map(|e| e.to_string())
            };
            if let Some(p) = problem {
                let msg = format!("{}: {p}", self.cfg.node_id);
                self.fault(&s.route, id, FaultKind::Failed, msg, out);
                self.seqs.insert(id, s);
                self.close(id);
                continue;
            }
            states.push((id, s, step));
            inputs.push(input);
        }
        if states.is_empty() {
            return Some(BatchReport::default());
        }
        let t0 = Instant::now();
        let positions = inputs.iter().map(|i| match i {
            StageInput::Tokens(t) => t.len(),
            StageInput::Hidden(h) => h.n_tokens,
        });
        let positions: usize = positions.sum();
        let result = {
            let mut seqs: Vec<Seq> = states
                .iter_mut()
                .zip(inputs)
                .map(|((_, s, _), input)| Seq {
                    input,
                    cache: &mut s.cache,
                })
                .collect();
            self.stage.forward_batch(&mut seqs)
        };
        let report = BatchReport {
            sequences: states.len(),
            positions,
            compute: t0.elapsed(),
        };
        let outputs = match result {
            Ok(o) => o,
            Err(e) => {
                let msg = format!("{}: {e}", self.cfg.node_id);
                for (id, s, _) in states {
                    self.fault(&s.route, id, FaultKind::Failed, msg.clone(), out);
                    self.seqs.insert(id, s);
                    self.close(id);
                }
                return Some(report);
            }
        };
        let ctx = self.stage.info().context_length;
        for ((id, mut s, step), output) in states.into_iter().zip(outputs) {
            s.history.extend_from_slice(&step.tokens);
            // Generated tokens (also those of a replay) advance the constraint in order.
            if let Role::Sample(smp) = &mut s.role {
                if let Some(m) = smp.matcher.as_mut() {
                    let from = smp
                        .prompt_len
                        .saturating_sub(step.pos)
                        .min(step.tokens.len());
                    if let Some(e) = step.tokens[from..].iter().find_map(|t| m.accept(*t).err()) {
                        let msg = format!("{}: constraint: {e}", self.cfg.node_id);
                        self.fault(&s.route, id, FaultKind::Failed, msg, out);
                        self.seqs.insert(id, s);
                        self.close(id);
                        continue;
                    }
                }
            }
            match (&mut s.role, output) {
                (Role::Relay { .. }, StageOutput::Hidden(h)) => {
                    let next = &s.route.hops[s.index + 1];
                    out.push(Envelope {
                        to: (next.node_id.clone(), next.addr.clone()),
                        msg: Msg::Step(Step {
                            hidden: Some(h),
                            ..step
                        }),
                    });
                }
                // The pooled vector of every position so far, wanted after the prompt's
                // last chunk.
                (Role::Pool, StageOutput::Hidden(h)) => {
                    if step.sample {
                        out.push(Envelope {
                            to: s.route.origin.clone(),
                            msg: Msg::Embedding(Embedding {
                                seq: id,
                                data: h.data,
                            }),
                        });
                    }
                }
                (Role::Sample(smp), StageOutput::Logits(mut logits)) if step.sample => {
                    let allowed = smp.matcher.as_mut().map(|m| m.allowed());
                    let picked = smp.sampler.pick(&mut logits, &s.history, allowed);
                    let pos = s.history.len();
                    let generated = pos + 1 - smp.prompt_len.min(pos + 1);
                    let finish = if self.eog.contains(&picked.token) {
                        Some(Finish::Eog)
                    } else if generated >= smp.max_tokens || pos + 1 >= ctx {
                        Some(Finish::Length)
                    } else {
                        None
                    };
                    out.push(Envelope {
                        to: s.route.origin.clone(),
                        msg: Msg::Token(Token {
                            seq: id,
                            pos,
                            id: picked.token,
                            logprob: picked.logprob,
                            top: picked.top,
                            finish,
                        }),
                    });
                    if finish.is_none() {
                        let head = &s.route.hops[0];
                        out.push(Envelope {
                            to: (head.node_id.clone(), head.addr.clone()),
                            msg: Msg::Step(Step {
                                seq: id,
                                pos,
                                tokens: vec![picked.token],
                                hidden: None,
                                sample: true,
                            }),
                        });
                    }
                }
                (Role::Sample(_), StageOutput::Logits(_)) => {}
                (_, _) => {
                    let msg = format!(
                        "{}: this stage's output does not fit the sequence's place on its route",
                        self.cfg.node_id
                    );
                    self.fault(&s.route, id, FaultKind::Failed, msg, out);
                    self.seqs.insert(id, s);
                    self.close(id);
                    continue;
                }
            }
            self.seqs.insert(id, s);
        }
        Some(report)
    }
}

/// Runs a worker on its own thread until every sender of `inbox` is gone: takes
/// messages, runs batches, hands every output to `deliver` (messages for this node come
/// back through `inbox`) and every batch report to `report` (also called without one
/// after messages changed the worker's state).
pub fn spawn(
    mut worker: Worker,
    inbox: Receiver<Msg>,
    deliver: impl Fn(Envelope) + Send + 'static,
    mut report: impl FnMut(&Worker, Option<&BatchReport>) + Send + 'static,
) -> std::thread::JoinHandle<()> {
    let me = worker.me();
    std::thread::Builder::new()
        .name(format!("stage-{}", worker.stage.range().start))
        .spawn(move || {
            let mut out = Vec::new();
            let mut swept = Instant::now();
            loop {
                if swept.elapsed() > Duration::from_secs(10) {
                    worker.sweep_idle(IDLE_TIMEOUT);
                    swept = Instant::now();
                }
                // Idle: wait for work. Busy: take whatever has arrived, then run.
                let first = if worker.has_work() {
                    inbox.try_recv().ok()
                } else {
                    match inbox.recv_timeout(Duration::from_secs(1)) {
                        Ok(m) => Some(m),
                        Err(RecvTimeoutError::Timeout) => continue,
                        Err(RecvTimeoutError::Disconnected) => break,
                    }
                };
                let handled = first.is_some();
                if let Some(m) = first {
                    worker.handle(m, &mut out);
                    while let Ok(m) = inbox.try_recv() {
                        worker.handle(m, &mut out);
                    }
                }
                match worker.run_batch(&mut out) {
                    Some(r) => report(&worker, Some(&r)),
                    None if handled => report(&worker, None),
                    None => {}
                }
                // Local messages go straight back into this worker (a lone agent's
                // sequences circulate without a channel hop); what they cause joins `out`.
                let mut queue: VecDeque<Envelope> = out.drain(..).collect();
                while let Some(e) = queue.pop_front() {
                    match e.msg {
                        m @ (Msg::Step(_) | Msg::Open(_) | Msg::Close(_)) if e.to == me => {
                            worker.handle(m, &mut out);
                            queue.extend(out.drain(..));
                        }
                        m => deliver(Envelope { to: e.to, msg: m }),
                    }
                }
            }
            tracing::debug!("stage worker stopped");
        })
        .expect("spawning the stage worker thread")
}

#[cfg(test)]
mod tests {
    use super::super::msg::Hop;
    use super::*;
    use engine::{ChatMessage, Generator, SamplingParams};

    fn setup(chunk: usize) -> (Generator, Worker, Arc<Route>) {
        engine::init_threads(2);
        let path = engine::fetch::ensure_default_model().expect("default model");
        let g = Generator::load(&path, 1).unwrap();
        let stage = Arc::new(Stage::load(&path, 0, g.stages[0].info().n_layers).unwrap());
        let me = ("me".to_string(), "127.0.0.1:1".to_string());
        let route = Arc::new(Route {
            plan_version: 1,
            hops: vec![Hop {
                node_id: me.0.clone(),
                addr: me.1.clone(),
                range: stage.range(),
            }],
            origin: me.clone(),
        });
        let cfg = WorkerConfig {
            node_id: me.0,
            api_addr: me.1,
            eog: g.tokenizer.eog_ids().to_vec(),
            kv_capacity: 1 << 16,
            chunk,
            max_batch: 16,
            token_env: None,
        };
        (g, Worker::new(stage, cfg), route)
    }

    /// Opens a sequence and queues its prompt in chunks.
    fn start(
        route: &Arc<Route>,
        seq: SeqId,
        prompt: &[u32],
        max_tokens: usize,
        chunk: usize,
    ) -> Vec<Msg> {
        let mut msgs = vec![Msg::Open(Open {
            seq,
            route: route.clone(),
            params: SamplingParams::greedy(max_tokens),
            prompt_len: prompt.len(),
            reuse: Vec::new(),
            constraint: None,
        })];
        for (i, c) in prompt.chunks(chunk).enumerate() {
            msgs.push(Msg::Step(Step {
                seq,
                pos: i * chunk,
                tokens: c.to_vec(),
                hidden: None,
                sample: (i + 1) * chunk >= prompt.len(),
            }));
        }
        msgs
    }

    /// Runs batches until idle; returns each batch's tokens.
    fn drive(
        w: &mut Worker,
        msgs: Vec<Msg>,
        mut each: impl FnMut(usize, &mut Vec<Msg>),
    ) -> Vec<Vec<Token>> {
        let mut inbox: VecDeque<Msg> = msgs.into();
        let mut batches = Vec::new();
        loop {
            let mut out = Vec::new();
            while let Some(m) = inbox.pop_front() {
                w.handle(m, &mut out);
            }
            if w.run_batch(&mut out).is_none() {
                break;
            }
            let mut tokens = Vec::new();
            for e in out {
                match e.msg {
                    Msg::Token(t) => tokens.push(t),
                    Msg::Fault(f) => panic!("fault: {f:?}"),
                    m => inbox.push_back(m),
                }
            }
            let mut more = Vec::new();
            each(batches.len(), &mut more);
            inbox.extend(more);
            batches.push(tokens);
        }
        batches
    }

    fn prompt(g: &Generator, text: &str) -> Vec<u32> {
        g.chat_tokens(&[ChatMessage::new("user", text)]).unwrap()
    }

    /// An embedding sequence sent in chunks beside a generating one: the worker answers
    /// with the pooled vector the stage gives alone, samples nothing for it and keeps no
    /// prefix of it; a reuse is refused.
    #[test]
    fn embedding_sequences_answer_with_the_pooled_vector() {
        let (g, mut w, route) = setup(8);
        let tokens = g
            .tokenizer
            .tokenize(
                "A quiet harbour at dawn, gulls over the boats.",
                true,
                false,
            )
            .unwrap();
        assert!(tokens.len() > 8);
        let spec = EmbedSpec {
            pooling: engine::Pooling::Mean,
            normalize: true,
        };
        let open = |seq, reuse: Vec<u32>| {
            Msg::OpenEmbedding(
                Open {
                    seq,
                    route: route.clone(),
                    params: SamplingParams::greedy(0),
                    prompt_len: tokens.len(),
                    reuse,
                    constraint: None,
                },
                spec,
            )
        };
        let mut inbox: VecDeque<Msg> = start(&route, 1, &prompt(&g, "Hi"), 3, 8).into();
        inbox.push_back(open(2, Vec::new()));
        for (i, c) in tokens.chunks(8).enumerate() {
            inbox.push_back(Msg::Step(Step {
                seq: 2,
                pos: i * 8,
                tokens: c.to_vec(),
                hidden: None,
                sample: (i + 1) * 8 >= tokens.len(),
            }));
        }
        let (mut got, mut sampled) = (Vec::new(), 0);
        loop {
            let mut out = Vec::new();
            while let Some(m) = inbox.pop_front() {
                w.handle(m, &mut out);
            }
            if w.run_batch(&mut out).is_none() {
                break;
            }
            for e in out {
                match e.msg {
                    Msg::Embedding(e) => got.push(e),
                    Msg::Token(t) => {
                        assert_eq!(t.seq, 1, "the embedding sequence samples nothing");
                        sampled += 1;
                    }
                    Msg::Fault(f) => panic!("fault: {f:?}"),
                    m => inbox.push_back(m),
                }
            }
        }
        assert!(sampled > 0);
        assert_eq!(got.len(), 1, "one embedding, after the last chunk");
        let stage = w.stage().clone();
        let mut cache = stage.new_cache();
        cache.set_output(Output::Embedding {
            pooling: spec.pooling,
            normalize: spec.normalize,
        });
        let mut want = Vec::new();
        for c in tokens.chunks(8) {
            match stage
                .forward(StageInput::Tokens(c.to_vec()), &mut cache)
                .unwrap()
            {
                StageOutput::Hidden(h) => want = h.data,
                StageOutput::Logits(_) => panic!("logits for an embedding"),
            }
        }
        assert_eq!(got[0].data, want);
        w.handle(Msg::Close(2), &mut Vec::new());
        w.handle(Msg::Close(1), &mut Vec::new());
        assert_eq!(w.open_sequences(), 0);
        // Only the generation's cache went to the prefix cache.
        let kept = w.kv_bytes().1;
        assert!(kept > 0 && kept < cache.bytes() * 2, "{kept}");
        let mut out = Vec::new();
        w.handle(open(3, tokens[..4].to_vec()), &mut out);
        assert!(matches!(&out[..], [Envelope { msg: Msg::Fault(f), .. }]
            if f.kind == FaultKind::Failed && f.message.contains("prefix")));
    }

    #[test]
    fn batched_sequences_give_the_tokens_of_single_runs() {
        let (g, mut w, route) = setup(16);
        let texts = [
            "Tell me a story about a robot.",
            "What is 2 + 2?",
            "Name three colours of the rainbow, please.",
        ];
        let mut msgs = Vec::new();
        let prompts: Vec<Vec<u32>> = texts.iter().map(|t| prompt(&g, t)).collect();
        for (i, p) in prompts.iter().enumerate() {
            msgs.extend(start(&route, i as SeqId, p, 12, 16));
        }
        let batches = drive(&mut w, msgs, |_, _| {});
        for (i, p) in prompts.iter().enumerate() {
            let got: Vec<u32> = batches
                .iter()
                .flatten()
                .filter(|t| t.seq == i as SeqId)
                .map(|t| t.id)
                .collect();
            let alone = g
                .generate(p, &SamplingParams::greedy(12), |_| true)
                .unwrap();
            let mut want = alone.tokens.clone();
            if got.len() > want.len() {
                want.push(*got.last().unwrap()); // the end-of-generation token itself
            }
            assert_eq!(got, want, "sequence {i}");
        }
    }

    #[test]
    fn a_long_prompt_delays_running_streams_by_one_chunk_at_most() {
        let (g, mut w, route) = setup(32);
        let short = prompt(&g, "Write a long story about a dragon who loves the sea.");
        let long = prompt(
            &g,
            &"Describe the sea in great detail, with waves and wind. ".repeat(12),
        );
        let chunks = long.len().div_ceil(32);
        assert!(chunks >= 4, "{}", long.len());
        let mut msgs = start(&route, 1, &short, 40, 32);
        msgs.extend(start(&route, 2, &short, 40, 32));
        let batches = drive(&mut w, msgs, |b, more| {
            if b == 4 {
                more.extend(start(&route, 3, &long, 4, 32));
            }
        });
        // Once both streams decode, every batch gives each of them its next
        // token until one finishes, also while the long prompt goes through chunk by chunk.
        let finished = |seq| {
            batches
                .iter()
                .position(|b| b.iter().any(|t| t.seq == seq && t.finish.is_some()))
        };
        let end = finished(1).unwrap().min(finished(2).unwrap());
        let answered = batches
            .iter()
            .position(|b| b.iter().any(|t| t.seq == 3))
            .unwrap();
        assert!(
            answered >= 5 + chunks - 1 && answered <= end,
            "prompt answered at batch {answered}, streams end at {end}"
        );
        let first = |seq| {
            batches
                .iter()
                .position(|b| b.iter().any(|t| t.seq == seq))
                .unwrap()
        };
        let start = first(1).max(first(2)) + 1;
        assert!(
            start <= 4,
            "both streams decode before the long prompt arrives"
        );
        for (b, tokens) in batches.iter().enumerate().take(end + 1).skip(start) {
            assert_eq!(tokens.iter().filter(|t| t.seq != 3).count(), 2, "batch {b}");
        }
        assert!(
            batches.iter().flatten().any(|t| t.seq == 3),
            "the long prompt was answered"
        );
    }
}
