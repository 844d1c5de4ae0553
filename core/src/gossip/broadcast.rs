//! The queue of updates waiting to ride on probes, each sent a limited
//! number of times (memberlist's `TransmitLimitedQueue`).
//!
//! One update per member at most: a newer claim about a member replaces the
//! one still queued, which nobody needs any more. Each message takes the
//! updates sent the fewest times, newest first, so fresh news spreads before
//! old news is repeated.

use core::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};

use super::member::Update;
use crate::NodeId;

#[derive(Debug, Default)]
pub(super) struct Broadcasts {
    queued: BTreeMap<NodeId, Queued>,
    /// `queued` in the order updates are taken.
    order: BTreeSet<(u32, Reverse<u64>, NodeId)>,
    seq_next: u64,
}

#[derive(Debug)]
struct Queued {
    update: Update,
    transmits: u32,
    seq: u64,
}

impl Broadcasts {
    /// Queues `update`, replacing any update about the same member.
    pub(super) fn push(&mut self, update: Update) {
        let id = update.id();
        if let Some(old) = self.queued.remove(&id) {
            let removed = self.order.remove(&(old.transmits, Reverse(old.seq), id));
            assert!(removed, "queued update of {id} missing from the order");
        }
        let seq = self.seq_next;
        self.seq_next += 1;
        self.order.insert((0, Reverse(seq), id));
        self.queued.insert(id, Queued { update, transmits: 0, seq });
        debug_assert_eq!(self.order.len(), self.queued.len());
    }

    /// Up to `max` updates for one message, leaving out any about `skip`
    /// (the caller already put in a fresher one). Each counts as sent once;
    /// one sent `limit` times leaves the queue.
    pub(super) fn take(&mut self, max: usize, limit: u32, skip: Option<NodeId>) -> Vec<Update> {
        let chosen: Vec<(u32, Reverse<u64>, NodeId)> =
            self.order.iter().filter(|(_, _, id)| Some(*id) != skip).take(max).copied().collect();
        let mut updates = Vec::with_capacity(chosen.len());
        for key in chosen {
            let (transmits, seq, id) = key;
            self.order.remove(&key);
            let queued = self.queued.get_mut(&id).expect("ordered updates are queued");
            assert_eq!((queued.transmits, queued.seq), (transmits, seq.0));
            updates.push(queued.update.clone());
            queued.transmits += 1;
            if queued.transmits >= limit {
                self.queued.remove(&id);
            } else {
                self.order.insert((transmits + 1, seq, id));
            }
        }
        debug_assert_eq!(self.order.len(), self.queued.len());
        updates
    }

    pub(super) fn len(&self) -> usize {
        self.queued.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gossip::member::{Address, State};

    fn alive(id: u64, incarnation: u64) -> Update {
        let address = Address::new(format!("n{id}:1")).unwrap();
        Update::new(NodeId(id), address, incarnation, State::Alive, NodeId(id), 0).unwrap()
    }

    #[test]
    fn fewest_sent_and_newest_go_first_until_the_limit() {
        let mut queue = Broadcasts::default();
        queue.push(alive(1, 0));
        queue.push(alive(2, 0));
        queue.push(alive(3, 0));
        let ids = |updates: Vec<Update>| updates.iter().map(|u| u.id().0).collect::<Vec<_>>();
        assert_eq!(ids(queue.take(2, 2, None)), [3, 2]);
        assert_eq!(ids(queue.take(2, 2, None)), [1, 3]);
        // 3 and 2 were sent twice: gone.
        assert_eq!(ids(queue.take(5, 2, None)), [2, 1]);
        assert_eq!(queue.len(), 0);
    }

    #[test]
    fn a_newer_claim_replaces_the_queued_one() {
        let mut queue = Broadcasts::default();
        queue.push(alive(1, 0));
        queue.push(alive(2, 0));
        assert_eq!(queue.take(1, 3, None), [alive(2, 0)]);
        queue.push(alive(2, 1));
        assert_eq!(queue.len(), 2);
        assert_eq!(queue.take(5, 3, Some(NodeId(1))), [alive(2, 1)]);
        assert_eq!(queue.take(5, 3, None), [alive(1, 0), alive(2, 1)]);
    }
}
