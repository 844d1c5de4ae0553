//! Messages between nodes.
//!
//! On the wire every message is one [`crate::frame`]: postcard inside a
//! length and a crc32c. Decoding never panics on any bytes, and what it
//! gives upholds the invariants of its types: keys of 1 to
//! [`KEY_BYTES_MAX`] bytes, objects well formed with at most
//! [`OBJECT_SIBLINGS_MAX`](crate::version::OBJECT_SIBLINGS_MAX) siblings,
//! contexts in normal form. Bytes that break one are refused as malformed.
//! Encoding checks the same bounds, so a node never sends what its peers
//! would refuse.

use serde::{Deserialize, Deserializer, Serialize};
use thiserror::Error;

use crate::NodeId;
use crate::client::{ClientError, Consistency};
use crate::frame::{self, FrameError};
use crate::merkle;
use crate::version::{CausalContext, Object, Value};

/// The largest message payload accepted, a little above the largest object a
/// coordinator will store (see `Config::object_bytes_max`).
pub const MESSAGE_BYTES_MAX: u32 = 80 * 1024 * 1024;

/// The longest key a message may name: the longest a node can be configured
/// to accept (`Config::key_bytes_max`) and its storage engine can hold.
pub const KEY_BYTES_MAX: usize = (64 << 10) - 1;

/// Names one request a node sent, so that answers can be matched to it.
/// `boot` is drawn anew every time the node opens, so an answer to a request
/// made before a restart never matches a request made after it.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
pub struct Tag {
    pub boot: u64,
    pub seq: u64,
}

#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum Message {
    /// "I am alive, in this boot." Any message counts as a sign of life;
    /// the boot lets peers address forwards to this life of the node.
    Heartbeat {
        boot: u64,
    },
    /// A put or delete handed to a primary replica of its key to coordinate.
    /// `target_boot` is the primary's boot as the forwarder knows it: a
    /// forward delayed past a restart is refused, because the restarted node
    /// no longer remembers which forwards it already coordinated.
    Forward {
        tag: Tag,
        target_boot: u64,
        write: Write,
        /// The forwarder has no other primary left to try: if the target's
        /// own copy of the key is unreadable, it replaces it rather than
        /// refusing (see `node::write`).
        replace_unreadable: bool,
    },
    /// The outcome of a forwarded write, or why it failed.
    ForwardReply {
        tag: Tag,
        result: Result<Acknowledged, ClientError>,
    },
    /// Merge `object` into your copy of `key`; answer once that is durable.
    Replicate {
        tag: Tag,
        #[serde(serialize_with = "serde_bytes::serialize", deserialize_with = "decode_key")]
        key: Vec<u8>,
        object: Object,
    },
    ReplicateAck {
        tag: Tag,
        result: Result<(), ReplicaError>,
    },
    /// Sloppy quorum: `owner`, a replica of `key`, is down, so keep `object`
    /// as a hint for it and hand it over once it is back. Answered with
    /// `ReplicateAck` once the hint is durable.
    Hint {
        tag: Tag,
        owner: NodeId,
        #[serde(serialize_with = "serde_bytes::serialize", deserialize_with = "decode_key")]
        key: Vec<u8>,
        object: Object,
    },
    /// A fallback hands over the hint it kept for this node, a replica of
    /// `key`: merge it, as for `Replicate`, and answer with `ReplicateAck`
    /// once that is durable (the fallback then deletes the hint).
    HintDelivery {
        tag: Tag,
        #[serde(serialize_with = "serde_bytes::serialize", deserialize_with = "decode_key")]
        key: Vec<u8>,
        object: Object,
    },
    /// Send your copy of `key`.
    Read {
        tag: Tag,
        #[serde(serialize_with = "serde_bytes::serialize", deserialize_with = "decode_key")]
        key: Vec<u8>,
    },
    ReadReply {
        tag: Tag,
        result: Result<Option<Object>, ReplicaError>,
    },
    /// Read repair: merge `object` into your copy of `key`. No answer.
    Repair {
        #[serde(serialize_with = "serde_bytes::serialize", deserialize_with = "decode_key")]
        key: Vec<u8>,
        object: Object,
    },
    /// One step of an anti-entropy exchange of a range both nodes replicate.
    TreeRequest {
        tag: Tag,
        request: merkle::Request,
    },
    TreeReply {
        tag: Tag,
        reply: merkle::Reply,
    },
}

/// A put or delete on its way to the primary that coordinates it: the
/// client's request as the node it reached resolved it (a context parsed, a
/// read done first).
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Write {
    #[serde(serialize_with = "serde_bytes::serialize", deserialize_with = "decode_key")]
    pub key: Vec<u8>,
    /// A live value for a put, a tombstone for a delete.
    pub value: Value,
    /// The versions the write replaces: those this context covers, or with
    /// `None` whatever the primary holds.
    pub seen: Option<CausalContext>,
    pub consistency: Consistency,
    /// No fallback replicas (see `client::Put::strict`).
    pub strict: bool,
}

/// A coordinated write that reached its consistency level.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Acknowledged {
    /// What the write replaced plus its own dot: the client's new context.
    pub context: CausalContext,
    /// How many of the acknowledgements came from fallback nodes.
    pub fallbacks: u8,
}

/// Why a replica could not serve a read or a write.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Error, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ReplicaError {
    #[error("replica storage failed a sync and refuses writes")]
    StorageFailed,
    #[error("replica found its copy corrupt")]
    Corrupt,
    #[error("replica is overloaded")]
    Overloaded,
    /// Merged with the replica's copy, the object would hold more siblings
    /// than any object may: the replica kept its copy.
    #[error("replica's copy merged with the object would hold too many siblings")]
    SiblingsTooMany,
}

/// Decodes a key, refusing one that is empty or over [`KEY_BYTES_MAX`].
fn decode_key<'de, D: Deserializer<'de>>(decoder: D) -> Result<Vec<u8>, D::Error> {
    let key: Vec<u8> = serde_bytes::deserialize(decoder)?;
    check_key(&key).map_err(serde::de::Error::custom)?;
    Ok(key)
}

fn check_key(key: &[u8]) -> Result<(), String> {
    if key.is_empty() || key.len() > KEY_BYTES_MAX {
        return Err(format!("a key of {} bytes, outside 1..={KEY_BYTES_MAX}", key.len()));
    }
    Ok(())
}

impl Message {
    /// A short name for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Message::Heartbeat { .. } => "heartbeat",
            Message::Forward { .. } => "forward",
            Message::ForwardReply { .. } => "forward_reply",
            Message::Replicate { .. } => "replicate",
            Message::ReplicateAck { .. } => "replicate_ack",
            Message::Hint { .. } => "hint",
            Message::HintDelivery { .. } => "hint_delivery",
            Message::Read { .. } => "read",
            Message::ReadReply { .. } => "read_reply",
            Message::Repair { .. } => "repair",
            Message::TreeRequest { .. } => "tree_request",
            Message::TreeReply { .. } => "tree_reply",
        }
    }

    /// Appends this message as one frame. A message that breaks a bound
    /// its decoder enforces is refused here, on the sending side: a bug in
    /// the sender, which its peers must never have to find.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), FrameError> {
        self.check().map_err(|reason| FrameError::Invalid(format!("{} message: {reason}", self.kind())))?;
        frame::encode(self, MESSAGE_BYTES_MAX, out)
    }

    /// What decoding enforces, checked on a message built here.
    fn check(&self) -> Result<(), String> {
        let check_object = |object: &Object| object.invariants().map_err(|error| error.to_string());
        match self {
            Message::Forward { write, .. } => check_key(&write.key),
            Message::Replicate { key, object, .. }
            | Message::Hint { key, object, .. }
            | Message::HintDelivery { key, object, .. }
            | Message::Repair { key, object } => {
                check_key(key)?;
                check_object(object)
            }
            Message::Read { key, .. } => check_key(key),
            Message::ReadReply { result: Ok(Some(object)), .. } => check_object(object),
            Message::TreeRequest { request, .. } => request.check().map_err(|error| error.to_string()),
            Message::TreeReply { reply, .. } => reply.check().map_err(|error| error.to_string()),
            Message::Heartbeat { .. }
            | Message::ForwardReply { .. }
            | Message::ReplicateAck { .. }
            | Message::ReadReply { .. } => Ok(()),
        }
    }

    /// Reads one message from the front of `buf`: `Ok(None)` if the frame is
    /// not complete yet, else the message and the bytes it used.
    pub fn decode(buf: &[u8]) -> Result<Option<(Message, usize)>, FrameError> {
        frame::decode(buf, MESSAGE_BYTES_MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::NodeId;
    use crate::version::{Actor, Dot, OBJECT_SIBLINGS_MAX, Sibling};

    fn actor(node: u64) -> Actor {
        Actor { node: NodeId(node), incarnation: 5, epoch: 1 }
    }

    fn sample() -> Vec<Message> {
        let tag = Tag { boot: 3, seq: 9 };
        let mut object = Object::new();
        object.write(actor(2), &CausalContext::new(), Value::Live(b"v".to_vec()), 17);
        let write = Write {
            key: b"k".to_vec(),
            value: Value::Tombstone,
            seen: Some(object.context().clone()),
            consistency: Consistency::All,
            strict: true,
        };
        vec![
            Message::Heartbeat { boot: 7 },
            Message::Forward { tag, target_boot: 7, write, replace_unreadable: false },
            Message::Replicate { tag, key: b"k".to_vec(), object: object.clone() },
            Message::ReplicateAck { tag, result: Err(ReplicaError::Corrupt) },
            Message::Hint { tag, owner: NodeId(3), key: b"k".to_vec(), object: object.clone() },
            Message::HintDelivery { tag, key: b"k".to_vec(), object: object.clone() },
            Message::ReadReply { tag, result: Ok(Some(object.clone())) },
            Message::ForwardReply { tag, result: Err(ClientError::Damaged { failed: 2 }) },
            Message::Repair { key: vec![0xff; KEY_BYTES_MAX], object },
        ]
    }

    #[test]
    fn messages_round_trip_back_to_back() {
        let mut wire = Vec::new();
        for message in sample() {
            message.encode(&mut wire).unwrap();
        }
        let mut rest = wire.as_slice();
        for expected in sample() {
            let (message, used) = Message::decode(rest).unwrap().unwrap();
            assert_eq!(message, expected);
            rest = &rest[used..];
        }
        assert!(rest.is_empty());
    }

    #[test]
    fn truncated_or_damaged_bytes_are_errors_not_panics() {
        let mut wire = Vec::new();
        sample()[2].encode(&mut wire).unwrap();
        for cut in 0..wire.len() {
            assert_eq!(Message::decode(&wire[..cut]), Ok(None));
        }
        for position in 0..wire.len() {
            let mut damaged = wire.clone();
            damaged[position] ^= 0x40;
            assert!(!matches!(Message::decode(&damaged), Ok(Some(_))), "flip at {position} went unnoticed");
        }
    }

    /// An object as bytes, laid out as `Object` is but with no check: what
    /// a buggy or hostile peer could send.
    #[derive(Serialize)]
    struct RawObject {
        siblings: Vec<Sibling>,
        context: CausalContext,
    }

    fn sibling(node: u64, counter: u64) -> Sibling {
        Sibling { dot: Dot { actor: actor(node), counter }, timestamp_ms: 1, value: Value::Live(vec![b'x']) }
    }

    /// A context that covers `(node, 1..=n)` for each pair.
    fn covering(entries: &[(u64, u64)]) -> CausalContext {
        let mut context = CausalContext::new();
        for &(node, n) in entries {
            for counter in 1..=n {
                context.insert(Dot { actor: actor(node), counter });
            }
        }
        context
    }

    /// A whole `Replicate` frame around `object`, checksum and all.
    fn replicate_frame(key: &[u8], object: &RawObject) -> Vec<u8> {
        // `Replicate` is the fourth variant; postcard writes its index, then its fields.
        let payload = (3u8, Tag { boot: 1, seq: 2 }, serde_bytes::Bytes::new(key), object);
        let payload = postcard::to_allocvec(&payload).unwrap();
        let mut frame = (payload.len() as u32).to_le_bytes().to_vec();
        frame.extend_from_slice(&crc32c::crc32c(&payload).to_le_bytes());
        frame.extend_from_slice(&payload);
        frame
    }

    fn decodes(key: &[u8], siblings: Vec<Sibling>, context: CausalContext) -> Result<Message, FrameError> {
        let frame = replicate_frame(key, &RawObject { siblings, context });
        Message::decode(&frame).map(|decoded| decoded.expect("a whole frame").0)
    }

    #[test]
    fn the_raw_layout_is_the_layout_of_a_replicate() {
        let good = decodes(b"k", vec![sibling(1, 1), sibling(2, 1)], covering(&[(1, 1), (2, 1)]));
        let Ok(Message::Replicate { key, object, .. }) = good else { panic!("{good:?}") };
        assert_eq!((key.as_slice(), object.siblings().len()), (b"k".as_slice(), 2));
    }

    #[test]
    fn objects_that_break_their_invariants_are_refused_at_decode() {
        let context = covering(&[(1, 3), (2, 3)]);
        let malformed = |result: Result<Message, FrameError>| matches!(result, Err(FrameError::Malformed(_)));
        let unsorted = vec![sibling(2, 1), sibling(1, 1)];
        assert!(malformed(decodes(b"k", unsorted, context.clone())), "siblings out of dot order");
        let duplicate = vec![sibling(1, 2), sibling(1, 2)];
        assert!(malformed(decodes(b"k", duplicate, context.clone())), "one dot twice");
        let uncovered = vec![sibling(1, 1), sibling(1, 4)];
        assert!(malformed(decodes(b"k", uncovered, context.clone())), "a dot outside the context");
        let zero = vec![sibling(1, 0)];
        assert!(malformed(decodes(b"k", zero, context.clone())), "a counter of 0");
    }

    #[test]
    fn keys_and_sibling_counts_are_bounded_at_decode() {
        let one = || vec![sibling(1, 1)];
        let context = covering(&[(1, 1)]);
        let malformed = |result: Result<Message, FrameError>| matches!(result, Err(FrameError::Malformed(_)));
        assert!(decodes(&vec![b'k'; KEY_BYTES_MAX], one(), context.clone()).is_ok());
        assert!(malformed(decodes(&vec![b'k'; KEY_BYTES_MAX + 1], one(), context.clone())), "a key too long");
        assert!(malformed(decodes(b"", one(), context.clone())), "an empty key");
        let many = (1..=OBJECT_SIBLINGS_MAX as u64 + 1).map(|counter| sibling(1, counter));
        let covers_all = covering(&[(1, OBJECT_SIBLINGS_MAX as u64 + 1)]);
        let refused = decodes(b"k", many.clone().take(OBJECT_SIBLINGS_MAX).collect(), covers_all.clone());
        assert!(refused.is_ok(), "the limit itself is allowed");
        assert!(malformed(decodes(b"k", many.collect(), covers_all)), "one sibling too many");
    }

    #[test]
    fn contexts_from_peers_arrive_in_normal_form() {
        // A cloud dot that continues the vector, as no node writes it.
        let raw = RawObject { siblings: vec![sibling(1, 1)], context: covering(&[(1, 2)]) };
        let mut payload = postcard::to_allocvec(&raw).unwrap();
        // The cloud is the last field: append one dot to it by hand.
        let cloud_len = payload.len() - 1;
        assert_eq!(payload[cloud_len], 0, "an empty cloud");
        payload[cloud_len] = 1;
        payload.extend(postcard::to_allocvec(&Dot { actor: actor(1), counter: 3 }).unwrap());
        let object: Object = postcard::from_bytes(&payload).unwrap();
        assert_eq!(object.invariants(), Ok(()));
        assert_eq!(object.context(), &covering(&[(1, 3)]), "folded into the vector");
        assert_eq!(object.context().cloud_len(), 0);
    }

    #[test]
    fn a_message_its_peers_would_refuse_is_not_encoded() {
        let mut wire = b"before".to_vec();
        let empty_key = Message::Read { tag: Tag { boot: 1, seq: 1 }, key: Vec::new() };
        assert!(matches!(empty_key.encode(&mut wire), Err(FrameError::Invalid(_))));
        let long_key = Message::Repair { key: vec![0; KEY_BYTES_MAX + 1], object: Object::new() };
        assert!(matches!(long_key.encode(&mut wire), Err(FrameError::Invalid(_))));
        assert_eq!(wire, b"before");
    }
}
