//! One coordinated request: the bookkeeping of a get or a put between the
//! moment the coordinator asks the replicas and the moment it answers.
//!
//! These types decide *what* to answer; the node decides *when* (it owns the
//! timers and the network). Nothing here performs I/O.

use crate::NodeId;
use crate::client::{ClientError, Consistency, RequestId};
use crate::message::{Acknowledged, Tag};
use crate::quorum::{Outcome, Tally};
use crate::time::Instant;
use crate::version::{CausalContext, Object, Value};

/// How a coordinated write ended, for whoever asked.
pub type WriteResult = Result<Acknowledged, ClientError>;

/// Who a coordinated write answers to.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Origin {
    Client(RequestId),
    /// A put or delete another node forwarded here; answer with
    /// `Message::ForwardReply` carrying the forwarder's tag.
    Forwarded {
        from: NodeId,
        tag: Tag,
    },
}

/// A put or delete this node coordinates: the new object has been written
/// locally, and replicas are acknowledging it.
#[derive(Debug)]
pub struct PutRequest {
    pub origin: Origin,
    pub key: Vec<u8>,
    pub object: Object,
    /// What the client saw plus the new dot: handed back on success.
    pub reply_context: CausalContext,
    pub tally: Tally,
    /// `(fallback, owner)`: the fallback nodes asked, each to keep a hint
    /// for a primary that is down. They are in the tally too.
    pub fallbacks: Vec<(NodeId, NodeId)>,
    pub replied: bool,
    pub deadline: Instant,
}

impl PutRequest {
    /// Records a replica's acknowledgement (or failure) and returns the
    /// answer to send now, if this one decided the request.
    pub fn record(&mut self, from: NodeId, success: bool) -> Option<WriteResult> {
        let outcome = self.tally.record(from, success);
        if self.replied {
            return None;
        }
        match outcome {
            Outcome::Pending => None,
            Outcome::Reached => {
                assert!(self.tally.succeeded().len() >= self.tally.needed(), "acknowledged below quorum");
                let succeeded = self.tally.succeeded();
                let is_fallback =
                    |node: &&NodeId| self.fallbacks.iter().any(|(fallback, _)| fallback == *node);
                let fallbacks = succeeded.iter().filter(is_fallback).count();
                let fallbacks = u8::try_from(fallbacks).unwrap_or(u8::MAX);
                self.answer(Ok(Acknowledged { context: self.reply_context.clone(), fallbacks }))
            }
            // Some replicas may hold the write: the outcome is unknown.
            Outcome::Unreachable => self.answer(Err(self.timeout())),
        }
    }

    /// The deadline passed: answer with a timeout unless already answered.
    pub fn expire(&mut self) -> Option<WriteResult> {
        if self.replied { None } else { self.answer(Err(self.timeout())) }
    }

    fn timeout(&self) -> ClientError {
        ClientError::Timeout {
            acknowledged: count(self.tally.succeeded().len()),
            needed: count(self.tally.needed()),
        }
    }

    fn answer(&mut self, result: WriteResult) -> Option<WriteResult> {
        assert!(!self.replied, "a put answered twice");
        self.replied = true;
        Some(result)
    }
}

/// What a read saw: the live values of the merged copies, in dot order, and
/// the context that covers them (and any deletions).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen {
    pub values: Vec<Vec<u8>>,
    pub context: CausalContext,
}

impl Seen {
    pub fn of(object: &Object) -> Seen {
        Seen { values: object.live_values().map(<[u8]>::to_vec).collect(), context: object.context().clone() }
    }
}

/// A put or delete that waits for a read of its key: it then replaces what
/// the read saw (see `client::Replaces::Read`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriteAfter {
    pub value: Value,
    pub consistency: Consistency,
    pub strict: bool,
}

/// A get this node coordinates.
#[derive(Debug)]
pub struct GetRequest {
    pub client: RequestId,
    pub key: Vec<u8>,
    /// The write to start once the read is decided, for a put or delete
    /// that reads first; `None` for a client's get.
    pub then: Option<WriteAfter>,
    pub tally: Tally,
    /// Each replica's answer, `None` when it has no copy.
    pub answers: Vec<(NodeId, Option<Object>)>,
    /// Replicas that answered with an error, such as a corrupt copy.
    pub failed: Vec<NodeId>,
    pub merged: Object,
    pub replied: bool,
    pub deadline: Instant,
}

impl GetRequest {
    pub fn new(
        client: RequestId,
        key: Vec<u8>,
        then: Option<WriteAfter>,
        tally: Tally,
        deadline: Instant,
    ) -> GetRequest {
        GetRequest {
            client,
            key,
            then,
            tally,
            answers: Vec::new(),
            failed: Vec::new(),
            merged: Object::new(),
            replied: false,
            deadline,
        }
    }

    /// Records one replica's answer: its object, or `Err(())` when it
    /// failed. Returns what the read saw, or why it failed, once this answer
    /// decided it.
    pub fn record(
        &mut self,
        from: NodeId,
        answer: Result<Option<Object>, ()>,
    ) -> Option<Result<Seen, ClientError>> {
        let fresh = self.tally.asked().contains(&from) && !self.answers.iter().any(|(node, _)| *node == from);
        let outcome = match answer {
            Ok(object) if fresh => {
                match &object {
                    // The first copy is the merge so far: a clone, not a merge.
                    Some(object) if self.answers.is_empty() => self.merged = object.clone(),
                    Some(object) => {
                        self.merged.merge(object);
                    }
                    None => {}
                }
                self.answers.push((from, object));
                self.tally.record(from, true)
            }
            Ok(_) => self.tally.outcome(),
            Err(()) => {
                if fresh && !self.failed.contains(&from) {
                    self.failed.push(from);
                }
                self.tally.record(from, false)
            }
        };
        if self.replied {
            return None;
        }
        match outcome {
            Outcome::Pending => None,
            Outcome::Reached => {
                self.replied = true;
                Some(Ok(Seen::of(&self.merged)))
            }
            // Only replicas that answered with an error fail a read. When
            // every one did, no readable copy is left to repair them from.
            Outcome::Unreachable => {
                self.replied = true;
                let failed = count(self.failed.len());
                if self.failed.len() == self.tally.asked().len() {
                    return Some(Err(ClientError::Damaged { failed }));
                }
                Some(Err(ClientError::CopiesUnreadable { failed, needed: count(self.tally.needed()) }))
            }
        }
    }

    pub fn expire(&mut self) -> Option<Result<Seen, ClientError>> {
        if self.replied {
            return None;
        }
        self.replied = true;
        Some(Err(ClientError::Timeout {
            acknowledged: count(self.tally.succeeded().len()),
            needed: count(self.tally.needed()),
        }))
    }

    pub fn finished(&self) -> bool {
        self.replied && self.tally.complete()
    }

    /// Replicas that answered with less than the merged object, or with an
    /// error: read repair sends them the merged object. A corrupt copy is
    /// rewritten from the readable ones even when those hold nothing: its
    /// bytes cannot be read back whatever happens, and left alone it would
    /// fail every read at `all` until a write replaced it.
    pub fn stale_replicas(&self) -> Vec<NodeId> {
        if self.answers.is_empty() {
            return Vec::new();
        }
        let stale = |object: &Option<Object>| match object {
            None => !self.merged.is_empty(),
            Some(object) => object.clone().merge(&self.merged),
        };
        let behind = self.answers.iter().filter(|(_, object)| stale(object)).map(|(node, _)| *node);
        behind.chain(self.failed.iter().copied()).collect()
    }
}

fn count(n: usize) -> u8 {
    u8::try_from(n).unwrap_or(u8::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::version::Actor;

    fn nodes(ids: &[u64]) -> Vec<NodeId> {
        ids.iter().copied().map(NodeId).collect()
    }

    fn object_with(node: u64, value: &str) -> Object {
        let mut object = Object::new();
        let actor = Actor { node: NodeId(node), incarnation: 1, epoch: 1 };
        object.write(actor, &CausalContext::new(), Value::Live(value.as_bytes().to_vec()), 0);
        object
    }

    fn put(needed: usize) -> PutRequest {
        PutRequest {
            origin: Origin::Client(RequestId(1)),
            key: b"k".to_vec(),
            object: Object::new(),
            reply_context: CausalContext::new(),
            tally: Tally::new(nodes(&[1, 2, 3]), needed),
            fallbacks: Vec::new(),
            replied: false,
            deadline: Instant::ZERO,
        }
    }

    #[test]
    fn put_answers_once_on_quorum() {
        let mut request = put(2);
        assert_eq!(request.record(NodeId(1), true), None);
        assert!(matches!(request.record(NodeId(2), true), Some(Ok(_))));
        assert_eq!(request.record(NodeId(3), false), None);
        assert_eq!(request.expire(), None);
    }

    #[test]
    fn put_that_cannot_reach_quorum_is_indeterminate() {
        let mut request = put(3);
        request.record(NodeId(1), true);
        let reply = request.record(NodeId(2), false).unwrap();
        let Err(error) = reply else { panic!("expected a failure, got {reply:?}") };
        assert!(error.is_indeterminate());
        assert_eq!(error, ClientError::Timeout { acknowledged: 1, needed: 3 });
    }

    #[test]
    fn get_merges_answers_and_finds_stale_replicas() {
        let tally = Tally::new(nodes(&[1, 2, 3]), 2);
        let mut request = GetRequest::new(RequestId(7), b"k".to_vec(), None, tally, Instant::ZERO);
        let fresh = object_with(1, "a");
        assert_eq!(request.record(NodeId(1), Ok(Some(fresh.clone()))), None);
        let reply = request.record(NodeId(2), Ok(None)).unwrap();
        assert!(matches!(&reply, Ok(Seen { values, .. }) if values == &[b"a".to_vec()]));
        assert_eq!(request.record(NodeId(3), Ok(Some(fresh))), None);
        assert!(request.finished());
        assert_eq!(request.stale_replicas(), nodes(&[2]));
    }

    #[test]
    fn get_ignores_duplicate_and_unknown_answers() {
        let tally = Tally::new(nodes(&[1, 2, 3]), 2);
        let mut request = GetRequest::new(RequestId(7), b"k".to_vec(), None, tally, Instant::ZERO);
        assert_eq!(request.record(NodeId(1), Ok(None)), None);
        assert_eq!(request.record(NodeId(1), Ok(None)), None);
        assert_eq!(request.record(NodeId(9), Ok(None)), None);
        assert!(
            matches!(request.record(NodeId(3), Ok(None)), Some(Ok(Seen { values, .. })) if values.is_empty())
        );
    }

    #[test]
    fn replicas_that_failed_are_repaired_too() {
        let tally = Tally::new(nodes(&[1, 2, 3]), 2);
        let mut request = GetRequest::new(RequestId(7), b"k".to_vec(), None, tally, Instant::ZERO);
        request.record(NodeId(1), Err(()));
        request.record(NodeId(2), Ok(Some(object_with(2, "v"))));
        request.record(NodeId(3), Ok(Some(object_with(2, "v"))));
        assert_eq!(request.stale_replicas(), nodes(&[1]));
    }

    #[test]
    fn a_failed_replica_is_repaired_when_the_readable_copies_hold_nothing() {
        let tally = Tally::new(nodes(&[1, 2, 3]), 3);
        let mut request = GetRequest::new(RequestId(7), b"k".to_vec(), None, tally, Instant::ZERO);
        request.record(NodeId(1), Err(()));
        request.record(NodeId(2), Ok(None));
        request.record(NodeId(3), Ok(None));
        assert_eq!(request.stale_replicas(), nodes(&[1]), "only the failed copy is rewritten");
        let tally = Tally::new(nodes(&[1, 2]), 2);
        let mut nobody_readable = GetRequest::new(RequestId(8), b"k".to_vec(), None, tally, Instant::ZERO);
        nobody_readable.record(NodeId(1), Err(()));
        nobody_readable.record(NodeId(2), Err(()));
        assert!(nobody_readable.stale_replicas().is_empty(), "no readable copy to repair from");
    }

    #[test]
    fn concurrent_answers_become_siblings_in_the_reply() {
        let tally = Tally::new(nodes(&[1, 2]), 2);
        let mut request = GetRequest::new(RequestId(7), b"k".to_vec(), None, tally, Instant::ZERO);
        request.record(NodeId(1), Ok(Some(object_with(1, "x"))));
        let reply = request.record(NodeId(2), Ok(Some(object_with(2, "y")))).unwrap();
        let Ok(Seen { values, .. }) = reply else { panic!("expected values") };
        assert_eq!(values, vec![b"x".to_vec(), b"y".to_vec()]);
        assert_eq!(request.stale_replicas(), nodes(&[1, 2]));
    }
}
