//! Property 8: once the cluster is healed and every node has noticed, every
//! request succeeds. During the safety phase failures are allowed: whether
//! enough replicas were reachable there depends on timing the checker cannot
//! see. Repair reads are exempt too: at `all` they fail while one replica's
//! copy is corrupt, and that failure is what repairs it. For the same reason
//! a liveness read may fail saying replicas' copies are unreadable (a bad
//! disk keeps its rot after healing); the final reads, after the repair
//! rounds, must all succeed.

use super::{Property, Violation};
use crate::history::{History, Outcome, Phase};
use keel_core::client::ClientError;

pub fn failures(history: &History) -> Vec<Violation> {
    history
        .ops
        .iter()
        .filter(|op| matches!(op.phase, Phase::Liveness | Phase::Final))
        .filter(|op| matches!(op.outcome, Outcome::Failed(_) | Outcome::Indeterminate(_) | Outcome::Pending))
        .filter(|op| {
            let repairing = matches!(op.outcome, Outcome::Failed(ClientError::CopiesUnreadable { .. }));
            !(repairing && op.phase == Phase::Liveness)
        })
        .map(|op| {
            let message =
                format!("op {} failed in the {:?} phase with every node up and connected", op.id, op.phase);
            Violation::new(Property::Availability, message, vec![op.id])
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::build::Build;
    use super::*;
    use crate::history::Action;
    use keel_core::client::Consistency;

    #[test]
    fn failures_after_healing_are_violations() {
        let mut b = Build::new();
        let early = b.get_not_found(0, 0, 10);
        b.fail(early);
        assert!(failures(&b.history).is_empty(), "failures under faults are allowed");
        let late =
            b.op(0, Action::Get { read: Consistency::All }, Phase::Liveness, (50, 60), Outcome::Pending);
        let found = failures(&b.history);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].ops, vec![late]);
    }

    #[test]
    fn unreadable_copies_excuse_a_liveness_read_but_not_a_final_one() {
        let mut b = Build::new();
        let unreadable = Outcome::Failed(ClientError::CopiesUnreadable { failed: 1, needed: 3 });
        let read = Action::Get { read: Consistency::All };
        b.op(0, read.clone(), Phase::Liveness, (50, 60), unreadable.clone());
        assert!(failures(&b.history).is_empty());
        let last = b.op(0, read, Phase::Final, (70, 80), unreadable);
        let found = failures(&b.history);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].ops, vec![last]);
    }
}
