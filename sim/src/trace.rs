//! The trace hash: a fingerprint of everything a run did, so two runs of one
//! seed can be compared with a single number.

use core::hash::Hasher;

use siphasher::sip::SipHasher13;

#[derive(Debug)]
pub struct Trace {
    hasher: SipHasher13,
    /// Off, nothing is recorded (see `SimConfig::trace`).
    on: bool,
}

impl Default for Trace {
    fn default() -> Trace {
        Trace::new(true)
    }
}

impl Trace {
    pub fn new(on: bool) -> Trace {
        Trace { hasher: SipHasher13::new_with_keys(0x6b65_656c_7472_6163, 0x0123_4567_89ab_cdef), on }
    }

    pub fn record(&mut self, fields: &[u64]) {
        if !self.on {
            return;
        }
        for field in fields {
            self.hasher.write_u64(*field);
        }
    }

    pub fn record_bytes(&mut self, bytes: &[u8]) {
        if !self.on {
            return;
        }
        self.hasher.write_u64(bytes.len() as u64);
        self.hasher.write(bytes);
    }

    pub fn finish(&self) -> u64 {
        self.hasher.finish()
    }
}
