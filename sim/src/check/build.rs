//! Hand-made histories for the checkers' tests.

use keel_core::NodeId;
use keel_core::client::{ClientError, Consistency};

use crate::history::{Action, ContextSource, History, Op, OpId, Outcome, Phase, ReadValue};

pub struct Build {
    pub history: History,
}

impl Build {
    pub fn new() -> Build {
        Build { history: History::default() }
    }

    pub fn op(&mut self, key: u32, action: Action, phase: Phase, span: (u64, u64), outcome: Outcome) -> OpId {
        let id = self.history.ops.len();
        self.history.ops.push(Op {
            id,
            client: 0,
            node: NodeId(1),
            key,
            action,
            phase,
            invoked_ns: span.0,
            completed_ns: Some(span.1),
            // Spans in tests are distinct instants; their order is the order of time.
            invoked_seq: span.0,
            completed_seq: Some(span.1),
            outcome,
        });
        id
    }

    pub fn put_with(
        &mut self,
        key: u32,
        context: ContextSource,
        write: Consistency,
        span: (u64, u64),
    ) -> OpId {
        let action = Action::Put { write, context, value_bytes: 0 };
        self.op(key, action, Phase::Safety, span, Outcome::Written)
    }

    pub fn put(&mut self, key: u32, context: ContextSource, start: u64, end: u64) -> OpId {
        self.put_with(key, context, Consistency::Quorum, (start, end))
    }

    pub fn delete(&mut self, key: u32, context: ContextSource, start: u64, end: u64) -> OpId {
        let action = Action::Delete { write: Consistency::Quorum, context };
        self.op(key, action, Phase::Safety, (start, end), Outcome::Written)
    }

    /// A delete that read first and was acknowledged, its read having seen `seen`.
    pub fn delete_read_first(&mut self, key: u32, seen: &[OpId], start: u64, end: u64) -> OpId {
        let action = Action::Delete { write: Consistency::Quorum, context: ContextSource::ReadFirst };
        let replaced = Outcome::Replaced(seen.iter().map(|&value| ReadValue::Put(value)).collect());
        self.op(key, action, Phase::Safety, (start, end), replaced)
    }

    pub fn get_found(&mut self, key: u32, values: &[OpId], start: u64, end: u64) -> OpId {
        let values = values.iter().map(|&value| ReadValue::Put(value)).collect();
        let action = Action::Get { read: Consistency::Quorum };
        self.op(key, action, Phase::Safety, (start, end), Outcome::Found(values))
    }

    pub fn get_not_found(&mut self, key: u32, start: u64, end: u64) -> OpId {
        self.op(
            key,
            Action::Get { read: Consistency::Quorum },
            Phase::Safety,
            (start, end),
            Outcome::NotFound,
        )
    }

    pub fn final_read(&mut self, key: u32, values: &[OpId], at: u64) -> OpId {
        let values: Vec<ReadValue> = values.iter().map(|&value| ReadValue::Put(value)).collect();
        let outcome = if values.is_empty() { Outcome::NotFound } else { Outcome::Found(values) };
        self.op(key, Action::Get { read: Consistency::All }, Phase::Final, (at, at + 1), outcome)
    }

    pub fn set_outcome(&mut self, op: OpId, outcome: Outcome) {
        self.history.ops[op].outcome = outcome;
    }

    pub fn fail(&mut self, op: OpId) {
        self.set_outcome(op, Outcome::Failed(ClientError::Unavailable { needed: 2, reachable: 1 }));
    }
}
