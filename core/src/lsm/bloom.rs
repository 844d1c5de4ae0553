//! Bloom filters: one per table, so point reads skip tables without the key.
//!
//! Encoded as `[hash count: u32][bit array]` and sealed with a crc32c. Probes
//! use double hashing over one 64-bit SipHash-1-3 with fixed keys, so a filter
//! written on one machine answers the same on every other.

use core::hash::Hasher;

use siphasher::sip::SipHasher13;

use super::block::{BlockError, seal, unseal};
use super::wal::to_array;

/// About 1% false positives.
pub const BITS_PER_KEY: u32 = 10;
const HASH_COUNT: u32 = 7;
/// Filters larger than this are refused at decode: no table holds that many keys.
const BITS_MAX: u64 = 1 << 36;

/// The hash a filter probes with; compute it once per lookup, use it for every table.
pub fn hash(key: &[u8]) -> u64 {
    let mut hasher = SipHasher13::new_with_keys(0x6b65_656c_2d62_6c6f, 0x6f6d_2d66_696c_7465);
    hasher.write(key);
    hasher.finish()
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bloom {
    hash_count: u32,
    bits: Vec<u8>,
}

impl Bloom {
    /// A filter holding the keys whose hashes are given.
    pub fn build(hashes: &[u64]) -> Bloom {
        let bit_count = (hashes.len() as u64 * u64::from(BITS_PER_KEY)).max(64);
        let mut bloom = Bloom { hash_count: HASH_COUNT, bits: vec![0; bit_count.div_ceil(8) as usize] };
        for &hash in hashes {
            for bit in bloom.probes(hash) {
                if let Some(byte) = bloom.bits.get_mut((bit / 8) as usize) {
                    *byte |= 1 << (bit % 8);
                }
            }
        }
        bloom
    }

    fn probes(&self, hash: u64) -> impl Iterator<Item = u64> + use<> {
        let bit_count = self.bits.len() as u64 * 8;
        let (low, high) = (hash & 0xffff_ffff, hash >> 32);
        (0..u64::from(self.hash_count))
            .map(move |i| low.wrapping_add(i.wrapping_mul(high)) % bit_count.max(1))
    }

    /// False only if the key is certainly absent.
    pub fn may_contain(&self, hash: u64) -> bool {
        self.probes(hash)
            .all(|bit| self.bits.get((bit / 8) as usize).is_some_and(|byte| byte & (1 << (bit % 8)) != 0))
    }

    /// Bytes of memory held.
    pub fn bytes(&self) -> u64 {
        self.bits.len() as u64
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&self.hash_count.to_le_bytes());
        out.extend_from_slice(&self.bits);
        seal(out, start);
    }

    pub fn decode(bytes: &[u8]) -> Result<Bloom, BlockError> {
        let payload = unseal(bytes)?;
        let (Some(count), Some(bits)) = (payload.get(..4), payload.get(4..)) else {
            return Err(BlockError::Malformed("bloom filter without a hash count"));
        };
        let hash_count = u32::from_le_bytes(to_array(count));
        if hash_count == 0 || hash_count > 32 || bits.is_empty() || bits.len() as u64 * 8 > BITS_MAX {
            return Err(BlockError::Malformed("bloom filter parameters out of range"));
        }
        Ok(Bloom { hash_count, bits: bits.to_vec() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_false_negatives_and_few_false_positives() {
        let hashes: Vec<u64> = (0..10_000u32).map(|i| hash(&i.to_le_bytes())).collect();
        let bloom = Bloom::build(&hashes);
        assert!(hashes.iter().all(|&h| bloom.may_contain(h)));
        let false_positives =
            (10_000..110_000u32).filter(|i| bloom.may_contain(hash(&i.to_le_bytes()))).count();
        assert!(false_positives < 2_000, "{false_positives} false positives in 100000");
    }

    #[test]
    fn encoding_round_trips_and_detects_damage() {
        let bloom = Bloom::build(&[hash(b"a"), hash(b"b")]);
        let mut bytes = Vec::new();
        bloom.encode(&mut bytes);
        assert_eq!(Bloom::decode(&bytes).unwrap(), bloom);
        bytes[5] ^= 0x10;
        assert_eq!(Bloom::decode(&bytes), Err(BlockError::Checksum));
        assert!(Bloom::decode(&[]).is_err());
    }
}
