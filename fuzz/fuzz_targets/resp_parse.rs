//! The RESP request parser on arbitrary bytes: it must never panic, must
//! consume only bytes it was given, and must parse the same commands whether
//! the bytes arrive at once or in two reads split where the input says.

#![no_main]

use keel_io_tokio::resp::{Command, Parser, RespError, RespLimits, Value, Version};
use libfuzzer_sys::fuzz_target;

/// Small bounds so the fuzzer reaches every limit quickly.
fn limits() -> RespLimits {
    RespLimits {
        inline_bytes_max: 64,
        bulk_bytes_max: 256,
        args_max: 16,
        request_bytes_max: 1024,
        ..RespLimits::default()
    }
}

/// Every command in `chunks` fed in order, as a connection feeds its parser,
/// and the error that stopped parsing, if any.
fn run(chunks: &[&[u8]]) -> (Vec<Command>, Option<RespError>) {
    let mut parser = Parser::new(limits());
    let mut buffer = Vec::new();
    let mut commands = Vec::new();
    for chunk in chunks {
        buffer.extend_from_slice(chunk);
        loop {
            match parser.next(&buffer) {
                Ok(Some((command, used))) => {
                    assert!(used > 0 && used <= buffer.len(), "consumed {used} of {}", buffer.len());
                    buffer.drain(..used);
                    commands.push(command);
                }
                Ok(None) => break,
                Err(error) => return (commands, Some(error)),
            }
        }
    }
    (commands, None)
}

fuzz_target!(|data: &[u8]| {
    let Some((&split, input)) = data.split_first() else { return };
    let split = usize::from(split) % (input.len() + 1);
    let whole = run(&[input]);
    let halves = run(&[&input[..split], &input[split..]]);
    assert_eq!(whole, halves, "split at {split}");
    // Echoing what was parsed must encode without panicking in both versions.
    for command in &whole.0 {
        let value = Value::Array(command.args().iter().cloned().map(Value::Bulk).collect());
        let _ = value.to_bytes(Version::Resp2);
        let _ = value.to_bytes(Version::Resp3);
    }
});
