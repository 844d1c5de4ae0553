//! `keel dev-cluster`: a local cluster of real node processes on loopback,
//! for trying keel out. Ctrl-C stops them all.
//!
//! The cluster is advertised only once every node answers as itself: a
//! node that cannot start (a port taken, a data directory in use) stops the
//! whole cluster with its reason, rather than leaving a cluster short of a
//! node that the guide still lists.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use clap::Args;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::client::ServerAddr;
use crate::client::http::Connection;

/// The cluster name every node of a dev cluster is started with.
const CLUSTER: &str = "keel-dev";
/// How long the nodes get to recover and answer before the cluster is given up.
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// How long one status request may take.
const STATUS_TIMEOUT: Duration = Duration::from_secs(1);
/// Log lines of each node kept to explain a failed start.
const TAIL_LINES: usize = 5;

#[derive(Debug, Args)]
pub struct DevClusterArgs {
    /// How many nodes to start.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=9))]
    nodes: u64,
    /// Replicas per key (at most the number of nodes).
    #[arg(long, default_value_t = 3)]
    replicas: u8,
    /// Node i listens on BASE+100*(i-1) plus 10 (peers), 20 (HTTP), 21 (Redis).
    #[arg(long, default_value_t = 7400)]
    base_port: u16,
    /// Where the nodes keep their data, one directory each.
    #[arg(long, default_value = "keel-dev")]
    dir: PathBuf,
    /// Extra flags passed to every node, e.g. --log=debug.
    #[arg(last = true)]
    node_args: Vec<String>,
}

/// One node's process, and the last lines it logged.
#[derive(Debug)]
struct NodeProcess {
    id: u64,
    child: Child,
    tail: Arc<Mutex<VecDeque<String>>>,
    relay: Option<JoinHandle<()>>,
}

impl NodeProcess {
    /// Why node `id` did not start, with what it logged last.
    fn failure(&self, why: &str) -> String {
        let tail = self.tail.lock().map(|tail| tail.clone()).unwrap_or_default();
        if tail.is_empty() {
            return format!("node {} did not start: {why}; it logged nothing", self.id);
        }
        let lines: Vec<String> = tail.iter().map(|line| format!("  [n{}] {line}", self.id)).collect();
        format!("node {} did not start: {why}; its last log lines:\n{}", self.id, lines.join("\n"))
    }
}

/// The ports of node `id` (1-based).
fn ports(base: u16, id: u64) -> Option<(u16, u16, u16)> {
    let offset = u16::try_from((id - 1) * 100).ok()?;
    let node = base.checked_add(offset)?;
    Some((node.checked_add(10)?, node.checked_add(20)?, node.checked_add(21)?))
}

pub fn command(args: DevClusterArgs) -> ExitCode {
    if ports(args.base_port, args.nodes).is_none() {
        eprintln!("keel dev-cluster: base port {} leaves no room for {} nodes", args.base_port, args.nodes);
        return ExitCode::from(2);
    }
    let executable = match std::env::current_exe() {
        Ok(path) => path,
        Err(error) => {
            eprintln!("keel dev-cluster: cannot find the keel executable: {error}");
            return ExitCode::from(2);
        }
    };
    let peers: Vec<String> = (1..=args.nodes)
        .filter_map(|id| ports(args.base_port, id).map(|(peer, _, _)| format!("{id}@127.0.0.1:{peer}")))
        .collect();
    let stopping = Arc::new(AtomicBool::new(false));
    let mut nodes = Vec::new();
    for id in 1..=args.nodes {
        match spawn(&executable, &args, id, &peers) {
            Ok(mut child) => {
                let (tail, relay) = relay_logs(id, &mut child, stopping.clone());
                nodes.push(NodeProcess { id, child, tail, relay });
            }
            Err(message) => {
                eprintln!("keel dev-cluster: node {id}: {message}");
                stop_all(&mut nodes);
                return ExitCode::from(1);
            }
        }
    }
    if let Err(failure) = wait_until_ready(&mut nodes, args.base_port) {
        stopping.store(true, Ordering::Relaxed);
        eprintln!("keel dev-cluster: {failure}");
        eprintln!("keel dev-cluster: stopping the other nodes");
        stop_all(&mut nodes);
        return ExitCode::from(1);
    }
    print_guide(&args, &nodes);
    wait(&mut nodes, &stopping)
}

fn spawn(executable: &PathBuf, args: &DevClusterArgs, id: u64, peers: &[String]) -> Result<Child, String> {
    let (peer, http, redis) = ports(args.base_port, id).ok_or("port out of range")?;
    Command::new(executable)
        .arg("node")
        .args(["--node", &id.to_string()])
        .args(["--cluster", CLUSTER])
        .args(["--replicas", &args.replicas.to_string()])
        .arg("--data-dir")
        .arg(args.dir.join(format!("node-{id}")))
        .args(["--listen-peer", &format!("127.0.0.1:{peer}")])
        .args(["--listen-http", &format!("127.0.0.1:{http}")])
        .args(["--listen-redis", &format!("127.0.0.1:{redis}")])
        .args(["--peer", &peers.join(",")])
        .args(&args.node_args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|error| format!("cannot start {}: {error}", executable.display()))
}

/// Copies a node's log lines to our stderr, each prefixed with the node,
/// and keeps the last few. The thread ends when the node's stderr closes.
fn relay_logs(
    id: u64,
    child: &mut Child,
    stopping: Arc<AtomicBool>,
) -> (Arc<Mutex<VecDeque<String>>>, Option<JoinHandle<()>>) {
    let tail = Arc::new(Mutex::new(VecDeque::with_capacity(TAIL_LINES)));
    let Some(stderr) = child.stderr.take() else { return (tail, None) };
    let kept = tail.clone();
    let relay = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("[n{id}] {line}");
            if let Ok(mut kept) = kept.lock() {
                if kept.len() == TAIL_LINES {
                    kept.pop_front();
                }
                kept.push_back(line);
            }
        }
        if !stopping.load(Ordering::Relaxed) {
            eprintln!("[n{id}] exited");
        }
    });
    (tail, Some(relay))
}

/// Waits until every node answers `/v1/status` as itself, or fails with
/// the first node that exited or that did not answer as itself in time. A
/// port held by another program answers otherwise or not at all, so it
/// never passes for the node.
fn wait_until_ready(nodes: &mut [NodeProcess], base_port: u16) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|error| format!("cannot start a runtime to ask the nodes: {error}"))?;
    let deadline = Instant::now() + READY_TIMEOUT;
    let mut unready: Vec<usize> = (0..nodes.len()).collect();
    let mut seen = vec![String::from("no answer yet"); nodes.len()];
    loop {
        for &index in &unready {
            let node = &mut nodes[index];
            if let Ok(Some(status)) = node.child.try_wait() {
                // Its last lines are read once the relay reaches the end of the closed pipe.
                if let Some(relay) = node.relay.take() {
                    let _ = relay.join();
                }
                return Err(node.failure(&format!("it {}", describe_exit(status))));
            }
        }
        unready.retain(|&index| match runtime.block_on(answers_as(nodes[index].id, base_port)) {
            Ok(()) => false,
            Err(what) => {
                seen[index] = what;
                true
            }
        });
        let Some(&index) = unready.first() else { return Ok(()) };
        if Instant::now() >= deadline {
            let seconds = READY_TIMEOUT.as_secs();
            let why =
                format!("it did not answer as n{} within {seconds} s ({})", nodes[index].id, seen[index]);
            return Err(nodes[index].failure(&why));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Ok if node `id`'s HTTP port answers `/v1/status` as node `id` of the dev cluster.
async fn answers_as(id: u64, base_port: u16) -> Result<(), String> {
    let (_, http, _) = ports(base_port, id).ok_or("its ports are out of range")?;
    let addr = ServerAddr::new("127.0.0.1", http);
    let ask = async { Connection::open(&addr).await?.status().await };
    let status = tokio::time::timeout(STATUS_TIMEOUT, ask)
        .await
        .map_err(|_| format!("{addr} did not answer within {} s", STATUS_TIMEOUT.as_secs()))?
        .map_err(|error| error.to_string())?;
    if status.node != format!("n{id}") || status.cluster != CLUSTER {
        return Err(format!("{addr} answers as {} of cluster {}", status.node, status.cluster));
    }
    Ok(())
}

fn describe_exit(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with code {code}"),
        (None, Some(signal)) => format!("was killed by signal {signal}"),
        (None, None) => format!("ended ({status})"),
    }
}

fn print_guide(args: &DevClusterArgs, nodes: &[NodeProcess]) {
    println!(
        "keel dev cluster: {} nodes, {} replicas per key, data in {}",
        args.nodes,
        args.replicas,
        args.dir.display()
    );
    println!();
    println!("  node  pid       HTTP                     Redis");
    for node in nodes {
        if let Some((_, http, redis)) = ports(args.base_port, node.id) {
            let (id, pid) = (node.id, node.child.id());
            println!("  n{id}    {pid:<8}  http://127.0.0.1:{http:<5}   redis-cli -p {redis}");
        }
    }
    if let Some((_, http, redis)) = ports(args.base_port, 1) {
        println!();
        println!("Try:  curl -X PUT --data-binary hello http://127.0.0.1:{http}/v1/kv/greeting");
        println!("      redis-cli -p {redis} GET greeting");
        println!("      keel shell --server 127.0.0.1:{http}");
    }
    println!("Ctrl-C stops every node.");
}

/// Waits until Ctrl-C or SIGTERM (then stops every node gracefully) or
/// until every node has exited on its own.
fn wait(nodes: &mut Vec<NodeProcess>, stopping: &Arc<AtomicBool>) -> ExitCode {
    let signals = signal_hook_flag();
    loop {
        if signals.load(Ordering::Relaxed) {
            stopping.store(true, Ordering::Relaxed);
            println!("stopping {} nodes…", nodes.len());
            stop_all(nodes);
            return ExitCode::SUCCESS;
        }
        nodes.retain_mut(|node| matches!(node.child.try_wait(), Ok(None)));
        if nodes.is_empty() {
            eprintln!("keel dev-cluster: every node has exited");
            return ExitCode::from(1);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A flag set on SIGINT or SIGTERM, without unsafe code: a small tokio
/// runtime waits for the signals on its own thread.
fn signal_hook_flag() -> Arc<AtomicBool> {
    let flag = Arc::new(AtomicBool::new(false));
    let set = flag.clone();
    std::thread::spawn(move || {
        let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
        runtime.block_on(async {
            let mut terminate =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
            let term = async {
                match terminate.as_mut() {
                    Some(signal) => {
                        signal.recv().await;
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                () = term => {}
            }
        });
        set.store(true, Ordering::Relaxed);
    });
    flag
}

/// SIGTERM to every node, then waits; a node still up after 15 s is killed.
fn stop_all(nodes: &mut Vec<NodeProcess>) {
    for node in nodes.iter_mut() {
        // Only a node still running: once reaped, its pid may be another process's.
        if !matches!(node.child.try_wait(), Ok(None)) {
            continue;
        }
        if let Ok(pid) = i32::try_from(node.child.id()) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    for node in nodes.iter_mut() {
        while matches!(node.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        if matches!(node.child.try_wait(), Ok(None)) {
            eprintln!("[n{}] did not stop in time; killing it", node.id);
            let _ = node.child.kill();
            let _ = node.child.wait();
        }
    }
    nodes.clear();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_follow_the_documented_layout() {
        assert_eq!(ports(7400, 1), Some((7410, 7420, 7421)));
        assert_eq!(ports(7400, 3), Some((7610, 7620, 7621)));
        assert_eq!(ports(65_500, 2), None);
    }
}
