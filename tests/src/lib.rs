//! keel-tests: end-to-end tests that run real `keel` node processes on
//! loopback ports and talk to them with real clients.
//!
//! The `keel` binary is the one cargo built beside these tests (the `keel`
//! package's own integration tests make sure `cargo test --workspace`
//! builds it). Every wait is bounded; every process is killed on drop.

pub mod http;
pub mod resp;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// The `keel` executable next to the running test's target directory.
pub fn keel_binary() -> PathBuf {
    let test = std::env::current_exe().expect("the test's own path");
    let profile_dir = test.parent().and_then(Path::parent).expect("target/<profile>/deps/<test>");
    let binary = profile_dir.join("keel");
    assert!(binary.exists(), "{} is missing: build it with `cargo build -p keel` first", binary.display());
    binary
}

/// A free loopback port.
///
/// Ports come from below Linux's ephemeral range (32768 and up), so no
/// outgoing connection can take one between this check and the node's
/// bind; a counter keeps the tests of one process apart, and the process
/// id spreads concurrent test processes over the range.
pub fn free_port() -> SocketAddr {
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let _ = NEXT.compare_exchange(u32::MAX, std::process::id() % SPAN, Ordering::Relaxed, Ordering::Relaxed);
    for _ in 0..SPAN {
        let port = FIRST + NEXT.fetch_add(1, Ordering::Relaxed) % SPAN;
        let address = SocketAddr::from(([127, 0, 0, 1], port as u16));
        if TcpListener::bind(address).is_ok() {
            return address;
        }
    }
    panic!("no free port in {FIRST}..{}", FIRST + SPAN)
}

/// A fresh, empty directory for one test.
pub fn scratch_dir(name: &str) -> PathBuf {
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let dir = std::env::temp_dir().join(format!("keel-e2e-{name}-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create a scratch directory");
    dir
}

/// Polls `check` every 50 ms until it holds or `limit` passes.
pub fn eventually(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if check() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One node's addresses and process.
#[derive(Debug)]
pub struct NodeProcess {
    pub id: u64,
    pub peer: SocketAddr,
    pub http: SocketAddr,
    pub redis: SocketAddr,
    pub data_dir: PathBuf,
    child: Option<Child>,
}

/// A cluster of real node processes. Dropping it kills them all.
#[derive(Debug)]
pub struct Cluster {
    pub nodes: Vec<NodeProcess>,
    replicas: u8,
    /// Given to every node after the flags the cluster sets itself.
    extra_args: Vec<String>,
}

impl Cluster {
    /// Whether node `observer` (an index) reports node `node` (an id) in
    /// `state` (`up`, `down`) at `/v1/status`.
    pub fn sees(&self, observer: usize, node: u64, state: &str) -> bool {
        let status = http::request(self.nodes[observer].http, "GET", "/v1/status", &[], b"");
        let needle = format!(
            "\"node\":\"n{node}\",\"address\":\"{}\",\"state\":\"{state}\"",
            self.nodes[node as usize - 1].peer
        );
        status.is_ok_and(|reply| reply.text().contains(&needle))
    }

    /// Starts `size` nodes with `replicas` replicas per key and waits until
    /// every node answers its health check.
    pub fn start(name: &str, size: u64, replicas: u8) -> Cluster {
        Cluster::start_with(name, size, replicas, &[])
    }

    /// As [`Cluster::start`], with `extra_args` given to every node.
    pub fn start_with(name: &str, size: u64, replicas: u8, extra_args: &[&str]) -> Cluster {
        let dir = scratch_dir(name);
        let nodes = (1..=size)
            .map(|id| NodeProcess {
                id,
                peer: free_port(),
                http: free_port(),
                redis: free_port(),
                data_dir: dir.join(format!("node-{id}")),
                child: None,
            })
            .collect();
        let extra_args = extra_args.iter().map(|arg| arg.to_string()).collect();
        let mut cluster = Cluster { nodes, replicas, extra_args };
        for index in 0..cluster.nodes.len() {
            cluster.spawn(index);
        }
        for index in 0..cluster.nodes.len() {
            cluster.wait_healthy(index);
        }
        cluster
    }

    fn spawn(&mut self, index: usize) {
        let child = self.node_command(index).stderr(Stdio::inherit()).spawn().expect("start a keel node");
        self.nodes[index].child = Some(child);
    }

    /// The command that starts node `index` as this cluster does, for a
    /// test that runs it itself (with more flags, or its output captured).
    pub fn node_command(&self, index: usize) -> Command {
        let peers: Vec<String> = self.nodes.iter().map(|node| format!("{}@{}", node.id, node.peer)).collect();
        let node = &self.nodes[index];
        let mut command = Command::new(keel_binary());
        command
            .arg("node")
            .args(["--node", &node.id.to_string(), "--cluster", "e2e"])
            .args(["--replicas", &self.replicas.to_string()])
            .arg("--data-dir")
            .arg(&node.data_dir)
            .args(["--listen-peer", &node.peer.to_string()])
            .args(["--listen-http", &node.http.to_string()])
            .args(["--listen-redis", &node.redis.to_string()])
            .args(["--peer", &peers.join(",")])
            .args(["--request-timeout-ms", "1000", "--log", "warn"])
            .args(&self.extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        command
    }

    /// Waits until node `index` answers `/health`.
    pub fn wait_healthy(&self, index: usize) {
        let node = &self.nodes[index];
        let healthy = eventually(Duration::from_secs(20), || {
            http::request(node.http, "GET", "/health", &[], b"").is_ok_and(|reply| reply.status == 200)
        });
        assert!(healthy, "node {} did not become healthy", node.id);
    }

    /// Kills node `index` with SIGKILL: no shutdown, no final sync.
    pub fn kill_hard(&mut self, index: usize) {
        if let Some(mut child) = self.nodes[index].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops node `index` with SIGTERM and returns its exit code.
    pub fn stop(&mut self, index: usize) -> Option<i32> {
        let mut child = self.nodes[index].child.take()?;
        let pid = Pid::from_raw(i32::try_from(child.id()).ok()?);
        kill(pid, Signal::SIGTERM).ok()?;
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }

    /// Starts node `index` again on the same ports and data directory.
    pub fn restart(&mut self, index: usize) {
        self.spawn(index);
        self.wait_healthy(index);
    }

    /// The process id of node `index`, while it runs.
    pub fn pid(&self, index: usize) -> Option<u32> {
        self.nodes[index].child.as_ref().map(Child::id)
    }

    pub fn is_running(&mut self, index: usize) -> bool {
        self.nodes[index].child.as_mut().is_some_and(|child| matches!(child.try_wait(), Ok(None)))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for index in 0..self.nodes.len() {
            self.kill_hard(index);
        }
    }
}

/// True if something accepts connections at `address`.
pub fn listening(address: SocketAddr) -> bool {
    TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_ok()
}
