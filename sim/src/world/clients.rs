//! Clients: a random workload of gets, puts and deletes over a small key
//! space, each op recorded in the history with what the client was told.

use std::collections::BTreeMap;

use keel_core::client::{
    ClientError, Consistency, Context, Delete, Get, Put, Replaced, Replaces, Reply, Request, RequestId,
};

use super::{Event, MS, World};
use crate::history::{
    Action, ContextSource, Op, OpId, Outcome, Phase, decode_value, encode_value, key_bytes,
};
use crate::world::liveness::Stage;

#[derive(Debug)]
pub(crate) struct Client {
    busy: Option<OpId>,
    /// The last context this client obtained for each key, and its source.
    contexts: BTreeMap<u32, (ContextSource, Context)>,
    /// Ops still to issue in the liveness phase.
    pub(crate) liveness_left: u32,
}

impl Client {
    pub(crate) fn new() -> Client {
        Client { busy: None, contexts: BTreeMap::new(), liveness_left: 0 }
    }

    pub(crate) fn idle(&self) -> bool {
        self.busy.is_none() && self.liveness_left == 0
    }
}

impl World {
    pub(super) fn client_wake(&mut self, client: usize) {
        if self.clients[client].busy.is_some() {
            return;
        }
        let phase = match self.stage {
            Stage::Safety if self.history.ops.len() < self.config.workload.ops as usize => Phase::Safety,
            Stage::Liveness if self.clients[client].liveness_left > 0 => {
                self.clients[client].liveness_left -= 1;
                Phase::Liveness
            }
            _ => return,
        };
        let (key, action) = self.draw_op(client);
        let host = self.workload.below(self.hosts.len() as u64) as usize;
        // Busy before issuing: a refused request completes at once.
        self.clients[client].busy = Some(self.history.ops.len());
        self.issue(client as u32, host, phase, key, action);
    }

    /// Picks the next op of `client`: its kind, key, consistency and context.
    fn draw_op(&mut self, client: usize) -> (u32, Action) {
        let workload = self.config.workload.clone();
        let key = self.workload.below(u64::from(workload.keys)) as u32;
        let [gets, puts, deletes] = workload.weights;
        let roll = self.workload.below(u64::from(gets + puts + deletes).max(1)) as u32;
        if roll < gets {
            return (key, Action::Get { read: self.draw_consistency() });
        }
        let consistency = self.draw_write_consistency();
        let context = if self.workload.below(100) < u64::from(workload.context_percent) {
            self.clients[client].contexts.get(&key).map_or(ContextSource::Empty, |(source, _)| *source)
        } else if self.workload.below(100) < u64::from(workload.overwrite_percent) {
            // No context: half replace what the primary holds (a plain
            // SET), half what a read sees (SET … GET, DEL).
            if self.workload.coin() { ContextSource::Overwrite } else { ContextSource::ReadFirst }
        } else {
            ContextSource::Empty
        };
        if roll < gets + puts {
            let value_bytes = if self.workload.below(10) == 0 {
                self.workload.between(64, 4096)
            } else {
                self.workload.below(64)
            };
            (key, Action::Put { write: consistency, context, value_bytes: value_bytes as u32 })
        } else {
            (key, Action::Delete { write: consistency, context })
        }
    }

    /// A write's consistency: as a read's, but never fewer acknowledgements
    /// than the run requires (see `SimConfig::write_replicas_min`).
    fn draw_write_consistency(&mut self) -> Consistency {
        let drawn = self.draw_consistency();
        let (replicas, min) = (self.config.replicas, self.config.write_replicas_min());
        if drawn.required(replicas).unwrap_or(0) < min { Consistency::Replicas(min) } else { drawn }
    }

    /// Strict workloads use quorum or all for everything, so R + W > N.
    fn draw_consistency(&mut self) -> Consistency {
        let replicas = u64::from(self.config.replicas);
        if self.config.workload.strict {
            return if self.workload.coin() { Consistency::Quorum } else { Consistency::All };
        }
        match self.workload.below(4) {
            0 => Consistency::One,
            1 => Consistency::Quorum,
            2 => Consistency::All,
            _ => Consistency::Replicas(self.workload.between(1, replicas) as u8),
        }
    }

    /// Records `action` in the history and sends it to `host`.
    pub(super) fn issue(&mut self, client: u32, host: usize, phase: Phase, key: u32, action: Action) -> OpId {
        let id = self.history.ops.len();
        let request = self.request_for(client, id, key, &action);
        let invoked_seq = self.history.next_seq();
        self.history.ops.push(Op {
            id,
            client,
            node: self.hosts[host].id,
            key,
            action,
            phase,
            invoked_ns: self.now,
            completed_ns: None,
            invoked_seq,
            completed_seq: None,
            outcome: Outcome::Pending,
        });
        if self.hosts[host].node.is_none() {
            // Connection refused: nothing was sent, nothing written.
            let refused = keel_core::client::ClientError::Unavailable { needed: 1, reachable: 0 };
            self.complete(id, Outcome::Failed(refused));
            return id;
        }
        self.request_next += 1;
        let request_id = RequestId(self.request_next);
        self.owners.insert((host, request_id), id);
        let give_up = self.now + 3 * request_timeout_ns(self);
        self.at(give_up, Event::ClientGiveUp { op: id });
        self.input(host, keel_core::node::Input::Client { id: request_id, request });
        id
    }

    fn request_for(&self, client: u32, op: OpId, key: u32, action: &Action) -> Request {
        let key_bytes = key_bytes(key);
        let replaces = |source: ContextSource| match source {
            ContextSource::Overwrite => Replaces::Held,
            ContextSource::ReadFirst => Replaces::Read,
            ContextSource::Empty => Replaces::Context(Context::default()),
            ContextSource::Read(_) | ContextSource::Written(_) => {
                let contexts = &self.clients.get(client as usize).map(|client| &client.contexts);
                let context =
                    contexts.and_then(|contexts| contexts.get(&key)).map(|(_, context)| context.clone());
                context.map_or(Replaces::Held, Replaces::Context)
            }
        };
        // Property 7 holds only without fallbacks: strict workloads ask for
        // that, the others let writes count hints (sloppy quorum).
        let strict = self.config.workload.strict;
        match *action {
            Action::Get { read } => Request::Get(Get { key: key_bytes, read }),
            Action::Put { write, context: source, value_bytes } => Request::Put(Put {
                key: key_bytes,
                value: encode_value(key, op, value_bytes),
                replaces: replaces(source),
                write,
                strict,
            }),
            Action::Delete { write, context: source } => {
                Request::Delete(Delete { key: key_bytes, replaces: replaces(source), write, strict })
            }
        }
    }

    pub(super) fn on_reply(&mut self, host: usize, id: RequestId, reply: Reply) {
        let Some(op) = self.owners.remove(&(host, id)) else { return };
        let key = self.history.op(op).key;
        let decode = |values: Vec<Vec<u8>>| values.iter().map(|bytes| decode_value(key, bytes)).collect();
        let failed = |error: ClientError| {
            if error.is_indeterminate() {
                Outcome::Indeterminate(error.to_string())
            } else {
                Outcome::Failed(error)
            }
        };
        let (outcome, context) = match reply {
            Reply::Read(Ok(read)) => {
                let outcome =
                    if read.is_found() { Outcome::Found(decode(read.values)) } else { Outcome::NotFound };
                (outcome, Some((ContextSource::Read(op), read.context)))
            }
            Reply::Write(Ok(written)) => {
                let outcome = match written.replaced {
                    Replaced::Values(values) => Outcome::Replaced(decode(values)),
                    Replaced::NotRead | Replaced::Unreadable => Outcome::Written,
                };
                (outcome, Some((ContextSource::Written(op), written.context)))
            }
            Reply::Read(Err(error)) | Reply::Write(Err(error)) => (failed(error), None),
        };
        let client = self.history.op(op).client as usize;
        if let (Some(context), Some(state)) = (context, self.clients.get_mut(client)) {
            state.contexts.insert(key, context);
        }
        self.trace.record(&[op as u64, self.now]);
        self.complete(op, outcome);
    }

    pub(super) fn client_give_up(&mut self, op: OpId) {
        if self.history.op(op).outcome != Outcome::Pending {
            return;
        }
        self.owners.retain(|_, owned| *owned != op);
        self.complete_indeterminate(op, "no answer before the client gave up");
    }

    pub(super) fn complete_indeterminate(&mut self, op: OpId, why: &str) {
        self.complete(op, Outcome::Indeterminate(why.to_owned()));
    }

    /// Records the outcome of `op` and lets its client go on.
    fn complete(&mut self, op: OpId, outcome: Outcome) {
        match outcome {
            Outcome::Failed(_) => self.stats.ops_failed += 1,
            Outcome::Indeterminate(_) => self.stats.ops_indeterminate += 1,
            _ => {}
        }
        let completed_seq = self.history.next_seq();
        let entry = &mut self.history.ops[op];
        entry.completed_ns = Some(self.now);
        entry.completed_seq = Some(completed_seq);
        entry.outcome = outcome;
        let (client, phase) = (entry.client as usize, entry.phase);
        match phase {
            Phase::Safety | Phase::Liveness => {
                if let Some(state) = self.clients.get_mut(client) {
                    state.busy = None;
                }
                let think = self.workload.below(self.config.workload.think_ms_max.max(1) * MS);
                self.at(self.now + think, Event::ClientWake { client });
                if phase == Phase::Liveness {
                    self.liveness_progress();
                } else {
                    self.safety_progress();
                }
            }
            Phase::Final if self.retry_final_read(op) => {}
            Phase::Repair | Phase::Final => self.check_done(),
        }
    }
}

fn request_timeout_ns(world: &World) -> u64 {
    u64::try_from(world.node_config.request_timeout.as_nanos()).unwrap_or(u64::MAX)
}
