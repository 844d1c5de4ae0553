//! The checkers' own model of a replicated key, written from the definition
//! of dotted version vectors rather than from `keel_core::version`, so a bug
//! in the node's merge cannot hide itself in the check.
//!
//! A version is the set of dots it has seen and, among them, the siblings it
//! keeps (dot and a hash of the value). Joining two versions keeps a sibling
//! that both keep, or that one keeps and the other never saw; it sees what
//! either saw.

use std::collections::BTreeMap;

use keel_core::version::{Actor, Dot, Object, Value};

use crate::trace::Trace;

/// A set of dots, as disjoint counter intervals per actor.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Dots {
    runs: BTreeMap<Actor, Vec<(u64, u64)>>,
}

impl Dots {
    pub fn contains(&self, dot: &Dot) -> bool {
        self.runs
            .get(&dot.actor)
            .is_some_and(|runs| runs.iter().any(|&(low, high)| low <= dot.counter && dot.counter <= high))
    }

    pub fn add(&mut self, actor: Actor, low: u64, high: u64) {
        if low > high {
            return;
        }
        let runs = self.runs.entry(actor).or_default();
        runs.push((low, high));
        runs.sort_unstable();
        // Merged in place: the first `merged` runs are done.
        let mut merged: usize = 0;
        for index in 0..runs.len() {
            let (low, high) = runs[index];
            match merged.checked_sub(1).map(|last| &mut runs[last]) {
                Some(last) if low <= last.1.saturating_add(1) => last.1 = last.1.max(high),
                _ => {
                    runs[merged] = (low, high);
                    merged += 1;
                }
            }
        }
        runs.truncate(merged);
    }

    pub fn union(&mut self, other: &Dots) {
        for (actor, runs) in &other.runs {
            for &(low, high) in runs {
                self.add(*actor, low, high);
            }
        }
    }
}

/// What one replica holds of one key, in the model.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Version {
    pub seen: Dots,
    /// Sibling dots and the hash of each one's value.
    pub kept: BTreeMap<Dot, u64>,
}

impl Version {
    pub fn of(object: &Object) -> Version {
        let mut seen = Dots::default();
        for (actor, counters) in object.context().runs() {
            seen.add(actor, *counters.start(), *counters.end());
        }
        let kept =
            object.siblings().iter().map(|sibling| (sibling.dot, value_hash(&sibling.value))).collect();
        Version { seen, kept }
    }

    pub fn join(&self, other: &Version) -> Version {
        let mut kept = BTreeMap::new();
        for (dot, hash) in &self.kept {
            if other.kept.contains_key(dot) || !other.seen.contains(dot) {
                kept.insert(*dot, *hash);
            }
        }
        for (dot, hash) in &other.kept {
            if !self.seen.contains(dot) {
                kept.insert(*dot, *hash);
            }
        }
        let mut seen = self.seen.clone();
        seen.union(&other.seen);
        Version { seen, kept }
    }

    /// `self.join(other)`, in place.
    pub fn absorb(&mut self, other: &Version) {
        self.kept.retain(|dot, _| other.kept.contains_key(dot) || !other.seen.contains(dot));
        for (dot, hash) in &other.kept {
            if !self.seen.contains(dot) {
                self.kept.insert(*dot, *hash);
            }
        }
        self.seen.union(&other.seen);
    }

    /// Whether this version already holds everything `other` says: joining
    /// it changes nothing.
    pub fn includes(&self, other: &Version) -> bool {
        &self.join(other) == self
    }
}

pub fn value_hash(value: &Value) -> u64 {
    let mut trace = Trace::default();
    match value {
        Value::Live(bytes) => trace.record_bytes(bytes),
        Value::Tombstone => trace.record(&[u64::MAX]),
    }
    trace.finish()
}

#[cfg(test)]
mod tests {
    use keel_core::NodeId;
    use keel_core::version::CausalContext;

    use super::*;

    fn actor(node: u64) -> Actor {
        Actor { node: NodeId(node), incarnation: 1, epoch: 1 }
    }

    fn write(object: &mut Object, node: u64, seen: &CausalContext, value: &[u8]) -> Dot {
        object.write(actor(node), seen, Value::Live(value.to_vec()), 0).unwrap()
    }

    #[test]
    fn runs_merge_into_intervals() {
        let mut dots = Dots::default();
        dots.add(actor(1), 5, 5);
        dots.add(actor(1), 1, 3);
        dots.add(actor(1), 4, 4);
        assert_eq!(dots.runs[&actor(1)], vec![(1, 5)]);
        assert!(dots.contains(&Dot { actor: actor(1), counter: 5 }));
        assert!(!dots.contains(&Dot { actor: actor(1), counter: 6 }));
        assert!(!dots.contains(&Dot { actor: actor(2), counter: 1 }));
    }

    #[test]
    fn the_model_agrees_with_concurrent_and_replacing_writes() {
        let mut a = Object::new();
        write(&mut a, 1, &CausalContext::new(), b"x");
        let mut b = Object::new();
        write(&mut b, 2, &CausalContext::new(), b"y");
        let both = Version::of(&a).join(&Version::of(&b));
        assert_eq!(both.kept.len(), 2, "concurrent writes are both kept");
        // A write that saw both replaces both.
        let mut c = a.clone();
        c.merge(&b);
        let seen = c.context().clone();
        write(&mut c, 1, &seen, b"z");
        let after = both.join(&Version::of(&c));
        assert_eq!(after.kept.len(), 1);
        assert!(after.includes(&both), "what was replaced stays seen");
        assert!(!both.includes(&after));
    }

    #[test]
    fn absorbing_a_version_is_joining_it() {
        let (empty, x, y) = (CausalContext::new(), b"x".as_slice(), b"y".as_slice());
        let mut objects = vec![Object::new()];
        for (node, value) in [(1, x), (2, y), (1, y), (3, x)] {
            let mut concurrent = objects.last().cloned().unwrap_or_default();
            write(&mut concurrent, node, &empty, value);
            let mut replacing = concurrent.clone();
            let seen = replacing.context().clone();
            write(&mut replacing, node + 1, &seen, value);
            let mut merged = concurrent.clone();
            merged.merge(&objects[objects.len() / 2]);
            objects.extend([concurrent, replacing, merged]);
        }
        let versions: Vec<Version> = objects.iter().map(Version::of).collect();
        for a in &versions {
            for b in &versions {
                let mut absorbed = a.clone();
                absorbed.absorb(b);
                assert_eq!(absorbed, a.join(b));
            }
        }
    }

    #[test]
    fn runs_added_out_of_order_merge_in_place() {
        let mut dots = Dots::default();
        for (low, high) in [(10, 12), (1, 2), (20, 20), (4, 6), (3, 3), (13, 19), (30, 31), (8, 8)] {
            dots.add(actor(1), low, high);
        }
        assert_eq!(dots.runs[&actor(1)], vec![(1, 6), (8, 8), (10, 20), (30, 31)]);
        dots.add(actor(1), 7, 9);
        dots.add(actor(1), 25, 40);
        assert_eq!(dots.runs[&actor(1)], vec![(1, 20), (25, 40)]);
    }

    #[test]
    fn a_copy_missing_a_claimed_dot_does_not_include_it() {
        let mut claimed = Object::new();
        write(&mut claimed, 1, &CausalContext::new(), b"x");
        assert!(!Version::default().includes(&Version::of(&claimed)));
        assert!(Version::of(&claimed).includes(&Version::default()));
    }
}
