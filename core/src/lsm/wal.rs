//! Write-ahead log records: encoding, and a reader that stops at the first bad record.
//!
//! A record is `[body length: u32][crc32c of the length: u32][crc32c: u32][body]`
//! with the body `[lsn: u64][kind: u8][key length: u32][key][value]`, all
//! little-endian. The last checksum covers the length bytes and the body. The
//! length has its own checksum so that a record running past the end of the
//! file is known to be torn (a crash cut it short), not a length that rotted
//! into a larger one, which would hide the loss of every record after it.
//! The reader is a pure function of the bytes, which is what the `wal_replay`
//! fuzz target drives.

use thiserror::Error;

use super::Lsn;

/// Bytes before the body: length, its checksum, the record's checksum.
pub const HEADER_BYTES: usize = 12;
/// Body bytes before the key: lsn, kind, key length.
const BODY_FIXED_BYTES: usize = 13;
const KIND_PUT: u8 = 1;
const KIND_DELETE: u8 = 2;

/// The file name of the WAL with sequence number `seq`; names sort by sequence.
pub fn file_name(seq: u64) -> String {
    format!("wal-{seq:020}.log")
}

/// The sequence number in a WAL file name, if `name` is one.
pub fn parse_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("wal-")?.strip_suffix(".log")?;
    if digits.len() != 20 {
        return None;
    }
    digits.parse().ok()
}

/// One logged write; `value` is `None` for a delete.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record<'a> {
    pub lsn: Lsn,
    pub key: &'a [u8],
    pub value: Option<&'a [u8]>,
}

/// Appends one record to `out`.
pub fn encode(record: Record<'_>, out: &mut Vec<u8>) {
    let value = record.value.unwrap_or_default();
    let body_len = BODY_FIXED_BYTES + record.key.len() + value.len();
    let body_len = u32::try_from(body_len).expect("caller bounds key and value below 4 GiB");
    let start = out.len();
    out.extend_from_slice(&body_len.to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(&body_len.to_le_bytes()).to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&record.lsn.0.to_le_bytes());
    out.push(if record.value.is_some() { KIND_PUT } else { KIND_DELETE });
    let key_len = u32::try_from(record.key.len()).expect("caller bounds the key below 4 GiB");
    out.extend_from_slice(&key_len.to_le_bytes());
    out.extend_from_slice(record.key);
    out.extend_from_slice(value);
    let crc = checksum(&body_len.to_le_bytes(), out.get(start + HEADER_BYTES..).unwrap_or_default());
    if let Some(slot) = out.get_mut(start + 8..start + HEADER_BYTES) {
        slot.copy_from_slice(&crc.to_le_bytes());
    }
}

fn checksum(len_bytes: &[u8], body: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(len_bytes), body)
}

/// Why reading a log stopped before its end.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum WalError {
    #[error("record at offset {offset} is cut short (torn write)")]
    Torn { offset: u64 },
    #[error("record at offset {offset} fails its checksum")]
    Checksum { offset: u64 },
    #[error("record at offset {offset} is malformed: {reason}")]
    Malformed { offset: u64, reason: &'static str },
}

/// Reads records from the front of a log; yields at most one error, then stops.
#[derive(Clone, Debug)]
pub struct Reader<'a> {
    bytes: &'a [u8],
    offset: usize,
    record_bytes_max: u32,
    failed: bool,
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8], record_bytes_max: u32) -> Reader<'a> {
        Reader { bytes, offset: 0, record_bytes_max, failed: false }
    }

    /// Bytes of complete, valid records read so far.
    pub fn valid_len(&self) -> u64 {
        self.offset as u64
    }

    fn read_one(&self) -> Result<(Record<'a>, usize), WalError> {
        let offset = self.offset as u64;
        let rest = self.bytes.get(self.offset..).unwrap_or_default();
        let (Some(len_bytes), Some(len_crc_bytes), Some(crc_bytes)) =
            (rest.get(..4), rest.get(4..8), rest.get(8..HEADER_BYTES))
        else {
            return Err(WalError::Torn { offset });
        };
        let body_len = u32::from_le_bytes(to_array(len_bytes));
        if crc32c::crc32c(len_bytes) != u32::from_le_bytes(to_array(len_crc_bytes)) {
            return Err(WalError::Checksum { offset });
        }
        if body_len > self.record_bytes_max {
            // A checked length this large was never written by this build.
            return Err(WalError::Malformed { offset, reason: "record longer than the limit" });
        }
        let Some(body) = rest.get(HEADER_BYTES..HEADER_BYTES + body_len as usize) else {
            return Err(WalError::Torn { offset });
        };
        if checksum(len_bytes, body) != u32::from_le_bytes(to_array(crc_bytes)) {
            return Err(WalError::Checksum { offset });
        }
        let record = decode_body(body).map_err(|reason| WalError::Malformed { offset, reason })?;
        Ok((record, HEADER_BYTES + body.len()))
    }
}

impl<'a> Iterator for Reader<'a> {
    type Item = Result<Record<'a>, WalError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.offset >= self.bytes.len() {
            return None;
        }
        match self.read_one() {
            Ok((record, used)) => {
                self.offset += used;
                Some(Ok(record))
            }
            Err(error) => {
                self.failed = true;
                Some(Err(error))
            }
        }
    }
}

fn decode_body(body: &[u8]) -> Result<Record<'_>, &'static str> {
    let (Some(lsn), Some(&kind), Some(key_len)) = (body.get(..8), body.get(8), body.get(9..13)) else {
        return Err("body shorter than its fixed fields");
    };
    let key_len = u32::from_le_bytes(to_array(key_len)) as usize;
    let Some(key) = body.get(BODY_FIXED_BYTES..BODY_FIXED_BYTES.saturating_add(key_len)) else {
        return Err("key length exceeds the body");
    };
    let rest = body.get(BODY_FIXED_BYTES + key_len..).unwrap_or_default();
    let value = match kind {
        KIND_PUT => Some(rest),
        KIND_DELETE if rest.is_empty() => None,
        KIND_DELETE => return Err("delete record carries a value"),
        _ => return Err("unknown record kind"),
    };
    Ok(Record { lsn: Lsn(u64::from_le_bytes(to_array(lsn))), key, value })
}

/// Copies a slice whose length the caller has already fixed into an array.
pub(crate) fn to_array<const N: usize>(bytes: &[u8]) -> [u8; N] {
    <[u8; N]>::try_from(bytes).unwrap_or([0; N])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let mut out = Vec::new();
        encode(Record { lsn: Lsn(1), key: b"a", value: Some(b"one") }, &mut out);
        encode(Record { lsn: Lsn(2), key: b"b", value: None }, &mut out);
        encode(Record { lsn: Lsn(3), key: b"", value: Some(b"") }, &mut out);
        out
    }

    #[test]
    fn round_trip() {
        let bytes = sample();
        let records: Vec<_> = Reader::new(&bytes, 1 << 20).collect::<Result<_, _>>().unwrap();
        assert_eq!(records.len(), 3);
        assert_eq!(records[0], Record { lsn: Lsn(1), key: b"a", value: Some(b"one") });
        assert_eq!(records[1], Record { lsn: Lsn(2), key: b"b", value: None });
        assert_eq!(records[2], Record { lsn: Lsn(3), key: b"", value: Some(b"") });
    }

    #[test]
    fn every_truncation_stops_cleanly_at_a_record_boundary() {
        let bytes = sample();
        for cut in 0..bytes.len() {
            let mut reader = Reader::new(&bytes[..cut], 1 << 20);
            let mut good = 0;
            for result in reader.by_ref() {
                match result {
                    Ok(_) => good += 1,
                    Err(error) => assert!(matches!(error, WalError::Torn { .. }), "{error}"),
                }
            }
            assert!(good < 3);
            assert!(reader.valid_len() <= cut as u64);
        }
    }

    #[test]
    fn every_flipped_bit_is_caught_as_damage_not_as_a_torn_tail() {
        let clean = sample();
        for bit in 0..clean.len() * 8 {
            let mut bytes = clean.clone();
            bytes[bit / 8] ^= 1 << (bit % 8);
            let results: Vec<_> = Reader::new(&bytes, 1 << 20).collect();
            let damage = results
                .iter()
                .any(|result| matches!(result, Err(error) if !matches!(error, WalError::Torn { .. })));
            assert!(damage, "bit {bit} went unnoticed or looked like a torn tail: {results:?}");
        }
    }

    #[test]
    fn file_names_round_trip_and_sort() {
        assert_eq!(parse_file_name(&file_name(42)), Some(42));
        assert!(file_name(9) < file_name(10));
        assert_eq!(parse_file_name("wal-1.log"), None);
        assert_eq!(parse_file_name("MANIFEST"), None);
    }
}
