//! Gossip membership on loopback (127.0.0.1, ports from `testkit::free_port`). Waits
//! are bounded polls of the condition; nothing asserts on timing.

use std::net::SocketAddr;
use std::time::Duration;

use cluster::{ClusterError, Member, MemberState, Membership, MembershipConfig, NodeAdvert};

const WAIT: Duration = Duration::from_secs(15);

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], testkit::free_port()))
}

fn config(id: &str, seeds: &[String]) -> MembershipConfig {
    let mut cfg = MembershipConfig::new(id, loopback());
    cfg.seeds = seeds.to_vec();
    cfg.cluster_id = "test-cluster".into();
    cfg
}

fn advert(id: &str, api_port: u16) -> NodeAdvert {
    NodeAdvert {
        node_id: id.into(),
        api_addr: format!("127.0.0.1:{api_port}"),
        cpu_cores: 2,
        memory_available: 1 << 30,
        version: "test".into(),
        ..Default::default()
    }
}

async fn start(id: &str, seeds: &[String]) -> Membership {
    Membership::start(config(id, seeds), advert(id, 8080))
        .await
        .expect("membership starts")
}

fn seed_of(m: &Membership) -> String {
    m.config().advertise.to_string()
}

/// Polls `m.members()` until `pred` holds or [`WAIT`] passes; returns the last view.
async fn wait_for(m: &Membership, pred: impl Fn(&[Member]) -> bool) -> Vec<Member> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let members = m.members().await;
        if pred(&members) || tokio::time::Instant::now() >= deadline {
            return members;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn state_of(members: &[Member], id: &str) -> Option<MemberState> {
    members
        .iter()
        .find(|m| m.advert.node_id == id)
        .map(|m| m.state)
}

fn all_alive(members: &[Member], ids: &[&str]) -> bool {
    ids.iter()
        .all(|id| state_of(members, id) == Some(MemberState::Alive))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_join_propagate_die_and_restart() {
    let a = start("a", &[]).await;
    let seeds = [seed_of(&a)];
    let b = start("b", &seeds).await;
    let c = start("c", &seeds).await;
    let ids = ["a", "b", "c"];

    // Everyone sees everyone.
    for m in [&a, &b, &c] {
        let view = wait_for(m, |v| all_alive(v, &ids)).await;
        assert!(all_alive(&view, &ids), "{:?}", view);
        let names: Vec<&str> = view.iter().map(|m| m.advert.node_id.as_str()).collect();
        assert_eq!(names, ids, "sorted by node id, one entry each");
        assert_eq!(view.iter().filter(|m| m.is_self).count(), 1);
    }
    let view = a.members().await;
    let cv = view.iter().find(|m| m.advert.node_id == "c").unwrap();
    assert_eq!(cv.advert.api_addr, "127.0.0.1:8080");
    assert_eq!(cv.advert.gossip_addr, c.config().advertise.to_string());
    assert_eq!(cv.advert.generation, c.config().generation);

    // An advert update propagates, and subscribers are told.
    let mut sub = a.subscribe();
    let mut updated = advert("c", 9999);
    updated.layer_start = 10;
    updated.layer_end = 20;
    updated.healthy = true;
    c.set_advert(&updated).await;
    let seen = |v: &[Member]| {
        v.iter()
            .any(|m| m.advert.node_id == "c" && m.advert.layer_end == 20 && m.advert.healthy)
    };
    let view = wait_for(&a, seen).await;
    assert!(seen(&view), "{view:?}");
    // (The watch::Ref is dropped at once: holding it would block the publisher.)
    let pushed =
        tokio::time::timeout(WAIT, async { sub.wait_for(|v| seen(v)).await.is_ok() }).await;
    assert_eq!(pushed, Ok(true), "subscriber not notified");

    // A shut-down member is declared dead by the others.
    let c_gen = c.config().generation;
    let c_port = c.config().listen.port();
    c.shutdown().await;
    for m in [&a, &b] {
        let view = wait_for(m, |v| state_of(v, "c") == Some(MemberState::Dead)).await;
        assert_eq!(state_of(&view, "c"), Some(MemberState::Dead), "{view:?}");
        assert!(all_alive(&view, &["a", "b"]));
    }

    // Restart with a higher generation (same port): it replaces the old incarnation.
    let mut cfg = config("c", &seeds);
    cfg.generation = c_gen + 1;
    cfg.listen.set_port(c_port);
    cfg.advertise = cfg.listen;
    let c2 = Membership::start(cfg, advert("c", 8082)).await.unwrap();
    for m in [&a, &b] {
        let back = |v: &[Member]| {
            v.iter().any(|m| {
                m.advert.node_id == "c"
                    && m.advert.generation == c_gen + 1
                    && m.state == MemberState::Alive
            })
        };
        let view = wait_for(m, back).await;
        assert!(back(&view), "{view:?}");
        assert_eq!(view.iter().filter(|m| m.advert.node_id == "c").count(), 1);
        assert_eq!(
            view.iter()
                .find(|m| m.advert.node_id == "c")
                .unwrap()
                .advert
                .api_addr,
            "127.0.0.1:8082"
        );
    }

    c2.shutdown().await;
    b.shutdown().await;
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostname_seed_that_appears_late_is_joined() {
    // Hold the seed's port, then start a member pointing at it by name before the
    // seed exists: once it has gossiped to the empty port, the seed starts there, and
    // the periodic re-resolution must still join them.
    let seed_port = testkit::free_port();
    let holder = tokio::net::UdpSocket::bind(("127.0.0.1", seed_port))
        .await
        .unwrap();
    let late_seed = format!("localhost:{seed_port}");
    let b = start("late-b", &[late_seed]).await;
    let mut buf = [0u8; 65536];
    tokio::time::timeout(WAIT, holder.recv_from(&mut buf))
        .await
        .expect("late-b gossips to its seed before the seed exists")
        .unwrap();
    drop(holder);

    let mut cfg = config("late-a", &[]);
    cfg.listen.set_port(seed_port);
    cfg.advertise = cfg.listen;
    let a = Membership::start(cfg, advert("late-a", 8080))
        .await
        .unwrap();

    for m in [&a, &b] {
        let view = wait_for(m, |v| all_alive(v, &["late-a", "late-b"])).await;
        assert!(all_alive(&view, &["late-a", "late-b"]), "{view:?}");
    }
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn port_in_use_is_a_clear_error() {
    let taken = std::net::UdpSocket::bind(("127.0.0.1", testkit::free_port())).unwrap();
    let addr = taken.local_addr().unwrap();
    let mut cfg = config("busy", &[]);
    cfg.listen = addr;
    cfg.advertise = addr;
    let err = Membership::start(cfg, advert("busy", 8080))
        .await
        .err()
        .expect("bind must fail");
    assert!(
        matches!(err, ClusterError::Bind { addr: a, .. } if a == addr),
        "{err}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains(&addr.to_string()) && msg.contains("in use"),
        "{msg}"
    );
}

#[tokio::test]
async fn bad_configs_are_rejected() {
    let mut cfg = config("x", &[]);
    cfg.listen = "0.0.0.0:0".parse().unwrap();
    cfg.advertise = "0.0.0.0:0".parse().unwrap();
    let err = Membership::start(cfg, advert("x", 1)).await.err().unwrap();
    assert!(matches!(err, ClusterError::Config(_)), "{err}");

    let err = Membership::start(config(" ", &[]), advert("x", 1))
        .await
        .err()
        .unwrap();
    assert!(matches!(err, ClusterError::Config(_)), "{err}");
}

#[tokio::test]
async fn lone_member_sees_itself() {
    let m = start("solo", &["127.0.0.1:1".to_string()]).await;
    let view = m.members().await;
    assert_eq!(view.len(), 1);
    assert!(view[0].is_self);
    assert_eq!(view[0].state, MemberState::Alive);
    assert_eq!(m.subscribe().borrow().len(), 1);
    m.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_member_turns_suspect_before_dead() {
    let mut cfg = config("watcher", &[]);
    cfg.dead_after = Duration::from_secs(4);
    let a = Membership::start(cfg, advert("watcher", 8080))
        .await
        .unwrap();
    let b = start("quiet", &[seed_of(&a)]).await;
    let view = wait_for(&a, |v| all_alive(v, &["watcher", "quiet"])).await;
    assert!(all_alive(&view, &["watcher", "quiet"]), "{view:?}");

    b.shutdown().await;
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while tokio::time::Instant::now() < deadline {
        let s = state_of(&a.members().await, "quiet").unwrap();
        if seen.last() != Some(&s) {
            seen.push(s);
        }
        if s == MemberState::Dead {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        seen,
        vec![MemberState::Alive, MemberState::Suspect, MemberState::Dead]
    );
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_member_is_declared_dead() {
    let a = start("keeper", &[]).await;
    let b = start("dropped", &[seed_of(&a)]).await;
    let view = wait_for(&a, |v| all_alive(v, &["keeper", "dropped"])).await;
    assert!(all_alive(&view, &["keeper", "dropped"]), "{view:?}");
    drop(b);
    let view = wait_for(&a, |v| state_of(v, "dropped") == Some(MemberState::Dead)).await;
    assert_eq!(
        state_of(&view, "dropped"),
        Some(MemberState::Dead),
        "{view:?}"
    );
    a.shutdown().await;
}
