//! The agent server: model, gossip, placement loop, API and metrics listeners.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::config::ServeArgs;
use crate::membership::{plan, GossipConfig, LocalAdvert, Membership};
use crate::metrics::Metrics;
use crate::state::{Addresses, AgentState, ModelHandle};
use crate::view::{ClusterView, Liveness};

/// Resolve the model path: the flag, else the default model (fetched if absent).
pub async fn model_path(flag: Option<std::path::PathBuf>) -> Result<std::path::PathBuf> {
    match flag {
        Some(p) => {
            if !p.is_file() {
                bail!("model file not found: {}", p.display());
            }
            Ok(p)
        }
        None => tokio::task::spawn_blocking(engine::fetch::ensure_default_model)
            .await?
            .context("fetching the default model"),
    }
}

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
    let api_listener = crate::server::bind(
        SocketAddr::new(bind_ip, args.bind_port),
        "API (--bind-port)",
    )
    .await?;
    let metrics_listener = crate::server::bind(
        SocketAddr::new(bind_ip, args.metrics_port),
        "metrics (--metrics-port)",
    )
    .await?;
    let path = model_path(args.model.clone()).await?;
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
    let mut state = AgentState::new(node_id.clone(), addrs.clone(), generation, model, metrics);
    state.max_requests = args.max_requests as usize;
    let state = Arc::new(state);
    let advert = initial_advert(&state, args.memory_limit);
    let membership = Arc::new(
        Membership::start(
            GossipConfig {
                node_id: node_id.clone(),
                generation,
                listen: SocketAddr::new(bind_ip, args.gossip_port),
                advertise: addrs.gossip.clone(),
                seeds: args.seed_nodes.clone(),
            },
            &advert,
        )
        .await
        .context("starting gossip (--gossip-port)")?,
    );
    let (app, health) = crate::server::router(state.clone())?;
    tokio::spawn(resource_loop(state.clone()));
    tokio::spawn(placement_loop(state.clone(), membership, health, advert));
    let metrics_app = crate::http::metrics_router(state.clone());
    tokio::spawn(async move {
        if let Err(e) = crate::server::serve(metrics_listener, metrics_app).await {
            tracing::error!("metrics server stopped: {e:#}");
        }
    });
    tracing::info!(
        "API (gRPC + HTTP) on {}, metrics on port {}",
        addrs.api,
        args.metrics_port
    );
    tokio::select! {
        r = crate::server::serve(api_listener, app) => r,
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
        state.metrics.set_resources(&r);
        *state.resources.write().unwrap_or_else(|p| p.into_inner()) = r;
    }
}

/// Quantise bytes to 64 MiB so small fluctuations do not change the plan.
fn quantise(bytes: u64) -> u64 {
    const Q: u64 = 64 << 20;
    bytes / Q * Q
}

/// The first advert. Capacity is advertised once (quantised): the plan must not
/// follow the memory this agent's own layers use.
fn initial_advert(state: &AgentState, memory_limit: Option<u64>) -> LocalAdvert {
    let r = state.resources();
    let offered = memory_limit
        .unwrap_or(r.memory_available)
        .min(r.memory_available.max(1));
    LocalAdvert {
        node_id: state.node_id.clone(),
        api_addr: state.addrs.api.clone(),
        gossip_addr: state.addrs.gossip.clone(),
        metrics_addr: state.addrs.metrics.clone(),
        cpu_cores: r.cpu_cores,
        memory_total: quantise(r.memory_total),
        memory_available: quantise(offered),
        gpus: r
            .gpus
            .iter()
            .map(|g| cluster::GpuAdvert {
                name: g.name.clone(),
                memory_total: g.memory_total,
                memory_used: g.memory_used,
            })
            .collect(),
        models: vec![state.model.id.clone()],
        layers: None,
        healthy: false,
        generation: state.generation,
        version: env!("CARGO_PKG_VERSION").into(),
        plan_version: 0,
    }
}

/// A background load of a layer range.
type LoadTask = tokio::task::JoinHandle<Result<engine::Stage, String>>;

/// Keeps the view fresh, loads the planned range, and advertises what is held.
async fn placement_loop(
    state: Arc<AgentState>,
    membership: Arc<Membership>,
    health: tonic_health::server::HealthReporter,
    mut advert: LocalAdvert,
) {
    let mut loading: Option<(Range<usize>, LoadTask)> = None;
    let mut last_plan = 0u64;
    let mut last_error: Option<String> = None;
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tick.tick().await;
        let members = membership.members().await;
        let (plan, plan_error) = match plan(&members, &state.model.info, &state.model.id) {
            Ok(p) => {
                last_error = None;
                (Some(p), None)
            }
            Err(e) => {
                if last_error.as_deref() != Some(e.as_str()) {
                    tracing::warn!("no placement plan: {e}");
                    last_error = Some(e.clone());
                }
                (None, Some(e))
            }
        };
        let view = ClusterView {
            members,
            plan,
            plan_error,
        };
        let planned = view
            .plan
            .as_ref()
            .and_then(|p| p.slice_of(&state.node_id))
            .map(|s| s.range.clone());
        let plan_version = view.plan.as_ref().map(|p| p.version).unwrap_or(0);
        if plan_version != last_plan {
            tracing::info!(
                version = plan_version,
                plan = %describe(&view),
                "placement plan changed"
            );
            last_plan = plan_version;
        }
        // 53 bits: exact as a Prometheus float.
        state
            .metrics
            .plan_version
            .set((plan_version & ((1 << 53) - 1)) as i64);
        state
            .metrics
            .members
            .get_or_create(&crate::metrics::StateLabel {
                state: "alive".into(),
            })
            .set(view.count(Liveness::Alive) as i64);
        state
            .metrics
            .members
            .get_or_create(&crate::metrics::StateLabel {
                state: "dead".into(),
            })
            .set(view.count(Liveness::Dead) as i64);
        *state.view.write().unwrap_or_else(|p| p.into_inner()) = view;

        // Finish a load in progress.
        if let Some((range, handle)) = loading.take() {
            if handle.is_finished() {
                match handle.await {
                    Ok(Ok(stage)) => {
                        tracing::info!("loaded layers {}..{}", range.start, range.end);
                        *state.stage.write().unwrap_or_else(|p| p.into_inner()) =
                            Some(Arc::new(stage));
                    }
                    Ok(Err(e)) => tracing::error!("loading layers {range:?} failed: {e}"),
                    Err(e) => tracing::error!("loading layers {range:?} panicked: {e}"),
                }
            } else {
                loading = Some((range, handle));
            }
        }
        // Start loading the planned range when it differs from what is held.
        let held = state.local_range();
        match &planned {
            Some(want) if held.as_ref() != Some(want) => {
                let busy_with_it = loading.as_ref().is_some_and(|(r, _)| r == want);
                if !busy_with_it && loading.is_none() {
                    let path = state.model.path.clone();
                    let (s, e) = (want.start, want.end);
                    tracing::info!("loading layers {s}..{e}");
                    loading = Some((
                        want.clone(),
                        tokio::task::spawn_blocking(move || {
                            engine::Stage::load(&path, s, e).map_err(|e| e.to_string())
                        }),
                    ));
                }
            }
            None if held.is_some() && view_has_complete_plan(&state) => {
                tracing::info!("plan gives this agent no layers; releasing them");
                *state.stage.write().unwrap_or_else(|p| p.into_inner()) = None;
            }
            _ => {}
        }
        let held = state.local_range();
        state.metrics.set_layers(held.clone());
        let (healthy, _) = state.health();
        state.metrics.node_health.set(i64::from(healthy));
        if healthy {
            health
                .set_service_status("", tonic_health::ServingStatus::Serving)
                .await;
        } else {
            health
                .set_service_status("", tonic_health::ServingStatus::NotServing)
                .await;
        }
        let mut next = advert.clone();
        next.layers = held;
        next.healthy = healthy;
        next.plan_version = plan_version;
        if next != advert {
            advert = next;
            membership.publish(&advert).await;
        }
    }
}

fn view_has_complete_plan(state: &AgentState) -> bool {
    state.view().plan.as_ref().is_some_and(|p| p.is_complete())
}

fn describe(view: &ClusterView) -> String {
    match &view.plan {
        None => "none".into(),
        Some(p) => p
            .slices
            .iter()
            .map(|s| format!("{}:{}..{}", s.node_id, s.range.start, s.range.end))
            .collect::<Vec<_>>()
            .join(" "),
    }
}
