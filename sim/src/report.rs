//! How a run is told: one summary line, and for a failure the fault schedule
//! and the part of the history that shows the broken property.

use core::fmt::Write;

use crate::history::OpId;
use crate::world::RunResult;

/// Lines of history printed around a violation, at most.
const HISTORY_LINES_MAX: usize = 60;

/// `seed=N result=ok|FAIL:<property> trace=<16 hex digits>`.
pub fn summary_line(result: &RunResult) -> String {
    let outcome = match result.failed_property() {
        None => "ok".to_owned(),
        Some(property) => format!("FAIL:{property}"),
    };
    format!("seed={} result={outcome} trace={:016x}", result.config.seed, result.trace)
}

/// Everything needed to understand a failing run, without the summary line.
pub fn failure_report(result: &RunResult) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "config: {}", result.config);
    let _ = writeln!(out, "fault schedule ({} scheduled faults):", result.schedule.len());
    for fault in &result.schedule {
        let _ = writeln!(out, "  {fault}");
    }
    let faults = &result.config.faults;
    let _ = writeln!(
        out,
        "  per message: drop {}ppm, duplicate {}ppm, reorder {}ppm (where enabled)",
        faults.drop_per_million, faults.duplicate_per_million, faults.reorder_per_million
    );
    let _ = writeln!(out, "nodes at the end:");
    for node in &result.nodes {
        let state = match (node.up, node.poisoned) {
            (false, _) => "down",
            (true, true) => "up, storage failed",
            (true, false) => "up",
        };
        let _ = write!(out, "  {} {state}", node.node);
        if let Some(stats) = &node.stats {
            let engine = &stats.engine;
            let _ = write!(
                out,
                ": {} requests in flight, {} timeouts, {} unavailable, {} read repairs, {} copies replaced; \
                 {} tables per level {:?}, {} corruptions caught; anti-entropy: {} exchanges completed, \
                 {} failed, {} keys repaired, {} trees rebuilt, {} building",
                stats.requests_in_flight,
                stats.timeouts,
                stats.unavailable,
                stats.read_repairs,
                stats.corrupt_records_replaced,
                engine.tables_per_level.iter().sum::<u32>(),
                engine.tables_per_level,
                engine.corruption_detected,
                stats.anti_entropy.exchanges_completed,
                stats.anti_entropy.exchanges_failed,
                stats.anti_entropy.keys_repaired,
                stats.anti_entropy.trees_rebuilt,
                stats.anti_entropy.trees_building,
            );
        }
        let _ = writeln!(out);
    }
    let _ = writeln!(out, "violations ({}):", result.violations.len());
    for violation in result.violations.iter().take(5) {
        let _ = writeln!(out, "  {}: {}", violation.property, violation.message);
    }
    if let Some(first) = result.violations.first() {
        let _ = writeln!(out, "history of the first violation:");
        for line in history_excerpt(result, &first.ops) {
            let _ = writeln!(out, "  {line}");
        }
    }
    out
}

/// The ops a violation names, and the ops on the same key that overlap them
/// in time, in history order.
fn history_excerpt(result: &RunResult, named: &[OpId]) -> Vec<String> {
    let ops = &result.history.ops;
    let named: Vec<&crate::history::Op> = named.iter().filter_map(|&id| ops.get(id)).collect();
    let Some(first) = named.first() else { return Vec::new() };
    let start = named.iter().map(|op| op.invoked_ns).min().unwrap_or(0);
    let end = named.iter().map(|op| op.completed_ns.unwrap_or(op.invoked_ns)).max().unwrap_or(u64::MAX);
    let related = ops.iter().filter(|op| {
        named.iter().any(|named| named.id == op.id)
            || (op.key == first.key && op.completed_ns.unwrap_or(u64::MAX) >= start && op.invoked_ns <= end)
    });
    let mut lines: Vec<String> = related
        .map(|op| {
            let mark = if named.iter().any(|named| named.id == op.id) { "*" } else { " " };
            format!("{mark} {op}")
        })
        .collect();
    if lines.len() > HISTORY_LINES_MAX {
        let hidden = lines.len() - HISTORY_LINES_MAX;
        lines.truncate(HISTORY_LINES_MAX);
        lines.push(format!("… {hidden} more ops on k{}", first.key));
    }
    lines
}
