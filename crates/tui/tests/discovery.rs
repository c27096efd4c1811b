//! Discovery and poller tests against fake agents, a fake Docker socket, an
//! in-process DNS server and a fake Kubernetes API, all on loopback.

mod common;

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{closed_port, serve};
use tokio::sync::mpsc;
use tui::client::{Poller, PollerConfig, Update};
use tui::discovery::{
    Discovery, DockerConfig, DockerDiscovery, K8sConfig, K8sDiscovery, SeedDiscovery,
};

const LIMIT: Duration = Duration::from_secs(20);

fn fast() -> PollerConfig {
    PollerConfig {
        refresh: Duration::from_millis(100),
        rediscover: Duration::from_secs(1),
        call_timeout: Duration::from_secs(2),
    }
}

/// Collect node updates until `pred` holds on the set of (addr, up) seen last.
async fn until_nodes(
    rx: &mut mpsc::Receiver<Update>,
    what: &str,
    pred: impl Fn(&std::collections::BTreeMap<String, (String, bool)>) -> bool,
) {
    let mut state = std::collections::BTreeMap::new(); // addr -> (node id, up)
    let end = tokio::time::Instant::now() + LIMIT;
    loop {
        let u = tokio::time::timeout_at(end, rx.recv())
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for {what}; saw {state:?}"))
            .expect("poller alive");
        match u {
            Update::Node { addr, info, .. } => {
                state.insert(addr, (info.node_id, true));
            }
            Update::NodeDown { addr, .. } => {
                let id = state.get(&addr).map(|(i, _)| i.clone()).unwrap_or_default();
                state.insert(addr, (id, false));
            }
            _ => continue,
        }
        if pred(&state) {
            return;
        }
    }
}

#[tokio::test]
async fn seed_list_learns_the_rest_of_the_cluster_from_members() {
    let a = serve("agent-a", 0).await;
    let b = serve("agent-b", 0).await;
    a.agent
        .peers
        .lock()
        .unwrap()
        .push((b.agent.id.clone(), b.agent.addr.clone()));
    let d = SeedDiscovery::new(std::slice::from_ref(&a.agent.addr));
    assert_eq!(d.discover().await, vec![a.agent.addr.clone()]);

    let (tx, mut rx) = mpsc::channel(256);
    let poller = tokio::spawn(Poller::new(Arc::new(d), fast(), tx).run());
    let b_addr = b.agent.addr.clone();
    until_nodes(&mut rx, "agent-b learned from agent-a's member list", |s| {
        s.get(&b_addr)
            .is_some_and(|(id, up)| id == "agent-b" && *up)
    })
    .await;
    poller.abort();
}

#[tokio::test]
async fn agent_that_goes_away_is_reported_down_and_comes_back() {
    let a = serve("agent-a", 0).await;
    let port = a.port;
    let addr = a.agent.addr.clone();
    let (tx, mut rx) = mpsc::channel(256);
    let d = SeedDiscovery::new(std::slice::from_ref(&addr));
    let poller = tokio::spawn(Poller::new(Arc::new(d), fast(), tx).run());
    until_nodes(&mut rx, "agent up", |s| s.get(&addr).is_some_and(|x| x.1)).await;
    a.stop().await;
    until_nodes(&mut rx, "agent down", |s| {
        s.get(&addr).is_some_and(|x| !x.1)
    })
    .await;
    let _a2 = serve("agent-a", port).await;
    until_nodes(&mut rx, "agent back", |s| s.get(&addr).is_some_and(|x| x.1)).await;
    poller.abort();
}

#[tokio::test]
async fn docker_mode_keeps_only_ports_that_pass_the_health_check() {
    let a = serve("agent-a", 0).await;
    let b = serve("agent-b", 0).await;
    let dead = closed_port();
    let d = DockerDiscovery::new(DockerConfig {
        services: vec![],
        host: "127.0.0.1".into(),
        ports: vec![a.port, dead, b.port],
        socket: "/nonexistent/docker.sock".into(),
        probe_timeout: Duration::from_secs(2),
        ..DockerConfig::default()
    });
    assert_eq!(
        d.discover().await,
        vec![a.agent.addr.clone(), b.agent.addr.clone()]
    );
}

#[tokio::test]
async fn docker_mode_uses_published_ports_of_the_compose_project() {
    let a = serve("agent-a", 0).await;
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("docker.sock");
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let body = serde_json::json!([
        {"Id": "c1", "Names": ["/distributed-llm-agent-1"], "State": "running",
         "Labels": {"com.docker.compose.project": "distributed-llm"},
         "Ports": [
            {"IP": "0.0.0.0", "PrivatePort": 8080, "PublicPort": a.port, "Type": "tcp"},
            {"IP": "0.0.0.0", "PrivatePort": 9090, "PublicPort": closed_port(), "Type": "tcp"}
         ]},
        {"Id": "c2", "Names": ["/distributed-llm-agent-2"], "State": "running",
         "Labels": {"com.docker.compose.project": "distributed-llm"},
         "Ports": [{"IP": "0.0.0.0", "PrivatePort": 8080, "PublicPort": closed_port(), "Type": "tcp"}]}
    ]);
    let seen2 = seen.clone();
    let app = axum::Router::new().fallback(move |uri: axum::http::Uri| {
        let seen = seen2.clone();
        let body = body.clone();
        async move {
            seen.lock().unwrap().push(uri.to_string());
            axum::Json(body)
        }
    });
    let listener = tokio::net::UnixListener::bind(&sock).unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let d = DockerDiscovery::new(DockerConfig {
        services: vec![],
        host: "127.0.0.1".into(),
        ports: vec![],
        socket: sock.clone(),
        ..DockerConfig::default()
    });
    let cands = d.candidates().await;
    assert_eq!(cands.len(), 2, "{cands:?}");
    assert_eq!(d.discover().await, vec![a.agent.addr.clone()]);
    let seen = seen.lock().unwrap().clone();
    let q = seen
        .iter()
        .find(|u| u.contains("/containers/json"))
        .expect("containers listed");
    let q = percent_decode(q);
    assert!(
        q.contains("com.docker.compose.project=distributed-llm"),
        "{q}"
    );
    assert!(q.contains("running"), "{q}");
    server.abort();
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A tiny authoritative DNS server for `*.testns.svc.cluster.local` on 127.0.0.1.
async fn dns_server() -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    use hickory_proto::op::{Message, MessageType, ResponseCode};
    use hickory_proto::rr::rdata::{A, SRV};
    use hickory_proto::rr::{Name, RData, Record, RecordType};

    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = sock.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        loop {
            let Ok((len, src)) = sock.recv_from(&mut buf).await else {
                return;
            };
            let Ok(req) = Message::from_vec(&buf[..len]) else {
                continue;
            };
            let mut resp = Message::new();
            resp.set_id(req.id())
                .set_message_type(MessageType::Response)
                .set_op_code(req.op_code())
                .set_recursion_desired(req.recursion_desired())
                .set_recursion_available(true)
                .set_authoritative(true);
            resp.add_queries(req.queries().to_vec());
            let mut known = false;
            for q in req.queries() {
                let name = q.name().to_ascii().to_ascii_lowercase();
                let a = |ip: Ipv4Addr| Record::from_rdata(q.name().clone(), 30, RData::A(A(ip)));
                let srv = |port: u16, target: &str| {
                    let t = Name::from_str(target).unwrap();
                    Record::from_rdata(q.name().clone(), 30, RData::SRV(SRV::new(0, 50, port, t)))
                };
                let answers: Vec<Record> = match (name.as_str(), q.query_type()) {
                    ("agent.testns.svc.cluster.local.", RecordType::A) => {
                        vec![
                            a(Ipv4Addr::new(127, 0, 0, 2)),
                            a(Ipv4Addr::new(127, 0, 0, 3)),
                        ]
                    }
                    ("_grpc._tcp.agent.testns.svc.cluster.local.", RecordType::SRV) => vec![
                        srv(18080, "agent-0.agent.testns.svc.cluster.local."),
                        srv(18081, "agent-1.agent.testns.svc.cluster.local."),
                    ],
                    ("agent-0.agent.testns.svc.cluster.local.", RecordType::A) => {
                        vec![a(Ipv4Addr::new(127, 0, 0, 4))]
                    }
                    ("agent-1.agent.testns.svc.cluster.local.", RecordType::A) => {
                        vec![a(Ipv4Addr::new(127, 0, 0, 5))]
                    }
                    _ => vec![],
                };
                known |= name.ends_with("testns.svc.cluster.local.");
                resp.add_answers(answers);
            }
            if !known {
                resp.set_response_code(ResponseCode::NXDomain);
            }
            if let Ok(bytes) = resp.to_vec() {
                let _ = sock.send_to(&bytes, src).await;
            }
        }
    });
    (addr, task)
}

/// A fake Kubernetes API serving the pods of `testns`.
async fn kube_api() -> (u16, tokio::task::JoinHandle<()>) {
    let pod =
        |name: &str, ip: &str, phase: &str, ann: serde_json::Value, ports: serde_json::Value| {
            serde_json::json!({
                "metadata": {"name": name, "namespace": "testns", "annotations": ann},
                "spec": {"containers": [{"name": "agent", "ports": ports}]},
                "status": {"phase": phase, "podIP": ip}
            })
        };
    let scrape = serde_json::json!({"prometheus.io/scrape": "true", "prometheus.io/port": "9090"});
    let with_port = serde_json::json!({"prometheus.io/scrape": "true", "prometheus.io/port": "9090",
                                       "distributed-llm.io/api-port": "9999"});
    let grpc = serde_json::json!([{"name": "grpc", "containerPort": 8088}]);
    let list = serde_json::json!({
        "apiVersion": "v1", "kind": "PodList", "metadata": {"resourceVersion": "1"},
        "items": [
            pod("agent-0", "127.0.0.6", "Running", with_port, grpc.clone()),
            pod("agent-1", "127.0.0.7", "Running", scrape.clone(), grpc.clone()),
            pod("other", "127.0.0.8", "Running", serde_json::json!({}), grpc.clone()),
            pod("agent-2", "127.0.0.9", "Pending", scrape, grpc),
        ]
    });
    let app = axum::Router::new().route(
        "/api/v1/namespaces/testns/pods",
        axum::routing::get(move || {
            let list = list.clone();
            async move { axum::Json(list) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (port, task)
}

#[tokio::test]
async fn k8s_mode_uses_service_dns_srv_and_pod_annotations() {
    let (dns, dns_task) = dns_server().await;
    let (api_port, api_task) = kube_api().await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: http://127.0.0.1:{api_port}\n\
             contexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n    namespace: testns\n\
             current-context: fake\nusers:\n- name: fake\n  user:\n    token: test\n"
        ),
    )
    .unwrap();
    let mut cfg = K8sConfig::new("testns");
    cfg.dns_server = Some(dns);
    cfg.kubeconfig = Some(kubeconfig);
    let d = K8sDiscovery::new(cfg).unwrap();

    assert_eq!(
        d.from_srv().await,
        vec!["127.0.0.4:18080", "127.0.0.5:18081"]
    );
    let a: BTreeSet<String> = d.from_service_dns().await.into_iter().collect();
    assert_eq!(
        a,
        BTreeSet::from(["127.0.0.2:8080".to_string(), "127.0.0.3:8080".to_string()])
    );
    assert_eq!(
        d.from_pods().await.unwrap(),
        vec!["127.0.0.6:9999", "127.0.0.7:8088"]
    );

    let all: BTreeSet<String> = d.discover().await.into_iter().collect();
    assert_eq!(all.len(), 6, "{all:?}");
    assert_eq!(d.mode(), "k8s");
    dns_task.abort();
    api_task.abort();
}

#[tokio::test]
async fn k8s_mode_without_dns_answers_or_api_finds_nothing_and_does_not_fail() {
    let (dns, dns_task) = dns_server().await;
    let mut cfg = K8sConfig::new("elsewhere");
    cfg.dns_server = Some(dns);
    cfg.kubeconfig = Some("/nonexistent/kubeconfig".into());
    cfg.timeout = Duration::from_secs(2);
    let d = K8sDiscovery::new(cfg).unwrap();
    assert!(d.discover().await.is_empty());
    assert!(d.from_pods().await.is_err());
    dns_task.abort();
}

#[tokio::test]
async fn poller_reports_discovery_and_unreachable_seeds() {
    let dead = format!("127.0.0.1:{}", closed_port());
    let (tx, mut rx) = mpsc::channel(64);
    let d = SeedDiscovery::new(std::slice::from_ref(&dead));
    let poller = tokio::spawn(Poller::new(Arc::new(d), fast(), tx).run());
    let mut saw_discovered = false;
    let end = tokio::time::Instant::now() + LIMIT;
    loop {
        match tokio::time::timeout_at(end, rx.recv())
            .await
            .expect("timed out")
            .unwrap()
        {
            Update::Discovered { mode, addrs } => {
                assert_eq!(mode, "seeds");
                assert_eq!(addrs, vec![dead.clone()]);
                saw_discovered = true;
            }
            Update::NodeDown { addr, error } => {
                assert_eq!(addr, dead);
                assert!(!error.is_empty());
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(saw_discovered);
    poller.abort();
}
