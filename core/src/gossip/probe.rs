//! Failure detection: one probe per protocol period, helpers when the
//! direct ping goes unanswered, and the probes this node runs for others.

use super::{Gossip, Message, Timer};
use crate::NodeId;
use crate::gossip::member::{Address, State};
use crate::time::Instant;

/// This node's probe in flight.
#[derive(Debug)]
pub(super) struct Probe {
    seq: u32,
    target: NodeId,
    /// When helpers are asked, while that timer is pending.
    timeout_at: Option<Instant>,
    acked: bool,
    /// Helpers asked to probe the target; each owes an ack or a nack.
    helpers: Vec<NodeId>,
    nacks: Vec<NodeId>,
}

impl Probe {
    pub(super) fn timers_pending(&self) -> usize {
        usize::from(self.timeout_at.is_some())
    }
}

/// A probe this node runs for `requester`, under the sequence number of
/// its own ping to `target`.
#[derive(Debug)]
pub(super) struct Relay {
    requester: NodeId,
    reply_to: Address,
    /// The requester's sequence number, to answer under.
    seq: u32,
    target: NodeId,
    deadline: Instant,
}

impl Gossip {
    pub(super) fn on_ping(&mut self, from: NodeId, seq: u32, target: NodeId, reply_to: Address) {
        if target != self.id {
            return;
        }
        let updates = self.piggyback(Some(from));
        self.send(Some(from), reply_to, Message::Ack { seq, updates });
    }

    pub(super) fn on_ping_req(
        &mut self,
        from: NodeId,
        seq: u32,
        target: NodeId,
        target_address: Address,
        reply_to: Address,
        now: Instant,
    ) {
        if target == self.id || target == from || self.relays.len() >= self.config.relays_max as usize {
            return;
        }
        let own_seq = self.next_seq();
        // The nack must reach the requester before its period ends: it asks
        // after `probe_timeout`, so waiting the whole timeout again would be
        // too late with the default timeout of half the interval.
        let deadline = now + self.config.probe_timeout * 4 / 5;
        let relay = Relay { requester: from, reply_to, seq, target, deadline };
        let replaced = self.relays.insert(own_seq, relay);
        assert!(replaced.is_none(), "sequence number {own_seq} reused");
        self.schedule(deadline, Timer::Relay(own_seq));
        self.stats.indirect_probes_relayed += 1;
        let updates = self.piggyback(Some(target));
        let reply_to = self.me().address.clone();
        self.send(Some(target), target_address, Message::Ping { seq: own_seq, target, reply_to, updates });
    }

    pub(super) fn on_ack(&mut self, from: NodeId, seq: u32) {
        if let Some(probe) = self.probe.as_mut().filter(|probe| probe.seq == seq) {
            // Only the target or a helper asked may answer.
            if probe.acked || (from != probe.target && !probe.helpers.contains(&from)) {
                return;
            }
            probe.acked = true;
            let timeout_at = probe.timeout_at.take();
            if let Some(at) = timeout_at {
                self.cancel(at, Timer::ProbeTimeout);
            }
            self.health_down();
            return;
        }
        if self.relays.get(&seq).is_some_and(|relay| relay.target == from) {
            let relay = self.relays.remove(&seq).expect("just found");
            self.cancel(relay.deadline, Timer::Relay(seq));
            let updates = self.piggyback(Some(relay.requester));
            self.send(Some(relay.requester), relay.reply_to, Message::Ack { seq: relay.seq, updates });
        }
    }

    pub(super) fn on_nack(&mut self, from: NodeId, seq: u32) {
        let Some(probe) = self.probe.as_mut().filter(|probe| probe.seq == seq) else {
            return;
        };
        if probe.helpers.contains(&from) && !probe.nacks.contains(&from) {
            probe.nacks.push(from);
        }
    }

    /// The direct ping went unanswered: ask helpers to try.
    pub(super) fn on_probe_timeout(&mut self) {
        let probe = self.probe.as_mut().expect("the probe timeout belongs to a probe");
        assert!(!probe.acked && probe.timeout_at.is_some(), "an answered probe's timeout fired");
        probe.timeout_at = None;
        let (seq, target) = (probe.seq, probe.target);
        let Some(target_address) = self.members.get(&target).map(|member| member.address.clone()) else {
            return;
        };
        let count = self.config.indirect_probes as usize;
        let helpers =
            self.random_members(count, |member| member.state == State::Alive && member.id != target);
        let reply_to = self.me().address.clone();
        for &helper in &helpers {
            let address = self.members[&helper].address.clone();
            let updates = self.piggyback(Some(helper));
            let message = Message::PingReq {
                seq,
                target,
                target_address: target_address.clone(),
                reply_to: reply_to.clone(),
                updates,
            };
            self.send(Some(helper), address, message);
        }
        self.stats.indirect_probes_sent += helpers.len() as u64;
        self.probe.as_mut().expect("still in flight").helpers = helpers;
    }

    /// The period is over: judge the probe, then start the next.
    pub(super) fn on_probe_end(&mut self, now: Instant) {
        if let Some(probe) = self.probe.take() {
            if let Some(at) = probe.timeout_at {
                self.cancel(at, Timer::ProbeTimeout);
            }
            if !probe.acked {
                self.probe_failed(&probe, now);
            }
        }
        self.start_probe(now);
    }

    /// Lifeguard: helpers that did not even nack point at this node's own
    /// links, so each raises its health score; with no helper to ask, the
    /// failure itself does.
    fn probe_failed(&mut self, probe: &Probe, now: Instant) {
        assert!(probe.nacks.len() <= probe.helpers.len());
        self.stats.probes_failed += 1;
        let missed = (probe.helpers.len() - probe.nacks.len()) as u32;
        self.stats.nacks_missed += u64::from(missed);
        self.health_up(if probe.helpers.is_empty() { 1 } else { missed });
        self.accuse(probe.target, now);
    }

    fn start_probe(&mut self, now: Instant) {
        assert!(self.probe.is_none() && !self.left);
        let period = self.scaled(self.config.probe_interval);
        self.schedule(now + period, Timer::ProbeEnd);
        let Some(target) = self.next_probe_target() else {
            return;
        };
        let seq = self.next_seq();
        let timeout_at = now + self.scaled(self.config.probe_timeout);
        assert!(timeout_at < now + period);
        self.schedule(timeout_at, Timer::ProbeTimeout);
        let address = self.members[&target].address.clone();
        let reply_to = self.me().address.clone();
        let updates = self.piggyback(Some(target));
        self.send(Some(target), address, Message::Ping { seq, target, reply_to, updates });
        self.probe = Some(Probe {
            seq,
            target,
            timeout_at: Some(timeout_at),
            acked: false,
            helpers: Vec::new(),
            nacks: Vec::new(),
        });
        self.stats.probes_sent += 1;
    }

    /// A probe run for another node got no ack in time: say so.
    pub(super) fn on_relay_timeout(&mut self, seq: u32) {
        let relay = self.relays.remove(&seq).expect("a relay timer has its relay");
        self.send(Some(relay.requester), relay.reply_to, Message::Nack { seq: relay.seq });
    }

    /// The next up member in this round's shuffled order; a new round,
    /// newly shuffled, when this one is done.
    fn next_probe_target(&mut self) -> Option<NodeId> {
        loop {
            while let Some(&id) = self.probe_order.get(self.probe_next) {
                self.probe_next += 1;
                if id != self.id && self.is_up(id) {
                    return Some(id);
                }
            }
            let mut order: Vec<NodeId> =
                self.members.values().filter(|m| m.id != self.id && m.state.is_up()).map(|m| m.id).collect();
            if order.is_empty() {
                return None;
            }
            for i in (1..order.len()).rev() {
                let j = self.random_index(i + 1);
                order.swap(i, j);
            }
            self.probe_order = order;
            self.probe_next = 0;
        }
    }

    /// A member that became up joins this round at a random place still
    /// ahead, so it is probed soon rather than next round.
    pub(super) fn add_probe_candidate(&mut self, id: NodeId) {
        if self.probe_order[self.probe_next..].contains(&id) {
            return;
        }
        let at = self.probe_next + self.random_index(self.probe_order.len() - self.probe_next + 1);
        self.probe_order.insert(at, id);
    }

    pub(super) fn probe_invariants(&self) -> Result<(), String> {
        if let Some(probe) = &self.probe {
            if probe.target == self.id || self.left {
                return Err(format!("probe of {} by a node that left: {}", probe.target, self.left));
            }
            if let Some(at) = probe.timeout_at {
                if probe.acked || !self.timers.contains(&(at, Timer::ProbeTimeout)) {
                    return Err(format!("probe timeout at {at:?} not pending: {probe:?}"));
                }
            }
            if probe.nacks.iter().any(|id| !probe.helpers.contains(id)) {
                return Err(format!("a nack from no helper: {probe:?}"));
            }
        }
        for (seq, relay) in &self.relays {
            if !self.timers.contains(&(relay.deadline, Timer::Relay(*seq))) {
                return Err(format!("relay {seq} has no timer"));
            }
        }
        if self.relays.len() > self.config.relays_max as usize {
            return Err(format!("{} relays, at most {}", self.relays.len(), self.config.relays_max));
        }
        let count = |kind: Timer| self.timers.iter().filter(|(_, timer)| *timer == kind).count();
        let cycles = usize::from(!self.left);
        if count(Timer::ProbeEnd) != cycles || count(Timer::PushPull) != cycles {
            return Err(format!("probe end or push-pull timers not {cycles}"));
        }
        Ok(())
    }
}
