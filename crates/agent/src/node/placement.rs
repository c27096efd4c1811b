//! The placement loop: on every change of the member list (told by the gossip layer)
//! and every finished load, it refreshes the cluster view, computes the plan, loads this
//! agent's planned layer range in the background and advertises what it holds.

use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::node::membership::{plan, LocalAdvert, Membership};
use crate::node::state::AgentState;
use crate::node::view::{fmt_layers, ClusterView, Liveness};

/// Quantise bytes to 64 MiB so small fluctuations do not change the plan.
fn quantise(bytes: u64) -> u64 {
    const Q: u64 = 64 << 20;
    bytes / Q * Q
}

/// The first advert. Capacity is advertised once (quantised): the plan must not
/// follow the memory this agent's own layers use.
pub fn initial_advert(state: &AgentState, memory_limit: Option<u64>) -> LocalAdvert {
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

/// Wait before a failed load is tried again.
const LOAD_RETRY: Duration = Duration::from_secs(1);

/// A background load of a layer range.
type LoadTask = tokio::task::JoinHandle<Result<engine::Stage, String>>;
type Loaded = Result<Result<engine::Stage, String>, tokio::task::JoinError>;

/// Waits for the load in progress to end and takes it (never ends when there is none).
async fn load_done(loading: &mut Option<(Range<usize>, LoadTask)>) -> (Range<usize>, Loaded) {
    let Some((_, handle)) = loading.as_mut() else {
        return std::future::pending().await;
    };
    let result = handle.await;
    let (range, _) = loading.take().expect("a load in progress");
    (range, result)
}

/// Keeps the view fresh, loads the planned range, and advertises what is held; runs
/// again whenever the member list changes or a load ends (a failed load is tried again
/// after [`LOAD_RETRY`]), until gossip stops.
pub async fn placement_loop(
    state: Arc<AgentState>,
    membership: Arc<Membership>,
    health: tonic_health::server::HealthReporter,
    mut advert: LocalAdvert,
) {
    let mut updates = membership.updates();
    let mut loading: Option<(Range<usize>, LoadTask)> = None;
    let mut last_plan = 0u64;
    let mut last_error: Option<String> = None;
    // After a failed load: not before then.
    let mut retry_at: Option<Instant> = None;
    loop {
        let members = updates.current();
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
                plan = %crate::node::view::fmt_plan(plan_version),
                layers = %describe(&view),
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
        state.set_view(view);

        // Start loading the planned range when it differs from what is held.
        let held = state.local_range();
        match &planned {
            Some(want) if held.as_ref() != Some(want) => {
                let busy_with_it = loading.as_ref().is_some_and(|(r, _)| r == want);
                if !busy_with_it && loading.is_none() && retry_at.is_none() {
                    let path = state.model.path.clone();
                    let (s, e) = (want.start, want.end);
                    tracing::info!("loading layers {}", fmt_layers(want));
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
                state.set_stage(None);
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
        tokio::select! {
            alive = updates.changed() => if !alive {
                tracing::warn!("gossip stopped; placement no longer follows the cluster");
                return;
            },
            (range, loaded) = load_done(&mut loading) => {
                let failed = match loaded {
                    Ok(Ok(stage)) => {
                        tracing::info!("loaded layers {}", fmt_layers(&range));
                        state.set_stage(Some(Arc::new(stage)));
                        None
                    }
                    Ok(Err(e)) => Some(format!("failed: {e}")),
                    Err(e) => Some(format!("panicked: {e}")),
                };
                if let Some(why) = failed {
                    tracing::error!("loading layers {} {why}", fmt_layers(&range));
                    retry_at = Some(Instant::now() + LOAD_RETRY);
                }
            }
            // A failed load may be tried again.
            _ = tokio::time::sleep_until(retry_at.unwrap_or_else(Instant::now)), if retry_at.is_some() => {
                retry_at = None;
            }
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
            .map(|s| format!("{}:{}", s.node_id, fmt_layers(&s.range)))
            .collect::<Vec<_>>()
            .join(" "),
    }
}
