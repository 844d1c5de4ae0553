use super::*;

fn limits() -> RespLimits {
    RespLimits::default()
}

fn args(list: &[&str]) -> Command {
    Command::new(list.iter().map(|arg| arg.as_bytes().to_vec()).collect())
}

fn one(input: &[u8]) -> Result<Option<(Command, usize)>, RespError> {
    parse(input, &limits())
}

/// Parses every command in `input` with one parser, as a connection does.
fn all(input: &[u8], limits: &RespLimits) -> Result<Vec<Command>, RespError> {
    let mut parser = Parser::new(limits.clone());
    let mut commands = Vec::new();
    let mut at = 0;
    while let Some((command, used)) = parser.next(&input[at..])? {
        commands.push(command);
        at += used;
    }
    assert_eq!(at, input.len(), "unconsumed input");
    Ok(commands)
}

#[test]
fn multibulk_and_inline_commands() {
    let input = b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n";
    assert_eq!(one(input), Ok(Some((args(&["GET", "k"]), input.len()))));
    assert_eq!(one(b"PING\r\n"), Ok(Some((args(&["PING"]), 6))));
    assert_eq!(one(b"set  a   b\n"), Ok(Some((args(&["set", "a", "b"]), 11))));
    assert_eq!(one(b"*1\r\n$0\r\n\r\n"), Ok(Some((args(&[""]), 10))));
    assert_eq!(one(b""), Ok(None));
}

#[test]
fn binary_values_survive() {
    let input = b"*3\r\n$3\r\nSET\r\n$1\r\n\x00\r\n$4\r\n\r\n\xff\x00\r\n";
    let (command, used) = one(input).expect("valid").expect("complete");
    assert_eq!(used, input.len());
    assert_eq!(command.args(), &[b"SET".to_vec(), vec![0], b"\r\n\xff\x00".to_vec()]);
}

#[test]
fn empty_requests_are_consumed_without_arguments() {
    assert_eq!(one(b"*0\r\n"), Ok(Some((Command::default(), 4))));
    assert_eq!(one(b"*-1\r\n"), Ok(Some((Command::default(), 5))));
    assert_eq!(one(b"\r\n"), Ok(Some((Command::default(), 2))));
    assert_eq!(one(b"   \n"), Ok(Some((Command::default(), 4))));
}

#[test]
fn pipelines_parse_in_order() {
    let input = b"*1\r\n$4\r\nPING\r\nECHO hi\r\n*2\r\n$3\r\nGET\r\n$1\r\na\r\n*0\r\n";
    let commands = all(input, &limits()).expect("valid");
    assert_eq!(
        commands,
        vec![args(&["PING"]), args(&["ECHO", "hi"]), args(&["GET", "a"]), Command::default()]
    );
}

#[test]
fn every_split_point_gives_the_same_commands() {
    let input: &[u8] =
        b"*3\r\n$3\r\nSET\r\n$5\r\nkey\x00z\r\n$12\r\nvalue\r\nvalue\r\nPING\r\n*1\r\n$4\r\nQUIT\r\n";
    let expected = all(input, &limits()).expect("valid");
    assert_eq!(expected.len(), 3);
    for split in 0..=input.len() {
        // A connection that receives the input in two reads at `split`.
        let mut parser = Parser::new(limits());
        let mut buffer = input[..split].to_vec();
        let mut commands = Vec::new();
        let mut take = |parser: &mut Parser, buffer: &mut Vec<u8>| {
            while let Some((command, used)) = parser.next(buffer).expect("valid") {
                commands.push(command);
                buffer.drain(..used);
            }
        };
        take(&mut parser, &mut buffer);
        buffer.extend_from_slice(&input[split..]);
        take(&mut parser, &mut buffer);
        assert!(buffer.is_empty(), "split at {split} left {buffer:?}");
        assert_eq!(commands, expected, "split at {split}");
    }
}

#[test]
fn byte_by_byte_input_gives_the_same_commands() {
    let input: &[u8] = b"*2\r\n$4\r\nECHO\r\n$10\r\n0123456789\r\nPING\r\n";
    let mut parser = Parser::new(limits());
    let mut buffer = Vec::new();
    let mut commands = Vec::new();
    for &byte in input {
        buffer.push(byte);
        while let Some((command, used)) = parser.next(&buffer).expect("valid") {
            commands.push(command);
            buffer.drain(..used);
        }
    }
    assert_eq!(commands, vec![args(&["ECHO", "0123456789"]), args(&["PING"])]);
}

#[test]
fn bad_lengths_are_protocol_errors() {
    assert_eq!(one(b"*x\r\n"), Err(RespError::InvalidMultibulkLength));
    assert_eq!(one(b"*+1\r\n"), Err(RespError::InvalidMultibulkLength));
    assert_eq!(one(b"*01\r\n"), Err(RespError::InvalidMultibulkLength));
    assert_eq!(one(b"*99999999999999999999\r\n"), Err(RespError::InvalidMultibulkLength));
    assert_eq!(one(b"*1\r\n$-1\r\n"), Err(RespError::InvalidBulkLength));
    assert_eq!(one(b"*1\r\n$abc\r\n"), Err(RespError::InvalidBulkLength));
    assert_eq!(one(b"*1\r\n:1\r\n"), Err(RespError::ExpectedBulk(':')));
    assert_eq!(one(b"*1\r\n$1\r\nab\r\n"), Err(RespError::MissingBulkTerminator));
    let text = RespError::InvalidMultibulkLength.to_string();
    assert_eq!(text, "Protocol error: invalid multibulk length");
    assert_eq!(RespError::ExpectedBulk('x').to_string(), "Protocol error: expected '$', got 'x'");
}

#[test]
fn limits_are_enforced() {
    let small = RespLimits {
        inline_bytes_max: 16,
        bulk_bytes_max: 8,
        args_max: 3,
        request_bytes_max: 40,
        ..limits()
    };
    assert_eq!(parse(b"*4\r\n", &small), Err(RespError::InvalidMultibulkLength));
    assert_eq!(parse(b"*1\r\n$9\r\n", &small), Err(RespError::InvalidBulkLength));
    assert_eq!(parse(b"*1\r\n$8\r\n", &small), Ok(None));
    assert_eq!(parse(&[b'x'; 17], &small), Err(RespError::TooBigInline));
    assert_eq!(parse(&[b'x'; 16], &small), Ok(None));
    assert_eq!(parse(b"*11111111111111111111", &small), Err(RespError::TooBigMultibulkCount));
    assert_eq!(parse(b"*1\r\n$00000000000000000", &small), Err(RespError::TooBigBulkCount));
    // Three bulks of 8 bytes: 4 + 3 * (4 + 8 + 2) = 46 bytes, over 40.
    let request = b"*3\r\n$8\r\naaaaaaaa\r\n$8\r\nbbbbbbbb\r\n$8\r\n";
    assert_eq!(parse(request, &small), Err(RespError::RequestTooLarge { max: 40 }));
}

#[test]
fn claimed_counts_do_not_allocate() {
    // A million claimed arguments and a 32 MiB claimed bulk, none sent.
    assert_eq!(one(b"*1000000\r\n$33554432\r\n"), Ok(None));
}

#[test]
fn inline_quotes_follow_redis() {
    let parsed = |line: &[u8]| split_args(line);
    let bytes = |list: &[&[u8]]| Some(list.iter().map(|arg| arg.to_vec()).collect::<Vec<_>>());
    assert_eq!(parsed(b"set \"a b\" 'c d'"), bytes(&[b"set", b"a b", b"c d"]));
    assert_eq!(parsed(b"\"\\x41\\n\\t\\\"\\\\\\q\""), bytes(&[b"A\n\t\"\\q"]));
    assert_eq!(parsed(b"'it\\'s' '\\n'"), bytes(&[b"it's", b"\\n"]));
    assert_eq!(parsed(b"\"\\xZZ\""), bytes(&[b"xZZ"]));
    assert_eq!(parsed(b"a\"b c\"d"), None);
    assert_eq!(parsed(b"a\"b c\" d"), bytes(&[b"ab c", b"d"]));
    assert_eq!(parsed(b"\"\""), bytes(&[b""]));
    assert_eq!(parsed(b"\"open"), None);
    assert_eq!(parsed(b"'open"), None);
    assert_eq!(parsed(b"\"x\\"), None);
    assert_eq!(parsed(b""), bytes(&[]));
    assert_eq!(one(b"GET \"a\r\n"), Err(RespError::UnbalancedQuotes));
}

/// Commands and the stopping error for `chunks` fed in order to one parser.
fn feed(chunks: &[&[u8]], limits: &RespLimits) -> (Vec<Command>, Option<RespError>) {
    let mut parser = Parser::new(limits.clone());
    let (mut buffer, mut commands) = (Vec::new(), Vec::new());
    for chunk in chunks {
        buffer.extend_from_slice(chunk);
        loop {
            match parser.next(&buffer) {
                Ok(Some((command, used))) => {
                    assert!(used > 0 && used <= buffer.len());
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

#[test]
fn arbitrary_bytes_never_panic_and_splits_do_not_matter() {
    // A deterministic sweep of short inputs over the bytes that matter, the
    // same property the fuzz target checks on any bytes.
    let alphabet: &[u8] = b"*$\r\n0-1 9\"'\\x";
    let small =
        RespLimits { inline_bytes_max: 8, bulk_bytes_max: 4, args_max: 4, request_bytes_max: 32, ..limits() };
    let mut input = Vec::new();
    for seed in 0u64..100_000 {
        input.clear();
        let mut state = seed;
        for _ in 0..(seed % 14) {
            input.push(alphabet[(state % alphabet.len() as u64) as usize]);
            state /= alphabet.len() as u64;
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407) >> 7;
        }
        let split = (seed as usize / 7) % (input.len() + 1);
        let whole = feed(&[&input], &small);
        assert_eq!(whole, feed(&[&input[..split], &input[split..]], &small), "{input:?} split at {split}");
    }
}
