//! Which peers are believed up: a simple failure detector fed by every
//! message received. Gossip membership replaces it later.

use std::collections::BTreeMap;

use crate::NodeId;
use crate::time::Instant;

#[derive(Debug)]
pub struct Peers {
    last_heard: BTreeMap<NodeId, Instant>,
    /// Each peer's boot, from its latest heartbeat.
    boots: BTreeMap<NodeId, u64>,
}

impl Peers {
    /// Every peer starts as heard at `now`: believed up until proven silent,
    /// so a node serves at once after it starts.
    pub fn new(peers: impl IntoIterator<Item = NodeId>, now: Instant) -> Peers {
        Peers { last_heard: peers.into_iter().map(|peer| (peer, now)).collect(), boots: BTreeMap::new() }
    }

    pub fn heard(&mut self, from: NodeId, now: Instant) {
        if let Some(last) = self.last_heard.get_mut(&from) {
            *last = (*last).max(now);
        }
    }

    pub fn heard_boot(&mut self, from: NodeId, boot: u64) {
        if self.last_heard.contains_key(&from) {
            self.boots.insert(from, boot);
        }
    }

    pub fn boot(&self, peer: NodeId) -> Option<u64> {
        self.boots.get(&peer).copied()
    }

    /// True for a known peer heard from within `failure_timeout`.
    pub fn is_up(&self, peer: NodeId, now: Instant, failure_timeout: core::time::Duration) -> bool {
        self.last_heard.get(&peer).is_some_and(|last| now.saturating_since(*last) < failure_timeout)
    }

    pub fn ids(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.last_heard.keys().copied()
    }
}
