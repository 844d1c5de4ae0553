//! One range's tree: segments, branches and a root, kept current by XOR.

use core::fmt;

use super::wire::{TreeId, ring_offset};
use super::{TreeHash, TreeShape, VersionHash, item_hash};
use crate::ring::PositionRange;

/// The anti-entropy tree of one replicated range; see the module
/// documentation. Every record of the range is in it once, as
/// `item(key, version_hash)` XORed into its segment, its branch and the root.
#[derive(Clone, PartialEq, Eq)]
pub struct RangeTree {
    range: PositionRange,
    shape: TreeShape,
    arcs: Arcs,
    segments: Box<[u64]>,
    branches: Box<[u64]>,
    root: u64,
    /// Records in the tree, as counted by the updates it was given.
    keys: u64,
}

impl RangeTree {
    /// The tree of an empty range.
    pub fn new(range: PositionRange, shape: TreeShape) -> RangeTree {
        RangeTree {
            range,
            shape,
            arcs: Arcs::new(range, shape),
            segments: vec![0; shape.segments() as usize].into_boxed_slice(),
            branches: vec![0; shape.branches() as usize].into_boxed_slice(),
            root: 0,
            keys: 0,
        }
    }

    /// The tree of `records`, `(key, position, version)` each, as a scan of
    /// the range reads them: for building a tree at start-up or after a
    /// loss. A large range is better built in steps with [`insert`], a chunk
    /// of the scan at a time.
    ///
    /// [`insert`]: RangeTree::insert
    pub fn from_records<K: AsRef<[u8]>>(
        range: PositionRange,
        shape: TreeShape,
        records: impl IntoIterator<Item = (K, u64, VersionHash)>,
    ) -> RangeTree {
        let mut tree = RangeTree::new(range, shape);
        for (key, position, version) in records {
            tree.insert(key.as_ref(), position, version);
        }
        tree
    }

    /// Adds a record the tree does not hold yet.
    pub fn insert(&mut self, key: &[u8], position: u64, version: VersionHash) {
        self.update(key, position, None, Some(version));
    }

    /// Records that `key` (at ring `position`, inside the range) went from
    /// version `old` to `new`, `None` meaning no record. O(1): the old item
    /// is XORed out and the new one in. `old` must be what the tree holds
    /// for the key, or the tree no longer matches the store.
    pub fn update(&mut self, key: &[u8], position: u64, old: Option<VersionHash>, new: Option<VersionHash>) {
        assert!(self.range.contains(position), "position {position:#x} is outside {:?}", self.range);
        let item = |version: Option<VersionHash>| version.map_or(0, |version| item_hash(key, version));
        let delta = item(old) ^ item(new);
        let segment = self.segment_of(position);
        let branch = self.shape.branch_of(segment);
        self.segments[segment as usize] ^= delta;
        self.branches[branch as usize] ^= delta;
        self.root ^= delta;
        // Wrapping, so that updates commute in the count as in the hashes.
        match (old, new) {
            (None, Some(_)) => self.keys = self.keys.wrapping_add(1),
            (Some(_), None) => self.keys = self.keys.wrapping_sub(1),
            _ => {}
        }
    }

    /// What identifies this tree to a peer: its range and shape.
    pub fn id(&self) -> TreeId {
        TreeId::new(self.range, self.shape)
    }

    pub fn range(&self) -> PositionRange {
        self.range
    }

    pub(super) fn arcs(&self) -> Arcs {
        self.arcs
    }

    pub fn shape(&self) -> TreeShape {
        self.shape
    }

    pub fn root(&self) -> TreeHash {
        TreeHash(self.root)
    }

    /// Records in the tree, by the count of inserts and removals it was told of.
    pub fn keys(&self) -> u64 {
        self.keys
    }

    pub fn branch_hashes(&self) -> impl ExactSizeIterator<Item = TreeHash> + '_ {
        self.branches.iter().map(|&hash| TreeHash(hash))
    }

    pub fn branch_hash(&self, branch: u32) -> TreeHash {
        TreeHash(self.branches[branch as usize])
    }

    /// The hashes of the segments under `branch`, in order.
    pub fn segment_hashes(&self, branch: u32) -> impl ExactSizeIterator<Item = TreeHash> + '_ {
        let per_branch = self.shape.segments_per_branch() as usize;
        let start = branch as usize * per_branch;
        self.segments[start..start + per_branch].iter().map(|&hash| TreeHash(hash))
    }

    pub fn segment_hash(&self, segment: u32) -> TreeHash {
        TreeHash(self.segments[segment as usize])
    }

    /// The segment that holds `position`, which must be inside the range.
    pub fn segment_of(&self, position: u64) -> u32 {
        self.arcs.segment_of(position)
    }

    /// The positions of `segment`, a sub-range of the tree's range: what the
    /// store scans to list the segment's keys. `None` when the segment holds
    /// no position (a range narrower than the tree has segments).
    pub fn segment_range(&self, segment: u32) -> Option<PositionRange> {
        self.arcs.segment_range(segment)
    }

    /// Bytes the tree holds, for metrics and capacity planning.
    pub fn memory_bytes(&self) -> usize {
        size_of::<RangeTree>() + (self.segments.len() + self.branches.len()) * size_of::<u64>()
    }

    /// Whether branches and root are the XORs of what they hold. O(size of
    /// the tree); for tests and checkers.
    pub fn check(&self) -> Result<(), String> {
        let per_branch = self.shape.segments_per_branch() as usize;
        for (branch, hashes) in self.segments.chunks(per_branch).enumerate() {
            let xor = hashes.iter().fold(0, |acc, hash| acc ^ hash);
            if xor != self.branches[branch] {
                return Err(format!("branch {branch} is not the XOR of its segments"));
            }
        }
        if self.branches.iter().fold(0, |acc, hash| acc ^ hash) != self.root {
            return Err("the root is not the XOR of the branches".into());
        }
        Ok(())
    }
}

impl fmt::Debug for RangeTree {
    /// The shape and root, not 2^14 hashes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RangeTree")
            .field("range", &self.range)
            .field("shape", &self.shape)
            .field("root", &self.root())
            .field("keys", &self.keys)
            .finish_non_exhaustive()
    }
}

/// How a range is cut into segments: equal arcs of ring positions, in
/// clockwise order from the range's start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Arcs {
    range: PositionRange,
    segments: u32,
    /// Positions per segment, rounded up, so `segments` arcs cover the range
    /// (the last one may be shorter, or some empty when the range is
    /// narrower than the tree has segments).
    width: u64,
}

impl Arcs {
    pub(super) fn new(range: PositionRange, shape: TreeShape) -> Arcs {
        let width = range_width(range).div_ceil(u128::from(shape.segments()));
        // A shape has at least 2 segments, so an arc is at most half the circle.
        let width = u64::try_from(width).expect("an arc of at most 2^63 positions fits in 64 bits");
        Arcs { range, segments: shape.segments(), width }
    }

    pub(super) fn range(&self) -> PositionRange {
        self.range
    }

    pub(super) fn segment_of(&self, position: u64) -> u32 {
        debug_assert!(self.range.contains(position));
        let segment = ring_offset(self.range, position) / self.width;
        debug_assert!(segment < u64::from(self.segments));
        segment as u32
    }

    pub(super) fn segment_range(&self, segment: u32) -> Option<PositionRange> {
        assert!(segment < self.segments, "segment {segment} of a tree of {} segments", self.segments);
        let width = range_width(self.range);
        let low = u128::from(segment) * u128::from(self.width);
        if low >= width {
            return None;
        }
        let high = (low + u128::from(self.width)).min(width);
        // Offsets `low..high` are positions `start + 1 + offset`: the arc
        // `(start + low, start + high]`. Truncating 2^64 to 0 is the wrap.
        let start = self.range.start.wrapping_add(low as u64);
        let end = self.range.start.wrapping_add(high as u64);
        Some(PositionRange { start, end })
    }
}

/// Positions in a range, up to 2^64 for the whole circle.
fn range_width(range: PositionRange) -> u128 {
    match range.end.wrapping_sub(range.start) {
        0 => 1 << 64,
        width => u128::from(width),
    }
}
