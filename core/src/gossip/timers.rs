//! Gossip's timer table, and what a call far past its deadline means.

use core::time::Duration;

use super::{Event, Gossip, Output};
use crate::NodeId;
use crate::time::Instant;

/// What a timer is for.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub(super) enum Timer {
    /// The direct probe's ack is late: ask helpers.
    ProbeTimeout,
    /// The protocol period ends: judge the probe, start the next.
    ProbeEnd,
    PushPull,
    /// The suspicion of this member times out.
    Suspicion(NodeId),
    /// A probe run for another node gets no ack: nack it.
    Relay(u32),
}

impl Gossip {
    /// Notes the time of a call, and takes a call far past the earliest
    /// deadline as a pause of this node.
    pub(super) fn observe(&mut self, now: Instant) {
        assert!(now >= self.last_now, "time went back from {:?} to {now:?}", self.last_now);
        if let Some(&(due, _)) = self.timers.first() {
            let late_by = now.saturating_since(due);
            if late_by > self.config.pause_threshold {
                self.resume(now, late_by);
            }
        }
        self.last_now = now;
    }

    /// After a pause the silence was this node's, not its peers': the
    /// probe in flight and the probes run for others are dropped without a
    /// verdict, suspicions are postponed by the pause and then by at least
    /// one protocol period (so that refutations waiting in the inbox are
    /// read before they expire), the next probe waits a period, and the
    /// health score rises so this node is slower to accuse anyone.
    fn resume(&mut self, now: Instant, late_by: Duration) {
        self.stats.pauses_detected += 1;
        self.outputs.push_back(Output::Event(Event::PauseDetected { late_by }));
        self.health_up(1);
        let grace = now + self.config.probe_interval;
        let timers = std::mem::take(&mut self.timers);
        for (at, timer) in timers {
            match timer {
                Timer::ProbeTimeout | Timer::ProbeEnd => {}
                Timer::Relay(seq) => {
                    self.relays.remove(&seq);
                }
                Timer::PushPull => self.schedule(at + late_by, timer),
                Timer::Suspicion(id) => {
                    let suspicion =
                        self.suspicions.get_mut(&id).expect("a suspicion timer has its suspicion");
                    suspicion.postpone(late_by, grace);
                    let deadline = suspicion.deadline;
                    self.schedule(deadline, timer);
                }
            }
        }
        self.probe = None;
        if !self.left {
            let period = self.scaled(self.config.probe_interval);
            self.schedule(now + period, Timer::ProbeEnd);
        }
        assert!(self.relays.is_empty());
    }

    pub(super) fn schedule(&mut self, at: Instant, timer: Timer) {
        let added = self.timers.insert((at, timer));
        assert!(added, "{timer:?} scheduled twice at {at:?}");
    }

    pub(super) fn cancel(&mut self, at: Instant, timer: Timer) {
        let removed = self.timers.remove(&(at, timer));
        assert!(removed, "{timer:?} was not scheduled at {at:?}");
    }

    pub(super) fn pop_due(&mut self, now: Instant) -> Option<Timer> {
        let &(at, _) = self.timers.first()?;
        if at > now {
            return None;
        }
        self.timers.pop_first().map(|(_, timer)| timer)
    }
}
