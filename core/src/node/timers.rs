//! The node's timer table: every deadline it waits for, in one ordered set.

use std::collections::BTreeSet;

use crate::message::Tag;
use crate::time::Instant;

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub enum Timer {
    Heartbeat,
    /// Start a sync of everything written so far. Scheduled for "now", so a
    /// driver first hands the node every input that is already waiting:
    /// they all share the sync (group commit).
    Sync,
    /// Under periodic syncs, hand the buffered log to the kernel. Also
    /// scheduled for "now": one write per burst of inputs, after which a
    /// crash of the process (not of the machine) loses none of the burst.
    WriteOut,
    /// The deadline of the coordinated request or forward with this tag.
    Request(Tag),
    /// Anti-entropy: the next step of a tree's build, an exchange's
    /// deadline or second comparison, or the start of the next exchange.
    AntiEntropy,
}

#[derive(Debug, Default)]
pub struct Timers {
    set: BTreeSet<(Instant, Timer)>,
}

impl Timers {
    pub fn schedule(&mut self, at: Instant, timer: Timer) {
        self.set.insert((at, timer));
    }

    pub fn cancel(&mut self, at: Instant, timer: Timer) {
        self.set.remove(&(at, timer));
    }

    pub fn next(&self) -> Option<Instant> {
        self.set.first().map(|(at, _)| *at)
    }

    /// Removes and returns the earliest timer due at `now`, if any.
    pub fn pop_due(&mut self, now: Instant) -> Option<Timer> {
        let &(at, _) = self.set.first()?;
        if at > now {
            return None;
        }
        self.set.pop_first().map(|(_, timer)| timer)
    }

    pub fn contains(&self, at: Instant, timer: Timer) -> bool {
        self.set.contains(&(at, timer))
    }

    pub fn len(&self) -> usize {
        self.set.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_timers_come_out_in_order() {
        let mut timers = Timers::default();
        let tag = Tag { boot: 1, seq: 1 };
        timers.schedule(Instant::from_nanos(20), Timer::Request(tag));
        timers.schedule(Instant::from_nanos(10), Timer::Heartbeat);
        assert_eq!(timers.next(), Some(Instant::from_nanos(10)));
        assert_eq!(timers.pop_due(Instant::from_nanos(5)), None);
        assert_eq!(timers.pop_due(Instant::from_nanos(25)), Some(Timer::Heartbeat));
        timers.cancel(Instant::from_nanos(20), Timer::Request(tag));
        assert_eq!(timers.pop_due(Instant::from_nanos(25)), None);
        assert_eq!(timers.len(), 0);
    }
}
