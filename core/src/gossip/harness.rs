//! A simulated network for gossip nodes in virtual time, shared by the
//! module's tests and `benches/gossip.rs`.
//!
//! It lives in the library, hidden from the docs, because both need it and
//! a bench only sees the crate's public items: it uses nothing else, so it
//! drives `Gossip` exactly as a node would. Messages go through their wire
//! encoding, take a random delay (so they may overtake each other), may be
//! dropped, never cross a partition, and take longer to or from a slow
//! node. A paused node gets neither
//! messages nor timeouts until it resumes: what reached it meanwhile waits,
//! and on resuming it first gets a timeout call (every timer it had is
//! overdue), then the waiting messages, the order least kind to it. One
//! seed decides everything, so a run replays exactly.

use core::time::Duration;
use std::collections::{BTreeMap, BTreeSet};

use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{Rng, SeedableRng};

use super::{Address, Config, Event, Gossip, Message, Output, State};
use crate::NodeId;
use crate::time::Instant;

/// How the simulated network treats messages.
#[derive(Clone, Debug)]
pub struct Network {
    pub delay_min: Duration,
    pub delay_max: Duration,
    /// Messages lost, per million.
    pub drop_per_million: u32,
}

impl Default for Network {
    /// A LAN: a few milliseconds, nothing lost.
    fn default() -> Network {
        Network {
            delay_min: Duration::from_micros(500),
            delay_max: Duration::from_millis(5),
            drop_per_million: 0,
        }
    }
}

#[derive(Debug)]
struct Delivery {
    from: NodeId,
    to: NodeId,
    bytes: Vec<u8>,
}

#[derive(Debug)]
struct SimNode {
    gossip: Gossip,
    /// When this node's next timeout is due, as registered in `wakeups`.
    wake: Option<Instant>,
    paused_until: Option<Instant>,
    held: Vec<Delivery>,
}

/// Gossip nodes on a simulated network.
#[derive(Debug)]
pub struct Sim {
    now: Instant,
    config: Config,
    network: Network,
    rng: ChaCha8Rng,
    nodes: BTreeMap<NodeId, SimNode>,
    killed: BTreeSet<NodeId>,
    addresses: BTreeMap<Address, NodeId>,
    in_flight: BTreeMap<(Instant, u64), Delivery>,
    wakeups: BTreeSet<(Instant, NodeId)>,
    resumes: BTreeSet<(Instant, NodeId)>,
    /// Partition group of each node; nodes not named are in group 0.
    groups: BTreeMap<NodeId, u32>,
    /// Extra delay of every message to or from a slow node.
    slow: BTreeMap<NodeId, Duration>,
    deliveries_next: u64,
    /// Every event every node emitted, with when and where.
    pub events: Vec<(Instant, NodeId, Event)>,
    pub messages_sent: u64,
    /// Run `Gossip::invariants` after every call.
    pub check_invariants: bool,
}

impl Sim {
    pub fn new(config: Config, network: Network, seed: u64) -> Sim {
        assert!(network.delay_min <= network.delay_max);
        Sim {
            now: Instant::ZERO,
            config,
            network,
            rng: ChaCha8Rng::seed_from_u64(seed),
            nodes: BTreeMap::new(),
            killed: BTreeSet::new(),
            addresses: BTreeMap::new(),
            in_flight: BTreeMap::new(),
            wakeups: BTreeSet::new(),
            resumes: BTreeSet::new(),
            groups: BTreeMap::new(),
            slow: BTreeMap::new(),
            deliveries_next: 0,
            events: Vec::new(),
            messages_sent: 0,
            check_invariants: true,
        }
    }

    pub fn address(id: NodeId) -> Address {
        Address::new(format!("10.0.{}.{}:7946", id.0 / 256, id.0 % 256)).expect("a valid address")
    }

    /// Starts node `id`, which joins through the nodes `seeds`.
    pub fn add_node(&mut self, id: NodeId, seeds: &[NodeId]) {
        assert!(!self.nodes.contains_key(&id) && !self.killed.contains(&id), "{id} exists");
        let seeds = seeds.iter().map(|&seed| Sim::address(seed)).collect();
        let seed = self.rng.next_u64();
        let gossip = Gossip::new(self.config.clone(), id, Sim::address(id), seeds, seed, self.now)
            .expect("a valid configuration");
        self.addresses.insert(Sim::address(id), id);
        self.nodes.insert(id, SimNode { gossip, wake: None, paused_until: None, held: Vec::new() });
        self.after_call(id);
    }

    /// Nodes 1..=`count`, all joining through node 1, run until each knows
    /// all the others alive. Panics if that takes more than `limit`.
    pub fn start_cluster(&mut self, count: u64, limit: Duration) {
        for id in 1..=count {
            let seeds: &[NodeId] = if id == 1 { &[] } else { &[NodeId(1)] };
            self.add_node(NodeId(id), seeds);
        }
        let deadline = self.now + limit;
        let converged = self.run_until(deadline, Duration::from_millis(100), |sim| sim.all_alive());
        assert!(converged.is_some(), "a cluster of {count} did not converge within {limit:?}");
    }

    pub fn now(&self) -> Instant {
        self.now
    }

    pub fn gossip(&self, id: NodeId) -> &Gossip {
        &self.nodes[&id].gossip
    }

    /// Nodes running or paused, not killed.
    pub fn ids(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.nodes.keys().copied()
    }

    /// Gives node `id` a command (`leave`, `set_layout_version`) at the
    /// current time and carries out what it asks.
    pub fn command(&mut self, id: NodeId, command: impl FnOnce(&mut Gossip, Instant)) {
        let node = self.nodes.get_mut(&id).expect("a running node");
        assert!(node.paused_until.is_none(), "{id} is paused");
        command(&mut node.gossip, self.now);
        self.after_call(id);
    }

    /// Stops node `id` for good; what is sent to it is lost.
    pub fn kill(&mut self, id: NodeId) {
        let node = self.nodes.remove(&id).expect("a running node");
        if let Some(wake) = node.wake {
            self.wakeups.remove(&(wake, id));
        }
        if let Some(until) = node.paused_until {
            self.resumes.remove(&(until, id));
        }
        self.killed.insert(id);
    }

    /// Freezes node `id` for `duration`: no messages, no timeouts.
    pub fn pause(&mut self, id: NodeId, duration: Duration) {
        let until = self.now + duration;
        let node = self.nodes.get_mut(&id).expect("a running node");
        assert!(node.paused_until.is_none(), "{id} is already paused");
        node.paused_until = Some(until);
        if let Some(wake) = node.wake.take() {
            self.wakeups.remove(&(wake, id));
        }
        self.resumes.insert((until, id));
    }

    pub fn is_paused(&self, id: NodeId) -> bool {
        self.nodes.get(&id).is_some_and(|node| node.paused_until.is_some())
    }

    /// Splits the network: each slice is a group that hears only itself;
    /// nodes in no slice form one more group.
    pub fn partition(&mut self, groups: &[&[NodeId]]) {
        self.groups.clear();
        for (group, ids) in groups.iter().enumerate() {
            for &id in *ids {
                self.groups.insert(id, group as u32 + 1);
            }
        }
    }

    pub fn heal(&mut self) {
        self.groups.clear();
    }

    /// Delays every message to or from node `id` by `extra` more: an
    /// overloaded machine or a congested link.
    pub fn slow(&mut self, id: NodeId, extra: Duration) {
        self.slow.insert(id, extra);
    }

    pub fn set_drop_per_million(&mut self, drop_per_million: u32) {
        self.network.drop_per_million = drop_per_million;
    }

    pub fn run_for(&mut self, duration: Duration) {
        let until = self.now + duration;
        while self.step(until) {}
        self.now = until;
    }

    /// Runs until `done` holds, checked every `every`, or until `deadline`.
    /// Returns when it first held.
    pub fn run_until(
        &mut self,
        deadline: Instant,
        every: Duration,
        mut done: impl FnMut(&Sim) -> bool,
    ) -> Option<Instant> {
        loop {
            if done(self) {
                return Some(self.now);
            }
            if self.now >= deadline {
                return None;
            }
            let next = (self.now + every).min(deadline);
            while self.step(next) {}
            self.now = next;
        }
    }

    /// Every node sees every node alive (itself included).
    pub fn all_alive(&self) -> bool {
        self.nodes.values().all(|node| {
            self.nodes.keys().all(|&id| node.gossip.member(id).is_some_and(|m| m.state == State::Alive))
        })
    }

    /// Every node other than `id` holds it in `state`.
    pub fn all_see(&self, id: NodeId, state: State) -> bool {
        self.nodes
            .iter()
            .filter(|(other, _)| **other != id)
            .all(|(_, node)| node.gossip.member(id).is_some_and(|m| m.state == state))
    }

    /// Every running node holds the same claim about every member.
    pub fn agree(&self) -> bool {
        let view = |gossip: &Gossip| -> Vec<(NodeId, u64, State, u64)> {
            gossip.members().map(|m| (m.id, m.incarnation, m.state, m.layout_version)).collect()
        };
        let mut views = self.nodes.values().map(|node| view(&node.gossip));
        let Some(first) = views.next() else {
            return true;
        };
        views.all(|other| other == first)
    }

    /// Processes the earliest event due by `until`; false if there is none.
    fn step(&mut self, until: Instant) -> bool {
        let delivery = self.in_flight.first_key_value().map(|(&(at, _), _)| at);
        let wakeup = self.wakeups.first().map(|&(at, _)| at);
        let resume = self.resumes.first().map(|&(at, _)| at);
        let Some(at) = [delivery, wakeup, resume].into_iter().flatten().min().filter(|&at| at <= until)
        else {
            return false;
        };
        assert!(at >= self.now, "an event at {at:?} before {:?}", self.now);
        self.now = at;
        if resume == Some(at) {
            let (_, id) = self.resumes.pop_first().expect("just seen");
            self.resume(id);
        } else if wakeup == Some(at) {
            let (_, id) = self.wakeups.pop_first().expect("just seen");
            let node = self.nodes.get_mut(&id).expect("wakeups are of running nodes");
            node.wake = None;
            node.gossip.handle_timeout(at);
            self.after_call(id);
        } else {
            let (_, delivery) = self.in_flight.pop_first().expect("just seen");
            self.deliver(delivery);
        }
        true
    }

    fn deliver(&mut self, delivery: Delivery) {
        let Some(node) = self.nodes.get_mut(&delivery.to) else {
            return;
        };
        if node.paused_until.is_some() {
            node.held.push(delivery);
            return;
        }
        let (message, used) =
            Message::decode(&delivery.bytes).expect("what a node encoded decodes").expect("a whole frame");
        assert_eq!(used, delivery.bytes.len());
        node.gossip.handle_message(delivery.from, message, self.now);
        self.after_call(delivery.to);
    }

    fn resume(&mut self, id: NodeId) {
        let node = self.nodes.get_mut(&id).expect("resumes are of running nodes");
        node.paused_until = None;
        let held = std::mem::take(&mut node.held);
        node.gossip.handle_timeout(self.now);
        self.after_call(id);
        for delivery in held {
            self.deliver(delivery);
        }
    }

    /// Carries out what node `id` asked for and registers its next timeout.
    fn after_call(&mut self, id: NodeId) {
        let node = self.nodes.get_mut(&id).expect("a running node");
        if self.check_invariants {
            if let Err(error) = node.gossip.invariants() {
                panic!("{id} at {:?}: {error}", self.now);
            }
        }
        let mut outputs = Vec::new();
        while let Some(output) = node.gossip.poll_output() {
            outputs.push(output);
        }
        if let Some(wake) = node.wake.take() {
            self.wakeups.remove(&(wake, id));
        }
        if let Some(wake) = node.gossip.poll_timeout() {
            node.wake = Some(wake.max(self.now));
            self.wakeups.insert((wake.max(self.now), id));
        }
        for output in outputs {
            match output {
                Output::Send { to, address, message } => self.send(id, to, address, message),
                Output::Event(event) => self.events.push((self.now, id, event)),
            }
        }
    }

    fn send(&mut self, from: NodeId, to: Option<NodeId>, address: Address, message: Message) {
        self.messages_sent += 1;
        let mut bytes = Vec::new();
        message.encode(&mut bytes).expect("gossip messages are within their bounds");
        // The address decides where a message goes, as on a real network.
        let Some(&dest) = self.addresses.get(&address) else {
            return;
        };
        if let Some(to) = to {
            assert_eq!(to, dest, "{from} sent to {to} at the address of {dest}");
        }
        let group = |id: NodeId| self.groups.get(&id).copied().unwrap_or(0);
        if group(from) != group(dest) {
            return;
        }
        let roll = self.rng.next_u32() % 1_000_000;
        if roll < self.network.drop_per_million {
            return;
        }
        let spread = self.network.delay_max - self.network.delay_min;
        let jitter = (u128::from(self.rng.next_u64()) * spread.as_nanos()) >> 64;
        let extra = |id: NodeId| self.slow.get(&id).copied().unwrap_or_default();
        let delay = self.network.delay_min + Duration::from_nanos(jitter as u64) + extra(from) + extra(dest);
        let key = (self.now + delay, self.deliveries_next);
        self.deliveries_next += 1;
        self.in_flight.insert(key, Delivery { from, to: dest, bytes });
    }
}
