//! Disks under attack: fault knobs per disk, a supervisor that restarts
//! nodes whose storage failed, a replacement disk for one that no longer
//! opens, and property 6 — after a restart a node still holds everything it
//! acknowledged as durable, and never serves bytes nobody wrote.

use std::collections::BTreeMap;

use keel_core::NodeId;
use keel_core::disk::{CrashMode, Faults, MemDisk};
use keel_core::message::{Message, Tag};
use keel_core::node::Node;
use keel_core::version::{Object, Value};

use super::liveness::Stage;
use super::{Event, MS, World};
use crate::check::Property;
use crate::config::{FaultKind, SimConfig};
use crate::history::{ReadValue, decode_value, key_bytes};
use crate::rng::splitmix;

/// What each node has said is durable, per key: the join of every object
/// it acknowledged (as a replica) or replicated (as the coordinator, which
/// sends only after its own sync). Its recovered copy must include it.
#[derive(Debug, Default)]
pub(crate) struct Claims {
    durable: BTreeMap<(NodeId, Vec<u8>), Object>,
    /// Replicate messages delivered and not yet acknowledged: what an
    /// acknowledgement from the replica would vouch for.
    delivered: BTreeMap<(NodeId, NodeId, Tag), (Vec<u8>, Object)>,
}

impl Claims {
    fn claim(&mut self, node: NodeId, key: &[u8], object: &Object) {
        self.durable.entry((node, key.to_vec())).or_default().merge(object);
    }

    /// A message `from` sends to `to` (seen when it is sent).
    pub(crate) fn sent(&mut self, from: NodeId, to: NodeId, message: &Message) {
        match message {
            Message::Replicate { key, object, .. } => self.claim(from, key, object),
            Message::ReplicateAck { tag, result: Ok(()) } => {
                if let Some((key, object)) = self.delivered.remove(&(from, to, *tag)) {
                    self.claim(from, &key, &object);
                }
            }
            _ => {}
        }
    }

    /// A message delivered to `to`.
    pub(crate) fn delivered(&mut self, from: NodeId, to: NodeId, message: &Message) {
        if let Message::Replicate { tag, key, object } = message {
            self.delivered.insert((to, from, *tag), (key.clone(), object.clone()));
        }
    }

    /// Forgets what `node` claimed: its disk was replaced.
    fn forget(&mut self, node: NodeId) {
        self.durable.retain(|(owner, _), _| *owner != node);
    }

    /// `node` lost part of `key` to damage it detected: from now on it
    /// claims what it holds, until repair restores the rest.
    fn reset(&mut self, node: NodeId, key: &[u8], held: Option<Object>) {
        match held {
            Some(object) => self.durable.insert((node, key.to_vec()), object),
            None => self.durable.remove(&(node, key.to_vec())),
        };
    }

    fn of(&self, node: NodeId) -> impl Iterator<Item = (&Vec<u8>, &Object)> {
        self.durable
            .range((node, Vec::new())..)
            .take_while(move |((owner, _), _)| *owner == node)
            .map(|((_, key), object)| (key, object))
    }
}

/// The fault knobs of one disk for this run.
pub(crate) fn disk_faults(config: &SimConfig, node: NodeId) -> Faults {
    let faults = &config.faults;
    let on = |kind, rate| if faults.has(kind) { rate } else { 0 };
    Faults {
        read_corrupt_per_million: on(FaultKind::ReadCorruption, faults.read_corrupt_per_million),
        bit_rot_per_million: if config.bad_disk() == Some(node.0) { faults.bit_rot_per_million } else { 0 },
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
        let claims: Vec<(Vec<u8>, Object)> =
            self.claims.of(id).map(|(key, object)| (key.clone(), object.clone())).collect();
        let Some(node) = self.hosts[host].node.as_mut() else { return };
        let mut lost = Vec::new();
        let mut unreadable = Vec::new();
        for (key, claimed) in &claims {
            match node.local_object(key) {
                Ok(held) => {
                    if held.clone().unwrap_or_default().merge(claimed) {
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
