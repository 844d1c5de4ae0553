//! What an operator runs into: a data directory that another node already
//! uses.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use keel_tests::http::{get, put};
use keel_tests::{Cluster, free_port, keel_binary};

/// Waits up to `limit` for `child` to exit and returns its output; kills it
/// and fails the test if it is still running then.
fn exit_within(mut child: Child, limit: Duration, what: &str) -> Output {
    let deadline = Instant::now() + limit;
    while child.try_wait().expect("poll the child").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} was still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().expect("the child's output")
}

/// A second node on the first one's data directory, with ports of its own.
fn second_node_on(data_dir: &Path) -> Child {
    Command::new(keel_binary())
        .args(["node", "--node", "1", "--cluster", "e2e", "--log", "warn"])
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--listen-peer", &free_port().to_string()])
        .args(["--listen-http", &free_port().to_string()])
        .args(["--listen-redis", &free_port().to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start a second keel node")
}

#[test]
fn a_second_node_on_a_data_directory_in_use_refuses_to_start() {
    let mut cluster = Cluster::start("shared-dir", 1, 1);
    let http = cluster.nodes[0].http;
    let data_dir = cluster.nodes[0].data_dir.clone();
    let pid = cluster.pid(0).expect("node 1 runs");
    let lock = std::fs::read_to_string(data_dir.join("LOCK")).expect("the lock file");
    assert_eq!(lock, format!("{pid}\n"), "the lock file holds the node's pid");
    assert_eq!(put(http, "before", b"1", "").status, 204);

    let second = exit_within(second_node_on(&data_dir), Duration::from_secs(20), "the second node");
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(1), "{stderr}");
    let expected = format!("data directory {} is in use by process {pid}", data_dir.display());
    assert!(stderr.contains(&expected), "{stderr}");

    // The first node never noticed: it serves, and what it acknowledged
    // before and after survives its restart.
    assert!(cluster.is_running(0));
    assert_eq!(put(http, "after", b"2", "").status, 204);
    assert_eq!(cluster.stop(0), Some(0));
    assert_eq!(std::fs::read_to_string(data_dir.join("LOCK")).unwrap(), "", "a clean stop clears the pid");
    cluster.restart(0);
    assert_eq!(get(http, "before", "").text(), "1");
    assert_eq!(get(http, "after", "").text(), "2");
}
