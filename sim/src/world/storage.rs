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

    /// Forgets what `node` claimed: it detected damage and may now hold
    /// less, until repair restores it.
    fn forget(&mut self, node: NodeId) {
        self.durable.retain(|(owner, _), _| *owner != node);
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
        state.damage_seen = true;
        state.disk =
            MemDisk::new(splitmix(self.config.seed ^ state.id.0 ^ (u64::from(state.disk_generation) << 32)));
        // After healing, disks no longer fail.
        if self.stage == Stage::Safety {
            state.disk.set_faults(disk_faults(&self.config, state.id));
        }
        self.stats.disks_replaced += 1;
    }

    /// Property 6, checked each time a node opens after its first start.
    pub(super) fn check_recovered(&mut self, host: usize) {
        let id = self.hosts[host].id;
        // A node may come back with less than it acknowledged only if its
        // recovery saw the damage (it then became a new actor), or its disk
        // was replaced. Loss nobody noticed is the violation.
        let detected = self.hosts[host].node.as_ref().is_some_and(Node::recovered_from_damage);
        let rotted = detected || self.hosts[host].damage_seen;
        let claims: Vec<(Vec<u8>, Object)> =
            self.claims.of(id).map(|(key, object)| (key.clone(), object.clone())).collect();
        let Some(node) = self.hosts[host].node.as_mut() else { return };
        let mut problems = Vec::new();
        let mut unreadable = Vec::new();
        for (key, claimed) in &claims {
            match node.local_object(key) {
                Ok(held) => {
                    let missing = held.clone().unwrap_or_default().merge(claimed);
                    if missing && !rotted {
                        problems.push(format!(
                            "{id} lost part of {:?} it had acknowledged as durable",
                            String::from_utf8_lossy(key)
                        ));
                    }
                }
                Err(error) => {
                    unreadable.push(format!("{id} cannot read {:?}: {error}", String::from_utf8_lossy(key)));
                }
            }
        }
        problems.extend(garbage(node, id, self.config.workload.keys));
        // A copy that reads as corrupt is detected damage — right, if the
        // disk was attacked (the reads just made may have been); on an
        // untouched disk it is a bug.
        let faults = self.hosts[host].disk.fault_counts();
        if faults.bit_rots == 0 && faults.read_corruptions == 0 {
            problems.extend(unreadable);
        }
        for problem in problems {
            self.violate(Property::LocalStorage, problem, vec![]);
        }
        if rotted {
            self.claims.forget(id);
            self.hosts[host].damage_seen = false;
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
