//! Security on 127.0.0.1: cluster secret (gossip + pipeline), API key (HTTP + gRPC).
//! Agents are real processes; waits are bounded.

mod common;

use std::time::Duration;

use common::*;
use proto::v1::{link_msg, GetNodeInfoRequest, LinkFrame, LinkHello, LinkMsg};
use proto::{NodeServiceClient, PipelineServiceClient};
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(90);

async fn channel(port: u16) -> tonic::transport::Channel {
    tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{port}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(20))
        .connect_lazy()
}

/// Node ids `a` lists in /v1/cluster (any state), with `key` if given.
async fn members(a: &Agent, key: Option<&str>) -> Option<Vec<String>> {
    let auth = key.map(|k| format!("Bearer {k}"));
    let headers: Vec<(&str, &str)> = auth.iter().map(|v| ("Authorization", v.as_str())).collect();
    let r = agent::httpc::request("GET", &a.url("/v1/cluster"), &headers, b"", LIMIT)
        .await
        .ok()?;
    let v: Value = serde_json::from_slice(&r.body).ok()?;
    Some(
        v["members"]
            .as_array()?
            .iter()
            .filter_map(|m| m["node_id"].as_str().map(str::to_string))
            .collect(),
    )
}

/// A pipeline Link as a stranger would open it (`token`: its x-cluster-token): a hello
/// and a ping.
async fn link_as(port: u16, token: Option<&str>) -> tonic::Status {
    let frames = vec![
        LinkFrame {
            msgs: vec![LinkMsg {
                msg: Some(link_msg::Msg::Hello(LinkHello {
                    node_id: "intruder".into(),
                    ..Default::default()
                })),
            }],
        },
        LinkFrame {
            msgs: vec![LinkMsg {
                msg: Some(link_msg::Msg::Ping(1)),
            }],
        },
    ];
    let mut req = tonic::Request::new(tokio_stream::iter(frames));
    if let Some(t) = token {
        req.metadata_mut()
            .insert(agent::security::CLUSTER_TOKEN_HEADER, t.parse().unwrap());
    }
    let mut client = PipelineServiceClient::new(channel(port).await);
    match client.link(req).await {
        Err(s) => s,
        Ok(mut stream) => match stream.get_mut().message().await {
            Err(s) => s,
            Ok(_) => tonic::Status::ok("accepted"),
        },
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_cluster_secret_is_not_admitted() {
    let model = model();
    let pa = Ports::new();
    let a = Agent::start_with("sec-a", pa, &[], &model, &["--cluster-secret", "right"]);
    let b = Agent::start_with(
        "sec-b",
        Ports::new(),
        &[pa.gossip],
        &model,
        &["--cluster-secret", "right"],
    );
    let c = Agent::start_with(
        "sec-c",
        Ports::new(),
        &[pa.gossip],
        &model,
        &["--cluster-secret", "wrong"],
    );

    // a and b form a cluster and serve a chat together.
    wait_for("a and b to see each other", LIMIT, || async {
        let ma = members(&a, None).await?;
        let mb = members(&b, None).await?;
        (ma.contains(&"sec-b".to_string()) && mb.contains(&"sec-a".to_string())).then_some(())
    })
    .await;
    let body = chat_body("Say hi.", 4, false);
    let r = wait_for("a chat through a", LIMIT, || async {
        let r = post_json(&a.url("/v1/chat/completions"), &body)
            .await
            .ok()?;
        (r.status != 503).then_some(r)
    })
    .await;
    assert_eq!(r.status, 200, "{}", r.text());

    // c gossips with the wrong secret for a while: never listed by a or b.
    wait_for("c to be up", LIMIT, || async {
        get(&c.url("/health")).await.ok().map(|_| ())
    })
    .await;
    // Until a has refused a dozen of c's datagrams (c gossips every second or so), no
    // member list ever names the other side.
    let rejected_by_a = || async {
        let metrics = get(&a.metrics_url()).await.ok()?.text();
        metrics
            .lines()
            .find(|l| l.starts_with("distributed_llm_gossip_rejected_total"))
            .and_then(|l| l.split_whitespace().last())
            .and_then(|v| v.parse::<f64>().ok())
    };
    let rejected = wait_for("a to refuse 12 of c's datagrams", LIMIT, || async {
        for x in [&a, &b] {
            let m = members(x, None).await.unwrap_or_default();
            assert!(
                !m.contains(&"sec-c".to_string()),
                "{} admitted c: {m:?}",
                x.id
            );
        }
        let mc = members(&c, None).await.unwrap_or_default();
        assert!(
            !mc.contains(&"sec-a".to_string()) && !mc.contains(&"sec-b".to_string()),
            "c joined: {mc:?}"
        );
        rejected_by_a().await.filter(|n| *n >= 12.0)
    })
    .await;
    eprintln!("gossip datagrams rejected by a while c tried to join: {rejected}");

    // c cannot serve as a stage nor push hidden states: pipeline calls need the token.
    let s = link_as(a.ports.api, None).await;
    assert_eq!(s.code(), tonic::Code::Unauthenticated, "{s:?}");
    assert!(s.message().contains("cluster"), "{}", s.message());
    let wrong = agent::security::cluster_token("wrong");
    let s = link_as(a.ports.api, Some(&wrong)).await;
    assert_eq!(s.code(), tonic::Code::Unauthenticated, "{s:?}");
    let right = agent::security::cluster_token("right");
    let s = link_as(a.ports.api, Some(&right)).await;
    assert_ne!(s.code(), tonic::Code::Unauthenticated, "{s:?}");
    drop((a, b, c));
}

#[tokio::test(flavor = "multi_thread")]
async fn api_key_guards_http_and_grpc_client_apis() {
    let model = model();
    let a = Agent::start_with("key-a", Ports::new(), &[], &model, &["--api-key", "k3y"]);
    wait_for("the agent to answer /health", LIMIT, || async {
        get(&a.url("/health")).await.ok().map(|_| ())
    })
    .await;
    for path in ["/v1/models", "/v1/cluster"] {
        let r = get(&a.url(path)).await.unwrap();
        assert_eq!(r.status, 401, "{path}: {}", r.text());
        let v: Value = serde_json::from_slice(&r.body).expect("JSON error body");
        assert!(v["error"]["message"].as_str().unwrap().contains("API key"));
        let r = agent::httpc::request(
            "GET",
            &a.url(path),
            &[("Authorization", "Bearer nope")],
            b"",
            LIMIT,
        )
        .await
        .unwrap();
        assert_eq!(r.status, 401);
        let r = agent::httpc::request(
            "GET",
            &a.url(path),
            &[("Authorization", "Bearer k3y")],
            b"",
            LIMIT,
        )
        .await
        .unwrap();
        assert_eq!(r.status, 200, "{path}: {}", r.text());
    }
    let r = post_json(&a.url("/v1/chat/completions"), &chat_body("hi", 2, false))
        .await
        .unwrap();
    assert_eq!(r.status, 401);

    let mut client = NodeServiceClient::new(channel(a.ports.api).await);
    let s = client
        .get_node_info(GetNodeInfoRequest {})
        .await
        .expect_err("no key");
    assert_eq!(s.code(), tonic::Code::Unauthenticated);
    let mut req = tonic::Request::new(GetNodeInfoRequest {});
    req.metadata_mut()
        .insert("authorization", "Bearer k3y".parse().unwrap());
    let info = client
        .get_node_info(req)
        .await
        .expect("with key")
        .into_inner();
    assert_eq!(info.node_id, "key-a");
}
