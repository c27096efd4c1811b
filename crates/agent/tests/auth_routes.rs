//! `--api-key` is deny by default: every route the router knows (walked from its own
//! route table, so a route added later cannot be missed) and every gRPC method (walked
//! from the proto's descriptor set) refuses a request without the key or with a wrong
//! one, over plain HTTP and over TLS; only `/health`, gRPC health and reflection are
//! open. Also CORS (`--cors-origins`): preflights answered without a key, headers on
//! every answer, nothing for other origins.

mod common;

use std::time::Duration;

use common::*;
use prost::Message;

const LIMIT: Duration = Duration::from_secs(90);
const KEY: &str = "k3y";

/// A path of the route table with its parameters filled in.
fn concrete(path: &str) -> String {
    path.replace("{id}", "resp_missing")
}

/// Walks every route with no key, a wrong key and the key; gives the failures.
async fn walk_http(client: &reqwest::Client, base: &str) -> Vec<String> {
    let mut failures = Vec::new();
    let routes = agent::api::http::route_list();
    assert!(routes.len() >= 17, "the route table: {routes:?}");
    for (method, path) in routes {
        let url = format!("{base}{}", concrete(path));
        for key in [None, Some("wrong"), Some(KEY)] {
            let mut req = client.request(method.parse().unwrap(), &url);
            if let Some(k) = key {
                req = req.bearer_auth(k);
            }
            if method == "POST" {
                req = req.header("content-type", "application/json").body("{}");
            }
            let status = match req.send().await {
                Ok(r) => r.status().as_u16(),
                Err(e) => {
                    failures.push(format!("{method} {path} key={key:?}: {e}"));
                    continue;
                }
            };
            let public = path == "/health";
            let ok = match (public, key) {
                (true, _) => status == 200 || status == 503,
                (false, Some(KEY)) => status != 401 && status != 403,
                (false, _) => status == 401,
            };
            if !ok {
                failures.push(format!("{method} {path} key={key:?}: {status}"));
            }
        }
    }
    // A path no route has, and one added later: the key is asked first.
    for path in ["/no/such/route", "/api/pull"] {
        let r = client.get(format!("{base}{path}")).send().await.unwrap();
        if r.status() != 401 {
            failures.push(format!("GET {path} without a key: {}", r.status()));
        }
    }
    failures
}

/// Every gRPC method of the project's services as `/package.Service/Method`.
fn grpc_methods() -> Vec<String> {
    let fds = prost_types::FileDescriptorSet::decode(proto::FILE_DESCRIPTOR_SET).unwrap();
    let mut out = Vec::new();
    for f in &fds.file {
        for s in &f.service {
            for m in &s.method {
                out.push(format!("/{}.{}/{}", f.package(), s.name(), m.name()));
            }
        }
    }
    out
}

/// One call of `path` with an empty message (any proto3 request decodes from it): the
/// status it ends with, `Ok` when the server started answering.
async fn grpc_call(port: u16, path: &str, key: Option<&str>) -> tonic::Code {
    let channel = tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{port}"))
        .unwrap()
        .timeout(Duration::from_secs(20))
        .connect()
        .await
        .expect("gRPC connect");
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let mut req = tonic::Request::new(());
    if let Some(k) = key {
        req.metadata_mut()
            .insert("authorization", format!("Bearer {k}").parse().unwrap());
    }
    let codec = tonic_prost::ProstCodec::<(), ()>::default();
    let path = path.parse().unwrap();
    match grpc.server_streaming(req, path, codec).await {
        Ok(_) => tonic::Code::Ok,
        Err(s) => s.code(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn api_key_guards_every_route_and_grpc_method() {
    let model = model();
    let a = Agent::start_with(
        "auth-walk",
        Ports::new(),
        &[],
        &model,
        &["--api-key", KEY, "--cors-origins", "https://chat.example"],
    );
    wait_for("the agent to answer /health", LIMIT, || async {
        get(&a.url("/health")).await.ok().map(|_| ())
    })
    .await;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let failures = walk_http(&client, &format!("http://127.0.0.1:{}", a.ports.api)).await;
    assert!(failures.is_empty(), "over HTTP:\n{}", failures.join("\n"));

    // Ollama clients send the key as a bearer token too: a real generation with it.
    let r = client
        .post(a.url("/api/generate"))
        .bearer_auth(KEY)
        .body(r#"{"prompt": "Say hi.", "stream": false, "options": {"num_predict": 2}}"#)
        .send()
        .await
        .unwrap();
    let status = r.status();
    let text = r.text().await.unwrap();
    assert!(status == 200 || status == 503, "{status}: {text}");

    let methods = grpc_methods();
    assert!(methods.len() >= 7, "{methods:?}");
    let mut failures = Vec::new();
    for m in &methods {
        if m.starts_with("/distributed_llm.v1.PipelineService/") {
            continue; // the cluster token's (security.rs tests it)
        }
        for key in [None, Some("wrong")] {
            let c = grpc_call(a.ports.api, m, key).await;
            if c != tonic::Code::Unauthenticated {
                failures.push(format!("{m} key={key:?}: {c:?}"));
            }
        }
        let c = grpc_call(a.ports.api, m, Some(KEY)).await;
        if c == tonic::Code::Unauthenticated {
            failures.push(format!("{m} with the key: {c:?}"));
        }
    }
    // Health and reflection stay open.
    for m in [
        "/grpc.health.v1.Health/Check",
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    ] {
        let c = grpc_call(a.ports.api, m, None).await;
        if c == tonic::Code::Unauthenticated {
            failures.push(format!("{m} (public) without a key: {c:?}"));
        }
    }
    assert!(failures.is_empty(), "over gRPC:\n{}", failures.join("\n"));

    // CORS: the preflight is answered without the key, the answer carries the headers,
    // another origin gets none.
    let pre = client
        .request(reqwest::Method::OPTIONS, a.url("/v1/chat/completions"))
        .header("origin", "https://chat.example")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization,content-type",
        )
        .send()
        .await
        .unwrap();
    assert!(pre.status().is_success(), "preflight: {}", pre.status());
    let h = pre.headers();
    assert_eq!(h["access-control-allow-origin"], "https://chat.example");
    assert!(h.contains_key("access-control-allow-methods"), "{h:?}");
    let r = client
        .get(a.url("/v1/models"))
        .header("origin", "https://chat.example")
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        "https://chat.example"
    );
    let other = client
        .get(a.url("/v1/models"))
        .header("origin", "https://evil.example")
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert!(!other.headers().contains_key("access-control-allow-origin"));
}

#[tokio::test(flavor = "multi_thread")]
async fn api_key_guards_every_route_over_tls() {
    let model = model();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, pem) = self_signed(dir.path());
    let a = Agent::start_with(
        "auth-walk-tls",
        Ports::new(),
        &[],
        &model,
        &[
            "--api-key",
            KEY,
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    );
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(pem.as_bytes()).unwrap())
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let base = format!("https://localhost:{}", a.ports.api);
    wait_for("the agent to answer /health over TLS", LIMIT, || async {
        client
            .get(format!("{base}/health"))
            .send()
            .await
            .ok()
            .map(|_| ())
    })
    .await;
    let failures = walk_http(&client, &base).await;
    assert!(failures.is_empty(), "over TLS:\n{}", failures.join("\n"));
}

#[tokio::test(flavor = "multi_thread")]
async fn without_cors_origins_no_cors_headers() {
    let model = model();
    let a = Agent::start("no-cors", Ports::new(), &[], &model);
    wait_for("the agent to answer /health", LIMIT, || async {
        get(&a.url("/health")).await.ok().map(|_| ())
    })
    .await;
    let r = reqwest::Client::new()
        .get(a.url("/v1/models"))
        .header("origin", "https://chat.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(!r.headers().contains_key("access-control-allow-origin"));
}
