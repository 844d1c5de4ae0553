//! Messages between nodes.
//!
//! On the wire every message is one [`crate::frame`]: postcard inside a
//! length and a crc32c. Decoding never panics on any bytes.

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::client;
use crate::frame::{self, FrameError};
use crate::version::Object;

/// The largest message payload accepted, a little above the largest object a
/// coordinator will store (see `Config::object_bytes_max`).
pub const MESSAGE_BYTES_MAX: u32 = 80 * 1024 * 1024;

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
        request: client::Request,
        /// The forwarder has no other primary left to try: if the target's
        /// own copy of the key is unreadable, it replaces it rather than
        /// refusing (see `node::write`).
        replace_unreadable: bool,
    },
    ForwardReply {
        tag: Tag,
        reply: client::Reply,
    },
    /// Merge `object` into your copy of `key`; answer once that is durable.
    Replicate {
        tag: Tag,
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        object: Object,
    },
    ReplicateAck {
        tag: Tag,
        result: Result<(), ReplicaError>,
    },
    /// Send your copy of `key`.
    Read {
        tag: Tag,
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
    },
    ReadReply {
        tag: Tag,
        result: Result<Option<Object>, ReplicaError>,
    },
    /// Read repair: merge `object` into your copy of `key`. No answer.
    Repair {
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        object: Object,
    },
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
            Message::Read { .. } => "read",
            Message::ReadReply { .. } => "read_reply",
            Message::Repair { .. } => "repair",
        }
    }

    /// Appends this message as one frame.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), FrameError> {
        frame::encode(self, MESSAGE_BYTES_MAX, out)
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
    use crate::client::{Consistency, Request};
    use crate::version::{Actor, CausalContext, Value};

    fn sample() -> Vec<Message> {
        let tag = Tag { boot: 3, seq: 9 };
        let mut object = Object::new();
        let actor = Actor { node: NodeId(2), incarnation: 5, epoch: 1 };
        object.write(actor, &CausalContext::new(), Value::Live(b"v".to_vec()), 17);
        let request =
            Request::Put { key: b"k".to_vec(), value: b"v".to_vec(), context: None, write: Consistency::All };
        vec![
            Message::Heartbeat { boot: 7 },
            Message::Forward { tag, target_boot: 7, request, replace_unreadable: false },
            Message::Replicate { tag, key: b"k".to_vec(), object: object.clone() },
            Message::ReplicateAck { tag, result: Err(ReplicaError::Corrupt) },
            Message::ReadReply { tag, result: Ok(Some(object.clone())) },
            Message::Repair { key: Vec::new(), object },
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
}
