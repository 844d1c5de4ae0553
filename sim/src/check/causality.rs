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
        let mut known = closure(count, |op| known_parts(history, op));
        // Only a corrupt history (a value read before it was written) could
        // make a write replace itself; such reads are garbage (property 1).
        for (op, known) in known.iter_mut().enumerate() {
            known.remove(op);
        }
        let possible = closure(count, |op| possible_parts(history, op));
        let mut replaced_from: Vec<Option<Moment>> = vec![None; count];
        for write in history.ops.iter().filter(|op| op.is_write() && !op.definitely_failed()) {
            for put in possible[write.id].iter() {
                if put != write.id {
                    let earliest = replaced_from[put].get_or_insert(write.invoked());
                    *earliest = (*earliest).min(write.invoked());
                }
            }
        }
        Causality { known, possible, replaced_from }
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

/// The puts an op's set holds of its own, and the ops whose sets it holds
/// as well.
type Parts = (Bits, Vec<OpId>);

/// Each op's set: its own puts and, transitively, the sets of the ops it
/// takes in. The least solution, found by repeating unions until nothing
/// grows, so the sets are the same whatever order ops are visited in, and
/// a cycle (a read that returned a write's value while that write's own
/// read was still open) is followed all the way round instead of cut.
fn closure(count: usize, parts: impl Fn(OpId) -> Parts) -> Vec<Bits> {
    let (mut sets, takes): (Vec<Bits>, Vec<Vec<OpId>>) = (0..count).map(parts).unzip();
    let mut grew = true;
    while grew {
        grew = false;
        for op in 0..count {
            for &other in &takes[op] {
                if other != op {
                    let taken = sets[other].clone();
                    grew |= sets[op].union(&taken);
                }
            }
        }
    }
    sets
}

/// What `op` certainly replaced: the values its read returned, or its
/// context's read or write saw, and what those certainly replaced.
fn known_parts(history: &History, op: OpId) -> Parts {
    let mut own = Bits::default();
    let mut takes = Vec::new();
    match history.op(op).context() {
        // A get, or a write that read first: what the read returned.
        None | Some(ContextSource::ReadFirst) => {
            for value in put_values(history, op) {
                own.insert(value);
                takes.push(value);
            }
        }
        Some(ContextSource::Read(read)) => takes.push(read),
        Some(ContextSource::Written(write)) => {
            takes.push(write);
            if matches!(history.op(write).action, Action::Put { .. }) {
                own.insert(write);
            }
        }
        Some(ContextSource::Overwrite | ContextSource::Empty) => {}
    }
    (own, takes)
}

/// What `op` may have replaced.
fn possible_parts(history: &History, op: OpId) -> Parts {
    let this = history.op(op);
    match this.context() {
        None => seen_by_read(history, op),
        Some(ContextSource::ReadFirst) if matches!(this.outcome, Outcome::Replaced(_)) => {
            seen_by_read(history, op)
        }
        Some(ContextSource::ReadFirst | ContextSource::Overwrite) => {
            (held_before_end(history, op), Vec::new())
        }
        Some(ContextSource::Read(read)) => (Bits::default(), vec![read]),
        Some(ContextSource::Written(write)) => {
            let mut own = Bits::default();
            if matches!(history.op(write).action, Action::Put { .. }) {
                own.insert(write);
            }
            (own, vec![write])
        }
        Some(ContextSource::Empty) => (Bits::default(), Vec::new()),
    }
}

/// What the context of `op`'s read may cover: the values it returned, what
/// they may have replaced, and what hidden tombstones (deletes that may have
/// been stored when the read ended) may have replaced.
fn seen_by_read(history: &History, op: OpId) -> Parts {
    let this = history.op(op);
    let mut own = Bits::default();
    let mut takes = put_values(history, op);
    for &value in &takes {
        own.insert(value);
    }
    let deletes = history.ops_on(this.key).filter(|other| {
        matches!(other.action, Action::Delete { .. })
            && !other.definitely_failed()
            && other.invoked() < this.end()
    });
    takes.extend(deletes.map(|other| other.id));
    (own, takes)
}

/// What a coordinator may have held when `op` wrote: any put to its key
/// invoked before `op` ended.
fn held_before_end(history: &History, op: OpId) -> Bits {
    let this = history.op(op);
    let mut held = Bits::default();
    let earlier = history.ops_on(this.key).filter(|other| {
        matches!(other.action, Action::Put { .. }) && other.id != op && other.invoked() < this.end()
    });
    for other in earlier {
        held.insert(other.id);
    }
    held
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

        /// Adds every op of `other`; returns whether any was new.
        pub fn union(&mut self, other: &Bits) -> bool {
            if self.0.len() < other.0.len() {
                self.0.resize(other.0.len(), 0);
            }
            let mut grew = false;
            for (mine, theirs) in self.0.iter_mut().zip(&other.0) {
                grew |= *theirs & !*mine != 0;
                *mine |= theirs;
            }
            grew
        }

        pub fn remove(&mut self, op: OpId) {
            if let Some(word) = self.0.get_mut(op / 64) {
                *word &= !(1 << (op % 64));
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
    use keel_core::client::Consistency;

    use super::super::build::Build;
    use super::*;
    use crate::history::ContextSource::*;
    use crate::history::Phase;

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

    /// Seed 4136 of the first runs with writes that read first: a get
    /// returned a write's value while that write's read was open, a put
    /// replaced it with the get's context, and a delete made from that put's
    /// reply counts as a hidden tombstone of the first write's read: a
    /// cycle. Cut where it was entered, it left the put replacing nothing,
    /// and the checker reported the write lost.
    #[test]
    fn a_cycle_through_a_write_that_read_first_is_followed_round() {
        let mut b = Build::new();
        let p0 = b.put(0, Empty, 0, 10);
        let g1 = b.get_found(0, &[2], 25, 60);
        let w2 = b.op(0, read_first_put(), Phase::Safety, (30, 100), replaced(&[p0]));
        let p3 = b.put(0, Read(g1), 65, 70);
        let d4 = b.delete(0, Written(p3), 75, 80);
        assert_eq!(w2, 2);
        let causality = super::Causality::new(&b.history);
        assert!(causality.possible(p3).contains(&w2), "p3 replaced what g1 returned");
        assert!(causality.possible(d4).contains(&w2));
        assert!(causality.known(p3).contains(&w2) && !causality.known(w2).contains(&w2));
        assert!(causality.replaced_before(w2, crate::history::NEVER));
    }

    fn read_first_put() -> Action {
        Action::Put { write: Consistency::Quorum, context: ReadFirst, value_bytes: 0 }
    }

    fn replaced(values: &[usize]) -> Outcome {
        Outcome::Replaced(values.iter().map(|&value| ReadValue::Put(value)).collect())
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
