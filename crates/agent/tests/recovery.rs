//! Failure recovery: a stage's agent dies while a request streams; the entry agent
//! re-plans, replays the prompt and the generated tokens on the new stages and the
//! client sees one uninterrupted stream.

mod common;

use std::time::{Duration, Instant};

use common::*;
use proto::v1 as pb;
use serde_json::Value;

const PROMPT: &str = "Write a long story about a brave knight and a dragon.";
const MAX: usize = 64;
const LIMIT: Duration = Duration::from_secs(90);

/// The plan as `(node, start, end)` once `a` sees `n` alive members and a complete,
/// healthy plan over exactly those `n`.
async fn settled(a: &Agent, n: usize) -> Option<Vec<(String, usize, usize)>> {
    if get(&a.url("/health")).await.ok()?.status != 200 {
        return None;
    }
    let v = get_json(&a.url("/v1/cluster")).await?;
    let alive = v["members"]
        .as_array()?
        .iter()
        .filter(|m| m["state"] == "alive")
        .count();
    if alive != n || v["plan"]["complete"] != Value::Bool(true) {
        return None;
    }
    let slices: Vec<(String, usize, usize)> = v["plan"]["assignments"]
        .as_array()?
        .iter()
        .map(|s| {
            (
                s["node_id"].as_str().unwrap_or_default().to_string(),
                s["start"].as_u64().unwrap_or(0) as usize,
                s["end"].as_u64().unwrap_or(0) as usize,
            )
        })
        .collect();
    (slices.len() == n).then_some(slices)
}

/// Wait until all agents agree on one plan over all of them.
async fn converge(agents: &[&Agent]) -> Vec<(String, usize, usize)> {
    wait_for("the agents to agree on a plan", LIMIT, || async {
        let mut plans = Vec::new();
        for a in agents {
            plans.push(settled(a, agents.len()).await?);
        }
        plans
            .windows(2)
            .all(|w| w[0] == w[1])
            .then(|| plans[0].clone())
    })
    .await
}

/// Result of one streamed gRPC generation.
#[derive(Debug)]
struct Streamed {
    tokens: Vec<u32>,
    finish: Option<String>,
    prompt_tokens: u32,
    error: Option<tonic::Status>,
}

/// Stream a greedy chat generation through `port`; after `kill_at` tokens call
/// `on_kill` once. Bounded by a 180 s overall timeout.
async fn stream(port: u16, kill_at: usize, on_kill: impl FnMut()) -> Streamed {
    stream_prompt(port, PROMPT, kill_at, on_kill).await
}

/// [`stream`] with another prompt.
async fn stream_prompt(
    port: u16,
    prompt: &str,
    kill_at: usize,
    mut on_kill: impl FnMut(),
) -> Streamed {
    let fut = async {
        let mut client = proto::InferenceServiceClient::connect(format!("http://127.0.0.1:{port}"))
            .await
            .expect("connect");
        let req = pb::GenerateRequest {
            messages: vec![pb::ChatMessage {
                role: "user".into(),
                content: prompt.into(),
                ..Default::default()
            }],
            sampling: Some(pb::SamplingParams {
                temperature: Some(0.0),
                max_tokens: Some(MAX as u32),
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut out = Streamed {
            tokens: vec![],
            finish: None,
            prompt_tokens: 0,
            error: None,
        };
        let mut s = match client.generate(req).await {
            Ok(r) => r.into_inner(),
            Err(e) => {
                out.error = Some(e);
                return out;
            }
        };
        let mut killed = false;
        loop {
            match s.message().await {
                Ok(Some(pb::GenerateResponse {
                    event: Some(pb::generate_response::Event::Token(t)),
                })) => {
                    if t.token_id != 0 {
                        out.tokens.push(t.token_id);
                    }
                }
                Ok(Some(pb::GenerateResponse {
                    event: Some(pb::generate_response::Event::Done(d)),
                })) => {
                    out.finish = Some(d.finish_reason);
                    out.prompt_tokens = d.usage.map(|u| u.prompt_tokens).unwrap_or(0);
                }
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(e) => {
                    out.error = Some(e);
                    break;
                }
            }
            if !killed && out.tokens.len() >= kill_at {
                killed = true;
                on_kill();
            }
        }
        out
    };
    tokio::time::timeout(Duration::from_secs(180), fut)
        .await
        .expect("the stream must end within 180 s")
}

/// Open pipeline sessions reported by an agent's metrics.
async fn sessions(a: &Agent) -> Option<i64> {
    let m = get(&a.metrics_url()).await.ok()?.text();
    m.lines()
        .find(|l| l.starts_with("distributed_llm_pipeline_sessions{"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Greedy continuation of `tokens` with the engine split as `split` (f16 at the
/// boundaries, the whole input in one batched step, like the cluster's replay).
fn continuation(
    model: &std::path::Path,
    split: &[(String, usize, usize)],
    tokens: &[u32],
    n: usize,
) -> Vec<u32> {
    let mut gen = engine::Generator::load(model, 1).unwrap();
    gen.stages = split
        .iter()
        .map(|(_, s, e)| engine::Stage::load(model, *s, *e).unwrap())
        .collect();
    gen.generate(tokens, &engine::SamplingParams::greedy(n), |_| true)
        .unwrap()
        .tokens
}

/// The text without ANSI colour sequences (`ESC [ ... m`).
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn middle_stage_dies_mid_stream_and_the_request_completes() {
    let model = model();
    let (p1, p2, p3) = (Ports::new(), Ports::new(), Ports::new());
    let mut agents = [
        Agent::start("agent-1", p1, &[], &model),
        Agent::start("agent-2", p2, &[p1.gossip], &model),
        Agent::start("agent-3", p3, &[p1.gossip], &model),
    ];
    let before = {
        let refs: Vec<&Agent> = agents.iter().collect();
        converge(&refs).await
    };
    assert_eq!(before.len(), 3, "{before:?}");
    let idx = |id: &str| agents.iter().position(|a| a.id == id).unwrap();
    let entry = idx(&before[0].0);
    let middle = idx(&before[1].0);
    let entry_port = agents[entry].ports.api;

    // Undisturbed run (retried while adverts of loaded layers still spread: 503).
    let end = Instant::now() + LIMIT;
    let calm = loop {
        let r = stream(entry_port, usize::MAX, || {}).await;
        let settling = r.tokens.is_empty()
            && r.error.as_ref().map(|e| e.code()) == Some(tonic::Code::Unavailable);
        if !settling || Instant::now() > end {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert!(calm.error.is_none(), "{:?}", calm.error);
    assert_eq!(calm.tokens.len(), MAX, "{calm:?}");

    // Kill the middle stage's agent after 10 streamed tokens.
    let t_kill = std::cell::Cell::new(None);
    let got = {
        let victim = &mut agents[middle];
        stream(entry_port, 10, || {
            victim.kill();
            t_kill.set(Some(Instant::now()));
        })
        .await
    };
    let gap = t_kill.get().map(|t| t.elapsed());
    assert!(got.error.is_none(), "stream failed: {:?}", got.error);
    assert_eq!(got.tokens.len(), MAX, "{got:?}");
    assert_eq!(got.finish.as_deref(), Some("length"));
    assert_eq!(got.tokens[..10], calm.tokens[..10]);

    // Where the entry agent replayed: tokens before came from the old split.
    let log = strip_ansi(&agents[entry].log_text());
    let line = log
        .lines()
        .find(|l| l.contains("pipeline recovered"))
        .unwrap_or_else(|| panic!("no recovery logged:\n{log}"));
    let replayed: usize = line
        .split("replayed=")
        .nth(1)
        .and_then(|s| s.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no replay count in {line}"));
    let k = replayed - got.prompt_tokens as usize;
    eprintln!("recovery: {line}");
    eprintln!("killed after 10 tokens; replayed at token {k}; stream ended {gap:?} after the kill");
    assert!((10..MAX).contains(&k), "k = {k}");
    assert_eq!(got.tokens[..k], calm.tokens[..k]);

    // The rest equals the engine continuing from the replay on the new split.
    let survivors: Vec<&Agent> = agents.iter().filter(|a| a.id != before[1].0).collect();
    let after = converge(&survivors).await;
    let prompt = engine::Generator::load(&model, 1)
        .unwrap()
        .chat_tokens(&[engine::ChatMessage::new("user", PROMPT)])
        .unwrap();
    assert_eq!(prompt.len(), got.prompt_tokens as usize);
    let mut replay = prompt.clone();
    replay.extend_from_slice(&got.tokens[..k]);
    let rest = continuation(&model, &after, &replay, MAX - k);
    assert_eq!(got.tokens[k..], rest[..], "continuation after the replay");
    let first_diff = got
        .tokens
        .iter()
        .zip(&calm.tokens)
        .position(|(a, b)| a != b);
    eprintln!("first token differing from the undisturbed run: {first_diff:?}");
    // The engine rounds the residual stream to f16 after every layer, so the new split
    // computes exactly what the old one did: the recovered stream equals the undisturbed run.
    assert_eq!(
        got.tokens, calm.tokens,
        "recovered stream differs from the undisturbed run"
    );

    // Every KV cache is freed afterwards.
    for a in &survivors {
        wait_for("pipeline sessions back to 0", LIMIT, || async {
            (sessions(a).await? == 0).then_some(())
        })
        .await;
    }
    let m = get(&agents[entry].metrics_url()).await.unwrap().text();
    assert!(
        m.lines().any(
            |l| l.starts_with("distributed_llm_pipeline_recoveries_total{") && l.ends_with(" 1")
        ),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn losing_the_only_holder_mid_stream_names_the_missing_layers() {
    let model = model();
    let (p1, p2) = (Ports::new(), Ports::new());
    // The entry agent offers no memory: it only coordinates.
    let entry = Agent::start_with(
        "coord",
        p1,
        &[],
        &model,
        &["--memory-limit", "1000", "--recovery-timeout", "5"],
    );
    let start_holder = || Agent::start("holder", p2, &[p1.gossip], &model);
    let holder_ready = || async {
        wait_for("a plan with every layer on the holder", LIMIT, || async {
            let v = get_json(&entry.url("/v1/cluster")).await?;
            let a = v["plan"]["assignments"].as_array()?.clone();
            let alive = v["members"]
                .as_array()?
                .iter()
                .any(|m| m["node_id"] == "holder" && m["state"] == "alive");
            let ok = post_json(
                &entry.url("/v1/chat/completions"),
                &chat_body("hi", 2, false),
            )
            .await
            .ok()?
            .status
                == 200;
            (alive && ok && a.len() == 1 && a[0]["node_id"] == "holder").then_some(())
        })
        .await
    };

    // gRPC stream.
    let mut holder = start_holder();
    holder_ready().await;
    let got = stream(p1.api, 10, || holder.kill()).await;
    assert!(got.tokens.len() >= 10, "{got:?}");
    assert!(got.finish.is_none(), "{got:?}");
    let e = got.error.expect("the stream must end with an error");
    assert_eq!(e.code(), tonic::Code::Unavailable, "{e:?}");
    assert!(e.message().contains("layers not served: [0,30)"), "{e:?}");
    eprintln!("gRPC error after losing the holder: {}", e.message());

    // SSE: an error event, then [DONE].
    let mut holder = start_holder();
    holder_ready().await;
    let sse = tokio::time::timeout(Duration::from_secs(120), async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", p1.api))
            .await
            .unwrap();
        let body = serde_json::json!({
            "messages": [{"role": "user", "content": PROMPT}],
            "max_tokens": 2000, "temperature": 0, "stream": true,
        })
        .to_string();
        let req = format!(
            "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        s.write_all(req.as_bytes()).await.unwrap();
        let mut all = Vec::new();
        let mut buf = vec![0u8; 8192];
        let mut killed = false;
        loop {
            let n = s.read(&mut buf).await.unwrap_or(0);
            if n == 0 {
                break;
            }
            all.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&all);
            if !killed && text.matches("\"content\"").count() > 5 {
                holder.kill();
                killed = true;
            }
        }
        String::from_utf8_lossy(&all).into_owned()
    })
    .await
    .expect("the SSE stream must end");
    let err_at = sse
        .find("layers not served: [0,30)")
        .unwrap_or_else(|| panic!("no error event naming the layers: {sse}"));
    let done_at = sse.rfind("data: [DONE]").expect("[DONE] after the error");
    assert!(err_at < done_at);
    assert!(sse.contains("\"code\":503"), "{sse}");

    // Non-streaming: 503 with the message.
    let holder = std::sync::Mutex::new(start_holder());
    holder_ready().await;
    let tokens = || async {
        let m = get(&entry.metrics_url()).await.ok()?.text();
        m.lines()
            .find(|l| l.starts_with("distributed_llm_inference_tokens_generated_total{"))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
    };
    let before = tokens().await.unwrap_or(0.0);
    let body = serde_json::json!({
        "messages": [{"role": "user", "content": PROMPT}],
        "max_tokens": 2000, "temperature": 0,
    })
    .to_string();
    let killer = async {
        wait_for("tokens generated", LIMIT, || async {
            (tokens().await? >= before + 5.0).then_some(())
        })
        .await;
        holder.lock().unwrap().kill();
    };
    let url = entry.url("/v1/chat/completions");
    let (r, ()) = tokio::join!(post_json(&url, &body), killer);
    let r = r.unwrap();
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(
        r.text().contains("layers not served: [0,30)"),
        "{}",
        r.text()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_frozen_stage_is_abandoned_when_gossip_declares_it_dead() {
    let model = model();
    let (p1, p2, p3) = (Ports::new(), Ports::new(), Ports::new());
    let agents = [
        Agent::start("agent-1", p1, &[], &model),
        Agent::start("agent-2", p2, &[p1.gossip], &model),
        Agent::start("agent-3", p3, &[p1.gossip], &model),
    ];
    let before = {
        let refs: Vec<&Agent> = agents.iter().collect();
        converge(&refs).await
    };
    let idx = |id: &str| agents.iter().position(|a| a.id == id).unwrap();
    let entry = &agents[idx(&before[0].0)];
    let victim = &agents[idx(&before[1].0)];
    let pid = victim.pid().unwrap().to_string();
    // Wait until the entry serves, then freeze the middle stage (SIGSTOP) mid-stream:
    // no error, no reset, just silence. Gossip declares it dead and the request moves on
    // long before the 60 s hop deadline.
    wait_for("a served request", LIMIT, || async {
        let r = post_json(
            &entry.url("/v1/chat/completions"),
            &chat_body("hi", 2, false),
        )
        .await
        .ok()?;
        (r.status == 200).then_some(())
    })
    .await;
    let mut t_stop = None;
    let got = stream(entry.ports.api, 10, || {
        let ok = std::process::Command::new("kill")
            .args(["-STOP", &pid])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill -STOP {pid}");
        t_stop = Some(Instant::now());
    })
    .await;
    let waited = t_stop.map(|t| t.elapsed());
    let _ = std::process::Command::new("kill")
        .args(["-CONT", &pid])
        .status();
    assert!(got.error.is_none(), "{:?}", got.error);
    assert_eq!(got.tokens.len(), MAX, "{got:?}");
    let log = strip_ansi(&entry.log_text());
    let line = log
        .lines()
        .find(|l| l.contains("pipeline recovered"))
        .unwrap_or_else(|| panic!("no recovery logged:\n{log}"));
    assert!(line.contains("is dead"), "{line}");
    eprintln!("frozen stage: stream ended {waited:?} after SIGSTOP; {line}");
}

/// Six streams share the batches of a 3-stage pipeline; the middle stage's agent dies while
/// all of them are generating. Every stream completes, each with exactly the tokens of
/// its undisturbed run.
#[tokio::test(flavor = "multi_thread")]
async fn a_stage_dies_under_a_full_batch_and_every_stream_completes_unchanged() {
    let model = model();
    let (p1, p2, p3) = (Ports::new(), Ports::new(), Ports::new());
    let agents = [
        Agent::start("batch-1", p1, &[], &model),
        Agent::start("batch-2", p2, &[p1.gossip], &model),
        Agent::start("batch-3", p3, &[p1.gossip], &model),
    ];
    let before = {
        let refs: Vec<&Agent> = agents.iter().collect();
        converge(&refs).await
    };
    let idx = |id: &str| agents.iter().position(|a| a.id == id).unwrap();
    let entry_port = agents[idx(&before[0].0)].ports.api;
    let victim_pid = agents[idx(&before[1].0)].pid().unwrap().to_string();
    let prompts = [
        "Write a long story about a brave knight and a dragon.",
        "Describe a journey across the ocean in detail.",
        "Explain how a steam engine works, step by step.",
        "Tell the history of a small mountain village.",
        "Write a letter to a friend about a summer holiday.",
        "Describe a busy market in a large city.",
    ];
    // Undisturbed runs, one by one (retried while the plan still settles).
    let mut calm = Vec::new();
    for p in prompts {
        let end = Instant::now() + LIMIT;
        let r = loop {
            let r = stream_prompt(entry_port, p, usize::MAX, || {}).await;
            if r.error.is_none() || Instant::now() > end {
                break r;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        };
        assert!(r.error.is_none(), "{:?}", r.error);
        calm.push(r.tokens);
    }
    // All at once; the middle stage dies once the first stream has 8 tokens.
    let killed = std::sync::atomic::AtomicBool::new(false);
    let runs = prompts.iter().enumerate().map(|(i, p)| {
        let (killed, pid) = (&killed, &victim_pid);
        async move {
            stream_prompt(entry_port, p, if i == 0 { 8 } else { usize::MAX }, || {
                if !killed.swap(true, std::sync::atomic::Ordering::SeqCst) {
                    let ok = std::process::Command::new("kill")
                        .args(["-KILL", pid])
                        .status()
                        .is_ok_and(|s| s.success());
                    assert!(ok, "kill -KILL {pid}");
                }
            })
            .await
        }
    });
    let got = futures::future::join_all(runs).await;
    assert!(killed.into_inner(), "the middle stage was killed");
    for (i, g) in got.iter().enumerate() {
        assert!(g.error.is_none(), "stream {i}: {:?}", g.error);
        assert_eq!(
            g.tokens, calm[i],
            "stream {i} differs from its undisturbed run"
        );
    }
    let log = strip_ansi(&agents[idx(&before[0].0)].log_text());
    let recovered = log
        .lines()
        .filter(|l| l.contains("pipeline recovered"))
        .count();
    eprintln!(
        "{} streams completed unchanged; {recovered} recoveries logged",
        got.len()
    );
    assert!(recovered >= 1, "{log}");
}
