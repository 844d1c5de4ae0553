//! Shrinking a failing run to a smaller one that fails the same way: fewer
//! scheduled faults, fewer kinds of message fault, fewer ops.

use crate::check::Property;
use crate::config::{FaultKind, SimConfig};
use crate::faults::ScheduledFault;
use crate::world::{RunResult, run_with};

/// The smallest failing run found, and how many runs the search took.
#[derive(Debug)]
pub struct Shrunk {
    pub result: RunResult,
    pub attempts: u32,
}

/// Greedily removes parts of a failing run while it keeps failing with
/// `property`, trying at most `attempts_max` runs.
pub fn shrink(failing: RunResult, attempts_max: u32) -> Shrunk {
    let Some(property) = failing.failed_property() else {
        return Shrunk { result: failing, attempts: 0 };
    };
    let mut best = failing;
    let mut attempts = 0;
    let mut try_run = |config: SimConfig, schedule: Vec<ScheduledFault>, best: &mut RunResult| -> bool {
        if attempts >= attempts_max {
            return false;
        }
        attempts += 1;
        let result = run_with(config, schedule);
        let keep = fails_with(&result, property);
        if keep {
            *best = result;
        }
        keep
    };
    // Scheduled faults, one at a time, latest first.
    let mut index = best.schedule.len();
    while index > 0 {
        index -= 1;
        let mut schedule = best.schedule.clone();
        schedule.remove(index);
        try_run(best.config.clone(), schedule, &mut best);
    }
    // Whole kinds of fault.
    for kind in FaultKind::ALL {
        if best.config.faults.has(kind) {
            let mut config = best.config.clone();
            config.faults.enabled.retain(|enabled| *enabled != kind);
            try_run(config, best.schedule.clone(), &mut best);
        }
    }
    // Fewer ops, halving while it still fails.
    while best.config.workload.ops > 1 {
        let config = best.config.clone().with_ops(best.config.workload.ops / 2);
        if !try_run(config, best.schedule.clone(), &mut best) {
            break;
        }
    }
    Shrunk { result: best, attempts }
}

fn fails_with(result: &RunResult, property: Property) -> bool {
    result.violations.iter().any(|violation| violation.property == property)
}
