//! The record of what clients asked and what they were told: the only input
//! of the checkers besides the replicas' final states.

use core::fmt;

use keel_core::NodeId;
use keel_core::client::{ClientError, Consistency};

/// Index of an operation in the history. A put's value is named by its op.
pub type OpId = usize;

/// Where a write's causal context came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContextSource {
    /// No context sent: the write replaces whatever the coordinator holds.
    Overwrite,
    /// An empty context: the write is concurrent with everything stored.
    Empty,
    /// The context of this get's reply.
    Read(OpId),
    /// The context of this write's reply.
    Written(OpId),
    /// No context sent: the node reads the key at the write's consistency
    /// and replaces what that read saw, as if the client had read and
    /// passed back the context. Acknowledged, it says what that was
    /// ([`Outcome::Replaced`]).
    ReadFirst,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    Get {
        read: Consistency,
    },
    /// Writes the value named by this op's id.
    Put {
        write: Consistency,
        context: ContextSource,
        value_bytes: u32,
    },
    Delete {
        write: Consistency,
        context: ContextSource,
    },
}

/// One value returned by a get.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReadValue {
    /// The value written by this put.
    Put(OpId),
    /// Bytes that are no value any put wrote to this key.
    Garbage(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// No answer (yet): for a write, indeterminate.
    Pending,
    Found(Vec<ReadValue>),
    NotFound,
    Written,
    /// A write that read first, acknowledged: the live values its read saw,
    /// every one of them replaced. None when the key held none (a delete
    /// then wrote nothing).
    Replaced(Vec<ReadValue>),
    /// The node said the request failed and nothing was written.
    Failed(ClientError),
    /// The request may or may not have taken effect.
    Indeterminate(String),
}

/// When in the run an operation was issued.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Safety,
    /// After healing, once the cluster had time to notice: must succeed.
    Liveness,
    /// Reads at `all` that drive read repair before the final check.
    Repair,
    /// The final read of each key, after convergence.
    Final,
}

#[derive(Clone, Debug)]
pub struct Op {
    pub id: OpId,
    pub client: u32,
    pub node: NodeId,
    pub key: u32,
    pub action: Action,
    pub phase: Phase,
    pub invoked_ns: u64,
    pub completed_ns: Option<u64>,
    /// Where the invocation and the completion fall in the order the world
    /// handled its events. Events at one simulated instant keep their order
    /// here: a node that is a key's only replica answers within the call,
    /// so an op can complete at the instant it began and the next one begin.
    pub invoked_seq: u64,
    pub completed_seq: Option<u64>,
    pub outcome: Outcome,
}

/// A point in a run: simulated time, then the order of events at that time.
pub type Moment = (u64, u64);

/// Later than every event of a run: the end of an op that may still act.
pub const NEVER: Moment = (u64::MAX, u64::MAX);

impl Op {
    pub fn is_write(&self) -> bool {
        !matches!(self.action, Action::Get { .. })
    }

    pub fn context(&self) -> Option<ContextSource> {
        match self.action {
            Action::Get { .. } => None,
            Action::Put { context, .. } | Action::Delete { context, .. } => Some(context),
        }
    }

    /// A write that definitely took effect.
    pub fn acknowledged(&self) -> bool {
        self.is_write() && matches!(self.outcome, Outcome::Written | Outcome::Replaced(_))
    }

    /// A write that definitely did not take effect.
    pub fn definitely_failed(&self) -> bool {
        matches!(self.outcome, Outcome::Failed(_))
    }

    pub fn invoked(&self) -> Moment {
        (self.invoked_ns, self.invoked_seq)
    }

    pub fn completed(&self) -> Option<Moment> {
        Some((self.completed_ns?, self.completed_seq?))
    }

    /// The end of the interval in which the op could have taken effect.
    pub fn end(&self) -> Moment {
        match self.outcome {
            Outcome::Pending | Outcome::Indeterminate(_) => NEVER,
            _ => self.completed().unwrap_or(NEVER),
        }
    }

    /// The values a read saw: a get's, or those of the read a write did
    /// first, which it replaced.
    pub fn read_values(&self) -> &[ReadValue] {
        match &self.outcome {
            Outcome::Found(values) | Outcome::Replaced(values) => values,
            _ => &[],
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = |ns: u64| ns as f64 / 1e6;
        let completed = self.completed_ns.map_or("…".to_owned(), |ns| format!("{:.3}", ms(ns)));
        write!(
            f,
            "op {:>4} [{:.3}ms → {completed}ms] client {} via {} k{} {:?} {:?}: {:?}",
            self.id,
            ms(self.invoked_ns),
            self.client,
            self.node,
            self.key,
            self.phase,
            self.action,
            self.outcome
        )
    }
}

/// Every operation of a run, in invocation order.
#[derive(Clone, Debug, Default)]
pub struct History {
    pub ops: Vec<Op>,
    /// Acknowledged writes some of whose acknowledging copies a power loss
    /// or a wipe may have taken (not all: those become indeterminate). A
    /// read may miss them even with R + W > N.
    pub copies_lost: std::collections::BTreeSet<OpId>,
    /// Invocations and completions recorded so far: the next `_seq`.
    pub events: u64,
}

impl History {
    /// Numbers the next invocation or completion.
    pub fn next_seq(&mut self) -> u64 {
        self.events += 1;
        self.events
    }

    pub fn op(&self, id: OpId) -> &Op {
        &self.ops[id]
    }

    pub fn ops_on(&self, key: u32) -> impl Iterator<Item = &Op> {
        self.ops.iter().filter(move |op| op.key == key)
    }

    /// Op ids grouped by key, indexed by key.
    pub fn by_key(&self) -> Vec<Vec<OpId>> {
        let keys = self.ops.iter().map(|op| op.key as usize + 1).max().unwrap_or(0);
        let mut by_key = vec![Vec::new(); keys];
        for op in &self.ops {
            by_key[op.key as usize].push(op.id);
        }
        by_key
    }

    pub fn keys(&self) -> Vec<u32> {
        let mut keys: Vec<u32> = self.ops.iter().map(|op| op.key).collect();
        keys.sort_unstable();
        keys.dedup();
        keys
    }
}

/// The bytes a put writes: they name the key and the op, so a read can tell
/// which put a value came from, and padding varies the size.
pub fn encode_value(key: u32, op: OpId, padding: u32) -> Vec<u8> {
    let mut bytes = format!("k{key}=v{op}|").into_bytes();
    bytes.resize(bytes.len() + padding as usize, b'.');
    bytes
}

/// The op that wrote `bytes` to `key`, or why they are garbage.
pub fn decode_value(key: u32, bytes: &[u8]) -> ReadValue {
    let text = String::from_utf8_lossy(bytes);
    let parsed = text
        .strip_prefix(&format!("k{key}=v"))
        .and_then(|rest| rest.split_once('|'))
        .filter(|(_, padding)| padding.bytes().all(|byte| byte == b'.'))
        .and_then(|(op, _)| op.parse::<OpId>().ok());
    match parsed {
        Some(op) => ReadValue::Put(op),
        None => ReadValue::Garbage(text.chars().take(40).collect()),
    }
}

pub fn key_bytes(key: u32) -> Vec<u8> {
    format!("k{key}").into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_decode_to_their_op_and_reject_anything_else() {
        assert_eq!(decode_value(3, &encode_value(3, 42, 10)), ReadValue::Put(42));
        assert_eq!(decode_value(3, &encode_value(3, 42, 0)), ReadValue::Put(42));
        assert!(matches!(decode_value(4, &encode_value(3, 42, 0)), ReadValue::Garbage(_)));
        assert!(matches!(decode_value(3, b"k3=v42|..x"), ReadValue::Garbage(_)));
        assert!(matches!(decode_value(3, &[0xff, 0x00]), ReadValue::Garbage(_)));
    }
}
