//! Puts and deletes: forwarding to a primary, coordinating, and serving
//! replicas' writes.

use super::dedup::Admission;
use super::durability::Deferred;
use super::store::{Record, StoreError};
use super::{Node, Pending};
use crate::NodeId;
use crate::client::{ClientError, RequestId};
use crate::lsm::{Lsn, WriteError};
use crate::merkle;
use crate::message::{Message, ReplicaError, Tag, Write};
use crate::quorum::Tally;
use crate::request::{Origin, PutRequest, WriteResult};
use crate::ring::PlacedKey;
use crate::version::{Actor, CausalContext, OBJECT_SIBLINGS_MAX, Object, Value};

/// Why a primary did not coordinate a write.
enum Refusal {
    Client(ClientError),
    /// Its own copy of the key is unreadable, so it cannot know the key's
    /// history. Another primary with a readable copy should coordinate; the
    /// write comes back to be forwarded.
    LocalCopyUnreadable {
        reason: String,
        write: Box<Write>,
    },
}

impl From<ClientError> for Refusal {
    fn from(error: ClientError) -> Refusal {
        Refusal::Client(error)
    }
}

/// What a primary whose own copy of the key is unreadable does with a write.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Unreadable {
    /// Refuse it, so that a primary with a readable copy coordinates it.
    Refuse,
    /// No other primary can: replace the copy. A write needs no old value,
    /// and dots stay unique because they come from a fresh epoch, as for a
    /// key this node never held.
    Replace,
}

/// A version a coordinator issued and logged.
struct Issued {
    key: Vec<u8>,
    object: Object,
    /// What the write replaced plus its own dot: the client's new context.
    reply_context: CausalContext,
    lsn: Lsn,
}

/// A copy must fail this many reads in a row before a write replaces it:
/// a read corrupted in flight does not repeat, and replacing a copy that
/// is in fact intact would drop the versions it holds.
const REPLACE_READS_MAX: usize = 4;

impl Node {
    /// A put or delete arrived from a client (its context parsed, its read
    /// done if it asked for one) or a forwarding peer. Only a primary
    /// replica coordinates writes: it holds the key's history, so the dots
    /// it issues are unique.
    pub(super) fn start_write(&mut self, origin: Origin, write: Write) {
        self.start_forwarded_write(origin, write, Unreadable::Refuse);
    }

    fn start_forwarded_write(&mut self, origin: Origin, write: Write, unreadable: Unreadable) {
        match write.value {
            Value::Live(_) => self.stats.puts += 1,
            Value::Tombstone => self.stats.deletes += 1,
        }
        let primaries = self.ring.preference_list(&write.key).to_vec();
        if !primaries.contains(&self.id) {
            match origin {
                Origin::Client(client) => self.forward(client, write, &primaries),
                // The forwarder's ring disagrees with ours; never forward twice.
                Origin::Forwarded { .. } => {
                    self.answer(origin, Err(ClientError::Unavailable { needed: 1, reachable: 0 }));
                }
            }
            return;
        }
        self.coordinate_or_forward(origin, write, primaries, unreadable);
    }

    /// Coordinates a write as a primary. If its own copy is unreadable and
    /// `unreadable` allows it, another primary coordinates instead: the
    /// client's write is forwarded to one, a forwarded write goes back to
    /// its forwarder to try the next. With none left, this one replaces its
    /// copy.
    fn coordinate_or_forward(
        &mut self,
        origin: Origin,
        write: Write,
        primaries: Vec<NodeId>,
        unreadable: Unreadable,
    ) {
        match self.coordinate_write(origin, write, primaries.clone(), unreadable) {
            Ok(()) => {}
            Err(Refusal::LocalCopyUnreadable { reason, write }) => match origin {
                Origin::Client(client) => {
                    let others: Vec<NodeId> =
                        primaries.iter().copied().filter(|&node| node != self.id).collect();
                    if self.forward_target(&others).is_some() {
                        self.forward(client, *write, &others);
                    } else {
                        self.coordinate_or_forward(origin, *write, primaries, Unreadable::Replace);
                    }
                }
                Origin::Forwarded { .. } => {
                    self.answer(origin, Err(ClientError::CoordinatorCopyUnreadable { reason }));
                }
            },
            Err(Refusal::Client(error)) => self.answer(origin, Err(error)),
        }
    }

    /// The first node of `candidates` a write can be forwarded to now (up,
    /// with a boot known), its position and its boot.
    fn forward_target(&self, candidates: &[NodeId]) -> Option<(usize, NodeId, u64)> {
        candidates
            .iter()
            .enumerate()
            .find_map(|(at, &node)| Some((at, node, self.peers.boot(node)?)).filter(|_| self.is_up(node)))
    }

    /// Hands a write to the first reachable node of `candidates`; the ones
    /// after it are kept, to try next if its copy of the key is unreadable.
    fn forward(&mut self, client: RequestId, write: Write, candidates: &[NodeId]) {
        let Some((at, target, target_boot)) = self.forward_target(candidates) else {
            self.stats.unavailable += 1;
            self.reply_write(client, Err(ClientError::Unavailable { needed: 1, reachable: 0 }));
            return;
        };
        invariant!(self, target != self.id && self.ring.preference_list(&write.key).contains(&target));
        self.stats.forwarded += 1;
        let tag = self.next_tag();
        // Outlive the coordinator's own deadline, so its answer (even a
        // timeout) normally arrives before ours fires.
        let deadline = self.now.mono + self.config.request_timeout * 2;
        let untried = candidates.get(at + 1..).unwrap_or_default().to_vec();
        // The last primary that can be tried must not refuse over its copy.
        let replace_unreadable = self.forward_target(&untried).is_none();
        let fallback = (!replace_unreadable).then(|| (write.clone(), untried));
        self.track(tag, Pending::Forward { client, deadline, fallback });
        self.send(target, Message::Forward { tag, target_boot, write, replace_unreadable });
    }

    pub(super) fn on_forward(
        &mut self,
        from: NodeId,
        tag: Tag,
        target_boot: u64,
        write: Write,
        replace_unreadable: bool,
    ) {
        if target_boot != self.boot {
            // Meant for an earlier life of this node: refused, since this
            // life cannot know whether that one coordinated it. Nothing is
            // written now, but a duplicate of this forward may have reached
            // the earlier life and been written there, its answer lost: the
            // forwarder must not tell its client that nothing was written.
            let result = Err(ClientError::CoordinatorRestarted);
            self.send(from, Message::ForwardReply { tag, result });
            return;
        }
        let window = self.config.request_timeout * 4;
        let admitted =
            match self.seen_forwards.admit(from, tag, self.now.mono, window, self.config.requests_max) {
                Admission::Duplicate => return,
                Admission::Full => Err(ClientError::Overloaded {
                    what: "forwarded requests remembered".into(),
                    limit: self.config.requests_max.into(),
                }),
                Admission::New => {
                    let value = match &write.value {
                        Value::Live(value) => Some(value.len()),
                        Value::Tombstone => None,
                    };
                    self.admit(&write.key, value)
                }
            };
        if let Err(error) = admitted {
            self.stats.rejected += 1;
            self.send(from, Message::ForwardReply { tag, result: Err(error) });
            return;
        }
        let unreadable = if replace_unreadable { Unreadable::Replace } else { Unreadable::Refuse };
        self.start_forwarded_write(Origin::Forwarded { from, tag }, write, unreadable);
    }

    pub(super) fn on_forward_reply(&mut self, tag: Tag, result: WriteResult) {
        if !matches!(self.pending.get(&tag), Some(Pending::Forward { .. })) {
            return;
        }
        let Some(Pending::Forward { client, fallback, .. }) = self.untrack(tag) else { return };
        match (result, fallback) {
            // That primary refused before issuing a dot: another may coordinate.
            (Err(ClientError::CoordinatorCopyUnreadable { .. }), Some((write, untried))) => {
                self.forward(client, write, &untried);
            }
            (result, _) => self.reply_write(client, result),
        }
    }

    /// Writes the new version locally; replication starts once it is durable.
    fn coordinate_write(
        &mut self,
        origin: Origin,
        write: Write,
        primaries: Vec<NodeId>,
        unreadable: Unreadable,
    ) -> Result<(), Refusal> {
        invariant!(self, primaries.contains(&self.id), "only a primary coordinates a write");
        let needed = write.consistency.required(count(primaries.len()))?;
        let mut asked = self.up_primaries(&primaries);
        let fallbacks = if write.strict { Vec::new() } else { self.fallbacks(&write.key, &primaries) };
        asked.extend(fallbacks.iter().map(|&(fallback, _)| fallback));
        let reachable = count(asked.len());
        if reachable < needed {
            self.stats.unavailable += 1;
            return Err(ClientError::Unavailable { needed, reachable }.into());
        }
        if self.store.engine().is_poisoned() {
            return Err(storage_failed(
                "a write to the disk failed earlier; writes are refused until restart",
            )
            .into());
        }
        let Issued { key, object, reply_context, lsn } = self.issue_version(write, unreadable)?;
        if primaries == [self.id] && self.sync_interval().is_some() {
            // The only replica, and acknowledgements wait for no sync: the
            // write is complete once the burst's write-out hands it to the
            // kernel, with no request to track.
            self.when_durable(Some(lsn), Deferred::Answer { origin, context: reply_context });
            return Ok(());
        }
        let tag = self.next_tag();
        let request = PutRequest {
            origin,
            key,
            object,
            reply_context,
            tally: Tally::new(asked, usize::from(needed)),
            fallbacks,
            replied: false,
            deadline: self.now.mono + self.config.request_timeout,
        };
        self.track(tag, Pending::Put(request));
        self.when_durable(Some(lsn), Deferred::LocalWrite { tag });
        Ok(())
    }

    /// Issues the write's version from this node's record of the key and
    /// appends the record to the log (not yet durable).
    fn issue_version(&mut self, write: Write, unreadable: Unreadable) -> Result<Issued, Refusal> {
        let position = PlacedKey::new(&write.key).position();
        // Whether the tree knows the version this write replaces.
        let mut old_known = true;
        let stored = match (self.store.read(PlacedKey::known(&write.key, position)), unreadable) {
            (Ok(stored), _) => stored,
            (Err(error), Unreadable::Refuse) => {
                return Err(Refusal::LocalCopyUnreadable {
                    reason: error.to_string(),
                    write: Box::new(write),
                });
            }
            (Err(_), Unreadable::Replace) => {
                let stored = self.read_or_replace(PlacedKey::known(&write.key, position));
                old_known = stored.is_some();
                stored
            }
        };
        let old = stored.as_ref().map(|record| merkle::version_hash(&record.object));
        let mut record = stored.unwrap_or(Record { object: Object::new(), local_epoch: None });
        let local = self.store.epoch_for(&record).map_err(|error| storage_failed(&error.to_string()))?;
        let Write { key, value, seen, .. } = write;
        // Without a context, the write replaces what this replica holds.
        let seen = seen.unwrap_or_else(|| record.object.context().clone());
        let actor = Actor { node: self.id, incarnation: local.incarnation, epoch: local.epoch };
        let Some(dot) = record.object.write(actor, &seen, value, self.now.wall_ms) else {
            return Err(ClientError::BadContext { reason: "context counter at its maximum".into() }.into());
        };
        // The dot is new: above every dot of its actor the record or the
        // context had seen, and the one sibling that carries it.
        invariant!(self, dot.actor == actor && dot.counter > seen.max_counter(actor));
        invariant!(self, record.object.context().max_counter(actor) == dot.counter);
        invariant!(self, record.object.siblings().iter().filter(|sibling| sibling.dot == dot).count() == 1);
        invariant!(self, record.object.invariants().is_ok(), "{:?}", record.object.invariants());
        let siblings = record.object.siblings().len();
        if siblings > self.config.siblings_max as usize {
            let max = self.config.siblings_max.into();
            return Err(ClientError::SiblingsTooMany { count: siblings as u64, max }.into());
        }
        record.local_epoch = Some(local);
        let lsn = self.store.write(PlacedKey::known(&key, position), &record).map_err(write_failed)?;
        if old_known {
            self.tree_update(PlacedKey::known(&key, position), old, &record.object);
        } else {
            self.tree_lost_track(PlacedKey::known(&key, position));
        }
        let mut reply_context = seen;
        reply_context.insert(dot);
        invariant!(self, record.object.context().includes(&reply_context));
        Ok(Issued { key, object: record.object, reply_context, lsn })
    }

    /// A copy that failed to read, read again until it reads or fails
    /// `REPLACE_READS_MAX` times in a row. Then it is damaged for good, and
    /// the write that follows replaces it: `None`, as if the key were new.
    fn read_or_replace(&mut self, key: PlacedKey<'_>) -> Option<Record> {
        for _ in 1..REPLACE_READS_MAX {
            if let Ok(stored) = self.store.read(key) {
                return stored;
            }
        }
        self.stats.corrupt_records_replaced += 1;
        None
    }

    /// The coordinator's own copy is durable: it counts, and the replicas
    /// may now see the write.
    pub(super) fn on_local_write_durable(&mut self, tag: Tag) {
        let Some(Pending::Put(request)) = self.pending.get_mut(&tag) else { return };
        let reply = request.record(self.id, true);
        let fallbacks = request.fallbacks.clone();
        let replicas: Vec<NodeId> = request
            .tally
            .asked()
            .iter()
            .copied()
            .filter(|&node| node != self.id && !fallbacks.iter().any(|&(fallback, _)| fallback == node))
            .collect();
        // What replicas receive holds the version the client is told about;
        // `on_replicate` checks the other half once it has merged it.
        invariant!(self, request.object.context().includes(&request.reply_context));
        if !replicas.is_empty() || !fallbacks.is_empty() {
            let (key, object) = (request.key.clone(), request.object.clone());
            for node in replicas {
                self.send(node, Message::Replicate { tag, key: key.clone(), object: object.clone() });
            }
            for (fallback, owner) in fallbacks {
                let (key, object) = (key.clone(), object.clone());
                self.send(fallback, Message::Hint { tag, owner, key, object });
            }
        }
        self.conclude_put(tag, reply);
    }

    pub(super) fn on_local_write_failed(&mut self, tag: Tag) {
        let Some(Pending::Put(request)) = self.pending.get_mut(&tag) else { return };
        let reply = request.record(self.id, false);
        self.conclude_put(tag, reply);
    }

    pub(super) fn on_replicate_ack(&mut self, from: NodeId, tag: Tag, success: bool) {
        let Some(Pending::Put(request)) = self.pending.get_mut(&tag) else { return };
        let reply = request.record(from, success);
        self.conclude_put(tag, reply);
    }

    /// Answers a put once its outcome is decided and forgets it then: the
    /// acknowledgements of slower replicas would change nothing.
    fn conclude_put(&mut self, tag: Tag, result: Option<WriteResult>) {
        let Some(Pending::Put(request)) = self.pending.get(&tag) else { return };
        let origin = request.origin;
        if let Some(result) = result {
            invariant!(self, result.is_err() || request.tally.succeeded().len() >= request.tally.needed());
            self.answer(origin, result);
            self.untrack(tag);
        }
    }

    /// A coordinator asks this replica to store its version of `key`.
    pub(super) fn on_replicate(&mut self, from: NodeId, tag: Tag, key: Vec<u8>, object: Object) {
        self.stats.replica_writes += 1;
        match self.merge_local(PlacedKey::new(&key), &object) {
            Ok(()) => {
                let lsn = self.store.pending_lsn(&key);
                self.when_durable(lsn, Deferred::ReplicateAck { to: from, tag });
            }
            Err(error) => self.send(from, Message::ReplicateAck { tag, result: Err(error) }),
        }
    }

    /// Read repair from a coordinator: merge, answer nobody.
    pub(super) fn on_repair(&mut self, key: Vec<u8>, object: Object) {
        // A failure here only leaves this replica behind; the next read or
        // anti-entropy round repairs it again.
        let _ = self.merge_local(PlacedKey::new(&key), &object);
    }

    /// Merges `object` into the local record of `key`, writing only if
    /// something changed. A merge that would hold more siblings than any
    /// object may is refused and changes nothing, so every record stored
    /// decodes again.
    pub(super) fn merge_local(&mut self, key: PlacedKey<'_>, object: &Object) -> Result<(), ReplicaError> {
        if self.store.engine().is_poisoned() {
            return Err(ReplicaError::StorageFailed);
        }
        let stored = match self.store.read(key) {
            Ok(stored) => stored,
            // The local copy cannot be read: replace it with what arrived. Its
            // history is gone, so this node starts a fresh epoch for the key
            // the next time it coordinates a write.
            Err(_) => {
                self.stats.corrupt_records_replaced += 1;
                let replaced = if object.is_empty() {
                    // The readable copies hold nothing: neither does this one now.
                    self.store.remove(key)
                } else {
                    self.store.write(key, &Record { object: object.clone(), local_epoch: None })
                };
                replaced.map_err(|_| ReplicaError::StorageFailed)?;
                self.tree_lost_track(key);
                return Ok(());
            }
        };
        let old = stored.as_ref().map(|record| merkle::version_hash(&record.object));
        let mut record = stored.unwrap_or(Record { object: Object::new(), local_epoch: None });
        if record.object.merge(object) {
            if record.object.siblings().len() > OBJECT_SIBLINGS_MAX {
                return Err(ReplicaError::SiblingsTooMany);
            }
            self.store.write(key, &record).map_err(|_| ReplicaError::StorageFailed)?;
            self.tree_update(key, old, &record.object);
        }
        // What was sent is now held, whatever this replica held before.
        invariant!(self, record.object.context().includes(object.context()));
        invariant!(self, record.object.invariants().is_ok(), "{:?}", record.object.invariants());
        Ok(())
    }
}

/// A write the store refused: storage that is behind is a limit the
/// client may retry after; anything else is a storage failure.
fn write_failed(error: StoreError) -> ClientError {
    match error {
        StoreError::Write(WriteError::Stalled { limit }) => {
            ClientError::Overloaded { what: "memtable bytes while a flush runs".into(), limit }
        }
        error => storage_failed(&error.to_string()),
    }
}

fn storage_failed(reason: &str) -> ClientError {
    ClientError::StorageFailed { reason: reason.to_owned() }
}

fn count(n: usize) -> u8 {
    u8::try_from(n).unwrap_or(u8::MAX)
}
