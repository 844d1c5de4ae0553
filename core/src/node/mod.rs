//! One storage node's protocol state: the only `handle_*` / `poll_*` surface
//! of the core.
//!
//! A node coordinates the client requests it receives (gets anywhere, puts and
//! deletes on a primary replica of the key, forwarding them there otherwise),
//! serves replicas' reads and writes for the keys it holds, and asks its driver
//! for syncs. See the crate documentation for the order of calls.

/// Asserts a condition on the node's own state when the node checks its
/// invariants (`Config::check_invariants`: in the simulator and in debug
/// builds). Bytes from peers, disks and clients never reach one unparsed,
/// so a failure is a bug in keel, never bad input.
macro_rules! invariant {
    ($node:expr, $condition:expr $(, $($message:tt)+)?) => {
        if $node.config.check_invariants {
            assert!($condition $(, $($message)+)?);
        }
    };
}

mod anti_entropy;
mod client;
mod config;
mod dedup;
mod durability;
mod handoff;
mod io;
mod peers;
mod read;
mod store;
mod timers;
mod write;

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{Rng, SeedableRng};
use thiserror::Error;

pub use self::anti_entropy::{AntiEntropyConfig, AntiEntropyStats};
pub use self::config::{Config, ConfigError, HintConfig, SIBLINGS_MAX_LIMIT};
pub use self::io::{Event, Input, Output};
pub use self::store::{
    LocalEpoch, Migration, RECORD_KEY_HEADER_BYTES, Record, STORAGE_FORMAT, ScanChunk, ScanCursor, ScanLimit,
    ScannedRecord, StoreError, encode_record_key, rewrite_as_format_1,
};

use self::anti_entropy::AntiEntropy;
use self::dedup::SeenForwards;
use self::durability::{Barrier, Deferred};
use self::peers::Peers;
use self::store::Store;
use self::timers::{Timer, Timers};
use crate::client::{ClientError, Context, Read, Replaced, Reply, RequestId, Written};
use crate::disk::{Disk, DiskError};
use crate::lsm::{self, EngineStats, Lsn, SyncRequest};
use crate::message::{Acknowledged, Message, Tag, Write};
use crate::request::{GetRequest, Origin, PutRequest, WriteResult};
use crate::ring::{PlacedKey, PositionRange, Ring, RingError};
use crate::time::{Instant, Now};
use crate::version::Object;
use crate::{FixedHasher, NodeId};

/// Why a node could not start.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum OpenError {
    #[error("invalid configuration: {0}")]
    Config(#[from] ConfigError),
    #[error("invalid ring: {0}")]
    Ring(#[from] RingError),
    #[error("node {0} is not a member of the configured cluster")]
    NotAMember(NodeId),
    /// Synced records were lost to damage and this node holds the only
    /// copy of its keys; nothing on the disk was changed.
    #[error(
        "{0}. This node is the only replica of its keys, so nothing can restore them; it was left untouched. Open it with accept_data_loss to go on without them (the damaged file is then kept as evidence)"
    )]
    RecordsLost(lsm::LossReport),
    #[error("storage could not be opened: {0}")]
    Storage(lsm::OpenError),
}

/// Counters a node keeps about its own work.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeStats {
    pub gets: u64,
    pub puts: u64,
    pub deletes: u64,
    pub forwarded: u64,
    pub replica_writes: u64,
    pub replica_reads: u64,
    pub read_repairs: u64,
    /// Local copies found unreadable and rewritten: from a replica's copy,
    /// or replaced by a write when no replica held a readable one.
    pub corrupt_records_replaced: u64,
    pub timeouts: u64,
    pub unavailable: u64,
    pub rejected: u64,
    pub requests_in_flight: u64,
    pub unsynced_keys: u64,
    /// Acknowledgements and replies waiting for a sync.
    pub waiting_for_sync: u64,
    /// Hints stored for replicas that were down, handed over to them, and
    /// dropped (refused at a bound, or too old to hand over).
    pub hints_stored: u64,
    pub hints_delivered: u64,
    pub hints_dropped: u64,
    /// Hints held now.
    pub hints_pending: u64,
    /// Client keys stored on this node (its copies as a replica), an
    /// estimate from storage counts that errs high: see `Store::keys_estimate`.
    pub keys_estimate: u64,
    pub anti_entropy: AntiEntropyStats,
    pub engine: EngineStats,
}

/// A request in progress on this node.
#[derive(Debug)]
enum Pending {
    Get(GetRequest),
    Put(PutRequest),
    /// A hint handed over to its owner.
    Handoff(handoff::Delivery),
    /// A put or delete handed to a primary; its answer goes to `client`.
    Forward {
        client: RequestId,
        deadline: Instant,
        /// The write and the primaries not yet tried, kept only when there
        /// are any.
        fallback: Option<(Write, Vec<NodeId>)>,
    },
}

impl Pending {
    fn deadline(&self) -> Instant {
        match self {
            Pending::Get(request) => request.deadline,
            Pending::Put(request) => request.deadline,
            Pending::Forward { deadline, .. } => *deadline,
            Pending::Handoff(delivery) => delivery.deadline,
        }
    }
}

/// One storage node. Performs no I/O and reads no clock.
#[derive(Debug)]
pub struct Node {
    id: NodeId,
    config: Config,
    ring: Ring,
    store: Store,
    boot: u64,
    seq_next: u64,
    now: Now,
    peers: Peers,
    timers: Timers,
    /// Requests in flight. A hash map: one insert and one removal per
    /// request, where a tree would shift large entries around.
    pending: hashbrown::HashMap<Tag, Pending, FixedHasher>,
    /// Gets already answered that still wait for slower replicas, to
    /// repair them. They no longer count against admission, and past
    /// `requests_max` of them the oldest is finished early. Ordered by tag,
    /// which is the order they were made in.
    lingering: BTreeSet<Tag>,
    /// Forwards already coordinated, so a duplicated message is not.
    seen_forwards: SeenForwards,
    /// Hints being handed over: `(owner, key)`, one `Pending::Handoff` each.
    deliveries: BTreeSet<(NodeId, Vec<u8>)>,
    /// What the read of a client's put or delete saw, kept until the write
    /// it started answers (see `client`).
    replaced: BTreeMap<RequestId, Replaced>,
    barrier: Barrier,
    sync_in_flight: Option<SyncRequest>,
    /// Why the engine was poisoned, until the node reports it.
    storage_failure: Option<String>,
    poison_reported: bool,
    /// When the scheduled sync timer fires, if one is scheduled.
    sync_due: Option<Instant>,
    /// When the scheduled write-out timer fires, if one is scheduled.
    write_out_due: Option<Instant>,
    anti_entropy: AntiEntropy,
    /// When the scheduled anti-entropy timer fires, if one is scheduled.
    anti_entropy_due: Option<Instant>,
    outputs: VecDeque<Output>,
    stats: NodeStats,
}

impl From<lsm::OpenError> for OpenError {
    fn from(error: lsm::OpenError) -> OpenError {
        match error {
            lsm::OpenError::RecordsLost(loss) => OpenError::RecordsLost(loss),
            error => OpenError::Storage(error),
        }
    }
}

impl Node {
    /// Opens node `id`, recovering its data from `disk`. All randomness the
    /// node will ever use comes from `seed`.
    pub fn open(
        config: Config,
        id: NodeId,
        seed: u64,
        disk: Box<dyn Disk>,
        now: Now,
    ) -> Result<Node, OpenError> {
        config.validate()?;
        let ring = Ring::new(config.members.clone(), config.ring)?;
        if ring.member(id).is_none() {
            return Err(OpenError::NotAMember(id));
        }
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        // A key's only copy that lost synced records cannot be repaired:
        // the operator decides whether to go on without them.
        let mut engine = config.engine.clone();
        engine.refuse_lost_records = ring.replica_count() == 1 && !config.accept_data_loss;
        let store = Store::open(disk, engine, &mut rng)?;
        let boot = rng.next_u64();
        let peer_ids = ring.members().iter().map(|member| member.id).filter(|&peer| peer != id);
        let peers = Peers::new(peer_ids, now.mono);
        let timers = Timers::default();
        let anti_entropy = AntiEntropy::new(&ring, id, config.anti_entropy.shape, now.mono);
        let mut node = Node {
            id,
            config,
            ring,
            store,
            boot,
            seq_next: 0,
            now,
            peers,
            timers,
            pending: hashbrown::HashMap::default(),
            lingering: BTreeSet::new(),
            seen_forwards: SeenForwards::default(),
            deliveries: BTreeSet::new(),
            replaced: BTreeMap::new(),
            barrier: Barrier::default(),
            sync_in_flight: None,
            storage_failure: None,
            poison_reported: false,
            sync_due: None,
            write_out_due: None,
            anti_entropy,
            anti_entropy_due: None,
            outputs: VecDeque::new(),
            stats: NodeStats::default(),
        };
        // Announce this boot at once: peers forward writes only to a boot they know.
        node.on_heartbeat_timer();
        node.after_event();
        Ok(node)
    }

    pub fn id(&self) -> NodeId {
        self.id
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn ring(&self) -> &Ring {
        &self.ring
    }

    pub fn incarnation(&self) -> u32 {
        self.store.incarnation()
    }

    /// The members this node holds hints for, and how many for each.
    pub fn hints_by_owner(&self) -> Vec<(NodeId, u64)> {
        self.store.hint_owners().collect()
    }

    /// Each peer and whether this node believes it up.
    pub fn peer_states(&self) -> Vec<(NodeId, bool)> {
        self.peers.ids().map(|peer| (peer, self.is_up(peer))).collect()
    }

    /// True when nothing is in flight and every write is durable: a driver
    /// that is shutting down may stop once this holds.
    pub fn is_quiescent(&self) -> bool {
        let engine = self.store.engine();
        self.pending.is_empty() && self.sync_in_flight.is_none() && engine.durable_lsn() == engine.last_lsn()
    }

    /// What opening the node's storage found and did, for its driver to log.
    pub fn recovery(&self) -> &lsm::RecoveryReport {
        self.store.engine().recovery()
    }

    /// Why the node's own metadata did not read at open, if it did not: the
    /// node then took a new incarnation.
    pub fn metadata_damage(&self) -> Option<&str> {
        self.store.metadata_damage()
    }

    pub fn is_poisoned(&self) -> bool {
        self.store.engine().is_poisoned()
    }

    pub fn stats(&self) -> NodeStats {
        let engine = self.store.engine().stats();
        NodeStats {
            requests_in_flight: self.pending.len() as u64,
            unsynced_keys: self.store.unsynced_keys() as u64,
            waiting_for_sync: self.barrier.len() as u64,
            hints_pending: self.store.hints_pending(),
            keys_estimate: Store::keys_estimate(&engine, self.store.hints_pending()),
            anti_entropy: AntiEntropyStats {
                trees_building: self.trees_building(),
                ..self.stats.anti_entropy
            },
            engine,
            ..self.stats.clone()
        }
    }

    /// This node's stored copy of `key`, for inspection by tests, the
    /// simulator and operators. It may include writes not yet durable.
    pub fn local_object(&mut self, key: &[u8]) -> Result<Option<Object>, StoreError> {
        Ok(self.store.read(PlacedKey::new(key))?.map(|record| record.object))
    }

    /// Records this node still stores under a key of storage format 1, for
    /// the simulator: none once opening has migrated them, unless damage to
    /// the log brought back one the migration had deleted.
    pub fn format_1_records(&mut self) -> Result<usize, StoreError> {
        self.store.format_1_records()
    }

    /// This node's stored records at the ring positions of `range`, in ring
    /// order, a bounded chunk at a time: see `Store::scan_range`. It may
    /// include writes not yet durable.
    pub fn scan_range(
        &mut self,
        range: PositionRange,
        after: Option<&ScanCursor>,
        limit: ScanLimit,
    ) -> Result<ScanChunk, StoreError> {
        self.store.scan_range(range, after, limit)
    }

    /// What opening did to bring a data directory of an older layout up to
    /// date, for its driver to log.
    pub fn storage_migration(&self) -> Option<Migration> {
        self.store.migration()
    }

    pub fn handle_input(&mut self, now: Now, input: Input) {
        self.advance(now);
        match input {
            Input::Message { from, message } => self.on_message(from, message),
            Input::Client { id, request } => self.on_client(id, request),
            Input::Synced { request, result } => self.on_synced(request, result),
            Input::JobDone(done) => {
                if let Err(error) = self.store.engine_mut().finish_job(done) {
                    self.maintenance_failed(error);
                }
            }
        }
        self.after_event();
    }

    /// Fires every timer due at `now`; a call with nothing due does nothing.
    pub fn handle_timeout(&mut self, now: Now) {
        self.advance(now);
        while let Some(timer) = self.timers.pop_due(self.now.mono) {
            match timer {
                Timer::Heartbeat => self.on_heartbeat_timer(),
                Timer::Sync => self.on_sync_timer(),
                Timer::WriteOut => self.on_write_out_timer(),
                Timer::Request(tag) => self.on_request_deadline(tag),
                Timer::AntiEntropy => self.on_anti_entropy_timer(),
            }
        }
        self.after_event();
    }

    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// The instant by which `handle_timeout` must be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next()
    }

    /// Checks the node's internal consistency; a failure is a bug in keel.
    pub fn invariants(&self) -> Result<(), String> {
        for (tag, pending) in &self.pending {
            if !self.timers.contains(pending.deadline(), Timer::Request(*tag)) {
                return Err(format!("request {tag:?} has no deadline timer"));
            }
        }
        let sync_timer = usize::from(self.sync_due.is_some());
        let write_out_timer = usize::from(self.write_out_due.is_some());
        let anti_entropy_timer = usize::from(self.anti_entropy_due.is_some());
        if self.timers.len() != self.pending.len() + 1 + sync_timer + write_out_timer + anti_entropy_timer {
            return Err(format!(
                "{} timers for {} requests, one heartbeat, {sync_timer} sync, {write_out_timer} write-out and {anti_entropy_timer} anti-entropy",
                self.timers.len(),
                self.pending.len()
            ));
        }
        let engine = self.store.engine();
        if engine.durable_lsn() > engine.last_lsn() {
            return Err(format!("durable {:?} beyond last {:?}", engine.durable_lsn(), engine.last_lsn()));
        }
        if let Some(first) = self.barrier.first() {
            if first <= self.shown_lsn() && !engine.is_poisoned() {
                return Err(format!("barrier holds {first:?}, already safe to show"));
            }
            let release =
                self.sync_in_flight.is_some() || self.sync_due.is_some() || self.write_out_due.is_some();
            if !release && !engine.is_poisoned() {
                return Err(format!("barrier holds {first:?} with no sync or write-out to release it"));
            }
        }
        if self.pending.len() > self.config.requests_max as usize * 2 {
            return Err(format!(
                "{} requests pending, bound {}",
                self.pending.len(),
                self.config.requests_max
            ));
        }
        if self.lingering.len() > self.config.requests_max as usize {
            return Err(format!(
                "{} answered gets linger, bound {}",
                self.lingering.len(),
                self.config.requests_max
            ));
        }
        let handoffs = self.pending.values().filter(|pending| matches!(pending, Pending::Handoff(_))).count();
        if handoffs != self.deliveries.len() || handoffs > self.config.hints.deliveries_in_flight_max as usize
        {
            return Err(format!(
                "{handoffs} hints handed over, {} deliveries, bound {}",
                self.deliveries.len(),
                self.config.hints.deliveries_in_flight_max
            ));
        }
        for tag in &self.lingering {
            if !matches!(self.pending.get(tag), Some(Pending::Get(request)) if request.replied) {
                return Err(format!("lingering {tag:?} is not an answered get in flight"));
            }
        }
        // Each waits for a write in flight: tracked, or held for a sync.
        if self.replaced.len() > self.pending.len() + self.barrier.len() {
            return Err(format!(
                "{} reads wait for their writes, with {} requests and {} deferred actions",
                self.replaced.len(),
                self.pending.len(),
                self.barrier.len()
            ));
        }
        Ok(())
    }

    fn advance(&mut self, now: Now) {
        // A driver whose clock stepped back is tolerated: time stands still.
        self.now = Now { mono: self.now.mono.max(now.mono), wall_ms: now.wall_ms };
    }

    fn on_message(&mut self, from: NodeId, message: Message) {
        if from == self.id || self.ring.member(from).is_none() {
            return;
        }
        self.peers.heard(from, self.now.mono);
        match message {
            Message::Heartbeat { boot } => self.peers.heard_boot(from, boot),
            Message::Forward { tag, target_boot, write, replace_unreadable } => {
                self.on_forward(from, tag, target_boot, write, replace_unreadable)
            }
            Message::ForwardReply { tag, result } => self.on_forward_reply(tag, result),
            Message::Replicate { tag, key, object } => self.on_replicate(from, tag, key, object),
            Message::ReplicateAck { tag, result } => match self.pending.get(&tag) {
                Some(Pending::Handoff(_)) => self.on_delivery_ack(from, tag, result.is_ok()),
                _ => self.on_replicate_ack(from, tag, result.is_ok()),
            },
            Message::Hint { tag, owner, key, object } => self.on_hint(from, tag, owner, key, object),
            Message::HintDelivery { tag, key, object } => self.on_replicate(from, tag, key, object),
            Message::Read { tag, key } => self.on_read(from, tag, key),
            Message::ReadReply { tag, result } if self.is_repair_fetch(tag) => {
                self.on_repair_fetched(tag, result.ok().flatten())
            }
            Message::ReadReply { tag, result } => self.on_read_reply(from, tag, result.map_err(|_| ())),
            Message::TreeRequest { tag, request } => self.on_tree_request(from, tag, request),
            Message::TreeReply { tag, reply } => self.on_tree_reply(from, tag, reply),
            Message::Repair { key, object } => self.on_repair(key, object),
        }
    }

    fn on_heartbeat_timer(&mut self) {
        let peers: Vec<NodeId> = self.peers.ids().collect();
        for peer in peers {
            self.send(peer, Message::Heartbeat { boot: self.boot });
        }
        self.timers.schedule(self.now.mono + self.config.heartbeat_interval, Timer::Heartbeat);
        self.hand_off();
    }

    fn on_request_deadline(&mut self, tag: Tag) {
        let Some(pending) = self.pending.remove(&tag) else { return };
        self.lingering.remove(&tag);
        match pending {
            Pending::Get(mut request) => {
                if let Some(outcome) = request.expire() {
                    self.stats.timeouts += 1;
                    let (key, then) = (request.key.clone(), request.then.take());
                    self.read_decided(request.client, key, then, outcome);
                }
                self.read_repair(&request);
            }
            Pending::Put(mut request) => {
                if let Some(result) = request.expire() {
                    self.stats.timeouts += 1;
                    self.answer(request.origin, result);
                }
            }
            Pending::Forward { client, .. } => {
                self.stats.timeouts += 1;
                self.reply_write(client, Err(ClientError::Timeout { acknowledged: 0, needed: 1 }));
            }
            Pending::Handoff(delivery) => self.on_delivery_deadline(delivery),
        }
    }

    fn on_synced(&mut self, request: SyncRequest, result: Result<(), DiskError>) {
        if self.sync_in_flight.as_ref() != Some(&request) {
            return;
        }
        self.sync_in_flight = None;
        if let Err(error) = &result {
            self.storage_failure = Some(format!("a sync failed: {error}"));
        }
        self.store.engine_mut().finish_sync(request, result);
    }

    /// The engine is poisoned (a sync, an append or a flush failed): say so
    /// once, and fail everything that waited for writes to become durable.
    fn report_poisoned(&mut self) {
        if self.poison_reported || !self.store.engine().is_poisoned() {
            return;
        }
        self.poison_reported = true;
        let reason = self.storage_failure.take().unwrap_or_else(|| "a write to the disk failed".into());
        self.outputs.push_back(Output::Event(Event::StorageFailed { reason }));
        for action in self.barrier.drain() {
            self.fail_deferred(action);
        }
    }

    fn maintenance_failed(&mut self, error: lsm::MaintainError) {
        if self.store.engine().is_poisoned() {
            self.storage_failure.get_or_insert_with(|| format!("storage maintenance failed: {error}"));
        } else {
            let reason = error.to_string();
            self.outputs.push_back(Output::Event(Event::MaintenanceFailed { reason }));
        }
    }

    /// Work common to the end of every event: release what became durable,
    /// start the next sync, and run the engine's maintenance.
    fn after_event(&mut self) {
        while self.store.engine().needs_maintenance() {
            match self.store.engine_mut().next_job() {
                Ok(Some(job)) => self.outputs.push_back(Output::Job(job)),
                Ok(None) => {}
                Err(error) => {
                    self.maintenance_failed(error);
                    break;
                }
            }
        }
        self.report_poisoned();
        self.release_durable();
        let engine = self.store.engine();
        let unsynced = engine.last_lsn() > engine.durable_lsn() && !engine.is_poisoned();
        // The log just rotated: writes are neither written out nor synced
        // until the old file is, so its sync is due at once.
        let rotated = engine.rotation_unsynced();
        if let Some(due) = self.sync_due.filter(|due| rotated && *due > self.now.mono) {
            self.timers.cancel(due, Timer::Sync);
            self.sync_due = None;
        }
        if unsynced && self.sync_in_flight.is_none() && self.sync_due.is_none() {
            let interval = if rotated { None } else { self.sync_interval() };
            let due = self.now.mono + interval.unwrap_or_default();
            self.sync_due = Some(due);
            self.timers.schedule(due, Timer::Sync);
        }
        // Under `Always` the sync due now writes the log out itself.
        let buffered = engine.appended_lsn() < engine.last_lsn() && !engine.is_poisoned();
        if buffered && !rotated && self.sync_interval().is_some() && self.write_out_due.is_none() {
            self.write_out_due = Some(self.now.mono);
            self.timers.schedule(self.now.mono, Timer::WriteOut);
        }
        self.schedule_anti_entropy();
        invariant!(self, self.invariants().is_ok(), "{:?}", self.invariants());
    }

    fn on_sync_timer(&mut self) {
        self.sync_due = None;
        if self.sync_in_flight.is_none() {
            if let Some(request) = self.store.engine_mut().begin_sync() {
                self.sync_in_flight = Some(request.clone());
                self.outputs.push_back(Output::Sync(request));
            }
        }
    }

    fn on_write_out_timer(&mut self) {
        self.write_out_due = None;
        if let Err(error) = self.store.engine_mut().write_out() {
            self.storage_failure = Some(format!("appending to the log failed: {error}"));
        }
    }

    fn release_durable(&mut self) {
        // An action run here can move the durable point on (a write that
        // fills the memtable syncs the log it leaves): repeat until nothing
        // more is due, so nothing waits for a sync it no longer needs.
        loop {
            self.store.prune_synced();
            let due = self.barrier.release(self.shown_lsn());
            if due.is_empty() {
                break;
            }
            for action in due {
                self.run_deferred(action);
            }
        }
    }

    /// Runs `action` now if `lsn` is safe to show (or absent), else once it
    /// is. With the engine poisoned, nothing becomes safe any more: the
    /// action fails at once.
    fn when_durable(&mut self, lsn: Option<Lsn>, action: Deferred) {
        match lsn {
            Some(lsn) if lsn > self.shown_lsn() => {
                if self.store.engine().is_poisoned() {
                    self.fail_deferred(action);
                } else {
                    self.barrier.defer(lsn, action);
                }
            }
            _ => self.run_deferred(action),
        }
    }

    /// The newest write that may be shown outside this node: the durable
    /// point under `always`; under `periodic`, what the kernel holds, which
    /// a crash of the process (not of the machine) keeps.
    fn shown_lsn(&self) -> Lsn {
        let engine = self.store.engine();
        if self.sync_interval().is_some() { engine.appended_lsn() } else { engine.durable_lsn() }
    }

    /// With the periodic policy, how often to sync; acknowledgements then
    /// do not wait for syncs, and a crash may lose up to one interval.
    fn sync_interval(&self) -> Option<core::time::Duration> {
        match self.config.engine.sync_policy {
            lsm::SyncPolicy::Always => None,
            lsm::SyncPolicy::Periodic { interval_ms } => Some(core::time::Duration::from_millis(interval_ms)),
        }
    }

    fn run_deferred(&mut self, action: Deferred) {
        match action {
            Deferred::Answer { origin, context } => {
                self.answer(origin, Ok(Acknowledged { context, fallbacks: 0 }))
            }
            Deferred::LocalWrite { tag } => self.on_local_write_durable(tag),
            Deferred::LocalRead { tag, object } => self.on_read_reply(self.id, tag, Ok(object)),
            Deferred::ReplicateAck { to, tag } => {
                self.send(to, Message::ReplicateAck { tag, result: Ok(()) })
            }
            Deferred::ReadReply { to, tag, object } => {
                self.send(to, Message::ReadReply { tag, result: Ok(object) });
            }
        }
    }

    /// The sync these actions waited for failed: the writes may be lost, so
    /// nothing may reveal them. Everyone waiting hears of a failure.
    fn fail_deferred(&mut self, action: Deferred) {
        use crate::message::ReplicaError::StorageFailed;
        match action {
            Deferred::Answer { origin, .. } => {
                let reason = "the log could not be written; the write may be lost".into();
                self.answer(origin, Err(ClientError::StorageFailed { reason }));
            }
            Deferred::LocalWrite { tag } => self.on_local_write_failed(tag),
            Deferred::LocalRead { tag, .. } => self.on_read_reply(self.id, tag, Err(())),
            Deferred::ReplicateAck { to, tag } => {
                self.send(to, Message::ReplicateAck { tag, result: Err(StorageFailed) });
            }
            Deferred::ReadReply { to, tag, .. } => {
                self.send(to, Message::ReadReply { tag, result: Err(StorageFailed) })
            }
        }
    }

    fn next_tag(&mut self) -> Tag {
        self.seq_next += 1;
        Tag { boot: self.boot, seq: self.seq_next }
    }

    /// Registers a request and its deadline timer.
    fn track(&mut self, tag: Tag, pending: Pending) {
        invariant!(self, tag.boot == self.boot && !self.pending.contains_key(&tag), "tag {tag:?} reused");
        invariant!(self, pending.deadline() > self.now.mono, "a deadline already past");
        self.timers.schedule(pending.deadline(), Timer::Request(tag));
        self.pending.insert(tag, pending);
    }

    /// Forgets a request that needs nothing more, with its timer.
    fn untrack(&mut self, tag: Tag) -> Option<Pending> {
        let pending = self.pending.remove(&tag)?;
        self.lingering.remove(&tag);
        self.timers.cancel(pending.deadline(), Timer::Request(tag));
        Some(pending)
    }

    /// The nodes of `primaries` believed up, in order: the replicas a
    /// request asks. One believed down would not answer, and messages to it
    /// would only pile up in the transport until it returns.
    fn up_primaries(&self, primaries: &[NodeId]) -> Vec<NodeId> {
        primaries.iter().copied().filter(|&node| self.is_up(node)).collect()
    }

    fn is_up(&self, node: NodeId) -> bool {
        node == self.id || self.peers.is_up(node, self.now.mono, self.config.failure_timeout)
    }

    fn send(&mut self, to: NodeId, message: Message) {
        invariant!(self, to != self.id && self.ring.member(to).is_some(), "sending to {to}");
        self.outputs.push_back(Output::Send { to, message });
    }

    /// Answers a client's get: the only way a read reaches a client.
    fn reply_read(&mut self, id: RequestId, result: Result<Read, ClientError>) {
        invariant!(self, !self.replaced.contains_key(&id), "a read answered to a write");
        self.outputs.push_back(Output::Reply { id, reply: Reply::Read(result) });
    }

    /// Answers a client's put or delete, with what its read saw if it read
    /// first: the only way a write's answer reaches a client.
    fn reply_write(&mut self, id: RequestId, result: WriteResult) {
        let replaced = self.replaced.remove(&id).unwrap_or(Replaced::NotRead);
        let result = result.map(|acknowledged| Written {
            context: Context(acknowledged.context.to_bytes()),
            replaced,
            fallbacks: acknowledged.fallbacks,
        });
        self.outputs.push_back(Output::Reply { id, reply: Reply::Write(result) });
    }

    /// Delivers the answer of a coordinated write to whoever asked for it.
    fn answer(&mut self, origin: Origin, result: WriteResult) {
        match origin {
            Origin::Client(id) => self.reply_write(id, result),
            Origin::Forwarded { from, tag } => self.send(from, Message::ForwardReply { tag, result }),
        }
    }
}

#[cfg(test)]
mod tests;
