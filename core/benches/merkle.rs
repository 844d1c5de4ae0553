//! Anti-entropy benchmark: what keeping a range's tree and exchanging it
//! with another replica cost.
//!
//! `cargo bench -p keel-core --bench merkle` builds two replicas of one
//! range holding 1000000 keys each (16-byte keys as redis-benchmark names
//! them) with the default tree shape and exchange caps, makes them differ
//! in 0, 10, 1000 and 100000 keys (a third missing on one side, a third
//! changed, a third extra), and runs exchanges between them in memory,
//! every message encoded with postcard and decoded again. For each case it
//! prints what the first exchange moved (bytes each way, messages, round
//! trips, keys found, CPU time) and what it took to converge: exchanges run,
//! each followed by the repairs it asked for, until the roots agree.
//! Before that it prints the tree's memory, the time to build a tree from a
//! scan, and the cost of keeping it current on a write.
//!
//! Stores are in-memory ordered maps standing in for the scans and reads a
//! node runs as jobs, so times are the protocol's CPU, not the disk's.
//! Environment: `KEEL_BENCH_KEYS` changes the number of keys per replica.

mod common;

use std::collections::BTreeMap;
use std::hint::black_box;
use std::ops::Bound;
use std::time::{Duration, Instant as Clock};

use common::mix;
use keel_core::merkle::{
    Exchange, ExchangeConfig, KeyList, Outcome, RangeTree, Reply, Request, Response, SegmentScan, Step,
    TreeShape, VersionHash, VersionRead, respond, version_hash,
};
use keel_core::ring::{PositionRange, position};
use keel_core::version::{Actor, CausalContext, Object, Value};
use keel_core::{Instant, NodeId};

const KEY_BYTES: usize = 16;
type Key = [u8; KEY_BYTES];

/// The whole circle: segments cut the range into equal arcs whatever its width.
const RANGE: PositionRange = PositionRange { start: 0, end: 0 };
const DIFFERING: [u64; 4] = [0, 10, 1_000, 100_000];

fn key(index: u64) -> Key {
    let mut key = [0; KEY_BYTES];
    key.copy_from_slice(format!("key:{index:012}").as_bytes());
    key
}

/// A version hash as a write of the key's `generation` would have.
fn version(index: u64, generation: u64) -> VersionHash {
    VersionHash(mix(index ^ generation.rotate_left(40)))
}

/// Where `position` lies in ring order within the range.
fn offset(position: u64) -> u64 {
    position.wrapping_sub(RANGE.start).wrapping_sub(1)
}

/// One replica: its records in ring order and the tree kept by updates.
#[derive(Clone)]
struct Replica {
    tree: RangeTree,
    records: BTreeMap<(u64, Key), VersionHash>,
}

impl Replica {
    fn put(&mut self, key: &Key, new: Option<VersionHash>) {
        let at = position(key);
        let old = match new {
            Some(version) => self.records.insert((offset(at), *key), version),
            None => self.records.remove(&(offset(at), *key)),
        };
        self.tree.update(key, at, old, new);
    }

    fn version(&self, key: &[u8]) -> Option<VersionHash> {
        let key: Key = key.try_into().ok()?;
        self.records.get(&(offset(position(&key)), key)).copied()
    }

    fn scan(&self, scan: &SegmentScan) -> KeyList {
        let mut list = scan.list();
        let after =
            scan.after().map(|(at, key)| (offset(at), key.try_into().expect("keys of this benchmark")));
        'ranges: for part in scan.ranges() {
            let first = (offset(part.start.wrapping_add(1)), [0; KEY_BYTES]);
            let last = offset(part.end);
            let start = match after {
                Some(after) if after >= first => Bound::Excluded(after),
                _ => Bound::Included(first),
            };
            for (&(at, key), &version) in self.records.range((start, Bound::Unbounded)) {
                if at > last {
                    break;
                }
                if !list.push(at.wrapping_add(RANGE.start).wrapping_add(1), &key, version) {
                    break 'ranges;
                }
            }
        }
        list.finish()
    }

    fn read(&self, read: &VersionRead) -> Vec<Option<VersionHash>> {
        read.keys().iter().map(|key| self.version(key)).collect()
    }

    fn answer(&self, request: Request, list_bytes_max: u32) -> Reply {
        match respond(&self.tree, request, list_bytes_max) {
            Response::Reply(reply) => reply,
            Response::Scan(scan) => Reply::Keys(self.scan(&scan)),
            Response::Read(read) => read.reply(self.read(&read)),
        }
    }
}

/// What exchanges moved and took.
#[derive(Clone, Copy, Default)]
struct Cost {
    sent: usize,
    received: usize,
    round_trips: usize,
    time: Duration,
}

impl Cost {
    fn add(&mut self, other: Cost) {
        self.sent += other.sent;
        self.received += other.received;
        self.round_trips += other.round_trips;
        self.time += other.time;
    }
}

/// One exchange from `local` with `peer`, its virtual confirmation delay
/// skipped, every message through postcard.
fn exchange(local: &Replica, peer: &Replica, config: ExchangeConfig, rotation: u64) -> (Outcome, Cost) {
    let started = Clock::now();
    let mut cost = Cost::default();
    let mut exchange = Exchange::new(&local.tree, config, rotation);
    let now = Instant::ZERO;
    loop {
        let Some(step) = exchange.poll_output() else {
            let at = exchange.poll_timeout().expect("an exchange waits for its peer or its timer");
            exchange.handle_timeout(at);
            continue;
        };
        let result = match step {
            Step::Send(request) => {
                let bytes = request.encode().expect("requests encode");
                cost.sent += bytes.len();
                cost.round_trips += 1;
                let request = Request::decode(&bytes).expect("requests decode");
                let bytes = peer.answer(request, config.list_bytes_max).encode().expect("replies encode");
                cost.received += bytes.len();
                exchange.handle_reply(now, &local.tree, Reply::decode(&bytes).expect("replies decode"))
            }
            Step::Scan(scan) => exchange.handle_scanned(now, local.scan(&scan)),
            Step::Read(read) => exchange.handle_read(local.read(&read)),
            Step::Done(outcome) => {
                cost.time = started.elapsed();
                return (outcome, cost);
            }
        };
        result.expect("an exchange between honest replicas succeeds");
    }
}

/// Exchanges and repairs until the replicas agree; the exchanges run.
fn converge(local: &mut Replica, peer: &mut Replica, config: ExchangeConfig, cost: &mut Cost) -> u64 {
    for round in 0.. {
        let (outcome, spent) = exchange(local, peer, config, mix(round));
        cost.add(spent);
        if local.tree.root() == peer.tree.root() {
            return round + 1;
        }
        assert!(!outcome.repair.is_empty(), "every exchange between differing replicas repairs a key");
        for key in &outcome.repair {
            // A merge: both copies end as their join, here the greater version.
            let merged = local.version(key).max(peer.version(key));
            let key: Key = key.as_slice().try_into().expect("keys of this benchmark");
            local.put(&key, merged);
            peer.put(&key, merged);
        }
    }
    unreachable!("the loop returns")
}

/// `peer` made to differ from `local` in `count` keys.
fn diverge(local: &Replica, count: u64, keys: u64) -> Replica {
    let mut peer = local.clone();
    for n in 0..count {
        let index = mix(n ^ 0x5eed) % keys;
        match n % 3 {
            0 => peer.put(&key(index), None),
            1 => peer.put(&key(index), Some(version(index, 2))),
            _ => peer.put(&key(keys + n), Some(version(keys + n, 1))),
        }
    }
    peer
}

/// A key's record after a plain write: one 100-byte sibling.
fn object(index: u64) -> Object {
    let mut object = Object::new();
    let actor = Actor { node: NodeId(1), incarnation: 7, epoch: index };
    object.write(actor, &CausalContext::new(), Value::Live(vec![b'x'; 100]), 1_700_000_000_000);
    object
}

fn per_item(elapsed: Duration, count: u64) -> f64 {
    elapsed.as_nanos() as f64 / count as f64
}

fn kib(bytes: usize) -> String {
    if bytes < 10_000 { format!("{bytes} B") } else { format!("{:.1} KiB", bytes as f64 / 1024.0) }
}

fn main() {
    let keys: u64 = std::env::var("KEEL_BENCH_KEYS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let shape = TreeShape::DEFAULT;
    let config = ExchangeConfig::default();
    println!(
        "merkle: {keys} keys per replica, 2^{} segments in 2^{} branches; caps {} branches, {} segments, \
         {} keys, {} lists",
        shape.segments_log2(),
        shape.branches_log2(),
        config.branches_max,
        config.segments_max,
        config.keys_max,
        kib(config.list_bytes_max as usize),
    );

    let records: Vec<(Key, u64, VersionHash)> =
        (0..keys).map(|index| (key(index), position(&key(index)), version(index, 1))).collect();
    let started = Clock::now();
    let tree =
        RangeTree::from_records(RANGE, shape, records.iter().map(|(key, at, version)| (key, *at, *version)));
    let build = started.elapsed();
    let mut local = Replica { tree, records: BTreeMap::new() };
    local.records.extend(records.iter().map(|&(key, at, version)| ((offset(at), key), version)));
    drop(records);

    let objects: Vec<Object> = (0..1024).map(object).collect();
    let rounds = 1_000_000u64;
    let started = Clock::now();
    for n in 0..rounds {
        black_box(version_hash(&objects[(n % 1024) as usize]));
    }
    let hash_ns = per_item(started.elapsed(), rounds);
    let mut tree = local.tree.clone();
    let updates: Vec<(Key, u64)> = (0..1024).map(|index| (key(index), position(&key(index)))).collect();
    let started = Clock::now();
    for n in 0..rounds {
        let (key, at) = &updates[(n % 1024) as usize];
        let generation = 1 + n / 1024;
        tree.update(key, *at, Some(version(n % 1024, generation)), Some(version(n % 1024, generation + 1)));
    }
    let update_ns = per_item(started.elapsed(), rounds);
    black_box(tree.root());
    println!(
        "tree: {} in memory; built from {keys} scanned records in {:.0} ms ({:.0} ns per record)",
        kib(local.tree.memory_bytes()),
        build.as_secs_f64() * 1e3,
        per_item(build, keys),
    );
    println!(
        "per write: tree update {update_ns:.0} ns, plus version_hash of the old and the new object \
         ({hash_ns:.0} ns each for one 100-byte sibling)"
    );
    for count in DIFFERING {
        let mut peer = diverge(&local, count, keys);
        let mut replica = local.clone();
        let (outcome, first) = exchange(&replica, &peer, config, 0);
        let mut total = Cost::default();
        let exchanges = converge(&mut replica, &mut peer, config, &mut total);
        println!(
            "{count} differing: first exchange {} sent, {} received, {} messages in {} round trips, {} keys \
             found, {:.1} ms; converged after {exchanges} exchanges, {} sent, {} received, {:.0} ms",
            kib(first.sent),
            kib(first.received),
            first.round_trips * 2,
            first.round_trips,
            outcome.repair.len(),
            first.time.as_secs_f64() * 1e3,
            kib(total.sent),
            kib(total.received),
            total.time.as_secs_f64() * 1e3,
        );
    }
}
