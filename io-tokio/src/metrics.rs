//! Counters and latency distributions of the client-facing servers and of
//! the disk, rendered in the Prometheus text format at `/metrics`.
//!
//! Label values are always `&'static str` from closed sets (operation names,
//! outcome codes, command names from the command table), so a client cannot
//! grow the number of series.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

/// Quantiles cover roughly the last one to two windows, as a Prometheus
/// summary should; `_sum` and `_count` are cumulative.
const WINDOW: Duration = Duration::from_secs(60);
/// Latencies are recorded in microseconds up to an hour, three significant digits.
const LATENCY_MICROS_MAX: u64 = 3_600_000_000;
const QUANTILES: [(f64, &str); 4] = [(0.5, "0.5"), (0.9, "0.9"), (0.99, "0.99"), (0.999, "0.999")];

/// Which server a connection belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Protocol {
    Resp,
    Http,
}

#[derive(Debug)]
pub struct Metrics {
    /// Counts and latencies under one lock: every request updates both.
    requests: Mutex<Requests>,
    commands: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    responses: Mutex<BTreeMap<(&'static str, u16), u64>>,
    connections: [Connections; 2],
    syncs: Mutex<Syncs>,
    /// Turns of the node's event loop, by what woke it: everything queued
    /// behind a turn waits for it.
    loop_turns: Mutex<BTreeMap<&'static str, LoopTurns>>,
}

#[derive(Debug)]
struct LoopTurns {
    latency: Latency,
    slow: u64,
}

/// A turn of the event loop at least this long counts as slow.
pub const LOOP_TURN_SLOW: Duration = Duration::from_millis(10);

/// fsyncs of the node's files: how long they take is how long every write
/// under `fsync always` waits.
#[derive(Debug, Default)]
struct Syncs {
    latency: Option<Latency>,
    failed: u64,
}

#[derive(Debug, Default)]
struct Requests {
    counts: BTreeMap<(&'static str, &'static str), u64>,
    latency: BTreeMap<&'static str, Latency>,
}

#[derive(Debug, Default)]
struct Connections {
    open: AtomicU64,
    accepted: AtomicU64,
    refused: AtomicU64,
}

/// A sliding-window latency distribution.
#[derive(Debug)]
struct Latency {
    current: Histogram<u64>,
    previous: Histogram<u64>,
    rotated: Instant,
    sum_micros: u64,
    count: u64,
}

impl Metrics {
    pub fn new() -> Metrics {
        Metrics {
            requests: Mutex::new(Requests::default()),
            commands: Mutex::new(BTreeMap::new()),
            responses: Mutex::new(BTreeMap::new()),
            connections: [Connections::default(), Connections::default()],
            syncs: Mutex::new(Syncs::default()),
            loop_turns: Mutex::new(BTreeMap::new()),
        }
    }

    /// One key request through the node: `op` is get/put/delete, `outcome`
    /// a reply kind or an error code; it started at `started` and ended at `ended`.
    pub fn record_request(&self, op: &'static str, outcome: &'static str, started: Instant, ended: Instant) {
        let mut requests = lock(&self.requests);
        *requests.counts.entry((op, outcome)).or_default() += 1;
        let latency = requests.latency.entry(op).or_insert_with(|| Latency::new(ended));
        latency.record(ended.saturating_duration_since(started), ended);
    }

    /// One fsync that took `elapsed`, ending at `ended`; `ok` is false if it failed.
    pub fn record_sync(&self, elapsed: Duration, ended: Instant, ok: bool) {
        let mut syncs = lock(&self.syncs);
        syncs.latency.get_or_insert_with(|| Latency::new(ended)).record(elapsed, ended);
        syncs.failed += u64::from(!ok);
    }

    /// One turn of the event loop, woken by `wake`, that took `elapsed` and ended at `ended`.
    pub fn record_loop_turn(&self, wake: &'static str, elapsed: Duration, ended: Instant) {
        let mut turns = lock(&self.loop_turns);
        let turns = turns.entry(wake).or_insert_with(|| LoopTurns { latency: Latency::new(ended), slow: 0 });
        turns.latency.record(elapsed, ended);
        turns.slow += u64::from(elapsed >= LOOP_TURN_SLOW);
    }

    /// One Redis command, `outcome` being `ok` or `error`.
    pub fn record_command(&self, command: &'static str, outcome: &'static str) {
        *lock(&self.commands).entry((command, outcome)).or_default() += 1;
    }

    /// One HTTP response on a route.
    pub fn record_response(&self, route: &'static str, status: u16) {
        *lock(&self.responses).entry((route, status)).or_default() += 1;
    }

    pub fn connection_opened(&self, protocol: Protocol) {
        let connections = &self.connections[protocol as usize];
        connections.accepted.fetch_add(1, Ordering::Relaxed);
        connections.open.fetch_add(1, Ordering::Relaxed);
    }

    pub fn connection_closed(&self, protocol: Protocol) {
        self.connections[protocol as usize].open.fetch_sub(1, Ordering::Relaxed);
    }

    pub fn connection_refused(&self, protocol: Protocol) {
        self.connections[protocol as usize].refused.fetch_add(1, Ordering::Relaxed);
    }

    pub fn connections_open(&self, protocol: Protocol) -> u64 {
        self.connections[protocol as usize].open.load(Ordering::Relaxed)
    }

    pub fn connections_accepted(&self, protocol: Protocol) -> u64 {
        self.connections[protocol as usize].accepted.load(Ordering::Relaxed)
    }

    pub fn connections_refused(&self, protocol: Protocol) -> u64 {
        self.connections[protocol as usize].refused.load(Ordering::Relaxed)
    }

    /// Commands answered over RESP, all outcomes.
    pub fn commands_processed(&self) -> u64 {
        lock(&self.commands).values().sum()
    }

    /// Everything in the Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        header(&mut out, "keel_requests_total", "counter", "Key requests by operation and outcome.");
        let mut requests = lock(&self.requests);
        for ((op, outcome), count) in &requests.counts {
            let _ = writeln!(out, "keel_requests_total{{op=\"{op}\",outcome=\"{outcome}\"}} {count}");
        }
        let help = "Key request latency, queueing included; quantiles over the last minute or two.";
        header(&mut out, "keel_request_duration_seconds", "summary", help);
        let now = Instant::now();
        for (op, latency) in &mut requests.latency {
            latency.write(&mut out, "keel_request_duration_seconds", &format!("op=\"{op}\""), now);
        }
        drop(requests);
        self.write_syncs(&mut out, now);
        self.write_loop_turns(&mut out, now);
        header(&mut out, "keel_resp_commands_total", "counter", "Redis commands by command and outcome.");
        for ((command, outcome), count) in lock(&self.commands).iter() {
            let _ = writeln!(
                out,
                "keel_resp_commands_total{{command=\"{command}\",outcome=\"{outcome}\"}} {count}"
            );
        }
        header(&mut out, "keel_http_responses_total", "counter", "HTTP responses by route and status.");
        for ((route, status), count) in lock(&self.responses).iter() {
            let _ =
                writeln!(out, "keel_http_responses_total{{route=\"{route}\",status=\"{status}\"}} {count}");
        }
        self.write_connections(&mut out);
        out
    }

    fn write_syncs(&self, out: &mut String, now: Instant) {
        let mut syncs = lock(&self.syncs);
        let help = "Duration of the disk's fsyncs; quantiles over the last minute or two.";
        header(out, "keel_disk_sync_duration_seconds", "summary", help);
        if let Some(latency) = &mut syncs.latency {
            latency.write(out, "keel_disk_sync_duration_seconds", "", now);
        }
        header(out, "keel_disk_sync_failures_total", "counter", "fsyncs that failed.");
        let _ = writeln!(out, "keel_disk_sync_failures_total {}", syncs.failed);
    }

    fn write_loop_turns(&self, out: &mut String, now: Instant) {
        let mut turns = lock(&self.loop_turns);
        let help = "Turns of the node's event loop by what woke it (requests queued meanwhile wait); \
                    quantiles over the last minute or two.";
        header(out, "keel_event_loop_turn_duration_seconds", "summary", help);
        for (wake, turns) in turns.iter_mut() {
            let labels = format!("woken_by=\"{wake}\"");
            turns.latency.write(out, "keel_event_loop_turn_duration_seconds", &labels, now);
        }
        header(
            out,
            "keel_event_loop_slow_turns_total",
            "counter",
            "Turns of the event loop of 10 ms or more.",
        );
        for (wake, turns) in turns.iter() {
            let _ = writeln!(out, "keel_event_loop_slow_turns_total{{woken_by=\"{wake}\"}} {}", turns.slow);
        }
    }

    fn write_connections(&self, out: &mut String) {
        let protocols = [(Protocol::Resp, "resp"), (Protocol::Http, "http")];
        header(out, "keel_connections_open", "gauge", "Client connections open now.");
        for (protocol, name) in protocols {
            let _ = writeln!(
                out,
                "keel_connections_open{{protocol=\"{name}\"}} {}",
                self.connections_open(protocol)
            );
        }
        header(out, "keel_connections_accepted_total", "counter", "Client connections accepted.");
        for (protocol, name) in protocols {
            let count = self.connections_accepted(protocol);
            let _ = writeln!(out, "keel_connections_accepted_total{{protocol=\"{name}\"}} {count}");
        }
        header(out, "keel_connections_refused_total", "counter", "Client connections refused at the limit.");
        for (protocol, name) in protocols {
            let count = self.connections_refused(protocol);
            let _ = writeln!(out, "keel_connections_refused_total{{protocol=\"{name}\"}} {count}");
        }
    }
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

impl Latency {
    fn new(now: Instant) -> Latency {
        Latency { current: histogram(), previous: histogram(), rotated: now, sum_micros: 0, count: 0 }
    }

    fn record(&mut self, elapsed: Duration, now: Instant) {
        self.rotate(now);
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX).max(1);
        self.current.saturating_record(micros);
        self.sum_micros = self.sum_micros.saturating_add(micros);
        self.count += 1;
    }

    fn rotate(&mut self, now: Instant) {
        let age = now.saturating_duration_since(self.rotated);
        if age < WINDOW {
            return;
        }
        if age < WINDOW * 2 {
            std::mem::swap(&mut self.current, &mut self.previous);
        } else {
            self.previous.reset();
        }
        self.current.reset();
        self.rotated = now;
    }

    /// Writes the summary `name`; `labels` (`key="value"` pairs, may be
    /// empty) are put on each of its sample lines.
    fn write(&mut self, out: &mut String, name: &str, labels: &str, now: Instant) {
        self.rotate(now);
        let mut window = self.previous.clone();
        // Both histograms share bounds and precision, so adding cannot fail.
        let _ = window.add(&self.current);
        let separator = if labels.is_empty() { "" } else { "," };
        for (quantile, label) in QUANTILES {
            let seconds = window.value_at_quantile(quantile) as f64 / 1e6;
            let _ = writeln!(out, "{name}{{{labels}{separator}quantile=\"{label}\"}} {seconds}");
        }
        let labels = if labels.is_empty() { String::new() } else { format!("{{{labels}}}") };
        let sum = self.sum_micros as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum{labels} {sum}");
        let _ = writeln!(out, "{name}_count{labels} {}", self.count);
    }
}

fn histogram() -> Histogram<u64> {
    // The bounds are constants that satisfy hdrhistogram's preconditions.
    Histogram::new_with_bounds(1, LATENCY_MICROS_MAX, 3).expect("constant histogram bounds are valid")
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// A panic while holding a metrics lock leaves plain counters behind, which
/// are still worth reporting.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_quantiles() {
        let metrics = Metrics::new();
        let start = Instant::now();
        for micros in 1..=1000 {
            metrics.record_request("get", "found", start, start + Duration::from_micros(micros));
        }
        metrics.record_request("put", "timeout", start, start + Duration::from_millis(5));
        metrics.record_command("get", "ok");
        metrics.record_response("kv", 200);
        metrics.connection_opened(Protocol::Resp);
        metrics.connection_refused(Protocol::Http);
        metrics.record_sync(Duration::from_millis(2), start, true);
        metrics.record_sync(Duration::from_millis(3), start, false);
        let text = metrics.render();
        assert!(text.contains("keel_requests_total{op=\"get\",outcome=\"found\"} 1000"), "{text}");
        assert!(text.contains("keel_requests_total{op=\"put\",outcome=\"timeout\"} 1"));
        assert!(text.contains("keel_request_duration_seconds{op=\"get\",quantile=\"0.5\"} 0.0005"));
        assert!(text.contains("keel_request_duration_seconds_count{op=\"get\"} 1000"));
        assert!(text.contains("keel_resp_commands_total{command=\"get\",outcome=\"ok\"} 1"));
        assert!(text.contains("keel_http_responses_total{route=\"kv\",status=\"200\"} 1"));
        assert!(text.contains("keel_connections_open{protocol=\"resp\"} 1"));
        assert!(text.contains("keel_connections_refused_total{protocol=\"http\"} 1"));
        assert!(text.contains("keel_disk_sync_duration_seconds{quantile=\"0.5\"} 0.002"), "{text}");
        assert!(text.contains("keel_disk_sync_duration_seconds_count 2"));
        assert!(text.contains("keel_disk_sync_failures_total 1"));
        assert_eq!(metrics.commands_processed(), 1);
        for line in text.lines().filter(|line| !line.starts_with('#')) {
            let value = line.rsplit(' ').next().unwrap_or_default();
            assert!(value.parse::<f64>().is_ok(), "not a sample line: {line}");
        }
    }
}
