//! Length- and checksum-framed postcard: the one envelope for every message
//! that crosses the network.
//!
//! Layout: `[payload length: u32 LE][crc32c of payload: u32 LE][payload]`.
//! The length is checked against a caller's maximum before anything is
//! allocated, and the checksum before anything is parsed, so decoding arbitrary
//! bytes never panics and never allocates more than the maximum.

use serde::Serialize;
use serde::de::DeserializeOwned;
use thiserror::Error;

/// Bytes before the payload: length then checksum.
pub const HEADER_LEN: usize = 8;

#[derive(Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum FrameError {
    #[error("frame payload of {len} bytes exceeds the maximum of {max}")]
    TooLarge { len: u64, max: u32 },
    #[error("frame checksum mismatch: header says {expected:#010x}, payload hashes to {actual:#010x}")]
    Checksum { expected: u32, actual: u32 },
    /// The frame is whole and its checksum holds, but its payload is no
    /// value of the type (or breaks one of the type's invariants). The
    /// frame's end is known, so a stream can go on after it.
    #[error("frame payload does not decode: {0}")]
    Malformed(String),
    /// A value refused before encoding: it breaks a bound its decoder
    /// enforces, so no peer would accept it.
    #[error("not encoded: {0}")]
    Invalid(String),
}

/// Appends one frame holding `value` to `out`.
pub fn encode<T: Serialize>(value: &T, max_payload: u32, out: &mut Vec<u8>) -> Result<(), FrameError> {
    let start = out.len();
    out.extend_from_slice(&[0; HEADER_LEN]);
    if let Err(error) = postcard::to_extend(value, Appender(out)) {
        out.truncate(start);
        return Err(FrameError::Malformed(error.to_string()));
    }
    let payload_len = out.len() - start - HEADER_LEN;
    let Ok(len) = u32::try_from(payload_len) else {
        out.truncate(start);
        return Err(FrameError::TooLarge { len: payload_len as u64, max: max_payload });
    };
    if len > max_payload {
        out.truncate(start);
        return Err(FrameError::TooLarge { len: u64::from(len), max: max_payload });
    }
    let crc = crc32c::crc32c(&out[start + HEADER_LEN..]);
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    out[start + 4..start + HEADER_LEN].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

/// Lets postcard append to a borrowed buffer, so an error leaves whatever
/// the caller had written before intact.
struct Appender<'a>(&'a mut Vec<u8>);

impl Extend<u8> for Appender<'_> {
    fn extend<I: IntoIterator<Item = u8>>(&mut self, bytes: I) {
        self.0.extend(bytes);
    }
}

/// Encodes `value` as a single frame in a fresh buffer.
pub fn to_vec<T: Serialize>(value: &T, max_payload: u32) -> Result<Vec<u8>, FrameError> {
    let mut out = Vec::new();
    encode(value, max_payload, &mut out)?;
    Ok(out)
}

/// Reads one frame from the front of `buf`.
///
/// Returns `Ok(None)` when `buf` holds only part of a frame (read more bytes
/// and call again), or the decoded value and the number of bytes it used.
pub fn decode<T: DeserializeOwned>(buf: &[u8], max_payload: u32) -> Result<Option<(T, usize)>, FrameError> {
    let Some((payload, end)) = take(buf, max_payload)? else {
        return Ok(None);
    };
    Ok(Some((decode_payload(payload)?, end)))
}

/// Finds the frame at the front of `buf` without decoding it: its payload,
/// whose checksum holds, and the number of bytes the frame spans; `Ok(None)`
/// while it is incomplete.
pub fn take(buf: &[u8], max_payload: u32) -> Result<Option<(&[u8], usize)>, FrameError> {
    let Some(header) = buf.get(..HEADER_LEN) else {
        return Ok(None);
    };
    let (len_bytes, crc_bytes) = header.split_at(4);
    let len = u32::from_le_bytes(len_bytes.try_into().expect("split_at(4) of 8 bytes"));
    let expected = u32::from_le_bytes(crc_bytes.try_into().expect("second half of 8 bytes"));
    if len > max_payload {
        return Err(FrameError::TooLarge { len: u64::from(len), max: max_payload });
    }
    let end = HEADER_LEN + len as usize;
    let Some(payload) = buf.get(HEADER_LEN..end) else {
        return Ok(None);
    };
    let actual = crc32c::crc32c(payload);
    if actual != expected {
        return Err(FrameError::Checksum { expected, actual });
    }
    Ok(Some((payload, end)))
}

/// Decodes the payload of a frame [`take`] found.
pub fn decode_payload<T: DeserializeOwned>(payload: &[u8]) -> Result<T, FrameError> {
    postcard::from_bytes(payload).map_err(|error| FrameError::Malformed(error.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use quickcheck::quickcheck;

    #[test]
    fn round_trip_and_partial_input() {
        let value = (7u64, String::from("keel"), vec![1u8, 2, 3]);
        let bytes = to_vec(&value, 1024).unwrap();
        for cut in 0..bytes.len() {
            assert_eq!(decode::<(u64, String, Vec<u8>)>(&bytes[..cut], 1024), Ok(None));
        }
        let (decoded, used) = decode::<(u64, String, Vec<u8>)>(&bytes, 1024).unwrap().unwrap();
        assert_eq!(decoded, value);
        assert_eq!(used, bytes.len());
    }

    #[test]
    fn rejects_oversize_before_reading_payload() {
        let bytes = to_vec(&vec![0u8; 100], 1024).unwrap();
        let error = decode::<Vec<u8>>(&bytes[..HEADER_LEN], 50).unwrap_err();
        assert!(matches!(error, FrameError::TooLarge { max: 50, .. }));
        assert!(matches!(to_vec(&vec![0u8; 100], 50), Err(FrameError::TooLarge { .. })));
    }

    #[test]
    fn a_failed_encode_keeps_what_was_in_the_buffer() {
        let mut out = b"earlier".to_vec();
        assert!(matches!(encode(&vec![0u8; 100], 50, &mut out), Err(FrameError::TooLarge { .. })));
        assert_eq!(out, b"earlier");
        encode(&7u64, 50, &mut out).unwrap();
        assert_eq!(decode::<u64>(&out[7..], 50), Ok(Some((7, out.len() - 7))));
    }

    #[test]
    fn detects_a_flipped_bit() {
        let mut bytes = to_vec(&12345u64, 1024).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x01;
        assert!(matches!(decode::<u64>(&bytes, 1024), Err(FrameError::Checksum { .. })));
    }

    quickcheck! {
        fn decoding_arbitrary_bytes_never_panics(bytes: Vec<u8>) -> bool {
            let _ = decode::<(u64, Vec<u8>, Option<String>)>(&bytes, 1 << 16);
            true
        }
    }
}
