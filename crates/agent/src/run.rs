//! The agent server: model, gossip, placement loop, API and metrics listeners.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::api::App;
use crate::config::ServeArgs;
use crate::metrics::Metrics;
use crate::node::membership::{GossipConfig, Membership};
use crate::node::placement::{initial_advert, placement_loop};
use crate::node::state::{Addresses, AgentState, ModelHandle};
use crate::pipeline::{Pipeline, PipelineConfig};
use crate::serving::admission::Admission;
use crate::serving::{Serving, ServingConfig};

/// The address peers use to reach this host: the flag, else this host name's first
/// non-loopback address, else 127.0.0.1.
pub fn advertise_host(flag: Option<&str>) -> String {
    if let Some(a) = flag.filter(|a| !a.trim().is_empty()) {
        return a.trim().to_string();
    }
    let host = crate::config::hostname();
    (host.as_str(), 0)
        .to_socket_addrs()
        .ok()
        .and_then(|mut it| it.find(|a| !a.ip().is_loopback() && a.is_ipv4()))
        .map(|a| a.ip().to_string())
        .unwrap_or_else(|| "127.0.0.1".into())
}

fn join(host: &str, port: u16) -> String {
    match host.parse::<IpAddr>() {
        Ok(IpAddr::V6(v6)) => format!("[{v6}]:{port}"),
        _ => format!("{host}:{port}"),
    }
}

/// Run the agent until the process is stopped.
pub async fn run(args: ServeArgs) -> Result<()> {
    let node_id = args.resolved_node_id();
    let bind_ip: IpAddr = args
        .bind_addr
        .parse()
        .with_context(|| format!("--bind-addr '{}' is not an IP address", args.bind_addr))?;
    let host = advertise_host(args.advertise_addr.as_deref());
    let addrs = Addresses {
        api: join(&host, args.bind_port),
        gossip: join(&host, args.gossip_port),
        metrics: join(&host, args.metrics_port),
    };
    // Bind first: a port in use is reported before the slow model work.
    let api_listener = crate::api::server::bind(
        SocketAddr::new(bind_ip, args.bind_port),
        "API (--bind-port)",
    )
    .await?;
    let metrics_listener = crate::api::server::bind(
        SocketAddr::new(bind_ip, args.metrics_port),
        "metrics (--metrics-port)",
    )
    .await?;
    crate::security::install(args.security.policy());
    let tls = match (&args.security.tls_cert, &args.security.tls_key) {
        (Some(c), Some(k)) => Some(crate::api::tls::server_config(c, k)?),
        _ => None,
    };
    let path = crate::config::model_path(args.model.clone()).await?;
    let model = tokio::task::spawn_blocking(move || ModelHandle::open(path.clone()))
        .await?
        .context("reading the model")?;
    tracing::info!(
        node = %node_id, model = %model.id, layers = model.info.n_layers,
        api = %addrs.api, gossip = %addrs.gossip, "starting agent"
    );
    let generation = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(1);
    let metrics = Arc::new(Metrics::new(&node_id));
    metrics.set_info(&addrs.api);
    metrics.model_layers.set(model.info.n_layers as i64);
    let state = Arc::new(AgentState::new(
        node_id.clone(),
        addrs.clone(),
        generation,
        model,
        metrics,
    ));
    let pipeline = Pipeline::start(
        state.clone(),
        PipelineConfig {
            kv_memory: args.kv_cache_memory,
            chunk: args.prefill_chunk as usize,
            max_batch: args.max_requests as usize,
        },
    );
    let max_running = args.max_requests as usize;
    // Until this agent runs a stage, admission counts requests only.
    let unbounded = max_running * state.model.info.context_length;
    let serving = Serving::new(
        state.clone(),
        pipeline.router.clone(),
        Admission::new(unbounded, max_running, args.max_queue as usize),
        ServingConfig {
            recovery_timeout: Duration::from_secs(args.recovery_timeout),
            chunk: args.prefill_chunk as usize,
        },
    );
    {
        let serving = serving.clone();
        let mut capacity = pipeline.capacity.clone();
        tokio::spawn(async move {
            while capacity.changed().await.is_ok() {
                let cap = *capacity.borrow_and_update();
                serving
                    .admission
                    .set_budget(if cap == 0 { unbounded } else { cap });
            }
        });
    }
    let app = Arc::new(App {
        state: state.clone(),
        serving,
        router: pipeline.router.clone(),
        responses: Default::default(),
    });
    let advert = initial_advert(&state, args.memory_limit);
    let membership = Arc::new(
        Membership::start(
            GossipConfig {
                node_id: node_id.clone(),
                generation,
                listen: SocketAddr::new(bind_ip, args.gossip_port),
                advertise: addrs.gossip.clone(),
                seeds: args.seed_nodes.clone(),
                auth: args.security.secret().map(|s| {
                    let c = state.metrics.gossip_rejected.clone();
                    cluster::GossipAuth::new(s).on_reject(move || {
                        c.inc();
                    })
                }),
            },
            &advert,
        )
        .await
        .context("starting gossip (--gossip-port)")?,
    );
    let metrics_app = crate::api::http::metrics_router(app.clone());
    let (app, health) = crate::api::server::router(app, args.security.cors()?)?;
    tokio::spawn(resource_loop(state.clone()));
    tokio::spawn(placement_loop(state.clone(), membership, health, advert));
    tokio::spawn(async move {
        if let Err(e) = crate::api::server::serve(metrics_listener, metrics_app).await {
            tracing::error!("metrics server stopped: {e:#}");
        }
    });
    tracing::info!(
        "API (gRPC + HTTP) on {}, metrics on port {}",
        addrs.api,
        args.metrics_port
    );
    tokio::select! {
        r = async {
            match tls {
                Some(cfg) => crate::api::tls::serve(api_listener, app, cfg).await,
                None => crate::api::server::serve(api_listener, app).await,
            }
        } => r,
        _ = shutdown_signal() => {
            tracing::info!("shutting down");
            Ok(())
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(t) => t,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

async fn resource_loop(state: Arc<AgentState>) {
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    loop {
        tick.tick().await;
        let s = state.clone();
        let Ok(r) = tokio::task::spawn_blocking(move || s.monitor.sample()).await else {
            continue;
        };
        r.record(&state.metrics);
        *state.resources.write().unwrap_or_else(|p| p.into_inner()) = r;
    }
}
