//! The consistent-hash ring: which nodes hold which keys.
//!
//! # Placement
//!
//! Positions are points on a circle of 2^64. Every member owns `weight * vnodes_per_weight`
//! virtual nodes (vnodes), each at a token derived from the member's id and the vnode's
//! index. A key sits at [`position`]`(key)` and belongs to the range that ends at the first
//! token at or after it, wrapping past `u64::MAX` to the lowest token. The range's
//! preference list holds the first N distinct members met walking clockwise from there,
//! zones permitting (below); its first entry is the primary.
//!
//! # Why virtual nodes
//!
//! With one token per member, arc sizes are exponential: some members own several times
//! their share, and a joining member relieves only one neighbour. With k tokens a member's
//! share varies by about 1/sqrt(k) (12% at the default 64), a joining member takes a little
//! from many, a leaving one spreads its load over many, and weight is just a token count.
//!
//! # Why SipHash with fixed keys
//!
//! Members compute placement independently from the membership they learned by gossip, so
//! they agree only if the hash is the same function on every machine and in every release.
//! `std`'s `RandomState` is seeded per process; SipHash-1-3 with the constant keys below is
//! specified to the byte, fast, and mixes well. Node id and vnode index are hashed as
//! fixed-width little-endian bytes so no platform detail leaks in. Tokens and key positions
//! use different keys, so a key whose bytes equal a vnode's encoding is not tied to that
//! vnode. The keys are public: SipHash gives uniform placement here, not secrecy, and a
//! client that wants to can craft keys that all land on one member. Changing a key or the
//! encoding moves almost every key, which is a data-format change; the tests pin expected
//! placements so it cannot happen by accident.
//!
//! # Zones
//!
//! Members may name a failure zone (rack, availability zone). Walking clockwise, the first
//! member met in each zone not yet represented is chosen, until N zones hold a replica; if
//! there are fewer zones than N, the remaining slots go to the first members met that are
//! not yet chosen. Members without a zone share one unnamed zone, since nothing says they
//! fail independently; a ring with no zones at all is therefore plain clockwise order.
//!
//! # Lookups
//!
//! A preference list depends only on the range, so [`Ring::new`] computes every range's list
//! once. A lookup is one hash and one binary search, and borrows its answer from the ring.

mod analysis;
mod placement;

use core::fmt;

use serde::{Deserialize, Serialize};
use siphasher::sip::SipHasher13;
use thiserror::Error;

use crate::id::NodeId;

pub use analysis::{Moves, Ownership, RangeMove, Transfer, moves};

/// SipHash keys for vnode tokens. Part of the data format: changing them moves every key.
const TOKEN_KEYS: (u64, u64) = (u64::from_le_bytes(*b"keel-rin"), u64::from_le_bytes(*b"g-token1"));
/// SipHash keys for key positions. Part of the data format: changing them moves every key.
const KEY_KEYS: (u64, u64) = (u64::from_le_bytes(*b"keel-rin"), u64::from_le_bytes(*b"g-keypos"));

/// Bound on a ring's vnodes, which bounds construction time and memory (each vnode stores
/// its token and a preference list of up to `REPLICAS_MAX` ids).
pub const VNODES_MAX: u64 = 1 << 18;
/// Bound on the replica count N.
pub const REPLICAS_MAX: u8 = 16;

/// Where `key` sits on the ring.
pub fn position(key: &[u8]) -> u64 {
    SipHasher13::new_with_keys(KEY_KEYS.0, KEY_KEYS.1).hash(key)
}

/// A key and its ring position, hashed once: placement and storage both need
/// the position (storage orders records by it), and a request carries it
/// from one to the other instead of hashing again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlacedKey<'a> {
    key: &'a [u8],
    position: u64,
}

impl<'a> PlacedKey<'a> {
    pub fn new(key: &'a [u8]) -> PlacedKey<'a> {
        PlacedKey { key, position: position(key) }
    }

    /// `key` at `position`, which the caller computed with [`position`] and kept.
    pub(crate) fn known(key: &'a [u8], position: u64) -> PlacedKey<'a> {
        debug_assert_eq!(position, self::position(key), "a kept position belongs to its key");
        PlacedKey { key, position }
    }

    pub fn key(&self) -> &'a [u8] {
        self.key
    }

    pub fn position(&self) -> u64 {
        self.position
    }
}

/// One node as the ring sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub id: NodeId,
    /// Relative capacity, at least 1: the member gets `weight * vnodes_per_weight` vnodes.
    pub weight: u32,
    /// Failure zone; `None` for members that share the one unnamed zone.
    pub zone: Option<String>,
}

impl Member {
    /// A member of weight 1 without a zone.
    pub fn new(id: NodeId) -> Member {
        Member { id, weight: 1, zone: None }
    }

    pub fn with_weight(self, weight: u32) -> Member {
        Member { weight, ..self }
    }

    pub fn with_zone(self, zone: impl Into<String>) -> Member {
        Member { zone: Some(zone.into()), ..self }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RingConfig {
    /// N: how many replicas each key has, 1..=`REPLICAS_MAX`.
    pub replicas: u8,
    /// Vnodes per unit of weight, at least 1.
    pub vnodes_per_weight: u32,
}

impl Default for RingConfig {
    fn default() -> RingConfig {
        RingConfig { replicas: 3, vnodes_per_weight: 64 }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum RingError {
    #[error("a ring needs at least one member")]
    MembersEmpty,
    #[error("replica count {replicas} is outside 1..={max}")]
    ReplicasOutOfRange { replicas: u8, max: u8 },
    #[error("vnodes_per_weight is 0; it must be at least 1")]
    VnodesPerWeightZero,
    #[error("member {node} has weight 0; weights start at 1")]
    WeightZero { node: NodeId },
    #[error("member {node} has an empty zone name; leave the zone unset instead")]
    ZoneEmpty { node: NodeId },
    #[error("member {node} appears more than once")]
    MemberDuplicate { node: NodeId },
    #[error("member {node} is not in the ring")]
    MemberUnknown { node: NodeId },
    #[error("the ring would have {count} vnodes, more than the maximum of {max}")]
    VnodesTooMany { count: u64, max: u64 },
}

/// An immutable placement of keys on members. Build a new ring when membership changes.
#[derive(Clone, PartialEq, Eq)]
pub struct Ring {
    config: RingConfig,
    /// Sorted by id.
    members: Vec<Member>,
    tables: placement::Tables,
}

impl Ring {
    /// Builds the ring, computing every range's preference list. Fails with the first rule
    /// `members` or `config` breaks: no members, a duplicate id, weight 0, an empty zone
    /// name, N outside 1..=`REPLICAS_MAX`, or more than `VNODES_MAX` vnodes.
    pub fn new(members: Vec<Member>, config: RingConfig) -> Result<Ring, RingError> {
        let members = validate(members, &config)?;
        let tables = placement::tables(&members, config.vnodes_per_weight, usize::from(config.replicas));
        Ok(Ring { config, members, tables })
    }

    /// This ring's membership plus `member`.
    pub fn with_member(&self, member: Member) -> Result<Ring, RingError> {
        let mut members = self.members.clone();
        members.push(member);
        Ring::new(members, self.config)
    }

    /// This ring's membership without member `id`.
    pub fn without_member(&self, id: NodeId) -> Result<Ring, RingError> {
        let mut members = self.members.clone();
        let index = self.member_index(id).ok_or(RingError::MemberUnknown { node: id })?;
        members.remove(index);
        Ring::new(members, self.config)
    }

    pub fn config(&self) -> &RingConfig {
        &self.config
    }

    /// Members, sorted by id.
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    pub fn member(&self, id: NodeId) -> Option<&Member> {
        self.member_index(id).map(|index| &self.members[index])
    }

    /// The length of every preference list: N, or the member count if that is smaller.
    pub fn replica_count(&self) -> usize {
        self.tables.replica_count
    }

    pub fn vnode_count(&self) -> usize {
        self.tables.tokens.len()
    }

    /// The replicas of `key`, primary first. Always `replica_count()` distinct members.
    pub fn preference_list(&self, key: &[u8]) -> &[NodeId] {
        self.range_at(position(key)).preference
    }

    /// The range that holds `position`.
    pub fn range_at(&self, position: u64) -> TokenRange<'_> {
        self.range(self.range_index(position))
    }

    /// Every range once, in token order. The first range wraps: it starts after the highest
    /// token and ends at the lowest.
    pub fn ranges(&self) -> impl ExactSizeIterator<Item = TokenRange<'_>> + '_ {
        (0..self.tables.tokens.len()).map(|index| self.range(index))
    }

    /// All placed members in the order a request for `key` should try them: the preference
    /// list, then the rest in clockwise order (the fallbacks of a sloppy quorum).
    pub fn walk(&self, key: &[u8]) -> Walk<'_> {
        let start = self.range_index(position(key));
        Walk { ring: self, preference: self.range(start).preference, start, distance: 0, yielded: 0 }
    }

    /// Index of the vnode whose range holds `position`: the first token at or after it.
    fn range_index(&self, position: u64) -> usize {
        let index = self.tables.tokens.partition_point(|&token| token < position);
        // Past the highest token the circle wraps to the lowest.
        if index == self.tables.tokens.len() { 0 } else { index }
    }

    fn range(&self, index: usize) -> TokenRange<'_> {
        let tokens = &self.tables.tokens;
        let before = if index == 0 { tokens.len() - 1 } else { index - 1 };
        let count = self.tables.replica_count;
        let preference = &self.tables.preferences[index * count..][..count];
        TokenRange { start: tokens[before], end: tokens[index], preference }
    }

    fn member_index(&self, id: NodeId) -> Option<usize> {
        self.members.binary_search_by_key(&id, |member| member.id).ok()
    }
}

impl fmt::Debug for Ring {
    /// The inputs, not the derived tables, which run to megabytes on large rings.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ring")
            .field("config", &self.config)
            .field("members", &self.members)
            .field("vnode_count", &self.vnode_count())
            .finish_non_exhaustive()
    }
}

/// Checks `members` and `config` against the ring's rules; returns members sorted by id.
fn validate(mut members: Vec<Member>, config: &RingConfig) -> Result<Vec<Member>, RingError> {
    if !(1..=REPLICAS_MAX).contains(&config.replicas) {
        return Err(RingError::ReplicasOutOfRange { replicas: config.replicas, max: REPLICAS_MAX });
    }
    if config.vnodes_per_weight == 0 {
        return Err(RingError::VnodesPerWeightZero);
    }
    if members.is_empty() {
        return Err(RingError::MembersEmpty);
    }
    members.sort_by_key(|member| member.id);
    if let Some(pair) = members.windows(2).find(|pair| pair[0].id == pair[1].id) {
        return Err(RingError::MemberDuplicate { node: pair[0].id });
    }
    let mut count: u64 = 0;
    for member in &members {
        if member.weight == 0 {
            return Err(RingError::WeightZero { node: member.id });
        }
        if member.zone.as_deref() == Some("") {
            return Err(RingError::ZoneEmpty { node: member.id });
        }
        // Cannot overflow: both factors are u32, and the sum stops at VNODES_MAX.
        count += u64::from(member.weight) * u64::from(config.vnodes_per_weight);
        if count > VNODES_MAX {
            return Err(RingError::VnodesTooMany { count, max: VNODES_MAX });
        }
    }
    Ok(members)
}

/// The positions `(start, end]` on the circle and the members that replicate them. When
/// `start >= end` the range wraps past `u64::MAX`; when they are equal (a ring with a
/// single vnode) it is the whole circle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TokenRange<'a> {
    /// Exclusive.
    pub start: u64,
    /// Inclusive: the token of the vnode that ends the range.
    pub end: u64,
    /// Primary first.
    pub preference: &'a [NodeId],
}

impl TokenRange<'_> {
    pub fn contains(&self, position: u64) -> bool {
        self.positions().contains(position)
    }

    /// The positions alone, without the replicas.
    pub fn positions(&self) -> PositionRange {
        PositionRange { start: self.start, end: self.end }
    }

    pub fn wraps(&self) -> bool {
        self.start >= self.end
    }

    /// How many positions the range holds, up to 2^64.
    pub fn width(&self) -> u128 {
        arc_width(self.start, self.end)
    }

    /// The share of the circle the range holds, in (0, 1].
    pub fn fraction(&self) -> f64 {
        fraction(self.width())
    }
}

/// Positions `(start, end]` going clockwise, as a vnode's [`TokenRange`] holds
/// them: past `u64::MAX` it wraps to 0 when `start >= end`, and it is the
/// whole circle when they are equal. What a range scan of storage covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PositionRange {
    /// Exclusive.
    pub start: u64,
    /// Inclusive.
    pub end: u64,
}

impl PositionRange {
    pub fn contains(&self, position: u64) -> bool {
        if self.start < self.end {
            self.start < position && position <= self.end
        } else {
            self.start < position || position <= self.end
        }
    }

    pub fn wraps(&self) -> bool {
        self.start >= self.end
    }

    /// The range as intervals of positions, each inclusive at both ends, in
    /// clockwise order from `start`: one, or two when it wraps past
    /// `u64::MAX` (the first then ends at `u64::MAX`, the second starts at 0).
    pub fn intervals(&self) -> impl Iterator<Item = (u64, u64)> {
        let (start, end) = (self.start, self.end);
        // Positions after `start` up to the end of the circle, when it wraps
        // and `start` is not the last position already.
        let tail = (self.wraps() && start < u64::MAX).then(|| (start + 1, u64::MAX));
        let head = if self.wraps() { (0, end) } else { (start + 1, end) };
        tail.into_iter().chain(std::iter::once(head))
    }
}

/// Positions in `(start, end]`, going clockwise; the whole circle when `start == end`.
fn arc_width(start: u64, end: u64) -> u128 {
    match end.wrapping_sub(start) {
        0 => 1 << 64,
        width => u128::from(width),
    }
}

/// `width` positions as a share of the circle.
fn fraction(width: u128) -> f64 {
    width as f64 / 18_446_744_073_709_551_616.0
}

/// Placed members in walk order for one key; see [`Ring::walk`]. Allocates nothing.
#[derive(Clone, Debug)]
pub struct Walk<'a> {
    ring: &'a Ring,
    preference: &'a [NodeId],
    /// Index of the vnode the walk starts at.
    start: usize,
    /// Vnodes walked past the start so far, looking for fallbacks.
    distance: usize,
    yielded: usize,
}

impl Iterator for Walk<'_> {
    type Item = NodeId;

    fn next(&mut self) -> Option<NodeId> {
        if let Some(&id) = self.preference.get(self.yielded) {
            self.yielded += 1;
            return Some(id);
        }
        let tables = &self.ring.tables;
        let vnode_count = tables.tokens.len();
        while self.yielded < tables.placed_count && self.distance < vnode_count {
            let distance = self.distance;
            self.distance += 1;
            let j = self.start + distance;
            let j = if j < vnode_count { j } else { j - vnode_count };
            // The first vnode of a member on this walk: its previous vnode is behind the start.
            if tables.node_gaps[j] as usize > distance {
                let id = self.ring.members[tables.owners[j] as usize].id;
                if !self.preference.contains(&id) {
                    self.yielded += 1;
                    return Some(id);
                }
            }
        }
        None
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let remaining = self.ring.tables.placed_count - self.yielded;
        (remaining, Some(remaining))
    }
}

impl ExactSizeIterator for Walk<'_> {}

#[cfg(test)]
mod properties;
#[cfg(test)]
mod tests;
