//! A node stand-in for client tests: keel's real HTTP and Redis-protocol
//! servers on loopback port 0, over the in-memory backend, on a runtime of
//! their own so tests can drive clients from any thread.

use std::sync::Arc;

use keel_io_tokio::http::{HttpLimits, serve_http};
use keel_io_tokio::resp::{RespLimits, serve_resp};
use keel_io_tokio::service::testing::{MemoryBackend, StaticIntrospect};
use keel_io_tokio::service::{Introspect, Member, MemberState, NodeStatus, Ownership, RingView, Token};
use tokio::net::TcpListener;
use tokio::runtime::Runtime;
use tokio_util::sync::CancellationToken;

use super::addr::ServerAddr;
use super::{ClientCommand, Streams, describe, execute};

/// Both servers of one stand-in node; stopped when dropped.
pub struct TestNode {
    pub http: ServerAddr,
    pub resp: ServerAddr,
    /// The keys behind both servers; `fail_with` makes every request fail.
    pub backend: MemoryBackend,
    shutdown: CancellationToken,
    runtime: Option<Runtime>,
}

impl TestNode {
    /// A one-node cluster, as `memory_server` serves it.
    pub fn start() -> TestNode {
        TestNode::with(|_, _| None)
    }

    /// Servers whose status and ring `introspect` makes up, knowing both
    /// ports before anything is served.
    pub fn with(introspect: impl FnOnce(u16, u16) -> Option<Arc<dyn Introspect>>) -> TestNode {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a test runtime");
        let shutdown = CancellationToken::new();
        let backend = MemoryBackend::new();
        let (http, resp) = runtime.block_on(async {
            let http = TcpListener::bind("127.0.0.1:0").await.expect("bind http");
            let resp = TcpListener::bind("127.0.0.1:0").await.expect("bind resp");
            let (http_port, resp_port) = (port(&http), port(&resp));
            let handle = backend.spawn(1024);
            let introspect = introspect(http_port, resp_port)
                .unwrap_or_else(|| StaticIntrospect::single(Some(backend.clone())));
            let limits = RespLimits::default();
            tokio::spawn(serve_resp(resp, handle.clone(), introspect.clone(), limits, shutdown.clone()));
            tokio::spawn(serve_http(http, handle, introspect, HttpLimits::default(), shutdown.clone()));
            (ServerAddr::new("127.0.0.1", http_port), ServerAddr::new("127.0.0.1", resp_port))
        });
        TestNode { http, resp, backend, shutdown, runtime: Some(runtime) }
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        self.shutdown.cancel();
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

fn port(listener: &TcpListener) -> u16 {
    listener.local_addr().expect("a bound listener has an address").port()
}

/// A status for node `node` of a cluster whose members are `(id, peer port)`.
pub fn cluster_status(node: &str, members: &[(&str, u16)]) -> NodeStatus {
    let members = (members.iter())
        .map(|(id, port)| Member {
            node: (*id).into(),
            address: format!("127.0.0.1:{port}"),
            state: MemberState::Up,
            hints_pending: 0,
            last_exchange_seconds_ago: None,
        })
        .collect();
    NodeStatus {
        node: node.into(),
        cluster: "test".into(),
        uptime_seconds: 3725,
        replicas: 3,
        members,
        keys_estimate: Some(42),
        hints_pending: 0,
        storage_failed: false,
    }
}

/// Three nodes, two vnodes each, splitting the circle in six equal arcs.
pub fn three_node_ring() -> RingView {
    let sixth = u64::MAX / 6;
    let tokens = (1..=6)
        .map(|index| Token { position: sixth * index, node: format!("n{}", (index - 1) % 3 + 1) })
        .collect();
    let ownership =
        (1..=3).map(|index| Ownership { node: format!("n{index}"), fraction: 1.0 / 3.0 }).collect();
    RingView { replicas: 3, tokens, ownership }
}

/// A node that reports `status` and `ring` as given.
pub fn fixed(status: NodeStatus, ring: RingView) -> Option<Arc<dyn Introspect>> {
    Some(Arc::new(StaticIntrospect { status, ring }))
}

/// Runs `future` on a fresh single-threaded runtime, as a command does.
pub fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime").block_on(future)
}

/// What a one-shot command printed and how it exited.
#[derive(Debug)]
pub struct Run {
    pub code: u8,
    pub out: Vec<u8>,
    pub err: String,
}

impl Run {
    pub fn out_text(&self) -> String {
        String::from_utf8_lossy(&self.out).into_owned()
    }
}

#[derive(Debug, clap::Parser)]
struct Cli {
    #[command(subcommand)]
    command: ClientCommand,
}

/// Parses `args` as `keel` would and runs the command with `stdin`, the
/// way `main` does: errors printed to standard error, exit code returned.
pub fn run(args: &[&str], stdin: &[u8]) -> Run {
    use clap::Parser as _;
    let cli =
        Cli::try_parse_from(std::iter::once("keel").chain(args.iter().copied())).expect("arguments parse");
    let (mut input, mut out, mut err) = (stdin, Vec::new(), Vec::new());
    let mut streams = Streams { input: &mut input, out: &mut out, err: &mut err, out_is_terminal: false };
    let result = block_on(execute(cli.command, &mut streams));
    let mut err = String::from_utf8_lossy(&err).into_owned();
    let code = match result {
        Ok(()) => 0,
        Err(failure) => {
            err.push_str(&describe(&failure));
            failure.exit_code()
        }
    };
    Run { code, out, err }
}

/// The exit code clap gives `args`, which it refuses before any command runs.
pub fn refused(args: &[&str]) -> i32 {
    use clap::Parser as _;
    match Cli::try_parse_from(std::iter::once("keel").chain(args.iter().copied())) {
        Ok(cli) => panic!("{args:?} parsed as {cli:?}"),
        Err(error) => error.exit_code(),
    }
}
