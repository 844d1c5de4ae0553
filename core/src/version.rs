//! Dotted version vectors: causality for one key.
//!
//! Every write is tagged with a [`Dot`], a unique `(actor, counter)` pair issued
//! by the coordinating replica. An [`Object`] holds the concurrent values of a
//! key (siblings, each with its dot) and a [`CausalContext`]: the set of every
//! dot the object has seen. A sibling survives a merge unless the other side
//! has seen its dot without keeping it, which means a later write replaced it.
//! This is the dotted causal container of Almeida et al.; it keeps one entry
//! per actor instead of one version vector per sibling.
//!
//! Dot uniqueness rests on one rule, kept by the node: an actor issues dots for
//! a key only from a local record that has existed continuously since the
//! actor's epoch was created for that key, so the record has seen every dot
//! that actor issued. A node that has no record for a key (first write, a
//! reaped tombstone, data that moved away, a wiped disk) starts a fresh epoch;
//! a node whose disk was wiped also has a new incarnation. No dot is ever
//! issued twice with different values (the failure Riak calls kv679).

use core::fmt;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::NodeId;

mod parse;

pub use self::parse::ObjectError;

/// The most siblings an object may hold, wherever it comes from: a decoder
/// refuses more. A coordinator refuses a write that would leave more than
/// its `siblings_max` (at most this divided by the most replicas a key can
/// have), and only writes make siblings, so the merge of every replica's
/// copy stays below it.
pub const OBJECT_SIBLINGS_MAX: usize = 4096;

/// Who issued a dot: one node, in one incarnation of its data, in one epoch
/// of its history with one key.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Actor {
    pub node: NodeId,
    /// Drawn at random when the node's data directory is created; changes
    /// when the data is lost, so a wiped node never reuses old dots.
    pub incarnation: u32,
    /// A per-node counter, advanced whenever the node starts coordinating a
    /// key it holds no continuous record of.
    pub epoch: u64,
}

impl fmt::Debug for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:x}.{}", self.node, self.incarnation, self.epoch)
    }
}

/// One write's identity: the `counter`-th write that `actor` coordinated.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Dot {
    pub actor: Actor,
    /// Starts at 1.
    pub counter: u64,
}

impl fmt::Debug for Dot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "({:?}:{})", self.actor, self.counter)
    }
}

/// A set of dots: a version vector (every dot `(actor, 1..=n)`) plus a cloud
/// of single dots beyond it. The cloud lets a context say "what I read plus
/// the one write I made" exactly, without claiming dots it never saw.
///
/// Both parts are sorted vectors, not trees: a context names a handful of
/// actors, and it is decoded, changed and encoded on every request. They
/// encode exactly as an ordered map and an ordered set would.
///
/// Decoding always yields this normal form (see `parse`), whatever order or
/// repeats the bytes held: contexts from disk, peers and clients alike.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "parse::ContextParts")]
pub struct CausalContext {
    /// Sorted by actor, one entry per actor, no zero counter.
    vector: Vec<(Actor, u64)>,
    /// Sorted, no duplicates. Invariant: every dot here has
    /// `counter > vector[actor] + 1`.
    cloud: Vec<Dot>,
}

impl CausalContext {
    pub fn new() -> CausalContext {
        CausalContext::default()
    }

    pub fn is_empty(&self) -> bool {
        self.vector.is_empty() && self.cloud.is_empty()
    }

    pub fn contains(&self, dot: &Dot) -> bool {
        self.vector_get(dot.actor).is_some_and(|n| dot.counter <= n) || self.cloud.binary_search(dot).is_ok()
    }

    /// The highest counter of `actor` in this set, 0 if none.
    pub fn max_counter(&self, actor: Actor) -> u64 {
        let in_vector = self.vector_get(actor).unwrap_or(0);
        let in_cloud = self.cloud_of(actor).last();
        in_cloud.map_or(in_vector, |dot| dot.counter.max(in_vector))
    }

    pub fn insert(&mut self, dot: Dot) {
        if dot.counter == 0 || self.contains(&dot) {
            return;
        }
        let at = self.cloud.partition_point(|held| *held < dot);
        self.cloud.insert(at, dot);
        self.compact_actor(dot.actor);
    }

    /// Adds every dot of `other`.
    pub fn join(&mut self, other: &CausalContext) {
        for &(actor, n) in &other.vector {
            let at = match self.vector.binary_search_by_key(&actor, |&(held, _)| held) {
                Ok(at) => at,
                Err(at) => {
                    self.vector.insert(at, (actor, 0));
                    at
                }
            };
            if n > self.vector[at].1 {
                self.vector[at].1 = n;
                self.compact_actor(actor);
            }
        }
        for dot in &other.cloud {
            self.insert(*dot);
        }
    }

    /// True when every dot of `other` is in `self`.
    pub fn includes(&self, other: &CausalContext) -> bool {
        other.vector.iter().all(|&(actor, n)| self.vector_get(actor).is_some_and(|mine| mine >= n))
            && other.cloud.iter().all(|dot| self.contains(dot))
    }

    /// Number of actors named, a measure of the context's size.
    pub fn actor_count(&self) -> usize {
        let mut actors: Vec<Actor> = self.vector.iter().map(|&(actor, _)| actor).collect();
        actors.extend(self.cloud.iter().map(|dot| dot.actor));
        actors.sort_unstable();
        actors.dedup();
        actors.len()
    }

    /// Number of dots held outside the vector.
    pub fn cloud_len(&self) -> usize {
        self.cloud.len()
    }

    /// Every dot held, as runs of counters per actor: `1..=n` for each
    /// vector entry, then each cloud dot on its own. For checkers that
    /// model contexts without this type's logic.
    pub fn runs(&self) -> impl Iterator<Item = (Actor, core::ops::RangeInclusive<u64>)> + '_ {
        let vector = self.vector.iter().map(|&(actor, n)| (actor, 1..=n));
        vector.chain(self.cloud.iter().map(|dot| (dot.actor, dot.counter..=dot.counter)))
    }

    fn vector_get(&self, actor: Actor) -> Option<u64> {
        let at = self.vector.binary_search_by_key(&actor, |&(held, _)| held).ok()?;
        Some(self.vector[at].1)
    }

    /// The cloud's dots of `actor`, in counter order.
    fn cloud_of(&self, actor: Actor) -> &[Dot] {
        let start = self.cloud.partition_point(|dot| dot.actor < actor);
        let end = start + self.cloud[start..].partition_point(|dot| dot.actor == actor);
        &self.cloud[start..end]
    }

    /// Folds cloud dots of `actor` that have become contiguous with the vector.
    fn compact_actor(&mut self, actor: Actor) {
        let mut n = self.vector_get(actor).unwrap_or(0);
        let start = self.cloud.partition_point(|dot| dot.actor < actor);
        let mut end = start;
        // Saturating: a client may hand back a vector entry at the largest counter.
        while let Some(dot) =
            self.cloud.get(end).filter(|dot| dot.actor == actor && dot.counter <= n.saturating_add(1))
        {
            n = n.max(dot.counter);
            end += 1;
        }
        self.cloud.drain(start..end);
        if n > 0 {
            match self.vector.binary_search_by_key(&actor, |&(held, _)| held) {
                Ok(at) => self.vector[at].1 = n,
                Err(at) => self.vector.insert(at, (actor, n)),
            }
        }
    }
}

impl fmt::Debug for CausalContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.vector.iter().map(|(actor, n)| (actor, n))).finish()?;
        if !self.cloud.is_empty() {
            write!(f, "+")?;
            f.debug_set().entries(self.cloud.iter()).finish()?;
        }
        Ok(())
    }
}

/// Limits on contexts that arrive from clients, so a hostile context cannot
/// make the node allocate or store without bound.
pub const CONTEXT_BYTES_MAX: usize = 64 * 1024;

const CONTEXT_FORMAT: u8 = 1;

/// Why client-supplied context bytes were refused.
#[derive(Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ContextError {
    #[error("context of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge { len: usize, max: usize },
    #[error("context has unknown format version {0}")]
    UnknownFormat(u8),
    #[error("context bytes do not decode")]
    Malformed,
}

impl CausalContext {
    /// The opaque bytes handed to clients.
    pub fn to_bytes(&self) -> Vec<u8> {
        // Serializing maps and sets of integers into a Vec cannot fail.
        postcard::to_extend(self, vec![CONTEXT_FORMAT]).expect("postcard into a Vec is infallible here")
    }

    /// Parses bytes a client passed back. Empty bytes are the empty context.
    pub fn from_bytes(bytes: &[u8]) -> Result<CausalContext, ContextError> {
        let Some((&format, body)) = bytes.split_first() else {
            return Ok(CausalContext::new());
        };
        if bytes.len() > CONTEXT_BYTES_MAX {
            return Err(ContextError::TooLarge { len: bytes.len(), max: CONTEXT_BYTES_MAX });
        }
        if format != CONTEXT_FORMAT {
            return Err(ContextError::UnknownFormat(format));
        }
        postcard::from_bytes(body).map_err(|_| ContextError::Malformed)
    }
}

/// The payload of one sibling: bytes, or the mark of a delete.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Value {
    Live(#[serde(with = "serde_bytes")] Vec<u8>),
    Tombstone,
}

impl fmt::Debug for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Live(bytes) if bytes.len() <= 16 => write!(f, "{:?}", String::from_utf8_lossy(bytes)),
            Value::Live(bytes) => write!(f, "<{} bytes>", bytes.len()),
            Value::Tombstone => f.write_str("⊥"),
        }
    }
}

/// One concurrent version of a key.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sibling {
    pub dot: Dot,
    /// The coordinator's wall clock when the write was made. Informational,
    /// and the order of last-write-wins; never used for causality.
    pub timestamp_ms: u64,
    pub value: Value,
}

impl fmt::Debug for Sibling {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}={:?}", self.dot, self.value)
    }
}

/// Everything replicas know about one key: its siblings and the dots seen.
///
/// Decoding checks the invariants below and refuses bytes that break them
/// (see `parse`), so an object read from a peer or a disk is as well formed
/// as one built here.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "parse::ObjectParts")]
pub struct Object {
    /// Sorted by dot; no two share a dot; every dot is in `context` and
    /// counts from 1; at most [`OBJECT_SIBLINGS_MAX`].
    siblings: Vec<Sibling>,
    context: CausalContext,
}

impl Object {
    pub fn new() -> Object {
        Object::default()
    }

    pub fn siblings(&self) -> &[Sibling] {
        &self.siblings
    }

    pub fn context(&self) -> &CausalContext {
        &self.context
    }

    pub fn is_empty(&self) -> bool {
        self.siblings.is_empty() && self.context.is_empty()
    }

    /// The live values, in dot order.
    pub fn live_values(&self) -> impl Iterator<Item = &[u8]> {
        self.siblings.iter().filter_map(|sibling| match &sibling.value {
            Value::Live(bytes) => Some(bytes.as_slice()),
            Value::Tombstone => None,
        })
    }

    /// True when the key is deleted: there are siblings and all are tombstones.
    pub fn is_deleted(&self) -> bool {
        !self.siblings.is_empty() && self.siblings.iter().all(|sibling| sibling.value == Value::Tombstone)
    }

    /// Applies a write coordinated here by `actor`: the new value replaces every
    /// sibling whose dot `seen` covers and is concurrent with the rest.
    /// Returns the new dot. The caller must hold this object continuously since
    /// `actor`'s epoch began for this key (see the module documentation).
    pub fn write(
        &mut self,
        actor: Actor,
        seen: &CausalContext,
        value: Value,
        timestamp_ms: u64,
    ) -> Option<Dot> {
        let counter = self.context.max_counter(actor).max(seen.max_counter(actor)).checked_add(1)?;
        let dot = Dot { actor, counter };
        self.siblings.retain(|sibling| !seen.contains(&sibling.dot));
        self.context.join(seen);
        self.context.insert(dot);
        self.siblings.push(Sibling { dot, timestamp_ms, value });
        self.siblings.sort_by_key(|sibling| sibling.dot);
        debug_assert!(self.invariants().is_ok(), "{:?}", self.invariants());
        Some(dot)
    }

    /// Joins `other` into `self`; returns whether `self` changed. Commutative,
    /// associative and idempotent, so replicas converge whatever the order.
    pub fn merge(&mut self, other: &Object) -> bool {
        let before = self.siblings.len();
        // Drop what the other side has seen and no longer keeps: a later write
        // replaced it there.
        self.siblings.retain(|mine| {
            other.siblings.binary_search_by(|theirs| theirs.dot.cmp(&mine.dot)).is_ok()
                || !other.context.contains(&mine.dot)
        });
        let mut changed = self.siblings.len() != before;
        // Adopt what this side has never seen. A dot already kept here is in
        // our context, so it is not added twice.
        let unseen = other.siblings.iter().filter(|theirs| !self.context.contains(&theirs.dot));
        let adopted: Vec<Sibling> = unseen.cloned().collect();
        if !adopted.is_empty() {
            self.siblings.extend(adopted);
            self.siblings.sort_by_key(|sibling| sibling.dot);
            changed = true;
        }
        if !self.context.includes(&other.context) {
            self.context.join(&other.context);
            changed = true;
        }
        debug_assert!(self.invariants().is_ok(), "{:?}", self.invariants());
        changed
    }

    /// Checks the structural invariants; used by tests, and by the node
    /// when it checks its invariants (see `node::Config::check_invariants`).
    pub fn invariants(&self) -> Result<(), ObjectError> {
        self.context.check_normal().map_err(ObjectError::Context)?;
        parse::check_siblings(&self.siblings, &self.context)
    }
}

impl fmt::Debug for Object {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} ctx {:?}", self.siblings, self.context)
    }
}

#[cfg(test)]
mod tests;
