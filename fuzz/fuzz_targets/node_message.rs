//! Node-to-node message decoding on arbitrary bytes (after a first byte that
//! is a multiple of 4): frames are read one after another, as a connection
//! reads them, and decoding must never panic. A frame that decodes used no
//! more bytes than it was given, every shorter prefix of it is reported as
//! incomplete, and its message re-encodes to a frame no longer than the one
//! read that decodes to the same message. With a first byte of 2 modulo 4 the
//! rest is a payload, framed with its true length and checksum so that the
//! message decoder itself is reached: it must decode or be refused as
//! malformed, never anything else.
//!
//! Inputs whose first byte is odd are a recipe instead: valid messages of
//! every kind are built from the rest and encoded back to back. They must
//! decode in order, each from exactly its own frame. Cut short where the last
//! two bytes say, the stream must give exactly the messages that fit before
//! the cut and then report the rest as incomplete. With bit 1 of the first
//! byte set, one bit of a frame's checksum or payload is flipped instead: the
//! frames before it must still decode and that frame must fail its checksum.

#![no_main]

use keel_core::NodeId;
use keel_core::client::{ClientError, Consistency, Context, Reply, Request};
use keel_core::frame::{FrameError, HEADER_LEN};
use keel_core::message::{Message, ReplicaError, Tag};
use keel_core::version::{Actor, CausalContext, Object, Value};
use libfuzzer_sys::fuzz_target;

/// Every message at the front of `bytes`, read as a connection reads them, with
/// the end of each frame, and what stopped the reading: `Ok(())` for an
/// incomplete frame (or none at all), else the error.
fn decode_all(bytes: &[u8]) -> (Vec<Message>, Vec<usize>, Result<(), FrameError>) {
    let mut messages = Vec::new();
    let mut ends = Vec::new();
    let mut at = 0;
    loop {
        let rest = &bytes[at..];
        match Message::decode(rest) {
            Ok(Some((message, used))) => {
                assert!(used >= HEADER_LEN && used <= rest.len(), "used {used} of {}", rest.len());
                check_message(&message, &rest[..used]);
                at += used;
                messages.push(message);
                ends.push(at);
            }
            Ok(None) => return (messages, ends, Ok(())),
            Err(error) => return (messages, ends, Err(error)),
        }
    }
}

/// Checks a message decoded from `frame`, which is exactly the bytes it used.
fn check_message(message: &Message, frame: &[u8]) {
    for cut in 0..frame.len() {
        assert_eq!(Message::decode(&frame[..cut]), Ok(None), "a prefix of {cut} bytes is not incomplete");
    }
    let _ = message.kind();
    let mut encoded = Vec::new();
    message.encode(&mut encoded).expect("a decoded message encodes");
    // Postcard ignores bytes after the payload's value and accepts overlong
    // integers, so the frame read may be longer; never shorter.
    assert!(encoded.len() <= frame.len(), "re-encoding grew {} bytes to {}", frame.len(), encoded.len());
    assert_eq!(Message::decode(&encoded), Ok(Some((message.clone(), encoded.len()))), "no round trip");
}

/// Reads values out of the fuzz bytes; zeros once they run out.
struct Recipe<'a>(&'a [u8]);

impl<'a> Recipe<'a> {
    fn byte(&mut self) -> u8 {
        let Some((&byte, rest)) = self.0.split_first() else { return 0 };
        self.0 = rest;
        byte
    }

    /// A number of 0 to 8 little-endian bytes, so small and extreme values are both common.
    fn number(&mut self) -> u64 {
        let width = usize::from(self.byte() % 9);
        (0..width).fold(0, |number, i| number | u64::from(self.byte()) << (8 * i))
    }

    fn bytes(&mut self, max: usize) -> &'a [u8] {
        let len = usize::from(self.byte()).min(max).min(self.0.len());
        let (bytes, rest) = self.0.split_at(len);
        self.0 = rest;
        bytes
    }

    fn text(&mut self) -> String {
        String::from_utf8_lossy(self.bytes(32)).into_owned()
    }

    fn tag(&mut self) -> Tag {
        Tag { boot: self.number(), seq: self.number() }
    }

    fn consistency(&mut self) -> Consistency {
        match self.byte() % 4 {
            0 => Consistency::One,
            1 => Consistency::Quorum,
            2 => Consistency::All,
            _ => Consistency::Replicas(self.byte()),
        }
    }

    fn context(&mut self) -> Context {
        Context(self.bytes(64).to_vec())
    }

    fn optional_context(&mut self) -> Option<Context> {
        if self.byte() % 2 == 0 { None } else { Some(self.context()) }
    }

    fn request(&mut self) -> Request {
        let key = self.bytes(32).to_vec();
        match self.byte() % 3 {
            0 => Request::Get { key, read: self.consistency() },
            1 => Request::Put {
                key,
                value: self.bytes(255).to_vec(),
                context: self.optional_context(),
                write: self.consistency(),
            },
            _ => Request::Delete { key, context: self.optional_context(), write: self.consistency() },
        }
    }

    fn client_error(&mut self) -> ClientError {
        match self.byte() % 8 {
            0 => ClientError::KeyTooLarge { len: self.number(), max: self.number() },
            1 => ClientError::BadConsistency { asked: self.byte(), replicas: self.byte() },
            2 => ClientError::BadContext { reason: self.text() },
            3 => ClientError::Timeout { acknowledged: self.byte(), needed: self.byte() },
            4 => ClientError::Overloaded { what: self.text(), limit: self.number() },
            5 => ClientError::ShuttingDown,
            6 => ClientError::StorageFailed { reason: self.text() },
            _ => ClientError::Damaged { failed: self.byte() },
        }
    }

    fn reply(&mut self) -> Reply {
        match self.byte() % 4 {
            0 => {
                let values = (0..self.byte() % 4).map(|_| self.bytes(64).to_vec()).collect();
                Reply::Found { values, context: self.context() }
            }
            1 => Reply::NotFound { context: self.context() },
            2 => Reply::Written { context: self.context() },
            _ => Reply::Failed(self.client_error()),
        }
    }

    fn replica_error(&mut self) -> ReplicaError {
        match self.byte() % 3 {
            0 => ReplicaError::StorageFailed,
            1 => ReplicaError::Corrupt,
            _ => ReplicaError::Overloaded,
        }
    }

    /// An object as replicas build it: writes by a few actors, each replacing
    /// nothing, what the object holds, or what a client context says, and
    /// merges of a second object written the same way.
    fn object(&mut self) -> Object {
        let mut objects = [Object::new(), Object::new()];
        for _ in 0..self.byte() % 6 {
            let op = self.byte();
            let (this, other) = if op & 1 == 0 { (0, 1) } else { (1, 0) };
            if op & 2 != 0 {
                let other = objects[other].clone();
                objects[this].merge(&other);
                continue;
            }
            let actor =
                Actor { node: NodeId(u64::from(op >> 2 & 3)), incarnation: u32::from(op >> 4 & 1), epoch: 0 };
            let seen = match self.byte() % 3 {
                0 => CausalContext::new(),
                1 => objects[this].context().clone(),
                _ => CausalContext::from_bytes(self.bytes(64)).unwrap_or_default(),
            };
            let value = if op & 0x20 == 0 { Value::Live(self.bytes(64).to_vec()) } else { Value::Tombstone };
            let timestamp_ms = self.number();
            let _ = objects[this].write(actor, &seen, value, timestamp_ms);
        }
        let [object, _] = objects;
        object
    }

    fn message(&mut self) -> Message {
        match self.byte() % 8 {
            0 => Message::Heartbeat { boot: self.number() },
            1 => Message::Forward {
                tag: self.tag(),
                target_boot: self.number(),
                request: self.request(),
                replace_unreadable: self.byte() % 2 == 1,
            },
            2 => Message::ForwardReply { tag: self.tag(), reply: self.reply() },
            3 => Message::Replicate { tag: self.tag(), key: self.bytes(32).to_vec(), object: self.object() },
            4 => {
                let tag = self.tag();
                let result = if self.byte() % 2 == 0 { Ok(()) } else { Err(self.replica_error()) };
                Message::ReplicateAck { tag, result }
            }
            5 => Message::Read { tag: self.tag(), key: self.bytes(32).to_vec() },
            6 => {
                let tag = self.tag();
                let result = match self.byte() % 3 {
                    0 => Ok(None),
                    1 => Ok(Some(self.object())),
                    _ => Err(self.replica_error()),
                };
                Message::ReadReply { tag, result }
            }
            _ => Message::Repair { key: self.bytes(32).to_vec(), object: self.object() },
        }
    }
}

fuzz_target!(|bytes: &[u8]| {
    let Some((&mode, rest)) = bytes.split_first() else { return };
    match mode % 4 {
        0 => {
            let _ = decode_all(rest);
            return;
        }
        2 => {
            let mut frame = Vec::with_capacity(HEADER_LEN + rest.len());
            frame.extend_from_slice(&u32::try_from(rest.len()).unwrap().to_le_bytes());
            frame.extend_from_slice(&crc32c::crc32c(rest).to_le_bytes());
            frame.extend_from_slice(rest);
            match decode_all(&frame) {
                (messages, ends, Ok(())) => assert!(messages.len() == 1 && ends == [frame.len()]),
                (messages, _, Err(error)) => {
                    assert!(messages.is_empty());
                    assert!(matches!(error, FrameError::Malformed(_)), "{error:?}");
                }
            }
            return;
        }
        _ => {}
    }
    let Some((rest, &where_bytes)) = rest.split_last_chunk::<2>() else { return };
    let at = usize::from(u16::from_le_bytes(where_bytes));
    let mut recipe = Recipe(rest);
    let mut messages = Vec::new();
    while !recipe.0.is_empty() && messages.len() < 8 {
        messages.push(recipe.message());
    }
    let mut wire = Vec::new();
    let mut ends = Vec::new();
    for message in &messages {
        message.encode(&mut wire).expect("a small message encodes");
        ends.push(wire.len());
    }
    let (decoded, decoded_ends, stop) = decode_all(&wire);
    assert_eq!(decoded, messages);
    assert_eq!(decoded_ends, ends, "a message did not use exactly its own frame");
    assert_eq!(stop, Ok(()));
    if messages.is_empty() {
        return;
    }
    if mode & 2 != 0 {
        // One bit of the checksums and payloads, all frames taken together.
        let starts: Vec<usize> = std::iter::once(0).chain(ends.iter().copied()).collect();
        let mut bit = (ends.iter().zip(&starts).map(|(end, start)| end - start - 4).sum::<usize>() * 8 - 1)
            * at
            / usize::from(u16::MAX);
        let mut frame = 0;
        while bit >= (ends[frame] - starts[frame] - 4) * 8 {
            bit -= (ends[frame] - starts[frame] - 4) * 8;
            frame += 1;
        }
        let byte = starts[frame] + 4 + bit / 8;
        wire[byte] ^= 1 << (bit % 8);
        let (decoded, _, stop) = decode_all(&wire);
        assert_eq!(decoded.as_slice(), &messages[..frame], "frames before the flip at byte {byte}");
        assert!(matches!(stop, Err(FrameError::Checksum { .. })), "a flip at byte {byte} gave {stop:?}");
        return;
    }
    let cut = wire.len() * at / usize::from(u16::MAX);
    let (decoded, decoded_ends, stop) = decode_all(&wire[..cut]);
    let whole = ends.iter().filter(|&&end| end <= cut).count();
    assert_eq!(decoded.as_slice(), &messages[..whole], "cut at {cut}: exactly the whole frames");
    assert_eq!(decoded_ends.as_slice(), &ends[..whole]);
    assert_eq!(stop, Ok(()), "a stream cut at {cut} is not incomplete");
});
