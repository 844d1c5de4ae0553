//! Gossip's messages between nodes.
//!
//! Every message is postcard inside a [`crate::frame`], like the node's own
//! messages, and decoding never panics: lists longer than their bound,
//! addresses out of shape and claims that break the rules of
//! [`Update`] are refused as malformed. Bounds are part of the types, so a
//! message that was built is one its peers accept.

use core::fmt;
use core::marker::PhantomData;

use serde::de::{self, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use super::member::{ADDRESS_BYTES_MAX, Address, Update};
use crate::NodeId;
use crate::frame::{self, FrameError};

/// Most updates one message carries on the back of a probe.
pub const UPDATES_PER_MESSAGE_MAX: usize = 32;
/// Most members one push-pull message carries; a larger state goes in
/// several.
pub const SYNC_MEMBERS_MAX: usize = 256;
/// The largest gossip message payload accepted: a full push-pull chunk of
/// the longest claims, with room to spare.
pub const MESSAGE_BYTES_MAX: u32 = 128 * 1024;

/// The longest one claim can be encoded: the address, its length prefix,
/// and five integers of at most ten bytes each in postcard's varint.
pub const UPDATE_BYTES_MAX: usize = ADDRESS_BYTES_MAX + 2 + 5 * 10;

#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum Message {
    /// A direct probe: "answer `seq` if you are `target`". A node that is
    /// not `target` (an address reused by another node) stays silent.
    Ping { seq: u32, target: NodeId, reply_to: Address, updates: Updates },
    /// "Probe `target` for me and relay its answer to `seq`, or a nack."
    PingReq { seq: u32, target: NodeId, target_address: Address, reply_to: Address, updates: Updates },
    /// The answer to a ping, direct or relayed by a helper.
    Ack { seq: u32, updates: Updates },
    /// From a helper: "I could not reach the target either". It tells the
    /// prober that its own link to the helper works (Lifeguard).
    Nack { seq: u32 },
    /// Push-pull: some of the sender's members. With `reply_wanted` the
    /// receiver answers with all of its own.
    Sync { reply_to: Address, reply_wanted: bool, members: SyncMembers },
}

/// Updates riding on a probe, at most [`UPDATES_PER_MESSAGE_MAX`].
pub type Updates = Bounded<Update, UPDATES_PER_MESSAGE_MAX>;
/// One push-pull chunk, at most [`SYNC_MEMBERS_MAX`] members.
pub type SyncMembers = Bounded<Update, SYNC_MEMBERS_MAX>;

/// A list that never holds more than `MAX` items, in memory or on the wire.
#[derive(Clone, PartialEq, Eq, Serialize)]
pub struct Bounded<T, const MAX: usize>(Vec<T>);

impl<T, const MAX: usize> Bounded<T, MAX> {
    /// Refuses more than `MAX` items, handing them back.
    pub fn new(items: Vec<T>) -> Result<Bounded<T, MAX>, Vec<T>> {
        if items.len() > MAX { Err(items) } else { Ok(Bounded(items)) }
    }

    pub fn empty() -> Bounded<T, MAX> {
        Bounded(Vec::new())
    }

    pub fn as_slice(&self) -> &[T] {
        &self.0
    }

    pub fn into_vec(self) -> Vec<T> {
        self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<T: fmt::Debug, const MAX: usize> fmt::Debug for Bounded<T, MAX> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Stops at the first item past `MAX`, so a forged length costs nothing.
impl<'de, T: Deserialize<'de>, const MAX: usize> Deserialize<'de> for Bounded<T, MAX> {
    fn deserialize<D: Deserializer<'de>>(decoder: D) -> Result<Bounded<T, MAX>, D::Error> {
        struct BoundedVisitor<T, const MAX: usize>(PhantomData<T>);

        impl<'de, T: Deserialize<'de>, const MAX: usize> Visitor<'de> for BoundedVisitor<T, MAX> {
            type Value = Bounded<T, MAX>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "a list of at most {MAX} items")
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Bounded<T, MAX>, A::Error> {
                let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(MAX));
                while let Some(item) = seq.next_element()? {
                    if items.len() == MAX {
                        return Err(de::Error::custom(format_args!("more than {MAX} items")));
                    }
                    items.push(item);
                }
                Ok(Bounded(items))
            }
        }

        decoder.deserialize_seq(BoundedVisitor(PhantomData))
    }
}

impl Message {
    /// A short name for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Message::Ping { .. } => "ping",
            Message::PingReq { .. } => "ping_req",
            Message::Ack { .. } => "ack",
            Message::Nack { .. } => "nack",
            Message::Sync { .. } => "sync",
        }
    }

    /// Appends this message as one frame.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), FrameError> {
        frame::encode(self, MESSAGE_BYTES_MAX, out)
    }

    /// Reads one message from the front of `buf`: `Ok(None)` if the frame is
    /// not complete yet, else the message and the bytes it used.
    pub fn decode(buf: &[u8]) -> Result<Option<(Message, usize)>, FrameError> {
        frame::decode(buf, MESSAGE_BYTES_MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gossip::member::State;
    use rand_chacha::ChaCha8Rng;
    use rand_chacha::rand_core::{Rng, SeedableRng};

    fn longest_update(id: u64) -> Update {
        let address = Address::new("x".repeat(ADDRESS_BYTES_MAX)).unwrap();
        let by = if id == u64::MAX { u64::MAX - 1 } else { u64::MAX };
        Update::new(NodeId(id), address, u64::MAX, State::Suspect, NodeId(by), u64::MAX).unwrap()
    }

    fn samples() -> Vec<Message> {
        let reply_to = Address::new("10.0.0.1:7000").unwrap();
        let updates = Updates::new(vec![longest_update(1)]).unwrap();
        vec![
            Message::Ping { seq: 7, target: NodeId(2), reply_to: reply_to.clone(), updates: updates.clone() },
            Message::PingReq {
                seq: 8,
                target: NodeId(3),
                target_address: reply_to.clone(),
                reply_to: reply_to.clone(),
                updates: updates.clone(),
            },
            Message::Ack { seq: 9, updates },
            Message::Nack { seq: 10 },
            Message::Sync { reply_to, reply_wanted: true, members: SyncMembers::empty() },
        ]
    }

    #[test]
    fn messages_round_trip() {
        for message in samples() {
            let mut bytes = Vec::new();
            message.encode(&mut bytes).unwrap();
            let (decoded, used) = Message::decode(&bytes).unwrap().unwrap();
            assert_eq!((decoded, used), (message, bytes.len()));
        }
    }

    /// The bounds of the types keep every message under the frame limit.
    #[test]
    fn the_largest_messages_fit_a_frame() {
        let one = postcard::to_allocvec(&longest_update(u64::MAX)).unwrap().len();
        assert!(one <= UPDATE_BYTES_MAX, "{one} bytes");
        let members = (0..SYNC_MEMBERS_MAX as u64).map(|id| longest_update(u64::MAX - id)).collect();
        let reply_to = Address::new("x".repeat(ADDRESS_BYTES_MAX)).unwrap();
        let message =
            Message::Sync { reply_to, reply_wanted: true, members: SyncMembers::new(members).unwrap() };
        let mut bytes = Vec::new();
        message.encode(&mut bytes).unwrap();
        assert!(SYNC_MEMBERS_MAX * UPDATE_BYTES_MAX + 400 <= MESSAGE_BYTES_MAX as usize);
    }

    #[test]
    fn lists_past_their_bound_are_refused() {
        let updates: Vec<Update> = (0..=UPDATES_PER_MESSAGE_MAX as u64).map(longest_update).collect();
        assert!(Updates::new(updates.clone()).is_err());
        // A ping as postcard lays it out: variant, seq, target, reply_to, updates.
        let forge =
            |updates: &[Update]| postcard::to_allocvec(&(0u8, 1u32, NodeId(2), "a:1", updates)).unwrap();
        let at_bound = postcard::from_bytes::<Message>(&forge(&updates[1..])).unwrap();
        assert!(
            matches!(at_bound, Message::Ping { updates, .. } if updates.len() == UPDATES_PER_MESSAGE_MAX)
        );
        assert!(postcard::from_bytes::<Message>(&forge(&updates)).is_err());
    }

    /// Random bytes and every corruption of a valid message decode to an
    /// error or a message, never a panic.
    #[test]
    fn decoding_arbitrary_bytes_never_panics() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let valid: Vec<Vec<u8>> =
            samples().iter().map(|message| postcard::to_allocvec(message).unwrap()).collect();
        for round in 0..20_000 {
            let mut bytes = valid[round % valid.len()].clone();
            for _ in 0..1 + rng.next_u32() % 4 {
                let at = rng.next_u32() as usize % bytes.len();
                bytes[at] = rng.next_u32() as u8;
            }
            if round % 3 == 0 {
                bytes.truncate(rng.next_u32() as usize % (bytes.len() + 1));
            }
            let _ = postcard::from_bytes::<Message>(&bytes);
        }
        for _ in 0..5_000 {
            let mut bytes = vec![0; (rng.next_u32() % 64) as usize];
            rng.fill_bytes(&mut bytes);
            let _ = postcard::from_bytes::<Message>(&bytes);
            let _ = Message::decode(&bytes);
        }
    }
}
