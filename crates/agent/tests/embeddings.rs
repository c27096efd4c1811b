//! `POST /v1/embeddings` on 127.0.0.1: one agent and a 3-agent pipeline give bit-identical
//! unit vectors; same text, same vector; batches keep their order; token ids equal their
//! text; base64 equals float; bad requests are 400 and leave the agent serving.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};

const LIMIT: Duration = Duration::from_secs(180);

const TEXTS: [&str; 3] = [
    "The lighthouse keeper watched the storm roll in.",
    "Quarterly revenue grew by twelve percent.",
    "A recipe for bread: flour, water, salt and yeast.",
];

async fn embed(a: &Agent, body: Value) -> (u16, Value) {
    let r = post_json(&a.url("/v1/embeddings"), &body.to_string())
        .await
        .expect("embeddings request");
    let v: Value =
        serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("bad JSON ({e}): {}", r.text()));
    (r.status, v)
}

/// The vectors of a successful response, in `index` order (checked).
fn vectors(v: &Value) -> Vec<Vec<f32>> {
    assert_eq!(v["object"], "list", "{v}");
    let data = v["data"]
        .as_array()
        .unwrap_or_else(|| panic!("no data: {v}"));
    data.iter()
        .enumerate()
        .map(|(i, d)| {
            assert_eq!(d["object"], "embedding");
            assert_eq!(d["index"], i);
            d["embedding"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
                .collect()
        })
        .collect()
}

async fn embed_ok(a: &Agent, input: Value) -> Vec<Vec<f32>> {
    let (status, v) = embed(a, json!({ "input": input })).await;
    assert_eq!(status, 200, "{v}");
    vectors(&v)
}

fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c}"),
    };
    let mut out = Vec::new();
    for q in s.as_bytes().chunks(4) {
        let pad = q.iter().filter(|c| **c == b'=').count();
        let n = q
            .iter()
            .map(|c| if *c == b'=' { 0 } else { val(*c) as u32 })
            .fold(0u32, |n, v| n << 6 | v);
        out.extend_from_slice(&n.to_be_bytes()[1..4 - pad]);
    }
    out
}

fn norm(v: &[f32]) -> f64 {
    v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt()
}

/// Serves embeddings: waits until `a` answers one.
async fn ready(a: &Agent) {
    wait_for(&format!("{} to serve embeddings", a.id), LIMIT, || async {
        let r = post_json(
            &a.url("/v1/embeddings"),
            &json!({"input": "hi"}).to_string(),
        )
        .await
        .ok()?;
        (r.status == 200).then_some(())
    })
    .await;
}

/// Everything one entry agent must get right; returns the vectors of TEXTS.
async fn check(
    a: &Agent,
    model_id: &str,
    tokens0: &[u32],
    ctx: usize,
    width: usize,
) -> Vec<Vec<f32>> {
    // One at a time, then as one batch: the same vectors, in order.
    let mut alone = Vec::new();
    for t in TEXTS {
        let v = embed_ok(a, json!(t)).await;
        assert_eq!(v.len(), 1);
        alone.push(v[0].clone());
    }
    for v in &alone {
        assert_eq!(v.len(), width);
        assert!((norm(v) - 1.0).abs() < 1e-4, "norm {}", norm(v));
    }
    assert_ne!(alone[0], alone[1], "different texts, different vectors");
    let batch = embed_ok(a, json!(TEXTS)).await;
    assert_eq!(batch, alone, "a batch gives each input's vector, in order");
    // More inputs than the admission line holds by default (32 running, 32 waiting).
    let many = embed_ok(a, json!(vec![TEXTS[2]; 100])).await;
    assert_eq!(many.len(), 100);
    assert!(many.iter().all(|v| *v == alone[2]));
    assert_eq!(
        embed_ok(a, json!(TEXTS[0])).await[0],
        alone[0],
        "same text, same vector"
    );

    // Token ids (the text's own tokens, BOS included as the model wants) equal the text.
    assert_eq!(embed_ok(a, json!(tokens0)).await[0], alone[0]);
    assert_eq!(
        embed_ok(a, json!([tokens0, tokens0])).await,
        vec![alone[0].clone(), alone[0].clone()]
    );

    // base64: little-endian f32 of the same vector; model named; usage counted.
    let (status, v) = embed(
        a,
        json!({"input": [TEXTS[0]], "model": model_id, "encoding_format": "base64",
               "dimensions": width, "user": "tester"}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["model"], model_id);
    assert_eq!(v["usage"]["prompt_tokens"], tokens0.len());
    assert_eq!(v["usage"]["total_tokens"], tokens0.len());
    let bytes = base64_decode(v["data"][0]["embedding"].as_str().unwrap());
    let decoded: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    assert_eq!(decoded, alone[0]);

    // Bad requests: 400 in OpenAI's format, and the agent still answers.
    let long: Vec<u32> = vec![tokens0[1]; ctx + 1];
    for (body, says) in [
        (json!({"input": []}), "empty"),
        (json!({"input": [""]}), "empty"),
        (json!({"input": long}), "context"),
        (json!({"input": "x", "dimensions": 3}), "dimensions"),
        (
            json!({"input": "x", "encoding_format": "int8"}),
            "encoding_format",
        ),
        (json!({"input": vec!["x"; 257]}), "256"),
        (json!({"input": [[1, 2], "x"]}), "input"),
    ] {
        let (status, v) = embed(a, body.clone()).await;
        assert_eq!(status, 400, "{body}: {v}");
        let msg = v["error"]["message"].as_str().unwrap_or_default();
        assert!(msg.contains(says), "{body}: {msg}");
        assert_eq!(v["error"]["type"], "invalid_request_error");
    }
    // An unknown model: OpenAI's 404 model_not_found.
    let (status, v) = embed(a, json!({"input": "x", "model": "no-such-model"})).await;
    assert_eq!(status, 404, "{v}");
    assert_eq!(v["error"]["code"], "model_not_found");
    assert_eq!(embed_ok(a, json!(TEXTS[0])).await[0], alone[0]);
    alone
}

#[tokio::test(flavor = "multi_thread")]
async fn one_agent_and_a_pipeline_give_the_same_embeddings() {
    let model = model();
    let info = engine::ModelInfo::read(&model).unwrap();
    let tokenizer = engine::Tokenizer::from_gguf(&model).unwrap();
    let tokens0 = tokenizer.tokenize(TEXTS[0], true, false).unwrap();
    let model_id = model.file_stem().unwrap().to_str().unwrap().to_string();

    let one = Agent::start("emb-1", Ports::new(), &[], &model);
    ready(&one).await;
    let want = check(
        &one,
        &model_id,
        &tokens0,
        info.context_length,
        info.hidden_size,
    )
    .await;
    drop(one);

    let pa = Ports::new();
    let a = Agent::start("emb-a", pa, &[], &model);
    let b = Agent::start("emb-b", Ports::new(), &[pa.gossip], &model);
    let c = Agent::start("emb-c", Ports::new(), &[pa.gossip], &model);
    wait_for("a 3-stage plan", LIMIT, || async {
        let v = get_json(&a.url("/v1/cluster")).await?;
        let n = v["plan"]["assignments"].as_array()?.len();
        (n == 3).then_some(())
    })
    .await;
    for x in [&a, &b, &c] {
        ready(x).await;
    }
    // Through the 3-stage pipeline, entered at a middle agent: bit-identical vectors
    // (hidden states cross the links as f32; each sequence's rows do not depend on
    // what else is in a batch).
    let got = check(
        &b,
        &model_id,
        &tokens0,
        info.context_length,
        info.hidden_size,
    )
    .await;
    assert_eq!(
        got, want,
        "the pipeline's embeddings differ from one agent's"
    );
    assert_eq!(embed_ok(&c, json!(TEXTS)).await, want);

    // Each input counted as a request.
    let text = get(&b.metrics_url()).await.unwrap().text();
    let ok: f64 = text
        .lines()
        .filter(|l| {
            l.starts_with("distributed_llm_inference_requests_total{")
                && l.contains("status=\"ok\"")
        })
        .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
        .sum();
    assert!(ok >= 10.0, "{ok} requests counted ok");
}
