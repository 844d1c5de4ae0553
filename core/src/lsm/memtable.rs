//! The memtable: the newest writes, sorted, with a byte count that bounds it.
//!
//! Values sit in a slot array. Point lookups go through a hash index (one
//! hash and one comparison), because a tree walk costs a dozen or more key
//! comparisons per lookup and point lookups are most of the work; flushes
//! and scans go through an ordered index. Both indexes share each key's
//! allocation.

use std::collections::{BTreeMap, btree_map};
use std::ops::Bound;
use std::sync::Arc;

use crate::KeyedHasher;

/// Bytes charged per entry on top of key and value: the two index entries,
/// the key's and the value's allocation headers, and the slot. An
/// estimate, but a stable one.
pub const ENTRY_OVERHEAD_BYTES: u64 = 96;

/// A value or a tombstone.
pub type Entry = Option<Vec<u8>>;

#[derive(Debug)]
pub struct Memtable {
    values: Vec<Entry>,
    index: hashbrown::HashMap<Arc<[u8]>, u32, KeyedHasher>,
    order: BTreeMap<Arc<[u8]>, u32>,
    bytes: u64,
    /// Entries that are tombstones, for the engine's key estimate.
    tombstones: usize,
}

impl Memtable {
    /// An empty memtable whose index hashes keys with `hasher`.
    pub fn new(hasher: KeyedHasher) -> Memtable {
        Memtable {
            values: Vec::new(),
            index: hashbrown::HashMap::with_hasher(hasher),
            order: BTreeMap::new(),
            bytes: 0,
            tombstones: 0,
        }
    }

    pub fn hasher(&self) -> KeyedHasher {
        *self.index.hasher()
    }

    /// Estimated memory held, in bytes.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub fn len(&self) -> usize {
        self.values.len()
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// How many entries are tombstones; `len() - tombstones()` are values.
    pub fn tombstones(&self) -> usize {
        self.tombstones
    }

    /// Records a put (`Some`) or a delete (`None`), replacing any older entry.
    pub fn insert(&mut self, key: &[u8], value: Option<&[u8]>) {
        let new_bytes = value.map_or(0, <[u8]>::len) as u64;
        if let Some(entry) = self.index.get(key).and_then(|&slot| self.values.get_mut(slot as usize)) {
            let old_bytes = entry.as_ref().map_or(0, Vec::len) as u64;
            self.tombstones = self.tombstones + usize::from(value.is_none()) - usize::from(entry.is_none());
            match (entry.as_mut(), value) {
                // Reuse the old value's allocation when it can hold the new one.
                (Some(old), Some(new)) => {
                    old.clear();
                    old.extend_from_slice(new);
                }
                _ => *entry = value.map(<[u8]>::to_vec),
            }
            self.bytes = self.bytes - old_bytes + new_bytes;
            return;
        }
        // Slots are u32: a memtable is flushed long before 4 billion entries.
        let slot = u32::try_from(self.values.len()).expect("memtable holds fewer than 2^32 entries");
        let key: Arc<[u8]> = Arc::from(key);
        self.values.push(value.map(<[u8]>::to_vec));
        self.tombstones += usize::from(value.is_none());
        self.index.insert(key.clone(), slot);
        self.order.insert(key.clone(), slot);
        self.bytes += key.len() as u64 + new_bytes + ENTRY_OVERHEAD_BYTES;
    }

    /// `None` if the memtable knows nothing of `key`, `Some(None)` for a tombstone.
    pub fn get(&self, key: &[u8]) -> Option<Option<&[u8]>> {
        let &slot = self.index.get(key)?;
        self.values.get(slot as usize).map(Option::as_deref)
    }

    /// The entries in `(start, end)`, in key order; empty for an empty range.
    pub fn range(&self, start: Bound<&[u8]>, end: Bound<&[u8]>) -> Range<'_> {
        let keys = if range_is_empty(start, end) {
            self.order.range::<[u8], _>((Bound::Included(&[][..]), Bound::Excluded(&[][..])))
        } else {
            self.order.range::<[u8], _>((start, end))
        };
        Range { keys, values: &self.values }
    }

    /// All entries in key order, for a flush.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], Option<&[u8]>)> {
        self.range(Bound::Unbounded, Bound::Unbounded).map(|(key, entry)| (key, entry.as_deref()))
    }

    /// The smallest and largest keys, if any.
    pub fn key_range(&self) -> Option<(&[u8], &[u8])> {
        let first = self.order.first_key_value()?.0;
        let last = self.order.last_key_value()?.0;
        Some((first, last))
    }
}

/// Entries of a key range, in key order.
#[derive(Debug)]
pub struct Range<'m> {
    keys: btree_map::Range<'m, Arc<[u8]>, u32>,
    values: &'m [Entry],
}

impl<'m> Iterator for Range<'m> {
    type Item = (&'m [u8], &'m Entry);

    fn next(&mut self) -> Option<(&'m [u8], &'m Entry)> {
        let (key, &slot) = self.keys.next()?;
        Some((key, self.values.get(slot as usize)?))
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
        let mut memtable = Memtable::new(KeyedHasher::default());
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
    fn tombstones_are_counted_as_entries_change() {
        let mut memtable = Memtable::new(KeyedHasher::default());
        memtable.insert(b"a", Some(b"1"));
        memtable.insert(b"b", None);
        assert_eq!((memtable.len(), memtable.tombstones()), (2, 1));
        memtable.insert(b"a", None);
        memtable.insert(b"b", None);
        assert_eq!((memtable.len(), memtable.tombstones()), (2, 2));
        memtable.insert(b"b", Some(b"2"));
        assert_eq!((memtable.len(), memtable.tombstones()), (2, 1));
    }

    #[test]
    fn keys_of_any_length_are_found_and_ordered() {
        let mut memtable = Memtable::new(KeyedHasher::default());
        let keys: Vec<Vec<u8>> = [0, 1, 16, 17, 64, 300].iter().map(|&n| vec![b'k'; n]).collect();
        for (at, key) in keys.iter().enumerate() {
            memtable.insert(key, Some(&[at as u8]));
        }
        for (at, key) in keys.iter().enumerate() {
            assert_eq!(memtable.get(key), Some(Some(&[at as u8][..])), "key of {} bytes", key.len());
        }
        assert_eq!(memtable.get(&[b'k'; 2]), None);
        let ordered: Vec<Vec<u8>> = memtable.iter().map(|(key, _)| key.to_vec()).collect();
        assert_eq!(ordered, keys);
        assert_eq!(memtable.key_range(), Some((&keys[0][..], &keys[5][..])));
    }

    /// Any sequence of puts and deletes leaves the memtable agreeing with a
    /// plain ordered map, for lookups and for ordered iteration.
    #[test]
    fn agrees_with_an_ordered_map() {
        fn check(ops: Vec<(u8, u8, bool)>) -> bool {
            let mut memtable = Memtable::new(KeyedHasher::default());
            let mut model: BTreeMap<Vec<u8>, Entry> = BTreeMap::new();
            // Few distinct keys, so writes often replace each other.
            let key_of = |k: u8| vec![b'a' + k % 4; usize::from(k % 8) * 5];
            for (k, v, live) in ops {
                let key = key_of(k);
                let value = live.then(|| vec![v; usize::from(v % 7)]);
                memtable.insert(&key, value.as_deref());
                model.insert(key, value);
            }
            let all: Vec<(Vec<u8>, Entry)> =
                memtable.iter().map(|(key, value)| (key.to_vec(), value.map(<[u8]>::to_vec))).collect();
            let expected: Vec<(Vec<u8>, Entry)> = model.clone().into_iter().collect();
            all == expected
                && memtable.tombstones() == model.values().filter(|entry| entry.is_none()).count()
                && (0..=255u8)
                    .all(|k| memtable.get(&key_of(k)) == model.get(&key_of(k)).map(Option::as_deref))
        }
        quickcheck::quickcheck(check as fn(Vec<(u8, u8, bool)>) -> bool);
    }

    #[test]
    fn range_respects_bounds_and_empty_ranges() {
        let mut memtable = Memtable::new(KeyedHasher::default());
        for key in [b"a", b"b", b"c", b"d"] {
            memtable.insert(key, Some(key));
        }
        let keys = |start, end| memtable.range(start, end).map(|(k, _)| k.to_vec()).collect::<Vec<_>>();
        let got = keys(Bound::Excluded(b"a"), Bound::Included(b"c"));
        assert_eq!(got, vec![b"b".to_vec(), b"c".to_vec()]);
        assert_eq!(keys(Bound::Unbounded, Bound::Unbounded).len(), 4);
        assert!(keys(Bound::Included(b"c"), Bound::Excluded(b"c")).is_empty());
        assert!(keys(Bound::Excluded(b"c"), Bound::Excluded(b"a")).is_empty());
    }
}
