//! The memtable: the newest writes, sorted, with a byte count that bounds it.

use std::collections::{BTreeMap, btree_map};
use std::ops::Bound;

/// Bytes charged per entry on top of key and value: map node share, two
/// vectors' headers and the option tag. An estimate, but a stable one.
pub const ENTRY_OVERHEAD_BYTES: u64 = 64;

/// A value or a tombstone.
pub type Entry = Option<Vec<u8>>;

#[derive(Debug, Default)]
pub struct Memtable {
    entries: BTreeMap<Vec<u8>, Entry>,
    bytes: u64,
}

impl Memtable {
    pub fn new() -> Memtable {
        Memtable::default()
    }

    /// Estimated memory held, in bytes.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Records a put (`Some`) or a delete (`None`), replacing any older entry.
    pub fn insert(&mut self, key: &[u8], value: Option<&[u8]>) {
        let new_bytes = value.map_or(0, <[u8]>::len) as u64;
        if let Some(slot) = self.entries.get_mut(key) {
            let old_bytes = slot.as_ref().map_or(0, Vec::len) as u64;
            *slot = value.map(<[u8]>::to_vec);
            self.bytes = self.bytes - old_bytes + new_bytes;
        } else {
            self.entries.insert(key.to_vec(), value.map(<[u8]>::to_vec));
            self.bytes += key.len() as u64 + new_bytes + ENTRY_OVERHEAD_BYTES;
        }
    }

    /// `None` if the memtable knows nothing of `key`, `Some(None)` for a tombstone.
    pub fn get(&self, key: &[u8]) -> Option<Option<&[u8]>> {
        self.entries.get(key).map(|entry| entry.as_deref())
    }

    /// The entries in `(start, end)`, in key order; empty for an empty range.
    pub fn range(&self, start: Bound<&[u8]>, end: Bound<&[u8]>) -> btree_map::Range<'_, Vec<u8>, Entry> {
        if range_is_empty(start, end) {
            return self.entries.range::<[u8], _>((Bound::Included(&[][..]), Bound::Excluded(&[][..])));
        }
        self.entries.range::<[u8], _>((start, end))
    }

    /// All entries in key order, for a flush.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], Option<&[u8]>)> {
        self.entries.iter().map(|(key, entry)| (key.as_slice(), entry.as_deref()))
    }

    /// The smallest and largest keys, if any.
    pub fn key_range(&self) -> Option<(&[u8], &[u8])> {
        let first = self.entries.first_key_value()?.0;
        let last = self.entries.last_key_value()?.0;
        Some((first, last))
    }
}

/// True when no key can lie between the bounds; `BTreeMap::range` panics on
/// such bounds, so every range query checks first.
pub fn range_is_empty(start: Bound<&[u8]>, end: Bound<&[u8]>) -> bool {
    match (start, end) {
        (Bound::Included(s), Bound::Included(e)) => s > e,
        (Bound::Included(s), Bound::Excluded(e)) => s >= e,
        (Bound::Excluded(s), Bound::Included(e)) => s >= e,
        (Bound::Excluded(s), Bound::Excluded(e)) => s >= e,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_replaces_and_counts_bytes() {
        let mut memtable = Memtable::new();
        memtable.insert(b"k", Some(b"12345"));
        assert_eq!(memtable.bytes(), 1 + 5 + ENTRY_OVERHEAD_BYTES);
        memtable.insert(b"k", None);
        assert_eq!(memtable.bytes(), 1 + ENTRY_OVERHEAD_BYTES);
        assert_eq!(memtable.get(b"k"), Some(None));
        assert_eq!(memtable.get(b"x"), None);
        memtable.insert(b"k", Some(b"ab"));
        assert_eq!(memtable.get(b"k"), Some(Some(&b"ab"[..])));
        assert_eq!(memtable.bytes(), 1 + 2 + ENTRY_OVERHEAD_BYTES);
    }

    #[test]
    fn range_respects_bounds_and_empty_ranges() {
        let mut memtable = Memtable::new();
        for key in [b"a", b"b", b"c", b"d"] {
            memtable.insert(key, Some(key));
        }
        let keys = |start, end| memtable.range(start, end).map(|(k, _)| k.clone()).collect::<Vec<_>>();
        let got = keys(Bound::Excluded(b"a"), Bound::Included(b"c"));
        assert_eq!(got, vec![b"b".to_vec(), b"c".to_vec()]);
        assert_eq!(keys(Bound::Unbounded, Bound::Unbounded).len(), 4);
        assert!(keys(Bound::Included(b"c"), Bound::Excluded(b"c")).is_empty());
        assert!(keys(Bound::Excluded(b"c"), Bound::Excluded(b"a")).is_empty());
    }
}
