//! The fault schedule: timed faults of the safety phase, drawn from the seed
//! and printed with a failing run. Shrinking removes entries from it.

use core::fmt;

use keel_core::NodeId;

use crate::config::{FaultKind, SimConfig};
use crate::rng::{SimRng, Stream};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// `side` and the other nodes cannot reach each other.
    Partition { side: Vec<NodeId> },
    /// Messages from `from` to `to` are lost; the reverse direction works.
    OneWay { from: Vec<NodeId>, to: Vec<NodeId> },
    /// Messages from `from` to `to` take `delay_ms` longer.
    Clog { from: NodeId, to: NodeId, delay_ms: u64 },
    /// The node crashes and restarts when the fault ends. With
    /// `power_loss` the machine goes down too and every file loses what was
    /// not synced (with `torn`, each keeps a random part of its unsynced
    /// tail); without it, only the process dies and the kernel keeps what it
    /// was handed. Under `--fsync always` every crash is a power loss.
    Crash { node: NodeId, torn: bool, power_loss: bool },
    /// The node stops the world (a long GC pause, a frozen VM) and resumes
    /// when the fault ends, with stale timers and a backlog of everything
    /// that arrived meanwhile.
    Pause { node: NodeId },
    /// The node's data is lost for good: it goes down and, when the fault
    /// ends, restarts on an empty disk under a new incarnation.
    Wipe { node: NodeId },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScheduledFault {
    pub at_ms: u64,
    pub duration_ms: u64,
    pub fault: Fault,
}

impl fmt::Display for ScheduledFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "t={}ms for {}ms: ", self.at_ms, self.duration_ms)?;
        match &self.fault {
            Fault::Partition { side } => write!(f, "partition {side:?} | rest"),
            Fault::OneWay { from, to } => write!(f, "one-way {from:?} -x-> {to:?}"),
            Fault::Clog { from, to, delay_ms } => write!(f, "clog {from} -> {to} +{delay_ms}ms"),
            Fault::Crash { node, torn, power_loss } => {
                let what = if *power_loss { "power loss" } else { "process crash" };
                write!(f, "{what} {node}{}", if *torn && *power_loss { " (torn tail)" } else { "" })
            }
            Fault::Pause { node } => write!(f, "pause {node}"),
            Fault::Wipe { node } => write!(f, "wipe {node}"),
        }
    }
}

/// The shortest pause: past the nodes' failure timeout (1.5 s).
const PAUSE_MS_MIN: u64 = 2_000;

/// Draws the scheduled faults of `config`'s seed.
pub fn schedule(config: &SimConfig) -> Vec<ScheduledFault> {
    let mut rng = SimRng::new(config.seed, Stream::Faults);
    let nodes: Vec<NodeId> = (1..=config.nodes).map(NodeId).collect();
    let start_max = config.safety_ms.saturating_sub(1000).max(1);
    let mut faults = Vec::new();
    let links: Vec<FaultKind> = [FaultKind::Partition, FaultKind::OneWay, FaultKind::Clog]
        .into_iter()
        .filter(|kind| config.faults.has(*kind))
        .collect();
    // A link needs two ends: a one-node world has none to cut.
    if !links.is_empty() && nodes.len() >= 2 {
        for _ in 0..config.faults.scheduled_count {
            let at_ms = rng.below(start_max);
            let duration_ms = rng.between(200, 6_000);
            let kind = *rng.pick(&links);
            let fault = link_fault(&mut rng, kind, &nodes);
            faults.push(ScheduledFault { at_ms, duration_ms, fault });
        }
    }
    if config.faults.has(FaultKind::Crash) {
        for _ in 0..config.faults.crash_count {
            let at_ms = rng.below(start_max);
            let duration_ms = rng.between(100, 4_000);
            let fault = Fault::Crash { node: *rng.pick(&nodes), torn: rng.coin(), power_loss: true };
            faults.push(ScheduledFault { at_ms, duration_ms, fault });
        }
    }
    // Drawn after the faults above, so their draws stay what they were.
    if config.sync_interval_ms.is_some() {
        for fault in &mut faults {
            if let Fault::Crash { power_loss, .. } = &mut fault.fault {
                *power_loss = rng.coin();
            }
        }
    }
    if config.faults.has(FaultKind::Pause) {
        for _ in 0..config.faults.pause_count {
            let at_ms = rng.below(start_max);
            // Longer than the failure timeout, so that peers mark it down.
            let duration_ms = rng.between(PAUSE_MS_MIN, 8_000);
            faults.push(ScheduledFault {
                at_ms,
                duration_ms,
                fault: Fault::Pause { node: *rng.pick(&nodes) },
            });
        }
    }
    if let Some(node) = config.wiped_node() {
        for _ in 0..config.faults.wipe_count {
            let at_ms = rng.below(start_max);
            let duration_ms = rng.between(100, 4_000);
            faults.push(ScheduledFault { at_ms, duration_ms, fault: Fault::Wipe { node: NodeId(node) } });
        }
    }
    faults.sort_by_key(|fault| fault.at_ms);
    faults
}

fn link_fault(rng: &mut SimRng, kind: FaultKind, nodes: &[NodeId]) -> Fault {
    match kind {
        FaultKind::Partition => Fault::Partition { side: subset(rng, nodes) },
        FaultKind::OneWay => {
            let from = subset(rng, nodes);
            let to = nodes.iter().copied().filter(|node| !from.contains(node)).collect();
            Fault::OneWay { from, to }
        }
        _ => Fault::Clog { from: *rng.pick(nodes), to: *rng.pick(nodes), delay_ms: rng.between(50, 2_000) },
    }
}

/// A non-empty proper subset of `nodes`, in id order.
fn subset(rng: &mut SimRng, nodes: &[NodeId]) -> Vec<NodeId> {
    let size = rng.between(1, nodes.len() as u64 - 1) as usize;
    let mut pool = nodes.to_vec();
    let mut chosen = Vec::with_capacity(size);
    for _ in 0..size {
        let index = rng.below(pool.len() as u64) as usize;
        chosen.push(pool.swap_remove(index));
    }
    chosen.sort();
    chosen
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_stay_inside_the_safety_phase_and_use_enabled_faults() {
        for seed in 0..100 {
            let config = SimConfig::from_seed(seed);
            for fault in schedule(&config) {
                assert!(fault.at_ms < config.safety_ms);
                let kind = match fault.fault {
                    Fault::Partition { ref side } => {
                        assert!(!side.is_empty() && side.len() < config.nodes as usize);
                        FaultKind::Partition
                    }
                    Fault::OneWay { .. } => FaultKind::OneWay,
                    Fault::Clog { .. } => FaultKind::Clog,
                    Fault::Crash { power_loss, .. } => {
                        assert!(power_loss || config.sync_interval_ms.is_some());
                        FaultKind::Crash
                    }
                    Fault::Pause { .. } => FaultKind::Pause,
                    Fault::Wipe { node } => {
                        assert_eq!(Some(node.0), config.wiped_node());
                        FaultKind::Wipe
                    }
                };
                assert!(config.faults.has(kind), "seed {seed}: {kind} scheduled but off");
            }
        }
    }
}
