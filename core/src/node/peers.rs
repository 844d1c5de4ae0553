//! Which peers are believed up: a simple failure detector fed by every
//! message received. Gossip membership replaces it later.

use std::collections::BTreeMap;

use crate::NodeId;
use crate::time::Instant;

#[derive(Debug)]
pub struct Peers {
    last_heard: BTreeMap<NodeId, Instant>,
}

impl Peers {
    /// Every peer starts as heard at `now`: believed up until proven silent,
    /// so a node serves at once after it starts.
    pub fn new(peers: impl IntoIterator<Item = NodeId>, now: Instant) -> Peers {
        Peers { last_heard: peers.into_iter().map(|peer| (peer, now)).collect() }
    }

    pub fn heard(&mut self, from: NodeId, now: Instant) {
        if let Some(last) = self.last_heard.get_mut(&from) {
            *last = (*last).max(now);
        }
    }

    /// True for a known peer heard from within `failure_timeout`.
    pub fn is_up(&self, peer: NodeId, now: Instant, failure_timeout: core::time::Duration) -> bool {
        self.last_heard.get(&peer).is_some_and(|last| now.saturating_since(*last) < failure_timeout)
    }

    pub fn ids(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.last_heard.keys().copied()
    }
}
