//! Causal contexts as clients hand them back, on arbitrary bytes: the binary
//! form (after a first byte that is a multiple of 4) and the base64url text
//! of HTTP headers, JSON bodies and RESP replies (first byte 2 modulo 4).
//! Neither decoder may panic, and a refusal must name the right cause.
//!
//! A context that decodes must be in canonical form: joining it into an empty
//! context gives it back, it re-encodes to bytes that decode to it again, and
//! those bytes survive the text form unchanged. Text that decodes must be the
//! unique text of its bytes, but for padding: encoding gives back the input
//! without its trailing `=`, in the URL-safe alphabet only, so it is always a
//! valid header value. The bytes of decoded text must pass the binary checks.
//!
//! Inputs whose first byte is odd are a recipe instead: contexts are built as
//! replicas build them, by inserting dots, by joining each other, and by
//! joining contexts that clients send (decoded from the input, or a version
//! vector up to a counter, the largest ones included). No operation may
//! panic; each context must contain every dot inserted into it and include
//! every context joined into it, and must then pass the checks of a decoded one.

#![no_main]

use keel_core::NodeId;
use keel_core::client::Context;
use keel_core::version::{Actor, CONTEXT_BYTES_MAX, CausalContext, ContextError, Dot};
use keel_io_tokio::service::{decode_context, encode_context};
use libfuzzer_sys::fuzz_target;

/// Decodes `bytes` as `CausalContext::from_bytes` does, and checks the result.
fn check_binary(bytes: &[u8]) {
    match CausalContext::from_bytes(bytes) {
        Ok(context) => check_canonical(&context),
        Err(ContextError::TooLarge { len, max }) => assert!(len == bytes.len() && len > max),
        Err(ContextError::UnknownFormat(format)) => assert_eq!(bytes.first(), Some(&format)),
        Err(_) => assert!(bytes.len() <= CONTEXT_BYTES_MAX && bytes.first() == Some(&1)),
    }
}

/// Checks a context that was decoded or built.
fn check_canonical(context: &CausalContext) {
    let mut rebuilt = CausalContext::new();
    rebuilt.join(context);
    assert_eq!(&rebuilt, context, "not canonical");
    assert!(context.includes(context));
    assert_eq!(context.is_empty(), context.actor_count() == 0);
    let encoded = context.to_bytes();
    assert_eq!(context.is_empty(), encoded == [1, 0, 0]);
    let decoded = CausalContext::from_bytes(&encoded).expect("an encoded context decodes");
    assert_eq!(&decoded, context, "no round trip through {encoded:02x?}");
    assert_eq!(decoded.to_bytes(), encoded, "two encodings of one context");
    let text = encode_context(&Context(encoded.clone()));
    assert!(text.bytes().all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_'), "{text}");
    assert_eq!(decode_context(text.as_bytes()), Ok(Context(encoded)), "no round trip through {text}");
}

/// Decodes `text` as the HTTP and RESP servers do, and checks the result.
fn check_text(text: &[u8]) {
    let Ok(context) = decode_context(text) else { return };
    let encoded = encode_context(&context);
    assert!(encoded.bytes().all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_'));
    let unpadded = text.strip_suffix(b"==").or_else(|| text.strip_suffix(b"=")).unwrap_or(text);
    assert_eq!(encoded.as_bytes(), unpadded, "two texts of one context");
    assert_eq!(decode_context(encoded.as_bytes()), Ok(context.clone()));
    check_binary(&context.0);
}

/// Reads values out of the fuzz bytes; zeros once they run out.
struct Recipe<'a>(&'a [u8]);

impl<'a> Recipe<'a> {
    fn byte(&mut self) -> u8 {
        let Some((&byte, rest)) = self.0.split_first() else { return 0 };
        self.0 = rest;
        byte
    }

    fn bytes(&mut self) -> &'a [u8] {
        let len = usize::from(self.byte()).min(self.0.len());
        let (bytes, rest) = self.0.split_at(len);
        self.0 = rest;
        bytes
    }

    /// Mostly small counters, so dots meet and compact; else the largest
    /// counters, or any number of 1 to 8 little-endian bytes.
    fn counter(&mut self) -> u64 {
        match self.byte() {
            small @ 0..=239 => u64::from(small % 12),
            large @ 240..=247 => u64::MAX - u64::from(large - 240),
            wide => (0..usize::from(wide % 8 + 1)).fold(0, |n, i| n | u64::from(self.byte()) << (8 * i)),
        }
    }
}

/// The context of a client that has seen the writes 1 to `n` of `actor`, as
/// the bytes it would send: one version vector entry, no cloud.
fn seen_up_to(actor: Actor, n: u64) -> CausalContext {
    fn varint(mut value: u64, out: &mut Vec<u8>) {
        while value >= 0x80 {
            out.push(value as u8 | 0x80);
            value >>= 7;
        }
        out.push(value as u8);
    }
    let mut bytes = vec![1, 1];
    for value in [actor.node.0, u64::from(actor.incarnation), actor.epoch, n] {
        varint(value, &mut bytes);
    }
    bytes.push(0);
    let context = CausalContext::from_bytes(&bytes).expect("a version vector decodes");
    assert_eq!(context.max_counter(actor), n);
    context
}

fuzz_target!(|bytes: &[u8]| {
    let Some((&mode, rest)) = bytes.split_first() else { return };
    match mode % 4 {
        0 => return check_binary(rest),
        2 => return check_text(rest),
        _ => {}
    }
    // Ops: `[op][counter]` inserts a dot, or joins the context of a client
    // that has seen every write up to that dot; `[op]` joins one of the
    // contexts into another; `[op][length][bytes]` joins a context decoded
    // from the bytes, as a write joins the context its client sent. The op's
    // low bits pick the context changed and the actor or the context joined.
    let mut contexts = [CausalContext::new(), CausalContext::new(), CausalContext::new()];
    let mut recipe = Recipe(rest);
    while !recipe.0.is_empty() {
        let op = recipe.byte();
        let this = usize::from(op % 3);
        let other = match op >> 6 {
            0 | 1 => {
                let actor = Actor {
                    node: NodeId(u64::from(op >> 2 & 3)),
                    incarnation: u32::from(op >> 4 & 1),
                    epoch: 0,
                };
                let dot = Dot { actor, counter: recipe.counter() };
                if op & 0x20 != 0 {
                    seen_up_to(actor, dot.counter)
                } else {
                    contexts[this].insert(dot);
                    // Counters start at 1: inserting a dot of counter 0 changes nothing.
                    assert!(dot.counter == 0 || contexts[this].contains(&dot), "{dot:?} inserted");
                    assert!(contexts[this].max_counter(actor) >= dot.counter);
                    continue;
                }
            }
            2 => contexts[usize::from(op >> 2 & 3) % 3].clone(),
            _ => {
                let Ok(other) = CausalContext::from_bytes(recipe.bytes()) else { continue };
                other
            }
        };
        contexts[this].join(&other);
        assert!(contexts[this].includes(&other), "a join lost dots");
    }
    for context in &contexts {
        check_canonical(context);
    }
});
