use std::collections::BTreeMap;

use quickcheck::{Arbitrary, Gen, QuickCheck};

use super::*;

fn actor(node: u64) -> Actor {
    Actor { node: NodeId(node), incarnation: 7, epoch: 1 }
}

fn dot(node: u64, counter: u64) -> Dot {
    Dot { actor: actor(node), counter }
}

fn live(text: &str) -> Value {
    Value::Live(text.as_bytes().to_vec())
}

fn values(object: &Object) -> Vec<String> {
    object.live_values().map(|bytes| String::from_utf8_lossy(bytes).into_owned()).collect()
}

#[test]
fn context_folds_contiguous_cloud_dots() {
    let mut context = CausalContext::new();
    context.insert(dot(1, 3));
    context.insert(dot(1, 2));
    assert_eq!(context.cloud_len(), 2);
    assert!(!context.contains(&dot(1, 1)));
    context.insert(dot(1, 1));
    assert_eq!(context.cloud_len(), 0);
    assert!(context.contains(&dot(1, 3)));
    assert!(!context.contains(&dot(1, 4)));
    assert_eq!(context.max_counter(actor(1)), 3);
    context.insert(dot(1, 9));
    assert_eq!(context.max_counter(actor(1)), 9);
    assert_eq!(context.max_counter(actor(2)), 0);
    assert_eq!(context.actor_count(), 1);
}

#[test]
fn a_write_replaces_what_its_context_saw() {
    let mut object = Object::new();
    let first = object.write(actor(1), &CausalContext::new(), live("a"), 10).unwrap();
    assert_eq!(first, dot(1, 1));
    let seen = object.context().clone();
    object.write(actor(1), &seen, live("b"), 11).unwrap();
    assert_eq!(values(&object), ["b"]);
    assert!(object.invariants().is_ok());
}

#[test]
fn a_blind_write_is_concurrent_with_what_is_stored() {
    let mut object = Object::new();
    object.write(actor(1), &CausalContext::new(), live("a"), 10).unwrap();
    object.write(actor(1), &CausalContext::new(), live("b"), 11).unwrap();
    assert_eq!(values(&object), ["a", "b"]);
}

#[test]
fn a_write_reply_context_covers_only_the_write_and_what_was_seen() {
    // The coordinator holds "a" (dot 1); a client that saw nothing writes "b"
    // (dot 2). Its reply context is {dot 2} alone, so writing again with it
    // replaces "b" but leaves "a", which the client never saw.
    let mut object = Object::new();
    object.write(actor(1), &CausalContext::new(), live("a"), 10).unwrap();
    let dot_b = object.write(actor(1), &CausalContext::new(), live("b"), 11).unwrap();
    let mut reply = CausalContext::new();
    reply.insert(dot_b);
    assert!(!reply.contains(&dot(1, 1)));
    object.write(actor(1), &reply, live("c"), 12).unwrap();
    assert_eq!(values(&object), ["a", "c"]);
}

#[test]
fn concurrent_writes_on_two_replicas_become_siblings_then_resolve() {
    let mut left = Object::new();
    let mut right = Object::new();
    left.write(actor(1), &CausalContext::new(), live("left"), 1).unwrap();
    right.write(actor(2), &CausalContext::new(), live("right"), 1).unwrap();
    let mut merged = left.clone();
    assert!(merged.merge(&right));
    assert_eq!(values(&merged), ["left", "right"]);
    let seen = merged.context().clone();
    left.merge(&merged);
    left.write(actor(1), &seen, live("resolved"), 2).unwrap();
    right.merge(&left);
    assert_eq!(values(&right), ["resolved"]);
    assert!(!right.merge(&left), "merging the same state again changes nothing");
}

#[test]
fn a_delete_is_a_tombstone_that_replaces_what_it_saw() {
    let mut object = Object::new();
    object.write(actor(1), &CausalContext::new(), live("a"), 1).unwrap();
    let seen = object.context().clone();
    object.write(actor(1), &seen, Value::Tombstone, 2).unwrap();
    assert!(object.is_deleted());
    assert_eq!(object.live_values().count(), 0);
    let mut stale = Object::new();
    stale.write(actor(1), &CausalContext::new(), live("a"), 1).unwrap();
    stale.merge(&object);
    assert!(stale.is_deleted(), "the old value does not come back");
}

#[test]
fn context_bytes_round_trip_and_reject_garbage() {
    let mut context = CausalContext::new();
    context.insert(dot(1, 1));
    context.insert(dot(2, 5));
    let bytes = context.to_bytes();
    assert_eq!(CausalContext::from_bytes(&bytes), Ok(context));
    assert_eq!(CausalContext::from_bytes(&[]), Ok(CausalContext::new()));
    assert_eq!(CausalContext::from_bytes(&[9, 1, 2]), Err(ContextError::UnknownFormat(9)));
    assert_eq!(CausalContext::from_bytes(&[1, 0xff, 0xff, 0xff]), Err(ContextError::Malformed));
    let huge = vec![1u8; CONTEXT_BYTES_MAX + 1];
    assert!(matches!(CausalContext::from_bytes(&huge), Err(ContextError::TooLarge { .. })));
}

#[test]
fn decoded_contexts_are_normalized() {
    // A client may hand back a cloud dot the vector already covers.
    let mut raw = CausalContext::new();
    raw.vector.push((actor(1), 4));
    raw.cloud.push(dot(1, 2));
    raw.cloud.push(dot(1, 5));
    let mut bytes = vec![CONTEXT_FORMAT];
    bytes.extend(postcard::to_allocvec(&raw).unwrap());
    let decoded = CausalContext::from_bytes(&bytes).unwrap();
    assert_eq!(decoded.cloud_len(), 0);
    assert_eq!(decoded.max_counter(actor(1)), 5);
}

/// The layout contexts had when they were an ordered map and an ordered set:
/// records on disk and contexts held by clients were written in it.
#[derive(serde::Serialize)]
struct TreeContext {
    vector: BTreeMap<Actor, u64>,
    cloud: std::collections::BTreeSet<Dot>,
}

#[test]
fn contexts_encode_as_an_ordered_map_and_set() {
    let mut context = CausalContext::new();
    for dot in [dot(3, 1), dot(1, 1), dot(1, 2), dot(2, 4), dot(1, 7), dot(3, 9)] {
        context.insert(dot);
    }
    let tree = TreeContext {
        vector: [(actor(1), 2), (actor(3), 1)].into_iter().collect(),
        cloud: [dot(1, 7), dot(2, 4), dot(3, 9)].into_iter().collect(),
    };
    assert_eq!(postcard::to_allocvec(&context).unwrap(), postcard::to_allocvec(&tree).unwrap());
}

#[test]
fn decoding_sorts_and_keeps_the_last_of_repeated_entries() {
    // Out of order, with a repeated actor and a repeated dot, as no encoder
    // of keel writes them but a hostile client may.
    let mut raw = CausalContext::new();
    raw.vector = vec![(actor(3), 2), (actor(1), 1), (actor(3), 5)];
    raw.cloud = vec![dot(2, 9), dot(1, 8), dot(2, 9)];
    let mut bytes = vec![CONTEXT_FORMAT];
    bytes.extend(postcard::to_allocvec(&raw).unwrap());
    let decoded = CausalContext::from_bytes(&bytes).unwrap();
    assert_eq!(decoded.vector, vec![(actor(1), 1), (actor(3), 5)]);
    assert_eq!(decoded.cloud, vec![dot(1, 8), dot(2, 9)]);
    let object = Object { siblings: Vec::new(), context: decoded };
    assert_eq!(object.invariants(), Ok(()));
}

#[test]
fn any_decoded_context_is_well_formed_and_agrees_with_a_tree() {
    // Raw entries in any order, with repeats and zero counters, from few
    // actors so that repeats are common.
    fn property(vector: Vec<(u8, u8)>, cloud: Vec<(u8, u8)>) -> bool {
        let mut raw = CausalContext::new();
        raw.vector = vector.iter().map(|&(node, n)| (actor(u64::from(node % 4)), u64::from(n))).collect();
        raw.cloud = cloud.iter().map(|&(node, n)| dot(u64::from(node % 4), u64::from(n))).collect();
        let mut bytes = vec![CONTEXT_FORMAT];
        bytes.extend(postcard::to_allocvec(&raw).unwrap());
        let Ok(decoded) = CausalContext::from_bytes(&bytes) else { return false };
        // The dots an ordered map and set would have held, the last repeat of an actor winning.
        let tree: BTreeMap<Actor, u64> = raw.vector.iter().copied().collect();
        let claimed = |d: &Dot| {
            tree.get(&d.actor).is_some_and(|&n| d.counter <= n) || (raw.cloud.contains(d) && d.counter > 0)
        };
        let probes = (0..4u64).flat_map(|node| (1..=256u64).map(move |n| dot(node, n)));
        let object = Object { siblings: Vec::new(), context: decoded.clone() };
        object.invariants().is_ok()
            && probes.into_iter().all(|d| decoded.contains(&d) == claimed(&d))
            && CausalContext::from_bytes(&decoded.to_bytes()).as_ref() == Ok(&decoded)
    }
    QuickCheck::new().tests(2000).quickcheck(property as fn(Vec<(u8, u8)>, Vec<(u8, u8)>) -> bool);
}

#[test]
fn counter_overflow_is_refused_not_wrapped() {
    let mut seen = CausalContext::new();
    seen.insert(dot(1, u64::MAX));
    let mut object = Object::new();
    assert_eq!(object.write(actor(1), &seen, live("x"), 1), None);
}

/// A random history over a few replicas: writes at a replica with a context
/// read from some replicas, and merges between replicas. It records what each
/// dot's write had seen, so the tests can check causality independently of
/// the object's own bookkeeping.
#[derive(Clone, Debug)]
struct History {
    ops: Vec<Op>,
}

#[derive(Clone, Debug)]
enum Op {
    Write { at: u8, read_from: Vec<u8>, delete: bool },
    Merge { from: u8, to: u8 },
}

const REPLICAS: u8 = 3;

impl Arbitrary for History {
    fn arbitrary(g: &mut Gen) -> History {
        let len = usize::arbitrary(g) % 24;
        let replica = |g: &mut Gen| u8::arbitrary(g) % REPLICAS;
        let ops = (0..len)
            .map(|_| {
                if bool::arbitrary(g) {
                    let read_len = usize::arbitrary(g) % 3;
                    let read_from = (0..read_len).map(|_| replica(g)).collect();
                    Op::Write { at: replica(g), read_from, delete: u8::arbitrary(g) % 5 == 0 }
                } else {
                    Op::Merge { from: replica(g), to: replica(g) }
                }
            })
            .collect();
        History { ops }
    }

    fn shrink(&self) -> Box<dyn Iterator<Item = History>> {
        // Shrink by dropping one operation at a time.
        let ops = self.ops.clone();
        Box::new((0..ops.len()).rev().map(move |skip| {
            let mut fewer = ops.clone();
            fewer.remove(skip);
            History { ops: fewer }
        }))
    }
}

struct Played {
    replicas: Vec<Object>,
    /// For each dot: its value and the context its write was given.
    writes: BTreeMap<Dot, (Value, CausalContext)>,
}

fn play(history: &History) -> Played {
    let mut replicas = vec![Object::new(); usize::from(REPLICAS)];
    let mut writes = BTreeMap::new();
    for (index, op) in history.ops.iter().enumerate() {
        match op {
            Op::Write { at, read_from, delete } => {
                let mut read = Object::new();
                for &from in read_from {
                    read.merge(&replicas[usize::from(from)]);
                }
                let seen = read.context().clone();
                let value =
                    if *delete { Value::Tombstone } else { Value::Live(index.to_le_bytes().to_vec()) };
                let at = usize::from(*at);
                let dot = replicas[at].write(actor(at as u64), &seen, value.clone(), 0).unwrap();
                writes.insert(dot, (value, seen));
            }
            Op::Merge { from, to } => {
                let source = replicas[usize::from(*from)].clone();
                replicas[usize::from(*to)].merge(&source);
            }
        }
    }
    Played { replicas, writes }
}

fn merged(objects: &[&Object]) -> Object {
    let mut result = Object::new();
    for object in objects {
        result.merge(object);
    }
    result
}

#[test]
fn merge_is_commutative_associative_idempotent() {
    fn property(history: History) -> bool {
        let Played { replicas, .. } = play(&history);
        let [a, b, c] = [&replicas[0], &replicas[1], &replicas[2]];
        merged(&[a, b]) == merged(&[b, a])
            && merged(&[&merged(&[a, b]), c]) == merged(&[a, &merged(&[b, c])])
            && merged(&[a, a]) == merged(&[a])
    }
    QuickCheck::new().tests(2000).quickcheck(property as fn(History) -> bool);
}

#[test]
fn siblings_form_an_antichain_and_dots_are_unique() {
    fn property(history: History) -> bool {
        let Played { replicas, writes } = play(&history);
        let all = merged(&replicas.iter().collect::<Vec<_>>());
        replicas.iter().chain([&all]).all(|object| {
            let siblings = object.siblings();
            let antichain = siblings.iter().all(|later| {
                let seen = &writes[&later.dot].1;
                siblings.iter().all(|earlier| earlier.dot == later.dot || !seen.contains(&earlier.dot))
            });
            let unique = siblings.iter().all(|sibling| writes[&sibling.dot].0 == sibling.value);
            antichain && unique && object.invariants().is_ok()
        })
    }
    QuickCheck::new().tests(2000).quickcheck(property as fn(History) -> bool);
}

#[test]
fn no_write_is_lost_unless_a_later_write_saw_it() {
    fn property(history: History) -> bool {
        let Played { replicas, writes } = play(&history);
        let all = merged(&replicas.iter().collect::<Vec<_>>());
        writes.keys().all(|dot| {
            let kept = all.siblings().iter().any(|sibling| sibling.dot == *dot);
            let replaced = writes.values().any(|(_, seen)| seen.contains(dot));
            kept != replaced
        })
    }
    QuickCheck::new().tests(2000).quickcheck(property as fn(History) -> bool);
}

/// Found by the `causal_context` fuzz target: a client may hand back a
/// vector entry at the largest counter, which joining must not overflow on.
#[test]
fn joining_a_vector_at_the_largest_counter_keeps_the_normal_form() {
    let mut held = CausalContext::new();
    held.insert(dot(1, 3));
    let sent = CausalContext { vector: vec![(actor(1), u64::MAX)], cloud: Vec::new() };
    held.join(&sent);
    assert_eq!(held.cloud_len(), 0, "the cloud dot is covered by the vector");
    assert_eq!(held.max_counter(actor(1)), u64::MAX);
    let mut object = Object::new();
    assert!(object.write(actor(2), &held, live("v"), 0).is_some());
    assert_eq!(object.invariants(), Ok(()));
}

fn sibling_at(node: u64, counter: u64) -> Sibling {
    Sibling { dot: dot(node, counter), timestamp_ms: 0, value: live("x") }
}

/// `Object`'s layout with no check, as bytes from a buggy peer or a bad disk.
#[derive(serde::Serialize)]
struct RawObject {
    siblings: Vec<Sibling>,
    context: CausalContext,
}

#[test]
fn objects_are_parsed_not_trusted() {
    let mut context = CausalContext::new();
    for counter in 1..=3 {
        context.insert(dot(1, counter));
        context.insert(dot(2, counter));
    }
    let parse = |siblings: Vec<Sibling>| {
        let bytes =
            postcard::to_allocvec(&RawObject { siblings: siblings.clone(), context: context.clone() });
        let decoded = postcard::from_bytes::<Object>(&bytes.unwrap());
        let checked = Object::from_parts(siblings, context.clone());
        assert_eq!(decoded.is_ok(), checked.is_ok(), "decoding and from_parts agree");
        checked
    };
    let good = parse(vec![sibling_at(1, 2), sibling_at(2, 1)]).unwrap();
    assert_eq!(good.invariants(), Ok(()));
    assert_eq!(
        parse(vec![sibling_at(2, 1), sibling_at(1, 2)]),
        Err(ObjectError::Unsorted { later: dot(2, 1), earlier: dot(1, 2) })
    );
    assert_eq!(parse(vec![sibling_at(1, 2), sibling_at(1, 2)]), Err(ObjectError::DuplicateDot(dot(1, 2))));
    assert_eq!(parse(vec![sibling_at(1, 4)]), Err(ObjectError::Uncovered(dot(1, 4))));
    assert_eq!(parse(vec![sibling_at(3, 1)]), Err(ObjectError::Uncovered(dot(3, 1))));
    assert_eq!(parse(vec![sibling_at(1, 0)]), Err(ObjectError::ZeroCounter(dot(1, 0))));
    let many: Vec<Sibling> = (1..=OBJECT_SIBLINGS_MAX as u64 + 1).map(|n| sibling_at(1, n)).collect();
    let count = many.len() as u64;
    let max = OBJECT_SIBLINGS_MAX as u64;
    assert_eq!(
        Object::from_parts(many, CausalContext::new()),
        Err(ObjectError::SiblingsTooMany { count, max })
    );
}
