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
//!
//! A write that reads first is a get and a write with that get's context at
//! one moment: acknowledged, it names the values its read saw, and both
//! sets follow from them as from a get's. Unacknowledged (or when no copy
//! read), nothing is known and it may have replaced what a write without
//! context may.

use std::collections::BTreeSet;

pub use self::bits::Bits;

use crate::history::{Action, ContextSource, History, Moment, OpId, Outcome, ReadValue};

#[derive(Debug)]
pub struct Causality {
    known: Vec<Bits>,
    possible: Vec<Bits>,
    /// For each put: when the first write that did not fail and may have
    /// replaced it was invoked.
    replaced_from: Vec<Option<Moment>>,
}

impl Causality {
    pub fn new(history: &History) -> Causality {
        let count = history.ops.len();
        let mut builder = Builder { history, known: vec![None; count], possible: vec![None; count] };
        for op in 0..count {
            builder.known(op);
            builder.possible(op, &mut BTreeSet::new());
        }
        let unwrap = |sets: Vec<Option<Bits>>| sets.into_iter().map(Option::unwrap_or_default).collect();
        let possible: Vec<Bits> = unwrap(builder.possible);
        let mut replaced_from: Vec<Option<Moment>> = vec![None; count];
        for write in history.ops.iter().filter(|op| op.is_write() && !op.definitely_failed()) {
            for put in possible[write.id].iter() {
                if put != write.id {
                    let earliest = replaced_from[put].get_or_insert(write.invoked());
                    *earliest = (*earliest).min(write.invoked());
                }
            }
        }
        Causality { known: unwrap(builder.known), possible, replaced_from }
    }

    /// Whether a write that did not fail, invoked before `before`, may
    /// have replaced `put`.
    pub fn replaced_before(&self, put: OpId, before: Moment) -> bool {
        self.replaced_from[put].is_some_and(|since| since < before)
    }

    /// Puts whose values `op` certainly replaced (for a get: what its
    /// context covers for certain).
    pub fn known(&self, op: OpId) -> &Bits {
        &self.known[op]
    }

    /// Puts whose values `op` may have replaced.
    pub fn possible(&self, op: OpId) -> &Bits {
        &self.possible[op]
    }
}

struct Builder<'a> {
    history: &'a History,
    known: Vec<Option<Bits>>,
    possible: Vec<Option<Bits>>,
}

impl Builder<'_> {
    fn known(&mut self, op: OpId) -> Bits {
        if let Some(known) = &self.known[op] {
            return known.clone();
        }
        let history = self.history;
        let mut known = Bits::default();
        match history.op(op).context() {
            // A get, or a write that read first: what the read returned.
            None | Some(ContextSource::ReadFirst) => {
                for value in put_values(history, op) {
                    known.insert(value);
                    known.union(&self.known(value));
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
    fn possible(&mut self, op: OpId, visiting: &mut BTreeSet<OpId>) -> Bits {
        if let Some(possible) = &self.possible[op] {
            return possible.clone();
        }
        if !visiting.insert(op) {
            return Bits::default();
        }
        let history = self.history;
        let this = history.op(op);
        let possible = match this.context() {
            None => self.seen_by_read(op, visiting),
            Some(ContextSource::ReadFirst) if matches!(this.outcome, Outcome::Replaced(_)) => {
                self.seen_by_read(op, visiting)
            }
            Some(ContextSource::ReadFirst | ContextSource::Overwrite) => self.held_before_end(op),
            Some(ContextSource::Read(read)) => self.possible(read, visiting),
            Some(ContextSource::Written(write)) => {
                let mut possible = self.possible(write, visiting);
                if matches!(history.op(write).action, Action::Put { .. }) {
                    possible.insert(write);
                }
                possible
            }
            Some(ContextSource::Empty) => Bits::default(),
        };
        visiting.remove(&op);
        self.possible[op] = Some(possible.clone());
        possible
    }
}

impl Builder<'_> {
    /// What the context of `op`'s read may cover: the values it returned,
    /// what they may have replaced, and what hidden tombstones (deletes that
    /// may have been stored when the read ended) may have replaced.
    fn seen_by_read(&mut self, op: OpId, visiting: &mut BTreeSet<OpId>) -> Bits {
        let history = self.history;
        let this = history.op(op);
        let mut possible = Bits::default();
        for value in put_values(history, op) {
            possible.insert(value);
            possible.union(&self.possible(value, visiting));
        }
        let deletes = history.ops_on(this.key).filter(|other| {
            matches!(other.action, Action::Delete { .. })
                && !other.definitely_failed()
                && other.invoked() < this.end()
        });
        let deletes: Vec<OpId> = deletes.map(|other| other.id).collect();
        for delete in deletes {
            possible.union(&self.possible(delete, visiting));
        }
        possible
    }

    /// What a coordinator may have held when `op` wrote: any put to its key
    /// invoked before `op` ended.
    fn held_before_end(&self, op: OpId) -> Bits {
        let this = self.history.op(op);
        let mut possible = Bits::default();
        let earlier = self.history.ops_on(this.key).filter(|other| {
            matches!(other.action, Action::Put { .. }) && other.id != op && other.invoked() < this.end()
        });
        for other in earlier {
            possible.insert(other.id);
        }
        possible
    }
}

/// The puts whose values a get (or a write's read) returned.
fn put_values(history: &History, op: OpId) -> Vec<OpId> {
    let values = history.op(op).read_values().iter();
    values
        .filter_map(|value| match value {
            ReadValue::Put(put) if *put < history.ops.len() => Some(*put),
            _ => None,
        })
        .collect()
}

mod bits {
    use crate::history::OpId;

    /// A set of op ids as a bit vector: histories are small and dense, and
    /// the causal pasts are unions of each other.
    #[derive(Clone, Debug, Default, PartialEq, Eq)]
    pub struct Bits(Vec<u64>);

    impl Bits {
        pub fn insert(&mut self, op: OpId) {
            let word = op / 64;
            if self.0.len() <= word {
                self.0.resize(word + 1, 0);
            }
            self.0[word] |= 1 << (op % 64);
        }

        pub fn contains(&self, op: &OpId) -> bool {
            self.0.get(op / 64).is_some_and(|word| word & (1 << (op % 64)) != 0)
        }

        pub fn union(&mut self, other: &Bits) {
            if self.0.len() < other.0.len() {
                self.0.resize(other.0.len(), 0);
            }
            for (mine, theirs) in self.0.iter_mut().zip(&other.0) {
                *mine |= theirs;
            }
        }

        pub fn is_empty(&self) -> bool {
            self.0.iter().all(|word| *word == 0)
        }

        pub fn iter(&self) -> impl Iterator<Item = OpId> + '_ {
            self.0.iter().enumerate().flat_map(|(index, &word)| {
                (0..64).filter(move |bit| word & (1 << bit) != 0).map(move |bit| index * 64 + bit)
            })
        }
    }
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
        assert_eq!(causality.known(p4).iter().collect::<Vec<_>>(), [p0, p2]);
        assert_eq!(causality.known(p5).iter().collect::<Vec<_>>(), [p0, p2, p4]);
        assert!(causality.known(p0).is_empty());
    }

    #[test]
    fn a_write_that_read_first_is_a_read_and_a_write_at_one_moment() {
        let mut b = Build::new();
        let p0 = b.put(0, Empty, 0, 10);
        let r1 = b.get_found(0, &[p0], 20, 30);
        let p2 = b.put(0, Read(r1), 40, 50);
        let p3 = b.put(0, Empty, 45, 55);
        // Its read saw p2 alone: p3 was stored later, or elsewhere.
        let d4 = b.delete_read_first(0, &[p2], 60, 70);
        let p5 = b.put(0, Written(d4), 80, 90);
        let causality = super::Causality::new(&b.history);
        assert_eq!(causality.known(d4).iter().collect::<Vec<_>>(), [p0, p2]);
        assert_eq!(causality.possible(d4).iter().collect::<Vec<_>>(), [p0, p2], "not p3");
        assert_eq!(causality.known(p5).iter().collect::<Vec<_>>(), [p0, p2], "a tombstone replaces no value");
        // Unanswered, it may have read anything stored before it ended.
        b.set_outcome(d4, crate::history::Outcome::Indeterminate("lost".into()));
        let causality = super::Causality::new(&b.history);
        assert!(causality.known(d4).is_empty());
        assert_eq!(causality.possible(d4).iter().collect::<Vec<_>>(), [p0, p2, p3, p5]);
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
        assert_eq!(causality.possible(d2).iter().collect::<Vec<_>>(), [p0, p1]);
        assert_eq!(causality.possible(p4).iter().collect::<Vec<_>>(), [p0, p1]);
        assert!(causality.known(p4).is_empty());
    }
}
