//! Load: bounded admission (running + waiting, then 429 with Retry-After), no hung
//! requests under 32 concurrent streams, and every KV cache freed afterwards —
//! also when clients disconnect mid-stream.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const LIMIT: Duration = Duration::from_secs(90);

/// Open a streaming chat request on a raw connection; returns the stream after
/// the response head (status line included in the returned text).
async fn open_stream(port: u16, prompt: &str, max_tokens: u32) -> (tokio::net::TcpStream, String) {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    // The end-of-turn tokens of the default model (<|endoftext|> 0, <|im_end|> 2) are
    // banned, so that a stream runs its whole max_tokens and stays open while checked.
    let body = serde_json::json!({
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": true,
        "logit_bias": {"0": -100, "2": -100},
    })
    .to_string();
    let req = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(60), s.read(&mut buf))
        .await
        .expect("a response head within 60 s")
        .unwrap();
    (s, String::from_utf8_lossy(&buf[..n]).into_owned())
}

/// How one streamed request ended.
#[derive(Debug, Clone, PartialEq)]
enum Outcome {
    Done(Duration),
    Busy,
    Other(String),
}

/// One streaming request read to its end (bounded by 240 s).
async fn stream_to_end(port: u16, prompt: &str, max_tokens: u32) -> Outcome {
    let t0 = Instant::now();
    let fut = async {
        let (mut s, head) = open_stream(port, prompt, max_tokens).await;
        if head.starts_with("HTTP/1.1 429") {
            assert!(
                head.to_ascii_lowercase().contains("retry-after: 1"),
                "{head}"
            );
            return Outcome::Busy;
        }
        let mut all = head.into_bytes();
        let _ = s.read_to_end(&mut all).await;
        let text = String::from_utf8_lossy(&all).into_owned();
        if text.starts_with("HTTP/1.1 200")
            && text.contains("\"finish_reason\":\"")
            && !text.contains("\"error\"")
            && text.contains("data: [DONE]")
        {
            Outcome::Done(t0.elapsed())
        } else {
            Outcome::Other(text)
        }
    };
    tokio::time::timeout(Duration::from_secs(240), fut)
        .await
        .expect("no request may hang")
}

/// A gauge of an agent's metrics (first sample of `name`).
async fn gauge(a: &Agent, name: &str) -> Option<f64> {
    let m = get(&a.metrics_url()).await.ok()?.text();
    m.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with('{'))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

async fn sessions_zero(agents: &[&Agent]) {
    for a in agents {
        wait_for("pipeline sessions back to 0", LIMIT, || async {
            (gauge(a, "distributed_llm_pipeline_sessions").await? == 0.0).then_some(())
        })
        .await;
    }
}

/// Three agents that agree on a complete plan over all of them.
async fn cluster(model: &std::path::Path, extra: &[&str]) -> Vec<Agent> {
    let (p1, p2, p3) = (Ports::new(), Ports::new(), Ports::new());
    let agents = vec![
        Agent::start_with("agent-1", p1, &[], model, extra),
        Agent::start_with("agent-2", p2, &[p1.gossip], model, extra),
        Agent::start_with("agent-3", p3, &[p1.gossip], model, extra),
    ];
    for a in &agents {
        wait_for("a healthy agent in a 3-node plan", LIMIT, || async {
            if get(&a.url("/health")).await.ok()?.status != 200 {
                return None;
            }
            let v = get_json(&a.url("/v1/cluster")).await?;
            let n = v["plan"]["assignments"].as_array()?.len();
            (n == 3 && v["plan"]["complete"] == Value::Bool(true)).then_some(())
        })
        .await;
    }
    // Every entry point serves (adverts of loaded layers have spread).
    for a in &agents {
        wait_for("a served request", LIMIT, || async {
            let r = post_json(&a.url("/v1/chat/completions"), &chat_body("hi", 2, false))
                .await
                .ok()?;
            (r.status == 200).then_some(())
        })
        .await;
    }
    agents
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

/// 32 streaming requests at once, spread over `ports`: (completion latencies, 429s).
async fn wave(ports: &[u16], tag: usize) -> (Vec<Duration>, usize) {
    let tasks: Vec<_> = (0..32)
        .map(|i| {
            let port = ports[i % ports.len()];
            tokio::spawn(async move {
                stream_to_end(
                    port,
                    &format!("Count from {} to {}.", i + tag, i + tag + 20),
                    24,
                )
                .await
            })
        })
        .collect();
    let mut done = Vec::new();
    let mut busy = 0;
    for t in tasks {
        match t.await.unwrap() {
            Outcome::Done(d) => done.push(d),
            Outcome::Busy => busy += 1,
            Outcome::Other(text) => panic!("neither completed nor 429: {text}"),
        }
    }
    done.sort();
    (done, busy)
}

/// RSS of each agent in MiB, now: read from /proc/<pid>/status (VmRSS), where the
/// agent's own gauge is a sample taken every 2 s.
fn rss(agents: &[&Agent]) -> Vec<f64> {
    agents
        .iter()
        .map(|a| {
            let pid = a.pid().expect("a running agent");
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
            let kib: f64 = status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
                .unwrap_or_else(|| panic!("no VmRSS in /proc/{pid}/status"));
            kib / 1024.0
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn thirty_two_concurrent_streams_complete_or_get_429() {
    let model = model();
    let agents = cluster(&model, &["--max-requests", "4", "--max-queue", "4"]).await;
    let refs: Vec<&Agent> = agents.iter().collect();
    let ports: Vec<u16> = agents.iter().map(|a| a.ports.api).collect();
    let rss0 = rss(&refs);
    let mut rss_after = Vec::new();
    for round in 0..2 {
        let t0 = Instant::now();
        let (done, busy) = wave(&ports, round * 100).await;
        eprintln!(
            "wave {round}: 32 streams, {} completed, {busy} got 429, wall {:.1} s, \
             latency p50 {:.2} s p99 {:.2} s",
            done.len(),
            t0.elapsed().as_secs_f64(),
            percentile(&done, 0.5).as_secs_f64(),
            percentile(&done, 0.99).as_secs_f64()
        );
        assert_eq!(done.len() + busy, 32);
        // 3 agents x (4 running + 4 waiting) = 24 places for 32 requests at once.
        assert!(!done.is_empty());
        sessions_zero(&refs).await;
        for a in &refs {
            let q = gauge(a, "distributed_llm_inference_queued_requests").await;
            assert_eq!(q, Some(0.0), "{}", a.id);
            let r = gauge(a, "distributed_llm_inference_active_requests").await;
            assert_eq!(r, Some(0.0), "{}", a.id);
        }
        rss_after.push(rss(&refs));
    }
    eprintln!(
        "RSS MiB per agent: start {rss0:.0?}, after wave 0 {:.0?}, after wave 1 {:.0?}",
        rss_after[0], rss_after[1]
    );
    // No growth from one wave to the next (caches freed, nothing leaks).
    for i in 0..refs.len() {
        assert!(
            rss_after[1][i] < rss_after[0][i] + 64.0,
            "{}: RSS grew from {:.0} to {:.0} MiB",
            refs[i].id,
            rss_after[0][i],
            rss_after[1][i]
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn queue_waits_then_429_and_disconnects_free_every_stage() {
    let model = model();
    let agents = cluster(&model, &["--max-requests", "1", "--max-queue", "1"]).await;
    let refs: Vec<&Agent> = agents.iter().collect();
    let port = agents[0].ports.api;
    // One runs, one waits, the third is refused.
    let (running, head) = open_stream(port, "Tell me a long story about dragons.", 2000).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let (waiting, head) = open_stream(port, "Tell me a long story about cats.", 2000).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    wait_for("one queued request", LIMIT, || async {
        (gauge(&agents[0], "distributed_llm_inference_queued_requests").await? == 1.0).then_some(())
    })
    .await;
    let r = post_json(
        &agents[0].url("/v1/chat/completions"),
        &chat_body("hi", 2, false),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 429, "{}", r.text());
    assert_eq!(r.header("retry-after"), Some("1"));
    assert!(r.text().contains("1 waiting (limit 1)"), "{}", r.text());
    // The same on gRPC: RESOURCE_EXHAUSTED with a retry-after hint.
    let mut client = proto::InferenceServiceClient::connect(format!("http://127.0.0.1:{port}"))
        .await
        .unwrap();
    let e = client
        .generate(proto::v1::GenerateRequest {
            prompt: "hi".into(),
            ..Default::default()
        })
        .await
        .expect_err("a full agent must refuse");
    assert_eq!(e.code(), tonic::Code::ResourceExhausted, "{e:?}");
    assert_eq!(
        e.metadata()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("1")
    );
    // The running one holds a session on each of the three stages. The response head
    // and the first chunk (the role) are sent before the prompt reaches the stages, and
    // each stage's gauge is set after its worker has handled the open: wait for all three
    // (the stream cannot end meanwhile: 2000 tokens, end-of-turn banned).
    wait_for("a session open on every stage", LIMIT, || async {
        for a in &refs {
            if gauge(a, "distributed_llm_pipeline_sessions").await? < 1.0 {
                return None;
            }
        }
        Some(())
    })
    .await;
    // Both clients go away: every stage frees its KV cache, the queue empties.
    drop(waiting);
    drop(running);
    sessions_zero(&refs).await;
    wait_for("an empty queue", LIMIT, || async {
        (gauge(&agents[0], "distributed_llm_inference_queued_requests").await? == 0.0
            && gauge(&agents[0], "distributed_llm_inference_active_requests").await? == 0.0)
            .then_some(())
    })
    .await;
    // And the agent serves again.
    let r = post_json(
        &agents[0].url("/v1/chat/completions"),
        &chat_body("hi", 2, false),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
}
