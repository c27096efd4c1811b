//! The production setup on 127.0.0.1: two agents with a cluster secret, an API key
//! and TLS (self-signed certificate made here). Clients use HTTPS; the agents still
//! pipeline to each other; plaintext reaches only /health and PipelineService.

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(90);

#[tokio::test(flavor = "multi_thread")]
async fn two_agents_with_tls_secret_and_key_serve_https() {
    let model = model();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, pem) = self_signed(dir.path());
    let (c, k) = (cert.to_str().unwrap(), key.to_str().unwrap());
    let flags = [
        "--cluster-secret",
        "s3cret",
        "--api-key",
        "k3y",
        "--tls-cert",
        c,
        "--tls-key",
        k,
    ];
    let pa = Ports::new();
    let a = Agent::start_with("tls-a", pa, &[], &model, &flags);
    let b = Agent::start_with("tls-b", Ports::new(), &[pa.gossip], &model, &flags);

    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(pem.as_bytes()).unwrap())
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let https = |x: &Agent, p: &str| format!("https://localhost:{}{p}", x.ports.api);

    // Both agents in one plan, seen over HTTPS with the key.
    wait_for("a two-agent plan over HTTPS", LIMIT, || async {
        let r = client
            .get(https(&a, "/v1/cluster"))
            .bearer_auth("k3y")
            .send()
            .await
            .ok()?;
        let v: Value = r.json().await.ok()?;
        let n = v["plan"]["assignments"].as_array()?.len();
        (n == 2 && v["plan"]["complete"] == Value::Bool(true)).then_some(())
    })
    .await;
    let body = chat_body("Say hi.", 4, false);
    let r = wait_for("a chat over HTTPS", LIMIT, || async {
        let r = client
            .post(https(&b, "/v1/chat/completions"))
            .bearer_auth("k3y")
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .ok()?;
        (r.status() != 503).then_some(r)
    })
    .await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert!(
        v["choices"][0]["message"]["content"].as_str().is_some(),
        "{v}"
    );

    // HTTPS without the key: 401 JSON.
    let r = client.get(https(&a, "/v1/models")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    // Plaintext: /health still answers (health checks), the API refuses.
    // (503 is a real answer too: the agent may be reloading layers after a re-plan.)
    let h = get(&a.url("/health")).await.unwrap();
    assert!(h.status == 200 || h.status == 503, "{}", h.text());
    assert!(h.text().contains("\"status\""), "{}", h.text());
    let r = get(&a.url("/v1/models")).await.unwrap();
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("TLS"), "{}", r.text());
    // A client that does not trust the certificate cannot connect.
    let untrusting = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    assert!(untrusting.get(https(&a, "/health")).send().await.is_err());
}
