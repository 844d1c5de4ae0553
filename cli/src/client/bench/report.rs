//! What a bench run measured, and how it is printed.
//!
//! Memory stays bounded whatever the number of operations: latencies go into
//! fixed-size HDR histograms (microseconds, three significant digits), and
//! errors are counted under at most [`ERROR_KINDS_MAX`] labels.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::time::Duration;

use hdrhistogram::Histogram;

use super::{Op, Plan};

/// Highest latency a histogram tells apart; slower operations count as this.
const LATENCY_MICROS_MAX: u64 = 120 * 1_000_000;
/// Distinct error labels kept; further kinds are counted as "other".
pub const ERROR_KINDS_MAX: usize = 32;

/// How one operation ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Found,
    NotFound,
    Written,
    /// A label for the kind of error, e.g. `http 503 unavailable`.
    Failed(String),
}

/// Counts and latencies of every operation so far.
#[derive(Debug)]
pub struct Stats {
    get: Histogram<u64>,
    put: Histogram<u64>,
    found: u64,
    not_found: u64,
    written: u64,
    failed: u64,
    errors: BTreeMap<String, u64>,
}

impl Stats {
    pub fn new() -> Stats {
        // The bounds are constants that satisfy hdrhistogram's rules
        // (low >= 1, high >= 2 * low, sigfig <= 5), so this cannot fail.
        let histogram =
            || Histogram::new_with_bounds(1, LATENCY_MICROS_MAX, 3).expect("valid constant bounds");
        Stats {
            get: histogram(),
            put: histogram(),
            found: 0,
            not_found: 0,
            written: 0,
            failed: 0,
            errors: BTreeMap::new(),
        }
    }

    /// Latencies of failed operations are left out of the percentiles: an
    /// error answered at once would make a failing node look fast.
    pub fn record(&mut self, op: Op, outcome: Outcome, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX).max(1);
        let histogram = match op {
            Op::Get => &mut self.get,
            Op::Put => &mut self.put,
        };
        match outcome {
            Outcome::Found => self.found += 1,
            Outcome::NotFound => self.not_found += 1,
            Outcome::Written => self.written += 1,
            Outcome::Failed(kind) => {
                self.failed += 1;
                let kind = match self.errors.len() < ERROR_KINDS_MAX || self.errors.contains_key(&kind) {
                    true => kind,
                    false => "other".to_owned(),
                };
                *self.errors.entry(kind).or_default() += 1;
                return;
            }
        }
        histogram.saturating_record(micros);
    }

    pub fn completed(&self) -> u64 {
        self.found + self.not_found + self.written + self.failed
    }

    pub fn failed(&self) -> u64 {
        self.failed
    }

    pub fn errors(&self) -> &BTreeMap<String, u64> {
        &self.errors
    }
}

impl Default for Stats {
    fn default() -> Stats {
        Stats::new()
    }
}

/// A finished run.
#[derive(Debug)]
pub struct Report {
    pub stats: Stats,
    pub elapsed: Duration,
}

impl Report {
    pub fn write(&self, plan: &Plan, out: &mut dyn Write) -> io::Result<()> {
        let stats = &self.stats;
        let (gets, puts) = plan.mix.percentages();
        writeln!(
            out,
            "keel bench: {} {}, {} clients, {} ops ({gets}% get, {puts}% put), {} keys, {}-byte values{}",
            plan.protocol.name(),
            plan.server,
            plan.clients,
            plan.ops,
            plan.keys,
            plan.value_size,
            plan.consistency.map(|level| format!(", consistency {level}")).unwrap_or_default(),
        )?;
        let seconds = self.elapsed.as_secs_f64().max(1e-9);
        let completed = stats.completed();
        let rate = completed as f64 / seconds;
        writeln!(out, "throughput  {rate:.0} ops/s ({completed} ops in {seconds:.2} s)")?;
        writeln!(out, "latency ms  {:>9} {:>9} {:>9} {:>9} {:>9}", "count", "p50", "p99", "p999", "max")?;
        let mut all = stats.get.clone();
        // Same bounds on both histograms, so adding cannot fail.
        let _ = all.add(&stats.put);
        for (name, histogram) in [("get", &stats.get), ("put", &stats.put), ("all", &all)] {
            write_latency(out, name, histogram)?;
        }
        if stats.found + stats.not_found > 0 {
            writeln!(out, "gets        {} found, {} not found", stats.found, stats.not_found)?;
        }
        if stats.failed == 0 {
            return writeln!(out, "errors      none");
        }
        let percent = stats.failed as f64 * 100.0 / completed.max(1) as f64;
        writeln!(out, "errors      {} ({percent:.2}% of ops)", stats.failed)?;
        for (kind, count) in stats.errors() {
            writeln!(out, "  {kind:<32} {count:>9}")?;
        }
        Ok(())
    }
}

fn write_latency(out: &mut dyn Write, name: &str, histogram: &Histogram<u64>) -> io::Result<()> {
    if histogram.is_empty() {
        return writeln!(out, "  {name:<9} {:>9}", 0);
    }
    let ms = |micros: u64| micros as f64 / 1000.0;
    writeln!(
        out,
        "  {name:<9} {:>9} {:>9.3} {:>9.3} {:>9.3} {:>9.3}",
        histogram.len(),
        ms(histogram.value_at_quantile(0.5)),
        ms(histogram.value_at_quantile(0.99)),
        ms(histogram.value_at_quantile(0.999)),
        ms(histogram.max()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_counted_by_kind_and_kinds_are_bounded() {
        let mut stats = Stats::new();
        for index in 0..ERROR_KINDS_MAX + 5 {
            stats.record(Op::Put, Outcome::Failed(format!("kind {index}")), Duration::from_micros(5));
        }
        stats.record(Op::Put, Outcome::Failed("kind 0".into()), Duration::from_micros(5));
        assert_eq!(stats.failed(), ERROR_KINDS_MAX as u64 + 6);
        assert_eq!(stats.errors().len(), ERROR_KINDS_MAX + 1);
        assert_eq!(stats.errors()["other"], 5);
        assert_eq!(stats.errors()["kind 0"], 2);
        assert!(stats.get.is_empty() && stats.put.is_empty());
    }

    #[test]
    fn latencies_of_successes_are_recorded_per_op() {
        let mut stats = Stats::new();
        stats.record(Op::Get, Outcome::Found, Duration::from_micros(100));
        stats.record(Op::Get, Outcome::NotFound, Duration::from_micros(300));
        stats.record(Op::Put, Outcome::Written, Duration::from_secs(1000));
        assert_eq!(stats.get.len(), 2);
        assert!(stats.put.max() >= LATENCY_MICROS_MAX, "slower than the bound counts as the bound");
        assert_eq!(stats.completed(), 3);
    }
}
