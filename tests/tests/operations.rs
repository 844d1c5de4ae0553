//! What an operator runs into: a data directory that another node already
//! uses, and a dev cluster whose node cannot start.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use keel_tests::http::{get, put};
use keel_tests::{Cluster, free_port, keel_binary, scratch_dir};

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

/// True if some process runs with `needle` in its command line.
fn any_process_mentions(needle: &str) -> bool {
    let Ok(entries) = std::fs::read_dir("/proc") else { return false };
    entries.filter_map(Result::ok).any(|entry| {
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else { return false };
        String::from_utf8_lossy(&cmdline).replace('\0', " ").contains(needle)
    })
}

/// A base port whose layout (node i at base + 100(i-1) + 10, 20, 21) is
/// free for three nodes right now, and a listener already holding the
/// port at `held` past it: a test running beside this one cannot take it
/// between the check and its use.
fn free_base_port(held: u16) -> (u16, TcpListener) {
    for _ in 0..200 {
        let base = free_port().port().saturating_sub(300) / 100 * 100;
        let ports = (0..3u16).flat_map(|i| [10, 20, 21].map(|offset| base + 100 * i + offset));
        let mut listeners: Vec<_> = ports.map(|port| TcpListener::bind(("127.0.0.1", port))).collect();
        if base >= 1024 && listeners.iter().all(Result::is_ok) {
            let at = listeners.iter().position(|listener| {
                listener
                    .as_ref()
                    .is_ok_and(|listener| listener.local_addr().is_ok_and(|a| a.port() == base + held))
            });
            if let Some(Ok(listener)) = at.map(|at| listeners.swap_remove(at)) {
                return (base, listener);
            }
        }
    }
    panic!("no free run of ports for a dev cluster");
}

#[test]
fn dev_cluster_stops_everything_when_a_node_cannot_start() {
    // Another program holds node 2's HTTP port.
    let (base, squatter) = free_base_port(120);
    let dir = scratch_dir("dev-cluster-port-taken");
    let child = Command::new(keel_binary())
        .args(["dev-cluster", "--nodes", "3", "--base-port", &base.to_string()])
        .arg("--dir")
        .arg(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start keel dev-cluster");
    let output = exit_within(child, Duration::from_secs(60), "keel dev-cluster");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    let http = format!("127.0.0.1:{}", base + 120);
    assert!(stderr.contains("node 2 did not start"), "{stderr}");
    assert!(stderr.contains(&format!("cannot listen for HTTP on {http}")), "{stderr}");
    assert!(!String::from_utf8_lossy(&output.stdout).contains("Try:"), "a failed cluster is not advertised");
    let data_dir = dir.display().to_string();
    assert!(!any_process_mentions(&data_dir), "a node of the failed dev cluster is still running");
    drop(squatter);
}
