//! Puts and deletes: forwarding to a primary, coordinating, and serving
//! replicas' writes.

use super::dedup::Admission;
use super::durability::Deferred;
use super::store::{Record, StoreError};
use super::{Node, Pending};
use crate::NodeId;
use crate::client::{ClientError, Consistency, Context, Reply, Request};
use crate::lsm::WriteError;
use crate::message::{Message, ReplicaError, Tag};
use crate::quorum::Tally;
use crate::request::{Origin, PutRequest};
use crate::ring::{self, PlacedKey};
use crate::version::{Actor, CausalContext, Value};

/// Why a primary did not coordinate a write.
enum Refusal {
    Client(ClientError),
    /// Its own copy of the key is unreadable, so it cannot know the key's
    /// history. Another primary with a readable copy should coordinate; the
    /// write comes back to be forwarded.
    LocalCopyUnreadable {
        reason: String,
        write: Write,
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

/// A copy must fail this many reads in a row before a write replaces it:
/// a read corrupted in flight does not repeat, and replacing a copy that
/// is in fact intact would drop the versions it holds.
const REPLACE_READS_MAX: usize = 4;

/// A put or delete, once its fields are pulled out of the request.
struct Write {
    key: Vec<u8>,
    /// The key's ring position, computed once for placement and storage.
    position: u64,
    value: Value,
    context: Option<Context>,
    consistency: Consistency,
}

impl Write {
    fn from_request(request: Request) -> Option<Write> {
        let (key, value, context, consistency) = match request {
            Request::Put { key, value, context, write } => (key, Value::Live(value), context, write),
            Request::Delete { key, context, write } => (key, Value::Tombstone, context, write),
            Request::Get { .. } => return None,
        };
        Some(Write { position: ring::position(&key), key, value, context, consistency })
    }

    fn placed(&self) -> PlacedKey<'_> {
        PlacedKey::known(&self.key, self.position)
    }

    fn into_request(self) -> Request {
        let Write { key, value, context, consistency: write, .. } = self;
        match value {
            Value::Live(value) => Request::Put { key, value, context, write },
            Value::Tombstone => Request::Delete { key, context, write },
        }
    }
}

impl Node {
    /// A put or delete arrived from a client or a forwarding peer. Only a
    /// primary replica coordinates writes: it holds the key's history, so
    /// the dots it issues are unique.
    pub(super) fn start_write(&mut self, origin: Origin, request: Request) {
        self.start_forwarded_write(origin, request, Unreadable::Refuse);
    }

    fn start_forwarded_write(&mut self, origin: Origin, request: Request, unreadable: Unreadable) {
        let Some(write) = Write::from_request(request) else { return };
        match write.value {
            Value::Live(_) => self.stats.puts += 1,
            Value::Tombstone => self.stats.deletes += 1,
        }
        let primaries = self.ring.range_at(write.position).preference.to_vec();
        if !primaries.contains(&self.id) {
            match origin {
                Origin::Client(client) => self.forward(client, write.into_request(), &primaries),
                // The forwarder's ring disagrees with ours; never forward twice.
                Origin::Forwarded { .. } => {
                    self.answer(origin, Reply::Failed(ClientError::Unavailable { needed: 1, reachable: 0 }));
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
                        self.forward(client, write.into_request(), &others);
                    } else {
                        self.coordinate_or_forward(origin, write, primaries, Unreadable::Replace);
                    }
                }
                Origin::Forwarded { .. } => {
                    self.answer(origin, Reply::Failed(ClientError::CoordinatorCopyUnreadable { reason }));
                }
            },
            Err(Refusal::Client(error)) => self.answer(origin, Reply::Failed(error)),
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
    fn forward(&mut self, client: crate::client::RequestId, request: Request, candidates: &[NodeId]) {
        let Some((at, target, target_boot)) = self.forward_target(candidates) else {
            self.stats.unavailable += 1;
            let reply = Reply::Failed(ClientError::Unavailable { needed: 1, reachable: 0 });
            self.reply(client, reply);
            return;
        };
        self.stats.forwarded += 1;
        let tag = self.next_tag();
        // Outlive the coordinator's own deadline, so its answer (even a
        // timeout) normally arrives before ours fires.
        let deadline = self.now.mono + self.config.request_timeout * 2;
        let untried = candidates.get(at + 1..).unwrap_or_default().to_vec();
        // The last primary that can be tried must not refuse over its copy.
        let replace_unreadable = self.forward_target(&untried).is_none();
        let fallback = (!replace_unreadable).then(|| (request.clone(), untried));
        self.track(tag, Pending::Forward { client, deadline, fallback });
        self.send(target, Message::Forward { tag, target_boot, request, replace_unreadable });
    }

    pub(super) fn on_forward(
        &mut self,
        from: NodeId,
        tag: Tag,
        target_boot: u64,
        request: Request,
        replace_unreadable: bool,
    ) {
        if target_boot != self.boot {
            // Meant for an earlier life of this node, which may have
            // coordinated it already: refusing is safe, nothing is written.
            let reply = Reply::Failed(ClientError::Unavailable { needed: 1, reachable: 0 });
            self.send(from, Message::ForwardReply { tag, reply });
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
                Admission::New => self.admit(&request),
            };
        if let Err(error) = admitted {
            self.stats.rejected += 1;
            self.send(from, Message::ForwardReply { tag, reply: Reply::Failed(error) });
            return;
        }
        let unreadable = if replace_unreadable { Unreadable::Replace } else { Unreadable::Refuse };
        self.start_forwarded_write(Origin::Forwarded { from, tag }, request, unreadable);
    }

    pub(super) fn on_forward_reply(&mut self, tag: Tag, reply: Reply) {
        if !matches!(self.pending.get(&tag), Some(Pending::Forward { .. })) {
            return;
        }
        let Some(Pending::Forward { client, fallback, .. }) = self.untrack(tag) else { return };
        match (reply, fallback) {
            // That primary refused before issuing a dot: another may coordinate.
            (Reply::Failed(ClientError::CoordinatorCopyUnreadable { .. }), Some((request, untried))) => {
                self.forward(client, request, &untried);
            }
            (reply, _) => self.reply(client, reply),
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
        let needed = write.consistency.required(count(primaries.len()))?;
        let asked = self.up_primaries(&primaries);
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
        let seen = match &write.context {
            Some(context) => CausalContext::from_bytes(&context.0)
                .map_err(|error| ClientError::BadContext { reason: error.to_string() })?,
            None => CausalContext::new(),
        };
        let stored = match (self.store.read(write.placed()), unreadable) {
            (Ok(stored), _) => stored,
            (Err(error), Unreadable::Refuse) => {
                return Err(Refusal::LocalCopyUnreadable { reason: error.to_string(), write });
            }
            (Err(_), Unreadable::Replace) => self.read_or_replace(write.placed()),
        };
        let mut record = stored.unwrap_or(Record { object: Default::default(), local_epoch: None });
        let epoch = match record.local_epoch {
            Some(epoch) => epoch,
            None => self.store.allocate_epoch().map_err(|error| storage_failed(&error.to_string()))?,
        };
        // Without a context, the write replaces what this replica holds.
        let seen = if write.context.is_some() { seen } else { record.object.context().clone() };
        let actor = Actor { node: self.id, incarnation: self.store.incarnation(), epoch };
        let Some(dot) = record.object.write(actor, &seen, write.value, self.now.wall_ms) else {
            return Err(ClientError::BadContext { reason: "context counter at its maximum".into() }.into());
        };
        let siblings = record.object.siblings().len();
        if siblings > self.config.siblings_max as usize {
            let max = self.config.siblings_max.into();
            return Err(ClientError::SiblingsTooMany { count: siblings as u64, max }.into());
        }
        record.local_epoch = Some(epoch);
        let lsn =
            self.store.write(PlacedKey::known(&write.key, write.position), &record).map_err(write_failed)?;
        let mut reply_context = seen;
        reply_context.insert(dot);
        if primaries == [self.id] && self.sync_interval().is_some() {
            // The only replica, and acknowledgements wait for no sync: the
            // write is complete once the burst's write-out hands it to the
            // kernel, with no request to track.
            let reply = Reply::Written { context: Context(reply_context.to_bytes()) };
            self.when_durable(Some(lsn), Deferred::Answer { origin, reply });
            return Ok(());
        }
        let tag = self.next_tag();
        let request = PutRequest {
            origin,
            key: write.key,
            object: record.object,
            reply_context,
            tally: Tally::new(asked, usize::from(needed)),
            replied: false,
            deadline: self.now.mono + self.config.request_timeout,
        };
        self.track(tag, Pending::Put(request));
        self.when_durable(Some(lsn), Deferred::LocalWrite { tag });
        Ok(())
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
        let others: Vec<NodeId> =
            request.tally.asked().iter().copied().filter(|&node| node != self.id).collect();
        if !others.is_empty() {
            let (key, object) = (request.key.clone(), request.object.clone());
            for node in others {
                self.send(node, Message::Replicate { tag, key: key.clone(), object: object.clone() });
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
    fn conclude_put(&mut self, tag: Tag, reply: Option<Reply>) {
        let Some(Pending::Put(request)) = self.pending.get(&tag) else { return };
        let origin = request.origin;
        if let Some(reply) = reply {
            self.answer(origin, reply);
            self.untrack(tag);
        }
    }

    /// A coordinator asks this replica to store its version of `key`.
    pub(super) fn on_replicate(
        &mut self,
        from: NodeId,
        tag: Tag,
        key: Vec<u8>,
        object: crate::version::Object,
    ) {
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
    pub(super) fn on_repair(&mut self, key: Vec<u8>, object: crate::version::Object) {
        // A failure here only leaves this replica behind; the next read or
        // anti-entropy round repairs it again.
        let _ = self.merge_local(PlacedKey::new(&key), &object);
    }

    /// Merges `object` into the local record of `key`, writing only if
    /// something changed.
    pub(super) fn merge_local(
        &mut self,
        key: PlacedKey<'_>,
        object: &crate::version::Object,
    ) -> Result<(), ReplicaError> {
        if self.store.engine().is_poisoned() {
            return Err(ReplicaError::StorageFailed);
        }
        let mut record = match self.store.read(key) {
            Ok(stored) => stored.unwrap_or(Record { object: Default::default(), local_epoch: None }),
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
                return Ok(());
            }
        };
        if record.object.merge(object) {
            self.store.write(key, &record).map_err(|_| ReplicaError::StorageFailed)?;
        }
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
