//! Gossip membership and failure detection: SWIM with Lifeguard's
//! refinements, as a sans-IO state machine.
//!
//! Each node keeps every member's address, incarnation, liveness and layout
//! version, and spreads what changes on the back of its probes; a periodic
//! push-pull of whole states with a random member repairs what gossip
//! missed, and is how a new node joins through its seeds. Each protocol
//! period a node probes one member (randomized round robin); a member that
//! answers neither directly nor through `indirect_probes` helpers becomes
//! suspect, and dead once its suspicion times out. A suspected member
//! refutes by raising its incarnation. Lifeguard adds three things: the
//! suspicion timeout shrinks as other members independently confirm it, a
//! node that misses acks or nacks or has to refute suspicions of itself
//! stretches its own timeouts (its local health), and helpers send nacks so
//! a prober can tell its own trouble from the target's. `docs/MEMBERSHIP.md`
//! explains the choices and the defaults.
//!
//! Liveness is this node's opinion only. It never changes the layout:
//! dead members stay members until an operator removes them, and a dead
//! member that comes back with a higher incarnation is alive again.
//!
//! # Driving it
//!
//! Like [`crate::node::Node`]: after [`Gossip::new`] and after every
//! `handle_*` call or command ([`Gossip::leave`]), drain
//! [`Gossip::poll_output`] until `None`, then call
//! [`Gossip::handle_timeout`] no later than [`Gossip::poll_timeout`]. Time
//! comes in as an argument and only moves forward; a call far later than
//! the timeout asked for is taken as a pause of this node (see
//! [`Config::pause_threshold`]).

mod broadcast;
mod config;
#[doc(hidden)]
pub mod harness;
mod io;
mod member;
mod message;
mod probe;
mod suspicion;
mod sync;
mod timers;
mod update;

#[cfg(test)]
mod tests;

use core::time::Duration;
use std::collections::{BTreeMap, BTreeSet, VecDeque};

use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{Rng, SeedableRng};

pub use self::config::{Config, ConfigError, HEALTH_MAX_LIMIT, INDIRECT_PROBES_LIMIT};
pub use self::io::{Event, Output, Stats};
pub use self::member::{ADDRESS_BYTES_MAX, Address, AddressError, Member, State, Update, UpdateError};
pub use self::message::{
    Bounded, MESSAGE_BYTES_MAX, Message, SYNC_MEMBERS_MAX, SyncMembers, UPDATE_BYTES_MAX,
    UPDATES_PER_MESSAGE_MAX, Updates,
};

use self::broadcast::Broadcasts;
use self::probe::{Probe, Relay};
use self::suspicion::Suspicion;
use self::timers::Timer;
use crate::NodeId;
use crate::time::Instant;

/// One node's view of the membership. Performs no I/O and reads no clock.
#[derive(Debug)]
pub struct Gossip {
    config: Config,
    id: NodeId,
    rng: ChaCha8Rng,
    /// Every member this node knows, itself included.
    members: BTreeMap<NodeId, Member>,
    /// Members by state, indexed by `State as usize`.
    counts: [usize; 4],
    seeds: Vec<Address>,
    broadcasts: Broadcasts,
    suspicions: BTreeMap<NodeId, Suspicion>,
    probe: Option<Probe>,
    /// This round's probe order: up members, shuffled.
    probe_order: Vec<NodeId>,
    probe_next: usize,
    /// Probes run for others, by the sequence number of this node's ping.
    relays: BTreeMap<u32, Relay>,
    seq_next: u32,
    /// Lifeguard's local health score, below `health_max`.
    health: u32,
    layout_version_max: u64,
    timers: BTreeSet<(Instant, Timer)>,
    last_now: Instant,
    left: bool,
    outputs: VecDeque<Output>,
    stats: Stats,
}

impl Gossip {
    /// Node `id`, listening at `address`, that joins through `seeds` (its
    /// own address among them is skipped; none for the first node). All its
    /// randomness comes from `seed`.
    pub fn new(
        config: Config,
        id: NodeId,
        address: Address,
        seeds: Vec<Address>,
        seed: u64,
        now: Instant,
    ) -> Result<Gossip, ConfigError> {
        config.validate()?;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let me = Member {
            id,
            address: address.clone(),
            incarnation: 0,
            state: State::Alive,
            by: id,
            layout_version: 0,
            state_changed: now,
        };
        let seeds = seeds.into_iter().filter(|seed| *seed != address).collect();
        let seq_next = rng.next_u32();
        let mut gossip = Gossip {
            config,
            id,
            rng,
            members: BTreeMap::from([(id, me.clone())]),
            counts: [1, 0, 0, 0],
            seeds,
            broadcasts: Broadcasts::default(),
            suspicions: BTreeMap::new(),
            probe: None,
            probe_order: Vec::new(),
            probe_next: 0,
            relays: BTreeMap::new(),
            seq_next,
            health: 0,
            layout_version_max: 0,
            timers: BTreeSet::new(),
            last_now: now,
            left: false,
            outputs: VecDeque::new(),
            stats: Stats::default(),
        };
        gossip.broadcasts.push(me.claim());
        // Nodes started together should not probe in step.
        let stagger = gossip.random_duration(gossip.config.probe_interval);
        gossip.schedule(now + stagger, Timer::ProbeEnd);
        let push_pull = if gossip.seeds.is_empty() { now + gossip.config.push_pull_interval } else { now };
        gossip.schedule(push_pull, Timer::PushPull);
        Ok(gossip)
    }

    // Inputs.

    /// A message from member `from`. The driver vouches for `from` (its
    /// transport authenticated the peer).
    pub fn handle_message(&mut self, from: NodeId, message: Message, now: Instant) {
        self.observe(now);
        if from == self.id {
            return;
        }
        // The news first: an ack answering a suspicion of this node then
        // carries the refutation.
        match message {
            Message::Ping { seq, target, reply_to, updates } => {
                self.merge_updates(updates, now);
                self.on_ping(from, seq, target, reply_to);
            }
            Message::PingReq { seq, target, target_address, reply_to, updates } => {
                self.merge_updates(updates, now);
                self.on_ping_req(from, seq, target, target_address, reply_to, now);
            }
            Message::Ack { seq, updates } => {
                self.merge_updates(updates, now);
                self.on_ack(from, seq);
            }
            Message::Nack { seq } => self.on_nack(from, seq),
            Message::Sync { reply_to, reply_wanted, members } => {
                self.on_sync(from, reply_to, reply_wanted, members, now)
            }
        }
    }

    /// Fires every timer due at `now`. Spurious calls are harmless.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.observe(now);
        while let Some(timer) = self.pop_due(now) {
            match timer {
                Timer::ProbeTimeout => self.on_probe_timeout(),
                Timer::ProbeEnd => self.on_probe_end(now),
                Timer::PushPull => self.on_push_pull(now),
                Timer::Suspicion(id) => self.on_suspicion_timeout(id, now),
                Timer::Relay(seq) => self.on_relay_timeout(seq),
            }
        }
    }

    // Commands.

    /// This node now holds layout `version`; gossip tells the others. A
    /// version no newer than the one held is ignored: layouts only advance.
    pub fn set_layout_version(&mut self, version: u64) {
        let me = self.members.get_mut(&self.id).expect("a node is its own member");
        if version <= me.layout_version {
            return;
        }
        me.layout_version = version;
        let claim = me.claim();
        self.layout_version_max = self.layout_version_max.max(version);
        self.broadcasts.push(claim);
    }

    /// Leaves the cluster gracefully: tells a few members at once and the
    /// rest through gossip, stops probing, and no longer refutes anything.
    /// The driver should keep the node answering for a few protocol periods
    /// before it stops it, so the news spreads.
    pub fn leave(&mut self, now: Instant) {
        self.observe(now);
        self.leave_cluster(now);
    }

    // Outputs.

    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.first().map(|(at, _)| *at)
    }

    // Queries.

    pub fn id(&self) -> NodeId {
        self.id
    }

    /// Every member this node knows, itself included, in id order.
    pub fn members(&self) -> impl Iterator<Item = &Member> + '_ {
        self.members.values()
    }

    pub fn member(&self, id: NodeId) -> Option<&Member> {
        self.members.get(&id)
    }

    /// True for a member believed alive or only suspected.
    pub fn is_up(&self, id: NodeId) -> bool {
        self.members.get(&id).is_some_and(|member| member.state.is_up())
    }

    /// The newest layout version any member is known to hold.
    pub fn layout_version(&self) -> u64 {
        self.layout_version_max
    }

    /// Up members known to hold layout `version` or a newer one: where to
    /// fetch it from.
    pub fn layout_holders(&self, version: u64) -> impl Iterator<Item = &Member> + '_ {
        self.members.values().filter(move |member| member.state.is_up() && member.layout_version >= version)
    }

    pub fn has_left(&self) -> bool {
        self.left
    }

    pub fn stats(&self) -> Stats {
        let count = |state: State| self.counts[state as usize] as u64;
        Stats {
            members_alive: count(State::Alive),
            members_suspect: count(State::Suspect),
            members_dead: count(State::Dead),
            members_left: count(State::Left),
            health: self.health,
            broadcasts_queued: self.broadcasts.len() as u64,
            ..self.stats.clone()
        }
    }

    /// Checks what must hold between calls; the simulation harness runs it
    /// after every step.
    pub fn invariants(&self) -> Result<(), String> {
        let me = self.members.get(&self.id).ok_or("no member for this node")?;
        let expected = if self.left { State::Left } else { State::Alive };
        if me.state != expected || me.by != self.id {
            return Err(format!("this node's own claim is {me:?}"));
        }
        let mut counts = [0; 4];
        for member in self.members.values() {
            counts[member.state as usize] += 1;
            Update::new(
                member.id,
                member.address.clone(),
                member.incarnation,
                member.state,
                member.by,
                member.layout_version,
            )
            .map_err(|error| format!("member {:?}: {error}", member.id))?;
            let suspicion = self.suspicions.get(&member.id);
            match (member.state, suspicion) {
                (State::Suspect, Some(suspicion)) if suspicion.incarnation == member.incarnation => {
                    if !self.timers.contains(&(suspicion.deadline, Timer::Suspicion(member.id))) {
                        return Err(format!("suspicion of {} has no timer", member.id));
                    }
                }
                (State::Suspect, _) => return Err(format!("{} is suspect without a suspicion", member.id)),
                (_, Some(_)) => return Err(format!("{} is {:?} with a suspicion", member.id, member.state)),
                (_, None) => {}
            }
        }
        if counts != self.counts {
            return Err(format!("counts {:?}, members say {counts:?}", self.counts));
        }
        if self.suspicions.keys().any(|id| !self.members.contains_key(id)) {
            return Err("a suspicion of an unknown member".to_string());
        }
        let layout_max = self.members.values().map(|member| member.layout_version).max().unwrap_or(0);
        if layout_max != self.layout_version_max {
            return Err(format!("layout version {} but members hold {layout_max}", self.layout_version_max));
        }
        if self.health >= self.config.health_max {
            return Err(format!("health {} reaches its ceiling {}", self.health, self.config.health_max));
        }
        self.probe_invariants()?;
        let probe_timers = usize::from(!self.left) + self.probe.as_ref().map_or(0, Probe::timers_pending);
        let expected_timers =
            self.suspicions.len() + self.relays.len() + probe_timers + usize::from(!self.left);
        if self.timers.len() != expected_timers {
            return Err(format!("{} timers, {expected_timers} expected", self.timers.len()));
        }
        Ok(())
    }

    // Local health.

    /// `duration` stretched by the local health multiplier.
    fn scaled(&self, duration: Duration) -> Duration {
        duration * (self.health + 1)
    }

    fn health_up(&mut self, by: u32) {
        self.health = self.health.saturating_add(by).min(self.config.health_max - 1);
    }

    fn health_down(&mut self) {
        self.health = self.health.saturating_sub(1);
    }

    // Shared helpers.

    fn me(&self) -> &Member {
        self.members.get(&self.id).expect("a node is its own member")
    }

    fn live_count(&self) -> usize {
        self.counts[State::Alive as usize] + self.counts[State::Suspect as usize]
    }

    fn send(&mut self, to: Option<NodeId>, address: Address, message: Message) {
        debug_assert_ne!(to, Some(self.id), "a node never sends to itself");
        self.outputs.push_back(Output::Send { to, address, message });
    }

    /// Updates for one message to `to`. A suspicion of the recipient itself
    /// goes first, so it can refute at once (Lifeguard's buddy system).
    fn piggyback(&mut self, to: Option<NodeId>) -> Updates {
        let mut updates = Vec::new();
        let suspected =
            to.and_then(|id| self.members.get(&id)).filter(|member| member.state == State::Suspect);
        if let Some(member) = suspected {
            updates.push(member.claim());
        }
        let max = self.config.piggyback_max as usize - updates.len();
        let limit = self.config.retransmit_limit(self.live_count());
        let skip = suspected.map(|member| member.id);
        updates.extend(self.broadcasts.take(max, limit, skip));
        Updates::new(updates).expect("piggyback_max is within the message bound")
    }

    fn next_seq(&mut self) -> u32 {
        let seq = self.seq_next;
        self.seq_next = self.seq_next.wrapping_add(1);
        seq
    }

    /// A uniformly drawn index below `len` (which must not be zero).
    fn random_index(&mut self, len: usize) -> usize {
        assert!(len > 0);
        ((u128::from(self.rng.next_u64()) * len as u128) >> 64) as usize
    }

    fn random_duration(&mut self, below: Duration) -> Duration {
        let nanos = u64::try_from(below.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(((u128::from(self.rng.next_u64()) * u128::from(nanos)) >> 64) as u64)
    }

    /// Up to `count` distinct members that pass `keep`, drawn at random.
    fn random_members(&mut self, count: usize, keep: impl Fn(&Member) -> bool) -> Vec<NodeId> {
        let mut candidates: Vec<NodeId> = self
            .members
            .values()
            .filter(|member| member.id != self.id && keep(member))
            .map(|m| m.id)
            .collect();
        let count = count.min(candidates.len());
        for i in 0..count {
            let j = i + self.random_index(candidates.len() - i);
            candidates.swap(i, j);
        }
        candidates.truncate(count);
        candidates
    }
}
