//! The liveness phase: heal everything, check that requests succeed, wait
//! for the replicas to agree, and take the final reads.
//!
//! Nothing drives agreement from outside: hinted handoff and anti-entropy
//! must bring every replica up to date on their own (property 11). The
//! phase compares the replicas' copies now and then, and fails if they do
//! not agree, or hints remain, within `CONVERGENCE_MS_MAX`.

use keel_core::client::{ClientError, Consistency};
use keel_core::disk::Faults;
use keel_core::node::Node;

use super::{Event, MS, World};
use crate::check::Property;
use crate::history::{Action, OpId, Outcome, Phase, key_bytes};

/// Time the replicas have, once the liveness ops are done, to agree and
/// hand every hint over.
const CONVERGENCE_MS_MAX: u64 = 60_000;
/// Time between two comparisons of the replicas' copies.
const CONVERGENCE_CHECK_MS: u64 = 500;
/// Ops each client issues once the cluster is healed.
const LIVENESS_OPS_PER_CLIENT: u32 = 3;
/// Time for every failure detector to see every peer again after healing.
const SETTLE_MS: u64 = 3_000;
/// The whole liveness phase must end within this bound.
const LIVENESS_MS_MAX: u64 = 120_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Stage {
    Safety,
    /// Faults end and crashed nodes restart.
    Heal,
    /// Clients issue ops that must all succeed.
    Liveness,
    /// Replicas compared now and then; final reads follow once they agree.
    Converge,
    Final,
    /// The phase ran past its bound.
    Deadline,
}

impl World {
    pub(super) fn enter(&mut self, stage: Stage) {
        if self.done {
            return;
        }
        match stage {
            Stage::Heal => self.heal(),
            Stage::Liveness => {
                if let Some(wait_ns) = self.settle_wait_ns() {
                    self.at(self.now + wait_ns, Event::Stage(Stage::Liveness));
                    return;
                }
                self.stage = Stage::Liveness;
                for client in 0..self.clients.len() {
                    self.clients[client].liveness_left = LIVENESS_OPS_PER_CLIENT;
                    self.at(self.now, Event::ClientWake { client });
                }
            }
            Stage::Converge => self.converge(),
            Stage::Final => self.read_every_key(Phase::Final),
            Stage::Deadline => {
                let message = format!("the liveness phase did not finish within {LIVENESS_MS_MAX} ms");
                self.violate(Property::Convergence, message, vec![]);
                self.done = true;
            }
            Stage::Safety => {}
        }
    }

    fn heal(&mut self) {
        // `--ops N` means N operations: the phase runs on until they are done.
        if !self.safety_ops_done() {
            self.heal_deferred = true;
            return;
        }
        self.stage = Stage::Heal;
        self.network.heal();
        for host in 0..self.hosts.len() {
            self.resume(host);
            self.hosts[host].disk.set_faults(Faults::default());
            self.hosts[host].crash_after_input = false;
            let poisoned = self.hosts[host].node.as_ref().is_some_and(Node::is_poisoned);
            if poisoned {
                let boot = self.hosts[host].boot;
                self.restart(host, boot);
            }
            if self.hosts[host].node.is_none() {
                self.open_node(host);
            }
        }
        let settle_ns = self.config.settle_ms.unwrap_or(SETTLE_MS) * MS;
        let mut settled_ns = self.now + settle_ns;
        if self.config.settle_ms.is_some() {
            // Messages sent before healing may still arrive, clogged or
            // reordered, with news that is no longer true (a peer's boot
            // before it restarted): the cluster settles once the last of
            // them is in, and fresh heartbeats had time to correct them.
            let in_flight = self.queue.iter().filter(|(_, event)| matches!(event, Event::Deliver { .. }));
            let last_ns = in_flight.map(|((at, _), _)| *at).max().unwrap_or(self.now);
            settled_ns = settled_ns.max(last_ns + settle_ns);
        }
        self.at(settled_ns, Event::Stage(Stage::Liveness));
        self.at(self.now + LIVENESS_MS_MAX * MS, Event::Stage(Stage::Deadline));
    }

    /// How much longer the healed cluster must settle, under
    /// `SimConfig::settle_ms`: while a node is down (reopening after a
    /// failed open), and until the last node to open has been up that long.
    /// (Healing put the first look past every message sent before it.)
    fn settle_wait_ns(&self) -> Option<u64> {
        let settle_ns = self.config.settle_ms? * MS;
        if self.hosts.iter().any(|host| host.node.is_none()) {
            return Some(settle_ns);
        }
        let settled_ns = self.last_open_ns + settle_ns;
        (settled_ns > self.now).then(|| settled_ns - self.now)
    }

    /// Whether every operation of the safety phase was issued and answered.
    fn safety_ops_done(&self) -> bool {
        self.history.ops.len() >= self.config.workload.ops as usize
            && self.clients.iter().all(|client| client.idle())
    }

    /// Called when a safety op completes: heals the cluster if the phase's
    /// time ran out while this op was the last one running. As an event of
    /// its own, never in the middle of the node output that completed the op.
    pub(super) fn safety_progress(&mut self) {
        if self.heal_deferred && self.safety_ops_done() {
            self.heal_deferred = false;
            self.at(self.now, Event::Stage(Stage::Heal));
        }
    }

    /// Called when a liveness op completes: once every client is done, the
    /// replicas are left to converge.
    pub(super) fn liveness_progress(&mut self) {
        if self.stage == Stage::Liveness && self.clients.iter().all(|client| client.idle()) {
            self.stage = Stage::Converge;
            self.converge_since = self.now;
            self.at(self.now + CONVERGENCE_CHECK_MS * MS, Event::Stage(Stage::Converge));
        }
    }

    fn read_every_key(&mut self, phase: Phase) {
        self.stage = Stage::Final;
        let checker = self.clients.len() as u32;
        // Counted before any is issued: a node that is a key's only replica
        // answers within the call, and the stage must not end at that answer.
        self.checks_pending += self.config.workload.keys as usize;
        for key in 0..self.config.workload.keys {
            let host = key as usize % self.hosts.len();
            self.issue(checker, host, phase, key, Action::Get { read: Consistency::All });
        }
    }

    /// A final read that found a copy unreadable, the first time for its
    /// key, becomes one more repair read, and the final read is taken again.
    /// Rot from the safety phase can hide in a node's block cache through
    /// every repair round and show only when the block is read from the disk
    /// again; the error says the copy is being repaired and to retry, and a
    /// client would, a little later. A second such failure stands.
    pub(super) fn retry_final_read(&mut self, op: OpId) -> bool {
        let entry = self.history.op(op);
        let unreadable = matches!(entry.outcome, Outcome::Failed(ClientError::CopiesUnreadable { .. }));
        let (key, node) = (entry.key, entry.node);
        if !unreadable || !self.final_retried.insert(key) {
            return false;
        }
        self.history.ops[op].phase = Phase::Repair;
        // After the read repair that the failure set off has landed.
        let host = (node.0 - 1) as usize;
        self.at(self.now + 500 * MS, Event::FinalRead { host, key });
        true
    }

    /// Called when a repair or final read completes.
    pub(super) fn check_done(&mut self) {
        self.checks_pending = self.checks_pending.saturating_sub(1);
        if self.checks_pending > 0 {
            return;
        }
        if self.stage == Stage::Final {
            self.done = true;
        }
    }

    /// Compares every key's copies on its replicas: equal, with no hint
    /// left, the final reads follow; otherwise another look a little later,
    /// until the bound.
    fn converge(&mut self) {
        self.stage = Stage::Converge;
        let mut disagreements = Vec::new();
        for key in 0..self.config.workload.keys {
            let key = key_bytes(key);
            let mut copies = Vec::new();
            for replica in self.placement.replicas(&key) {
                let host = &mut self.hosts[(replica.0 - 1) as usize];
                let Some(node) = host.node.as_mut() else { continue };
                let copy = node.local_object(&key).map_err(|error| error.to_string());
                copies.push((host.id, copy));
            }
            if disagree(&copies) {
                disagreements.push((String::from_utf8_lossy(&key).into_owned(), copies));
            }
        }
        let hinting = self.nodes_holding_hints();
        if disagreements.is_empty() && hinting.is_empty() {
            self.stats.convergence_ns = Some(self.now - self.converge_since);
            self.at(self.now + 100 * MS, Event::Stage(Stage::Final));
            return;
        }
        let waited_ms = (self.now - self.converge_since) / MS;
        if waited_ms < CONVERGENCE_MS_MAX {
            self.at(self.now + CONVERGENCE_CHECK_MS * MS, Event::Stage(Stage::Converge));
            return;
        }
        let message = match disagreements.first() {
            Some((key, copies)) => format!(
                "{} keys still differ between replicas {waited_ms} ms after the liveness ops, with \
                 hints and anti-entropy alone; {key}: {copies:?}",
                disagreements.len()
            ),
            None => format!("hints still pending {waited_ms} ms after the liveness ops: {hinting:?}"),
        };
        self.violate(Property::Convergence, message, vec![]);
        self.done = true;
    }

    /// Nodes that still hold hints, and how many. A disk that rotted is
    /// left out: a hint in a block that no longer reads can be neither
    /// handed over nor removed (anti-entropy repairs its key instead).
    fn nodes_holding_hints(&self) -> Vec<(keel_core::NodeId, u64)> {
        let rotted = |host: &super::Host| host.disk.fault_counts().bit_rots > 0;
        let held = |host: &super::Host| host.node.as_ref().map_or(0, |node| node.stats().hints_pending);
        self.hosts
            .iter()
            .filter(|host| !rotted(host) && held(host) > 0)
            .map(|host| (host.id, held(host)))
            .collect()
    }
}

/// Whether replicas' copies of a key disagree. A copy that no longer reads
/// disagrees with a readable one that holds the key, which anti-entropy
/// must bring back; where no replica holds the key, it has nothing to be
/// repaired from and cannot be told from a key never written here: the
/// final read replaces it with what the readable copies hold.
fn disagree<T: PartialEq, E>(copies: &[(keel_core::NodeId, Result<Option<T>, E>)]) -> bool {
    let readable: Vec<&Option<T>> = copies.iter().filter_map(|(_, copy)| copy.as_ref().ok()).collect();
    let unreadable = readable.len() < copies.len();
    readable.windows(2).any(|pair| pair[0] != pair[1])
        || (unreadable && readable.iter().any(|copy| copy.is_some()))
}
