//! What clients ask of a node and what they get back.
//!
//! These types are the boundary between the core and every client-facing
//! server (HTTP, Redis protocol, the CLI). They carry no transport detail.

use core::fmt;
use core::str::FromStr;

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// A driver-chosen tag that pairs a client request with its reply.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
pub struct RequestId(pub u64);

/// How many replicas must answer a read or acknowledge a write.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum Consistency {
    One,
    /// A majority of the N replicas: `N / 2 + 1`.
    Quorum,
    All,
    /// An explicit count, 1..=N.
    Replicas(u8),
}

impl Consistency {
    /// The number of replicas this level needs when a key has `n` of them.
    pub fn required(self, n: u8) -> Result<u8, ClientError> {
        match self {
            Consistency::One => Ok(1),
            Consistency::Quorum => Ok(n / 2 + 1),
            Consistency::All => Ok(n),
            Consistency::Replicas(count) if (1..=n).contains(&count) => Ok(count),
            Consistency::Replicas(count) => Err(ClientError::BadConsistency { asked: count, replicas: n }),
        }
    }
}

impl fmt::Display for Consistency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Consistency::One => f.write_str("one"),
            Consistency::Quorum => f.write_str("quorum"),
            Consistency::All => f.write_str("all"),
            Consistency::Replicas(count) => write!(f, "{count}"),
        }
    }
}

/// Parse error for [`Consistency`].
#[derive(Debug, Error, PartialEq, Eq)]
#[error("consistency must be one, quorum, all or a replica count from 1 to 255, not {0:?}")]
pub struct ParseConsistencyError(pub String);

impl FromStr for Consistency {
    type Err = ParseConsistencyError;

    fn from_str(text: &str) -> Result<Consistency, ParseConsistencyError> {
        match text.to_ascii_lowercase().as_str() {
            "one" => Ok(Consistency::One),
            "quorum" => Ok(Consistency::Quorum),
            "all" => Ok(Consistency::All),
            other => match other.parse::<u8>() {
                Ok(count) if count > 0 => Ok(Consistency::Replicas(count)),
                _ => Err(ParseConsistencyError(text.to_owned())),
            },
        }
    }
}

/// An opaque causal context: what a client has seen of a key. Returned by
/// reads, passed back on writes so the write replaces exactly what was seen.
/// Clients must treat the bytes as opaque; the node parses them on use.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Context(pub Vec<u8>);

impl Context {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Context({} bytes)", self.0.len())
    }
}

/// A read of one key: every live value, and the context that covers them.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Get {
    pub key: Vec<u8>,
    pub read: Consistency,
}

/// Stores `value` over the versions `replaces` names.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Put {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub replaces: Replaces,
    pub write: Consistency,
    /// Only the key's own replicas count towards `write`: no fallback node
    /// keeps a hint for one that is down (see `Written::fallbacks`).
    pub strict: bool,
}

/// Writes a tombstone over the versions `replaces` names.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Delete {
    pub key: Vec<u8>,
    pub replaces: Replaces,
    pub write: Consistency,
    /// As [`Put::strict`].
    pub strict: bool,
}

/// Which stored versions a put or delete replaces. Whatever it does not
/// replace stays, as siblings of the new version: nothing is lost.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Replaces {
    /// Exactly those a context from an earlier read or write covers. The
    /// empty context covers nothing: the new version becomes a sibling of
    /// everything stored.
    Context(Context),
    /// Whatever the coordinating primary holds, which is what a plain Redis
    /// `SET` means: one round trip, concurrent only with writes that primary
    /// has not seen yet.
    Held,
    /// Whatever a read at the write's consistency sees just before the
    /// write, as if the client had read and passed back the context: the
    /// reply names the live values replaced. A delete that finds no live
    /// value writes nothing. When every replica asked holds a copy too
    /// damaged to read, the write replaces what the primary holds instead.
    Read,
}

/// One client operation on one key.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Request {
    /// Answered with [`Reply::Read`].
    Get(Get),
    /// Answered with [`Reply::Write`].
    Put(Put),
    /// Answered with [`Reply::Write`].
    Delete(Delete),
}

impl Request {
    pub fn key(&self) -> &[u8] {
        match self {
            Request::Get(Get { key, .. })
            | Request::Put(Put { key, .. })
            | Request::Delete(Delete { key, .. }) => key,
        }
    }
}

impl From<Get> for Request {
    fn from(get: Get) -> Request {
        Request::Get(get)
    }
}

impl From<Put> for Request {
    fn from(put: Put) -> Request {
        Request::Put(put)
    }
}

impl From<Delete> for Request {
    fn from(delete: Delete) -> Request {
        Request::Delete(delete)
    }
}

/// What a read found: one value, several concurrent ones (siblings) in a
/// deterministic order, or none. Passing `context` to a later write
/// replaces them all; with no live value it may still cover deletions.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Read {
    pub values: Vec<Vec<u8>>,
    pub context: Context,
}

impl Read {
    pub fn is_found(&self) -> bool {
        !self.values.is_empty()
    }
}

/// A put or delete acknowledged by enough replicas. `context` covers exactly
/// what the versions replaced had seen plus the new version, so a client
/// may write again with it without reading first. A delete that read first
/// and found nothing live wrote nothing: `context` is then the read's.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Written {
    pub context: Context,
    pub replaced: Replaced,
    /// Acknowledgements that came from fallback nodes, each holding the
    /// write as a hint for a replica that was down (sloppy quorum): the
    /// write counts as durable on that many replicas only once the hints
    /// are handed over.
    pub fallbacks: u8,
}

/// What a write replaced, as far as the node knows it.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Replaced {
    /// The write did not read first ([`Replaces::Context`] or
    /// [`Replaces::Held`]).
    NotRead,
    /// The live values the read before the write saw, every one of them
    /// replaced; none when the key held no live value.
    Values(Vec<Vec<u8>>),
    /// Every replica the read asked held a copy too damaged to read, so
    /// the write replaced what the primary held, unseen.
    Unreadable,
}

/// The answer to one [`Request`]: a get is answered with a read, a put or a
/// delete with a write, and nothing else.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Reply {
    Read(Result<Read, ClientError>),
    Write(Result<Written, ClientError>),
}

/// Why a request did not succeed. Only timeouts and storage failures are
/// indeterminate (see [`ClientError::is_indeterminate`]): every other error
/// means nothing was written.
#[derive(Clone, PartialEq, Eq, Debug, Error, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ClientError {
    #[error("key of {len} bytes exceeds the limit of {max} bytes; nothing was written")]
    KeyTooLarge { len: u64, max: u64 },
    /// Definite: keys are 1 byte long at least, on every interface.
    #[error("the key is empty; keys are 1 to {max} bytes; nothing was written")]
    KeyEmpty { max: u64 },
    #[error("value of {len} bytes exceeds the limit of {max} bytes; nothing was written")]
    ValueTooLarge { len: u64, max: u64 },
    #[error("consistency asks for {asked} replicas but keys have {replicas}")]
    BadConsistency { asked: u8, replicas: u8 },
    #[error("causal context is not valid: {reason}")]
    BadContext { reason: String },
    /// Definite: too few replicas were reachable, so nothing was attempted.
    #[error("{needed} replicas needed but only {reachable} reachable; nothing was written")]
    Unavailable { needed: u8, reachable: u8 },
    /// Indeterminate: the write may or may not have been stored.
    #[error("timed out after {acknowledged} of {needed} replicas answered; a write may still take effect")]
    Timeout { acknowledged: u8, needed: u8 },
    #[error("key has {count} siblings, more than the limit of {max}; read it and write back one value")]
    SiblingsTooMany { count: u64, max: u64 },
    #[error("node is overloaded: {what} at its limit of {limit}; retry later")]
    Overloaded { what: String, limit: u64 },
    /// Definite: the node is shutting down and accepted nothing.
    #[error("node is shutting down; nothing was written")]
    ShuttingDown,
    /// Indeterminate: the request was handed to the node but its answer was
    /// lost (the node stopped, or the client gave up waiting).
    #[error("the answer was lost after {waited_ms} ms; a write may still take effect")]
    ReplyLost { waited_ms: u64 },
    /// The primary a write was handed to restarted before it answered. A
    /// copy of the hand-off that the network duplicated may have reached
    /// its earlier life, which may have written it.
    #[error("the replica coordinating the write restarted before it answered; a write may still take effect")]
    CoordinatorRestarted,
    /// The node's storage failed (a sync, or a read it could not trust). A
    /// write in progress when the disk failed may or may not have been stored.
    #[error("node storage failed: {reason}")]
    StorageFailed { reason: String },
    /// Definite: replicas answered, but too many could not read their copy
    /// (corrupt on disk, or storage failed). Read repair rewrites corrupt
    /// copies from the replicas that answered, so a retry normally succeeds.
    #[error(
        "{failed} replicas could not read their copy, leaving fewer than {needed} answers; corrupt copies are being repaired, retry"
    )]
    CopiesUnreadable { failed: u8, needed: u8 },
    /// Definite: the primary asked to coordinate a write found its own copy
    /// of the key corrupt, so it could not issue a version; nothing was written.
    #[error("the coordinating replica's copy is unreadable ({reason}); nothing was written")]
    CoordinatorCopyUnreadable { reason: String },
    /// Definite: every replica asked could not read its copy of the key and
    /// none answered with a readable one, so nothing can repair it. A write
    /// needs no old value and replaces the damaged copies.
    #[error(
        "the key is damaged: {failed} of {failed} replicas asked found their copy corrupt on disk and none holds a readable one to repair it from; write or delete the key to replace it, or restore it from a backup"
    )]
    Damaged { failed: u8 },
}

impl ClientError {
    /// True when a write that failed this way may still have been stored.
    pub fn is_indeterminate(&self) -> bool {
        matches!(
            self,
            ClientError::Timeout { .. }
                | ClientError::StorageFailed { .. }
                | ClientError::ReplyLost { .. }
                | ClientError::CoordinatorRestarted
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consistency_resolves_against_replica_count() {
        assert_eq!(Consistency::One.required(3), Ok(1));
        assert_eq!(Consistency::Quorum.required(3), Ok(2));
        assert_eq!(Consistency::Quorum.required(4), Ok(3));
        assert_eq!(Consistency::Quorum.required(5), Ok(3));
        assert_eq!(Consistency::All.required(5), Ok(5));
        assert_eq!(Consistency::Replicas(2).required(3), Ok(2));
        assert_eq!(
            Consistency::Replicas(4).required(3),
            Err(ClientError::BadConsistency { asked: 4, replicas: 3 })
        );
    }

    #[test]
    fn consistency_parses_names_and_counts() {
        assert_eq!("QUORUM".parse(), Ok(Consistency::Quorum));
        assert_eq!("one".parse(), Ok(Consistency::One));
        assert_eq!("all".parse(), Ok(Consistency::All));
        assert_eq!("2".parse(), Ok(Consistency::Replicas(2)));
        assert!("0".parse::<Consistency>().is_err());
        assert!("most".parse::<Consistency>().is_err());
        assert_eq!(Consistency::Replicas(2).to_string(), "2");
    }
}
