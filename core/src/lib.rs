//! keel-core: the sans-IO heart of keel, a Dynamo-style key-value store.
//!
//! Everything a storage node decides lives here as plain state machines: the
//! consistent-hash [`ring`], dotted version vectors ([`version`]), the quorum
//! tally ([`quorum`]), coordinated requests, the [`lsm`] storage engine, and
//! the parts of a self-healing cluster being built next to them: gossip
//! membership with SWIM/Lifeguard failure detection ([`gossip`]) and
//! anti-entropy trees and exchanges ([`merkle`]), not yet driven by the node. The
//! crate never touches a socket, a thread or a clock. Its one window on the
//! outside world is the [`disk::Disk`] trait, whose implementations live in the
//! drivers: real files in `keel-io-tokio`, a fault-injecting memory disk in
//! `keel-sim` and in tests.
//!
//! # Driving a node
//!
//! A driver owns one [`node::Node`] and calls it in this order:
//!
//! 1. `Node::open` once, which recovers state from the disk.
//! 2. For every event, one of `handle_input` (a message from a peer, a client
//!    request, a completed sync) or `handle_timeout` (the instant returned by
//!    `poll_timeout` has passed; spurious calls are harmless).
//! 3. After every `handle_*` call, `poll_output` until it returns `None`, carrying
//!    out each output: send a message, answer a client, sync a file and report
//!    back with `Input::Synced`.
//! 4. Then `poll_timeout`, and wake the node no later than the instant it gives.
//!
//! Time enters only through [`time::Now`]; randomness only from a ChaCha
//! generator seeded by the `seed` given to `open`. The same inputs in the same
//! order therefore produce the same outputs, bit for bit, which is what lets
//! the simulator replay any run from its seed.
//!
//! # What this crate must never do
//!
//! Read a clock, spawn a thread, open a file or socket, use an unseeded random
//! generator, iterate a randomly ordered map, or panic on bytes that came from
//! the network or the disk.

#![forbid(unsafe_code)]

pub mod client;
pub mod disk;
pub mod frame;
pub mod gossip;
pub mod id;
pub mod lsm;
pub mod merkle;
pub mod message;
pub mod node;
pub mod quorum;
pub mod request;
pub mod ring;
pub mod time;
pub mod version;

pub use id::NodeId;
pub use time::{Instant, Now};

/// The hasher of hash maps over keys the node makes itself (request tags):
/// fixed keys, so a map's layout is the same on every run. They are looked
/// up, never iterated in an order that reaches an output.
pub(crate) type FixedHasher = std::hash::BuildHasherDefault<siphasher::sip::SipHasher13>;

/// The hasher of hash maps over keys that clients choose: SipHash-1-3 under
/// a secret key. With a key anyone can know, a client could compute keys
/// that all land in one probe sequence and make every lookup crawl. A node
/// draws its key from its seeded generator, so the simulator replays it.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub struct KeyedHasher {
    k0: u64,
    k1: u64,
}

impl KeyedHasher {
    pub fn new(k0: u64, k1: u64) -> KeyedHasher {
        KeyedHasher { k0, k1 }
    }
}

impl std::hash::BuildHasher for KeyedHasher {
    type Hasher = siphasher::sip::SipHasher13;

    fn build_hasher(&self) -> siphasher::sip::SipHasher13 {
        siphasher::sip::SipHasher13::new_with_keys(self.k0, self.k1)
    }
}

/// The key stays out of logs and debug output.
impl std::fmt::Debug for KeyedHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyedHasher(..)")
    }
}
