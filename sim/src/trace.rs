//! The trace hash: a fingerprint of everything a run did, so two runs of one
//! seed can be compared with a single number.

use core::hash::Hasher;

use siphasher::sip::SipHasher13;

#[derive(Debug)]
pub struct Trace {
    hasher: SipHasher13,
}

impl Default for Trace {
    fn default() -> Trace {
        Trace { hasher: SipHasher13::new_with_keys(0x6b65_656c_7472_6163, 0x0123_4567_89ab_cdef) }
    }
}

impl Trace {
    pub fn record(&mut self, fields: &[u64]) {
        for field in fields {
            self.hasher.write_u64(*field);
        }
    }

    pub fn record_bytes(&mut self, bytes: &[u8]) {
        self.hasher.write_u64(bytes.len() as u64);
        self.hasher.write(bytes);
    }

    pub fn finish(&self) -> u64 {
        self.hasher.finish()
    }
}
