//! `keel dev-cluster`: a local cluster of real node processes on loopback,
//! for trying keel out. Ctrl-C stops them all.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::Args;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

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

/// The ports of node `id` (1-based).
fn ports(base: u16, id: u64) -> Option<(u16, u16, u16)> {
    let offset = u16::try_from((id - 1) * 100).ok()?;
    let node = base.checked_add(offset)?;
    Some((node.checked_add(10)?, node.checked_add(20)?, node.checked_add(21)?))
}

pub fn command(args: DevClusterArgs) -> ExitCode {
    let Some(last) = ports(args.base_port, args.nodes) else {
        eprintln!("keel dev-cluster: base port {} leaves no room for {} nodes", args.base_port, args.nodes);
        return ExitCode::from(2);
    };
    let _ = last;
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
    let mut children = Vec::new();
    for id in 1..=args.nodes {
        match spawn(&executable, &args, id, &peers) {
            Ok(child) => children.push((id, child)),
            Err(message) => {
                eprintln!("keel dev-cluster: node {id}: {message}");
                stop_all(&mut children);
                return ExitCode::from(1);
            }
        }
    }
    for (id, child) in &mut children {
        relay_logs(*id, child, stopping.clone());
    }
    print_guide(&args);
    wait(&mut children, &stopping)
}

fn spawn(executable: &PathBuf, args: &DevClusterArgs, id: u64, peers: &[String]) -> Result<Child, String> {
    let (peer, http, redis) = ports(args.base_port, id).ok_or("port out of range")?;
    Command::new(executable)
        .arg("node")
        .args(["--node", &id.to_string()])
        .args(["--cluster", "keel-dev"])
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

/// Copies a node's log lines to our stderr, each prefixed with the node.
fn relay_logs(id: u64, child: &mut Child, stopping: Arc<AtomicBool>) {
    let Some(stderr) = child.stderr.take() else { return };
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("[n{id}] {line}");
        }
        if !stopping.load(Ordering::Relaxed) {
            eprintln!("[n{id}] exited");
        }
    });
}

fn print_guide(args: &DevClusterArgs) {
    println!(
        "keel dev cluster: {} nodes, {} replicas per key, data in {}",
        args.nodes,
        args.replicas,
        args.dir.display()
    );
    println!();
    println!("  node  HTTP                    Redis");
    for id in 1..=args.nodes {
        if let Some((_, http, redis)) = ports(args.base_port, id) {
            println!("  n{id}    http://127.0.0.1:{http:<5}   redis-cli -p {redis}");
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
fn wait(children: &mut Vec<(u64, Child)>, stopping: &Arc<AtomicBool>) -> ExitCode {
    let signals = signal_hook_flag();
    loop {
        if signals.load(Ordering::Relaxed) {
            stopping.store(true, Ordering::Relaxed);
            println!("stopping {} nodes…", children.len());
            stop_all(children);
            return ExitCode::SUCCESS;
        }
        children.retain_mut(|(_, child)| matches!(child.try_wait(), Ok(None)));
        if children.is_empty() {
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
fn stop_all(children: &mut Vec<(u64, Child)>) {
    for (_, child) in children.iter() {
        if let Ok(pid) = i32::try_from(child.id()) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    for (id, child) in children.iter_mut() {
        while matches!(child.try_wait(), Ok(None)) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        if matches!(child.try_wait(), Ok(None)) {
            eprintln!("[n{id}] did not stop in time; killing it");
            let _ = child.kill();
            let _ = child.wait();
        }
    }
    children.clear();
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
