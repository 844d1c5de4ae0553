//! `keel bench`: a closed-loop load generator.
//!
//! C clients, each on its own connection, take operations from one shared
//! counter until N have been issued, so the run stops by itself. Each client
//! sends one request and waits for its answer (no pipelining), so latency is
//! what one application thread would see. Keys are drawn uniformly from K,
//! values are incompressible bytes, and the op mix is drawn per operation
//! from a generator seeded by the client's number, so runs are repeatable.

use std::io::{self, IsTerminal};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use hyper::body::Bytes;
use indicatif::{ProgressBar, ProgressStyle};
use keel_core::client::Consistency;
use tokio::task::JoinSet;

use super::addr::{self, ServerAddr};
use super::{Failure, output, parse_consistency};

mod client;
mod report;
mod resp;

pub use client::Client;
pub use report::{Outcome, Report, Stats};
pub use resp::RespError;

/// Bound on `--clients`: each holds a socket and a task.
const CLIENTS_MAX: u32 = 10_000;
/// Bound on `--value-size`: the node's default value limit.
const VALUE_BYTES_MAX: u32 = 16 * 1024 * 1024;
/// Results a client gathers before it takes the shared lock.
const BATCH_OPS: usize = 64;

pub const AFTER_HELP: &str = "\
Prints throughput, latency percentiles (p50, p99, p999, max) of successful
operations per op type, the count of gets that found nothing (keys not yet
written), and errors by kind. Latency is measured per request from the client.

The address defaults to KEEL_SERVER or 127.0.0.1:7420 for http, and to
KEEL_RESP_SERVER or 127.0.0.1:7421 for redis. With --protocol redis, plain GET
and SET are sent, or KEEL.GET and KEEL.PUT when --consistency is given.

Example:
  keel bench --clients 32 --ops 200000 --value-size 256 --mix 90:10 --keys 100000

Exit codes:
  0  every operation succeeded
  1  some operations failed (they are counted by kind)
  2  usage error, or the node could not be reached before the run";

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// The node's address, host:port [default: see below].
    #[arg(long, short = 's', value_name = "ADDR")]
    server: Option<String>,
    /// The protocol to load the node with.
    #[arg(long, value_enum, default_value_t = Protocol::Http)]
    protocol: Protocol,
    /// Concurrent clients, each with its own connection.
    #[arg(long, value_name = "C", default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=CLIENTS_MAX as i64))]
    clients: u32,
    /// Operations in all; the run stops after them.
    #[arg(long, short = 'n', value_name = "N", default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..))]
    ops: u64,
    /// Bytes in each value written.
    #[arg(long, value_name = "B", default_value_t = 100, value_parser = clap::value_parser!(u32).range(0..=VALUE_BYTES_MAX as i64))]
    value_size: u32,
    /// Gets to puts, GET:PUT, e.g. 80:20, 100:0 or 0:100.
    #[arg(long, value_name = "GET:PUT", default_value = "80:20", value_parser = parse_mix)]
    mix: Mix,
    /// Distinct keys, bench:0 to bench:K-1, drawn uniformly.
    #[arg(long, short = 'k', value_name = "K", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    keys: u64,
    /// Consistency of every request: one, quorum, all or a count [default: the node's].
    #[arg(long, value_name = "LEVEL", value_parser = parse_consistency)]
    consistency: Option<Consistency>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Protocol {
    Http,
    Redis,
}

impl Protocol {
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Http => "http",
            Protocol::Redis => "redis",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Get,
    Put,
}

/// Relative weights of gets and puts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mix {
    get: u32,
    put: u32,
}

impl Mix {
    fn pick(self, draw: u64) -> Op {
        let total = u64::from(self.get) + u64::from(self.put);
        if draw % total < u64::from(self.get) { Op::Get } else { Op::Put }
    }

    /// Whole percentages that add up to 100.
    pub fn percentages(self) -> (u64, u64) {
        let total = u64::from(self.get) + u64::from(self.put);
        let get = (u64::from(self.get) * 100 + total / 2) / total;
        (get, 100 - get)
    }
}

fn parse_mix(text: &str) -> Result<Mix, String> {
    let bad = || format!("{text:?}: expected GET:PUT weights such as 80:20, 100:0 or 0:100");
    let (get, put) = text.split_once(':').ok_or_else(bad)?;
    let get: u32 = get.trim().parse().map_err(|_| bad())?;
    let put: u32 = put.trim().parse().map_err(|_| bad())?;
    if get == 0 && put == 0 || get.checked_add(put).is_none() {
        return Err(bad());
    }
    Ok(Mix { get, put })
}

/// Everything a run needs, with the address resolved.
#[derive(Clone, Debug)]
pub struct Plan {
    pub server: ServerAddr,
    pub protocol: Protocol,
    pub clients: u32,
    pub ops: u64,
    pub value_size: u32,
    pub mix: Mix,
    pub keys: u64,
    pub consistency: Option<Consistency>,
}

impl Plan {
    fn from_args(args: BenchArgs) -> Result<Plan, Failure> {
        let (variable, fallback, port) = match args.protocol {
            Protocol::Http => ("KEEL_SERVER", addr::HTTP_SERVER_DEFAULT, addr::HTTP_PORT_DEFAULT),
            Protocol::Redis => ("KEEL_RESP_SERVER", addr::RESP_SERVER_DEFAULT, addr::RESP_PORT_DEFAULT),
        };
        let text =
            args.server.or_else(|| std::env::var(variable).ok()).unwrap_or_else(|| fallback.to_owned());
        let server = ServerAddr::parse(&text, port).map_err(|error| Failure::Local(error.to_string()))?;
        Ok(Plan {
            server,
            protocol: args.protocol,
            clients: args.clients,
            ops: args.ops,
            value_size: args.value_size,
            mix: args.mix,
            keys: args.keys,
            consistency: args.consistency,
        })
    }
}

pub fn command(args: BenchArgs) -> Result<(), Failure> {
    let plan = Arc::new(Plan::from_args(args)?);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|error| Failure::Local(format!("cannot start the async runtime: {error}")))?;
    let progress = match io::stderr().is_terminal() {
        true => ProgressBar::new(plan.ops),
        false => ProgressBar::hidden(),
    };
    progress.set_style(
        ProgressStyle::with_template("{bar:40} {human_pos}/{human_len} ops [{elapsed_precise}, eta {eta}]")
            .expect("the template is valid"),
    );
    let report = runtime.block_on(run(plan.clone(), progress.clone()));
    progress.finish_and_clear();
    let report = report?;
    output(report.write(&plan, &mut io::stdout().lock()))?;
    match report.stats.failed() {
        0 => Ok(()),
        failed => Err(Failure::Failed(format!("{failed} of {} operations failed", report.stats.completed()))),
    }
}

/// Runs the plan to the end. Fails only if the node cannot be reached at
/// the start; failures during the run are counted in the report.
pub async fn run(plan: Arc<Plan>, progress: ProgressBar) -> Result<Report, Failure> {
    let first = Client::probe(&plan).await?;
    let shared = Arc::new(Shared {
        next: AtomicU64::new(0),
        stats: Mutex::new(Stats::new()),
        value: incompressible(plan.value_size),
        plan: plan.clone(),
        progress,
    });
    let started = Instant::now();
    let mut clients = JoinSet::new();
    let mut first = Some(first);
    for number in 0..plan.clients {
        clients.spawn(load(number, shared.clone(), first.take()));
    }
    while let Some(joined) = clients.join_next().await {
        if let Err(error) = joined {
            if error.is_panic() {
                std::panic::resume_unwind(error.into_panic());
            }
        }
    }
    let elapsed = started.elapsed();
    let stats = std::mem::take(&mut *shared.stats.lock().unwrap_or_else(|poison| poison.into_inner()));
    Ok(Report { stats, elapsed })
}

/// What every client of a run shares.
struct Shared {
    /// The number of the next operation; clients stop at `plan.ops`.
    next: AtomicU64,
    stats: Mutex<Stats>,
    value: Bytes,
    plan: Arc<Plan>,
    progress: ProgressBar,
}

/// One client: issue operations until the run's count is used up.
async fn load(number: u32, shared: Arc<Shared>, mut client: Option<Client>) {
    let plan = &shared.plan;
    let mut random = SplitMix64(u64::from(number).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x6b65_656c);
    let mut batch: Vec<(Op, Outcome, Duration)> = Vec::with_capacity(BATCH_OPS);
    while shared.next.fetch_add(1, Ordering::Relaxed) < plan.ops {
        let op = plan.mix.pick(random.next());
        let key = format!("bench:{}", random.next() % plan.keys);
        let started = Instant::now();
        let outcome = match client.as_mut() {
            Some(open) => open.run(plan, op, key.as_bytes(), &shared.value).await,
            None => match Client::open(plan).await {
                Ok(mut open) => {
                    let outcome = open.run(plan, op, key.as_bytes(), &shared.value).await;
                    client = Some(open);
                    outcome
                }
                Err(kind) => Err(kind),
            },
        };
        let outcome = outcome.unwrap_or_else(|failure| {
            // A broken connection is reopened by the next operation.
            client = client.take().filter(|_| !failure.broke_connection);
            Outcome::Failed(failure.kind)
        });
        batch.push((op, outcome, started.elapsed()));
        if batch.len() == BATCH_OPS {
            flush(&shared, &mut batch);
        }
    }
    flush(&shared, &mut batch);
}

fn flush(shared: &Shared, batch: &mut Vec<(Op, Outcome, Duration)>) {
    let count = batch.len() as u64;
    let mut stats = shared.stats.lock().unwrap_or_else(|poison| poison.into_inner());
    for (op, outcome, latency) in batch.drain(..) {
        stats.record(op, outcome, latency);
    }
    drop(stats);
    shared.progress.inc(count);
}

/// Bytes that no compressor shrinks, so a node that compresses values is
/// measured at its real cost.
fn incompressible(len: u32) -> Bytes {
    let mut random = SplitMix64(0x7661_6c75_6573);
    let mut value = Vec::with_capacity(len as usize + 8);
    while value.len() < len as usize {
        value.extend_from_slice(&random.next().to_le_bytes());
    }
    value.truncate(len as usize);
    Bytes::from(value)
}

/// SplitMix64: tiny, fast and good enough to draw keys and ops.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::TestNode;
    use super::*;

    fn plan(server: &ServerAddr, protocol: Protocol, consistency: Option<Consistency>) -> Arc<Plan> {
        Arc::new(Plan {
            server: server.clone(),
            protocol,
            clients: 4,
            ops: 300,
            value_size: 64,
            mix: Mix { get: 1, put: 1 },
            keys: 20,
            consistency,
        })
    }

    fn bench(plan: Arc<Plan>) -> Result<Report, Failure> {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build();
        runtime.expect("a runtime").block_on(run(plan, ProgressBar::hidden()))
    }

    #[test]
    fn runs_exactly_n_ops_over_http_and_reports_them() {
        let node = TestNode::start();
        let plan = plan(&node.http, Protocol::Http, None);
        let report = bench(plan.clone()).expect("runs");
        assert_eq!((report.stats.completed(), report.stats.failed()), (300, 0));
        let mut out = Vec::new();
        report.write(&plan, &mut out).expect("writes");
        let out = String::from_utf8(out).expect("utf-8");
        assert!(out.starts_with("keel bench: http 127.0.0.1:"), "{out}");
        assert!(out.contains("4 clients, 300 ops (50% get, 50% put), 20 keys, 64-byte values\n"), "{out}");
        for line in [
            "throughput  ",
            "latency ms      count       p50       p99      p999       max",
            "  all             300 ",
        ] {
            assert!(out.contains(line), "{line:?} missing from\n{out}");
        }
        assert!(out.ends_with("errors      none\n"), "{out}");
    }

    #[test]
    fn runs_over_the_redis_protocol_with_and_without_a_consistency() {
        let node = TestNode::start();
        for consistency in [None, Some(Consistency::One)] {
            let report = bench(plan(&node.resp, Protocol::Redis, consistency)).expect("runs");
            assert_eq!((report.stats.completed(), report.stats.failed()), (300, 0), "{consistency:?}");
        }
    }

    #[test]
    fn node_errors_are_counted_by_kind() {
        let node = TestNode::start();
        node.backend.fail_with(Some(keel_core::client::ClientError::Timeout { acknowledged: 1, needed: 2 }));
        let report = bench(plan(&node.http, Protocol::Http, None)).expect("runs");
        assert_eq!(report.stats.failed(), 300);
        assert_eq!(report.stats.errors().keys().collect::<Vec<_>>(), ["http 504 timeout"]);
        let report = bench(plan(&node.resp, Protocol::Redis, None)).expect("runs");
        assert_eq!(report.stats.errors().get("redis TIMEOUT"), Some(&300));
    }

    #[test]
    fn an_unreachable_node_stops_the_run_before_it_starts() {
        let nowhere = ServerAddr::new("127.0.0.1", 1);
        for protocol in [Protocol::Http, Protocol::Redis] {
            let failure = bench(plan(&nowhere, protocol, None)).expect_err("nothing listens on port 1");
            assert_eq!(failure.exit_code(), 2, "{failure}");
        }
    }

    #[test]
    fn mixes_parse_and_split_draws_by_weight() {
        assert_eq!(parse_mix("80:20"), Ok(Mix { get: 80, put: 20 }));
        assert_eq!(parse_mix("0:1").map(Mix::percentages), Ok((0, 100)));
        assert_eq!(parse_mix("2:1").map(Mix::percentages), Ok((67, 33)));
        for bad in ["0:0", "80", "a:b", "-1:2", "4294967295:1"] {
            assert!(parse_mix(bad).is_err(), "{bad}");
        }
        let mix = Mix { get: 80, put: 20 };
        let gets = (0..1000).filter(|&draw| mix.pick(draw) == Op::Get).count();
        assert_eq!(gets, 800);
    }
}
