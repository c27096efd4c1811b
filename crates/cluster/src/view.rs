//! Turns chitchat's node states into the [`Member`] list.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use chitchat::{Chitchat, ChitchatId, Heartbeat};
use tracing::debug;

use crate::advert::{Member, MemberState, NodeAdvert, ADVERT_KEY};

/// Remembers when each node's heartbeat last moved, to flag silent nodes Suspect.
#[derive(Debug, Default)]
pub(crate) struct HeartbeatTracker {
    seen: HashMap<ChitchatId, (Heartbeat, Instant)>,
}

impl HeartbeatTracker {
    /// Records `hb` for `id`; returns how long the heartbeat has not moved.
    fn observe(&mut self, id: &ChitchatId, hb: Heartbeat, now: Instant) -> Duration {
        let entry = self.seen.entry(id.clone()).or_insert((hb, now));
        if entry.0 != hb {
            *entry = (hb, now);
        }
        now.saturating_duration_since(entry.1)
    }

    fn retain(&mut self, keep: &HashSet<&ChitchatId>) {
        self.seen.retain(|id, _| keep.contains(id));
    }
}

/// Members (self included) sorted by node id; for each node id only the newest
/// generation counts. Nodes without a readable advert are left out.
pub(crate) fn members(
    chitchat: &Chitchat,
    tracker: &mut HeartbeatTracker,
    suspect_after: Duration,
) -> Vec<Member> {
    let self_id = chitchat.self_chitchat_id();
    let live: HashSet<&ChitchatId> = chitchat.live_nodes().collect();
    let now = Instant::now();

    let mut newest: BTreeMap<&str, &ChitchatId> = BTreeMap::new();
    for id in chitchat.node_states().keys() {
        let slot = newest.entry(&id.node_id).or_insert(id);
        // Newest generation wins; on a tie prefer the live incarnation.
        if (id.generation_id, live.contains(id)) > (slot.generation_id, live.contains(*slot)) {
            *slot = id;
        }
    }

    let mut out = Vec::with_capacity(newest.len());
    for id in newest.into_values() {
        let Some(node) = chitchat.node_state(id) else {
            continue;
        };
        let silent = tracker.observe(id, node.heartbeat(), now);
        let Some(advert) = node.get(ADVERT_KEY).and_then(|json| parse(id, json)) else {
            continue;
        };
        let is_self = id == self_id;
        let state = if is_self {
            MemberState::Alive
        } else if !live.contains(id) {
            MemberState::Dead
        } else if silent > suspect_threshold(chitchat, id, suspect_after) {
            MemberState::Suspect
        } else {
            MemberState::Alive
        };
        out.push(Member {
            advert,
            state,
            is_self,
        });
    }
    tracker.retain(&chitchat.node_states().keys().collect());
    out
}

/// Half of chitchat's adaptive failure-detection timeout for `id` (so Suspect
/// precedes Dead), or `fallback` while the detector has no estimate.
fn suspect_threshold(chitchat: &Chitchat, id: &ChitchatId, fallback: Duration) -> Duration {
    chitchat
        .failure_detection_timeout(id)
        .map_or(fallback, |t| t / 2)
}

fn parse(id: &ChitchatId, json: &str) -> Option<NodeAdvert> {
    match serde_json::from_str::<NodeAdvert>(json) {
        Ok(mut a) => {
            // The gossip identity is authoritative.
            a.node_id = id.node_id.to_string();
            a.generation = id.generation_id;
            Some(a)
        }
        Err(e) => {
            debug!(node = ?id, error = %e, "ignoring unreadable advert");
            None
        }
    }
}
