//! 1,000 malformed requests against one running agent on 127.0.0.1: bad JSON, wrong
//! types, huge numbers, invalid UTF-8, oversized bodies (HTTP); garbage and
//! ill-formed frames (gRPC pipeline Link and Generate); random datagrams (gossip UDP).
//! Every HTTP answer must be a 4xx with a JSON error message, every gRPC answer a
//! non-OK status (or, on a pipeline link, a fault frame) with a message, and the agent
//! must still serve afterwards.

mod common;

use std::time::Duration;

use bytes::{Buf, BufMut};
use common::*;
use proto::v1::{
    link_msg, GenerateRequest, LinkFrame, LinkHello, LinkMsg, RouteHop, SamplingParams, SeqOpen,
    SeqStep,
};
use proto::{InferenceServiceClient, PipelineServiceClient};
use serde_json::Value;
use tokio_stream::StreamExt;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

const LIMIT: Duration = Duration::from_secs(90);
const CALL: Duration = Duration::from_secs(20);

/// Tiny deterministic PRNG (xorshift64).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// Sends and receives raw bytes as gRPC messages.
#[derive(Clone, Default)]
struct Raw;
struct RawEnc;
struct RawDec;
impl Codec for Raw {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawEnc;
    type Decoder = RawDec;
    fn encoder(&mut self) -> RawEnc {
        RawEnc
    }
    fn decoder(&mut self) -> RawDec {
        RawDec
    }
}
impl Encoder for RawEnc {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put_slice(&item);
        Ok(())
    }
}
impl Decoder for RawDec {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
        let v = src.chunk().to_vec();
        src.advance(v.len());
        Ok(Some(v))
    }
}

/// The malformed HTTP bodies (request `i` of the run).
fn http_case(i: usize, rng: &mut Rng) -> (&'static str, &'static str, Vec<u8>, bool) {
    const P: &str = "/v1/chat/completions";
    let msg = r#"[{"role":"user","content":"hi"}]"#;
    let json = |s: String| (P, "POST", s.into_bytes(), true);
    match i % 20 {
        0 => json(String::from_utf8_lossy(&rng.bytes(40)).into_owned()),
        1 => json(format!(r#"{{"messages":{msg}"#)), // truncated
        2 => json(r#"{"messages":"hello"}"#.into()),
        3 => json(format!(r#"{{"messages":{msg},"max_tokens":"ten"}}"#)),
        4 => json(format!(r#"{{"messages":{msg},"max_tokens":1e30}}"#)),
        5 => json(format!(
            r#"{{"messages":{msg},"max_tokens":99999999999999999999999}}"#
        )),
        6 => json(format!(r#"{{"messages":{msg},"temperature":1e308}}"#)),
        7 => json(format!(r#"{{"messages":{msg},"temperature":{{"a":1}}}}"#)),
        8 => json(format!(r#"{{"messages":{msg},"seed":-1}}"#)),
        9 => json(r#"{"messages":[]}"#.into()),
        10 => json(r#"{"messages":[{"role":"robot","content":"x"}]}"#.into()),
        11 => json(format!(r#"{{"messages":{msg},"model":"no-such-model"}}"#)),
        12 => {
            // Invalid UTF-8 inside a JSON string.
            let mut b = br#"{"messages":[{"role":"user","content":""#.to_vec();
            b.extend_from_slice(&[0xff, 0xfe, 0xc3, 0x28]);
            b.extend_from_slice(br#""}]}"#);
            (P, "POST", b, true)
        }
        13 => (P, "POST", rng.bytes(64), true),
        // No content type: the body is still read as JSON (as llama-server and Ollama
        // do), so a malformed one is still a 400.
        14 => (P, "POST", br#"{"messages":null}"#.to_vec(), false),
        15 => json(format!(r#"{{"messages":{msg},"top_p":0}}"#)),
        16 => json(format!(
            r#"{{"messages":{msg},"stop":["a","b","c","d","e"]}}"#
        )),
        17 => json(format!(r#"{{"messages":{msg},"max_tokens":-5}}"#)),
        18 if i % 100 == 18 => {
            // Oversized body (3 MiB).
            let big = "x".repeat(3 << 20);
            json(format!(
                r#"{{"messages":[{{"role":"user","content":"{big}"}}]}}"#
            ))
        }
        18 => json("[1,2,3]".into()),
        _ => json(r#"{"messages":[{"role":"user","content":7}]}"#.into()),
    }
}

fn assert_json_4xx(what: &str, r: &agent::httpc::Response) {
    assert!(
        (400..500).contains(&r.status),
        "{what}: status {} body {}",
        r.status,
        r.text()
    );
    let v: Value = serde_json::from_slice(&r.body)
        .unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {}", r.text()));
    let m = v["error"]["message"].as_str().unwrap_or_default();
    assert!(!m.is_empty(), "{what}: no error message in {v}");
}

fn assert_status(what: &str, s: &tonic::Status) {
    assert_ne!(s.code(), tonic::Code::Ok, "{what}");
    assert!(!s.message().trim().is_empty(), "{what}: {s:?}");
}

/// The first answer of a response stream must be an error status.
async fn first_error<T>(
    r: Result<tonic::Response<tonic::Streaming<T>>, tonic::Status>,
) -> tonic::Status {
    match r {
        Err(s) => s,
        Ok(resp) => {
            let mut stream = resp.into_inner();
            match tokio::time::timeout(CALL, stream.message()).await {
                Ok(Err(s)) => s,
                Ok(Ok(Some(_))) => tonic::Status::ok("a message was accepted"),
                Ok(Ok(None)) => tonic::Status::ok(""),
                Err(_) => tonic::Status::ok("no answer (hang)"),
            }
        }
    }
}

fn frame(msgs: Vec<link_msg::Msg>) -> LinkFrame {
    LinkFrame {
        msgs: msgs.into_iter().map(|m| LinkMsg { msg: Some(m) }).collect(),
    }
}

fn hello() -> link_msg::Msg {
    link_msg::Msg::Hello(LinkHello {
        node_id: "fuzz".into(),
        ..Default::default()
    })
}

/// Opens sequence 7 on layers [start, end) of the agent itself (its faults stay local).
fn open(start: u32, end: u32, node: &str, addr: &str) -> link_msg::Msg {
    link_msg::Msg::Open(SeqOpen {
        seq: 7,
        hops: vec![RouteHop {
            node_id: node.into(),
            api_addr: addr.into(),
            layer_start: start,
            layer_end: end,
        }],
        origin_node: node.into(),
        origin_addr: addr.into(),
        sampling: Some(SamplingParams::default()),
        prompt_len: 1,
        ..Default::default()
    })
}

fn step(dim: u32, hidden: Vec<u8>, tokens: Vec<u32>) -> link_msg::Msg {
    link_msg::Msg::Step(SeqStep {
        seq: 7,
        tokens,
        dim,
        hidden,
        sample: true,
        ..Default::default()
    })
}

/// Sends frames on a fresh Link and returns the first answer: an error status, or a
/// fault frame's message as a non-OK status; a pong counts as OK ("still serving").
async fn link_answer(ch: &tonic::transport::Channel, frames: Vec<LinkFrame>) -> tonic::Status {
    let r = PipelineServiceClient::new(ch.clone())
        .link(tokio_stream::iter(frames).chain(tokio_stream::pending()))
        .await;
    let mut stream = match r {
        Err(s) => return s,
        Ok(resp) => resp.into_inner(),
    };
    match tokio::time::timeout(CALL, stream.message()).await {
        Ok(Err(s)) => s,
        Ok(Ok(Some(f))) => match f.msgs.into_iter().next().and_then(|m| m.msg) {
            Some(link_msg::Msg::Fault(f)) => tonic::Status::invalid_argument(f.message),
            Some(link_msg::Msg::Pong(_)) => tonic::Status::ok("pong"),
            other => tonic::Status::ok(format!("unexpected answer {other:?}")),
        },
        Ok(Ok(None)) => tonic::Status::ok(""),
        Err(_) => tonic::Status::ok("no answer (hang)"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_thousand_malformed_requests_crash_nothing() {
    let model = model();
    let a = Agent::start("fuzz-a", Ports::new(), &[], &model);
    wait_for("the agent to hold the model", LIMIT, || async {
        let r = get(&a.url("/health")).await.ok()?;
        (r.status == 200).then_some(())
    })
    .await;
    let mut rng = Rng(0x2545_F491_4F6C_DD1D);
    let t0 = std::time::Instant::now();
    let mut counts = [0usize; 3];

    // 600 HTTP requests.
    for i in 0..600 {
        let (path, method, body, typed) = http_case(i, &mut rng);
        let headers: &[(&str, &str)] = if typed {
            &[("Content-Type", "application/json")]
        } else {
            &[]
        };
        let r = agent::httpc::request(method, &a.url(path), headers, &body, CALL)
            .await
            .unwrap_or_else(|e| panic!("HTTP case {i}: no answer: {e:#}"));
        assert_json_4xx(&format!("HTTP case {i}"), &r);
        counts[0] += 1;
    }

    // 200 gRPC calls.
    let ch = tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{}", a.ports.api))
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .timeout(CALL)
        .connect_lazy();
    let fwd = http::uri::PathAndQuery::from_static("/distributed_llm.v1.PipelineService/Link");
    let (node, addr) = ("fuzz-a".to_string(), format!("127.0.0.1:{}", a.ports.api));
    let gen = http::uri::PathAndQuery::from_static("/distributed_llm.v1.InferenceService/Generate");
    for i in 0..200 {
        let what = format!("gRPC case {i}");
        let status = match i % 10 {
            0..=2 => {
                // Garbage frames on a Link stream.
                let frames: Vec<Vec<u8>> =
                    (0..1 + i % 3).map(|k| rng.bytes(8 + k * 37 + i)).collect();
                let mut g = tonic::client::Grpc::new(ch.clone());
                g.ready().await.unwrap();
                let r = g
                    .streaming(
                        tonic::Request::new(tokio_stream::iter(frames)),
                        fwd.clone(),
                        Raw,
                    )
                    .await;
                first_error(r).await
            }
            3 | 4 => {
                // Garbage Generate request.
                let mut g = tonic::client::Grpc::new(ch.clone());
                g.ready().await.unwrap();
                let body = {
                    let mut b = rng.bytes(5 + i);
                    b[0] = 0xff;
                    b
                };
                let r = g
                    .server_streaming(tonic::Request::new(body), gen.clone(), Raw)
                    .await;
                first_error(r).await
            }
            5 => {
                // A step before the hello; an open with an impossible range.
                let frames = if i % 20 == 5 {
                    vec![frame(vec![step(576, vec![0; 1152], vec![1])])]
                } else {
                    vec![frame(vec![hello()]), frame(vec![open(20, 5, &node, &addr)])]
                };
                link_answer(&ch, frames).await
            }
            6 => {
                // Hidden bytes that do not match the shape, or a huge shape.
                let (d, len, tokens) = match i % 3 {
                    0 => (576, 1151, vec![1]),
                    1 => (u32::MAX, 16, vec![1; 3]),
                    _ => (7, 28, vec![1, 2]),
                };
                let frames = vec![
                    frame(vec![hello()]),
                    frame(vec![step(d, rng.bytes(len), tokens)]),
                ];
                link_answer(&ch, frames).await
            }
            7 => {
                // Token ids out of the vocabulary, or no tokens at all, on an open
                // sequence, then a ping. Empty steps are refused on the link (a fault
                // frame); out-of-vocabulary ids by the stage, which tells the origin (the
                // agent itself): the link then answers the ping.
                let tokens = if i % 2 == 0 {
                    vec![u32::MAX, 4_000_000]
                } else {
                    vec![]
                };
                let frames = vec![
                    frame(vec![hello()]),
                    frame(vec![
                        open(0, 30, &node, &addr),
                        step(0, vec![], tokens),
                        link_msg::Msg::Close(7),
                    ]),
                    frame(vec![link_msg::Msg::Ping(1)]),
                ];
                let s = link_answer(&ch, frames).await;
                if s.code() == tonic::Code::Ok && s.message() == "pong" {
                    tonic::Status::invalid_argument("refused by the stage; the link still answers")
                } else {
                    s
                }
            }
            _ => {
                // Ill-formed Generate requests.
                let req = match i % 4 {
                    0 => GenerateRequest::default(),
                    1 => GenerateRequest {
                        prompt: "hi".into(),
                        model: Some("no-such-model".into()),
                        ..Default::default()
                    },
                    2 => GenerateRequest {
                        prompt: "hi".into(),
                        sampling: Some(SamplingParams {
                            max_tokens: Some(u32::MAX),
                            ..Default::default()
                        }),
                        ..Default::default()
                    },
                    _ => GenerateRequest {
                        prompt: "hi".into(),
                        sampling: Some(SamplingParams {
                            temperature: Some(f32::NAN),
                            top_p: Some(-3.0),
                            ..Default::default()
                        }),
                        ..Default::default()
                    },
                };
                let r = InferenceServiceClient::new(ch.clone()).generate(req).await;
                first_error(r).await
            }
        };
        assert_status(&what, &status);
        counts[1] += 1;
    }

    // 200 random gossip datagrams (half start with chitchat's magic number).
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    for i in 0..200 {
        let mut d = rng.bytes(1 + (i * 53) % 1400);
        if i % 2 == 0 && d.len() >= 4 {
            d[..2].copy_from_slice(&45_139u16.to_le_bytes());
            d[2] = (i % 3) as u8;
            d[3] = (i % 5) as u8;
        }
        sock.send_to(&d, ("127.0.0.1", a.ports.gossip))
            .await
            .unwrap();
        counts[2] += 1;
        if i % 20 == 19 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    assert_eq!(counts.iter().sum::<usize>(), 1000);
    eprintln!(
        "malformed: {} HTTP, {} gRPC, {} UDP in {:.2} s",
        counts[0],
        counts[1],
        counts[2],
        t0.elapsed().as_secs_f64()
    );

    // Still alive and serving.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let h = get(&a.url("/health")).await.expect("health after the fuzz");
    assert_eq!(h.status, 200, "{}", h.text());
    let r = post_json(
        &a.url("/v1/chat/completions"),
        &chat_body("Say hi.", 4, false),
    )
    .await
    .expect("chat after the fuzz");
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(!content(&r).is_empty());
}
