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
            let before = put.completed_ns.is_some_and(|done| done < get.invoked_ns);
            if !(put.acknowledged() && before && overlaps) {
                continue;
            }
            let seen = get.read_values().iter().any(|value| match value {
                ReadValue::Put(value) => *value == put.id || causality.possible(*value).contains(&put.id),
                ReadValue::Garbage(_) => false,
            });
            let replaced = causality.replaced_before(put.id, get.end_ns());
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
