//! Consistency checkers over what clients saw and what replicas hold.
//!
//! They know nothing of how a node works: they read the history (each put
//! writes a value naming its op; each write says where its context came
//! from) and derive causality from that alone. Every checker has a test with
//! a hand-made bad history that it must reject.

mod availability;
mod causality;
mod final_state;
pub(crate) mod model;
pub(crate) mod placement;
mod reads;
mod strict;

use core::fmt;

pub use self::causality::Causality;
use crate::history::{History, OpId};

/// The properties of DESIGN.md, by number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Property {
    /// 1: a get returned a value no put wrote to that key.
    GarbageRead,
    /// 2: siblings where one dominates another, or a dot with two values.
    Antichain,
    /// 3: an acknowledged put vanished without a later write that saw it.
    LostWrite,
    /// 4: a value replaced by an acknowledged write came back.
    Resurrection,
    /// 5: replicas did not agree within the liveness bound.
    Convergence,
    /// 6: a node's storage after a crash was not a prefix of what it synced.
    LocalStorage,
    /// 7: with R + W > N, a get missed a put acknowledged before it began.
    StrictQuorum,
    /// 8: a request failed although enough replicas were reachable.
    Availability,
    /// A node's own invariant check failed: a bug whatever the history.
    Invariant,
}

impl Property {
    pub fn name(self) -> &'static str {
        match self {
            Property::GarbageRead => "garbage-read",
            Property::Antichain => "antichain",
            Property::LostWrite => "lost-write",
            Property::Resurrection => "resurrection",
            Property::Convergence => "convergence",
            Property::LocalStorage => "local-storage",
            Property::StrictQuorum => "strict-quorum",
            Property::Availability => "availability",
            Property::Invariant => "invariant",
        }
    }
}

impl fmt::Display for Property {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    pub property: Property,
    pub message: String,
    /// The operations that show it, to print from the history.
    pub ops: Vec<OpId>,
}

impl Violation {
    pub fn new(property: Property, message: impl Into<String>, ops: Vec<OpId>) -> Violation {
        Violation { property, message: message.into(), ops }
    }
}

/// What the history checkers need besides the history.
#[derive(Clone, Copy, Debug)]
pub struct Setting {
    /// N, the replica count.
    pub replicas: u8,
    /// Whether the workload promised R + W > N on every request.
    pub strict: bool,
}

/// Runs every history checker; returns all violations found, in property order.
pub fn check(history: &History, setting: Setting) -> Vec<Violation> {
    let causality = Causality::new(history);
    let mut violations = Vec::new();
    violations.extend(reads::garbage(history));
    violations.extend(reads::antichain(history, &causality));
    violations.extend(final_state::lost_writes(history, &causality));
    violations.extend(final_state::resurrections(history, &causality));
    if setting.strict {
        violations.extend(strict::stale_reads(history, &causality, setting.replicas));
    }
    violations.extend(availability::failures(history));
    violations.sort_by_key(|violation| violation.property);
    violations
}

#[cfg(test)]
pub(crate) mod build;
