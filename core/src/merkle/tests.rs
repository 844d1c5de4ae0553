//! Unit tests, and the in-memory replicas the properties drive exchanges between.

use std::collections::BTreeMap;
use std::ops::Bound;

use super::*;
use crate::ring::{self, PositionRange};
use crate::version::CausalContext;
use crate::{Instant, NodeId};

/// One replica of a range as an exchange sees it: its records in ring
/// order, and the tree it keeps of them by updates alone.
#[derive(Clone, Debug)]
pub(super) struct Replica {
    pub(super) tree: RangeTree,
    /// By ring offset within the range, then key: the store's order.
    records: BTreeMap<(u64, Vec<u8>), (u64, VersionHash)>,
}

impl Replica {
    pub(super) fn new(range: PositionRange, shape: TreeShape) -> Replica {
        Replica { tree: RangeTree::new(range, shape), records: BTreeMap::new() }
    }

    /// Sets `key`'s record (`None`: removes it), updating the tree as a node would.
    pub(super) fn put(&mut self, key: &[u8], version: Option<VersionHash>) {
        let position = ring::position(key);
        let at = (wire::ring_offset(self.tree.range(), position), key.to_vec());
        let old = match version {
            Some(version) => self.records.insert(at, (position, version)),
            None => self.records.remove(&at),
        };
        self.tree.update(key, position, old.map(|(_, version)| version), version);
    }

    pub(super) fn version(&self, key: &[u8]) -> Option<VersionHash> {
        let at = (wire::ring_offset(self.tree.range(), ring::position(key)), key.to_vec());
        self.records.get(&at).map(|&(_, version)| version)
    }

    /// Every record, `(key, position, version)`, in ring order.
    pub(super) fn records(&self) -> impl Iterator<Item = (&[u8], u64, VersionHash)> {
        self.records.iter().map(|((_, key), &(position, version))| (key.as_slice(), position, version))
    }

    /// What a node's scan job does for `scan`.
    pub(super) fn scan(&self, scan: &SegmentScan) -> KeyList {
        let mut list = scan.list();
        let range = self.tree.range();
        let after = scan.after().map(|(position, key)| (wire::ring_offset(range, position), key.to_vec()));
        'ranges: for part in scan.ranges() {
            let first = (wire::ring_offset(range, part.start.wrapping_add(1)), Vec::new());
            let last = wire::ring_offset(range, part.end);
            let start = match &after {
                Some(after) if *after >= first => Bound::Excluded(after.clone()),
                _ => Bound::Included(first),
            };
            for ((offset, key), &(position, version)) in self.records.range((start, Bound::Unbounded)) {
                if *offset > last {
                    break;
                }
                if !list.push(position, key, version) {
                    break 'ranges;
                }
            }
        }
        list.finish()
    }

    pub(super) fn read(&self, read: &VersionRead) -> Vec<Option<VersionHash>> {
        read.keys().iter().map(|key| self.version(key)).collect()
    }

    /// What a node does with a peer's request.
    pub(super) fn answer(&self, request: Request, list_bytes_max: u32) -> Reply {
        match respond(&self.tree, request, list_bytes_max) {
            Response::Reply(reply) => reply,
            Response::Scan(scan) => Reply::Keys(self.scan(&scan)),
            Response::Read(read) => read.reply(self.read(&read)),
        }
    }
}

/// What one exchange moved.
#[derive(Debug, Default)]
pub(super) struct Trace {
    pub(super) requests: Vec<&'static str>,
    pub(super) replies: Vec<&'static str>,
    pub(super) bytes_sent: usize,
    pub(super) bytes_received: usize,
}

/// Runs an exchange from `local` with `peer`, every message through its
/// encoding. `between` runs when the second comparison is due, to change
/// the replicas as writes landing meanwhile would.
pub(super) fn run(
    local: &mut Replica,
    peer: &mut Replica,
    config: ExchangeConfig,
    rotation: u64,
    mut between: impl FnMut(&mut Replica, &mut Replica),
) -> (Result<Outcome, ExchangeError>, Trace) {
    let mut exchange = Exchange::new(&local.tree, config, rotation);
    let mut trace = Trace::default();
    let now = Instant::from_nanos(1_000_000);
    loop {
        let Some(step) = exchange.poll_output() else {
            let at = exchange.poll_timeout().expect("an exchange that waits for nothing else waits for time");
            exchange.handle_timeout(at - core::time::Duration::from_nanos(1));
            assert!(exchange.poll_output().is_none(), "nothing before its time");
            between(local, peer);
            exchange.handle_timeout(at);
            continue;
        };
        let result = match step {
            Step::Send(request) => {
                trace.requests.push(request.kind());
                let bytes = request.encode().expect("the exchange sends only what decodes");
                trace.bytes_sent += bytes.len();
                let reply =
                    peer.answer(Request::decode(&bytes).expect("a request decodes"), config.list_bytes_max);
                trace.replies.push(reply.kind());
                let bytes = reply.encode().expect("a responder sends only what decodes");
                trace.bytes_received += bytes.len();
                exchange.handle_reply(now, &local.tree, Reply::decode(&bytes).expect("a reply decodes"))
            }
            Step::Scan(scan) => exchange.handle_scanned(now, local.scan(&scan)),
            Step::Read(read) => exchange.handle_read(local.read(&read)),
            Step::Done(outcome) => {
                assert!(exchange.is_over() && exchange.poll_output().is_none());
                return (Ok(outcome), trace);
            }
        };
        if let Err(error) = result {
            assert!(exchange.is_over() && exchange.poll_output().is_none(), "an error ends the exchange");
            return (Err(error), trace);
        }
    }
}

pub(super) fn key(index: u64) -> Vec<u8> {
    format!("key-{index}").into_bytes()
}

pub(super) fn version(index: u64) -> Option<VersionHash> {
    Some(VersionHash(index.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1))
}

const WHOLE: PositionRange = PositionRange { start: 7, end: 7 };

/// Two replicas of the whole circle holding `keys` keys alike.
fn pair(keys: u64) -> (Replica, Replica) {
    let mut replica = Replica::new(WHOLE, TreeShape::DEFAULT);
    for index in 0..keys {
        replica.put(&key(index), version(index));
    }
    (replica.clone(), replica)
}

fn same(_: &mut Replica, _: &mut Replica) {}

#[test]
fn replicas_in_sync_exchange_only_their_roots() {
    let (mut local, mut peer) = pair(1000);
    let (outcome, trace) = run(&mut local, &mut peer, ExchangeConfig::default(), 0, same);
    assert_eq!(outcome.unwrap(), Outcome::default());
    assert_eq!((&trace.requests[..], &trace.replies[..]), (&["root"][..], &["in_sync"][..]));
    assert!(trace.bytes_sent + trace.bytes_received < 64, "{trace:?}");
}

#[test]
fn an_exchange_finds_a_missing_key_a_changed_key_and_an_extra_key() {
    let (mut local, mut peer) = pair(1000);
    local.put(&key(3), None);
    peer.put(&key(5), version(5000));
    peer.put(&key(2000), version(1));
    let (outcome, trace) = run(&mut local, &mut peer, ExchangeConfig::default(), 0, same);
    let outcome = outcome.unwrap();
    let mut expected = vec![key(3), key(5), key(2000)];
    expected.sort_by_key(|key| wire::ring_offset(WHOLE, ring::position(key)));
    assert_eq!(outcome.repair, expected);
    assert_eq!((outcome.keys_differing, outcome.capped), (3, false));
    assert_eq!(trace.requests, ["root", "segments", "keys", "versions"]);
}

#[test]
fn a_difference_healed_before_the_second_comparison_is_not_repaired() {
    let (mut local, mut peer) = pair(100);
    // Writes still on their way to `local` at the first comparison.
    peer.put(&key(1), version(11));
    peer.put(&key(2), version(12));
    let land = |local: &mut Replica, _: &mut Replica| local.put(&key(1), version(11));
    let (outcome, _) = run(&mut local, &mut peer, ExchangeConfig::default(), 0, land);
    let outcome = outcome.unwrap();
    assert_eq!(outcome.keys_differing, 2);
    assert_eq!(outcome.repair, vec![key(2)]);
}

#[test]
fn a_segment_longer_than_a_list_is_compared_a_list_at_a_time() {
    let shape = TreeShape::new(1, 1).unwrap();
    let mut local = Replica::new(WHOLE, shape);
    for index in 0..200 {
        local.put(&key(index), version(index));
    }
    let mut peer = local.clone();
    // The last key of its segment in ring order.
    let last =
        local.records().filter(|(_, position, _)| local.tree.segment_of(*position) == 0).last().unwrap();
    let last = last.0.to_vec();
    peer.put(&last, version(999));
    let config = ExchangeConfig { list_bytes_max: 200, ..ExchangeConfig::default() };
    let (outcome, trace) = run(&mut local, &mut peer, config, 0, same);
    let outcome = outcome.unwrap();
    assert_eq!(outcome.repair, vec![last]);
    let lists = trace.requests.iter().filter(|&&kind| kind == "keys").count();
    assert!(lists > 5, "about 100 keys of 15 bytes in lists of 200 bytes: {lists} lists");
    assert!(!outcome.capped, "nothing was left out");
}

#[test]
fn trees_follow_updates_and_removals_back_to_empty() {
    let (mut replica, _) = pair(0);
    let empty = replica.tree.clone();
    replica.put(b"a", version(1));
    replica.put(b"b", version(2));
    replica.put(b"a", version(3));
    assert_ne!(replica.tree.root(), empty.root());
    assert_eq!(replica.tree.keys(), 2);
    replica.tree.check().unwrap();
    replica.put(b"a", None);
    replica.put(b"b", None);
    assert_eq!(replica.tree, empty);
    assert_eq!(replica.tree.root(), TreeHash(0));
}

#[test]
fn a_tree_from_a_scan_equals_the_tree_kept_by_updates() {
    let (mut replica, _) = pair(500);
    for index in (0..500).step_by(3) {
        replica.put(&key(index), version(index + 7));
    }
    let built = RangeTree::from_records(WHOLE, TreeShape::DEFAULT, replica.records());
    assert_eq!(built, replica.tree);
}

#[test]
fn version_hashes_follow_causal_content_not_the_order_of_merges() {
    let actor = |node| crate::version::Actor { node: NodeId(node), incarnation: 9, epoch: 1 };
    let live = |bytes: &[u8]| crate::version::Value::Live(bytes.to_vec());
    let mut a = Object::new();
    a.write(actor(1), &CausalContext::new(), live(b"x"), 10);
    let mut b = Object::new();
    b.write(actor(2), &CausalContext::new(), live(b"y"), 20);
    let mut c = a.clone();
    c.write(actor(1), a.context(), crate::version::Value::Tombstone, 30);
    let merged = |objects: &[&Object]| {
        let mut merged = Object::new();
        for object in objects {
            merged.merge(object);
        }
        version_hash(&merged)
    };
    assert_eq!(merged(&[&a, &b, &c]), merged(&[&c, &b, &a]));
    assert_eq!(merged(&[&a, &b, &c]), merged(&[&b, &c, &a, &b]));
    let distinct = [merged(&[&a]), merged(&[&b]), merged(&[&c]), merged(&[&a, &b]), merged(&[])];
    for (i, x) in distinct.iter().enumerate() {
        for y in &distinct[i + 1..] {
            assert_ne!(x, y);
        }
    }
    let mut other_value = Object::new();
    other_value.write(actor(1), &CausalContext::new(), live(b"z"), 10);
    assert_eq!(version_hash(&other_value), version_hash(&a), "a dot names one write: its bytes add nothing");
    let mut other_time = Object::new();
    other_time.write(actor(1), &CausalContext::new(), live(b"x"), 99);
    assert_eq!(version_hash(&other_time), version_hash(&a), "the timestamp does not");
}

#[test]
fn segments_of_a_narrow_range_are_arcs_or_empty() {
    let range = PositionRange { start: u64::MAX - 2, end: 2 };
    let tree = RangeTree::new(range, TreeShape::new(4, 2).unwrap());
    let positions = [u64::MAX - 1, u64::MAX, 0, 1, 2];
    for (offset, position) in positions.into_iter().enumerate() {
        assert_eq!(tree.segment_of(position), offset as u32);
        assert!(tree.segment_range(offset as u32).unwrap().contains(position));
    }
    assert_eq!(tree.segment_range(4), Some(PositionRange { start: 1, end: 2 }));
    assert_eq!(tree.segment_range(5), None);
}

#[test]
fn exchanges_work_on_a_range_narrower_than_its_segments() {
    // Keys whose positions fall in a tiny range are rare: build the range around some.
    let keys: Vec<Vec<u8>> = (0..40).map(key).collect();
    let mut positions: Vec<u64> = keys.iter().map(|key| ring::position(key)).collect();
    positions.sort_unstable();
    let range = PositionRange { start: positions[10] - 1, end: positions[10].wrapping_add(100) };
    let mut local = Replica::new(range, TreeShape::DEFAULT);
    let mut peer = local.clone();
    let inside: Vec<&Vec<u8>> = keys.iter().filter(|key| range.contains(ring::position(key))).collect();
    assert!(!inside.is_empty());
    for key in &inside {
        peer.put(key, version(1));
    }
    let (outcome, _) = run(&mut local, &mut peer, ExchangeConfig::default(), 0, same);
    assert_eq!(outcome.unwrap().repair.len(), inside.len());
}

#[test]
fn peers_with_another_shape_refuse() {
    let (local, _) = pair(10);
    let other = Replica::new(WHOLE, TreeShape::new(12, 6).unwrap());
    let request = Request::Root { tree: local.tree.id(), root: local.tree.root() };
    assert_eq!(other.answer(request, 1 << 20), Reply::Refused(Refusal::UnknownTree));
    let (mut local, _) = pair(10);
    let (outcome, _) = run(&mut local, &mut other.clone(), ExchangeConfig::default(), 0, same);
    assert_eq!(outcome, Err(ExchangeError::Refused(Refusal::UnknownTree)));
}

/// An exchange of `local` stepped until it waits for a reply to `kind`.
fn exchange_at(local: &Replica, peer: &Replica, kind: &str) -> Exchange {
    let mut exchange = Exchange::new(&local.tree, ExchangeConfig::default(), 0);
    let now = Instant::ZERO;
    loop {
        match exchange.poll_output().expect("the exchange gets that far") {
            Step::Send(request) if request.kind() == kind => return exchange,
            Step::Send(request) => {
                exchange.handle_reply(now, &local.tree, peer.answer(request, 1 << 20)).unwrap()
            }
            Step::Scan(scan) => exchange.handle_scanned(now, local.scan(&scan)).unwrap(),
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[test]
fn replies_that_do_not_answer_the_request_end_the_exchange() {
    let (local, mut peer) = pair(1000);
    peer.put(&key(1), version(99));
    let bad_replies: [(&str, Reply); 6] = [
        ("root", Reply::Branches(vec![TreeHash(1); 255])),
        ("root", Reply::Segments(vec![])),
        ("segments", Reply::Segments(vec![TreeHash(1); 65])),
        ("segments", Reply::InSync),
        ("keys", Reply::Versions(vec![None])),
        ("keys", Reply::Refused(Refusal::Busy)),
    ];
    for (kind, reply) in bad_replies {
        let mut exchange = exchange_at(&local, &peer, kind);
        assert!(
            exchange.handle_reply(Instant::ZERO, &local.tree, reply.clone()).is_err(),
            "{kind}: {reply:?}"
        );
        assert!(exchange.is_over() && exchange.poll_output().is_none());
        assert!(exchange.handle_reply(Instant::ZERO, &local.tree, Reply::InSync).is_err(), "over stays over");
    }
}

#[test]
fn key_lists_outside_the_segments_or_out_of_order_are_refused() {
    let (local, mut peer) = pair(1000);
    peer.put(&key(1), version(99));
    let mut exchange = exchange_at(&local, &peer, "keys");
    let Some(Step::Scan(scan)) = exchange.poll_output() else { panic!("a local scan follows the request") };
    let good = peer.scan(&scan);
    assert!(!good.entries.is_empty());
    let stranger =
        (2000..).map(key).find(|key| scan.ranges().iter().all(|r| !r.contains(ring::position(key))));
    let stranger = KeyVersion { key: stranger.unwrap(), version: VersionHash(1) };
    let mut outside = good.clone();
    outside.entries.push(stranger);
    let mut twice = good.clone();
    twice.entries.push(good.entries[0].clone());
    for (name, list) in [("outside", outside), ("twice", twice)] {
        let mut exchange = exchange_at(&local, &peer, "keys");
        let result = exchange.handle_reply(Instant::ZERO, &local.tree, Reply::Keys(list));
        assert!(matches!(result, Err(ExchangeError::List { side: Side::Peer, .. })), "{name}: {result:?}");
    }
    let mut exchange = exchange_at(&local, &peer, "keys");
    exchange.handle_reply(Instant::ZERO, &local.tree, Reply::Keys(good)).unwrap();
    let result = exchange.handle_reply(Instant::ZERO, &local.tree, Reply::Keys(KeyList::default()));
    assert!(matches!(result, Err(ExchangeError::Unexpected { .. })), "one list per request: {result:?}");
}

#[test]
fn versions_of_another_count_are_refused() {
    let (local, mut peer) = pair(100);
    peer.put(&key(1), version(99));
    let mut exchange = Exchange::new(&local.tree, ExchangeConfig::default(), 0);
    let now = Instant::ZERO;
    while exchange.poll_timeout().is_none() {
        match exchange.poll_output().unwrap() {
            Step::Send(request) => {
                exchange.handle_reply(now, &local.tree, peer.answer(request, 1 << 20)).unwrap()
            }
            Step::Scan(scan) => exchange.handle_scanned(now, local.scan(&scan)).unwrap(),
            other => panic!("unexpected {other:?}"),
        }
    }
    exchange.handle_timeout(Instant::MAX);
    assert!(matches!(exchange.poll_output(), Some(Step::Send(Request::Versions { .. }))));
    let result = exchange.handle_reply(now, &local.tree, Reply::Versions(vec![None, None]));
    assert!(matches!(result, Err(ExchangeError::Count { side: Side::Peer, .. })), "{result:?}");
}

#[test]
fn requests_out_of_the_trees_bounds_do_not_decode() {
    let tree = TreeId::new(WHOLE, TreeShape::DEFAULT);
    let far = (0..).map(key).find(|key| ring::position(key) > 1 << 63).unwrap();
    let near = (0..).map(key).find(|key| ring::position(key) < 1 << 63).unwrap();
    let bad = [
        (Request::Segments { tree, branches: vec![] }, "empty"),
        (Request::Segments { tree, branches: vec![256] }, "index"),
        (Request::Segments { tree, branches: vec![3, 2] }, "order"),
        (Request::Keys { tree, segments: vec![1 << 14], after: None }, "index"),
        (Request::Keys { tree, segments: vec![5, 5], after: None }, "order"),
        (Request::Keys { tree, segments: (0..4097).collect(), after: None }, "count"),
        (Request::Keys { tree, segments: vec![0], after: Some(far.clone()) }, "resume elsewhere"),
        (Request::Versions { tree, keys: vec![vec![]] }, "key length"),
        (Request::Versions { tree, keys: vec![far.clone(), near.clone()] }, "ring order"),
        (
            Request::Versions {
                tree: TreeId::new(PositionRange { start: 0, end: 1 << 62 }, TreeShape::DEFAULT),
                keys: vec![far],
            },
            "outside the range",
        ),
    ];
    for (request, why) in bad {
        assert!(request.encode().is_err(), "{why}: refused before sending");
        let bytes = postcard::to_allocvec(&request).unwrap();
        assert!(Request::decode(&bytes).is_err(), "{why}: refused on decoding");
        assert!(postcard::from_bytes::<Request>(&bytes).is_err(), "{why}: refused inside other messages too");
    }
    // 4096 keys of 1 KiB: within the count, over a list's bytes.
    let mut long: Vec<Vec<u8>> = (0..4096).map(|index| [key(index), vec![b'.'; 1024]].concat()).collect();
    long.sort_by_key(|key| (wire::ring_offset(WHOLE, ring::position(key)), key.clone()));
    let request = Request::Versions { tree, keys: long };
    assert!(matches!(request.encode(), Err(WireError::ListTooLarge { .. })));
    let good = Request::Versions { tree, keys: vec![near] };
    let mut bytes = good.encode().unwrap();
    assert_eq!(Request::decode(&bytes), Ok(good));
    bytes.push(0);
    assert_eq!(Request::decode(&bytes), Err(WireError::TrailingBytes { len: 1 }));
}

#[test]
fn shapes_out_of_bounds_do_not_decode() {
    let shape_bytes = |segments_log2: u8, branches_log2: u8| {
        let tree = postcard::to_allocvec(&(0u64, 0u64, segments_log2, branches_log2)).unwrap();
        let mut bytes = vec![0];
        bytes.extend(tree);
        bytes.extend([0; 8]);
        bytes
    };
    assert!(Request::decode(&shape_bytes(14, 8)).is_ok());
    for (segments_log2, branches_log2) in [(21, 8), (14, 0), (8, 9), (14, 13), (20, 7)] {
        assert!(TreeShape::new(segments_log2, branches_log2).is_err());
        assert!(Request::decode(&shape_bytes(segments_log2, branches_log2)).is_err());
    }
}

#[test]
fn replies_out_of_bounds_do_not_decode() {
    let long_key = KeyVersion { key: vec![1; crate::message::KEY_BYTES_MAX + 1], version: VersionHash(1) };
    let bad = [
        Reply::Branches(vec![TreeHash(0); 4097]),
        Reply::Keys(KeyList { entries: vec![], complete: false }),
        Reply::Keys(KeyList { entries: vec![long_key], complete: true }),
        Reply::Keys(KeyList {
            entries: vec![KeyVersion { key: vec![1; 60_000], version: VersionHash(1) }; 80],
            complete: true,
        }),
        Reply::Versions(vec![None; 4097]),
    ];
    for reply in bad {
        assert!(reply.encode().is_err(), "{}: refused before sending", reply.kind());
        let bytes = postcard::to_allocvec(&reply).unwrap();
        assert!(Reply::decode(&bytes).is_err(), "{}: refused on decoding", reply.kind());
    }
    assert!(matches!(Reply::decode(&vec![0; WIRE_BYTES_MAX + 1]), Err(WireError::TooLarge { .. })));
}

#[test]
fn messages_round_trip() {
    let tree = TreeId::new(PositionRange { start: 5, end: 1 }, TreeShape::DEFAULT);
    let segment = |key: &Vec<u8>| RangeTree::new(tree.range(), tree.shape()).segment_of(ring::position(key));
    let far = (0..).map(key).find(|key| segment(key) == 1 << 13).unwrap();
    let requests = [
        Request::Root { tree, root: TreeHash(u64::MAX) },
        Request::Segments { tree, branches: vec![0, 9, 255] },
        Request::Keys { tree, segments: vec![1, 2, 16383], after: None },
        Request::Keys { tree, segments: vec![1 << 13, 16383], after: Some(far) },
    ];
    for request in requests {
        assert_eq!(Request::decode(&request.encode().unwrap()), Ok(request));
    }
    let replies = [
        Reply::InSync,
        Reply::Branches(vec![TreeHash(1); 256]),
        Reply::Segments(vec![TreeHash(3); 64]),
        Reply::Keys(KeyList {
            entries: vec![KeyVersion { key: b"k".to_vec(), version: VersionHash(7) }],
            complete: false,
        }),
        Reply::Versions(vec![None, Some(VersionHash(u64::MAX))]),
        Reply::Refused(Refusal::NotReady),
    ];
    for reply in replies {
        assert_eq!(Reply::decode(&reply.encode().unwrap()), Ok(reply));
    }
    // Hashes take 8 bytes, not a varint's 10.
    assert_eq!(Reply::Branches(vec![TreeHash(u64::MAX); 256]).encode().unwrap().len(), 1 + 2 + 256 * 8);
}
