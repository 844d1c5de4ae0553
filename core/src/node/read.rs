//! Gets: coordinating a read across the replicas, serving replicas' reads,
//! and read repair.

use super::durability::Deferred;
use super::{Event, Node, Pending};
use crate::NodeId;
use crate::client::{ClientError, Consistency, RequestId};
use crate::message::{Message, ReplicaError, Tag};
use crate::quorum::Tally;
use crate::request::{GetRequest, Seen, WriteAfter};
use crate::ring::PlacedKey;
use crate::version::{OBJECT_SIBLINGS_MAX, Object};

impl Node {
    /// Any node coordinates a get: reading issues no dots. With `then`, the
    /// read is the first half of a put or delete (see `client`).
    pub(super) fn coordinate_get(
        &mut self,
        client: RequestId,
        key: Vec<u8>,
        read: Consistency,
        then: Option<WriteAfter>,
    ) {
        self.stats.gets += 1;
        let placed = PlacedKey::new(&key);
        let primaries = self.ring.range_at(placed.position()).preference.to_vec();
        let needed = match read.required(count(primaries.len())) {
            Ok(needed) => needed,
            Err(error) => return self.read_decided(client, key, then, Err(error)),
        };
        let asked = self.up_primaries(&primaries);
        let reachable = count(asked.len());
        if reachable < needed {
            self.stats.unavailable += 1;
            let error = ClientError::Unavailable { needed, reachable };
            return self.read_decided(client, key, then, Err(error));
        }
        if primaries == [self.id] {
            if let Some(seen) = self.read_local_now(placed) {
                return self.read_decided(client, key, then, Ok(seen));
            }
        }
        invariant!(self, asked.iter().all(|node| primaries.contains(node)), "a read asks only primaries");
        let tag = self.next_tag();
        let deadline = self.now.mono + self.config.request_timeout;
        let tally = Tally::new(asked.clone(), usize::from(needed));
        let request = GetRequest::new(client, key.clone(), then, tally, deadline);
        self.track(tag, Pending::Get(request));
        for node in asked {
            if node == self.id {
                self.read_local(tag, placed);
            } else {
                self.send(node, Message::Read { tag, key: key.clone() });
            }
        }
    }

    /// What a read of a key whose one replica is this node sees, when its
    /// copy is readable and durable: no other copy to wait for, merge or
    /// repair, so no request to track. `None` leaves it to the full path.
    fn read_local_now(&mut self, key: PlacedKey<'_>) -> Option<Seen> {
        if self.store.pending_lsn(key.key()).is_some() {
            return None;
        }
        let record = self.store.read(key).ok()?;
        Some(record.map_or_else(|| Seen::of(&Object::new()), |record| Seen::of(&record.object)))
    }

    fn read_local(&mut self, tag: Tag, key: PlacedKey<'_>) {
        match self.store.read(key) {
            Ok(record) => {
                let lsn = self.store.pending_lsn(key.key());
                let object = record.map(|record| record.object);
                self.when_durable(lsn, Deferred::LocalRead { tag, object });
            }
            Err(_) => self.on_read_reply(self.id, tag, Err(())),
        }
    }

    /// A coordinator asks for this replica's copy of `key`. A copy that is
    /// not yet durable is sent only once it is.
    pub(super) fn on_read(&mut self, from: NodeId, tag: Tag, key: Vec<u8>) {
        self.stats.replica_reads += 1;
        match self.store.read(PlacedKey::new(&key)) {
            Ok(record) => {
                let lsn = self.store.pending_lsn(&key);
                let object = record.map(|record| record.object);
                self.when_durable(lsn, Deferred::ReadReply { to: from, tag, object });
            }
            Err(_) => self.send(from, Message::ReadReply { tag, result: Err(ReplicaError::Corrupt) }),
        }
    }

    pub(super) fn on_read_reply(&mut self, from: NodeId, tag: Tag, result: Result<Option<Object>, ()>) {
        let Some(Pending::Get(request)) = self.pending.get_mut(&tag) else { return };
        // A copy counted for the first time is in the merge afterwards.
        let first =
            request.tally.asked().contains(&from) && !request.answers.iter().any(|(node, _)| *node == from);
        let counted = match &result {
            Ok(Some(object)) if first && self.config.check_invariants => Some(object.context().clone()),
            _ => None,
        };
        let decided = request.record(from, result);
        invariant!(self, counted.is_none_or(|context| request.merged.context().includes(&context)));
        let (client, finished) = (request.client, request.finished());
        if let Some(outcome) = decided {
            invariant!(self, request.replied, "a read decided but not marked answered");
            let (key, then) = (request.key.clone(), request.then.take());
            self.read_decided(client, key, then, outcome);
        }
        if finished {
            self.finish_get(tag);
        } else if self
            .pending
            .get(&tag)
            .is_some_and(|pending| matches!(pending, Pending::Get(request) if request.replied))
            && self.lingering.insert(tag)
        {
            self.bound_lingering();
        }
    }

    /// Forgets a get and repairs the replicas that answered with less.
    fn finish_get(&mut self, tag: Tag) {
        if let Some(Pending::Get(request)) = self.untrack(tag) {
            self.read_repair(&request);
        }
    }

    /// Past `requests_max` answered gets waiting for slow replicas, the
    /// oldest is finished now with the answers it has.
    fn bound_lingering(&mut self) {
        while self.lingering.len() > self.config.requests_max as usize {
            let Some(oldest) = self.lingering.first().copied() else { break };
            self.finish_get(oldest);
        }
    }

    /// Sends the merged version to every replica that answered with less.
    pub(super) fn read_repair(&mut self, request: &GetRequest) {
        // Copies that merge past the limit of siblings cannot be sent: each
        // replica keeps its own, as a write over the limit would be refused.
        if !self.config.read_repair || request.merged.siblings().len() > OBJECT_SIBLINGS_MAX {
            return;
        }
        let stale = request.stale_replicas();
        if stale.is_empty() {
            return;
        }
        // Only replicas asked are repaired, and with an object they accept.
        invariant!(self, stale.iter().all(|node| request.tally.asked().contains(node)));
        invariant!(self, request.merged.invariants().is_ok(), "{:?}", request.merged.invariants());
        self.stats.read_repairs += stale.len() as u64;
        for &node in &stale {
            if node == self.id {
                // Best effort, as for a repair from a peer.
                let _ = self.merge_local(PlacedKey::new(&request.key), &request.merged);
            } else {
                let message = Message::Repair { key: request.key.clone(), object: request.merged.clone() };
                self.send(node, message);
            }
        }
        self.outputs.push_back(super::Output::Event(Event::ReadRepair { replicas: stale }));
    }
}

fn count(n: usize) -> u8 {
    u8::try_from(n).unwrap_or(u8::MAX)
}
