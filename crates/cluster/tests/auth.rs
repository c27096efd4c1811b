//! Authenticated gossip on loopback: members sharing a secret see each other; a
//! member with another secret (or none) is never listed. Waits are bounded polls; ports
//! come from `testkit::free_port`.

use std::net::SocketAddr;
use std::time::Duration;

use cluster::{GossipAuth, Member, Membership, MembershipConfig, NodeAdvert};

const WAIT: Duration = Duration::from_secs(15);

async fn start(id: &str, seeds: &[String], secret: Option<&str>) -> Membership {
    let listen = SocketAddr::from(([127, 0, 0, 1], testkit::free_port()));
    let mut cfg = MembershipConfig::new(id, listen);
    cfg.seeds = seeds.to_vec();
    cfg.cluster_id = "auth-test".into();
    cfg.auth = secret.map(GossipAuth::new);
    let advert = NodeAdvert {
        node_id: id.into(),
        api_addr: "127.0.0.1:8080".into(),
        version: "test".into(),
        ..Default::default()
    };
    Membership::start(cfg, advert)
        .await
        .expect("membership starts")
}

fn ids(v: &[Member]) -> Vec<String> {
    v.iter().map(|m| m.advert.node_id.clone()).collect()
}

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

#[tokio::test]
async fn only_members_with_the_secret_are_admitted() {
    let a = start("a", &[], Some("right")).await;
    let seed = vec![a.config().advertise.to_string()];
    let b = start("b", &seed, Some("right")).await;
    let wrong = start("wrong", &seed, Some("wrong")).await;
    let open = start("open", &seed, None).await;

    let view = wait_for(&a, |v| ids(v).contains(&"b".to_string())).await;
    assert!(
        ids(&view).contains(&"b".into()),
        "b joins: {:?}",
        ids(&view)
    );
    let view = wait_for(&b, |v| ids(v).contains(&"a".to_string())).await;
    assert!(ids(&view).contains(&"a".into()));
    // Give the intruders time to gossip (bounded), then check they never appear.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while tokio::time::Instant::now() < deadline {
        for m in [&a, &b] {
            let v = ids(&m.members().await);
            assert!(!v.contains(&"wrong".into()), "wrong secret admitted: {v:?}");
            assert!(!v.contains(&"open".into()), "no secret admitted: {v:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(ids(&wrong.members().await), vec!["wrong"]);
    assert_eq!(ids(&open.members().await), vec!["open"]);
    assert!(
        a.rejected_datagrams() > 0,
        "intruders' datagrams are counted"
    );
    for m in [a, b, wrong, open] {
        m.shutdown().await;
    }
}

#[tokio::test]
async fn random_datagrams_do_not_break_gossip() {
    let a = start("ra", &[], Some("k")).await;
    let seed = vec![a.config().advertise.to_string()];
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for i in 0..500usize {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let len = (x as usize) % 1500 + (i % 2);
        let bytes: Vec<u8> = (0..len).map(|j| (x >> (j % 56)) as u8 ^ j as u8).collect();
        let _ = sock.send_to(&bytes, a.config().advertise).await;
        if i % 50 == 49 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let b = start("rb", &seed, Some("k")).await;
    let view = wait_for(&a, |v| ids(v).contains(&"rb".to_string())).await;
    assert!(ids(&view).contains(&"rb".into()), "gossip still works");
    // Loopback may drop some under the burst; most must have been seen and dropped.
    assert!(a.rejected_datagrams() > 0, "garbage is counted");
    a.shutdown().await;
    b.shutdown().await;
}
