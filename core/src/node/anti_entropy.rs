//! Anti-entropy, as the node drives it: a [`RangeTree`] per range this node
//! replicates, kept current on every change of a record, built at open by a
//! chunked scan, and exchanged with the range's other replicas now and then.
//!
//! The trees start empty at open and are built by scanning the store a chunk
//! per step of the anti-entropy timer, on the event loop: one step costs
//! about one request's work, so the node keeps serving while it builds.
//! While a range's tree is being built, the node neither starts exchanges of
//! it nor answers them (`Refusal::NotReady`). A write during the build goes
//! into the tree only if its key lies at or before the scan's cursor: a key
//! the scan has not reached yet is read by the scan, with whatever version
//! it holds by then.
//!
//! Exchanges start on a timer, one range and one peer at a time, round
//! robin over every (range, other replica) pair, skipping peers believed
//! down. The keys an exchange reports are repaired by merging both ways: the
//! local copy goes to the peer as a `Repair` (which merges), and the peer's
//! copy is read and merged here. Nothing is overwritten.

use core::time::Duration;
use std::collections::BTreeMap;

use super::store::{ScanCursor, ScanLimit, ScannedRecord};
use super::timers::Timer;
use super::{Node, Store};
use crate::NodeId;
use crate::merkle::{
    self, Exchange, ExchangeConfig, KeyList, RangeTree, Refusal, Reply, Request, Response, SegmentScan, Step,
    TreeShape, VersionHash,
};
use crate::message::{Message, Tag};
use crate::ring::{PlacedKey, PositionRange, Ring};
use crate::time::Instant;
use crate::version::Object;

/// How the node runs anti-entropy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AntiEntropyConfig {
    /// Time between the starts of two exchanges.
    pub interval: Duration,
    /// Exchanges this node runs as initiator at once; 0 turns exchanges off
    /// (trees are still kept, and peers' exchanges answered).
    pub exchanges_in_flight_max: u32,
    /// Records one step of a tree's build reads.
    pub build_records_per_step: u32,
    /// How long to wait for a peer's answer to one request of an exchange.
    pub request_timeout: Duration,
    /// Age at which a tree is built again from the store. A tree follows
    /// the writes, not the disk: a record that rots stays in it as it was
    /// written, and only a rebuild, whose scan cannot read it, lets an
    /// exchange find the copy missing and repair it.
    pub rebuild_interval: Duration,
    pub shape: TreeShape,
    pub exchange: ExchangeConfig,
}

impl Default for AntiEntropyConfig {
    fn default() -> AntiEntropyConfig {
        AntiEntropyConfig {
            // In-sync trees end an exchange in one round trip of a few
            // bytes, so a node may start many: 16 a second take a node of
            // 192 ranges and N=3 round every (range, peer) pair in 24 s.
            interval: Duration::from_millis(250),
            exchanges_in_flight_max: 4,
            build_records_per_step: 1024,
            request_timeout: Duration::from_secs(2),
            rebuild_interval: Duration::from_secs(24 * 3600),
            shape: TreeShape::NODE_DEFAULT,
            exchange: ExchangeConfig::default(),
        }
    }
}

/// Exchanges waiting for their second comparison, per exchange slot, at most.
const WAITING_PER_SLOT: usize = 8;

/// Bytes one chunk of a scan for anti-entropy reads at most.
const SCAN_CHUNK_BYTES_MAX: u64 = 1 << 20;

/// One range's tree.
#[derive(Debug)]
enum Tree {
    /// Being built: every record at or before `cursor` in ring order is in
    /// it (none yet without one), and none after.
    Building { tree: RangeTree, cursor: Option<ScanCursor> },
    /// Built, at the instant given.
    Ready(RangeTree, Instant),
}

/// A range this node replicates and one of its other replicas.
#[derive(Debug)]
struct Pair {
    range_end: u64,
    peer: NodeId,
    /// `None` before its first exchange, which puts it first.
    last_started: Option<Instant>,
}

/// An exchange this node started.
#[derive(Debug)]
struct Running {
    peer: NodeId,
    /// The end of the range, which names it among this node's trees.
    range_end: u64,
    exchange: Exchange,
    /// The request sent and not yet answered, and when to give up on it.
    awaiting: Option<(Tag, Instant)>,
}

/// The node's anti-entropy state.
#[derive(Debug)]
pub(super) struct AntiEntropy {
    /// By the end of each range this node replicates.
    trees: BTreeMap<u64, Tree>,
    /// Keyed by the tag the exchange was started with.
    exchanges: BTreeMap<Tag, Running>,
    /// Reads of peers' copies for repair: the key, and when to give up.
    fetches: BTreeMap<Tag, (Vec<u8>, Instant)>,
    /// Every (range, other replica) pair this node exchanges, by range end
    /// and peer, each with when its last exchange started: the next one
    /// goes to the pair that waited longest.
    pairs: Vec<Pair>,
    /// Exchanges started, which vary the part of a large difference each takes.
    rotation: u64,
    /// When an exchange with each peer last ran to its end, as initiator,
    /// or last got an answer from this node, as responder.
    last_exchange: BTreeMap<NodeId, Instant>,
    /// When the next exchange may start.
    next_start: Instant,
    /// Summaries of `trees`, kept by `trees_changed` because `due` runs
    /// after every input: whether a tree is being built, and when the
    /// oldest built tree was.
    any_building: bool,
    oldest_built: Option<Instant>,
}

/// Counters of anti-entropy work, part of `NodeStats`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AntiEntropyStats {
    pub exchanges_started: u64,
    /// Exchanges that ran to their end, whether they found differences or not.
    pub exchanges_completed: u64,
    /// Exchanges that ended early: refused, a request timed out, or the tree
    /// was rebuilt under them.
    pub exchanges_failed: u64,
    /// Keys exchanges found different twice, and repaired both ways.
    pub keys_repaired: u64,
    /// Peer copies fetched for repair and merged here.
    pub copies_fetched: u64,
    /// Trees rebuilt because a record's old version could not be read.
    pub trees_rebuilt: u64,
    /// Trees being built now.
    pub trees_building: u64,
}

impl AntiEntropy {
    /// Empty trees, each to be built, for the ranges `id` replicates.
    pub(super) fn new(ring: &Ring, id: NodeId, shape: TreeShape, now: Instant) -> AntiEntropy {
        let trees = ring
            .ranges()
            .filter(|range| range.preference.contains(&id))
            .map(|range| {
                (range.end, Tree::Building { tree: RangeTree::new(range.positions(), shape), cursor: None })
            })
            .collect();
        let pairs = ring
            .ranges()
            .filter(|range| range.preference.contains(&id))
            .flat_map(|range| {
                let peers = range.preference.iter().filter(|&&peer| peer != id);
                peers.map(move |&peer| Pair { range_end: range.end, peer, last_started: None })
            })
            .collect();
        let mut anti_entropy = AntiEntropy {
            trees,
            exchanges: BTreeMap::new(),
            fetches: BTreeMap::new(),
            pairs,
            rotation: 0,
            last_exchange: BTreeMap::new(),
            next_start: now,
            any_building: false,
            oldest_built: None,
        };
        anti_entropy.trees_changed();
        anti_entropy
    }

    /// Brings the summaries of the trees up to date after one changed state.
    fn trees_changed(&mut self) {
        self.any_building = self.trees.values().any(|tree| matches!(tree, Tree::Building { .. }));
        self.oldest_built = self
            .trees
            .values()
            .filter_map(|tree| match tree {
                Tree::Ready(_, built) => Some(*built),
                Tree::Building { .. } => None,
            })
            .min();
    }

    /// Records that `key` went from version `old` to `new` (`None`: no record).
    pub(super) fn update(
        &mut self,
        ring: &Ring,
        key: PlacedKey<'_>,
        old: Option<VersionHash>,
        new: Option<VersionHash>,
    ) {
        let position = key.position();
        let Some(tree) = self.trees.get_mut(&ring.range_at(position).end) else { return };
        match tree {
            Tree::Ready(tree, _) => tree.update(key.key(), position, old, new),
            Tree::Building { tree, cursor: Some(cursor) } => {
                let range = tree.range();
                // Keys the scan already passed; the rest it will read as they are then.
                if (offset(range, position), key.key()) <= (offset(range, cursor.position), &cursor.key[..]) {
                    tree.update(key.key(), position, old, new);
                }
            }
            Tree::Building { cursor: None, .. } => {}
        }
    }

    /// Starts the tree of `key`'s range over: its old version is unknown.
    pub(super) fn rebuild(&mut self, ring: &Ring, key: PlacedKey<'_>) -> bool {
        self.start_over(ring.range_at(key.position()).end)
    }

    /// Empties the tree of the range ending at `end`, to be built again.
    fn start_over(&mut self, end: u64) -> bool {
        let Some(tree) = self.trees.get_mut(&end) else { return false };
        let (range, shape) = match tree {
            Tree::Ready(tree, _) | Tree::Building { tree, .. } => (tree.range(), tree.shape()),
        };
        *tree = Tree::Building { tree: RangeTree::new(range, shape), cursor: None };
        self.trees_changed();
        true
    }

    /// Starts the oldest tree over if it is `age_max` old at `now`.
    fn rebuild_oldest(&mut self, now: Instant, age_max: Duration) -> bool {
        if self.oldest_built.is_none_or(|built| built + age_max > now) {
            return false;
        }
        let oldest = self
            .trees
            .iter()
            .filter_map(|(&end, tree)| match tree {
                Tree::Ready(_, built) if *built + age_max <= now => Some((*built, end)),
                _ => None,
            })
            .min();
        let Some((_, end)) = oldest else { return false };
        self.start_over(end)
    }

    pub(super) fn building(&self) -> bool {
        self.any_building
    }

    /// The earliest instant the anti-entropy timer must fire.
    pub(super) fn due(
        &self,
        now: Instant,
        exchanges_on: bool,
        rebuild_interval: Duration,
    ) -> Option<Instant> {
        if self.building() {
            return Some(now);
        }
        let waits = self.exchanges.values().flat_map(|running| {
            [running.exchange.poll_timeout(), running.awaiting.map(|(_, deadline)| deadline)]
        });
        let fetches = self.fetches.values().map(|(_, deadline)| *deadline);
        let start = exchanges_on.then_some(self.next_start);
        // Rebuilds are looked for when exchanges start, or at the oldest tree's age.
        let rebuild = self.oldest_built.map(|built| built + rebuild_interval);
        waits.flatten().chain(fetches).chain(start).chain(rebuild).min()
    }

    /// The ready tree of the range ending at `end`.
    fn ready(&self, end: u64) -> Option<&RangeTree> {
        match self.trees.get(&end)? {
            Tree::Ready(tree, _) => Some(tree),
            Tree::Building { .. } => None,
        }
    }

    /// Trees by range end, the built ones and the others, for checks.
    pub(super) fn roots(&self) -> Vec<(PositionRange, Option<merkle::TreeHash>)> {
        self.trees
            .values()
            .map(|tree| match tree {
                Tree::Ready(tree, _) => (tree.range(), Some(tree.root())),
                Tree::Building { tree, .. } => (tree.range(), None),
            })
            .collect()
    }
}

/// A position's place in `range`, clockwise from its start.
fn offset(range: PositionRange, position: u64) -> u64 {
    position.wrapping_sub(range.start).wrapping_sub(1)
}

impl Node {
    /// Tells the trees that `key`'s record changed from `old` to `new`.
    /// `old` is the hash of the record replaced, `None` when there was none.
    pub(super) fn tree_update(&mut self, key: PlacedKey<'_>, old: Option<VersionHash>, new: &Object) {
        let new = Some(merkle::version_hash(new));
        if old != new {
            self.anti_entropy.update(&self.ring, key, old, new);
        }
    }

    /// `key`'s record changed from a version that could not be read: its
    /// tree no longer knows what to XOR out, so it is built again.
    pub(super) fn tree_lost_track(&mut self, key: PlacedKey<'_>) {
        if self.anti_entropy.rebuild(&self.ring, key) {
            self.stats.anti_entropy.trees_rebuilt += 1;
        }
    }

    pub(super) fn on_anti_entropy_timer(&mut self) {
        self.anti_entropy_due = None;
        let age_max = self.config.anti_entropy.rebuild_interval;
        if !self.anti_entropy.building() && self.anti_entropy.rebuild_oldest(self.now.mono, age_max) {
            self.stats.anti_entropy.trees_rebuilt += 1;
        }
        self.build_step();
        let now = self.now.mono;
        let expired: Vec<Tag> = self
            .anti_entropy
            .exchanges
            .iter()
            .filter(|(_, running)| running.awaiting.is_some_and(|(_, deadline)| deadline <= now))
            .map(|(&id, _)| id)
            .collect();
        for id in expired {
            self.end_exchange(id, false);
        }
        self.anti_entropy.fetches.retain(|_, (_, deadline)| *deadline > now);
        let waking: Vec<Tag> = self
            .anti_entropy
            .exchanges
            .iter()
            .filter(|(_, running)| running.exchange.poll_timeout().is_some_and(|at| at <= now))
            .map(|(&id, _)| id)
            .collect();
        for id in waking {
            if let Some(running) = self.anti_entropy.exchanges.get_mut(&id) {
                running.exchange.handle_timeout(now);
            }
            self.drive_exchange(id);
        }
        if self.config.anti_entropy.exchanges_in_flight_max > 0 && self.anti_entropy.next_start <= now {
            self.anti_entropy.next_start = now + self.config.anti_entropy.interval;
            // Up to the bound: exchanges of trees in sync end within a round trip.
            let free = self.exchange_slots_free();
            for _ in 0..free {
                self.start_exchange();
            }
        }
    }

    /// Schedules the anti-entropy timer for when it is next due.
    pub(super) fn schedule_anti_entropy(&mut self) {
        let exchanges_on = self.config.anti_entropy.exchanges_in_flight_max > 0;
        let rebuild_interval = self.config.anti_entropy.rebuild_interval;
        let due = self
            .anti_entropy
            .due(self.now.mono, exchanges_on, rebuild_interval)
            .map(|due| due.max(self.now.mono));
        if due == self.anti_entropy_due {
            return;
        }
        if let Some(old) = self.anti_entropy_due.take() {
            self.timers.cancel(old, Timer::AntiEntropy);
        }
        if let Some(due) = due {
            self.timers.schedule(due, Timer::AntiEntropy);
            self.anti_entropy_due = Some(due);
        }
    }

    /// Reads one step's worth of records into the trees still being built.
    fn build_step(&mut self) {
        // Trees of ranges holding few records are built several in one step,
        // up to the step's budget of records (each tree counting one at least).
        let mut budget = self.config.anti_entropy.build_records_per_step.max(1) as usize;
        let mut after: Option<u64> = None;
        let mut finished = false;
        while budget > 0 {
            let later = match after {
                Some(end) => (core::ops::Bound::Excluded(end), core::ops::Bound::Unbounded),
                None => (core::ops::Bound::Unbounded, core::ops::Bound::Unbounded),
            };
            let next =
                self.anti_entropy.trees.range(later).find(|(_, tree)| matches!(tree, Tree::Building { .. }));
            let Some((&end, _)) = next else { break };
            after = Some(end);
            let Some(Tree::Building { tree, cursor }) = self.anti_entropy.trees.remove(&end) else { break };
            let (tree, read) = self.build_chunk(tree, cursor, budget);
            budget = budget.saturating_sub(read.max(1));
            finished |= matches!(tree, Tree::Ready(..));
            self.anti_entropy.trees.insert(end, tree);
        }
        if finished {
            self.anti_entropy.trees_changed();
        }
    }

    /// Reads up to `records_max` records more into `tree`, being built from
    /// `cursor`; returns the tree, built or still building, and the records read.
    fn build_chunk(
        &mut self,
        mut tree: RangeTree,
        cursor: Option<ScanCursor>,
        records_max: usize,
    ) -> (Tree, usize) {
        let limit = ScanLimit { records_max, bytes_max: SCAN_CHUNK_BYTES_MAX };
        let range = tree.range();
        let mut read = 0;
        let resume = match self.store.scan_range(range, cursor.as_ref(), limit) {
            Ok(chunk) => {
                read = chunk.records.len();
                for found in chunk.records {
                    if let Some(hash) = version_of(&mut self.store, &found) {
                        tree.insert(&found.key, found.position, hash);
                    }
                }
                chunk.resume
            }
            // Damage the engine cannot read past: the build goes on after the
            // segment it is in, whose records look missing from this replica
            // until an exchange repairs them.
            Err(_) => {
                let from = cursor.as_ref().map_or(range.start, |cursor| cursor.position);
                let first = if from == range.start { 0 } else { tree.segment_of(from) };
                // The first segment that ends past the cursor: the scan always moves on.
                let end = (first..tree.shape().segments())
                    .filter_map(|segment| tree.segment_range(segment))
                    .map(|segment| segment.end)
                    .find(|&end| end != from)
                    .unwrap_or(range.end);
                // Keys at the segment's last position sort after an empty key.
                (end != range.end).then(|| ScanCursor { position: end, key: Vec::new() })
            }
        };
        let tree = match resume {
            Some(cursor) => Tree::Building { tree, cursor: Some(cursor) },
            None => Tree::Ready(tree, self.now.mono),
        };
        (tree, read)
    }

    /// Exchanges that may start now. One that only waits for its second
    /// comparison (seconds, while a write in flight lands) costs nothing
    /// meanwhile and does not count against `exchanges_in_flight_max`, or
    /// a replica back with many ranges to repair would have them compared
    /// a few at a time, each taking the wait; the waiting ones are bounded
    /// apart, at `WAITING_PER_SLOT` per slot.
    fn exchange_slots_free(&self) -> usize {
        let slots = self.config.anti_entropy.exchanges_in_flight_max as usize;
        let waiting = self
            .anti_entropy
            .exchanges
            .values()
            .filter(|running| running.awaiting.is_none() && running.exchange.poll_timeout().is_some())
            .count();
        let active = self.anti_entropy.exchanges.len() - waiting;
        let room = (slots * (WAITING_PER_SLOT + 1)).saturating_sub(self.anti_entropy.exchanges.len());
        slots.saturating_sub(active).min(room)
    }

    /// Starts an exchange with the next (range, peer) pair whose peer is up.
    fn start_exchange(&mut self) {
        if self.exchange_slots_free() == 0 {
            return;
        }
        // The pair that waited longest (the first in order among equals),
        // among those whose tree is built, whose peer is up and whose range
        // is not in an exchange already.
        let running: Vec<u64> =
            self.anti_entropy.exchanges.values().map(|running| running.range_end).collect();
        let mut peers_up: Vec<(NodeId, bool)> = Vec::new();
        let mut chosen: Option<usize> = None;
        for (at, pair) in self.anti_entropy.pairs.iter().enumerate() {
            let older =
                chosen.is_none_or(|best| pair.last_started < self.anti_entropy.pairs[best].last_started);
            if !older || running.contains(&pair.range_end) {
                continue;
            }
            if !matches!(self.anti_entropy.trees.get(&pair.range_end), Some(Tree::Ready(..))) {
                continue;
            }
            let up = match peers_up.iter().find(|(peer, _)| *peer == pair.peer) {
                Some(&(_, up)) => up,
                None => {
                    let up = self.is_up(pair.peer);
                    peers_up.push((pair.peer, up));
                    up
                }
            };
            if up {
                chosen = Some(at);
                if pair.last_started.is_none() {
                    break;
                }
            }
        }
        let Some(at) = chosen else { return };
        let pair = &mut self.anti_entropy.pairs[at];
        pair.last_started = Some(self.now.mono);
        let (range_end, peer) = (pair.range_end, pair.peer);
        self.anti_entropy.rotation += 1;
        let Some(tree) = self.anti_entropy.ready(range_end) else { return };
        let exchange = Exchange::new(tree, self.config.anti_entropy.exchange, self.anti_entropy.rotation);
        let id = self.next_tag();
        self.stats.anti_entropy.exchanges_started += 1;
        self.anti_entropy.exchanges.insert(id, Running { peer, range_end, exchange, awaiting: None });
        self.drive_exchange(id);
    }

    /// Carries out the steps exchange `id` asks for, until it waits.
    fn drive_exchange(&mut self, id: Tag) {
        loop {
            let Some(running) = self.anti_entropy.exchanges.get_mut(&id) else { return };
            let Some(step) = running.exchange.poll_output() else { return };
            let (peer, now) = (running.peer, self.now.mono);
            let result = match step {
                Step::Send(request) => {
                    let tag = self.next_tag();
                    let deadline = now + self.config.anti_entropy.request_timeout;
                    if let Some(running) = self.anti_entropy.exchanges.get_mut(&id) {
                        running.awaiting = Some((tag, deadline));
                    }
                    self.send(peer, Message::TreeRequest { tag, request });
                    Ok(())
                }
                Step::Scan(scan) => {
                    let list = scan_segments(&mut self.store, &scan);
                    self.with_exchange(id, |exchange| exchange.handle_scanned(now, list))
                }
                Step::Read(read) => {
                    let versions = read_versions(&mut self.store, read.keys());
                    self.with_exchange(id, |exchange| exchange.handle_read(versions))
                }
                Step::Done(outcome) => {
                    self.anti_entropy.exchanges.remove(&id);
                    self.anti_entropy.last_exchange.insert(peer, now);
                    self.stats.anti_entropy.exchanges_completed += 1;
                    self.stats.anti_entropy.keys_repaired += outcome.repair.len() as u64;
                    for key in outcome.repair {
                        self.repair_with(peer, key);
                    }
                    return;
                }
            };
            if result.is_err() {
                self.end_exchange(id, false);
                return;
            }
        }
    }

    fn with_exchange<T>(
        &mut self,
        id: Tag,
        f: impl FnOnce(&mut Exchange) -> Result<T, merkle::ExchangeError>,
    ) -> Result<T, merkle::ExchangeError> {
        match self.anti_entropy.exchanges.get_mut(&id) {
            Some(running) => f(&mut running.exchange),
            None => Err(merkle::ExchangeError::Refused(Refusal::NotReady)),
        }
    }

    /// Forgets exchange `id`, which did not run to its end.
    fn end_exchange(&mut self, id: Tag, completed: bool) {
        if self.anti_entropy.exchanges.remove(&id).is_some() && !completed {
            self.stats.anti_entropy.exchanges_failed += 1;
        }
    }

    /// Merges `key` both ways with `peer`: this copy to it, its copy here.
    fn repair_with(&mut self, peer: NodeId, key: Vec<u8>) {
        // Persist, then send: a copy not yet durable could be lost in a
        // crash after the peer took it, and its dots issued again. A later
        // exchange sends it.
        let durable = self.store.pending_lsn(&key).is_none();
        if let (true, Ok(Some(record))) = (durable, self.store.read(PlacedKey::new(&key))) {
            if !record.object.is_empty() {
                self.send(peer, Message::Repair { key: key.clone(), object: record.object });
            }
        }
        let tag = self.next_tag();
        let deadline = self.now.mono + self.config.anti_entropy.request_timeout;
        self.anti_entropy.fetches.insert(tag, (key.clone(), deadline));
        self.send(peer, Message::Read { tag, key });
    }

    /// Whether `tag` names a read this node sent for repair.
    pub(super) fn is_repair_fetch(&self, tag: Tag) -> bool {
        self.anti_entropy.fetches.contains_key(&tag)
    }

    /// A peer's copy of a key an exchange found different.
    pub(super) fn on_repair_fetched(&mut self, tag: Tag, object: Option<Object>) {
        let Some((key, _)) = self.anti_entropy.fetches.remove(&tag) else { return };
        let Some(object) = object else { return };
        if self.merge_local(PlacedKey::new(&key), &object).is_ok() {
            self.stats.anti_entropy.copies_fetched += 1;
        }
    }

    /// A peer asks about its tree of a range this node may replicate.
    pub(super) fn on_tree_request(&mut self, from: NodeId, tag: Tag, request: Request) {
        let end = request.tree().range().end;
        let reply = match self.anti_entropy.trees.get(&end) {
            None => Reply::Refused(Refusal::UnknownTree),
            Some(Tree::Building { .. }) => Reply::Refused(Refusal::NotReady),
            Some(Tree::Ready(tree, _)) => {
                let list_bytes_max = self.config.anti_entropy.exchange.list_bytes_max;
                match merkle::respond(tree, request, list_bytes_max) {
                    Response::Reply(reply) => reply,
                    Response::Scan(scan) => Reply::Keys(scan_segments(&mut self.store, &scan)),
                    Response::Read(read) => read.reply(read_versions(&mut self.store, read.keys())),
                }
            }
        };
        if !matches!(reply, Reply::Refused(_)) {
            self.anti_entropy.last_exchange.insert(from, self.now.mono);
        }
        self.send(from, Message::TreeReply { tag, reply });
    }

    /// A peer's answer to a request of an exchange this node runs.
    pub(super) fn on_tree_reply(&mut self, from: NodeId, tag: Tag, reply: Reply) {
        let found = self
            .anti_entropy
            .exchanges
            .iter()
            .find(|(_, running)| {
                running.peer == from && running.awaiting.is_some_and(|(awaited, _)| awaited == tag)
            })
            .map(|(&id, running)| (id, running.range_end));
        let Some((id, end)) = found else { return };
        let now = self.now.mono;
        let AntiEntropy { trees, exchanges, .. } = &mut self.anti_entropy;
        let (Some(Tree::Ready(tree, _)), Some(running)) = (trees.get(&end), exchanges.get_mut(&id)) else {
            // The tree is being built again: what it was compared with is gone.
            self.end_exchange(id, false);
            return;
        };
        running.awaiting = None;
        if running.exchange.handle_reply(now, tree, reply).is_err() {
            self.end_exchange(id, false);
            return;
        }
        self.drive_exchange(id);
    }

    /// The number of trees being built, for stats.
    pub(super) fn trees_building(&self) -> u64 {
        self.anti_entropy.trees.values().filter(|tree| matches!(tree, Tree::Building { .. })).count() as u64
    }

    /// How long ago this node last exchanged trees with each peer it has.
    pub fn last_exchanges(&self) -> Vec<(NodeId, Duration)> {
        let now = self.now.mono;
        self.anti_entropy.last_exchange.iter().map(|(&peer, &at)| (peer, now.saturating_since(at))).collect()
    }

    /// Each replicated range and its tree's root, `None` while it is built.
    pub fn tree_roots(&self) -> Vec<(PositionRange, Option<merkle::TreeHash>)> {
        self.anti_entropy.roots()
    }
}

/// The keys and versions `scan` asks for, read from `store`. A record that
/// does not decode is left out, and so is the rest of a segment range the
/// engine cannot read past: they look missing here, and the exchange's
/// repair merges the peer's copy in.
fn scan_segments(store: &mut Store, scan: &SegmentScan) -> KeyList {
    let mut list = scan.list();
    let limit = ScanLimit { records_max: 256, bytes_max: SCAN_CHUNK_BYTES_MAX };
    let mut after = scan.after().map(|(position, key)| ScanCursor { position, key: key.to_vec() });
    for (index, &range) in scan.ranges().iter().enumerate() {
        let mut cursor = if index == 0 { after.take() } else { None };
        while let Ok(chunk) = store.scan_range(range, cursor.as_ref(), limit) {
            for found in chunk.records {
                let Some(hash) = version_of(store, &found) else { continue };
                if !list.push(found.position, &found.key, hash) {
                    return list.finish();
                }
            }
            match chunk.resume {
                Some(resume) => cursor = Some(resume),
                None => break,
            }
        }
    }
    list.finish()
}

/// The version of a record a scan found. One the scan could not vouch for
/// (it does not decode, or a newer version may sit in a block that does not
/// read) is read by its key; if that fails too, the copy looks missing here,
/// and an exchange repairs it.
fn version_of(store: &mut Store, found: &ScannedRecord) -> Option<VersionHash> {
    match &found.record {
        Ok(record) => Some(merkle::version_hash(&record.object)),
        Err(_) => {
            let record = store.read(PlacedKey::known(&found.key, found.position)).ok().flatten()?;
            Some(merkle::version_hash(&record.object))
        }
    }
}

/// The versions of `keys` as stored now; `None` for a key without a readable record.
fn read_versions(store: &mut Store, keys: &[Vec<u8>]) -> Vec<Option<VersionHash>> {
    keys.iter()
        .map(|key| match store.read(PlacedKey::new(key)) {
            Ok(Some(record)) => Some(merkle::version_hash(&record.object)),
            Ok(None) | Err(_) => None,
        })
        .collect()
}
