//! What each write had seen, derived from the history alone.
//!
//! `known(w)`: values the write certainly replaced — the values its context
//! came from and, transitively, what those replaced. Used to catch values
//! that come back after being replaced.
//!
//! `possible(w)`: every value the write may have replaced. A context from a
//! read covers the values returned, what they replaced, and whatever hidden
//! tombstones (deletes in flight before the read ended) replaced. A write
//! without context replaces what its coordinator held, which can be any put
//! invoked before the write ended. Used to excuse a value's absence.

use std::collections::BTreeSet;

use crate::history::{Action, ContextSource, History, OpId, ReadValue};

#[derive(Debug)]
pub struct Causality {
    known: Vec<BTreeSet<OpId>>,
    possible: Vec<BTreeSet<OpId>>,
}

impl Causality {
    pub fn new(history: &History) -> Causality {
        let count = history.ops.len();
        let mut builder = Builder { history, known: vec![None; count], possible: vec![None; count] };
        for op in 0..count {
            builder.known(op);
            builder.possible(op, &mut BTreeSet::new());
        }
        let unwrap =
            |sets: Vec<Option<BTreeSet<OpId>>>| sets.into_iter().map(Option::unwrap_or_default).collect();
        Causality { known: unwrap(builder.known), possible: unwrap(builder.possible) }
    }

    /// Puts whose values `op` certainly replaced (for a get: what its
    /// context covers for certain).
    pub fn known(&self, op: OpId) -> &BTreeSet<OpId> {
        &self.known[op]
    }

    /// Puts whose values `op` may have replaced.
    pub fn possible(&self, op: OpId) -> &BTreeSet<OpId> {
        &self.possible[op]
    }
}

struct Builder<'a> {
    history: &'a History,
    known: Vec<Option<BTreeSet<OpId>>>,
    possible: Vec<Option<BTreeSet<OpId>>>,
}

impl Builder<'_> {
    fn known(&mut self, op: OpId) -> BTreeSet<OpId> {
        if let Some(known) = &self.known[op] {
            return known.clone();
        }
        let history = self.history;
        let mut known = BTreeSet::new();
        match history.op(op).context() {
            None => {
                for value in put_values(history, op) {
                    known.insert(value);
                    known.extend(self.known(value));
                }
            }
            Some(ContextSource::Read(read)) => known = self.known(read),
            Some(ContextSource::Written(write)) => {
                known = self.known(write);
                if matches!(history.op(write).action, Action::Put { .. }) {
                    known.insert(write);
                }
            }
            Some(ContextSource::Overwrite | ContextSource::Empty) => {}
        }
        self.known[op] = Some(known.clone());
        known
    }

    /// `visiting` guards against cycles, which a consistent history cannot
    /// have but a corrupt one might.
    fn possible(&mut self, op: OpId, visiting: &mut BTreeSet<OpId>) -> BTreeSet<OpId> {
        if let Some(possible) = &self.possible[op] {
            return possible.clone();
        }
        if !visiting.insert(op) {
            return BTreeSet::new();
        }
        let history = self.history;
        let this = history.op(op);
        let mut possible = BTreeSet::new();
        match this.context() {
            None => {
                for value in put_values(history, op) {
                    possible.insert(value);
                    possible.extend(self.possible(value, visiting));
                }
                // Hidden tombstones: deletes that may have been stored when
                // the read ended bring what they replaced into its context.
                let deletes = history.ops_on(this.key).filter(|other| {
                    matches!(other.action, Action::Delete { .. })
                        && !other.definitely_failed()
                        && other.invoked_ns < this.end_ns()
                });
                let deletes: Vec<OpId> = deletes.map(|other| other.id).collect();
                for delete in deletes {
                    possible.extend(self.possible(delete, visiting));
                }
            }
            Some(ContextSource::Read(read)) => possible = self.possible(read, visiting),
            Some(ContextSource::Written(write)) => {
                possible = self.possible(write, visiting);
                if matches!(history.op(write).action, Action::Put { .. }) {
                    possible.insert(write);
                }
            }
            Some(ContextSource::Overwrite) => {
                let earlier = history.ops_on(this.key).filter(|other| {
                    matches!(other.action, Action::Put { .. })
                        && other.id != op
                        && other.invoked_ns < this.end_ns()
                });
                possible.extend(earlier.map(|other| other.id));
            }
            Some(ContextSource::Empty) => {}
        }
        visiting.remove(&op);
        self.possible[op] = Some(possible.clone());
        possible
    }
}

/// The puts whose values a get returned.
fn put_values(history: &History, op: OpId) -> Vec<OpId> {
    let values = history.op(op).read_values().iter();
    values
        .filter_map(|value| match value {
            ReadValue::Put(put) if *put < history.ops.len() => Some(*put),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::build::Build;
    use crate::history::ContextSource::*;

    #[test]
    fn known_follows_read_contexts_transitively() {
        let mut b = Build::new();
        let p0 = b.put(0, Empty, 0, 10);
        let r1 = b.get_found(0, &[p0], 20, 30);
        let p2 = b.put(0, Read(r1), 40, 50);
        let r3 = b.get_found(0, &[p2], 60, 70);
        let p4 = b.put(0, Read(r3), 80, 90);
        let p5 = b.put(0, Written(p4), 100, 110);
        let causality = super::Causality::new(&b.history);
        assert_eq!(causality.known(p4).iter().copied().collect::<Vec<_>>(), [p0, p2]);
        assert_eq!(causality.known(p5).iter().copied().collect::<Vec<_>>(), [p0, p2, p4]);
        assert!(causality.known(p0).is_empty());
    }

    #[test]
    fn possible_covers_overwrites_and_hidden_tombstones() {
        let mut b = Build::new();
        let p0 = b.put(0, Empty, 0, 10);
        let p1 = b.put(0, Empty, 5, 15);
        let d2 = b.delete(0, Overwrite, 20, 30);
        let r3 = b.get_not_found(0, 40, 50);
        let p4 = b.put(0, Read(r3), 60, 70);
        let causality = super::Causality::new(&b.history);
        assert_eq!(causality.possible(d2).iter().copied().collect::<Vec<_>>(), [p0, p1]);
        assert_eq!(causality.possible(p4).iter().copied().collect::<Vec<_>>(), [p0, p1]);
        assert!(causality.known(p4).is_empty());
    }
}
