//! Every model family on a cluster: three agents (separate processes on 127.0.0.1) serve
//! the tiny fixture of each family of `scripts/fixtures.sh` (llama 3 with an untied head,
//! llama with Mixtral-style experts, qwen2, qwen3, qwen3moe, gemma2, gemma3, phi3) through
//! the HTTP API, and the greedy answer equals the single-process engine's, split or not.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::*;
use serde_json::Value;

const PROMPT: &str = "Tell me a short story about a robot who learns to paint.";
const MAX: u32 = 24;
const LIMIT: Duration = Duration::from_secs(120);

/// The fixture `{label}-tiny-*.Q8_0.gguf`, made by scripts/fixtures.sh (cached); panics
/// when the script fails or the file is missing.
fn fixture(label: &str) -> PathBuf {
    let dir = testkit::llama_fixtures();
    let prefix = format!("{label}-tiny-");
    std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .find(|p| {
            let n = p.file_name().unwrap().to_string_lossy();
            n.starts_with(&prefix) && n.ends_with(".Q8_0.gguf")
        })
        .unwrap_or_else(|| panic!("no {prefix}*.Q8_0.gguf in {}", dir.display()))
}

/// The plan's `(start, end)` slices once every agent is healthy and all agree on one
/// complete plan over all of them.
async fn converge(agents: &[&Agent]) -> Vec<(usize, usize)> {
    wait_for("the agents to agree on a plan", LIMIT, || async {
        let mut plans = Vec::new();
        for a in agents {
            if get(&a.url("/health")).await.ok()?.status != 200 {
                return None;
            }
            let v = get_json(&a.url("/v1/cluster")).await?;
            let plan = &v["plan"];
            let slices: Vec<(usize, usize)> = plan["assignments"]
                .as_array()?
                .iter()
                .map(|s| {
                    (
                        s["start"].as_u64().unwrap_or(0) as usize,
                        s["end"].as_u64().unwrap_or(0) as usize,
                    )
                })
                .collect();
            if plan["complete"] != Value::Bool(true) || slices.len() != agents.len() {
                return None;
            }
            plans.push(slices);
        }
        plans
            .windows(2)
            .all(|w| w[0] == w[1])
            .then(|| plans[0].clone())
    })
    .await
}

/// The greedy answer and its token count through agent `a` (retried while it settles).
async fn chat(a: &Agent) -> (String, u64) {
    let body = chat_body(PROMPT, MAX, false);
    let r = wait_for("a served chat request", LIMIT, || async {
        let r = post_json(&a.url("/v1/chat/completions"), &body)
            .await
            .ok()?;
        (r.status != 503).then_some(r)
    })
    .await;
    assert_eq!(r.status, 200, "{} via {}", r.text(), a.id);
    let v: Value = serde_json::from_slice(&r.body).unwrap();
    (
        content(&r),
        v["usage"]["completion_tokens"].as_u64().unwrap_or(0),
    )
}

/// Three agents serve the `label` fixture: they agree on a 3-way plan over all layers, the
/// split engine equals the whole one, and each agent as entry answers with those tokens.
async fn three_agents_serve(label: &str) {
    let model = fixture(label);
    let info = engine::ModelInfo::read(&model).unwrap();
    let (p1, p2, p3) = (Ports::new(), Ports::new(), Ports::new());
    let a1 = Agent::start("agent-1", p1, &[], &model);
    let a2 = Agent::start("agent-2", p2, &[p1.gossip], &model);
    let a3 = Agent::start("agent-3", p3, &[p1.gossip], &model);
    let split = converge(&[&a1, &a2, &a3]).await;
    assert_eq!(split.first().map(|s| s.0), Some(0));
    assert_eq!(split.last().map(|s| s.1), Some(info.n_layers), "{split:?}");

    let expected = reference_split(&model, &split, PROMPT, MAX as usize);
    let whole = reference_split(&model, &[(0, info.n_layers)], PROMPT, MAX as usize);
    assert_eq!(
        expected, whole,
        "{label}: the split engine differs from the whole"
    );
    assert!(!expected.is_empty(), "{label}: empty answer");
    for a in [&a1, &a2, &a3] {
        let (text, n) = chat(a).await;
        assert_eq!(text, expected, "{label} entered at {}", a.id);
        assert!(n > 0 && n <= MAX as u64, "{label}: {n} tokens");
    }
    println!(
        "{label} on 3 agents {split:?}: {} chars, as the single-process engine",
        expected.len()
    );
}

macro_rules! family_tests {
    ($($name:ident => $label:literal),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread")]
        async fn $name() {
            three_agents_serve($label).await;
        }
    )*};
}

family_tests! {
    three_agents_serve_llama3_untied => "llama3-untied",
    three_agents_serve_llama_moe => "llama-moe",
    three_agents_serve_qwen2 => "qwen2",
    three_agents_serve_qwen3 => "qwen3",
    three_agents_serve_qwen3moe => "qwen3moe",
    three_agents_serve_gemma2 => "gemma2",
    three_agents_serve_gemma3 => "gemma3",
    three_agents_serve_phi3 => "phi3",
}
