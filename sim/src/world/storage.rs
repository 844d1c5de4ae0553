//! Disks under attack: fault knobs per disk, a supervisor that restarts
//! nodes whose storage failed, a replacement disk for one that no longer
//! opens, and property 6 — after a restart a node still holds everything it
//! acknowledged as durable, and never serves bytes nobody wrote.

use std::collections::BTreeMap;

use keel_core::NodeId;
use keel_core::disk::{CrashMode, Faults, MemDisk};
use keel_core::message::{Message, Tag};
use keel_core::node::{self, Node};
use keel_core::version::{Object, Value};

use super::liveness::Stage;
use super::{Event, MS, World};
use crate::check::Property;
use crate::check::model::Version;
use crate::config::{FaultKind, SimConfig};
use crate::history::{Action, Outcome, ReadValue, decode_value, key_bytes};
use crate::rng::splitmix;

/// What each node has said is durable, per key: the join of every object
/// it acknowledged (as a replica) or replicated (as the coordinator, which
/// sends only after its own sync). Its recovered copy must include it.
///
/// Under periodic syncs a node acknowledges once the kernel has a write, so
/// a claim becomes durable only when a sync the node asked for after it
/// succeeds; until then it survives a process crash but not a power loss.
#[derive(Debug, Default)]
pub(crate) struct Claims {
    durable: BTreeMap<NodeId, BTreeMap<Vec<u8>, Version>>,
    /// Replicate and hint delivery messages delivered and not yet acknowledged: what an
    /// acknowledgement from the replica would vouch for.
    delivered: BTreeMap<(NodeId, NodeId, Tag), (Vec<u8>, Object)>,
    periodic: bool,
    /// Under periodic syncs: claims not yet covered by a sync, with when
    /// they were made, in that order.
    unsynced: Vec<(NodeId, u64, Vec<u8>, Version)>,
}

impl Claims {
    pub(crate) fn new(periodic: bool) -> Claims {
        Claims { periodic, ..Claims::default() }
    }

    fn claim(&mut self, node: NodeId, key: &[u8], object: &Object, now: u64) {
        let version = Version::of(object);
        if self.periodic {
            self.unsynced.push((node, now, key.to_vec(), version));
        } else {
            self.make_durable(node, key, &version);
        }
    }

    fn make_durable(&mut self, node: NodeId, key: &[u8], version: &Version) {
        let keys = self.durable.entry(node).or_default();
        match keys.get_mut(key) {
            Some(held) => held.absorb(version),
            None => {
                keys.insert(key.to_vec(), Version::default().join(version));
            }
        }
    }

    /// A message `from` sends to `to` at `now` (seen when it is sent).
    pub(crate) fn sent(&mut self, from: NodeId, to: NodeId, message: &Message, now: u64) {
        match message {
            Message::Replicate { key, object, .. } => self.claim(from, key, object, now),
            Message::ReplicateAck { tag, result: Ok(()) } => {
                if let Some((key, object)) = self.delivered.remove(&(from, to, *tag)) {
                    self.claim(from, &key, &object, now);
                }
            }
            _ => {}
        }
    }

    /// A sync `node` asked for at `asked_ns` succeeded: what it claimed
    /// before then is durable.
    pub(crate) fn synced(&mut self, node: NodeId, asked_ns: u64) {
        self.settle(node, |made_ns| made_ns <= asked_ns, true);
    }

    /// `node`'s process died and its machine stayed up: the kernel keeps
    /// what the node handed it, and writes it out.
    pub(crate) fn keep_unsynced(&mut self, node: NodeId) {
        self.settle(node, |_| true, true);
    }

    /// `node`'s machine lost power: what it claimed since its last sync
    /// may be gone.
    pub(crate) fn lose_unsynced(&mut self, node: NodeId) {
        self.settle(node, |_| true, false);
    }

    /// Takes `node`'s unsynced claims made when `due` says, keeping them as
    /// durable or dropping them.
    fn settle(&mut self, node: NodeId, due: impl Fn(u64) -> bool, keep: bool) {
        let mut taken = Vec::new();
        self.unsynced.retain_mut(|(owner, made_ns, key, version)| {
            let settled = *owner == node && due(*made_ns);
            if settled && keep {
                taken.push((std::mem::take(key), std::mem::take(version)));
            }
            !settled
        });
        for (key, version) in taken {
            self.make_durable(node, &key, &version);
        }
    }

    /// A message delivered to `to`.
    pub(crate) fn delivered(&mut self, from: NodeId, to: NodeId, message: &Message) {
        // A fallback's acknowledgement of a `Hint` vouches for a hint, not
        // for a copy of the key: it is not a claim.
        if let Message::Replicate { tag, key, object } | Message::HintDelivery { tag, key, object } = message
        {
            self.delivered.insert((to, from, *tag), (key.clone(), object.clone()));
        }
    }

    /// Forgets what `node` claimed: its disk was replaced.
    fn forget(&mut self, node: NodeId) {
        self.durable.remove(&node);
        self.unsynced.retain(|(owner, ..)| *owner != node);
    }

    /// `node` lost part of `key` to damage it detected: from now on it
    /// claims what it holds, until repair restores the rest.
    fn reset(&mut self, node: NodeId, key: &[u8], held: Option<Object>) {
        let keys = self.durable.entry(node).or_default();
        match held {
            Some(object) => keys.insert(key.to_vec(), Version::of(&object)),
            None => keys.remove(key),
        };
    }

    fn of(&self, node: NodeId) -> impl Iterator<Item = (&Vec<u8>, &Version)> {
        self.durable.get(&node).into_iter().flatten()
    }
}

/// Bit rots one disk suffers at most. Rot strikes on reads, at the rate the
/// run drew; the bound keeps a node that reads more (anti-entropy scans its
/// ranges) from rotting its disk faster than one that reads less.
const BIT_ROTS_PER_DISK_MAX: u64 = 8;

/// The fault knobs of one disk for this run.
pub(crate) fn disk_faults(config: &SimConfig, node: NodeId) -> Faults {
    let faults = &config.faults;
    let on = |kind, rate| if faults.has(kind) { rate } else { 0 };
    Faults {
        read_corrupt_per_million: on(FaultKind::ReadCorruption, faults.read_corrupt_per_million),
        bit_rot_per_million: if config.bad_disk() == Some(node.0) { faults.bit_rot_per_million } else { 0 },
        bit_rots_max: Some(BIT_ROTS_PER_DISK_MAX),
        sync_fail_per_million: on(FaultKind::SyncFailure, faults.sync_fail_per_million),
    }
}

impl World {
    /// A node reported a failed sync: like a supervisor, restart it shortly.
    pub(super) fn supervise(&mut self, host: usize) {
        let boot = self.hosts[host].boot;
        let delay = self.workload.between(200 * MS, 2_000 * MS);
        self.at(self.now + delay, Event::Restart { host, boot });
    }

    pub(super) fn restart(&mut self, host: usize, boot: u32) {
        if self.hosts[host].boot != boot || self.hosts[host].node.is_none() {
            return;
        }
        self.crash(host, self.crash_mode(CrashMode::TornTail));
        self.open_node(host);
    }

    /// The disk no longer opens (its metadata rotted): put in a new, empty
    /// disk, as an operator would. The node comes back as a new incarnation
    /// and is refilled by repair.
    pub(super) fn replace_disk(&mut self, host: usize) {
        let state = &mut self.hosts[host];
        state.disk_generation += 1;
        state.disk_replaced = true;
        state.faults_checked = 0;
        state.disk =
            MemDisk::new(splitmix(self.config.seed ^ state.id.0 ^ (u64::from(state.disk_generation) << 32)));
        // After healing, disks no longer fail.
        if self.stage == Stage::Safety {
            state.disk.set_faults(disk_faults(&self.config, state.id));
        }
        self.stats.disks_replaced += 1;
    }

    /// A node that still runs the release of storage format 1 is upgraded
    /// when it restarts: its directory is rewritten as that release would
    /// have left it, for the node's open to migrate under the run's faults.
    /// The rewrite stands for what the old release wrote, not for a read,
    /// so it runs with the disk's faults off (drawing nothing from the
    /// disk's generator); a directory that lost records or holds damage is
    /// left for the node to find, and the upgrade waits for the next restart.
    pub(super) fn upgrade_from_format_1(&mut self, host: usize) {
        let state = &mut self.hosts[host];
        if state.boot == 0 || !state.on_format_1 {
            return;
        }
        let faults = state.disk.faults();
        state.disk.set_faults(Faults::default());
        let rewritten = node::rewrite_as_format_1(&state.disk, &self.node_config.engine);
        state.disk.set_faults(faults);
        if rewritten.is_ok() {
            state.on_format_1 = false;
            self.stats.upgrades += 1;
        }
    }

    /// Part of property 6, at the end of a run: a node upgraded from format
    /// 1 deleted each old key with an engine tombstone, and a compaction
    /// that drops one while an older copy may lie below brings the record
    /// back. Only damage to the log may (one lost tombstone), so disks
    /// whose reads were attacked are left out.
    pub(super) fn check_format_1_records(&mut self) {
        let mut problems = Vec::new();
        for host in &mut self.hosts {
            let (struck, rates) = (host.disk.fault_counts(), host.disk.faults());
            let Some(node) = host.node.as_mut() else { continue };
            // Nor may the scan itself be attacked (a run cut short ends unhealed).
            if struck.bit_rots + struck.read_corruptions + u64::from(rates.bit_rot_per_million) > 0
                || rates.read_corrupt_per_million > 0
            {
                continue;
            }
            match node.format_1_records() {
                Ok(0) => {}
                Ok(left) => {
                    problems.push(format!("{} still holds {left} records of storage format 1", host.id))
                }
                Err(error) => {
                    problems.push(format!("{} cannot scan its records of format 1: {error}", host.id))
                }
            }
        }
        for problem in problems {
            self.violate(Property::LocalStorage, problem, vec![]);
        }
    }

    /// Property 6, checked each time a node opens after its first start.
    ///
    /// A node may come back with less than it acknowledged only where a
    /// fault struck: each bit rot or corrupted read damages one record at
    /// most (every WAL record holds one key and carries its own checksums,
    /// so recovery skips just that record), and each corrupt copy the node
    /// replaced with a fresh write may drop what it held for that key. So
    /// the keys lost may be at most the faults since the last check, and
    /// only when the node saw the damage and took a new incarnation. A loss beyond that (say, replay
    /// giving up on the rest of a log after one bad record) is the
    /// violation. A replaced disk starts over with nothing.
    pub(super) fn check_recovered(&mut self, host: usize) {
        let id = self.hosts[host].id;
        let state = &mut self.hosts[host];
        if std::mem::take(&mut state.disk_replaced) {
            self.claims.forget(id);
        }
        let faults = state.disk.fault_counts();
        let struck = faults.bit_rots + faults.read_corruptions;
        let replaced = std::mem::take(&mut state.copies_replaced);
        let excused = struck.saturating_sub(state.faults_checked) + replaced;
        state.faults_checked = struck;
        // The node must have noticed: it replaced corrupt copies, or it came
        // back as a new actor (a node that lost what it issued and kept its
        // identity could issue the same dots again).
        let incarnation = state.node.as_ref().map_or(state.incarnation, Node::incarnation);
        let detected = replaced > 0 || incarnation != state.incarnation;
        let claims: Vec<(Vec<u8>, Version)> =
            self.claims.of(id).map(|(key, object)| (key.clone(), object.clone())).collect();
        let Some(node) = self.hosts[host].node.as_mut() else { return };
        let mut lost = Vec::new();
        let mut unreadable = Vec::new();
        for (key, claimed) in &claims {
            match node.local_object(key) {
                Ok(held) => {
                    if !Version::of(&held.clone().unwrap_or_default()).includes(claimed) {
                        lost.push((key.clone(), held));
                    }
                }
                Err(error) => {
                    unreadable.push(format!("{id} cannot read {:?}: {error}", String::from_utf8_lossy(key)));
                }
            }
        }
        let mut problems = garbage(node, id, self.config.workload.keys);
        if !lost.is_empty() && (lost.len() as u64 > excused || !detected) {
            let keys: Vec<String> =
                lost.iter().take(5).map(|(key, _)| format!("{:?}", String::from_utf8_lossy(key))).collect();
            problems.push(format!(
                "{id} lost part of {} keys it had acknowledged as durable (e.g. {}); faults since the \
                 last check excuse {excused}{}",
                lost.len(),
                keys.join(", "),
                if detected { "" } else { ", and it came back under its old incarnation" }
            ));
        }
        // A copy that reads as corrupt is detected damage — right, if the
        // disk was attacked (the reads just made may have been); on an
        // untouched disk it is a bug.
        let faults = self.hosts[host].disk.fault_counts();
        if faults.bit_rots + faults.read_corruptions == 0 {
            problems.extend(unreadable);
        }
        for problem in problems {
            self.violate(Property::LocalStorage, problem, vec![]);
        }
        // What was lost (and excused) is no longer claimed: the node holds
        // what it holds, until repair brings the rest back.
        for (key, held) in lost {
            self.claims.reset(id, &key, held);
        }
    }
}

impl World {
    /// Acknowledged writes that power losses (under periodic syncs) or wipes
    /// may have lost become indeterminate for the checkers, and no others.
    ///
    /// A write is lost only if every replica that acknowledged it lost it:
    /// at least as many distinct nodes as the write needed acknowledgements
    /// must each have lost their data after the write began, while still
    /// holding something written after the node's last successful sync
    /// before that loss that the write may be part of (it finished after
    /// that sync was asked for). The rotting disk, when there is one, counts
    /// as such a node for every write. Any write with fewer such nodes has a
    /// durable copy somewhere and must survive.
    pub(super) fn excuse_lost_acknowledgements(&mut self) {
        if self.losses.is_empty() {
            return;
        }
        for op in &mut self.history.ops {
            if !op.acknowledged() {
                continue;
            }
            let (Action::Put { write, .. } | Action::Delete { write, .. }) = op.action else { continue };
            let needed = write.required(self.config.replicas).unwrap_or(1);
            let completed_ns = op.completed_ns.unwrap_or(op.invoked_ns);
            let mut nodes: Vec<NodeId> = self
                .losses
                .iter()
                .filter(|loss| loss.at_ns > op.invoked_ns && completed_ns > loss.durable_before_ns)
                .map(|loss| loss.node)
                .collect();
            // The rotting disk may lose any copy at any time.
            nodes.extend(self.config.bad_disk().map(NodeId));
            nodes.sort();
            nodes.dedup();
            if !nodes.is_empty() && nodes.len() < usize::from(needed) {
                self.history.copies_lost.insert(op.id);
            }
            if nodes.len() >= usize::from(needed) {
                self.stats.writes_excused += 1;
                op.outcome = Outcome::Indeterminate(format!(
                    "acknowledged, then {} lost what was not yet durable ({nodes:?})",
                    if nodes.len() == 1 { "its replica" } else { "its replicas" }
                ));
            }
        }
    }
}

/// Values in a node's own copies that no put wrote: torn or corrupt bytes.
fn garbage(node: &mut Node, id: NodeId, keys: u32) -> Vec<String> {
    let mut problems = Vec::new();
    for key in 0..keys {
        let Ok(Some(object)) = node.local_object(&key_bytes(key)) else { continue };
        for sibling in object.siblings() {
            if let Value::Live(bytes) = &sibling.value {
                if let ReadValue::Garbage(text) = decode_value(key, bytes) {
                    problems.push(format!("{id} recovered bytes {text:?} for k{key} that nobody wrote"));
                }
            }
        }
    }
    problems
}
