//! Where the node's data sits in the engine's key space, and which version
//! of that layout a data directory holds.
//!
//! ```text
//! engine key                                        value
//! 00 "format"                                       layout version, u32 little-endian (2)
//! 00 "node"                                         node metadata: incarnation, epoch lease
//! 02 | ring position, u64 big-endian | client key   RECORD_FORMAT byte, postcard(Record)
//! 03 | owner id | ring position | client key         a hint for a replica that was down (`super::hints`)
//! ```
//!
//! Records sort by the ring position of their key, then by the key, so the
//! engine's order is the ring's order: a vnode's range of positions is one
//! contiguous run of engine keys (two when it wraps past the top of the
//! circle), which anti-entropy and range streaming read with one scan each.
//! A lookup by key computes the position (one SipHash of the key, which
//! placement computes anyway) and is a point lookup as before.
//!
//! Format 1 stored records under `01 | client key`, in key order, and had no
//! version key. Opening such a directory migrates it (`super::format`).

use std::ops::Bound;

use crate::ring::PlacedKey;

/// The namespace of node metadata.
pub(super) const META_PREFIX: u8 = 0x00;
/// The node's identity and epoch lease.
pub(super) const META_KEY: &[u8] = b"\x00node";
/// The layout version of the directory, written once a directory is in it.
pub(super) const FORMAT_KEY: &[u8] = b"\x00format";
/// The layout this build writes.
pub const STORAGE_FORMAT: u32 = 2;
/// Records of format 1: the prefix, then the client key.
pub(super) const FORMAT_1_RECORD_PREFIX: u8 = 0x01;
/// Records: the prefix, the key's ring position, then the client key.
pub(super) const RECORD_PREFIX: u8 = 0x02;
/// Hints kept for other replicas (`super::hints`).
pub(super) const HINT_PREFIX: u8 = 0x03;
/// The ring position's bytes in a record's engine key.
pub(super) const POSITION_BYTES: u32 = 8;
/// What a record's engine key holds before the client key.
pub const RECORD_KEY_HEADER_BYTES: u32 = 1 + POSITION_BYTES;

const _: () = assert!(
    META_KEY[0] == META_PREFIX
        && FORMAT_KEY[0] == META_PREFIX
        && META_PREFIX < FORMAT_1_RECORD_PREFIX
        && FORMAT_1_RECORD_PREFIX < RECORD_PREFIX
        && RECORD_PREFIX < HINT_PREFIX
);

/// Sets `buffer` to the engine key under which the node stores `key`'s
/// record: the record namespace's prefix, the key's ring position (8 bytes,
/// big-endian, so that byte order is numeric order), then the key.
pub fn encode_record_key(key: PlacedKey<'_>, buffer: &mut Vec<u8>) {
    buffer.clear();
    buffer.push(RECORD_PREFIX);
    buffer.extend_from_slice(&key.position().to_be_bytes());
    buffer.extend_from_slice(key.key());
    debug_assert_eq!(buffer.len(), key.key().len() + RECORD_KEY_HEADER_BYTES as usize);
}

/// The ring position and client key of a record's engine key; `None` for a
/// key outside the record namespace or too short to hold a position.
pub(super) fn decode_record_key(engine_key: &[u8]) -> Option<(u64, &[u8])> {
    let (&RECORD_PREFIX, rest) = engine_key.split_first()? else { return None };
    let (position, key) = rest.split_first_chunk::<{ POSITION_BYTES as usize }>()?;
    Some((u64::from_be_bytes(*position), key))
}

/// The engine keys of the records at positions `low..=high`.
pub(super) fn interval_bounds(low: u64, high: u64) -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
    let end = match high.checked_add(1) {
        Some(next) => position_start(next),
        // Past the top position: the end of the record namespace.
        None => vec![RECORD_PREFIX + 1],
    };
    (Bound::Included(position_start(low)), Bound::Excluded(end))
}

/// The smallest engine key of a record at `position`.
fn position_start(position: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(RECORD_KEY_HEADER_BYTES as usize);
    key.push(RECORD_PREFIX);
    key.extend_from_slice(&position.to_be_bytes());
    key
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ring;

    #[test]
    fn a_record_key_is_prefix_position_key() {
        let mut buffer = vec![9; 40];
        encode_record_key(PlacedKey::new(b"apple"), &mut buffer);
        let mut expected = vec![RECORD_PREFIX];
        expected.extend_from_slice(&ring::position(b"apple").to_be_bytes());
        expected.extend_from_slice(b"apple");
        assert_eq!(buffer, expected);
        assert_eq!(decode_record_key(&buffer), Some((ring::position(b"apple"), &b"apple"[..])));
        encode_record_key(PlacedKey::new(b""), &mut buffer);
        assert_eq!(decode_record_key(&buffer), Some((ring::position(b""), &b""[..])), "an empty key decodes");
    }

    #[test]
    fn keys_outside_the_record_namespace_do_not_decode() {
        assert_eq!(decode_record_key(META_KEY), None);
        assert_eq!(decode_record_key(b"\x01key-in-format-1"), None);
        assert_eq!(decode_record_key(&[RECORD_PREFIX, 1, 2, 3]), None, "too short for a position");
        assert_eq!(decode_record_key(&[]), None);
    }

    #[test]
    fn engine_order_is_ring_order() {
        let mut keys: Vec<Vec<u8>> = (0..500u32).map(|i| format!("key-{i}").into_bytes()).collect();
        let mut encoded: Vec<Vec<u8>> = keys
            .iter()
            .map(|key| {
                let mut buffer = Vec::new();
                encode_record_key(PlacedKey::new(key), &mut buffer);
                buffer
            })
            .collect();
        encoded.sort();
        keys.sort_by_key(|key| (ring::position(key), key.clone()));
        let decoded: Vec<&[u8]> = encoded.iter().map(|key| decode_record_key(key).unwrap().1).collect();
        assert_eq!(decoded, keys);
    }

    #[test]
    fn interval_bounds_are_exact() {
        let inside = |low, high, position: u64| {
            let mut key = Vec::new();
            key.push(RECORD_PREFIX);
            key.extend_from_slice(&position.to_be_bytes());
            key.extend_from_slice(b"\xff\xff");
            let (start, end) = interval_bounds(low, high);
            let after_start = match start {
                Bound::Included(start) => key >= start,
                _ => unreachable!("intervals start inclusive"),
            };
            let before_end = match end {
                Bound::Excluded(end) => key < end,
                _ => unreachable!("intervals end exclusive"),
            };
            after_start && before_end
        };
        assert!(inside(5, 9, 5) && inside(5, 9, 9));
        assert!(!inside(5, 9, 4) && !inside(5, 9, 10));
        assert!(inside(0, u64::MAX, 0) && inside(0, u64::MAX, u64::MAX));
        assert!(inside(u64::MAX, u64::MAX, u64::MAX) && !inside(u64::MAX, u64::MAX, u64::MAX - 1));
    }
}
