//! Checksummed blocks: the data blocks of a table, and the seal every block carries.
//!
//! A data block is its entries, then one `u32` offset per entry, then the entry
//! count as `u32`, then the crc32c of everything before it. An entry is
//! `[flags: u8][key length: u32][value length: u32][key][value]`; the flags
//! mark tombstones and zstd-compressed values. [`Block::decode`] checks the
//! checksum and every entry before it returns, so lookups on a decoded block
//! never fail; it is a pure function of the bytes, which the `sstable_block`
//! fuzz target drives.

use thiserror::Error;

use super::wal::to_array;

pub const FLAG_TOMBSTONE: u8 = 0b01;
pub const FLAG_COMPRESSED: u8 = 0b10;
const ENTRY_FIXED_BYTES: usize = 9;
/// Bytes of the checksum at the end of every block.
pub const SEAL_BYTES: usize = 4;

#[derive(Clone, Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum BlockError {
    #[error("checksum mismatch")]
    Checksum,
    #[error("malformed block: {0}")]
    Malformed(&'static str),
}

/// Appends the crc32c of `out[start..]` to `out`.
pub fn seal(out: &mut Vec<u8>, start: usize) {
    let crc = crc32c::crc32c(out.get(start..).unwrap_or_default());
    out.extend_from_slice(&crc.to_le_bytes());
}

/// The payload of a sealed block, if its checksum holds.
pub fn unseal(bytes: &[u8]) -> Result<&[u8], BlockError> {
    let split =
        bytes.len().checked_sub(SEAL_BYTES).ok_or(BlockError::Malformed("shorter than a checksum"))?;
    let (payload, crc) = bytes.split_at(split);
    if crc32c::crc32c(payload) != u32::from_le_bytes(to_array(crc)) {
        return Err(BlockError::Checksum);
    }
    Ok(payload)
}

/// Builds one data block; keys must arrive in strictly increasing order.
#[derive(Debug, Default)]
pub struct BlockBuilder {
    buffer: Vec<u8>,
    offsets: Vec<u32>,
    last_key: Vec<u8>,
}

impl BlockBuilder {
    pub fn is_empty(&self) -> bool {
        self.offsets.is_empty()
    }

    /// Bytes the block will take when finished.
    pub fn bytes(&self) -> usize {
        self.buffer.len() + 4 * self.offsets.len() + 4 + SEAL_BYTES
    }

    pub fn last_key(&self) -> &[u8] {
        &self.last_key
    }

    pub fn add(&mut self, key: &[u8], flags: u8, value: &[u8]) {
        assert!(self.is_empty() || key > self.last_key.as_slice(), "block keys must increase");
        let offset = u32::try_from(self.buffer.len()).expect("blocks stay far below 4 GiB");
        self.offsets.push(offset);
        self.buffer.push(flags);
        self.buffer.extend_from_slice(&u32::try_from(key.len()).expect("bounded key").to_le_bytes());
        self.buffer.extend_from_slice(&u32::try_from(value.len()).expect("bounded value").to_le_bytes());
        self.buffer.extend_from_slice(key);
        self.buffer.extend_from_slice(value);
        self.last_key.clear();
        self.last_key.extend_from_slice(key);
    }

    /// Appends the sealed block to `out` and resets the builder.
    pub fn finish_into(&mut self, out: &mut Vec<u8>) {
        let start = out.len();
        out.append(&mut self.buffer);
        let count = u32::try_from(self.offsets.len()).expect("blocks stay far below 4 GiB");
        for offset in self.offsets.drain(..) {
            out.extend_from_slice(&offset.to_le_bytes());
        }
        out.extend_from_slice(&count.to_le_bytes());
        seal(out, start);
    }
}

/// One entry of a decoded block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryRef<'a> {
    pub key: &'a [u8],
    pub flags: u8,
    pub value: &'a [u8],
}

impl EntryRef<'_> {
    pub fn is_tombstone(&self) -> bool {
        self.flags & FLAG_TOMBSTONE != 0
    }
}

/// A verified data block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Block {
    bytes: Vec<u8>,
    offsets_at: usize,
    count: usize,
}

impl Block {
    /// Verifies the checksum, the offsets and every entry, keys strictly increasing.
    pub fn decode(mut bytes: Vec<u8>) -> Result<Block, BlockError> {
        let payload_len = unseal(&bytes)?.len();
        bytes.truncate(payload_len);
        let count_at = payload_len.checked_sub(4).ok_or(BlockError::Malformed("no entry count"))?;
        let count = u32::from_le_bytes(to_array(bytes.get(count_at..).unwrap_or_default())) as usize;
        let offsets_bytes = count.checked_mul(4).ok_or(BlockError::Malformed("entry count overflows"))?;
        let offsets_at =
            count_at.checked_sub(offsets_bytes).ok_or(BlockError::Malformed("count too large"))?;
        let block = Block { bytes, offsets_at, count };
        let mut previous: Option<&[u8]> = None;
        let mut expected_offset = 0usize;
        for i in 0..count {
            let (entry, end) = block.parse(i).ok_or(BlockError::Malformed("entry out of bounds"))?;
            if block.offset(i) != Some(expected_offset) {
                return Err(BlockError::Malformed("entries are not contiguous"));
            }
            if previous.is_some_and(|previous| previous >= entry.key) {
                return Err(BlockError::Malformed("keys out of order"));
            }
            if entry.flags & !(FLAG_TOMBSTONE | FLAG_COMPRESSED) != 0 {
                return Err(BlockError::Malformed("unknown entry flags"));
            }
            previous = Some(entry.key);
            expected_offset = end;
        }
        if expected_offset != offsets_at {
            return Err(BlockError::Malformed("bytes between the entries and the offsets"));
        }
        Ok(block)
    }

    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Bytes of memory the block holds, for the cache's budget.
    pub fn charge(&self) -> u64 {
        self.bytes.capacity() as u64 + 64
    }

    fn offset(&self, i: usize) -> Option<usize> {
        let at = self.offsets_at.checked_add(i.checked_mul(4)?)?;
        Some(u32::from_le_bytes(to_array(self.bytes.get(at..at + 4)?)) as usize)
    }

    fn parse(&self, i: usize) -> Option<(EntryRef<'_>, usize)> {
        if i >= self.count {
            return None;
        }
        let at = self.offset(i)?;
        let fixed = self.bytes.get(at..at.checked_add(ENTRY_FIXED_BYTES)?)?;
        let (&flags, lengths) = fixed.split_first()?;
        let key_len = u32::from_le_bytes(to_array(lengths.get(..4)?)) as usize;
        let value_len = u32::from_le_bytes(to_array(lengths.get(4..)?)) as usize;
        let key_at = at + ENTRY_FIXED_BYTES;
        let value_at = key_at.checked_add(key_len)?;
        let end = value_at.checked_add(value_len)?;
        if end > self.offsets_at {
            return None;
        }
        let key = self.bytes.get(key_at..value_at)?;
        let value = self.bytes.get(value_at..end)?;
        Some((EntryRef { key, flags, value }, end))
    }

    /// The entry at position `i`; `None` only past the end.
    pub fn entry(&self, i: usize) -> Option<EntryRef<'_>> {
        self.parse(i).map(|(entry, _)| entry)
    }

    /// Position of the first entry whose key is at least `key` (`len()` if none).
    pub fn seek(&self, key: &[u8]) -> usize {
        let (mut low, mut high) = (0, self.count);
        while low < high {
            let mid = low + (high - low) / 2;
            match self.entry(mid) {
                Some(entry) if entry.key < key => low = mid + 1,
                _ => high = mid,
            }
        }
        low
    }

    /// The entry for exactly `key`, if the block holds one.
    pub fn find(&self, key: &[u8]) -> Option<EntryRef<'_>> {
        self.entry(self.seek(key)).filter(|entry| entry.key == key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let mut builder = BlockBuilder::default();
        builder.add(b"apple", 0, b"red");
        builder.add(b"banana", FLAG_TOMBSTONE, b"");
        builder.add(b"cherry", 0, b"dark red");
        let expected = builder.bytes();
        let mut out = vec![0xAA];
        builder.finish_into(&mut out);
        assert_eq!(out.len() - 1, expected);
        assert!(builder.is_empty());
        out.split_off(1)
    }

    #[test]
    fn round_trip_and_lookups() {
        let block = Block::decode(sample()).unwrap();
        assert_eq!(block.len(), 3);
        assert_eq!(block.find(b"apple").unwrap().value, b"red");
        assert!(block.find(b"banana").unwrap().is_tombstone());
        assert_eq!(block.find(b"blueberry"), None);
        assert_eq!(block.seek(b"b"), 1);
        assert_eq!(block.seek(b"zzz"), 3);
        assert_eq!(block.seek(b""), 0);
        assert_eq!(block.entry(2).unwrap().key, b"cherry");
        assert_eq!(block.entry(3), None);
    }

    #[test]
    fn every_flipped_bit_and_truncation_is_rejected() {
        let clean = sample();
        for bit in 0..clean.len() * 8 {
            let mut bytes = clean.clone();
            bytes[bit / 8] ^= 1 << (bit % 8);
            assert!(Block::decode(bytes).is_err(), "bit {bit}");
        }
        for cut in 0..clean.len() {
            assert!(Block::decode(clean[..cut].to_vec()).is_err(), "cut {cut}");
        }
    }

    #[test]
    fn sealed_garbage_is_rejected_without_panic() {
        for payload in [&b""[..], &[1, 0, 0, 0], &[0xff; 12], &[0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0]] {
            let mut bytes = payload.to_vec();
            seal(&mut bytes, 0);
            let _ = Block::decode(bytes);
        }
        let mut empty = 0u32.to_le_bytes().to_vec();
        seal(&mut empty, 0);
        assert!(Block::decode(empty).unwrap().is_empty());
    }
}
