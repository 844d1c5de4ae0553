//! The replica asked: answering a peer's [`Request`] from the tree, or from
//! the store through a scan or reads that the node runs as a job.
//!
//! Answering keeps no state between requests. Each request names the tree
//! it is about, and a tree that changed between two requests of one exchange
//! only makes the exchange find less or more; the second comparison of every
//! key (see [`Exchange`](super::Exchange)) keeps such a change from being
//! taken for a difference.

use super::tree::{Arcs, RangeTree};
use super::wire::{KEY_LIST_BYTES_MAX, KeyList, KeyVersion, Refusal, Reply, Request, TreeId, ring_offset};
use super::{TreeHash, VersionHash};
use crate::ring::{self, PositionRange};

/// What answering a request takes.
#[derive(Debug)]
pub enum Response {
    /// Send this reply now.
    Reply(Reply),
    /// Scan the store and reply [`Reply::Keys`] with what it found
    /// ([`SegmentScan`]).
    Scan(SegmentScan),
    /// Read these keys' records and reply with their versions
    /// ([`VersionRead::reply`]).
    Read(VersionRead),
}

/// Answers `request` with what `tree`, this replica's tree of the range the
/// request names, holds. The node finds the tree by `request.tree().range()`
/// and replies [`Refusal::UnknownTree`] itself when it keeps none. Key lists
/// stop at `list_bytes_max` (at most [`KEY_LIST_BYTES_MAX`]).
pub fn respond(tree: &RangeTree, request: Request, list_bytes_max: u32) -> Response {
    if request.tree() != tree.id() {
        // The same range cut into another shape: nothing to compare.
        return Response::Reply(Reply::Refused(Refusal::UnknownTree));
    }
    match request {
        Request::Root { root, .. } if root == tree.root() => Response::Reply(Reply::InSync),
        Request::Root { .. } => Response::Reply(Reply::Branches(tree.branch_hashes().collect())),
        Request::Segments { branches, .. } => {
            let hashes: Vec<TreeHash> =
                branches.iter().flat_map(|&branch| tree.segment_hashes(branch)).collect();
            debug_assert_eq!(hashes.len(), branches.len() * tree.shape().segments_per_branch() as usize);
            Response::Reply(Reply::Segments(hashes))
        }
        Request::Keys { segments, after, .. } => {
            Response::Scan(SegmentScan::new(tree.id(), tree.arcs(), segments, after, list_bytes_max))
        }
        Request::Versions { tree, keys } => Response::Read(VersionRead { tree, keys }),
    }
}

/// A scan of the store for the keys and versions of some segments of a
/// tree: the node reads [`ranges`](SegmentScan::ranges) in order with
/// `Store::scan_range`, starting just after [`after`](SegmentScan::after)
/// when there is one (it lies in the first range), hashes each record's object with
/// [`version_hash`](super::version_hash) and pushes it into
/// [`list`](SegmentScan::list)'s builder until that is full. A record that
/// does not decode is left out: its key then looks missing here, and the
/// repair's merge replaces the damaged copy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentScan {
    tree: TreeId,
    arcs: Arcs,
    /// Ascending.
    segments: Vec<u32>,
    /// The segments' arcs, neighbours joined, in ring order.
    ranges: Vec<PositionRange>,
    /// The key the list resumes after, and its ring position.
    after: Option<(u64, Vec<u8>)>,
    list_bytes_max: u32,
}

impl SegmentScan {
    pub(super) fn new(
        tree: TreeId,
        arcs: Arcs,
        segments: Vec<u32>,
        after: Option<Vec<u8>>,
        list_bytes_max: u32,
    ) -> SegmentScan {
        assert!(segments.is_sorted_by(|a, b| a < b), "segments ascending");
        let after = after.map(|key| (ring::position(&key), key));
        let first = segments.first().copied();
        assert!(
            after.as_ref().is_none_or(|(position, _)| Some(arcs.segment_of(*position)) == first),
            "a list resumes in its first segment"
        );
        let mut ranges: Vec<PositionRange> = Vec::new();
        for range in segments.iter().filter_map(|&segment| arcs.segment_range(segment)) {
            match ranges.last_mut() {
                Some(last) if last.end == range.start => last.end = range.end,
                _ => ranges.push(range),
            }
        }
        let list_bytes_max = list_bytes_max.min(KEY_LIST_BYTES_MAX);
        SegmentScan { tree, arcs, segments, ranges, after, list_bytes_max }
    }

    pub fn tree(&self) -> TreeId {
        self.tree
    }

    pub fn segments(&self) -> &[u32] {
        &self.segments
    }

    /// The positions to scan, in ring order.
    pub fn ranges(&self) -> &[PositionRange] {
        &self.ranges
    }

    /// The ring position and key the scan starts after, inside the first
    /// range, when it resumes a list cut short.
    pub fn after(&self) -> Option<(u64, &[u8])> {
        self.after.as_ref().map(|(position, key)| (*position, key.as_slice()))
    }

    /// An empty list to fill with what the scan finds.
    pub fn list(&self) -> KeyListBuilder {
        let range = self.arcs.range();
        let after = self.after.as_ref().map(|(position, key)| (ring_offset(range, *position), key.clone()));
        KeyListBuilder {
            range,
            entries: Vec::new(),
            bytes: 0,
            bytes_max: u64::from(self.list_bytes_max),
            full: false,
            after,
            last_offset: 0,
        }
    }
}

/// Collects a scan's records into a [`KeyList`] of bounded size.
#[derive(Debug)]
pub struct KeyListBuilder {
    range: PositionRange,
    entries: Vec<KeyVersion>,
    bytes: u64,
    bytes_max: u64,
    full: bool,
    /// Ring offset and key the list resumes after, if it does.
    after: Option<(u64, Vec<u8>)>,
    /// Ring offset of the last entry, to check the scan's order.
    last_offset: u64,
}

impl KeyListBuilder {
    /// Adds the scan's next record, `key` at ring `position` with `version`.
    /// Returns false once the list is full and this record was left out:
    /// stop scanning. The first record always fits.
    pub fn push(&mut self, position: u64, key: &[u8], version: VersionHash) -> bool {
        assert!(!self.full, "nothing is pushed into a full list");
        assert!(self.range.contains(position), "a record of the tree's range");
        let bytes = KeyVersion::list_bytes(key);
        if !self.entries.is_empty() && self.bytes + bytes > self.bytes_max {
            self.full = true;
            return false;
        }
        let offset = ring_offset(self.range, position);
        let last = match self.entries.last() {
            Some(entry) => Some((self.last_offset, entry.key.as_slice())),
            None => self.after.as_ref().map(|(offset, key)| (*offset, key.as_slice())),
        };
        assert!(
            last.is_none_or(|last| last < (offset, key)),
            "records pushed in ring order, after the cursor"
        );
        self.last_offset = offset;
        self.bytes += bytes;
        self.entries.push(KeyVersion { key: key.to_vec(), version });
        true
    }

    /// The list: complete unless a record was left out.
    pub fn finish(self) -> KeyList {
        KeyList { entries: self.entries, complete: !self.full }
    }
}

/// Reads of some keys' records, for their versions as stored now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VersionRead {
    pub(super) tree: TreeId,
    pub(super) keys: Vec<Vec<u8>>,
}

impl VersionRead {
    pub fn tree(&self) -> TreeId {
        self.tree
    }

    /// In ring order.
    pub fn keys(&self) -> &[Vec<u8>] {
        &self.keys
    }

    /// The reply of a replica that read `versions`, one per key in order
    /// (`None` where it holds no record).
    pub fn reply(&self, versions: Vec<Option<VersionHash>>) -> Reply {
        assert_eq!(versions.len(), self.keys.len(), "one version per key read");
        Reply::Versions(versions)
    }
}
