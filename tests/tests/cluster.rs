//! A real three-node cluster on loopback: replication across nodes, a node
//! killed with SIGKILL, writes that go on without it, and its data after a
//! restart.

use std::time::Duration;

use keel_tests::http::{get, put};
use keel_tests::resp::{pings, redis_cli};
use keel_tests::{Cluster, eventually};

/// True once `observer` reports `node` in the state given by `/v1/status`.
#[test]
fn writes_survive_a_killed_node_and_a_restart() {
    let mut cluster = Cluster::start("kill9", 3, 3);
    let (n1, n3) = (cluster.nodes[0].http, cluster.nodes[2].http);

    // Written through node 1, read through node 3, over HTTP and Redis.
    assert_eq!(put(n1, "greeting", b"hello", "?w=all").status, 204);
    let read = get(n3, "greeting", "?r=all");
    assert_eq!((read.status, read.body.as_slice()), (200, b"hello".as_slice()));
    assert_eq!(redis_cli(cluster.nodes[0].redis, &["SET", "color", "blue"]), "OK");
    assert_eq!(redis_cli(cluster.nodes[2].redis, &["GET", "color"]), "blue");

    cluster.kill_hard(1);
    assert!(eventually(Duration::from_secs(10), || cluster.sees(0, 2, "down") && cluster.sees(2, 2, "down")));
    for i in 0..20 {
        let via = if i % 2 == 0 { n1 } else { n3 };
        let reply = put(via, &format!("key-{i}"), format!("value-{i}").as_bytes(), "?w=2");
        assert_eq!(reply.status, 204, "write {i} with a node down: {}", reply.text());
    }
    for i in 0..20 {
        let reply = get(n3, &format!("key-{i}"), "?r=2");
        assert_eq!(reply.text(), format!("value-{i}"), "read {i}");
    }

    // Node 2 comes back with what it had acknowledged before it died: with
    // the other two gone, a read through it at `one` can only be its own.
    cluster.restart(1);
    cluster.kill_hard(0);
    cluster.kill_hard(2);
    let n2 = cluster.nodes[1].http;
    assert_eq!(get(n2, "greeting", "?r=one").text(), "hello");
    // Redis GET reads at quorum, which two dead nodes rule out; ask for one.
    let reply = redis_cli(cluster.nodes[1].redis, &["KEEL.GET", "color", "CONSISTENCY", "one"]);
    assert!(reply.ends_with("\nblue"), "{reply}");
    assert!(pings(cluster.nodes[1].redis));
}

/// `keel bench` against `address`; its exit status and what it printed.
fn bench(address: std::net::SocketAddr, protocol: &str, ops: u32) -> (bool, String) {
    let output = std::process::Command::new(keel_tests::keel_binary())
        .args(["bench", "--server", &address.to_string(), "--protocol", protocol])
        .args(["--clients", "16", "--ops", &ops.to_string(), "--mix", "80:20", "--keys", "2000"])
        .output()
        .expect("run keel bench");
    let printed =
        String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr);
    (output.status.success(), printed)
}

/// With one replica of three dead, every quorum request still has two
/// replicas, so none may fail: answered requests waiting for the dead one
/// must not fill the node's admission limit, and nothing may pile up for it.
#[test]
fn a_cluster_with_one_node_down_serves_a_full_load_without_errors() {
    let mut cluster = Cluster::start("one-down", 3, 3);
    let (ok, printed) = bench(cluster.nodes[0].http, "http", 5_000);
    assert!(ok, "all up: {printed}");
    cluster.kill_hard(2);
    // At once, before the failure detector has noticed, and after.
    let (ok, printed) = bench(cluster.nodes[0].http, "http", 20_000);
    assert!(ok, "right after the kill: {printed}");
    assert!(eventually(Duration::from_secs(10), || cluster.sees(0, 3, "down") && cluster.sees(1, 3, "down")));
    for (node, protocol) in [(0, "http"), (1, "redis")] {
        let address = if protocol == "http" { cluster.nodes[node].http } else { cluster.nodes[node].redis };
        let (ok, printed) = bench(address, protocol, 50_000);
        assert!(ok, "{protocol} through node {} with node 3 down: {printed}", node + 1);
        assert!(printed.contains("errors      none"), "{printed}");
    }
}

#[test]
fn a_restarted_node_is_repaired_by_reads() {
    let mut cluster = Cluster::start("repair", 3, 3);
    let n1 = cluster.nodes[0].http;
    cluster.kill_hard(2);
    assert!(eventually(Duration::from_secs(10), || cluster.sees(0, 3, "down")));
    assert_eq!(put(n1, "missed", b"while-down", "?w=2").status, 204);
    cluster.restart(2);
    assert!(eventually(Duration::from_secs(10), || cluster.sees(0, 3, "up")));
    // A read at `all` sends the merged version to the replica that missed
    // it; the repair travels after the answer, so wait until it lands.
    assert_eq!(get(n1, "missed", "?r=all").text(), "while-down");
    let n3_redis = cluster.nodes[2].redis;
    assert!(eventually(Duration::from_secs(5), || redis_cli(n3_redis, &["DBSIZE"]) == "1"));
    cluster.kill_hard(0);
    cluster.kill_hard(1);
    let n3 = cluster.nodes[2].http;
    assert!(eventually(Duration::from_secs(5), || get(n3, "missed", "?r=one").text() == "while-down"));
}

/// Under `--fsync periodic` a write is acknowledged before any fsync, but
/// it is in the kernel's hands by then: killing the process loses nothing.
#[test]
fn periodic_fsync_loses_no_acknowledged_write_when_the_process_is_killed() {
    // An interval far longer than the test: no timed sync happens.
    let mut cluster =
        Cluster::start_with("periodic", 1, 1, &["--fsync", "periodic", "--fsync-interval-ms", "600000"]);
    let node = &cluster.nodes[0];
    for i in 0..50 {
        assert_eq!(redis_cli(node.redis, &["SET", &format!("key-{i}"), &format!("value-{i}")]), "OK");
    }
    assert_eq!(put(node.http, "last", b"over-http", "").status, 204);
    cluster.kill_hard(0);
    cluster.restart(0);
    let node = &cluster.nodes[0];
    for i in 0..50 {
        assert_eq!(redis_cli(node.redis, &["GET", &format!("key-{i}")]), format!("value-{i}"), "key {i}");
    }
    assert_eq!(get(node.http, "last", "").text(), "over-http");
}

#[test]
fn sigterm_stops_a_node_cleanly() {
    let mut cluster = Cluster::start("sigterm", 1, 1);
    assert_eq!(put(cluster.nodes[0].http, "k", b"v", "").status, 204);
    assert_eq!(cluster.stop(0), Some(0), "a graceful stop exits 0");
    assert!(!cluster.is_running(0));
    cluster.restart(0);
    assert_eq!(get(cluster.nodes[0].http, "k", "").text(), "v");
}
