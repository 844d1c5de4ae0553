//! Persist, then send: work that must wait until the WAL holds a write.
//!
//! Anything that reveals a write to another node or a client — an
//! acknowledgement, a read reply, a coordinator's own copy counting towards
//! a quorum — waits here until the write's Lsn is safe to show: under the
//! `always` policy, until a sync covers it, so that if the node crashed
//! before that, nothing outside it would have seen the write, and a dot lost
//! in the crash can be issued again without harm; under `periodic`, until
//! the log holding it is handed to the kernel (the burst's write-out), so a
//! crash of the process never loses what was shown.

use std::collections::BTreeMap;

use crate::NodeId;
use crate::lsm::Lsn;
use crate::message::Tag;
use crate::request::Origin;
use crate::version::{CausalContext, Object};

/// An action held until its Lsn is safe to show.
#[derive(Debug)]
pub enum Deferred {
    /// A complete answer to a write that needs nothing else: the only
    /// replica's acknowledgement under `periodic`.
    Answer { origin: Origin, context: CausalContext },
    /// The coordinator's own write for the put with this tag.
    LocalWrite { tag: Tag },
    /// The coordinator's own answer to the get with this tag.
    LocalRead { tag: Tag, object: Option<Object> },
    /// A replica's acknowledgement of `Message::Replicate`.
    ReplicateAck { to: NodeId, tag: Tag },
    /// A replica's answer to `Message::Read`.
    ReadReply { to: NodeId, tag: Tag, object: Option<Object> },
}

#[derive(Debug, Default)]
pub struct Barrier {
    /// Keyed by Lsn, then by arrival, so release keeps the order actions
    /// were deferred in; one tree node per action, no per-Lsn vector.
    waiting: BTreeMap<(Lsn, u64), Deferred>,
    arrivals: u64,
}

impl Barrier {
    pub fn defer(&mut self, lsn: Lsn, action: Deferred) {
        self.arrivals += 1;
        self.waiting.insert((lsn, self.arrivals), action);
    }

    /// Everything whose Lsn is now durable, oldest first.
    pub fn release(&mut self, durable: Lsn) -> Vec<Deferred> {
        let mut due = Vec::new();
        while let Some(entry) = self.waiting.first_entry() {
            if entry.key().0 > durable {
                break;
            }
            due.push(entry.remove());
        }
        due
    }

    /// Everything still waiting: once the engine is poisoned none of it will happen.
    pub fn drain(&mut self) -> Vec<Deferred> {
        core::mem::take(&mut self.waiting).into_values().collect()
    }

    /// The lowest Lsn anything waits for.
    pub fn first(&self) -> Option<Lsn> {
        self.waiting.keys().next().map(|(lsn, _)| *lsn)
    }

    pub fn len(&self) -> usize {
        self.waiting.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(seq: u64) -> Tag {
        Tag { boot: 0, seq }
    }

    #[test]
    fn releases_exactly_what_the_durable_point_covers() {
        let mut barrier = Barrier::default();
        barrier.defer(Lsn(5), Deferred::LocalWrite { tag: tag(5) });
        barrier.defer(Lsn(3), Deferred::LocalWrite { tag: tag(3) });
        barrier.defer(Lsn(9), Deferred::LocalWrite { tag: tag(9) });
        let released = barrier.release(Lsn(5));
        let tags: Vec<u64> = released
            .iter()
            .map(|action| match action {
                Deferred::LocalWrite { tag } => tag.seq,
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(tags, [3, 5]);
        assert_eq!(barrier.first(), Some(Lsn(9)));
        assert_eq!(barrier.drain().len(), 1);
        assert_eq!(barrier.len(), 0);
    }
}
