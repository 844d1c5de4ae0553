//! Sloppy quorum and hinted handoff.
//!
//! When a primary replica of a key is down, the coordinator of a write asks
//! the next healthy node on the key's ring walk in its place (a fallback),
//! unless the client asked for `strict`. The fallback keeps the write as a
//! durable hint for that primary (`store::hints`) and acknowledges it once
//! the hint is durable. While it holds hints, every heartbeat tick it hands
//! them to their owners that are up again, a bounded number at a time
//! (`Message::HintDelivery`, which the owner merges as a replica write); it deletes a hint only after the owner's
//! acknowledgement, which the owner sends once the write is durable there.
//!
//! Hints are bounded in count, bytes and age (`HintConfig`); one past a
//! bound is dropped and counted, and anti-entropy repairs its key.

use super::durability::Deferred;
use super::store::{HintLimits, HintRefused};
use super::{Node, Pending};
use crate::NodeId;
use crate::message::{Message, ReplicaError, Tag};
use crate::ring::PlacedKey;
use crate::time::Instant;
use crate::version::Object;

/// A hint on its way to its owner.
#[derive(Debug)]
pub(super) struct Delivery {
    pub owner: NodeId,
    pub key: Vec<u8>,
    /// What was sent: the hint is deleted only if it still holds no more.
    pub object: Object,
    pub deadline: Instant,
}

impl Node {
    /// For each primary of `primaries` that is down, the next healthy node
    /// of the key's ring walk beyond them: `(fallback, owner)` pairs, as
    /// many as there are such nodes.
    pub(super) fn fallbacks(&self, key: &[u8], primaries: &[NodeId]) -> Vec<(NodeId, NodeId)> {
        let mut down = primaries.iter().copied().filter(|&node| !self.is_up(node)).peekable();
        if down.peek().is_none() {
            return Vec::new();
        }
        let healthy = self.ring.walk(key).filter(|node| !primaries.contains(node) && self.is_up(*node));
        healthy.zip(down).collect()
    }

    /// A coordinator asks this node to keep `object` as a hint for `owner`.
    pub(super) fn on_hint(&mut self, from: NodeId, tag: Tag, owner: NodeId, key: Vec<u8>, object: Object) {
        let placed = PlacedKey::new(&key);
        let primaries = self.ring.preference_list(&key);
        if primaries.contains(&self.id) {
            // Our ring makes us a replica of the key: store it as one.
            self.on_replicate(from, tag, key, object);
            return;
        }
        if owner == self.id || !primaries.contains(&owner) {
            // Rings that disagree: the write still reaches its replicas.
            self.send(from, Message::ReplicateAck { tag, result: Err(ReplicaError::Overloaded) });
            return;
        }
        if self.store.engine().is_poisoned() {
            self.send(from, Message::ReplicateAck { tag, result: Err(ReplicaError::StorageFailed) });
            return;
        }
        let limits =
            HintLimits { count_max: self.config.hints.count_max, bytes_max: self.config.hints.bytes_max };
        match self.store.store_hint(owner, placed, &object, self.now.wall_ms, limits) {
            Ok(lsn) => {
                self.stats.hints_stored += 1;
                self.when_durable(Some(lsn), Deferred::ReplicateAck { to: from, tag });
            }
            Err(refused) => {
                self.stats.hints_dropped += 1;
                let error = match refused {
                    HintRefused::Full => ReplicaError::Overloaded,
                    HintRefused::Store(_) => ReplicaError::StorageFailed,
                };
                self.send(from, Message::ReplicateAck { tag, result: Err(error) });
            }
        }
    }

    /// Starts handing hints over to their owners that are up, as many as
    /// the bound on deliveries in flight allows.
    pub(super) fn hand_off(&mut self) {
        let in_flight_max = self.config.hints.deliveries_in_flight_max as usize;
        if self.store.hints_pending() == 0 || self.deliveries.len() >= in_flight_max {
            return;
        }
        let owners: Vec<NodeId> = self.store.hint_owners().map(|(owner, _)| owner).collect();
        for owner in owners {
            let room = in_flight_max.saturating_sub(self.deliveries.len());
            if room == 0 {
                return;
            }
            if !self.is_up(owner) || self.ring.member(owner).is_none() {
                continue;
            }
            // Hints in flight are read again and skipped: ask for enough.
            let in_flight = self.deliveries.iter().filter(|(to, _)| *to == owner).count();
            let Ok((hints, undecodable)) = self.store.hints_for(owner, room + in_flight) else { continue };
            self.stats.hints_dropped += undecodable;
            for hint in hints {
                if self.deliveries.len() >= in_flight_max {
                    return;
                }
                if self.deliveries.contains(&(owner, hint.key.clone())) {
                    continue;
                }
                let age_ms = self.now.wall_ms.saturating_sub(hint.stored_ms);
                if u128::from(age_ms) > self.config.hints.age_max.as_millis() {
                    if matches!(self.store.remove_hint(owner, PlacedKey::new(&hint.key)), Ok(Some(_))) {
                        self.stats.hints_dropped += 1;
                    }
                    continue;
                }
                self.deliver(owner, hint.key, hint.object);
            }
        }
    }

    fn deliver(&mut self, owner: NodeId, key: Vec<u8>, object: Object) {
        let tag = self.next_tag();
        let deadline = self.now.mono + self.config.request_timeout;
        self.deliveries.insert((owner, key.clone()));
        self.send(owner, Message::HintDelivery { tag, key: key.clone(), object: object.clone() });
        self.track(tag, Pending::Handoff(Delivery { owner, key, object, deadline }));
    }

    /// The owner acknowledged (or refused) a handed-over hint. Acknowledged
    /// means durable there: the hint goes, unless a newer write merged into
    /// it meanwhile, which the next round hands over.
    pub(super) fn on_delivery_ack(&mut self, from: NodeId, tag: Tag, success: bool) {
        if !matches!(self.pending.get(&tag), Some(Pending::Handoff(delivery)) if delivery.owner == from) {
            return;
        }
        let Some(Pending::Handoff(delivery)) = self.untrack(tag) else { return };
        self.deliveries.remove(&(delivery.owner, delivery.key.clone()));
        if !success {
            return;
        }
        let placed = PlacedKey::new(&delivery.key);
        let unchanged =
            matches!(self.store.hint(delivery.owner, placed), Ok(Some(held)) if held == delivery.object);
        if unchanged && matches!(self.store.remove_hint(delivery.owner, placed), Ok(Some(_))) {
            self.stats.hints_delivered += 1;
        }
        self.hand_off();
    }

    /// A delivery got no answer in time: the hint stays, for a later round.
    pub(super) fn on_delivery_deadline(&mut self, delivery: Delivery) {
        self.deliveries.remove(&(delivery.owner, delivery.key));
    }
}
