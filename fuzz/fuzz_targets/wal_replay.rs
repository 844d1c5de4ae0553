//! WAL replay on arbitrary bytes (after a first byte that is even): the reader must never panic, must stop at
//! the first bad record and never read past the input, and every record it
//! returns must encode back to exactly the bytes it was read from.
//!
//! Replay past damage, as recovery does it, must never panic either, and every
//! record it finds must encode back to exactly the bytes at its offset.
//!
//! Inputs whose first byte is odd are a recipe instead: a valid log is built
//! from the rest, in the current format or in version 1, then cut short where
//! the last byte says, as a torn write would; a current-format log may be
//! followed by the zeros the writer preallocates. Replay must then return
//! exactly the records that fit before the cut, and call the stop torn. With
//! bit 3 of the first byte set, one bit of a current-format log is flipped
//! instead of cutting it: replay past the damage must return every record
//! but at most the one the flip hit, in order.

#![no_main]

use keel_core::lsm::Lsn;
use keel_core::lsm::wal::{self, Format, Reader, Record, WalError};
use libfuzzer_sys::fuzz_target;

const RECORD_BYTES_MAX: u32 = 1 << 16;

fn replay(bytes: &[u8]) -> (Vec<Record<'_>>, Option<WalError>, usize) {
    let mut reader = Reader::new(bytes, RECORD_BYTES_MAX);
    let mut records = Vec::new();
    let mut error = None;
    for result in reader.by_ref() {
        assert!(error.is_none(), "the reader goes on after an error");
        match result {
            Ok(record) => records.push(record),
            Err(found) => error = Some(found),
        }
    }
    let valid = usize::try_from(reader.valid_len()).unwrap();
    assert!(valid <= bytes.len());
    let mut encoded = match reader.format() {
        Format::V2 if valid > 0 => wal::file_header().to_vec(),
        _ => Vec::new(),
    };
    for record in &records {
        wal::encode_as(reader.format(), *record, &mut encoded);
    }
    assert_eq!(encoded.as_slice(), &bytes[..valid], "records re-encode to their bytes");
    (records, error, valid)
}

/// Replays as recovery does: past damage, on to the next record that passes
/// its checksums. Checks each record against the bytes it was read from.
fn replay_past_damage(bytes: &[u8]) -> Vec<Record<'_>> {
    let mut reader = Reader::new(bytes, RECORD_BYTES_MAX);
    let mut records = Vec::new();
    loop {
        let at = usize::try_from(reader.valid_len()).unwrap();
        match reader.next() {
            Some(Ok(record)) => {
                let mut encoded = Vec::new();
                wal::encode_as(reader.format(), record, &mut encoded);
                assert_eq!(bytes.get(at..at + encoded.len()), Some(encoded.as_slice()), "record at {at}");
                records.push(record);
            }
            None | Some(Err(WalError::Torn { .. })) => return records,
            Some(Err(_)) => {
                if reader.skip_damage().is_none() {
                    return records;
                }
            }
        }
    }
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
        replay(rest);
        replay_past_damage(rest);
        return;
    }
    let Some((&cut, rest)) = rest.split_last() else { return };
    let records = recipe(rest);
    let format = if mode & 2 == 0 { Format::V2 } else { Format::V1 };
    let mut log = match format {
        Format::V2 => wal::file_header().to_vec(),
        Format::V1 => Vec::new(),
    };
    let start = log.len();
    let mut ends = Vec::new();
    for record in &records {
        wal::encode_as(format, *record, &mut log);
        ends.push(log.len());
    }
    if format == Format::V2 && mode & 8 != 0 {
        let bit = (log.len() * 8 - 1) * usize::from(cut) / 255;
        log[bit / 8] ^= 1 << (bit % 8);
        let replayed = replay_past_damage(&log);
        assert!(replayed.len() + 1 >= records.len(), "one flipped bit cost more than one record");
        let mut originals = records.iter();
        for record in &replayed {
            assert!(originals.any(|original| original == record), "{record:?} was never written, or is out of order");
        }
        return;
    }
    let cut_at = log.len() * usize::from(cut) / 255;
    log.truncate(cut_at);
    if format == Format::V2 && mode & 4 != 0 {
        log.resize(cut_at + usize::from(mode >> 4) * 8, 0);
    }
    let (replayed, error, valid) = replay(&log);
    let whole = ends.iter().filter(|&&end| end <= cut_at).count();
    assert_eq!(replayed.as_slice(), &records[..whole], "a torn log keeps exactly its whole records");
    assert!(matches!(error, None | Some(WalError::Torn { .. })), "a torn write read as damage: {error:?}");
    let header = if cut_at >= start { start } else { 0 };
    assert_eq!(valid, if whole == 0 { header } else { ends[whole - 1] });
});
