//! Properties of trees and exchanges on random ranges, shapes and histories.

use std::collections::BTreeMap;

use quickcheck::{Arbitrary, Gen, QuickCheck, TestResult};

use super::tests::{Replica, key, run, version};
use super::*;
use crate::ring::{self, PositionRange};

/// A range of at least a sixteenth of the circle (so that enough keys fall
/// in it) and a small shape, so segments hold several keys and many
/// segments differ at once.
#[derive(Clone, Debug)]
struct Setup {
    range: PositionRange,
    shape: TreeShape,
}

impl Arbitrary for Setup {
    fn arbitrary(g: &mut Gen) -> Setup {
        let start = u64::arbitrary(g);
        let width = u64::arbitrary(g) | (1 << 60);
        // start == end is the whole circle.
        let end = if bool::arbitrary(g) { start.wrapping_add(width) } else { start };
        let segments_log2 = 1 + u8::arbitrary(g) % 9;
        let branches_log2 = 1 + u8::arbitrary(g) % segments_log2;
        let shape = TreeShape::new(segments_log2, branches_log2).expect("within the bounds");
        Setup { range: PositionRange { start, end }, shape }
    }
}

impl Setup {
    /// The first `count` keys, numbered from `first`, whose positions lie in the range.
    fn keys(&self, first: u64, count: usize) -> Vec<Vec<u8>> {
        (first..).map(key).filter(|key| self.range.contains(ring::position(key))).take(count).collect()
    }
}

#[test]
fn updates_commute_and_a_tree_from_a_scan_equals_the_tree_kept_by_updates() {
    fn property(setup: Setup, history: Vec<(u8, Option<u8>)>) -> bool {
        let keys = setup.keys(0, 32);
        let mut replica = Replica::new(setup.range, setup.shape);
        let mut updates = Vec::new();
        for &(index, value) in &history {
            let key = &keys[usize::from(index) % keys.len()];
            let new = value.and_then(|value| version(u64::from(value)));
            updates.push((key.clone(), replica.version(key), new));
            replica.put(key, new);
        }
        let mut reversed = RangeTree::new(setup.range, setup.shape);
        for (key, old, new) in updates.iter().rev() {
            reversed.update(key, ring::position(key), *old, *new);
        }
        let scanned = RangeTree::from_records(setup.range, setup.shape, replica.records());
        replica.tree.check().is_ok() && reversed == replica.tree && scanned == replica.tree
    }
    QuickCheck::new().tests(300).quickcheck(property as fn(Setup, Vec<(u8, Option<u8>)>) -> bool);
}

#[test]
fn segments_are_arcs_that_tile_the_range_in_order() {
    fn property(setup: Setup, positions: Vec<u64>) -> TestResult {
        let tree = RangeTree::new(setup.range, setup.shape);
        let arcs: Vec<PositionRange> =
            (0..setup.shape.segments()).filter_map(|s| tree.segment_range(s)).collect();
        let joined = arcs.windows(2).all(|pair| pair[0].end == pair[1].start);
        let ends = arcs.first().map(|arc| arc.start) == Some(setup.range.start)
            && arcs.last().map(|arc| arc.end) == Some(setup.range.end);
        if !(joined && ends && arcs.len() == setup.shape.segments() as usize) {
            return TestResult::error(format!("arcs {arcs:?} do not tile {:?}", setup.range));
        }
        for position in positions.into_iter().filter(|&position| setup.range.contains(position)) {
            let segment = tree.segment_of(position);
            if tree.segment_range(segment).is_none_or(|arc| !arc.contains(position)) {
                return TestResult::error(format!("{position:#x} is not in its segment {segment}"));
            }
        }
        TestResult::passed()
    }
    QuickCheck::new().tests(300).quickcheck(property as fn(Setup, Vec<u64>) -> TestResult);
}

/// Two replicas that share `base` keys and then each change some.
#[derive(Clone, Debug)]
struct Divergence {
    setup: Setup,
    base: usize,
    /// Key index, and what happens to it: on which side, and to what version.
    changes: Vec<(u16, bool, Option<u8>)>,
}

impl Arbitrary for Divergence {
    fn arbitrary(g: &mut Gen) -> Divergence {
        let changes = (0..usize::arbitrary(g) % 40)
            .map(|_| (u16::arbitrary(g) % 400, bool::arbitrary(g), Option::<u8>::arbitrary(g)))
            .collect();
        Divergence { setup: Setup::arbitrary(g), base: usize::arbitrary(g) % 300, changes }
    }

    fn shrink(&self) -> Box<dyn Iterator<Item = Divergence>> {
        let this = self.clone();
        Box::new(self.changes.shrink().map(move |changes| Divergence { changes, ..this.clone() }))
    }
}

impl Divergence {
    /// The two replicas, and the keys in which they differ, in ring order.
    fn replicas(&self) -> (Replica, Replica, Vec<Vec<u8>>) {
        let keys = self.setup.keys(0, 400);
        let mut local = Replica::new(self.setup.range, self.setup.shape);
        for (index, key) in keys.iter().take(self.base).enumerate() {
            local.put(key, version(index as u64));
        }
        let mut peer = local.clone();
        for &(index, on_peer, value) in &self.changes {
            let replica = if on_peer { &mut peer } else { &mut local };
            replica.put(
                &keys[usize::from(index) % keys.len()],
                value.and_then(|value| version(1000 + u64::from(value))),
            );
        }
        let differing = differing(&local, &peer);
        (local, peer, differing)
    }
}

fn differing(local: &Replica, peer: &Replica) -> Vec<Vec<u8>> {
    let all = |replica: &Replica| -> BTreeMap<Vec<u8>, VersionHash> {
        replica.records().map(|(key, _, version)| (key.to_vec(), version)).collect()
    };
    let (mine, theirs) = (all(local), all(peer));
    let mut keys: Vec<Vec<u8>> =
        mine.keys().chain(theirs.keys()).filter(|key| mine.get(*key) != theirs.get(*key)).cloned().collect();
    keys.sort_by_key(|key| (wire::ring_offset(local.tree.range(), ring::position(key)), key.clone()));
    keys.dedup();
    keys
}

fn same(_: &mut Replica, _: &mut Replica) {}

#[test]
fn an_exchange_within_its_caps_reports_exactly_the_keys_that_differ() {
    fn property(divergence: Divergence) -> TestResult {
        let (mut local, mut peer, expected) = divergence.replicas();
        let (outcome, trace) = run(&mut local, &mut peer, ExchangeConfig::default(), 0, same);
        let outcome = match outcome {
            Ok(outcome) => outcome,
            Err(error) => return TestResult::error(format!("exchange failed: {error}")),
        };
        if outcome.repair != expected || outcome.capped || outcome.keys_differing as usize != expected.len() {
            return TestResult::error(format!("expected {expected:?}, got {outcome:?}"));
        }
        if expected.is_empty() && trace.requests != ["root"] {
            return TestResult::error(format!("replicas in sync sent {:?}", trace.requests));
        }
        TestResult::passed()
    }
    QuickCheck::new().tests(300).quickcheck(property as fn(Divergence) -> TestResult);
}

#[test]
fn capped_exchanges_repair_within_their_caps_and_converge() {
    fn property(divergence: Divergence, caps: (u8, u8, u8, u8)) -> TestResult {
        let (mut local, mut peer, mut differing_now) = divergence.replicas();
        // Lists as short as one entry: segments are compared a list at a time.
        let config = ExchangeConfig {
            branches_max: 1 + u32::from(caps.0 % 3),
            segments_max: 1 + u32::from(caps.1 % 4),
            keys_max: 1 + u32::from(caps.2 % 5),
            list_bytes_max: 1 + u32::from(caps.3),
            ..ExchangeConfig::default()
        };
        for round in 0..=differing_now.len() as u64 {
            let (outcome, _) = run(&mut local, &mut peer, config, round.wrapping_mul(0x9e37_79b9), same);
            let outcome = match outcome {
                Ok(outcome) => outcome,
                Err(error) => return TestResult::error(format!("exchange failed: {error}")),
            };
            let bytes: u64 = outcome.repair.iter().map(|key| KeyVersion::list_bytes(key)).sum();
            let one_key = outcome.repair.len() <= 1;
            if outcome.repair.len() > config.keys_max as usize
                || (bytes > u64::from(config.list_bytes_max) && !one_key)
                || outcome.repair.iter().any(|key| !differing_now.contains(key))
            {
                return TestResult::error(format!(
                    "{outcome:?} is not within {config:?} and {differing_now:?}"
                ));
            }
            if differing_now.is_empty() {
                return TestResult::passed();
            }
            if outcome.repair.is_empty() {
                return TestResult::error(format!("no progress with {differing_now:?} left: {outcome:?}"));
            }
            for key in &outcome.repair {
                // A merge of two copies: here, the greater version wins on both.
                let merged = local.version(key).max(peer.version(key));
                local.put(key, merged);
                peer.put(key, merged);
            }
            differing_now = differing(&local, &peer);
        }
        TestResult::error(format!("{} keys still differ", differing_now.len()))
    }
    QuickCheck::new().tests(200).quickcheck(property as fn(Divergence, (u8, u8, u8, u8)) -> TestResult);
}

#[test]
fn any_bytes_decode_to_a_message_or_an_error() {
    fn property(bytes: Vec<u8>, flips: Vec<(usize, u8)>) -> bool {
        let _ = Request::decode(&bytes);
        let _ = Reply::decode(&bytes);
        let tree = TreeId::new(PositionRange { start: 1, end: 1 << 40 }, TreeShape::DEFAULT);
        let request = Request::Keys { tree, segments: vec![3, 7, 9000], after: None };
        let entries = vec![KeyVersion { key: b"abc".to_vec(), version: VersionHash(5) }; 3];
        let reply = Reply::Keys(KeyList { entries, complete: false });
        for mut encoded in [request.encode().unwrap(), reply.encode().unwrap()] {
            for &(at, flip) in &flips {
                let len = encoded.len();
                encoded[at % len] ^= flip;
            }
            let _ = Request::decode(&encoded);
            let _ = Reply::decode(&encoded);
        }
        true
    }
    QuickCheck::new().tests(2000).quickcheck(property as fn(Vec<u8>, Vec<(usize, u8)>) -> bool);
}

#[test]
fn any_reply_at_any_stage_is_taken_or_refused_without_a_panic() {
    fn property(divergence: Divergence, replies: Vec<Vec<u8>>, stage: u8) -> TestResult {
        let (local, peer, differing) = divergence.replicas();
        if differing.is_empty() {
            return TestResult::discard();
        }
        let mut exchange = Exchange::new(&local.tree, ExchangeConfig::default(), 0);
        let now = crate::Instant::ZERO;
        // Follow the honest peer for `stage` replies, then hear garbage.
        let mut honest = u32::from(stage % 4);
        let mut garbage = replies.into_iter().filter_map(|bytes| Reply::decode(&bytes).ok());
        while let Some(step) = exchange.poll_output() {
            let result = match step {
                Step::Send(request) if honest > 0 => {
                    honest -= 1;
                    exchange.handle_reply(now, &local.tree, peer.answer(request, 1 << 20))
                }
                Step::Send(_) => match garbage.next() {
                    Some(reply) => exchange.handle_reply(now, &local.tree, reply),
                    None => break,
                },
                Step::Scan(scan) => exchange.handle_scanned(now, local.scan(&scan)),
                Step::Read(read) => exchange.handle_read(local.read(&read)),
                Step::Done(_) => break,
            };
            if result.is_err() {
                return TestResult::from_bool(exchange.is_over() && exchange.poll_output().is_none());
            }
            if let Some(at) = exchange.poll_timeout() {
                exchange.handle_timeout(at);
            }
        }
        TestResult::passed()
    }
    QuickCheck::new().tests(300).quickcheck(property as fn(Divergence, Vec<Vec<u8>>, u8) -> TestResult);
}
