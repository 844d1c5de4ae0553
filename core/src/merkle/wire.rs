//! The exchange's messages: plain serde types, postcard on the wire.
//!
//! Every message decodes only if it keeps the rules below (parse, don't
//! validate), whether it is decoded alone ([`Request::decode`]) or inside a
//! node's message: counts within their bounds, indexes inside the tree's
//! shape, lists in order, keys of 1 to [`KEY_BYTES_MAX`] bytes. What depends
//! on the request a reply answers (a list's exact length, keys inside the
//! segments asked for) is checked by the [`Exchange`](super::Exchange)
//! that asked. Encoding checks the same rules, so a node never sends what
//! its peer would refuse.

use serde::{Deserialize, Serialize, Serializer};
use thiserror::Error;

use super::tree::Arcs;
use super::{TreeHash, TreeShape, VersionHash};
use crate::message::KEY_BYTES_MAX;
use crate::ring::{self, PositionRange};

/// The most bytes a request or reply may take on its own.
pub const WIRE_BYTES_MAX: usize = 8 << 20;
/// The most segments whose keys one request may ask for.
pub const SEGMENTS_PER_REQUEST_MAX: u32 = 4096;
/// The most segment hashes one reply may carry (512 KiB of hashes); a
/// request for the segments of several branches asks for no more.
pub const SEGMENT_HASHES_PER_REPLY_MAX: u32 = 1 << 16;
/// The most keys whose versions one request may ask for.
pub const KEYS_PER_REQUEST_MAX: u32 = 4096;
/// The most bytes of a key list, counting each entry as its key's length
/// plus 8 for its version.
pub const KEY_LIST_BYTES_MAX: u32 = 4 << 20;

/// Which tree a request is about: a replicated range, and the shape both
/// sides must share.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TreeId {
    start: u64,
    end: u64,
    shape: TreeShape,
}

impl TreeId {
    pub fn new(range: PositionRange, shape: TreeShape) -> TreeId {
        TreeId { start: range.start, end: range.end, shape }
    }

    pub fn range(&self) -> PositionRange {
        PositionRange { start: self.start, end: self.end }
    }

    pub fn shape(&self) -> TreeShape {
        self.shape
    }
}

/// What the initiator of an exchange asks of the other replica.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RequestParts")]
pub enum Request {
    /// "My root is `root`": answered [`Reply::InSync`] or with every branch hash.
    Root { tree: TreeId, root: TreeHash },
    /// The segment hashes under `branches` (ascending).
    Segments { tree: TreeId, branches: Vec<u32> },
    /// The keys and versions stored in `segments` (ascending), from the
    /// first segment's start or, resuming a list cut short, from just after
    /// the key `after`, which lies in the first segment.
    Keys {
        tree: TreeId,
        segments: Vec<u32>,
        #[serde(with = "serde_bytes")]
        after: Option<Vec<u8>>,
    },
    /// The versions of `keys` (in ring order) as stored now.
    Versions {
        tree: TreeId,
        #[serde(serialize_with = "serialize_keys")]
        keys: Vec<Vec<u8>>,
    },
}

/// A request as laid out in bytes, before its rules are checked. Must
/// match [`Request`] variant for variant, field for field.
#[derive(Deserialize)]
enum RequestParts {
    Root { tree: TreeId, root: TreeHash },
    Segments { tree: TreeId, branches: Vec<u32> },
    Keys { tree: TreeId, segments: Vec<u32>, after: Option<serde_bytes::ByteBuf> },
    Versions { tree: TreeId, keys: Vec<serde_bytes::ByteBuf> },
}

/// The answer to one [`Request`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "ReplyParts")]
pub enum Reply {
    /// The roots are equal.
    InSync,
    /// Every branch hash of the tree, in order.
    Branches(Vec<TreeHash>),
    /// The segment hashes of the branches asked for, branch after branch.
    Segments(Vec<TreeHash>),
    Keys(KeyList),
    /// One per key asked for, in the same order; `None` where the key has no record.
    Versions(Vec<Option<VersionHash>>),
    /// The replica will not take part in this exchange.
    Refused(Refusal),
}

/// A reply as laid out in bytes, before its rules are checked. Must match
/// [`Reply`] variant for variant.
#[derive(Deserialize)]
enum ReplyParts {
    InSync,
    Branches(Vec<TreeHash>),
    Segments(Vec<TreeHash>),
    Keys(KeyList),
    Versions(Vec<Option<VersionHash>>),
    Refused(Refusal),
}

/// Why a replica refused an exchange.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Refusal {
    /// It keeps no tree of this range and shape: the two nodes place the
    /// range differently, or were configured with different shapes.
    UnknownTree,
    /// Its tree of the range is being built.
    NotReady,
    /// It is in as many exchanges as it takes part in at once.
    Busy,
}

/// The keys and versions stored in some segments, in ring order (by
/// position, then key). `complete` is false when a bound cut the list
/// short: it then holds everything up to its last entry and nothing after.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyList {
    pub entries: Vec<KeyVersion>,
    pub complete: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyVersion {
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    pub version: VersionHash,
}

impl KeyVersion {
    /// What the entry counts against [`KEY_LIST_BYTES_MAX`].
    pub fn list_bytes(key: &[u8]) -> u64 {
        key.len() as u64 + 8
    }
}

/// Why a message was refused, on either side of the wire.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum WireError {
    #[error("a message of {len} bytes exceeds the limit of {max}")]
    TooLarge { len: usize, max: usize },
    #[error("message bytes do not decode: {0}")]
    Malformed(String),
    #[error("{len} bytes follow the message")]
    TrailingBytes { len: usize },
    #[error("{what}: {count} entries, outside 1..={max}")]
    Count { what: &'static str, count: usize, max: usize },
    #[error("{what}: index {index} is not below {bound}")]
    Index { what: &'static str, index: u32, bound: u32 },
    #[error("{what}: entries not in strictly ascending order")]
    Order { what: &'static str },
    #[error("a key of {len} bytes, outside 1..={KEY_BYTES_MAX}")]
    KeyLength { len: usize },
    #[error("a key outside the tree's range")]
    KeyOutsideRange,
    #[error("a list resumes in segment {segment}, not the first segment asked for")]
    ResumeOutsideSegments { segment: u32 },
    #[error("a key list of {bytes} bytes exceeds the limit of {KEY_LIST_BYTES_MAX}")]
    ListTooLarge { bytes: u64 },
    #[error("a key list cut short must hold at least one entry")]
    CutListEmpty,
}

impl Request {
    pub fn tree(&self) -> TreeId {
        match self {
            Request::Root { tree, .. }
            | Request::Segments { tree, .. }
            | Request::Keys { tree, .. }
            | Request::Versions { tree, .. } => *tree,
        }
    }

    /// A short name for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Request::Root { .. } => "root",
            Request::Segments { .. } => "segments",
            Request::Keys { .. } => "keys",
            Request::Versions { .. } => "versions",
        }
    }

    /// The request as postcard bytes, if it keeps the rules its decoder enforces.
    pub fn encode(&self) -> Result<Vec<u8>, WireError> {
        self.check()?;
        encode(self)
    }

    /// Parses a request, refusing one that breaks a rule.
    pub fn decode(bytes: &[u8]) -> Result<Request, WireError> {
        Request::try_from(decode::<RequestParts>(bytes)?)
    }

    /// The rules every request keeps.
    pub fn check(&self) -> Result<(), WireError> {
        match self {
            Request::Root { .. } => Ok(()),
            Request::Segments { tree, branches } => {
                let shape = tree.shape();
                let max = (SEGMENT_HASHES_PER_REPLY_MAX / shape.segments_per_branch()).min(shape.branches());
                check_indexes("branches", branches, max, shape.branches())
            }
            Request::Keys { tree, segments, after } => {
                let shape = tree.shape();
                check_indexes("segments", segments, SEGMENTS_PER_REQUEST_MAX, shape.segments())?;
                let Some(after) = after else { return Ok(()) };
                check_key(after)?;
                let position = ring::position(after);
                if !tree.range().contains(position) {
                    return Err(WireError::KeyOutsideRange);
                }
                let segment = Arcs::new(tree.range(), shape).segment_of(position);
                if segments.first() != Some(&segment) {
                    return Err(WireError::ResumeOutsideSegments { segment });
                }
                Ok(())
            }
            Request::Versions { tree, keys } => check_keys(tree.range(), keys),
        }
    }
}

impl TryFrom<RequestParts> for Request {
    type Error = WireError;

    fn try_from(parts: RequestParts) -> Result<Request, WireError> {
        let request = match parts {
            RequestParts::Root { tree, root } => Request::Root { tree, root },
            RequestParts::Segments { tree, branches } => Request::Segments { tree, branches },
            RequestParts::Keys { tree, segments, after } => {
                Request::Keys { tree, segments, after: after.map(serde_bytes::ByteBuf::into_vec) }
            }
            RequestParts::Versions { tree, keys } => Request::Versions {
                tree,
                keys: keys.into_iter().map(serde_bytes::ByteBuf::into_vec).collect(),
            },
        };
        request.check()?;
        Ok(request)
    }
}

impl Reply {
    /// A short name for logs, metrics and errors.
    pub fn kind(&self) -> &'static str {
        match self {
            Reply::InSync => "in_sync",
            Reply::Branches(_) => "branches",
            Reply::Segments(_) => "segments",
            Reply::Keys(_) => "keys",
            Reply::Versions(_) => "versions",
            Reply::Refused(_) => "refused",
        }
    }

    /// The reply as postcard bytes, if it keeps the rules its decoder enforces.
    pub fn encode(&self) -> Result<Vec<u8>, WireError> {
        self.check()?;
        encode(self)
    }

    /// Parses a reply, refusing one that breaks a rule.
    pub fn decode(bytes: &[u8]) -> Result<Reply, WireError> {
        Reply::try_from(decode::<ReplyParts>(bytes)?)
    }

    /// The rules every reply keeps, whatever it answers.
    pub fn check(&self) -> Result<(), WireError> {
        let count = |what, count: usize, max: u32| {
            if count > max as usize {
                return Err(WireError::Count { what, count, max: max as usize });
            }
            Ok(())
        };
        match self {
            Reply::InSync | Reply::Refused(_) => Ok(()),
            Reply::Branches(hashes) => count("branch hashes", hashes.len(), 1 << super::BRANCHES_LOG2_MAX),
            Reply::Segments(hashes) => count("segment hashes", hashes.len(), SEGMENT_HASHES_PER_REPLY_MAX),
            Reply::Versions(versions) => count("versions", versions.len(), KEYS_PER_REQUEST_MAX),
            Reply::Keys(list) => list.check(),
        }
    }
}

impl TryFrom<ReplyParts> for Reply {
    type Error = WireError;

    fn try_from(parts: ReplyParts) -> Result<Reply, WireError> {
        let reply = match parts {
            ReplyParts::InSync => Reply::InSync,
            ReplyParts::Branches(hashes) => Reply::Branches(hashes),
            ReplyParts::Segments(hashes) => Reply::Segments(hashes),
            ReplyParts::Keys(list) => Reply::Keys(list),
            ReplyParts::Versions(versions) => Reply::Versions(versions),
            ReplyParts::Refused(refusal) => Reply::Refused(refusal),
        };
        reply.check()?;
        Ok(reply)
    }
}

impl KeyList {
    /// The rules of a list on its own: key lengths, total bytes, and an
    /// entry in any list that was cut short.
    pub fn check(&self) -> Result<(), WireError> {
        let mut bytes = 0u64;
        for entry in &self.entries {
            check_key(&entry.key)?;
            bytes += KeyVersion::list_bytes(&entry.key);
        }
        if bytes > u64::from(KEY_LIST_BYTES_MAX) {
            return Err(WireError::ListTooLarge { bytes });
        }
        if !self.complete && self.entries.is_empty() {
            return Err(WireError::CutListEmpty);
        }
        Ok(())
    }
}

/// `indexes` holds 1 to `max` entries, ascending, each below `bound`.
fn check_indexes(what: &'static str, indexes: &[u32], max: u32, bound: u32) -> Result<(), WireError> {
    if indexes.is_empty() || indexes.len() > max as usize {
        return Err(WireError::Count { what, count: indexes.len(), max: max as usize });
    }
    if !indexes.is_sorted_by(|a, b| a < b) {
        return Err(WireError::Order { what });
    }
    match indexes.last() {
        Some(&index) if index >= bound => Err(WireError::Index { what, index, bound }),
        _ => Ok(()),
    }
}

/// `keys` holds 1 to [`KEYS_PER_REQUEST_MAX`] keys of `range`, in ring
/// order, of at most [`KEY_LIST_BYTES_MAX`] counted as a list's.
fn check_keys(range: PositionRange, keys: &[Vec<u8>]) -> Result<(), WireError> {
    let max = KEYS_PER_REQUEST_MAX as usize;
    if keys.is_empty() || keys.len() > max {
        return Err(WireError::Count { what: "keys", count: keys.len(), max });
    }
    let bytes = keys.iter().map(|key| KeyVersion::list_bytes(key)).sum();
    if bytes > u64::from(KEY_LIST_BYTES_MAX) {
        return Err(WireError::ListTooLarge { bytes });
    }
    let mut previous: Option<(u64, &[u8])> = None;
    for key in keys {
        check_key(key)?;
        let position = ring::position(key);
        if !range.contains(position) {
            return Err(WireError::KeyOutsideRange);
        }
        let at = (ring_offset(range, position), key.as_slice());
        if previous.is_some_and(|previous| previous >= at) {
            return Err(WireError::Order { what: "keys" });
        }
        previous = Some(at);
    }
    Ok(())
}

fn check_key(key: &[u8]) -> Result<(), WireError> {
    if key.is_empty() || key.len() > KEY_BYTES_MAX {
        return Err(WireError::KeyLength { len: key.len() });
    }
    Ok(())
}

/// Where `position` lies clockwise from the range's start: ring order
/// within a range, which may wrap past the top of the circle.
pub(super) fn ring_offset(range: PositionRange, position: u64) -> u64 {
    position.wrapping_sub(range.start).wrapping_sub(1)
}

fn serialize_keys<S: Serializer>(keys: &[Vec<u8>], serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_seq(keys.iter().map(|key| serde_bytes::Bytes::new(key)))
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, WireError> {
    let bytes = postcard::to_allocvec(value).map_err(|error| WireError::Malformed(error.to_string()))?;
    if bytes.len() > WIRE_BYTES_MAX {
        return Err(WireError::TooLarge { len: bytes.len(), max: WIRE_BYTES_MAX });
    }
    Ok(bytes)
}

/// Checking the length first bounds what decoding may allocate: no list
/// holds more entries than there are bytes.
fn decode<'de, T: Deserialize<'de>>(bytes: &'de [u8]) -> Result<T, WireError> {
    if bytes.len() > WIRE_BYTES_MAX {
        return Err(WireError::TooLarge { len: bytes.len(), max: WIRE_BYTES_MAX });
    }
    let (value, rest) =
        postcard::take_from_bytes(bytes).map_err(|error| WireError::Malformed(error.to_string()))?;
    if !rest.is_empty() {
        return Err(WireError::TrailingBytes { len: rest.len() });
    }
    Ok(value)
}
