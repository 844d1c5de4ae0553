//! Properties of the final reads, taken after the cluster healed and
//! converged: 3 (no lost acknowledged write) and 4 (no resurrection).

use std::collections::BTreeMap;

use super::{Causality, Property, Violation};
use crate::history::{Action, History, NEVER, Op, OpId, Outcome, Phase, ReadValue};

/// The last successful final read of each key.
fn final_reads(history: &History) -> BTreeMap<u32, &Op> {
    let mut reads = BTreeMap::new();
    for op in &history.ops {
        if op.phase == Phase::Final && matches!(op.outcome, Outcome::Found(_) | Outcome::NotFound) {
            reads.insert(op.key, op);
        }
    }
    reads
}

fn contains(read: &Op, put: OpId) -> bool {
    read.read_values().contains(&ReadValue::Put(put))
}

/// Property 3: every acknowledged put is in its key's final read, unless a
/// write that did not fail may have replaced it.
pub fn lost_writes(history: &History, causality: &Causality) -> Vec<Violation> {
    let finals = final_reads(history);
    let mut violations = Vec::new();
    for put in history.ops.iter().filter(|op| op.acknowledged() && matches!(op.action, Action::Put { .. })) {
        let Some(read) = finals.get(&put.key) else {
            let message = format!("k{} has no successful final read", put.key);
            violations.push(Violation::new(Property::Availability, message, vec![put.id]));
            continue;
        };
        if contains(read, put.id) {
            continue;
        }
        let replaced = causality.replaced_before(put.id, NEVER);
        if !replaced {
            let message = format!(
                "acknowledged put {} is missing from the final read and no write replaced it",
                put.id
            );
            violations.push(Violation::new(Property::LostWrite, message, vec![put.id, read.id]));
        }
    }
    violations
}

/// Property 4: no value an acknowledged write certainly replaced is in the
/// final read.
pub fn resurrections(history: &History, causality: &Causality) -> Vec<Violation> {
    let finals = final_reads(history);
    let mut violations = Vec::new();
    for write in history.ops.iter().filter(|op| op.acknowledged()) {
        let Some(read) = finals.get(&write.key) else { continue };
        for replaced in causality.known(write.id).iter() {
            if contains(read, replaced) {
                let message =
                    format!("put {replaced} came back after acknowledged write {} replaced it", write.id);
                violations.push(Violation::new(
                    Property::Resurrection,
                    message,
                    vec![replaced, write.id, read.id],
                ));
            }
        }
    }
    violations
}

#[cfg(test)]
mod tests {
    use super::super::build::Build;
    use super::*;
    use crate::history::ContextSource::*;

    #[test]
    fn a_missing_acknowledged_put_is_lost_unless_replaced() {
        let mut b = Build::new();
        let p0 = b.put(0, Empty, 0, 10);
        let p1 = b.put(0, Empty, 0, 10);
        let r2 = b.get_found(0, &[p0], 20, 30);
        let p3 = b.put(0, Read(r2), 40, 50);
        b.final_read(0, &[p1, p3], 100);
        let causality = Causality::new(&b.history);
        assert!(lost_writes(&b.history, &causality).is_empty(), "p0 was replaced by p3");
        b.final_read(0, &[p3], 200);
        let causality = Causality::new(&b.history);
        let found = lost_writes(&b.history, &causality);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].property, Property::LostWrite);
        assert_eq!(found[0].ops[0], p1);
    }

    #[test]
    fn a_definitely_failed_write_excuses_nothing() {
        let mut b = Build::new();
        let p0 = b.put(0, Empty, 0, 10);
        let overwrite = b.put(0, Overwrite, 20, 30);
        b.fail(overwrite);
        b.final_read(0, &[], 100);
        let causality = Causality::new(&b.history);
        let found = lost_writes(&b.history, &causality);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].ops[0], p0);
    }

    #[test]
    fn a_delete_that_read_first_excuses_only_what_its_read_saw() {
        let mut b = Build::new();
        let p0 = b.put(0, Empty, 0, 10);
        let p1 = b.put(0, Empty, 0, 10);
        let d2 = b.delete_read_first(0, &[p0], 20, 30);
        b.final_read(0, &[p1], 100);
        let causality = Causality::new(&b.history);
        assert!(lost_writes(&b.history, &causality).is_empty(), "p0 was deleted");
        assert!(resurrections(&b.history, &causality).is_empty());
        b.final_read(0, &[p0], 200);
        let causality = Causality::new(&b.history);
        let lost = lost_writes(&b.history, &causality);
        assert_eq!((lost.len(), lost[0].ops[0]), (1, p1), "its read did not see p1: {lost:?}");
        let back = resurrections(&b.history, &causality);
        assert_eq!(back.len(), 1);
        assert_eq!(back[0].ops, vec![p0, d2, 4]);
    }

    #[test]
    fn a_replaced_value_must_not_come_back() {
        let mut b = Build::new();
        let p0 = b.put(0, Empty, 0, 10);
        let r1 = b.get_found(0, &[p0], 20, 30);
        let d2 = b.delete(0, Read(r1), 40, 50);
        b.final_read(0, &[], 100);
        let causality = Causality::new(&b.history);
        assert!(resurrections(&b.history, &causality).is_empty());
        b.final_read(0, &[p0], 200);
        let causality = Causality::new(&b.history);
        let found = resurrections(&b.history, &causality);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].ops, vec![p0, d2, 4]);
    }
}
