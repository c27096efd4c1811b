//! Serving through the HTTP API on 127.0.0.1: concurrent streams are batched and each
//! gets exactly the tokens it gets alone, on one agent and across a 3-agent pipeline; a
//! repeated multi-turn prompt reuses the stages' prefix caches.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};

const LIMIT: Duration = Duration::from_secs(120);

const PROMPTS: [&str; 6] = [
    "Tell me a short story about a robot who learns to paint.",
    "What is the capital of France?",
    "Name three colours of the rainbow.",
    "Write a haiku about the sea.",
    "Why is the sky blue? One sentence.",
    "Count from one to five in words.",
];

/// Waits until every agent is healthy and serves a chat request (all stages loaded).
async fn healthy(agents: &[&Agent]) {
    for a in agents {
        wait_for(&format!("{} to serve", a.id), LIMIT, || async {
            let r = get(&a.url("/health")).await.ok()?;
            if r.status != 200 {
                return None;
            }
            let r = post_json(&a.url("/v1/chat/completions"), &chat_body("Hi", 1, false))
                .await
                .ok()?;
            (r.status == 200).then_some(())
        })
        .await;
    }
}

/// A metric's value summed over its series (0 when absent).
async fn metric(a: &Agent, name: &str) -> f64 {
    let text = get(&a.metrics_url())
        .await
        .map(|r| r.text())
        .unwrap_or_default();
    text.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
        .sum()
}

async fn chat(port_url: String, prompt: &str) -> String {
    let r = post_json(&port_url, &chat_body(prompt, 24, false))
        .await
        .expect("chat");
    assert_eq!(r.status, 200, "{}", r.text());
    content(&r)
}

/// Every prompt alone, then all at once (twice over): the same text each time.
async fn concurrent_equals_alone(entry: &Agent, batch_metric_of: &Agent) {
    let url = entry.url("/v1/chat/completions");
    let mut alone = Vec::new();
    for p in PROMPTS {
        alone.push(chat(url.clone(), p).await);
    }
    let (count0, sum0) = (
        metric(
            batch_metric_of,
            "distributed_llm_stage_batch_sequences_count",
        )
        .await,
        metric(batch_metric_of, "distributed_llm_stage_batch_sequences_sum").await,
    );
    let runs: Vec<_> = PROMPTS
        .iter()
        .chain(PROMPTS.iter())
        .map(|p| tokio::spawn(chat(url.clone(), p)))
        .collect();
    for (i, r) in runs.into_iter().enumerate() {
        let text = r.await.unwrap();
        assert_eq!(
            text,
            alone[i % PROMPTS.len()],
            "prompt {} in a batch",
            i % PROMPTS.len()
        );
    }
    let (count, sum) = (
        metric(
            batch_metric_of,
            "distributed_llm_stage_batch_sequences_count",
        )
        .await
            - count0,
        metric(batch_metric_of, "distributed_llm_stage_batch_sequences_sum").await - sum0,
    );
    eprintln!(
        "{} concurrent requests: {count} batches, {:.2} sequences per batch",
        2 * PROMPTS.len(),
        sum / count
    );
    assert!(
        sum / count > 1.5,
        "concurrent requests share batches ({sum} sequence steps in {count} batches)"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn one_agent_batches_concurrent_streams_without_changing_tokens() {
    let model = model();
    let a = Agent::start("serve-1", Ports::new(), &[], &model);
    healthy(&[&a]).await;
    concurrent_equals_alone(&a, &a).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn three_agents_batch_concurrent_streams_without_changing_tokens() {
    let model = model();
    let pa = Ports::new();
    let a = Agent::start("serve-a", pa, &[], &model);
    let b = Agent::start("serve-b", Ports::new(), &[pa.gossip], &model);
    let c = Agent::start("serve-c", Ports::new(), &[pa.gossip], &model);
    wait_for("a 3-stage plan", LIMIT, || async {
        let v = get_json(&a.url("/v1/cluster")).await?;
        let n = v["plan"]["assignments"].as_array()?.len();
        (n == 3).then_some(())
    })
    .await;
    healthy(&[&a, &b, &c]).await;
    // The single-process engine split at the same boundaries gives the same text.
    let v = get_json(&a.url("/v1/cluster")).await.unwrap();
    let split: Vec<(usize, usize)> = v["plan"]["assignments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            (
                x["start"].as_u64().unwrap() as usize,
                x["end"].as_u64().unwrap() as usize,
            )
        })
        .collect();
    let want = reference_split(&model, &split, PROMPTS[0], 24);
    assert_eq!(chat(b.url("/v1/chat/completions"), PROMPTS[0]).await, want);
    concurrent_equals_alone(&b, &c).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_repeated_multi_turn_prompt_hits_the_prefix_cache() {
    let model = model();
    let pa = Ports::new();
    let a = Agent::start("prefix-a", pa, &[], &model);
    let b = Agent::start("prefix-b", Ports::new(), &[pa.gossip], &model);
    wait_for("a 2-stage plan", LIMIT, || async {
        let v = get_json(&a.url("/v1/cluster")).await?;
        (v["plan"]["assignments"].as_array()?.len() == 2).then_some(())
    })
    .await;
    healthy(&[&a, &b]).await;
    let url = a.url("/v1/chat/completions");
    let system = "You are a patient teacher who explains things step by step with examples.";
    let turn =
        |msgs: &Value| json!({"messages": msgs, "max_tokens": 16, "temperature": 0}).to_string();
    let mut msgs = json!([
        {"role": "system", "content": system},
        {"role": "user", "content": "What is a prime number?"}
    ]);
    let r = post_json(&url, &turn(&msgs)).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let v: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["usage"]["prompt_tokens_details"]["cached_tokens"], 0);
    let answer = v["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_string();
    let hits0 = metric(&a, "distributed_llm_prefix_cache_hits_total").await
        + metric(&b, "distributed_llm_prefix_cache_hits_total").await;
    msgs.as_array_mut().unwrap().extend([
        json!({"role": "assistant", "content": answer}),
        json!({"role": "user", "content": "Is 21 one?"}),
    ]);
    let r = post_json(&url, &turn(&msgs)).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let v: Value = serde_json::from_slice(&r.body).unwrap();
    let cached = v["usage"]["prompt_tokens_details"]["cached_tokens"]
        .as_u64()
        .unwrap();
    let prompt = v["usage"]["prompt_tokens"].as_u64().unwrap();
    eprintln!("second turn: {cached} of {prompt} prompt tokens from the prefix cache");
    assert!(cached >= 30 && cached < prompt, "{v}");
    let hits = metric(&a, "distributed_llm_prefix_cache_hits_total").await
        + metric(&b, "distributed_llm_prefix_cache_hits_total").await;
    assert_eq!(hits - hits0, 2.0, "both stages reused the prefix");
    // Reused or not, the answer is the same as the engine's from scratch.
    let fresh = Agent::start("prefix-fresh", Ports::new(), &[], &model);
    healthy(&[&fresh]).await;
    let r2 = post_json(&fresh.url("/v1/chat/completions"), &turn(&msgs))
        .await
        .unwrap();
    let v2: Value = serde_json::from_slice(&r2.body).unwrap();
    assert_eq!(
        v["choices"][0]["message"]["content"],
        v2["choices"][0]["message"]["content"]
    );
}
