//! The Ollama API of one agent: NDJSON streaming, tags/show/ps/version, JSON mode and
//! Ollama-style errors.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};

const MODEL: &str = "SmolLM2-135M-Instruct.Q4_1";

fn parse(r: &agent::httpc::Response) -> Value {
    serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("bad JSON ({e}): {}", r.text()))
}

fn lines(r: &agent::httpc::Response) -> Vec<Value> {
    r.text()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad line ({e}): {l}")))
        .collect()
}

/// The totals Ollama puts on the last line.
fn assert_done(v: &Value) {
    assert_eq!(v["done"], true, "{v}");
    assert!(
        matches!(v["done_reason"].as_str(), Some("stop" | "length")),
        "{v}"
    );
    for k in [
        "total_duration",
        "load_duration",
        "prompt_eval_count",
        "prompt_eval_duration",
        "eval_count",
        "eval_duration",
    ] {
        assert!(v[k].is_u64(), "{k} missing in {v}");
    }
    assert!(v["prompt_eval_count"].as_u64().unwrap() > 0, "{v}");
}

#[tokio::test(flavor = "multi_thread")]
async fn ollama_api_on_one_agent() {
    let model = model();
    let a = Agent::start("ollama", Ports::new(), &[], &model);
    wait_for("agent healthy", Duration::from_secs(60), || async {
        get(&a.url("/health"))
            .await
            .ok()
            .filter(|r| r.status == 200)
    })
    .await;
    let name = format!("{MODEL}:latest");

    // Model listing, details, version, loaded models.
    let tags = get_json(&a.url("/api/tags")).await.unwrap();
    let m = &tags["models"][0];
    assert_eq!(m["name"], name.as_str());
    assert_eq!(
        m["size"].as_u64(),
        Some(std::fs::metadata(&model).unwrap().len())
    );
    assert_eq!(m["digest"].as_str().unwrap().len(), 64);
    assert_eq!(m["details"]["format"], "gguf");
    assert_eq!(m["details"]["family"], "llama");
    assert_eq!(m["details"]["quantization_level"], "Q4_1");
    let show = post_json(&a.url("/api/show"), &json!({"model": name}).to_string())
        .await
        .unwrap();
    assert_eq!(show.status, 200, "{}", show.text());
    let show = parse(&show);
    assert_eq!(show["model_info"]["general.architecture"], "llama");
    assert!(show["model_info"]["llama.context_length"].as_u64().unwrap() > 0);
    assert!(
        show["template"].as_str().unwrap().contains("im_start"),
        "{show}"
    );
    let missing = post_json(&a.url("/api/show"), r#"{"model":"nope"}"#)
        .await
        .unwrap();
    assert_eq!(missing.status, 404);
    assert_eq!(parse(&missing)["error"], "model 'nope' not found");
    let v = get_json(&a.url("/api/version")).await.unwrap();
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
    let ps = get_json(&a.url("/api/ps")).await.unwrap();
    assert_eq!(ps["models"][0]["name"], name.as_str());

    // Chat, streamed by default: NDJSON lines, the last one done with the totals; the
    // same text as the non-streamed answer (greedy).
    let body = |stream: Option<bool>| {
        let mut b = json!({"model": name, "messages": [{"role": "user", "content": "What is the capital of France?"}],
            "options": {"temperature": 0, "num_predict": 12, "num_ctx": 2048}});
        if let Some(s) = stream {
            b["stream"] = json!(s);
        }
        b.to_string()
    };
    let r = post_json(&a.url("/api/chat"), &body(None)).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r
        .header("content-type")
        .unwrap_or("")
        .starts_with("application/x-ndjson"));
    let ls = lines(&r);
    let (last, parts) = ls.split_last().unwrap();
    assert_done(last);
    assert_eq!(last["eval_count"], 12);
    assert_eq!(last["done_reason"], "length");
    assert!(parts
        .iter()
        .all(|l| l["done"] == false && l["message"]["role"] == "assistant"));
    let streamed: String = parts
        .iter()
        .map(|l| l["message"]["content"].as_str().unwrap())
        .collect();
    let r = post_json(&a.url("/api/chat"), &body(Some(false)))
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let whole = parse(&r);
    assert_done(&whole);
    assert_eq!(whole["message"]["content"].as_str().unwrap(), streamed);
    assert!(!streamed.is_empty());

    // Generate: `response` lines; an empty prompt is the "load" call.
    let r = post_json(
        &a.url("/api/generate"),
        &json!({"model": MODEL, "prompt": "Say hi.", "stream": false,
        "options": {"temperature": 0, "num_predict": 8}})
        .to_string(),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let g = parse(&r);
    assert_done(&g);
    assert!(g["response"].is_string());
    let r = post_json(&a.url("/api/generate"), &json!({"model": name}).to_string())
        .await
        .unwrap();
    let l = parse(&r);
    assert_eq!(
        (l["done"].as_bool(), l["done_reason"].as_str()),
        (Some(true), Some("load"))
    );

    // JSON mode: valid JSON when it stopped, else at least an object started.
    let r = post_json(&a.url("/api/chat"), &json!({"model": name, "stream": false, "format": "json",
        "messages": [{"role": "user", "content": "Give a JSON object with the name and age of a person."}],
        "options": {"temperature": 0, "num_predict": 48}}).to_string()).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let j = parse(&r);
    let text = j["message"]["content"].as_str().unwrap();
    match j["done_reason"].as_str() {
        Some("stop") => assert!(
            serde_json::from_str::<Value>(text).unwrap().is_object(),
            "{text}"
        ),
        _ => assert!(text.trim_start().starts_with('{'), "{text}"),
    }

    // Bad input: 400/404 with {"error"}, and the agent still answers.
    for (path, body, status) in [
        (
            "/api/chat",
            json!({"model": "llama3", "messages": [{"role": "user", "content": "hi"}]}),
            404,
        ),
        (
            "/api/chat",
            json!({"messages": [{"role": "user", "content": "hi"}], "options": {"mirostat": 2}}),
            400,
        ),
        (
            "/api/chat",
            json!({"messages": [{"role": "user", "content": "hi", "images": ["aGk="]}]}),
            400,
        ),
        (
            "/api/chat",
            json!({"messages": [{"role": "user", "content": "hi"}], "tools": [{"type": "function"}]}),
            400,
        ),
        (
            "/api/chat",
            json!({"messages": [{"role": "user", "content": "hi"}], "format": "yaml"}),
            400,
        ),
        ("/api/chat", json!({"messages": "hi"}), 400),
        (
            "/api/generate",
            json!({"prompt": "hi", "suffix": "bye"}),
            400,
        ),
        (
            "/api/generate",
            json!({"prompt": "hi", "context": [1, 2, 3]}),
            400,
        ),
        (
            "/api/generate",
            json!({"prompt": "hi", "options": {"temperature": -1}}),
            400,
        ),
    ] {
        let r = post_json(&a.url(path), &body.to_string()).await.unwrap();
        assert_eq!(r.status, status, "{body}: {}", r.text());
        assert!(
            parse(&r)["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{}",
            r.text()
        );
    }
    let r = post_json(&a.url("/api/chat"), &body(Some(false)))
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(parse(&r)["message"]["content"].as_str().unwrap(), streamed);
}
