//! One agent: HTTP + gRPC on one port, OpenAI API, bad input, metrics, reflection.

mod common;

use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const PROMPT: &str = "What is the capital of France?";

async fn ready(a: &Agent) {
    wait_for("agent healthy", Duration::from_secs(60), || async {
        get(&a.url("/health"))
            .await
            .ok()
            .filter(|r| r.status == 200)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn single_agent_serves_http_grpc_and_metrics() {
    let model = model();
    let a = Agent::start("solo", Ports::new(), &[], &model);
    ready(&a).await;

    // OpenAI models and a greedy completion equal to the single-process engine.
    let models = get_json(&a.url("/v1/models")).await.unwrap();
    let id = models["data"][0]["id"].as_str().unwrap().to_string();
    assert_eq!(id, "SmolLM2-135M-Instruct.Q4_1");
    let metrics_before = get(&a.metrics_url()).await.unwrap().text();
    let r = post_json(
        &a.url("/v1/chat/completions"),
        &chat_body(PROMPT, 12, false),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let expected = reference(&model, PROMPT, 12);
    assert_eq!(content(&r), expected);

    // Streaming: SSE chunks whose contents concatenate to the same text, then [DONE].
    let r = post_json(&a.url("/v1/chat/completions"), &chat_body(PROMPT, 12, true))
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert!(r
        .header("content-type")
        .unwrap_or("")
        .starts_with("text/event-stream"));
    let text = r.text();
    let data: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .collect();
    assert_eq!(data.last(), Some(&"[DONE]"));
    let streamed: String = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str::<serde_json::Value>(d).unwrap())
        .filter_map(|v| {
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(String::from)
        })
        .collect();
    assert_eq!(streamed, expected);

    // Metrics parse as Prometheus text and changed after the requests.
    let metrics_after = get(&a.metrics_url()).await.unwrap().text();
    let value = |text: &str, series: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(series))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("series {series} missing"))
    };
    for line in metrics_after
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (series, v) = line.rsplit_once(' ').expect("series and value");
        assert!(series.starts_with("distributed_llm_"), "{line}");
        assert!(v.parse::<f64>().is_ok(), "{line}");
    }
    let ok = "distributed_llm_inference_requests_total{node=\"solo\",status=\"ok\"}";
    assert_eq!(value(&metrics_before, ok), 0.0);
    assert_eq!(value(&metrics_after, ok), 2.0);
    assert!(
        value(
            &metrics_after,
            "distributed_llm_inference_tokens_generated_total"
        ) >= 2.0
    );
    assert_eq!(
        value(&metrics_after, "distributed_llm_cluster_layers_held"),
        30.0
    );

    // `agent healthcheck`: 0 when healthy, 1 when nothing answers.
    let hc = |url: String| {
        std::process::Command::new(env!("CARGO_BIN_EXE_agent"))
            .args(["healthcheck", "--url", &url, "--timeout", "5"])
            .output()
            .unwrap()
            .status
            .code()
    };
    assert_eq!(hc(a.url("/health")), Some(0));
    assert_eq!(
        hc(format!("http://127.0.0.1:{}/health", free_port())),
        Some(1)
    );

    // gRPC on the same port: health and reflection (v1 and v1alpha).
    grpc_checks(a.ports.api).await;
}

async fn grpc_checks(port: u16) {
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;
    let ch = tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{port}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let status = HealthClient::new(ch.clone())
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .status;
    assert_eq!(status, 1, "grpc.health.v1 SERVING");

    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = ServerReflectionClient::new(ch.clone())
        .server_reflection_info(tokio_stream::iter(vec![req]))
        .await
        .unwrap()
        .into_inner();
    let resp = stream.message().await.unwrap().unwrap();
    let names: Vec<String> = match resp.message_response {
        Some(MessageResponse::ListServicesResponse(l)) => {
            l.service.into_iter().map(|s| s.name).collect()
        }
        other => panic!("unexpected reflection answer {other:?}"),
    };
    for n in proto::SERVICE_NAMES.iter().chain(&[
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
    ]) {
        assert!(names.iter().any(|x| x == n), "{n} not listed: {names:?}");
    }

    // v1alpha too (older grpcurl uses it).
    use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient as AlphaClient;
    use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest as AlphaReq;
    use tonic_reflection::pb::v1alpha::ServerReflectionRequest as AlphaRequest;
    let mut alpha = AlphaClient::new(ch.clone())
        .server_reflection_info(tokio_stream::iter(vec![AlphaRequest {
            host: String::new(),
            message_request: Some(AlphaReq::ListServices(String::new())),
        }]))
        .await
        .unwrap()
        .into_inner();
    assert!(alpha.message().await.unwrap().is_some());

    // NodeService and InferenceService answer.
    let info = proto::NodeServiceClient::new(ch.clone())
        .get_node_info(proto::v1::GetNodeInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(info.healthy);
    assert_eq!(info.layers.unwrap().len(), 30);
    let mut gen = proto::InferenceServiceClient::new(ch.clone())
        .generate(proto::v1::GenerateRequest {
            messages: vec![proto::v1::ChatMessage {
                role: "user".into(),
                content: "hi".into(),
                ..Default::default()
            }],
            sampling: Some(proto::v1::SamplingParams {
                temperature: Some(0.0),
                max_tokens: Some(3),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut done = false;
    while let Some(ev) = gen.message().await.unwrap() {
        if let Some(proto::v1::generate_response::Event::Done(f)) = ev.event {
            assert!(f.usage.unwrap().completion_tokens <= 3);
            done = true;
        }
    }
    assert!(done);
    grpc_options(ch.clone()).await;
    let err = match proto::InferenceServiceClient::new(ch)
        .generate(proto::v1::GenerateRequest::default())
        .await
    {
        Ok(_) => panic!("an empty request must be rejected"),
        Err(e) => e,
    };
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
}

/// InferenceService's options: `n` choices with log-probabilities, tools, a bad tool name.
async fn grpc_options(ch: tonic::transport::Channel) {
    use proto::v1::generate_response::Event;
    let mut client = proto::InferenceServiceClient::new(ch);
    let user = |text: &str| proto::v1::ChatMessage {
        role: "user".into(),
        content: text.into(),
        ..Default::default()
    };
    let greedy = |max| {
        Some(proto::v1::SamplingParams {
            temperature: Some(0.0),
            max_tokens: Some(max),
            top_logprobs: Some(2),
            ..Default::default()
        })
    };
    let mut s = client
        .generate(proto::v1::GenerateRequest {
            messages: vec![user("Name a color.")],
            sampling: greedy(4),
            n: 2,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let (mut texts, mut finals) = (vec![String::new(); 2], Vec::new());
    while let Some(ev) = s.message().await.unwrap() {
        match ev.event.unwrap() {
            Event::Token(t) if t.token_id != 0 || t.logprob.is_some() => {
                assert!(t.logprob.unwrap() <= 0.0);
                assert_eq!(t.top_logprobs.len(), 2);
                assert_eq!(
                    t.top_logprobs[0].token_id, t.token_id,
                    "greedy picks the top"
                );
                texts[t.choice as usize].push_str(&t.text);
            }
            Event::Token(t) => texts[t.choice as usize].push_str(&t.text),
            Event::Done(f) => finals.push(f.choice),
        }
    }
    finals.sort_unstable();
    assert_eq!(finals, [0, 1]);
    assert_eq!(texts[0], texts[1], "greedy choices agree");

    let tools = r#"[{"type":"function","function":{"name":"add","parameters":{"type":"object",
        "properties":{"x":{"type":"number"},"y":{"type":"number"}},"required":["x","y"],
        "additionalProperties":false}}}]"#;
    let mut s = client
        .generate(proto::v1::GenerateRequest {
            messages: vec![user("What is 2 plus 3?")],
            sampling: greedy(40),
            tools_json: tools.into(),
            tool_choice: "required".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut call = None;
    while let Some(ev) = s.message().await.unwrap() {
        if let Some(Event::Done(f)) = ev.event {
            assert_eq!(f.finish_reason, "tool_calls");
            call = f.tool_calls.into_iter().next();
        }
    }
    let call = call.expect("a tool call");
    assert_eq!(call.name, "add");
    let args: serde_json::Value = serde_json::from_str(&call.arguments_json).unwrap();
    assert!(args["x"].is_number() && args["y"].is_number(), "{args}");

    let refused = client
        .generate(proto::v1::GenerateRequest {
            messages: vec![user("hi")],
            tools_json: tools.into(),
            tool_choice: "mul".into(),
            ..Default::default()
        })
        .await;
    let Err(err) = refused else {
        panic!("an unknown tool is refused")
    };
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("'mul'"), "{}", err.message());
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_gets_clear_errors_and_the_agent_stays_up() {
    let model = model();
    let a = Agent::start("bad", Ports::new(), &[], &model);
    ready(&a).await;
    let url = a.url("/v1/chat/completions");
    let cases: Vec<(&str, String, u16, &str)> = vec![
        (
            "unknown model",
            r#"{"model":"gpt-4","messages":[{"role":"user","content":"hi"}]}"#.into(),
            404,
            "does not exist",
        ),
        (
            "empty messages",
            r#"{"messages":[]}"#.into(),
            400,
            "messages",
        ),
        (
            "max_tokens 0",
            r#"{"messages":[{"role":"user","content":"hi"}],"max_tokens":0}"#.into(),
            400,
            "max_tokens",
        ),
        (
            "max_tokens huge",
            r#"{"messages":[{"role":"user","content":"hi"}],"max_tokens":99999999}"#.into(),
            400,
            "max_tokens",
        ),
        ("malformed JSON", "{not json".into(), 400, "JSON"),
        (
            "missing messages",
            r#"{"model":"x"}"#.into(),
            400,
            "messages",
        ),
    ];
    for (what, body, code, needle) in cases {
        let r = post_json(&url, &body).await.unwrap();
        assert_eq!(r.status, code, "{what}: {}", r.text());
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        let msg = v["error"]["message"].as_str().unwrap_or_default();
        assert!(msg.contains(needle), "{what}: {msg}");
    }
    let r = agent::httpc::request(
        "POST",
        &url,
        &[("Content-Type", "text/plain")],
        chat_body("hi", 2, false).as_bytes(),
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    // The body is read as JSON whatever its content type (as llama-server; `curl -d`).
    assert_eq!(r.status, 200, "{}", r.text());

    // A client that disconnects mid-stream.
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", a.ports.api))
        .await
        .unwrap();
    let body = chat_body("Tell me a long story about dragons.", 400, true);
    let req = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 2048];
    let n = s.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    drop(s);

    // The agent is still up, records the cancellation and serves the next request.
    let r = post_json(&url, &chat_body("hi", 4, false)).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    wait_for(
        "cancelled request counted",
        Duration::from_secs(30),
        || async {
            let m = get(&a.metrics_url()).await.ok()?.text();
            m.contains(
                "distributed_llm_inference_requests_total{node=\"bad\",status=\"cancelled\"} 1",
            )
            .then_some(())
        },
    )
    .await;
    let m = get(&a.metrics_url()).await.unwrap().text();
    assert!(m.contains("status=\"rejected\"} 6"), "{m}");
    assert!(m.contains("distributed_llm_inference_active_requests{node=\"bad\"} 0"));
}

#[tokio::test(flavor = "multi_thread")]
async fn model_that_does_not_fit_gives_503_with_the_reason() {
    let model = model();
    let a = Agent::start_with(
        "tiny",
        Ports::new(),
        &[],
        &model,
        &["--memory-limit", "1000"],
    );
    let health = wait_for(
        "an answer from /health",
        Duration::from_secs(60),
        || async { get(&a.url("/health")).await.ok() },
    )
    .await;
    assert_eq!(health.status, 503);
    let r = wait_for("a plan error", Duration::from_secs(30), || async {
        let r = post_json(&a.url("/v1/chat/completions"), &chat_body("hi", 2, false))
            .await
            .ok()?;
        r.text().contains("does not fit").then_some(r)
    })
    .await;
    assert_eq!(r.status, 503, "{}", r.text());
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("no placement plan"));
    // Still up and answering.
    assert_eq!(get(&a.url("/v1/models")).await.unwrap().status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn requests_beyond_the_limit_get_429() {
    let model = model();
    let a = Agent::start_with(
        "busy",
        Ports::new(),
        &[],
        &model,
        &["--max-requests", "1", "--max-queue", "0"],
    );
    ready(&a).await;
    // Hold one long streaming request open (read its first bytes only).
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", a.ports.api))
        .await
        .unwrap();
    let body = chat_body("Tell me a long story about dragons.", 2000, true);
    let req = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 512];
    let n = s.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let r = post_json(&a.url("/v1/chat/completions"), &chat_body("hi", 2, false))
        .await
        .unwrap();
    assert_eq!(r.status, 429, "{}", r.text());
    assert!(r.text().contains("limit 1"));
    assert_eq!(r.header("retry-after"), Some("1"));
    drop(s);
    // Once the first one is cancelled, requests are served again.
    wait_for(
        "a served request after the cancel",
        Duration::from_secs(60),
        || async {
            let r = post_json(&a.url("/v1/chat/completions"), &chat_body("hi", 2, false))
                .await
                .ok()?;
            (r.status == 200).then_some(())
        },
    )
    .await;
}
