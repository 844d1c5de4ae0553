//! Node benchmark: the CPU one node spends per client request, without a
//! network or a runtime in the way.
//!
//! `cargo bench -p keel-core --bench node` drives one `Node` (N=1, periodic
//! fsync, an in-memory disk) the way `keel node` drives it under
//! `redis-benchmark -c 50`: bursts of 50 requests, then the outputs, the
//! timers that are due, and the syncs. It first writes every key once, then
//! times plain puts (no context, as a Redis SET), then gets, over 100000
//! random keys with 100-byte values, and prints nanoseconds per request.
//!
//! The figures are the core's share of a request served over TCP; an
//! improvement here is one the node keeps whatever its client does.
//! Environment: `KEEL_BENCH_OPS` changes the number of timed requests per
//! operation (default 2000000).

mod common;

use std::time::{Duration, Instant as Clock};

use common::mix;
use keel_core::client::{Consistency, Get, Put, Replaces, Reply, Request, RequestId};
use keel_core::disk::MemDisk;
use keel_core::lsm::SyncPolicy;
use keel_core::node::{Config, Input, Node, Output};
use keel_core::ring::Member;
use keel_core::{Instant, NodeId, Now};

const KEYS: u64 = 100_000;
const VALUE_BYTES: usize = 100;
const BURST: u64 = 50;
/// Virtual time per request: about what a real node takes.
const STEP: Duration = Duration::from_micros(10);

struct Bench {
    node: Node,
    disk: MemDisk,
    now: Instant,
    next_id: u64,
    answered: u64,
}

impl Bench {
    fn new() -> Bench {
        let mut config = Config { members: vec![Member::new(NodeId(1))], ..Config::default() };
        config.ring.replicas = 1;
        config.engine.sync_policy = SyncPolicy::Periodic { interval_ms: 1000 };
        // The whole key set stays in the memtable, as in a short benchmark run.
        config.engine.memtable_bytes_max = 256 << 20;
        let disk = MemDisk::new(1);
        let node = Node::open(config, NodeId(1), 1, Box::new(disk.clone()), now(Instant::ZERO))
            .expect("the node opens");
        Bench { node, disk, now: Instant::ZERO, next_id: 0, answered: 0 }
    }

    /// Hands the node `BURST` requests, then does everything it asks.
    fn burst(&mut self, mut request: impl FnMut(u64) -> Request) {
        self.now = self.now + STEP * BURST as u32;
        for _ in 0..BURST {
            self.next_id += 1;
            let input = Input::Client { id: RequestId(self.next_id), request: request(self.next_id) };
            self.node.handle_input(now(self.now), input);
        }
        self.drain();
        if self.node.poll_timeout().is_some_and(|at| at <= self.now) {
            self.node.handle_timeout(now(self.now));
            self.drain();
        }
    }

    fn drain(&mut self) {
        while let Some(output) = self.node.poll_output() {
            match output {
                Output::Reply { reply, .. } => {
                    let failed = matches!(reply, Reply::Read(Err(_)) | Reply::Write(Err(_)));
                    assert!(!failed, "a request failed: {reply:?}");
                    self.answered += 1;
                }
                Output::Sync(request) => {
                    let result = request.run(&self.disk);
                    self.node.handle_input(now(self.now), Input::Synced { request, result });
                }
                Output::Job(job) => {
                    let done = job.run(&self.disk);
                    self.node.handle_input(now(self.now), Input::JobDone(done));
                }
                Output::Send { .. } | Output::Event(_) => {}
            }
        }
    }

    /// Runs `ops` requests in bursts; nanoseconds per request.
    fn time(&mut self, ops: u64, mut request: impl FnMut(u64) -> Request) -> f64 {
        let answered = self.answered;
        let started = Clock::now();
        for _ in 0..ops / BURST {
            self.burst(&mut request);
        }
        let elapsed = started.elapsed();
        assert_eq!(self.answered - answered, ops / BURST * BURST, "every request is answered");
        elapsed.as_nanos() as f64 / (ops / BURST * BURST) as f64
    }
}

fn now(at: Instant) -> Now {
    Now::new(at, 1_700_000_000_000 + at.as_nanos() / 1_000_000)
}

/// Keys as redis-benchmark names them: `key:` and twelve digits. Made once,
/// so the timed loop copies a key as a server does, and formats none.
fn keys() -> Vec<Vec<u8>> {
    (0..KEYS).map(|i| format!("key:{i:012}").into_bytes()).collect()
}

fn main() {
    let ops: u64 = std::env::var("KEEL_BENCH_OPS").ok().and_then(|v| v.parse().ok()).unwrap_or(2_000_000);
    println!("node: N=1, periodic fsync, {KEYS} keys, {VALUE_BYTES}-byte values, bursts of {BURST}");
    let keys = keys();
    let key = |i: u64| keys[(i % KEYS) as usize].clone();
    let put = |i: u64| {
        let value = vec![b'x'; VALUE_BYTES];
        Request::Put(Put {
            key: key(i),
            value,
            replaces: Replaces::Held,
            write: Consistency::Quorum,
            strict: false,
        })
    };
    let mut bench = Bench::new();
    bench.time(KEYS, put);
    let put_ns = bench.time(ops, |i| put(mix(i)));
    let get_ns = bench.time(ops, |i| Request::Get(Get { key: key(mix(i)), read: Consistency::Quorum }));
    println!("put {put_ns:>8.0} ns/request");
    println!("get {get_ns:>8.0} ns/request");
}
