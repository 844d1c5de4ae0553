//! One running suspicion: Lifeguard's timeout that starts long and shrinks
//! as other members independently confirm it.

use core::time::Duration;
use std::collections::BTreeSet;

use super::config::suspicion_timeout;
use crate::NodeId;
use crate::time::Instant;

#[derive(Debug)]
pub(super) struct Suspicion {
    /// The incarnation suspected; a refutation names a higher one.
    pub(super) incarnation: u64,
    started: Instant,
    /// Distinct accusers heard, the first included; at most `needed + 1`.
    accusers: BTreeSet<NodeId>,
    needed: u32,
    min: Duration,
    max: Duration,
    pub(super) deadline: Instant,
}

impl Suspicion {
    /// A suspicion raised by `accuser` at `now`. It lasts `max` until
    /// `needed` other members confirm it, then `min`.
    pub(super) fn new(
        accuser: NodeId,
        incarnation: u64,
        needed: u32,
        (min, max): (Duration, Duration),
        now: Instant,
    ) -> Suspicion {
        assert!(min <= max, "suspicion bounds {min:?} > {max:?}");
        let deadline = now + suspicion_timeout(0, needed, min, max);
        Suspicion {
            incarnation,
            started: now,
            accusers: BTreeSet::from([accuser]),
            needed,
            min,
            max,
            deadline,
        }
    }

    /// Counts `accuser`'s suspicion if it is a new, independent one that
    /// still shortens the timeout; then the deadline may have moved.
    pub(super) fn confirm(&mut self, accuser: NodeId) -> bool {
        if self.confirmations() >= self.needed || !self.accusers.insert(accuser) {
            return false;
        }
        let timeout = suspicion_timeout(self.confirmations(), self.needed, self.min, self.max);
        let deadline = self.started + timeout;
        assert!(deadline <= self.deadline, "a confirmation moved the deadline later");
        self.deadline = deadline;
        true
    }

    /// Accusers beyond the first.
    pub(super) fn confirmations(&self) -> u32 {
        u32::try_from(self.accusers.len() - 1).unwrap_or(u32::MAX)
    }

    /// Moves the suspicion later by `by`, as if this node's clock had stood
    /// still that long, and to `not_before` at the earliest.
    pub(super) fn postpone(&mut self, by: Duration, not_before: Instant) {
        let deadline = (self.deadline + by).max(not_before);
        self.started = self.started + deadline.saturating_since(self.deadline);
        self.deadline = deadline;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distinct_confirmations_shorten_the_deadline_down_to_the_minimum() {
        let bounds = (Duration::from_secs(4), Duration::from_secs(24));
        let start = Instant::from_nanos(1_000);
        let mut suspicion = Suspicion::new(NodeId(1), 3, 2, bounds, start);
        assert_eq!(suspicion.deadline, start + Duration::from_secs(24));
        assert!(!suspicion.confirm(NodeId(1)), "the first accuser does not confirm itself");
        assert!(suspicion.confirm(NodeId(2)));
        let after_one = suspicion.deadline;
        assert!(after_one < start + Duration::from_secs(24) && after_one > start + Duration::from_secs(4));
        assert!(!suspicion.confirm(NodeId(2)), "the same accuser counts once");
        assert!(suspicion.confirm(NodeId(3)));
        assert_eq!(suspicion.deadline, start + Duration::from_secs(4));
        assert!(!suspicion.confirm(NodeId(4)), "no use past the needed confirmations");
        assert_eq!(suspicion.confirmations(), 2);
    }
}
