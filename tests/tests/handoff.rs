//! Sloppy quorum and anti-entropy with real processes: a replica killed
//! with SIGKILL, writes that count a fallback node's hint in its place, and
//! the hints handed over once it is back, after which it holds every key it
//! replicates; then the same with hints bounded to zero, where anti-entropy
//! alone brings it up to date.
//!
//! Four nodes with N=3, so that every key has a node outside its replicas
//! to fall back on (with as many nodes as replicas there is none).

use std::net::SocketAddr;
use std::time::Duration;

use keel_core::NodeId;
use keel_core::ring::{Member, Ring, RingConfig};
use keel_tests::http::{self, get, put};
use keel_tests::{Cluster, eventually};

const KEYS: usize = 2_000;

/// The ring the nodes build: the same members and N, the default vnodes.
fn ring() -> Ring {
    let members = (1..=4).map(|id| Member::new(NodeId(id))).collect();
    Ring::new(members, RingConfig { replicas: 3, ..RingConfig::default() }).expect("a valid ring")
}

/// A gauge or counter from `/metrics`.
fn metric(address: SocketAddr, name: &str) -> u64 {
    let reply = http::request(address, "GET", "/metrics", &[], b"").expect("metrics answer");
    let text = reply.text();
    let line = text.lines().find(|line| line.split(' ').next() == Some(name));
    line.and_then(|line| line.split(' ').nth(1)?.parse().ok()).unwrap_or_else(|| panic!("{name} in {text}"))
}

/// The hints `observer` says it holds for the member at `peer`, from `/v1/status`.
fn hints_for(observer: SocketAddr, peer: &str) -> u64 {
    let status = http::request(observer, "GET", "/v1/status", &[], b"").expect("status answers").text();
    let entry = status.split("\"address\":").find(|rest| rest.starts_with(&format!("\"{peer}\"")));
    let count = entry.and_then(|rest| rest.split("\"hints_pending\":").nth(1));
    count
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok())
        .unwrap_or_else(|| panic!("{status}"))
}

/// Four nodes started with `args`, node 4 killed with SIGKILL and seen down
/// by the others, and `KEYS` quorum writes through the other three, whose
/// HTTP addresses come back with the cluster.
fn write_with_node_4_down(name: &str, args: &[&str]) -> (Cluster, Vec<SocketAddr>) {
    let mut cluster = Cluster::start_with(name, 4, 3, args);
    let live: Vec<SocketAddr> = cluster.nodes[..3].iter().map(|node| node.http).collect();
    cluster.kill_hard(3);
    assert!(eventually(Duration::from_secs(10), || (0..3).all(|observer| cluster.sees(observer, 4, "down"))));
    for i in 0..KEYS {
        let reply = put(live[i % 3], &format!("key-{i}"), format!("value-{i}").as_bytes(), "?w=quorum");
        assert_eq!(reply.status, 204, "write {i} with node 4 down: {}", reply.text());
    }
    (cluster, live)
}

#[test]
fn hints_carry_writes_to_a_replica_that_was_down() {
    let (mut cluster, live) = write_with_node_4_down("handoff", &[]);
    // At `all`, a key that node 4 replicates is written through a fallback,
    // and the answer says so; strict, it cannot be.
    let ring = ring();
    let owned_by_4 = |key: &str| ring.preference_list(key.as_bytes()).contains(&NodeId(4));
    let key = (0..).map(|i| format!("all-{i}")).find(|key| owned_by_4(key)).expect("a key node 4 replicates");
    let reply = put(live[0], &key, b"everywhere", "?w=all");
    assert_eq!((reply.status, reply.header("x-keel-fallbacks")), (204, Some("1")), "{}", reply.text());
    let strict = put(live[0], &key, b"strict", "?w=all&strict=true");
    assert_eq!(strict.status, 503, "{}", strict.text());

    // A quorum write answers before its last acknowledgement: the hint may
    // land a moment later.
    let held = || live.iter().map(|&node| metric(node, "keel_hints_pending")).sum::<u64>();
    let expected: u64 = (0..KEYS).filter(|i| owned_by_4(&format!("key-{i}"))).count() as u64 + 1;
    assert!(
        eventually(Duration::from_secs(5), || held() == expected),
        "{} hints, not one per key node 4 replicates ({expected})",
        held()
    );

    // Each live node's status names how many it holds for node 4.
    let held_for_4: u64 = live.iter().map(|&node| hints_for(node, &cluster.nodes[3].peer.to_string())).sum();
    assert_eq!(held_for_4, expected);

    cluster.restart(3);
    let drained = || live.iter().all(|&node| metric(node, "keel_hints_pending") == 0);
    assert!(
        eventually(Duration::from_secs(60), drained),
        "hints still pending a minute after node 4 is back"
    );
    let delivered: u64 = live.iter().map(|&node| metric(node, "keel_hints_delivered_total")).sum();
    assert_eq!(delivered, expected);

    // Node 4's own copies, asking no other replica: every key it replicates.
    let n4 = cluster.nodes[3].http;
    for i in (0..KEYS).filter(|i| owned_by_4(&format!("key-{i}"))) {
        let reply = get(n4, &format!("key-{i}"), "?local=true");
        assert_eq!((reply.status, reply.text()), (200, format!("value-{i}")), "key-{i} on node 4");
    }
    assert_eq!(get(n4, &key, "?local=true").text(), "everywhere");
}

/// Seconds since `observer` last compared trees with the member at `peer`, from `/v1/status`.
fn last_exchange(observer: SocketAddr, peer: &str) -> Option<u64> {
    let status = http::request(observer, "GET", "/v1/status", &[], b"").expect("status answers").text();
    let entry = status.split("\"address\":").find(|rest| rest.starts_with(&format!("\"{peer}\"")))?;
    let field = entry.split("\"last_exchange_seconds_ago\":").nth(1)?;
    field.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}

#[test]
fn anti_entropy_alone_brings_back_a_replica_when_no_hints_are_kept() {
    let (mut cluster, live) = write_with_node_4_down("anti-entropy", &["--hints-max", "0"]);
    // Every fallback refused the hint it was offered, and counted it.
    let ring = ring();
    let owned_by_4: Vec<usize> = (0..KEYS)
        .filter(|i| ring.preference_list(format!("key-{i}").as_bytes()).contains(&NodeId(4)))
        .collect();
    let expected = owned_by_4.len() as u64;
    let dropped = || live.iter().map(|&node| metric(node, "keel_hints_dropped_total")).sum::<u64>();
    assert!(
        eventually(Duration::from_secs(5), || dropped() == expected),
        "{} hints dropped, not {expected}",
        dropped()
    );
    assert!(live.iter().all(|&node| metric(node, "keel_hints_pending") == 0));
    let repaired = |nodes: &[SocketAddr]| -> u64 {
        nodes.iter().map(|&node| metric(node, "keel_anti_entropy_keys_repaired_total")).sum()
    };
    let repaired_before = repaired(&live);

    // No client reads a key from here on: node 4's own copies (`?local=true`
    // asks no other replica and repairs nothing) must fill by anti-entropy.
    cluster.restart(3);
    let restarted = std::time::Instant::now();
    let n4 = cluster.nodes[3].http;
    let mut missing = owned_by_4.clone();
    let filled = eventually(Duration::from_secs(90), || {
        missing.retain(|i| {
            let reply = get(n4, &format!("key-{i}"), "?local=true");
            (reply.status, reply.text()) != (200, format!("value-{i}"))
        });
        missing.is_empty()
    });
    assert!(
        filled,
        "{} of node 4's {expected} keys still missing there 90 s after it came back",
        missing.len()
    );
    eprintln!("node 4 held all {expected} of its keys {:.1?} after its restart", restarted.elapsed());
    // The metrics are snapshots, refreshed now and then.
    let all: Vec<SocketAddr> = cluster.nodes.iter().map(|node| node.http).collect();
    let counted = || repaired(&all) - repaired_before;
    assert!(
        eventually(Duration::from_secs(5), || counted() >= expected),
        "anti-entropy reports {} keys repaired for the {expected} node 4 lacked",
        counted()
    );
    // Each live node says when it last compared trees with node 4.
    let n4_peer = cluster.nodes[3].peer.to_string();
    assert!(live.iter().all(|&node| last_exchange(node, &n4_peer).is_some_and(|seconds| seconds < 90)));
}
