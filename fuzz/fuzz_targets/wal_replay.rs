//! WAL replay on arbitrary bytes: the reader must never panic, must stop at
//! the first bad record and never read past the input, and every record it
//! returns must encode back to exactly the bytes it was read from.
//!
//! Inputs whose first byte is odd are a recipe instead: a valid log is built
//! from the rest, then cut short where the last byte says, as a torn write
//! would. Replay must then return exactly the records that fit before the cut.

#![no_main]

use keel_core::lsm::Lsn;
use keel_core::lsm::wal::{self, Reader, Record};
use libfuzzer_sys::fuzz_target;

const RECORD_BYTES_MAX: u32 = 1 << 16;

fn replay(bytes: &[u8]) -> (Vec<Record<'_>>, usize) {
    let mut reader = Reader::new(bytes, RECORD_BYTES_MAX);
    let mut records = Vec::new();
    let mut errors = 0;
    for result in reader.by_ref() {
        match result {
            Ok(record) => {
                assert_eq!(errors, 0, "a record after an error");
                records.push(record);
            }
            Err(_) => errors += 1,
        }
    }
    assert!(errors <= 1, "the reader goes on after an error");
    let valid = usize::try_from(reader.valid_len()).unwrap();
    assert!(valid <= bytes.len());
    let mut encoded = Vec::new();
    for record in &records {
        wal::encode(*record, &mut encoded);
    }
    assert_eq!(encoded.as_slice(), &bytes[..valid], "records re-encode to their bytes");
    (records, valid)
}

/// Records from a recipe: `[key length][value length or 255 for a delete]` then the bytes.
fn recipe(mut rest: &[u8]) -> Vec<Record<'_>> {
    let mut records = Vec::new();
    while let [key_len, value_len, tail @ ..] = rest {
        let key_len = usize::from(*key_len % 32).min(tail.len());
        let (key, tail) = tail.split_at(key_len);
        let (value, tail) = match *value_len {
            255 => (None, tail),
            len => {
                let (value, tail) = tail.split_at(usize::from(len).min(tail.len()));
                (Some(value), tail)
            }
        };
        records.push(Record { lsn: Lsn(records.len() as u64 + 1), key, value });
        rest = tail;
    }
    records
}

fuzz_target!(|bytes: &[u8]| {
    let Some((&mode, rest)) = bytes.split_first() else { return };
    if mode % 2 == 0 {
        replay(bytes);
        return;
    }
    let Some((&cut, rest)) = rest.split_last() else { return };
    let records = recipe(rest);
    let mut log = Vec::new();
    let mut ends = Vec::new();
    for record in &records {
        wal::encode(*record, &mut log);
        ends.push(log.len());
    }
    let cut_at = log.len() * usize::from(cut) / 255;
    let (replayed, valid) = replay(&log[..cut_at]);
    let whole = ends.iter().filter(|&&end| end <= cut_at).count();
    assert_eq!(replayed.as_slice(), &records[..whole], "a torn log keeps exactly its whole records");
    assert_eq!(valid, if whole == 0 { 0 } else { ends[whole - 1] });
});
