//! Push-pull anti-entropy, joining through seeds, and leaving.

use super::update::Source;
use super::{Gossip, Message, SYNC_MEMBERS_MAX, SyncMembers, Timer};
use crate::NodeId;
use crate::gossip::member::{Address, State, Update};
use crate::time::Instant;

impl Gossip {
    /// Exchanges whole states with one random alive member, or with every
    /// seed while no other member is up (joining, or cut off from all), and
    /// tries one member held dead: if it is alive behind a healed partition
    /// it hears it is held dead and refutes.
    pub(super) fn on_push_pull(&mut self, now: Instant) {
        assert!(!self.left, "a node that left has no push-pull");
        let alone = self.live_count() == 1;
        if alone {
            for seed in self.seeds.clone() {
                self.send_state(None, seed, true);
            }
        } else if let Some(&peer) = self.random_members(1, |member| member.state == State::Alive).first() {
            let address = self.members[&peer].address.clone();
            self.send_state(Some(peer), address, true);
        }
        if let Some(&dead) = self.random_members(1, |member| member.state == State::Dead).first() {
            let address = self.members[&dead].address.clone();
            self.send_state(Some(dead), address, true);
        }
        let interval = if alone && !self.seeds.is_empty() {
            self.config.join_retry_interval
        } else {
            self.config.push_pull_interval_for(self.live_count())
        };
        self.schedule(now + interval, Timer::PushPull);
    }

    /// Sends every member this node knows, in chunks; only the first asks
    /// for the peer's state in return.
    fn send_state(&mut self, to: Option<NodeId>, address: Address, reply_wanted: bool) {
        let claims: Vec<Update> = self.members.values().map(|member| member.claim()).collect();
        let reply_to = self.me().address.clone();
        for (i, chunk) in claims.chunks(SYNC_MEMBERS_MAX).enumerate() {
            let members = SyncMembers::new(chunk.to_vec()).expect("chunks are within the bound");
            let message =
                Message::Sync { reply_to: reply_to.clone(), reply_wanted: reply_wanted && i == 0, members };
            self.send(to, address.clone(), message);
        }
    }

    pub(super) fn on_sync(
        &mut self,
        from: NodeId,
        reply_to: Address,
        reply_wanted: bool,
        members: SyncMembers,
        now: Instant,
    ) {
        for update in members.into_vec() {
            self.apply(update, Source::Sync { sender: from }, now);
        }
        if reply_wanted {
            self.send_state(Some(from), reply_to, false);
        }
    }

    pub(super) fn leave_cluster(&mut self, now: Instant) {
        if self.left {
            return;
        }
        self.left = true;
        let me = self.members.get_mut(&self.id).expect("a node is its own member");
        me.state = State::Left;
        me.state_changed = now;
        let claim = me.claim();
        self.counts[State::Alive as usize] -= 1;
        self.counts[State::Left as usize] += 1;
        self.broadcasts.push(claim.clone());
        // No more probes or push-pulls; suspicions and probes run for
        // others finish on their own.
        self.probe = None;
        self.timers
            .retain(|(_, timer)| !matches!(timer, Timer::ProbeTimeout | Timer::ProbeEnd | Timer::PushPull));
        // Probes no longer carry the news from here: tell a few members.
        let count = self.config.indirect_probes.max(1) as usize;
        for peer in self.random_members(count, |member| member.state == State::Alive) {
            let address = self.members[&peer].address.clone();
            let members = SyncMembers::new(vec![claim.clone()]).expect("one claim");
            let reply_to = self.me().address.clone();
            self.send(Some(peer), address, Message::Sync { reply_to, reply_wanted: false, members });
        }
    }
}
