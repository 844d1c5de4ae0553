//! Property 7: with R + W > N and no sloppy fallback, a get that starts after
//! a put was acknowledged returns the put's value or a successor.

use keel_core::client::Consistency;

use super::{Causality, Property, Violation};
use crate::history::{Action, History, Outcome, Phase, ReadValue};

pub fn stale_reads(history: &History, causality: &Causality, replicas: u8) -> Vec<Violation> {
    let needed = |consistency: Consistency| consistency.required(replicas).unwrap_or(0);
    let by_key = history.by_key();
    let mut violations = Vec::new();
    for get in &history.ops {
        let Action::Get { read } = get.action else { continue };
        if get.phase == Phase::Repair || !matches!(get.outcome, Outcome::Found(_) | Outcome::NotFound) {
            continue;
        }
        for &put in &by_key[get.key as usize] {
            let put = history.op(put);
            let Action::Put { write, .. } = put.action else { continue };
            let overlaps = u16::from(needed(read)) + u16::from(needed(write)) > u16::from(replicas);
            let before = put.completed().is_some_and(|done| done < get.invoked());
            let intact = !history.copies_lost.contains(&put.id);
            if !(put.acknowledged() && before && overlaps && intact) {
                continue;
            }
            let seen = get.read_values().iter().any(|value| match value {
                ReadValue::Put(value) => *value == put.id || causality.possible(*value).contains(&put.id),
                ReadValue::Garbage(_) => false,
            });
            let replaced = causality.replaced_before(put.id, get.end());
            if !seen && !replaced {
                let message = format!("get {} missed put {}, acknowledged before it began", get.id, put.id);
                violations.push(Violation::new(Property::StrictQuorum, message, vec![put.id, get.id]));
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
    fn a_write_that_lost_a_copy_is_left_out() {
        let mut b = Build::new();
        let p0 = b.put(0, Empty, 0, 10);
        b.get_not_found(0, 20, 30);
        let causality = Causality::new(&b.history);
        assert_eq!(stale_reads(&b.history, &causality, 3).len(), 1);
        b.history.copies_lost.insert(p0);
        assert!(stale_reads(&b.history, &causality, 3).is_empty());
    }

    #[test]
    fn a_quorum_read_after_a_quorum_write_must_see_it() {
        let mut b = Build::new();
        let p0 = b.put(0, Empty, 0, 10);
        b.get_found(0, &[p0], 20, 30);
        let causality = Causality::new(&b.history);
        assert!(stale_reads(&b.history, &causality, 3).is_empty());
        b.get_not_found(0, 40, 50);
        let causality = Causality::new(&b.history);
        let found = stale_reads(&b.history, &causality, 3);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].property, Property::StrictQuorum);
    }

    #[test]
    fn ops_of_one_instant_are_ordered_by_the_events_that_made_them() {
        // A single replica answers within the call: each op starts and ends at
        // t=10, and only the order of events tells them apart.
        let mut b = Build::new();
        let p0 = b.put(0, Empty, 10, 10);
        let missed = b.get_not_found(0, 10, 10);
        for (op, seqs) in [(p0, (1, 2)), (missed, (3, 4))] {
            b.history.ops[op].invoked_seq = seqs.0;
            b.history.ops[op].completed_seq = Some(seqs.1);
        }
        let causality = Causality::new(&b.history);
        let found = stale_reads(&b.history, &causality, 3);
        assert_eq!(found.len(), 1, "the put ended before the get began");
        // An overwrite that began before that get ended, and was still running,
        // may have replaced the put.
        let overwrite = b.put(0, Overwrite, 10, 10);
        b.history.ops[overwrite].invoked_seq = 3;
        b.history.ops[overwrite].completed_seq = Some(6);
        b.history.ops[missed].invoked_seq = 4;
        b.history.ops[missed].completed_seq = Some(5);
        let causality = Causality::new(&b.history);
        assert!(stale_reads(&b.history, &causality, 3).is_empty());
    }

    #[test]
    fn weak_quorums_and_concurrent_reads_are_allowed_to_miss() {
        let mut b = Build::new();
        b.put_with(0, Empty, Consistency::One, (0, 10));
        b.get_not_found(0, 20, 30);
        b.put(0, Empty, 100, 120);
        b.get_not_found(0, 110, 130);
        let causality = Causality::new(&b.history);
        assert!(stale_reads(&b.history, &causality, 3).is_empty());
    }
}
