//! Three agents as separate processes on 127.0.0.1: gossip, placement, distributed
//! greedy generation equal to the single-process engine, failure and rejoin.

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;

const PROMPT: &str = "Name three colors.";
const MAX: u32 = 16;
const LIMIT: Duration = Duration::from_secs(90);

/// The plan as `(node, start, end)` when `a` sees `n` alive members, a complete plan
/// over exactly those `n` nodes and is healthy.
async fn settled(a: &Agent, n: usize) -> Option<(u64, Vec<(String, u64, u64)>)> {
    let health = get(&a.url("/health")).await.ok()?;
    if health.status != 200 {
        return None;
    }
    let v = get_json(&a.url("/v1/cluster")).await?;
    let alive = v["members"]
        .as_array()?
        .iter()
        .filter(|m| m["state"] == "alive")
        .count();
    let plan = &v["plan"];
    if alive != n || plan["complete"] != Value::Bool(true) {
        return None;
    }
    let slices: Vec<(String, u64, u64)> = plan["assignments"]
        .as_array()?
        .iter()
        .map(|s| {
            (
                s["node_id"].as_str().unwrap_or_default().to_string(),
                s["start"].as_u64().unwrap_or(0),
                s["end"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    (slices.len() == n).then(|| (plan["version"].as_u64().unwrap_or(0), slices))
}

fn assert_tiles(slices: &[(String, u64, u64)], n_layers: u64) {
    let mut at = 0;
    for (node, s, e) in slices {
        assert_eq!(*s, at, "gap or overlap before {node}: {slices:?}");
        assert!(e > s, "empty slice for {node}");
        at = *e;
    }
    assert_eq!(
        at, n_layers,
        "plan does not end at the last layer: {slices:?}"
    );
}

/// Wait until all agents agree on one settled plan over `agents.len()` nodes.
async fn converge(agents: &[&Agent]) -> Vec<(String, u64, u64)> {
    wait_for("the agents to agree on a plan", LIMIT, || async {
        let mut plans = Vec::new();
        for a in agents {
            plans.push(settled(a, agents.len()).await?);
        }
        plans
            .windows(2)
            .all(|w| w[0] == w[1])
            .then(|| plans[0].1.clone())
    })
    .await
}

/// Greedy chat through `a`, retried while the cluster is still settling (503).
async fn chat(a: &Agent) -> String {
    let body = chat_body(PROMPT, MAX, false);
    let r = wait_for("a served chat request", LIMIT, || async {
        let r = post_json(&a.url("/v1/chat/completions"), &body)
            .await
            .ok()?;
        (r.status != 503).then_some(r)
    })
    .await;
    assert_eq!(r.status, 200, "{} via {}", r.text(), a.id);
    content(&r)
}

/// The single-process engine's answer with the plan's layer boundaries.
fn expect(model: &std::path::Path, slices: &[(String, u64, u64)]) -> String {
    let split: Vec<(usize, usize)> = slices
        .iter()
        .map(|s| (s.1 as usize, s.2 as usize))
        .collect();
    let text = reference_split(model, &split, PROMPT, MAX as usize);
    assert!(!text.is_empty());
    text
}

#[tokio::test(flavor = "multi_thread")]
async fn three_agents_plan_generate_fail_and_rejoin() {
    let model = model();

    let (p1, p2, p3) = (Ports::new(), Ports::new(), Ports::new());
    let a1 = Agent::start("agent-1", p1, &[], &model);
    let a2 = Agent::start("agent-2", p2, &[p1.gossip], &model);
    let mut a3 = Agent::start("agent-3", p3, &[p1.gossip], &model);

    // All three see each other and agree on a plan that tiles the 30 layers.
    let slices = converge(&[&a1, &a2, &a3]).await;
    assert_tiles(&slices, 30);
    let mut nodes: Vec<&str> = slices.iter().map(|s| s.0.as_str()).collect();
    nodes.sort_unstable();
    assert_eq!(nodes, ["agent-1", "agent-2", "agent-3"]);

    // A request entering at any agent gives the single-process greedy tokens.
    let expected = expect(&model, &slices);
    for a in [&a1, &a2, &a3] {
        assert_eq!(chat(a).await, expected, "entered at {}", a.id);
    }
    // Concurrent requests, one entering at each agent, are in different stages at
    // once and still give the same tokens.
    let (r1, r2, r3) = tokio::join!(chat(&a1), chat(&a2), chat(&a3));
    assert_eq!(
        [r1, r2, r3],
        [expected.clone(), expected.clone(), expected.clone()]
    );
    // Streaming through the pipeline too.
    let r = post_json(
        &a2.url("/v1/chat/completions"),
        &chat_body(PROMPT, MAX, true),
    )
    .await
    .unwrap();
    assert!(
        r.text().trim_end().ends_with("data: [DONE]"),
        "{}",
        r.text()
    );

    // Pipeline traffic shows in the metrics, per peer.
    let m = get(&a1.metrics_url()).await.unwrap().text();
    assert!(
        m.contains("distributed_llm_hop_latency_seconds_count{node=\"agent-1\",peer="),
        "{m}"
    );
    assert!(m.contains("distributed_llm_cluster_members{node=\"agent-1\",state=\"alive\"} 3"));

    // Stop agent-3: the others mark it dead, re-plan over two, reload, serve.
    a3.kill();
    let slices = converge(&[&a1, &a2]).await;
    assert_tiles(&slices, 30);
    assert!(slices.iter().all(|s| s.0 != "agent-3"));
    let expected = expect(&model, &slices);
    let v = get_json(&a1.url("/v1/cluster")).await.unwrap();
    let dead = v["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["node_id"] == "agent-3")
        .map(|m| m["state"].clone());
    assert_eq!(dead, Some(Value::from("dead")), "{v}");
    for a in [&a1, &a2] {
        assert_eq!(
            chat(a).await,
            expected,
            "after failure, entered at {}",
            a.id
        );
    }

    // Restart it: it rejoins and gets layers again.
    let a3 = Agent::start("agent-3", p3, &[p1.gossip], &model);
    let slices = converge(&[&a1, &a2, &a3]).await;
    assert_tiles(&slices, 30);
    assert!(slices.iter().any(|s| s.0 == "agent-3"));
    let expected = expect(&model, &slices);
    assert_eq!(
        chat(&a3).await,
        expected,
        "after rejoin, entered at agent-3"
    );
    assert_eq!(
        chat(&a1).await,
        expected,
        "after rejoin, entered at agent-1"
    );
}
