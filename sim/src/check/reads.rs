//! Properties of every single read: 1 (no garbage) and 2 (siblings form an
//! antichain).

use super::{Causality, Property, Violation};
use crate::history::{Action, History, ReadValue};

/// Property 1: every value read was written to that key by a put that did
/// not definitely fail, and was invoked before the read ended.
pub fn garbage(history: &History) -> Vec<Violation> {
    let mut violations = Vec::new();
    for read in &history.ops {
        for value in read.read_values() {
            let problem = match value {
                ReadValue::Garbage(text) => {
                    Some((format!("bytes {text:?} are no value written to k{}", read.key), None))
                }
                ReadValue::Put(put) => match history.ops.get(*put) {
                    None => Some((format!("value of op {put}, which does not exist"), None)),
                    Some(op) if op.key != read.key || !matches!(op.action, Action::Put { .. }) => {
                        Some((format!("value of op {put}, which is no put to k{}", read.key), Some(*put)))
                    }
                    Some(op) if op.definitely_failed() => Some((
                        format!("value of put {put}, which failed and should have written nothing"),
                        Some(*put),
                    )),
                    Some(op) if op.invoked() > read.end() => {
                        Some((format!("value of put {put}, invoked after the read ended"), Some(*put)))
                    }
                    Some(_) => None,
                },
            };
            if let Some((message, put)) = problem {
                let ops = put.into_iter().chain([read.id]).collect();
                violations.push(Violation::new(Property::GarbageRead, message, ops));
            }
        }
    }
    violations
}

/// Property 2: no value a read returns replaced another it returns, and no
/// value comes back twice.
pub fn antichain(history: &History, causality: &Causality) -> Vec<Violation> {
    let mut violations = Vec::new();
    for read in &history.ops {
        let puts: Vec<usize> = read
            .read_values()
            .iter()
            .filter_map(|value| match value {
                ReadValue::Put(put) if *put < history.ops.len() => Some(*put),
                _ => None,
            })
            .collect();
        for (index, &later) in puts.iter().enumerate() {
            if puts[..index].contains(&later) {
                let message = format!("value of put {later} returned twice");
                violations.push(Violation::new(Property::Antichain, message, vec![later, read.id]));
            }
            for &earlier in &puts {
                if earlier != later && causality.known(later).contains(&earlier) {
                    let message =
                        format!("siblings {earlier} and {later}, but put {later} replaced {earlier}");
                    violations.push(Violation::new(
                        Property::Antichain,
                        message,
                        vec![earlier, later, read.id],
                    ));
                }
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
    use crate::history::Outcome;

    #[test]
    fn garbage_rejects_unknown_failed_foreign_and_future_values() {
        let mut b = Build::new();
        let p0 = b.put(0, Empty, 0, 10);
        let p1 = b.put(1, Empty, 0, 10);
        let failed = b.put(0, Empty, 0, 10);
        b.fail(failed);
        let ok = b.get_found(0, &[p0], 20, 30);
        assert!(garbage(&b.history).is_empty(), "{:?}", garbage(&b.history));
        b.get_found(0, &[p1], 20, 30);
        b.get_found(0, &[failed], 20, 30);
        let late = b.put(0, Empty, 100, 110);
        b.get_found(0, &[late], 20, 30);
        let read = b.get_found(0, &[], 20, 30);
        b.set_outcome(read, Outcome::Found(vec![ReadValue::Garbage("junk".into())]));
        let found = garbage(&b.history);
        assert_eq!(found.len(), 4, "{found:?}");
        assert!(found.iter().all(|v| v.property == Property::GarbageRead && !v.ops.contains(&ok)));
    }

    #[test]
    fn what_a_write_read_first_is_checked_as_a_read() {
        let mut b = Build::new();
        let p0 = b.put(0, Empty, 0, 10);
        let failed = b.put(0, Empty, 0, 10);
        b.fail(failed);
        let r2 = b.get_found(0, &[p0], 20, 30);
        let p3 = b.put(0, Read(r2), 40, 50);
        b.delete_read_first(0, &[p3], 60, 70);
        let causality = Causality::new(&b.history);
        assert!(garbage(&b.history).is_empty() && antichain(&b.history, &causality).is_empty());
        let d5 = b.delete_read_first(0, &[failed, p0, p3], 60, 70);
        let causality = Causality::new(&b.history);
        assert_eq!(garbage(&b.history)[0].ops, vec![failed, d5]);
        assert_eq!(antichain(&b.history, &causality)[0].ops, vec![p0, p3, d5]);
    }

    #[test]
    fn antichain_rejects_a_value_beside_its_replacement() {
        let mut b = Build::new();
        let p0 = b.put(0, Empty, 0, 10);
        let p1 = b.put(0, Empty, 0, 10);
        let r2 = b.get_found(0, &[p0, p1], 20, 30);
        let p3 = b.put(0, Read(r2), 40, 50);
        let p4 = b.put(0, Empty, 40, 50);
        b.get_found(0, &[p3, p4], 60, 70);
        let causality = Causality::new(&b.history);
        assert!(antichain(&b.history, &causality).is_empty());
        b.get_found(0, &[p0, p3], 60, 70);
        b.get_found(0, &[p4, p4], 60, 70);
        let causality = Causality::new(&b.history);
        let found = antichain(&b.history, &causality);
        assert_eq!(found.len(), 2, "{found:?}");
    }
}
