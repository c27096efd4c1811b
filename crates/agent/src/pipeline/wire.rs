//! Pipeline messages and sampling settings to and from their protobuf form. Decoding
//! checks what a peer could get wrong (shapes, ranges) and says what.

use std::sync::Arc;

use engine::{HiddenState, Pooling, SamplingParams};
use proto::v1::{self as pb, link_msg};

use super::msg::{
    EmbedSpec, Embedding, Fault, FaultKind, Finish, Hop, Msg, Open, Route, Step, Token,
};

/// Engine sampling parameters to the wire.
pub fn sampling_to_proto(p: &SamplingParams) -> pb::SamplingParams {
    pb::SamplingParams {
        temperature: Some(p.temperature),
        top_k: Some(p.top_k as u32),
        top_p: Some(p.top_p),
        repeat_penalty: Some(p.repeat_penalty),
        repeat_last_n: Some(p.repeat_last_n as u32),
        seed: p.seed,
        max_tokens: Some(p.max_tokens as u32),
        stop: p.stop.clone(),
        min_p: Some(p.min_p),
        frequency_penalty: Some(p.frequency_penalty),
        presence_penalty: Some(p.presence_penalty),
        logit_bias: p.logit_bias.iter().copied().collect(),
        top_logprobs: p.logprobs.map(|k| k as u32),
    }
}

/// Wire sampling parameters to the engine's; unset fields take engine defaults
/// (`default_max_tokens` when `max_tokens` is unset).
pub fn sampling_from_proto(
    p: Option<&pb::SamplingParams>,
    default_max_tokens: usize,
) -> SamplingParams {
    let d = SamplingParams::default();
    let Some(p) = p else {
        return SamplingParams {
            max_tokens: default_max_tokens,
            ..d
        };
    };
    let mut logit_bias: Vec<(u32, f32)> = p.logit_bias.iter().map(|(t, b)| (*t, *b)).collect();
    logit_bias.sort_by_key(|(t, _)| *t);
    SamplingParams {
        temperature: p.temperature.unwrap_or(d.temperature),
        top_k: p.top_k.map(|v| v as usize).unwrap_or(d.top_k),
        top_p: p.top_p.unwrap_or(d.top_p),
        min_p: p.min_p.unwrap_or(d.min_p),
        repeat_penalty: p.repeat_penalty.unwrap_or(d.repeat_penalty),
        repeat_last_n: p
            .repeat_last_n
            .map(|v| v as usize)
            .unwrap_or(d.repeat_last_n),
        frequency_penalty: p.frequency_penalty.unwrap_or(d.frequency_penalty),
        presence_penalty: p.presence_penalty.unwrap_or(d.presence_penalty),
        logit_bias,
        seed: p.seed,
        max_tokens: p
            .max_tokens
            .map(|v| v as usize)
            .unwrap_or(default_max_tokens),
        stop: p.stop.clone(),
        logprobs: p.top_logprobs.map(|k| k as usize),
    }
}

/// An open (with its embedding output, if any) as sent on a link.
fn encode_open(o: &Open, embed: Option<&EmbedSpec>) -> pb::SeqOpen {
    pb::SeqOpen {
        seq: o.seq,
        plan_version: o.route.plan_version,
        hops: o
            .route
            .hops
            .iter()
            .map(|h| pb::RouteHop {
                node_id: h.node_id.clone(),
                api_addr: h.addr.clone(),
                layer_start: h.range.start as u32,
                layer_end: h.range.end as u32,
            })
            .collect(),
        origin_node: o.route.origin.0.clone(),
        origin_addr: o.route.origin.1.clone(),
        sampling: Some(sampling_to_proto(&o.params)),
        prompt_len: o.prompt_len as u32,
        reuse: o.reuse.clone(),
        constraint: o
            .constraint
            .as_ref()
            .map(|c| serde_json::to_string(c).unwrap_or_default())
            .unwrap_or_default(),
        embed: embed.map(|e| pb::EmbedOutput {
            pooling: match e.pooling {
                Pooling::Mean => pb::EmbedPooling::PoolingMean,
                Pooling::Cls => pb::EmbedPooling::PoolingCls,
                Pooling::Last => pb::EmbedPooling::PoolingLast,
                Pooling::None => pb::EmbedPooling::PoolingNone,
            } as i32,
            normalize: e.normalize,
        }),
    }
}

/// A message as sent on a link.
pub fn encode(msg: &Msg) -> pb::LinkMsg {
    let m = match msg {
        Msg::Open(o) => link_msg::Msg::Open(encode_open(o, None)),
        Msg::OpenEmbedding(o, e) => link_msg::Msg::Open(encode_open(o, Some(e))),
        Msg::Embedding(e) => link_msg::Msg::Embedding(pb::SeqEmbedding {
            seq: e.seq,
            values: e.data.clone(),
        }),
        Msg::Step(s) => link_msg::Msg::Step(pb::SeqStep {
            seq: s.seq,
            position: s.pos as u32,
            tokens: s.tokens.clone(),
            dim: s.hidden.as_ref().map_or(0, |h| h.dim as u32),
            hidden: s.hidden.as_ref().map(|h| h.to_bytes()).unwrap_or_default(),
            sample: s.sample,
        }),
        Msg::Close(seq) => link_msg::Msg::Close(*seq),
        Msg::Token(t) => link_msg::Msg::Token(pb::SeqToken {
            seq: t.seq,
            position: t.pos as u32,
            token: t.id,
            logprob: t.logprob,
            top_ids: t.top.iter().map(|(i, _)| *i).collect(),
            top_logprobs: t.top.iter().map(|(_, l)| *l).collect(),
            finish: match t.finish {
                None => pb::Finish::None,
                Some(Finish::Eog) => pb::Finish::Eog,
                Some(Finish::Length) => pb::Finish::Length,
            } as i32,
        }),
        Msg::Fault(f) => link_msg::Msg::Fault(pb::SeqFault {
            seq: f.seq,
            kind: match f.kind {
                FaultKind::Failed => pb::FaultKind::FaultFailed,
                FaultKind::Busy => pb::FaultKind::FaultBusy,
                FaultKind::PrefixMiss => pb::FaultKind::FaultPrefixMiss,
            } as i32,
            node_id: f.node_id.clone(),
            message: f.message.clone(),
        }),
    };
    pb::LinkMsg { msg: Some(m) }
}

/// A pipeline message from its wire form; `Ok(None)` for link-level messages (hello,
/// ping, pong) the caller handles itself.
pub fn decode(m: link_msg::Msg) -> Result<Option<Msg>, String> {
    Ok(Some(match m {
        link_msg::Msg::Open(o) => {
            if o.hops.is_empty() {
                return Err(format!("sequence {} opened with an empty route", o.seq));
            }
            let hops = o
                .hops
                .into_iter()
                .map(|h| {
                    if h.layer_end <= h.layer_start {
                        return Err(format!("route hop {} has an empty layer range", h.node_id));
                    }
                    Ok(Hop {
                        node_id: h.node_id,
                        addr: h.api_addr,
                        range: h.layer_start as usize..h.layer_end as usize,
                    })
                })
                .collect::<Result<Vec<_>, String>>()?;
            let params = sampling_from_proto(o.sampling.as_ref(), 1);
            let constraint = if o.constraint.is_empty() {
                None
            } else {
                Some(
                    serde_json::from_str(&o.constraint)
                        .map_err(|e| format!("sequence {}: bad constraint: {e}", o.seq))?,
                )
            };
            let embed = match o.embed {
                None => None,
                Some(e) => Some(EmbedSpec {
                    pooling: match pb::EmbedPooling::try_from(e.pooling) {
                        Ok(pb::EmbedPooling::PoolingMean) => Pooling::Mean,
                        Ok(pb::EmbedPooling::PoolingCls) => Pooling::Cls,
                        Ok(pb::EmbedPooling::PoolingLast) => Pooling::Last,
                        Ok(pb::EmbedPooling::PoolingNone) => Pooling::None,
                        Err(_) => {
                            return Err(format!(
                                "sequence {}: unknown pooling {}",
                                o.seq, e.pooling
                            ))
                        }
                    },
                    normalize: e.normalize,
                }),
            };
            if embed.is_some() && !o.reuse.is_empty() {
                return Err(format!(
                    "sequence {}: an embedding sequence cannot reuse a cached prefix",
                    o.seq
                ));
            }
            let open = Open {
                seq: o.seq,
                route: Arc::new(Route {
                    plan_version: o.plan_version,
                    hops,
                    origin: (o.origin_node, o.origin_addr),
                }),
                params,
                prompt_len: o.prompt_len as usize,
                reuse: o.reuse,
                constraint,
            };
            match embed {
                Some(e) => Msg::OpenEmbedding(open, e),
                None => Msg::Open(open),
            }
        }
        link_msg::Msg::Embedding(e) => Msg::Embedding(Embedding {
            seq: e.seq,
            data: e.values,
        }),
        link_msg::Msg::Step(s) => {
            if s.tokens.is_empty() {
                return Err(format!("step of sequence {} without tokens", s.seq));
            }
            let hidden = if s.hidden.is_empty() {
                None
            } else {
                Some(
                    HiddenState::from_bytes(&s.hidden, s.tokens.len(), s.dim as usize)
                        .map_err(|e| format!("sequence {}: {e}", s.seq))?,
                )
            };
            Msg::Step(Step {
                seq: s.seq,
                pos: s.position as usize,
                tokens: s.tokens,
                hidden,
                sample: s.sample,
            })
        }
        link_msg::Msg::Close(seq) => Msg::Close(seq),
        link_msg::Msg::Token(t) => {
            if t.top_ids.len() != t.top_logprobs.len() {
                return Err(format!(
                    "token of sequence {}: top lists differ in length",
                    t.seq
                ));
            }
            Msg::Token(Token {
                seq: t.seq,
                pos: t.position as usize,
                id: t.token,
                logprob: t.logprob,
                top: t.top_ids.into_iter().zip(t.top_logprobs).collect(),
                finish: match pb::Finish::try_from(t.finish) {
                    Ok(pb::Finish::Eog) => Some(Finish::Eog),
                    Ok(pb::Finish::Length) => Some(Finish::Length),
                    _ => None,
                },
            })
        }
        link_msg::Msg::Fault(f) => Msg::Fault(Fault {
            seq: f.seq,
            kind: match pb::FaultKind::try_from(f.kind) {
                Ok(pb::FaultKind::FaultBusy) => FaultKind::Busy,
                Ok(pb::FaultKind::FaultPrefixMiss) => FaultKind::PrefixMiss,
                _ => FaultKind::Failed,
            },
            node_id: f.node_id,
            message: f.message,
        }),
        link_msg::Msg::Hello(_) | link_msg::Msg::Ping(_) | link_msg::Msg::Pong(_) => {
            return Ok(None)
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip() {
        let route = Arc::new(Route {
            plan_version: 9,
            hops: vec![Hop {
                node_id: "a".into(),
                addr: "a:1".into(),
                range: 0..30,
            }],
            origin: ("a".into(), "a:1".into()),
        });
        let params = SamplingParams {
            seed: Some(5),
            logprobs: Some(2),
            logit_bias: vec![(3, -1.5)],
            ..SamplingParams::greedy(7)
        };
        let msgs = vec![
            Msg::Open(Open {
                seq: 1,
                route: route.clone(),
                params: params.clone(),
                prompt_len: 4,
                reuse: vec![1, 2],
                constraint: Some(engine::constrain::Constraint::Regex("[ab]+".into())),
            }),
            Msg::OpenEmbedding(
                Open {
                    seq: 2,
                    route: route.clone(),
                    params: SamplingParams::greedy(0),
                    prompt_len: 6,
                    reuse: Vec::new(),
                    constraint: None,
                },
                EmbedSpec {
                    pooling: Pooling::Last,
                    normalize: true,
                },
            ),
            Msg::OpenEmbedding(
                Open {
                    seq: 3,
                    route,
                    params,
                    prompt_len: 1,
                    reuse: Vec::new(),
                    constraint: None,
                },
                EmbedSpec {
                    pooling: Pooling::Mean,
                    normalize: false,
                },
            ),
            Msg::Embedding(Embedding {
                seq: 2,
                data: vec![0.25, -1.5, f32::MIN_POSITIVE, 3.0e7],
            }),
            Msg::Step(Step {
                seq: 1,
                pos: 2,
                tokens: vec![5, 6],
                hidden: Some(HiddenState {
                    n_tokens: 2,
                    dim: 2,
                    data: vec![0.5, 1.0, -2.0, 3.0],
                }),
                sample: true,
            }),
            Msg::Token(Token {
                seq: 1,
                pos: 4,
                id: 8,
                logprob: -0.5,
                top: vec![(8, -0.5)],
                finish: Some(Finish::Eog),
            }),
            Msg::Fault(Fault {
                seq: 1,
                kind: FaultKind::Busy,
                node_id: "b".into(),
                message: "full".into(),
            }),
            Msg::Close(1),
        ];
        for m in msgs {
            let back = decode(encode(&m).msg.unwrap()).unwrap().unwrap();
            assert_eq!(format!("{back:?}"), format!("{m:?}"));
        }
        let bad = pb::SeqStep {
            seq: 1,
            tokens: vec![1],
            dim: 3,
            hidden: vec![0; 8],
            ..Default::default()
        };
        assert!(decode(link_msg::Msg::Step(bad))
            .unwrap_err()
            .contains("sequence 1"));
        // An embedding sequence never takes a prefix from the stages' caches.
        let mut open = encode_open(
            &Open {
                seq: 4,
                route: Arc::new(Route {
                    plan_version: 1,
                    hops: vec![Hop {
                        node_id: "a".into(),
                        addr: "a:1".into(),
                        range: 0..30,
                    }],
                    origin: ("a".into(), "a:1".into()),
                }),
                params: SamplingParams::greedy(0),
                prompt_len: 3,
                reuse: Vec::new(),
                constraint: None,
            },
            Some(&EmbedSpec {
                pooling: Pooling::Mean,
                normalize: true,
            }),
        );
        open.reuse = vec![1, 2];
        assert!(decode(link_msg::Msg::Open(open))
            .unwrap_err()
            .contains("reuse"));
    }
}
