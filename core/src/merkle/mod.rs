//! Anti-entropy: a hash tree per replicated range, kept current on every
//! write, and the exchange two replicas of a range run to find the keys they
//! disagree on.
//!
//! Nothing here reads the store or sends a message. The node owns one
//! [`RangeTree`] per range it replicates and calls [`RangeTree::update`] on
//! every change of a record; it starts an [`Exchange`] with a peer now and
//! then, carries out the steps it asks for (send a [`Request`], scan or read
//! its own store), and answers a peer's requests with [`respond`]. What the
//! module hands back is a list of keys; the node repairs each by merging the
//! two replicas' copies, never by overwriting one with the other.
//!
//! # The tree
//!
//! As in Riak's TictacAAE, the tree has a fixed shape, not one that follows
//! the data: `2^segments_log2` segments (leaves) under `2^branches_log2`
//! branches under one root. A segment's hash is the XOR of
//! `item(key, version_hash)` over the keys in it, a branch the XOR of its
//! segments, the root the XOR of the branches. XOR is its own inverse and
//! order-blind, so a write updates the tree in O(1) by XORing the old item out
//! and the new one in, never rescanning, and two replicas holding the same
//! records have the same tree whatever order the writes reached them in.
//!
//! The default shape is 2^14 segments in 2^8 branches: 128 KiB per range, so
//! a node replicating 192 ranges (64 vnodes, N=3) keeps 24 MiB of trees. With
//! a million keys in a range a segment holds about 61 keys, which is what an
//! exchange lists for each segment that differs; the shape is a parameter
//! ([`TreeShape`]) for clusters whose ranges hold far more.
//!
//! # Segments by ring position
//!
//! A key's segment is its ring position's place within the range: the range
//! is cut into equal arcs, one per segment. Records are stored in ring order,
//! so the keys of a segment are one short scan of the store
//! ([`RangeTree::segment_range`]), not a pass over the whole range as when
//! segments come from a separate hash of the key. Positions are SipHash
//! outputs, so the arcs hold equal shares of the keys.
//!
//! # Hash width
//!
//! Segment, branch and root hashes are 64 bits. A difference hides only when
//! the XOR of the differing items happens to be zero, with probability 2^-64
//! per comparison. With 32 bits that would be one differing segment in four
//! billion, and a hidden difference stays hidden for as long as the two
//! replicas keep those records, so across many clusters and years of
//! exchanges some would never converge. 128 bits would double the trees'
//! memory and the bytes of every exchange for no practical gain.
//!
//! # Hash keys are public
//!
//! [`version_hash`] and the item hash are SipHash-1-3 under fixed keys that
//! every node knows: both replicas must compute the same values, and there is
//! no cluster secret to key them with. This is not a MAC. It does not need to
//! be: a client cannot make replicas diverge, only hope to hide a divergence
//! that faults caused. To hide one it would have to find a second object with
//! the hash of an existing one, whose dots the server issued (2^64 work), or
//! arrange for exactly a chosen set of its writes to miss one replica so that
//! their items XOR to zero, which it does not control. A hidden difference is
//! also not permanent: read repair fixes it, and so does any later write in
//! the same segment, which changes the segment's hash.
//!
//! # The exchange
//!
//! See [`Exchange`]: roots, then branches, then segments, then the keys and
//! versions of differing segments, each stage capped, and every key found
//! different checked a second time, after a delay, before it is reported.
//! Versions are compared by their 64-bit [`VersionHash`]: two different
//! versions of one key pass for equal with probability 2^-64.

mod exchange;
mod respond;
mod tree;
mod wire;

use core::fmt;
use core::hash::Hasher;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use siphasher::sip::SipHasher13;
use thiserror::Error;

use crate::version::{Actor, Dot, Object, Value};

pub use self::exchange::{Exchange, ExchangeConfig, ExchangeError, Outcome, Side, Step};
pub use self::respond::{KeyListBuilder, Response, SegmentScan, VersionRead, respond};
pub use self::tree::RangeTree;
pub use self::wire::{
    KEY_LIST_BYTES_MAX, KEYS_PER_REQUEST_MAX, KeyList, KeyVersion, Refusal, Reply, Request,
    SEGMENT_HASHES_PER_REPLY_MAX, SEGMENTS_PER_REQUEST_MAX, TreeId, WIRE_BYTES_MAX, WireError,
};

/// SipHash keys of [`version_hash`]. Part of the protocol: every node must use the same.
const VERSION_KEYS: (u64, u64) = (u64::from_le_bytes(*b"keel-aae"), u64::from_le_bytes(*b"-version"));
/// SipHash keys of a tree item, `h(key, version_hash)`. Part of the protocol.
const ITEM_KEYS: (u64, u64) = (u64::from_le_bytes(*b"keel-aae"), u64::from_le_bytes(*b"-item-01"));

/// A digest of one object's causal content (see [`version_hash`]).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VersionHash(pub u64);

/// The hash of a segment, a branch or a tree's root.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct TreeHash(pub u64);

impl fmt::Debug for VersionHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{:016x}", self.0)
    }
}

impl fmt::Debug for TreeHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "t{:016x}", self.0)
    }
}

/// Hashes go on the wire as 8 fixed bytes: postcard's varint would spend up
/// to 10 on a random 64-bit value.
macro_rules! fixed_width_serde {
    ($type:ident) => {
        impl Serialize for $type {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                self.0.to_le_bytes().serialize(serializer)
            }
        }

        impl<'de> Deserialize<'de> for $type {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<$type, D::Error> {
                <[u8; 8]>::deserialize(deserializer).map(|bytes| $type(u64::from_le_bytes(bytes)))
            }
        }
    };
}

fixed_width_serde!(VersionHash);
fixed_width_serde!(TreeHash);

/// The hash of what `object` means causally: its siblings' dots, whether
/// each is a value or a deletion, and its context. A dot names one write,
/// so neither the value's bytes nor the timestamp add anything (as Riak's
/// AAE hashes the version vector, not the value): a version hashes in time
/// independent of its size, which matters because every write hashes the
/// version it replaces and the one it makes. Objects are kept in one normal
/// form (siblings sorted by dot, contexts compacted), so two replicas
/// holding the same merged object hash it equally, whatever order they
/// learned it in.
pub fn version_hash(object: &Object) -> VersionHash {
    let mut hasher = SipHasher13::new_with_keys(VERSION_KEYS.0, VERSION_KEYS.1);
    hasher.write_u64(object.siblings().len() as u64);
    for sibling in object.siblings() {
        write_dot(&mut hasher, sibling.dot);
        hasher.write_u8(match &sibling.value {
            Value::Live(_) => 1,
            Value::Tombstone => 0,
        });
    }
    // Runs are fixed-width and come last, so the stream reads back one way
    // only. A context's normal form is unique for its set of dots.
    for (actor, run) in object.context().runs() {
        write_actor(&mut hasher, actor);
        hasher.write_u64(*run.start());
        hasher.write_u64(*run.end());
    }
    VersionHash(hasher.finish())
}

fn write_dot(hasher: &mut SipHasher13, dot: Dot) {
    write_actor(hasher, dot.actor);
    hasher.write_u64(dot.counter);
}

fn write_actor(hasher: &mut SipHasher13, actor: Actor) {
    hasher.write_u64(actor.node.0);
    hasher.write_u32(actor.incarnation);
    hasher.write_u64(actor.epoch);
}

/// What one key at one version adds to its segment: `h(key, version_hash)`.
fn item_hash(key: &[u8], version: VersionHash) -> u64 {
    let mut hasher = SipHasher13::new_with_keys(ITEM_KEYS.0, ITEM_KEYS.1);
    // The key's length is implied: the version's 8 bytes always follow it.
    hasher.write(key);
    hasher.write_u64(version.0);
    hasher.finish()
}

/// The most segments a tree may have: 2^20, 8 MiB of hashes.
pub const SEGMENTS_LOG2_MAX: u8 = 20;
/// The most branches a tree may have: 2^12, so a reply listing every branch
/// hash is 32 KiB.
pub const BRANCHES_LOG2_MAX: u8 = 12;
/// The most segments under one branch: 2^12.
pub const SEGMENTS_PER_BRANCH_LOG2_MAX: u8 = 12;

/// How a tree is cut: `2^segments_log2` segments in `2^branches_log2`
/// branches. Both replicas of a range must use the same shape; an exchange
/// between different shapes is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "ShapeParts")]
pub struct TreeShape {
    segments_log2: u8,
    branches_log2: u8,
}

#[derive(Deserialize)]
struct ShapeParts {
    segments_log2: u8,
    branches_log2: u8,
}

impl TryFrom<ShapeParts> for TreeShape {
    type Error = ShapeError;

    fn try_from(parts: ShapeParts) -> Result<TreeShape, ShapeError> {
        TreeShape::new(parts.segments_log2, parts.branches_log2)
    }
}

#[derive(Clone, Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ShapeError {
    #[error(
        "a tree of 2^{segments_log2} segments in 2^{branches_log2} branches: branches must be \
         1..=2^{BRANCHES_LOG2_MAX}, segments 2^branches..=2^{SEGMENTS_LOG2_MAX}, and at most \
         2^{SEGMENTS_PER_BRANCH_LOG2_MAX} segments per branch"
    )]
    OutOfRange { segments_log2: u8, branches_log2: u8 },
}

impl TreeShape {
    /// 2^14 segments in 2^8 branches; see the module documentation.
    pub const DEFAULT: TreeShape = TreeShape { segments_log2: 14, branches_log2: 8 };
    /// The shape of a node's trees, one per replicated range: a node holds
    /// about 64 ranges per replica it is (192 in a cluster of three at N=3),
    /// so each tree is smaller. 2^12 segments of 8 bytes is 32 KiB a tree,
    /// about one key a segment at a million keys a node.
    pub const NODE_DEFAULT: TreeShape = TreeShape { segments_log2: 12, branches_log2: 6 };

    pub fn new(segments_log2: u8, branches_log2: u8) -> Result<TreeShape, ShapeError> {
        let fits = (1..=BRANCHES_LOG2_MAX).contains(&branches_log2)
            && (branches_log2..=SEGMENTS_LOG2_MAX).contains(&segments_log2)
            && segments_log2 - branches_log2 <= SEGMENTS_PER_BRANCH_LOG2_MAX;
        if !fits {
            return Err(ShapeError::OutOfRange { segments_log2, branches_log2 });
        }
        Ok(TreeShape { segments_log2, branches_log2 })
    }

    pub fn segments_log2(&self) -> u8 {
        self.segments_log2
    }

    pub fn branches_log2(&self) -> u8 {
        self.branches_log2
    }

    pub fn segments(&self) -> u32 {
        1 << self.segments_log2
    }

    pub fn branches(&self) -> u32 {
        1 << self.branches_log2
    }

    pub fn segments_per_branch(&self) -> u32 {
        1 << (self.segments_log2 - self.branches_log2)
    }

    /// The branch that holds `segment`.
    pub fn branch_of(&self, segment: u32) -> u32 {
        debug_assert!(segment < self.segments());
        segment >> (self.segments_log2 - self.branches_log2)
    }
}

impl Default for TreeShape {
    fn default() -> TreeShape {
        TreeShape::DEFAULT
    }
}

#[cfg(test)]
mod properties;
#[cfg(test)]
mod tests;
