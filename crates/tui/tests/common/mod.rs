//! Test helpers: fake agents (a real tonic NodeService on 127.0.0.1 with fixed
//! answers), bounded polling, free ports.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::Stream;
use proto::v1 as pb;
use proto::{NodeService, NodeServiceServer};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tonic::{Request, Response, Status};

/// A fake agent: answers NodeService calls about itself and its peers.
#[derive(Clone)]
pub struct FakeAgent {
    pub id: String,
    pub addr: String,
    /// Other members reported by ListMembers: (node id, api addr).
    pub peers: Arc<Mutex<Vec<(String, String)>>>,
}

impl FakeAgent {
    fn info(&self) -> pb::NodeInfo {
        pb::NodeInfo {
            node_id: self.id.clone(),
            api_addr: self.addr.clone(),
            version: "test".into(),
            healthy: true,
            models: vec!["m".into()],
            layers: Some(pb::LayerRange { start: 0, end: 30 }),
            ..Default::default()
        }
    }
}

type Snaps = Pin<Box<dyn Stream<Item = Result<pb::MetricsSnapshot, Status>> + Send>>;

#[tonic::async_trait]
impl NodeService for FakeAgent {
    async fn get_node_info(
        &self,
        _: Request<pb::GetNodeInfoRequest>,
    ) -> Result<Response<pb::NodeInfo>, Status> {
        Ok(Response::new(self.info()))
    }

    async fn list_members(
        &self,
        _: Request<pb::ListMembersRequest>,
    ) -> Result<Response<pb::ListMembersResponse>, Status> {
        let mut members = vec![pb::Member {
            advert: Some(pb::NodeAdvert {
                node_id: self.id.clone(),
                api_addr: self.addr.clone(),
                ..Default::default()
            }),
            state: pb::MemberState::Alive as i32,
            is_self: true,
        }];
        for (id, addr) in self.peers.lock().unwrap().iter() {
            members.push(pb::Member {
                advert: Some(pb::NodeAdvert {
                    node_id: id.clone(),
                    api_addr: addr.clone(),
                    ..Default::default()
                }),
                state: pb::MemberState::Alive as i32,
                is_self: false,
            });
        }
        Ok(Response::new(pb::ListMembersResponse {
            members,
            plan: None,
        }))
    }

    async fn list_models(
        &self,
        _: Request<pb::ListModelsRequest>,
    ) -> Result<Response<pb::ListModelsResponse>, Status> {
        Ok(Response::new(pb::ListModelsResponse {
            models: vec![pb::ModelInfo {
                id: "m".into(),
                n_layers: 30,
                ..Default::default()
            }],
        }))
    }

    async fn get_metrics(
        &self,
        _: Request<pb::GetMetricsRequest>,
    ) -> Result<Response<pb::MetricsSnapshot>, Status> {
        Ok(Response::new(pb::MetricsSnapshot {
            node_id: self.id.clone(),
            cpu_usage_percent: 12.0,
            ..Default::default()
        }))
    }

    type WatchMetricsStream = Snaps;

    async fn watch_metrics(
        &self,
        _: Request<pb::WatchMetricsRequest>,
    ) -> Result<Response<Snaps>, Status> {
        Err(Status::unimplemented("not in the fake"))
    }
}

/// A running fake agent; stopped on drop.
pub struct Running {
    pub agent: FakeAgent,
    pub port: u16,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let _ = (&mut self.task).await;
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

/// Serve a fake agent `id` on 127.0.0.1:`port` (0 = any free port).
pub async fn serve(id: &str, port: u16) -> Running {
    let mut listener = None;
    for _ in 0..50 {
        match TcpListener::bind(("127.0.0.1", port)).await {
            Ok(l) => {
                listener = Some(l);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    let listener = listener.expect("bind fake agent");
    let local: SocketAddr = listener.local_addr().unwrap();
    let agent = FakeAgent {
        id: id.into(),
        addr: local.to_string(),
        peers: Arc::default(),
    };
    let (tx, rx) = oneshot::channel();
    let svc = NodeServiceServer::new(agent.clone());
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    let task = tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming_shutdown(incoming, async {
                let _ = rx.await;
            })
            .await
            .unwrap();
    });
    Running {
        agent,
        port: local.port(),
        stop: Some(tx),
        task,
    }
}

/// A TCP port on 127.0.0.1 that nothing listens on (bound then released).
pub fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Poll `f` every 100 ms until it returns `Some`, for at most `limit`.
pub async fn wait_for<T, F, Fut>(what: &str, limit: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let end = Instant::now() + limit;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < end, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
