//! Merging claims into this node's view: the one place where a member's
//! state changes, whether the claim came from a peer or from this node's
//! own probe.

use core::cmp::Ordering;

use super::suspicion::Suspicion;
use super::{Event, Gossip, Output, Timer, Updates};
use crate::NodeId;
use crate::gossip::member::{Member, State, Update};
use crate::time::Instant;

/// Where a claim came from, which decides whether it is worth spreading.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Source {
    /// Gossip, or this node's own judgement: news, spread it.
    Gossip,
    /// A peer's whole state in a push-pull. A member it introduces is not
    /// news to the cluster (except the sender itself, joining), but a change
    /// to a member this node knew is what anti-entropy is there to find.
    Sync { sender: NodeId },
}

/// What a claim did to this node's view.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Merged {
    Ignored,
    Learned,
    Superseded,
    /// An equal suspicion from a new accuser, which shortened it.
    Confirmed,
    /// Only a higher layout version.
    Layout,
}

impl Gossip {
    pub(super) fn merge_updates(&mut self, updates: Updates, now: Instant) {
        for update in updates.into_vec() {
            self.apply(update, Source::Gossip, now);
        }
    }

    /// Merges one claim: the greater claim wins (see [`Update::cmp_claim`]),
    /// an equal suspicion from a new accuser confirms it, and layout
    /// versions keep their maximum.
    pub(super) fn apply(&mut self, update: Update, source: Source, now: Instant) -> Merged {
        let id = update.id();
        if id == self.id {
            return self.claim_about_self(&update, now);
        }
        let Some(member) = self.members.get(&id) else {
            self.learn(update, source, now);
            return Merged::Learned;
        };
        let order = update.cmp_claim(member);
        let layout_raised = update.layout_version() > member.layout_version;
        let confirms =
            order == Ordering::Equal && update.state() == State::Suspect && update.by() != member.by;
        let mut merged = match order {
            Ordering::Greater => {
                self.supersede(&update, now);
                Merged::Superseded
            }
            Ordering::Equal if confirms && self.confirm(&update) => Merged::Confirmed,
            _ => Merged::Ignored,
        };
        if layout_raised {
            self.raise_layout(id, update.layout_version());
            if merged == Merged::Ignored {
                merged = Merged::Layout;
            }
        }
        match merged {
            Merged::Ignored | Merged::Learned => {}
            // Spread the accuser's own claim, so others count it too.
            Merged::Confirmed if !layout_raised => self.broadcasts.push(update),
            // Whatever its source: from a push-pull it is a divergence that
            // gossip missed.
            _ => self.broadcasts.push(self.members[&id].claim()),
        }
        merged
    }

    fn learn(&mut self, update: Update, source: Source, now: Instant) {
        let id = update.id();
        let member = Member {
            id,
            address: update.address().clone(),
            incarnation: update.incarnation(),
            state: update.state(),
            by: update.by(),
            layout_version: 0,
            state_changed: now,
        };
        self.counts[member.state as usize] += 1;
        self.members.insert(id, member);
        if update.state() == State::Suspect {
            self.start_suspicion(id, update.by(), update.incarnation(), now);
        }
        if update.state().is_up() {
            self.add_probe_candidate(id);
        }
        let event = Event::StateChanged {
            id,
            previous: None,
            state: update.state(),
            incarnation: update.incarnation(),
        };
        self.outputs.push_back(Output::Event(event));
        self.raise_layout(id, update.layout_version());
        let news = match source {
            Source::Gossip => true,
            Source::Sync { sender } => sender == id,
        };
        if news {
            self.broadcasts.push(update);
        }
    }

    /// Replaces what this node held about a member with a greater claim.
    fn supersede(&mut self, update: &Update, now: Instant) {
        let id = update.id();
        let member = self.members.get_mut(&id).expect("superseding a known member");
        let previous = member.state;
        member.address = update.address().clone();
        member.incarnation = update.incarnation();
        member.state = update.state();
        member.by = update.by();
        member.state_changed = now;
        self.counts[previous as usize] -= 1;
        self.counts[update.state() as usize] += 1;
        if previous == State::Suspect {
            self.end_suspicion(id);
        }
        if update.state() == State::Suspect {
            self.start_suspicion(id, update.by(), update.incarnation(), now);
        }
        if !previous.is_up() && update.state().is_up() {
            self.add_probe_candidate(id);
        }
        if previous != update.state() {
            let event = Event::StateChanged {
                id,
                previous: Some(previous),
                state: update.state(),
                incarnation: update.incarnation(),
            };
            self.outputs.push_back(Output::Event(event));
        }
    }

    /// Counts an equal suspicion from another accuser; true if it was a new
    /// one that shortened the timeout.
    fn confirm(&mut self, update: &Update) -> bool {
        let id = update.id();
        let suspicion = self.suspicions.get_mut(&id).expect("a suspect member has a suspicion");
        assert_eq!(suspicion.incarnation, update.incarnation());
        let before = suspicion.deadline;
        if !suspicion.confirm(update.by()) {
            return false;
        }
        let after = suspicion.deadline;
        if after != before {
            self.cancel(before, Timer::Suspicion(id));
            self.schedule(after, Timer::Suspicion(id));
        }
        true
    }

    /// A claim about this node. One above its own (an accusation at its
    /// incarnation or later, or a claim of an earlier life that got further)
    /// is refuted by announcing itself alive at a higher incarnation.
    fn claim_about_self(&mut self, update: &Update, now: Instant) -> Merged {
        if self.left || update.cmp_claim(self.me()) != Ordering::Greater {
            return Merged::Ignored;
        }
        // Unreachable short of a forged claim at the largest incarnation,
        // which nothing could outrank: keep the own claim and move on.
        let Some(incarnation) = update.incarnation().checked_add(1) else {
            return Merged::Ignored;
        };
        let me = self.members.get_mut(&self.id).expect("a node is its own member");
        me.incarnation = incarnation;
        me.state_changed = now;
        let claim = me.claim();
        self.broadcasts.push(claim);
        if matches!(update.state(), State::Suspect | State::Dead) {
            // Being suspected means this node was slow to answer: Lifeguard
            // counts it against its own health. An earlier life's claim
            // (alive, or left) is no fault of this one.
            self.stats.suspicions_refuted += 1;
            self.health_up(1);
        }
        self.outputs.push_back(Output::Event(Event::Refuted { claim: update.state(), incarnation }));
        Merged::Superseded
    }

    fn raise_layout(&mut self, id: NodeId, version: u64) {
        let member = self.members.get_mut(&id).expect("a known member");
        if version <= member.layout_version {
            return;
        }
        member.layout_version = version;
        if version > self.layout_version_max {
            self.layout_version_max = version;
            self.outputs.push_back(Output::Event(Event::LayoutSeen { version, holder: id }));
        }
    }

    /// This node's probe of `target` failed: accuse it, which starts a
    /// suspicion or confirms one already running.
    pub(super) fn accuse(&mut self, target: NodeId, now: Instant) {
        let Some(member) = self.members.get(&target).filter(|member| member.state.is_up()) else {
            return;
        };
        let incarnation = member.incarnation;
        let accusation = Update::accusation(member, State::Suspect, self.id);
        let merged = self.apply(accusation, Source::Gossip, now);
        if matches!(merged, Merged::Superseded | Merged::Confirmed) {
            self.stats.suspicions_raised += 1;
            self.outputs.push_back(Output::Event(Event::SuspicionRaised { id: target, incarnation }));
        }
    }

    fn start_suspicion(&mut self, id: NodeId, accuser: NodeId, incarnation: u64, now: Instant) {
        let live = self.live_count();
        let needed = self.config.suspicion_confirmations(live);
        let bounds = self.config.suspicion_timeouts(live);
        let suspicion = Suspicion::new(accuser, incarnation, needed, bounds, now);
        self.schedule(suspicion.deadline, Timer::Suspicion(id));
        let replaced = self.suspicions.insert(id, suspicion);
        assert!(replaced.is_none(), "{id} suspected twice");
    }

    /// Ends the suspicion of `id`, unless its timeout already did.
    fn end_suspicion(&mut self, id: NodeId) {
        if let Some(suspicion) = self.suspicions.remove(&id) {
            self.cancel(suspicion.deadline, Timer::Suspicion(id));
        }
    }

    /// Nobody refuted in time: this node declares the member dead.
    pub(super) fn on_suspicion_timeout(&mut self, id: NodeId, now: Instant) {
        let suspicion = self.suspicions.remove(&id).expect("a suspicion timer has its suspicion");
        let member = &self.members[&id];
        assert_eq!((member.state, member.incarnation), (State::Suspect, suspicion.incarnation));
        assert_eq!(member.state, State::Suspect);
        let death = Update::accusation(member, State::Dead, self.id);
        let merged = self.apply(death, Source::Gossip, now);
        assert_eq!(merged, Merged::Superseded);
    }
}
