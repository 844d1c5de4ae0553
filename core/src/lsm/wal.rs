//! Write-ahead log files: encoding, and a reader that reports bad records and can skip past them.
//!
//! A file starts with a header, `[magic "keel-wal"][format version: u32][crc32c
//! of the 12 bytes before: u32]`. The writer preallocates: it appends zeros in
//! large chunks and writes records over them, so that an fsync seldom has to
//! commit a new file size as well as the data. A record is
//! `[body length: u32][crc32c of the length: u32][crc32c: u32][body]` with the
//! body `[lsn: u64][kind: u8][key length: u32][key][value][end: u8 = 0xA5]`,
//! all little-endian. The last checksum covers the length bytes and the body.
//!
//! Where replay stops decides whether recovery reports damage, so the reader
//! tells three cases apart:
//! - the log ends where a record header is all zeros: nothing was written
//!   there, and as records are written in order and an fsync covers all that
//!   was written before it, no synced record lies beyond;
//! - a record that a crash cut short still has a zero end byte, and only
//!   zeros follow it: torn. The end byte takes four flipped bits to become
//!   zero, so a complete record that rotted is damage, never a torn tail;
//! - the length has its own checksum, so a length that rotted is damage too,
//!   not a record that seems to run on past what was written.
//!
//! After damage, [`Reader::skip_damage`] finds the next record that passes
//! both its checksums, so one bad record costs that record and not the log
//! after it; recovery decides what the gap means (`recovery.rs`).
//!
//! Files of format version 1 have no header, no end byte and no zeros after
//! the last record; there a record running past the end of the file is torn
//! and any other bad record is damage. The reader is a pure function of the
//! bytes, which is what the `wal_replay` fuzz target drives.

use thiserror::Error;

use super::Lsn;

/// Bytes of the header that starts every file this build writes.
pub const FILE_HEADER_BYTES: usize = 16;
/// Bytes before a record's body: length, its checksum, the record's checksum.
pub const HEADER_BYTES: usize = 12;
/// Body bytes before the key: lsn, kind, key length.
const BODY_FIXED_BYTES: usize = 13;
const MAGIC: [u8; 8] = *b"keel-wal";
/// The format version in the header of every file this build writes.
const VERSION: u32 = 2;
const KIND_PUT: u8 = 1;
const KIND_DELETE: u8 = 2;
/// The last byte of every record body in version 2; never zero.
const RECORD_END: u8 = 0xA5;

/// How a WAL file lays out its records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// No file header, no end byte, records appended without preallocation.
    V1,
    /// What this build writes.
    V2,
}

/// The header that starts every WAL file this build writes.
pub fn file_header() -> [u8; FILE_HEADER_BYTES] {
    let mut header = [0; FILE_HEADER_BYTES];
    header[..8].copy_from_slice(&MAGIC);
    header[8..12].copy_from_slice(&VERSION.to_le_bytes());
    let crc = crc32c::crc32c(&header[..12]);
    header[12..].copy_from_slice(&crc.to_le_bytes());
    header
}

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

/// The suffix of a WAL file kept as evidence of damage. Replay reads it as
/// long as its records are not all in tables; after that it is only kept.
pub const DAMAGED_SUFFIX: &str = ".damaged";

/// The sequence number of a WAL file, and whether it is one kept as
/// evidence of damage (`wal-<seq>.log.damaged`).
pub fn parse_any_file_name(name: &str) -> Option<(u64, bool)> {
    match name.strip_suffix(DAMAGED_SUFFIX) {
        Some(log) => parse_file_name(log).map(|seq| (seq, true)),
        None => parse_file_name(name).map(|seq| (seq, false)),
    }
}

/// One logged write; `value` is `None` for a delete.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record<'a> {
    pub lsn: Lsn,
    pub key: &'a [u8],
    pub value: Option<&'a [u8]>,
}

/// Appends one record to `out`, laid out as this build writes it.
pub fn encode(record: Record<'_>, out: &mut Vec<u8>) {
    encode_as(Format::V2, record, out);
}

/// Appends one record laid out as `format` says. Only tests and fuzzing
/// write version 1, to check that old files still read.
pub fn encode_as(format: Format, record: Record<'_>, out: &mut Vec<u8>) {
    let value = record.value.unwrap_or_default();
    let end_bytes = usize::from(format == Format::V2);
    let body_len = BODY_FIXED_BYTES + record.key.len() + value.len() + end_bytes;
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
    if format == Format::V2 {
        out.push(RECORD_END);
    }
    let crc = checksum(&body_len.to_le_bytes(), out.get(start + HEADER_BYTES..).unwrap_or_default());
    if let Some(slot) = out.get_mut(start + 8..start + HEADER_BYTES) {
        slot.copy_from_slice(&crc.to_le_bytes());
    }
}

fn checksum(len_bytes: &[u8], body: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(len_bytes), body)
}

fn all_zero(bytes: &[u8]) -> bool {
    bytes.iter().all(|&byte| byte == 0)
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
    #[error("the file is in WAL format version {found}, which this build does not read")]
    UnknownVersion { found: u32 },
}

/// Reads records from the front of a log; stops at the first error it
/// yields. After damage (not a torn tail), [`Reader::skip_damage`] moves it
/// on to the next whole record that passes its checksums, if there is one.
#[derive(Clone, Debug)]
pub struct Reader<'a> {
    bytes: &'a [u8],
    format: Format,
    offset: usize,
    record_bytes_max: u32,
    /// An error in the file header, yielded first.
    header_error: Option<WalError>,
    /// Where the reader stopped at damage, and where the damaged record
    /// ends when its length passed its own checksum.
    damage: Option<(usize, Option<usize>)>,
    done: bool,
}

/// A bad record: the error, and where the record ends when its length can
/// be trusted (it passed its own checksum).
type Bad = (WalError, Option<usize>);

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8], record_bytes_max: u32) -> Reader<'a> {
        let (format, offset, header_error) = match detect(bytes) {
            Ok((format, offset)) => (format, offset, None),
            Err(error) => (Format::V2, 0, Some(error)),
        };
        // The magic matched and the rest of the header rotted: the records
        // after it are still version 2's.
        let damage =
            matches!(header_error, Some(WalError::Checksum { .. })).then_some((0, Some(FILE_HEADER_BYTES)));
        Reader { bytes, format, offset, record_bytes_max, header_error, damage, done: false }
    }

    /// Moves a reader that stopped at damage on to the next record that is
    /// whole and passes both its checksums, and returns its offset; `None`
    /// when there is none (the reader stays stopped), or when the reader did
    /// not stop at damage.
    ///
    /// When the damaged record's length passed its own checksum the search
    /// starts where that record ends, so it never looks inside the damaged
    /// record's value, which a client chose; only a rotted length makes it
    /// search byte by byte. A record found this way has passed two
    /// independent crc32c checks, its end byte and a strict decode.
    pub fn skip_damage(&mut self) -> Option<u64> {
        let (at, end) = self.damage.take()?;
        self.header_error = None;
        let from = end.unwrap_or(at + 1);
        let last = self.bytes.iter().rposition(|&byte| byte != 0)?;
        let found = (from..=last).find(|&offset| self.record_at(offset).is_some())?;
        self.offset = found;
        self.done = false;
        Some(found as u64)
    }

    /// The record that starts at `offset`, if a whole, valid one does.
    fn record_at(&self, offset: usize) -> Option<(Record<'a>, usize)> {
        let rest = self.bytes.get(offset..)?;
        let (len_bytes, len_crc_bytes, crc_bytes) =
            (rest.get(..4)?, rest.get(4..8)?, rest.get(8..HEADER_BYTES)?);
        if crc32c::crc32c(len_bytes) != u32::from_le_bytes(to_array(len_crc_bytes)) {
            return None;
        }
        let body_len = u32::from_le_bytes(to_array(len_bytes));
        if body_len > self.record_bytes_max {
            return None;
        }
        let body = rest.get(HEADER_BYTES..HEADER_BYTES.checked_add(body_len as usize)?)?;
        if checksum(len_bytes, body) != u32::from_le_bytes(to_array(crc_bytes)) {
            return None;
        }
        let record = decode_body(self.format, body).ok()?;
        Some((record, HEADER_BYTES + body.len()))
    }

    /// The layout of the file being read.
    pub fn format(&self) -> Format {
        self.format
    }

    /// Bytes of the file header and of the complete, valid records read so far.
    pub fn valid_len(&self) -> u64 {
        self.offset as u64
    }

    /// The next record and the bytes it takes, `None` at a clean end of a
    /// preallocated log.
    fn read_one(&self) -> Result<Option<(Record<'a>, usize)>, Bad> {
        let offset = self.offset as u64;
        let torn = (WalError::Torn { offset }, None);
        let rest = self.bytes.get(self.offset..).unwrap_or_default();
        let v2 = self.format == Format::V2;
        let (Some(header), Some(len_bytes), Some(len_crc_bytes), Some(crc_bytes)) =
            (rest.get(..HEADER_BYTES), rest.get(..4), rest.get(4..8), rest.get(8..HEADER_BYTES))
        else {
            // In version 2 only a preallocation cut short ends a file here.
            return if v2 && all_zero(rest) { Ok(None) } else { Err(torn) };
        };
        if v2 && all_zero(header) {
            return Ok(None);
        }
        let body_len = u32::from_le_bytes(to_array(len_bytes));
        let after_header = rest.get(HEADER_BYTES..).unwrap_or_default();
        if crc32c::crc32c(len_bytes) != u32::from_le_bytes(to_array(len_crc_bytes)) {
            // A header cut short has nothing written after it.
            let torn_here = v2 && all_zero(after_header);
            return Err(if torn_here { torn } else { (WalError::Checksum { offset }, None) });
        }
        if body_len > self.record_bytes_max {
            // A checked length this large was never written by this build.
            return Err((WalError::Malformed { offset, reason: "record longer than the limit" }, None));
        }
        let Some(body) = after_header.get(..body_len as usize) else {
            return Err(torn);
        };
        let end = Some(self.offset + HEADER_BYTES + body.len());
        if checksum(len_bytes, body) != u32::from_le_bytes(to_array(crc_bytes)) {
            // A record cut short has a zero end byte and nothing written after it.
            let rest_zero = all_zero(after_header.get(body.len()..).unwrap_or_default());
            let torn_here = v2 && body.last() == Some(&0) && rest_zero;
            return Err(if torn_here { torn } else { (WalError::Checksum { offset }, end) });
        }
        let record =
            decode_body(self.format, body).map_err(|reason| (WalError::Malformed { offset, reason }, end))?;
        Ok(Some((record, HEADER_BYTES + body.len())))
    }
}

impl<'a> Iterator for Reader<'a> {
    type Item = Result<Record<'a>, WalError>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(error) = self.header_error.take() {
            self.done = true;
            return Some(Err(error));
        }
        if self.done || self.offset >= self.bytes.len() {
            return None;
        }
        match self.read_one() {
            Ok(Some((record, used))) => {
                self.offset += used;
                Some(Ok(record))
            }
            Ok(None) => {
                self.done = true;
                None
            }
            Err((error, end)) => {
                self.done = true;
                if !matches!(error, WalError::Torn { .. }) {
                    self.damage = Some((self.offset, end));
                }
                Some(Err(error))
            }
        }
    }
}

/// The layout of a file and where its first record starts. Every file this
/// build writes starts with the header; one without it is from version 1.
fn detect(bytes: &[u8]) -> Result<(Format, usize), WalError> {
    let header = file_header();
    if bytes.starts_with(&header) {
        return Ok((Format::V2, FILE_HEADER_BYTES));
    }
    let common = bytes.iter().zip(&header).take_while(|(byte, expected)| byte == expected).count();
    if all_zero(bytes.get(common..).unwrap_or_default()) {
        // Empty, or created just before a crash that cut its header short.
        return if common == 0 { Ok((Format::V2, 0)) } else { Err(WalError::Torn { offset: 0 }) };
    }
    // A version 1 file starts with a record's length and its checksum, never
    // within a few bits of the magic: a magic that rotted is still version 2,
    // and its records must not be read by version 1's rules.
    if !near_magic(bytes) {
        return Ok((Format::V1, 0));
    }
    let (Some(covered), Some(version), Some(crc)) = (bytes.get(..12), bytes.get(8..12), bytes.get(12..16))
    else {
        return Err(WalError::Checksum { offset: 0 });
    };
    if crc32c::crc32c(covered) != u32::from_le_bytes(to_array(crc)) {
        return Err(WalError::Checksum { offset: 0 });
    }
    Err(WalError::UnknownVersion { found: u32::from_le_bytes(to_array(version)) })
}

/// True when `bytes` start with the magic, up to three flipped bits.
fn near_magic(bytes: &[u8]) -> bool {
    let Some(head) = bytes.get(..MAGIC.len()) else { return false };
    head.iter().zip(MAGIC).map(|(byte, expected)| (byte ^ expected).count_ones()).sum::<u32>() <= 3
}

fn decode_body(format: Format, body: &[u8]) -> Result<Record<'_>, &'static str> {
    let body = match (format, body.split_last()) {
        (Format::V1, _) => body,
        (Format::V2, Some((&RECORD_END, body))) => body,
        (Format::V2, _) => return Err("record lacks its end byte"),
    };
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

    const RECORDS: [Record<'static>; 3] = [
        Record { lsn: Lsn(1), key: b"a", value: Some(b"one") },
        Record { lsn: Lsn(2), key: b"b", value: None },
        Record { lsn: Lsn(3), key: b"", value: Some(b"") },
    ];
    const PADDING: usize = 64;

    /// A log as this build writes it, without the zeros that follow it, and
    /// where each record ends.
    fn sample() -> (Vec<u8>, Vec<usize>) {
        let mut out = file_header().to_vec();
        let mut ends = Vec::new();
        for record in RECORDS {
            encode(record, &mut out);
            ends.push(out.len());
        }
        (out, ends)
    }

    fn sample_v1() -> (Vec<u8>, Vec<usize>) {
        let (mut out, mut ends) = (Vec::new(), Vec::new());
        for record in RECORDS {
            encode_as(Format::V1, record, &mut out);
            ends.push(out.len());
        }
        (out, ends)
    }

    fn padded(bytes: &[u8]) -> Vec<u8> {
        let mut out = bytes.to_vec();
        out.resize(bytes.len() + PADDING, 0);
        out
    }

    /// The records read, the error that stopped the reader, and the valid length.
    fn read(bytes: &[u8]) -> (Vec<Record<'_>>, Option<WalError>, u64) {
        let mut reader = Reader::new(bytes, 1 << 20);
        let mut records = Vec::new();
        let mut error = None;
        for result in reader.by_ref() {
            match result {
                Ok(record) => records.push(record),
                Err(found) => error = Some(found),
            }
        }
        (records, error, reader.valid_len())
    }

    #[test]
    fn round_trip_in_both_formats_with_and_without_zeros_after() {
        let (v2, ends) = sample();
        for bytes in [v2.clone(), padded(&v2)] {
            assert_eq!(Reader::new(&bytes, 1 << 20).format(), Format::V2);
            assert_eq!(read(&bytes), (RECORDS.to_vec(), None, ends[2] as u64));
        }
        let (v1, ends) = sample_v1();
        assert_eq!(Reader::new(&v1, 1 << 20).format(), Format::V1);
        assert_eq!(read(&v1), (RECORDS.to_vec(), None, ends[2] as u64));
        assert_eq!(read(&[]), (Vec::new(), None, 0));
        assert_eq!(read(&[0; 100]).1, None, "a preallocated file nothing was written to");
    }

    #[test]
    fn every_torn_write_reads_as_torn_and_keeps_exactly_the_whole_records() {
        let (v2, ends) = sample();
        let (v1, ends_v1) = sample_v1();
        // A write cut short over preallocated zeros, in version 2; a file cut
        // short, in both versions.
        let cases = (0..v2.len())
            .flat_map(|cut| [(padded(&v2[..cut]), cut, &ends, 16), (v2[..cut].to_vec(), cut, &ends, 16)])
            .chain((0..v1.len()).map(|cut| (v1[..cut].to_vec(), cut, &ends_v1, 0)));
        for (bytes, cut, ends, start) in cases {
            let (records, error, valid) = read(&bytes);
            let whole = ends.iter().filter(|&&end| end <= cut).count();
            assert_eq!(records, RECORDS[..whole].to_vec(), "cut at {cut}");
            assert!(matches!(error, None | Some(WalError::Torn { .. })), "cut at {cut}: {error:?}");
            let header_whole = if cut >= start { start } else { 0 };
            let valid_expected = if whole == 0 { header_whole } else { ends[whole - 1] };
            assert_eq!(valid, valid_expected as u64, "cut at {cut}");
        }
    }

    #[test]
    fn every_flipped_bit_is_caught_as_damage_not_as_a_torn_tail() {
        let (v2, _) = sample();
        let (v1, _) = sample_v1();
        for (clean, bytes_flipped) in [(padded(&v2), v2.len()), (v1.clone(), v1.len())] {
            for bit in 0..bytes_flipped * 8 {
                let mut bytes = clean.clone();
                bytes[bit / 8] ^= 1 << (bit % 8);
                let (records, error, _) = read(&bytes);
                let damage = matches!(&error, Some(error) if !matches!(error, WalError::Torn { .. }));
                assert!(damage, "bit {bit} went unnoticed or looked like a torn tail: {records:?} {error:?}");
            }
        }
    }

    #[test]
    fn a_flipped_bit_in_the_zeros_after_the_log_loses_no_record() {
        let (v2, _) = sample();
        let clean = padded(&v2);
        for bit in v2.len() * 8..clean.len() * 8 {
            let mut bytes = clean.clone();
            bytes[bit / 8] ^= 1 << (bit % 8);
            let (records, error, _) = read(&bytes);
            assert_eq!(records, RECORDS.to_vec(), "bit {bit}");
            assert!(matches!(error, None | Some(WalError::Torn { .. })), "bit {bit}: {error:?}");
        }
    }

    /// Every record, skipping damage, and how many times damage was skipped.
    fn read_past_damage(bytes: &[u8]) -> (Vec<Record<'_>>, usize) {
        let mut reader = Reader::new(bytes, 1 << 20);
        let (mut records, mut skips) = (Vec::new(), 0);
        loop {
            match reader.next() {
                Some(Ok(record)) => records.push(record),
                Some(Err(_)) => {
                    if reader.skip_damage().is_none() {
                        return (records, skips);
                    }
                    skips += 1;
                }
                None => return (records, skips),
            }
        }
    }

    #[test]
    fn one_flipped_bit_costs_at_most_the_record_it_hit() {
        let (v2, ends) = sample();
        let (v1, ends_v1) = sample_v1();
        for (clean, ends, start) in [(padded(&v2), &ends, FILE_HEADER_BYTES), (v1.clone(), &ends_v1, 0)] {
            for bit in 0..ends[2] * 8 {
                let mut bytes = clean.clone();
                bytes[bit / 8] ^= 1 << (bit % 8);
                let (records, _) = read_past_damage(&bytes);
                // The record the bit fell in, if it fell in one.
                let hit = ends.iter().position(|&end| bit / 8 < end).filter(|_| bit / 8 >= start);
                let expected: Vec<Record<'_>> =
                    RECORDS.iter().enumerate().filter(|(at, _)| Some(*at) != hit).map(|(_, r)| *r).collect();
                assert_eq!(records, expected, "bit {bit}");
            }
        }
    }

    #[test]
    fn skipping_damage_never_looks_inside_a_record_whose_length_is_intact() {
        // A value that holds a whole valid record of its own.
        let mut forged = Vec::new();
        encode(Record { lsn: Lsn(99), key: b"forged", value: Some(b"x") }, &mut forged);
        let mut bytes = file_header().to_vec();
        encode(Record { lsn: Lsn(1), key: b"a", value: Some(&forged) }, &mut bytes);
        encode(Record { lsn: Lsn(2), key: b"b", value: Some(b"two") }, &mut bytes);
        let padded = padded(&bytes);
        // Rot in the first record's key: its length is intact.
        let mut damaged = padded.clone();
        damaged[FILE_HEADER_BYTES + HEADER_BYTES + 13] ^= 1;
        let (records, skips) = read_past_damage(&damaged);
        assert_eq!(skips, 1);
        assert_eq!(records, vec![Record { lsn: Lsn(2), key: b"b", value: Some(b"two") }]);
    }

    #[test]
    fn a_reader_that_stopped_at_a_torn_tail_or_a_clean_end_does_not_skip() {
        let (v2, ends) = sample();
        let mut reader = Reader::new(&v2[..ends[1] + 3], 1 << 20);
        assert!(matches!(reader.by_ref().last(), Some(Err(WalError::Torn { .. }))));
        assert_eq!(reader.skip_damage(), None);
        let clean = padded(&v2);
        let mut reader = Reader::new(&clean, 1 << 20);
        assert_eq!(reader.by_ref().count(), 3);
        assert_eq!(reader.skip_damage(), None);
    }

    #[test]
    fn a_file_of_an_unknown_version_is_refused() {
        let mut header = file_header();
        header[8] = 3;
        let crc = crc32c::crc32c(&header[..12]);
        header[12..].copy_from_slice(&crc.to_le_bytes());
        let mut bytes = header.to_vec();
        encode(RECORDS[0], &mut bytes);
        assert_eq!(read(&bytes), (Vec::new(), Some(WalError::UnknownVersion { found: 3 }), 0));
    }

    #[test]
    fn file_names_round_trip_and_sort() {
        assert_eq!(parse_file_name(&file_name(42)), Some(42));
        assert!(file_name(9) < file_name(10));
        assert_eq!(parse_file_name("wal-1.log"), None);
        assert_eq!(parse_file_name("MANIFEST"), None);
        assert_eq!(parse_any_file_name(&file_name(7)), Some((7, false)));
        assert_eq!(parse_any_file_name(&(file_name(7) + DAMAGED_SUFFIX)), Some((7, true)));
        assert_eq!(parse_file_name(&(file_name(7) + DAMAGED_SUFFIX)), None);
    }
}
