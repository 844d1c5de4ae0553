//! Node-to-node message decoding on arbitrary bytes (after a first byte that
//! is a multiple of 4): frames are read one after another, as a connection
//! reads them, and decoding must never panic. A frame that decodes used no
//! more bytes than it was given, every shorter prefix of it is reported as
//! incomplete, what it holds upholds its invariants (it encodes again, which
//! checks the bounds decoding enforces, and its objects pass their checks),
//! and its message re-encodes to a frame no longer than the one read that
//! decodes to the same message. With a first byte of 2 modulo 8 the rest is
//! a payload, framed with its true length and checksum so that the message
//! decoder itself is reached: it must decode or be refused as malformed,
//! never anything else.
//!
//! With a first byte of 6 modulo 8 the rest is a recipe for a `Replicate`
//! whose object is laid out by hand, with no check: siblings of any dots in
//! any order, a context built from dots and version vectors, a key of any
//! length. It must decode exactly when an object's rules, restated here,
//! allow it: at most `OBJECT_SIBLINGS_MAX` siblings in increasing dot order,
//! every counter at least 1 and every dot in the context, a key of 1 to
//! `KEY_BYTES_MAX` bytes.
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
use keel_core::client::{ClientError, Consistency};
use keel_core::frame::{FrameError, HEADER_LEN};
use keel_core::message::{KEY_BYTES_MAX, Message, ReplicaError, Tag, Write};
use keel_core::version::{Actor, CausalContext, Dot, OBJECT_SIBLINGS_MAX, Object, Sibling, Value};
use libfuzzer_sys::fuzz_target;
use serde::Serialize;

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
    let objects = match message {
        Message::Replicate { object, .. } | Message::Repair { object, .. } => vec![object],
        Message::ReadReply { result: Ok(Some(object)), .. } => vec![object],
        _ => Vec::new(),
    };
    for object in objects {
        assert_eq!(object.invariants(), Ok(()), "a decoded object breaks its invariants");
    }
    let mut encoded = Vec::new();
    message.encode(&mut encoded).expect("a decoded message encodes: it is within every bound");
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

    /// A context as a client hands it back, decoded as the node decodes it.
    fn context(&mut self) -> CausalContext {
        CausalContext::from_bytes(self.bytes(64)).unwrap_or_default()
    }

    /// A key of 1 to 32 bytes: no node sends an empty one.
    fn key(&mut self) -> Vec<u8> {
        let key = self.bytes(32);
        if key.is_empty() { vec![0] } else { key.to_vec() }
    }

    fn write(&mut self) -> Write {
        let key = self.key();
        let value = if self.byte() % 2 == 0 { Value::Live(self.bytes(255).to_vec()) } else { Value::Tombstone };
        let seen = if self.byte() % 2 == 0 { None } else { Some(self.context()) };
        Write { key, value, seen, consistency: self.consistency() }
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

    fn write_result(&mut self) -> Result<CausalContext, ClientError> {
        if self.byte() % 2 == 0 { Ok(self.context()) } else { Err(self.client_error()) }
    }

    fn replica_error(&mut self) -> ReplicaError {
        match self.byte() % 4 {
            0 => ReplicaError::StorageFailed,
            1 => ReplicaError::Corrupt,
            2 => ReplicaError::Overloaded,
            _ => ReplicaError::SiblingsTooMany,
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
                _ => self.context(),
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
                write: self.write(),
                replace_unreadable: self.byte() % 2 == 1,
            },
            2 => Message::ForwardReply { tag: self.tag(), result: self.write_result() },
            3 => Message::Replicate { tag: self.tag(), key: self.key(), object: self.object() },
            4 => {
                let tag = self.tag();
                let result = if self.byte() % 2 == 0 { Ok(()) } else { Err(self.replica_error()) };
                Message::ReplicateAck { tag, result }
            }
            5 => Message::Read { tag: self.tag(), key: self.key() },
            6 => {
                let tag = self.tag();
                let result = match self.byte() % 3 {
                    0 => Ok(None),
                    1 => Ok(Some(self.object())),
                    _ => Err(self.replica_error()),
                };
                Message::ReadReply { tag, result }
            }
            _ => Message::Repair { key: self.key(), object: self.object() },
        }
    }
}

/// `Object`'s layout, unchecked: what a buggy or hostile peer could send.
#[derive(Serialize)]
struct RawObject {
    siblings: Vec<Sibling>,
    context: CausalContext,
}

impl Recipe<'_> {
    /// A dot of one of four actors, its counter mostly small (0 included).
    fn dot(&mut self) -> Dot {
        let op = self.byte();
        let actor = Actor { node: NodeId(u64::from(op & 3)), incarnation: 1, epoch: u64::from(op >> 2 & 1) };
        Dot { actor, counter: u64::from(op >> 3) }
    }

    /// Siblings with any dots, in any order, often sorted so that other
    /// rules get their turn; some lists are longer than any object may hold.
    fn raw_object(&mut self) -> RawObject {
        let mut context = CausalContext::new();
        for _ in 0..self.byte() % 8 {
            let dot = self.dot();
            context.insert(dot);
            if dot.counter > 1 && self.byte() % 2 == 0 {
                // Every earlier dot of the actor as well.
                (1..dot.counter).for_each(|counter| context.insert(Dot { counter, ..dot }));
            }
        }
        let mut siblings: Vec<Sibling> = (0..self.byte() % 6)
            .map(|_| Sibling { dot: self.dot(), timestamp_ms: 0, value: Value::Live(self.bytes(4).to_vec()) })
            .collect();
        match self.byte() % 4 {
            0 => siblings.sort_by_key(|sibling| sibling.dot),
            1 => {
                // As many siblings as an object may hold, or one more.
                let count = OBJECT_SIBLINGS_MAX + usize::from(self.byte() % 2);
                let actor = Actor { node: NodeId(9), incarnation: 1, epoch: 0 };
                siblings = (1..=count as u64)
                    .map(|counter| Sibling { dot: Dot { actor, counter }, timestamp_ms: 0, value: Value::Tombstone })
                    .collect();
                siblings.iter().for_each(|sibling| context.insert(sibling.dot));
            }
            _ => {}
        }
        RawObject { siblings, context }
    }
}

/// Whether an object's rules allow `raw`, restated from its documentation.
fn allowed(raw: &RawObject) -> bool {
    raw.siblings.len() <= OBJECT_SIBLINGS_MAX
        && raw.siblings.windows(2).all(|pair| pair[0].dot < pair[1].dot)
        && raw.siblings.iter().all(|sibling| sibling.dot.counter >= 1 && raw.context.contains(&sibling.dot))
}

/// A `Replicate` of a hand-made object decodes exactly when it is allowed.
fn check_raw_object(rest: &[u8]) {
    let mut recipe = Recipe(rest);
    let key_len = match recipe.byte() % 8 {
        0 => 0,
        1 => KEY_BYTES_MAX,
        2 => KEY_BYTES_MAX + 1,
        other => usize::from(other),
    };
    let key = vec![b'k'; key_len];
    let raw = recipe.raw_object();
    // `Replicate` is the fourth variant: postcard writes its index, then its fields.
    let tag = Tag { boot: 1, seq: 2 };
    let payload = postcard::to_allocvec(&(3u8, tag, serde_bytes::Bytes::new(&key), &raw)).expect("encode");
    let mut frame = Vec::with_capacity(HEADER_LEN + payload.len());
    frame.extend_from_slice(&u32::try_from(payload.len()).unwrap().to_le_bytes());
    frame.extend_from_slice(&crc32c::crc32c(&payload).to_le_bytes());
    frame.extend_from_slice(&payload);
    let expected = allowed(&raw) && (1..=KEY_BYTES_MAX).contains(&key_len);
    match Message::decode(&frame) {
        Ok(Some((Message::Replicate { key: decoded, object, .. }, used))) => {
            assert!(expected, "an object its rules refuse decoded");
            assert_eq!((decoded, used), (key, frame.len()));
            assert_eq!(object.siblings(), raw.siblings.as_slice());
            assert_eq!(object.context(), &raw.context);
        }
        Err(FrameError::Malformed(_)) => assert!(!expected, "an object its rules allow was refused"),
        other => panic!("a whole frame gave {other:?}"),
    }
}

fuzz_target!(|bytes: &[u8]| {
    let Some((&mode, rest)) = bytes.split_first() else { return };
    match mode % 8 {
        0 | 4 => {
            let _ = decode_all(rest);
            return;
        }
        6 => return check_raw_object(rest),
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
