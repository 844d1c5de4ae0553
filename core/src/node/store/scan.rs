//! Reading a range of ring positions: what anti-entropy and range streaming
//! read. Records are stored in ring order (`super::layout`), so a range is
//! one engine scan, or two when it wraps past the top of the circle.
//!
//! A scan returns a bounded chunk and a cursor to resume from, so a caller
//! reads a large range in steps and other work runs between them.

use std::ops::Bound;

use super::layout::{decode_record_key, encode_record_key, interval_bounds};
use super::{Record, Store, StoreError, decode_record};
use crate::lsm::ReadError;
use crate::ring::{PlacedKey, PositionRange};

/// How much one chunk of a scan returns at most: it stops after the record
/// that reaches either bound, and always returns at least one record when
/// the range holds any.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScanLimit {
    pub records_max: usize,
    /// Engine keys and values together.
    pub bytes_max: u64,
}

/// One record a scan found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScannedRecord {
    pub position: u64,
    pub key: Vec<u8>,
    /// A record that does not decode is reported here, where it sits, and
    /// the scan goes on: one damaged copy is one key to repair.
    pub record: Result<Record, StoreError>,
}

/// Where a scan stopped: just after this record.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ScanCursor {
    pub position: u64,
    pub key: Vec<u8>,
}

/// What one call of [`Store::scan_range`] read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScanChunk {
    /// In ring order: clockwise from the range's start, by key at one position.
    pub records: Vec<ScannedRecord>,
    /// Where the next chunk starts, when the limit cut this one short;
    /// `None` once the range is read to its end.
    pub resume: Option<ScanCursor>,
}

impl Store {
    /// The records stored at the positions of `range`, in ring order,
    /// starting after `after` (a cursor inside `range`, from the chunk
    /// before) or at the range's start. Records removed from the engine are
    /// not returned; records of deleted keys (their tombstones) are, since
    /// replicas must agree on them too. Writes not yet durable are included.
    ///
    /// A table block that does not read is passed over (the engine counts
    /// the corruption), so that one bad block does not hide every record
    /// after it for as long as its table lives. A record found in the key
    /// range of such a block may not be the key's newest version: it is
    /// reported as unreadable, for the caller to read the key itself.
    pub fn scan_range(
        &mut self,
        range: PositionRange,
        after: Option<&ScanCursor>,
        limit: ScanLimit,
    ) -> Result<ScanChunk, StoreError> {
        debug_assert!(after.is_none_or(|cursor| range.contains(cursor.position)), "a cursor of this range");
        let mut chunk = ScanChunk::default();
        let mut bytes = 0u64;
        // Intervals wholly before the cursor's are done; the cursor's starts after it.
        let mut started = after.is_none();
        let mut resume_key = Vec::new();
        for (low, high) in range.intervals() {
            let (mut start, end) = interval_bounds(low, high);
            if !started {
                let Some(cursor) = after.filter(|cursor| (low..=high).contains(&cursor.position)) else {
                    continue;
                };
                encode_record_key(PlacedKey::known(&cursor.key, cursor.position), &mut resume_key);
                start = Bound::Excluded(std::mem::take(&mut resume_key));
                started = true;
            }
            let mut pairs = self
                .engine
                .iter(start.as_ref().map(Vec::as_slice), end.as_ref().map(Vec::as_slice))
                .skipping_unreadable();
            while let Some(pair) = pairs.next() {
                let (engine_key, value) = pair?;
                let shadowed = pairs.in_skipped_block(&engine_key);
                let Some((position, key)) = decode_record_key(&engine_key) else {
                    return Err(ReadError::Corrupt {
                        file: "record namespace".into(),
                        offset: 0,
                        reason: format!("engine key {engine_key:02x?} is not a record's"),
                    }
                    .into());
                };
                debug_assert!(range.contains(position));
                bytes = bytes.saturating_add((engine_key.len() + value.len()) as u64);
                let key = key.to_vec();
                let record = if shadowed {
                    Err(StoreError::Malformed(String::from(
                        "a newer version may be in a table block that does not read",
                    )))
                } else {
                    decode_record(&value)
                };
                chunk.records.push(ScannedRecord { position, key, record });
                if chunk.records.len() >= limit.records_max || bytes >= limit.bytes_max {
                    chunk.resume = chunk
                        .records
                        .last()
                        .map(|last| ScanCursor { position: last.position, key: last.key.clone() });
                    return Ok(chunk);
                }
            }
        }
        Ok(chunk)
    }
}

#[cfg(test)]
mod tests {
    use quickcheck::{QuickCheck, TestResult};
    use rand_chacha::ChaCha8Rng;
    use rand_chacha::rand_core::SeedableRng;

    use super::*;
    use crate::NodeId;
    use crate::disk::{Disk, MemDisk};
    use crate::lsm::EngineConfig;
    use crate::node::store::LocalEpoch;
    use crate::ring::position;
    use crate::version::{Actor, CausalContext, Object, Value};

    const ALL: ScanLimit = ScanLimit { records_max: usize::MAX, bytes_max: u64::MAX };

    fn open(memtable_bytes_max: u64) -> Store {
        let config = EngineConfig { memtable_bytes_max, block_bytes: 256, ..EngineConfig::default() };
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        Store::open(Box::new(MemDisk::new(1)), config, &mut rng).unwrap()
    }

    /// A record whose one sibling is `value`, or a deletion.
    fn record(value: Option<&[u8]>) -> Record {
        let mut object = Object::new();
        let actor = Actor { node: NodeId(1), incarnation: 1, epoch: 1 };
        let value = value.map_or(Value::Tombstone, |value| Value::Live(value.to_vec()));
        object.write(actor, &CausalContext::new(), value, 1);
        Record { object, local_epoch: Some(LocalEpoch { incarnation: 1, epoch: 1 }) }
    }

    fn found_keys(scan: &ScanChunk) -> Vec<Vec<u8>> {
        scan.records.iter().map(|found| found.key.clone()).collect()
    }

    /// Reads all of `range` in chunks of `records_max`.
    fn scan_chunked(store: &mut Store, range: PositionRange, records_max: usize) -> Vec<Vec<u8>> {
        let limit = ScanLimit { records_max, bytes_max: u64::MAX };
        let (mut found, mut after) = (Vec::new(), None);
        loop {
            let chunk = store.scan_range(range, after.as_ref(), limit).unwrap();
            assert!(chunk.records.len() <= records_max);
            found.extend(found_keys(&chunk));
            match chunk.resume {
                Some(cursor) => after = Some(cursor),
                None => return found,
            }
        }
    }

    /// What a scan of `range` over `keys` must return: the keys the range
    /// contains, clockwise from its start, by key at one position.
    fn model(keys: &[Vec<u8>], range: PositionRange) -> Vec<Vec<u8>> {
        let mut placed: Vec<(u64, Vec<u8>)> = keys
            .iter()
            .map(|key| (position(key), key.clone()))
            .filter(|(position, _)| range.contains(*position))
            .collect();
        placed
            .sort_by_key(|(position, key)| (position.wrapping_sub(range.start).wrapping_sub(1), key.clone()));
        placed.dedup();
        placed.into_iter().map(|(_, key)| key).collect()
    }

    #[test]
    fn keys_come_back_in_ring_order_whatever_the_write_order() {
        let mut store = open(4096);
        let keys: Vec<Vec<u8>> = (0..300u32).rev().map(|i| format!("key-{i}").into_bytes()).collect();
        for key in &keys {
            store.write(PlacedKey::new(key), &record(Some(key))).unwrap();
        }
        assert!(store.engine().stats().flushes > 0, "some records come from tables");
        let whole = PositionRange { start: 0, end: 0 };
        let scan = store.scan_range(whole, None, ALL).unwrap();
        assert_eq!(found_keys(&scan), model(&keys, whole));
        assert_eq!(scan.resume, None);
        for found in &scan.records {
            assert_eq!(found.position, position(&found.key));
            assert_eq!(found.record, Ok(record(Some(&found.key))), "each key's own record");
        }
    }

    #[test]
    fn the_start_is_excluded_and_the_end_included() {
        let mut store = open(1 << 20);
        let keys: Vec<Vec<u8>> = (0..50u32).map(|i| format!("k{i}").into_bytes()).collect();
        for key in &keys {
            store.write(PlacedKey::new(key), &record(Some(b"v"))).unwrap();
        }
        let mut positions: Vec<u64> = keys.iter().map(|key| position(key)).collect();
        positions.sort();
        let (first, last) = (positions[10], positions[20]);
        let range = PositionRange { start: first, end: last };
        let found = found_keys(&store.scan_range(range, None, ALL).unwrap());
        let found_positions: Vec<u64> = found.iter().map(|key| position(key)).collect();
        assert_eq!(found_positions, positions[11..=20], "a key at the start is out, one at the end in");
        let empty = PositionRange { start: first, end: first + 1 };
        assert!(store.scan_range(empty, None, ALL).unwrap().records.is_empty());
        let just_one = PositionRange { start: first - 1, end: first };
        assert_eq!(store.scan_range(just_one, None, ALL).unwrap().records.len(), 1);
    }

    #[test]
    fn a_wrapping_range_reads_the_top_then_the_bottom() {
        let mut store = open(1 << 20);
        let keys: Vec<Vec<u8>> = (0..200u32).map(|i| format!("k{i}").into_bytes()).collect();
        for key in &keys {
            store.write(PlacedKey::new(key), &record(Some(b"v"))).unwrap();
        }
        let range = PositionRange { start: u64::MAX / 4 * 3, end: u64::MAX / 4 };
        let found = found_keys(&store.scan_range(range, None, ALL).unwrap());
        assert_eq!(found, model(&keys, range));
        let top = found.iter().take_while(|key| position(key) > range.start).count();
        assert!(top > 0 && top < found.len(), "both sides of the top are read, the top first");
        assert_eq!(scan_chunked(&mut store, range, 7), found, "chunks resume across the wrap");
    }

    #[test]
    fn removed_records_are_skipped_and_deletions_returned() {
        let mut store = open(1 << 20);
        for key in [&b"live"[..], b"deleted", b"removed"] {
            store.write(PlacedKey::new(key), &record(Some(b"v"))).unwrap();
        }
        store.write(PlacedKey::new(b"deleted"), &record(None)).unwrap();
        store.remove(PlacedKey::new(b"removed")).unwrap();
        store.engine_mut().flush().unwrap();
        let scan = store.scan_range(PositionRange { start: 0, end: 0 }, None, ALL).unwrap();
        let mut found = found_keys(&scan);
        found.sort();
        assert_eq!(found, [&b"deleted"[..], b"live"]);
        let deletion = scan.records.iter().find(|found| found.key == b"deleted").unwrap();
        assert_eq!(deletion.record, Ok(record(None)), "a deletion is a version replicas must share");
    }

    #[test]
    fn a_table_block_that_does_not_read_hides_nothing_after_it() {
        let disk = MemDisk::new(1);
        let config =
            EngineConfig { memtable_bytes_max: 1 << 20, block_bytes: 256, ..EngineConfig::default() };
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut store = Store::open(Box::new(disk.clone()), config, &mut rng).unwrap();
        let keys: Vec<Vec<u8>> = (0..200u32).map(|i| format!("key-{i}").into_bytes()).collect();
        for key in &keys {
            store.write(PlacedKey::new(key), &record(Some(b"old"))).unwrap();
        }
        store.engine_mut().flush().unwrap();
        let whole = PositionRange { start: 0, end: 0 };
        let in_order = model(&keys, whole);
        // The two keys lowest on the ring get newer versions in a newer table.
        let rewritten = &in_order[..2];
        for key in rewritten {
            store.write(PlacedKey::new(key), &record(Some(b"new"))).unwrap();
        }
        store.engine_mut().flush().unwrap();
        // Rot in the first block of the older table, which holds the keys lowest on the ring.
        let tables: Vec<String> =
            disk.list().unwrap().into_iter().filter(|name| name.ends_with(".sst")).collect();
        let older = tables.iter().min().unwrap();
        let mut byte = disk.read_at(older, 20, 1).unwrap();
        byte[0] ^= 0x10;
        disk.write_at(older, 20, &byte).unwrap();

        let scan = store.scan_range(whole, None, ALL).unwrap();
        let found = found_keys(&scan);
        assert!(found.len() > 150, "the blocks after the bad one are read: {} keys", found.len());
        assert!(found.ends_with(&in_order[in_order.len() - 150..]), "in ring order");
        for key in rewritten {
            let at = scan.records.iter().find(|found| &found.key == key).expect("the newer table is read");
            assert!(at.record.is_err(), "a key in the bad block's range is not vouched for: {at:?}");
            let read = store.read(PlacedKey::new(key)).unwrap().unwrap();
            assert_eq!(read, record(Some(b"new")), "reading the key finds its newest version");
        }
        let missing = in_order.iter().filter(|key| !found.contains(key)).count();
        assert!(missing > 0, "what only the bad block held looks missing");
        for found in scan.records.iter().filter(|found| !rewritten.contains(&found.key)) {
            assert_eq!(found.record, Ok(record(Some(b"old"))), "{:?}", String::from_utf8_lossy(&found.key));
        }
    }

    #[test]
    fn a_record_that_does_not_decode_is_reported_in_place() {
        let mut store = open(1 << 20);
        store.write(PlacedKey::new(b"good"), &record(Some(b"v"))).unwrap();
        let mut engine_key = Vec::new();
        encode_record_key(PlacedKey::new(b"bad"), &mut engine_key);
        store.engine_mut().put(&engine_key, b"\x07not a record").unwrap();
        let scan = store.scan_range(PositionRange { start: 0, end: 0 }, None, ALL).unwrap();
        assert_eq!(scan.records.len(), 2);
        let bad = scan.records.iter().find(|found| found.key == b"bad").unwrap();
        assert!(matches!(bad.record, Err(StoreError::Malformed(_))), "{bad:?}");
    }

    #[test]
    fn chunks_stop_at_the_byte_bound_and_always_make_progress() {
        let mut store = open(1 << 20);
        for i in 0..20u32 {
            store.write(PlacedKey::new(format!("k{i}").as_bytes()), &record(Some(&[7; 100]))).unwrap();
        }
        let whole = PositionRange { start: 0, end: 0 };
        let one_byte = ScanLimit { records_max: usize::MAX, bytes_max: 1 };
        let chunk = store.scan_range(whole, None, one_byte).unwrap();
        assert_eq!(chunk.records.len(), 1, "a bound below one record still returns one");
        let some = ScanLimit { records_max: usize::MAX, bytes_max: 500 };
        let chunk = store.scan_range(whole, None, some).unwrap();
        assert!(chunk.records.len() > 1 && chunk.records.len() < 20, "{}", chunk.records.len());
        let cursor = chunk.resume.clone().unwrap();
        let last = chunk.records.last().unwrap();
        assert_eq!((cursor.position, &cursor.key), (last.position, &last.key));
    }

    /// Any keys, written in any order with some removed, any range, any
    /// chunk size: the chunks together are the model's sorted pairs.
    #[test]
    fn scans_match_a_model_of_sorted_positions() {
        fn property(keys: Vec<Vec<u8>>, removed: Vec<usize>, start: u64, end: u64, chunk: u8) -> TestResult {
            if keys.is_empty() {
                return TestResult::discard();
            }
            let mut store = open(2048);
            for key in &keys {
                store.write(PlacedKey::new(key), &record(Some(b"v"))).unwrap();
            }
            let removed: Vec<Vec<u8>> = removed.iter().map(|at| keys[at % keys.len()].clone()).collect();
            for key in &removed {
                store.remove(PlacedKey::new(key)).unwrap();
            }
            let kept: Vec<Vec<u8>> = keys.iter().filter(|key| !removed.contains(key)).cloned().collect();
            // Ranges drawn around stored positions too, so boundaries land on keys.
            let pick = |value: u64| match value % 3 {
                0 => position(&keys[value as usize % keys.len()]),
                _ => value,
            };
            let range = PositionRange { start: pick(start), end: pick(end) };
            let expected = model(&kept, range);
            let whole = keys_of(&mut store, range);
            let chunked = scan_chunked(&mut store, range, 1 + usize::from(chunk % 16));
            TestResult::from_bool(whole == expected && chunked == expected)
        }
        fn keys_of(store: &mut Store, range: PositionRange) -> Vec<Vec<u8>> {
            found_keys(&store.scan_range(range, None, ALL).unwrap())
        }
        QuickCheck::new()
            .tests(200)
            .quickcheck(property as fn(Vec<Vec<u8>>, Vec<usize>, u64, u64, u8) -> TestResult);
    }
}
