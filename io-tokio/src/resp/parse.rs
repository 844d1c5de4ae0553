//! An incremental parser for Redis requests: multibulk arrays of bulk strings
//! (what every client library sends) and inline commands (what people type
//! into telnet).
//!
//! The parser is pure: it reads a buffer and says how many bytes one command
//! took, or that more bytes are needed. It never panics and never allocates in
//! proportion to a length it has not yet received. Errors use Redis's wording
//! where Redis has one, because client libraries and people recognise it.

use thiserror::Error;

use super::RespLimits;

/// One request: the command name and its arguments, as sent. An empty
/// request (`*0\r\n` or a blank inline line) is valid and gets no reply.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Command {
    args: Vec<Vec<u8>>,
}

impl Command {
    pub fn new(args: Vec<Vec<u8>>) -> Command {
        Command { args }
    }

    /// The name first, then the arguments.
    pub fn args(&self) -> &[Vec<u8>] {
        &self.args
    }

    pub fn into_args(self) -> Vec<Vec<u8>> {
        self.args
    }

    pub fn is_empty(&self) -> bool {
        self.args.is_empty()
    }
}

/// A request that breaks the protocol. The connection cannot be resynchronised
/// afterwards, so the server answers with `-ERR <message>` and closes it.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum RespError {
    #[error("Protocol error: invalid multibulk length")]
    InvalidMultibulkLength,
    #[error("Protocol error: invalid bulk length")]
    InvalidBulkLength,
    #[error("Protocol error: too big mbulk count string")]
    TooBigMultibulkCount,
    #[error("Protocol error: too big bulk count string")]
    TooBigBulkCount,
    #[error("Protocol error: too big inline request")]
    TooBigInline,
    #[error("Protocol error: unbalanced quotes in request")]
    UnbalancedQuotes,
    #[error("Protocol error: expected '$', got '{0}'")]
    ExpectedBulk(char),
    /// Redis skips these two bytes unread; keel checks them, so a client that
    /// miscounts a length is told at once rather than misread.
    #[error("Protocol error: expected CRLF after bulk data")]
    MissingBulkTerminator,
    #[error("Protocol error: request exceeds the limit of {max} bytes")]
    RequestTooLarge { max: u64 },
}

/// Parses one command from the start of `buf`.
///
/// `Ok(None)` means `buf` holds only part of a command. This re-reads the
/// partial command from the start on the next call; a server should use a
/// [`Parser`], which resumes where it stopped.
pub fn parse(buf: &[u8], limits: &RespLimits) -> Result<Option<(Command, usize)>, RespError> {
    Parser::new(limits.clone()).next(buf)
}

/// A parser that remembers the arguments of a partly received multibulk
/// request, so a large request arriving in many reads is parsed once.
#[derive(Debug)]
pub struct Parser {
    limits: RespLimits,
    partial: Option<Partial>,
}

#[derive(Debug)]
struct Partial {
    expected: usize,
    args: Vec<Vec<u8>>,
    /// Where the next bulk string starts in the caller's buffer.
    position: usize,
}

impl Parser {
    pub fn new(limits: RespLimits) -> Parser {
        Parser { limits, partial: None }
    }

    /// Parses the next command from the start of `buf`, returning it with the
    /// number of bytes it took.
    ///
    /// After `Ok(None)`, the next call must pass a buffer that starts at the
    /// same byte and holds at least as many bytes: the caller may append to
    /// the buffer but not consume from it until a command is returned. After
    /// an error the parser must not be used again.
    pub fn next(&mut self, buf: &[u8]) -> Result<Option<(Command, usize)>, RespError> {
        if let Some(partial) = self.partial.take() {
            return self.resume(buf, partial);
        }
        match buf.first() {
            None => Ok(None),
            Some(b'*') => self.multibulk(buf),
            Some(_) => inline(buf, &self.limits),
        }
    }

    fn multibulk(&mut self, buf: &[u8]) -> Result<Option<(Command, usize)>, RespError> {
        let inline_max = self.limits.inline_bytes_max as usize;
        let Some((digits, after)) = line(buf, 1, inline_max, RespError::TooBigMultibulkCount)? else {
            return Ok(None);
        };
        let count = integer(digits).ok_or(RespError::InvalidMultibulkLength)?;
        if count > i64::from(self.limits.args_max) {
            return Err(RespError::InvalidMultibulkLength);
        }
        let Ok(expected) = usize::try_from(count) else {
            // Redis reads a zero or negative count as an empty request.
            return Ok(Some((Command::default(), after)));
        };
        if expected == 0 {
            return Ok(Some((Command::default(), after)));
        }
        // Capacity grows with arguments received, not with the claimed count.
        let partial = Partial { expected, args: Vec::with_capacity(expected.min(16)), position: after };
        self.resume(buf, partial)
    }

    fn resume(&mut self, buf: &[u8], mut partial: Partial) -> Result<Option<(Command, usize)>, RespError> {
        let inline_max = self.limits.inline_bytes_max as usize;
        let request_max = self.limits.request_bytes_max;
        while partial.args.len() < partial.expected {
            let start = partial.position;
            let Some(&marker) = buf.get(start) else {
                self.partial = Some(partial);
                return Ok(None);
            };
            if marker != b'$' {
                return Err(RespError::ExpectedBulk(char::from(marker)));
            }
            let Some((digits, after)) = line(buf, start + 1, inline_max, RespError::TooBigBulkCount)? else {
                self.partial = Some(partial);
                return Ok(None);
            };
            let len = integer(digits)
                .filter(|len| (0..=i64::from(self.limits.bulk_bytes_max)).contains(len))
                .ok_or(RespError::InvalidBulkLength)?;
            let end = usize::try_from(len).ok().and_then(|len| after.checked_add(len));
            let Some(end) = end.filter(|end| (*end as u64).saturating_add(2) <= request_max) else {
                return Err(RespError::RequestTooLarge { max: request_max });
            };
            let (Some(data), Some(terminator)) = (buf.get(after..end), buf.get(end..end + 2)) else {
                self.partial = Some(partial);
                return Ok(None);
            };
            if terminator != b"\r\n" {
                return Err(RespError::MissingBulkTerminator);
            }
            partial.args.push(data.to_vec());
            partial.position = end + 2;
        }
        Ok(Some((Command::new(partial.args), partial.position)))
    }
}

/// The bytes between `start` and the next CRLF, and the index after the CRLF.
/// A line longer than `max` without a CRLF is `too_long`.
fn line(
    buf: &[u8],
    start: usize,
    max: usize,
    too_long: RespError,
) -> Result<Option<(&[u8], usize)>, RespError> {
    let rest = buf.get(start..).unwrap_or_default();
    let window = &rest[..rest.len().min(max + 2)];
    match window.windows(2).position(|pair| pair == b"\r\n") {
        Some(offset) => Ok(Some((&rest[..offset], start + offset + 2))),
        None if rest.len() > max => Err(too_long),
        None => Ok(None),
    }
}

/// A strict decimal integer, as Redis's `string2ll` reads it: an optional
/// minus, no plus, no leading zeros, no spaces, no overflow.
fn integer(digits: &[u8]) -> Option<i64> {
    let (negative, magnitude) = match digits {
        [b'-', rest @ ..] => (true, rest),
        _ => (false, digits),
    };
    match magnitude {
        [] => return None,
        [b'0'] => return (!negative).then_some(0),
        [b'0', ..] => return None,
        _ => {}
    }
    let mut value: i64 = 0;
    for &digit in magnitude {
        if !digit.is_ascii_digit() {
            return None;
        }
        let digit = i64::from(digit - b'0');
        value = value.checked_mul(10)?;
        value = if negative { value.checked_sub(digit)? } else { value.checked_add(digit)? };
    }
    Some(value)
}

/// An inline command: one line, split into arguments as Redis's
/// `sdssplitargs` does.
fn inline(buf: &[u8], limits: &RespLimits) -> Result<Option<(Command, usize)>, RespError> {
    let max = limits.inline_bytes_max as usize;
    let Some(newline) = buf.iter().take(max + 1).position(|&byte| byte == b'\n') else {
        return if buf.len() > max { Err(RespError::TooBigInline) } else { Ok(None) };
    };
    let text = buf[..newline].strip_suffix(b"\r").unwrap_or(&buf[..newline]);
    let args = split_args(text).ok_or(RespError::UnbalancedQuotes)?;
    Ok(Some((Command::new(args), newline + 1)))
}

/// Splits a line into arguments. Double quotes take the escapes `\n \r \t \b
/// \a \\ \"` and `\xHH`; single quotes take only `\'`. A closing quote must be
/// followed by a space or the end of the line. `None` when quotes are unbalanced.
pub(crate) fn split_args(line: &[u8]) -> Option<Vec<Vec<u8>>> {
    let mut args = Vec::new();
    let mut at = 0;
    loop {
        while line.get(at).is_some_and(|byte| is_space(*byte)) {
            at += 1;
        }
        if at >= line.len() {
            return Some(args);
        }
        let mut arg = Vec::new();
        loop {
            match line.get(at) {
                None => break,
                Some(byte) if is_space(*byte) => break,
                Some(b'"') => at = quoted(line, at + 1, b'"', &mut arg, double_escape)?,
                Some(b'\'') => at = quoted(line, at + 1, b'\'', &mut arg, single_escape)?,
                Some(byte) => {
                    arg.push(*byte);
                    at += 1;
                }
            }
        }
        args.push(arg);
    }
}

type Escape = fn(&[u8], usize, &mut Vec<u8>) -> Option<usize>;

/// Reads a quoted section starting after its opening quote; returns the index
/// after the closing quote.
fn quoted(line: &[u8], mut at: usize, quote: u8, arg: &mut Vec<u8>, escape: Escape) -> Option<usize> {
    loop {
        match line.get(at)? {
            b'\\' => match escape(line, at, arg) {
                Some(next) => at = next,
                None => {
                    arg.push(b'\\');
                    at += 1;
                }
            },
            byte if *byte == quote => {
                let next = at + 1;
                return match line.get(next) {
                    None => Some(next),
                    Some(byte) if is_space(*byte) => Some(next),
                    Some(_) => None,
                };
            }
            byte => {
                arg.push(*byte);
                at += 1;
            }
        }
    }
}

/// A backslash escape inside double quotes at `at`; the index after it.
fn double_escape(line: &[u8], at: usize, arg: &mut Vec<u8>) -> Option<usize> {
    let code = *line.get(at + 1)?;
    if code == b'x' {
        let high = line.get(at + 2).and_then(|digit| (*digit as char).to_digit(16));
        let low = line.get(at + 3).and_then(|digit| (*digit as char).to_digit(16));
        if let (Some(high), Some(low)) = (high, low) {
            arg.push((high * 16 + low) as u8);
            return Some(at + 4);
        }
    }
    arg.push(match code {
        b'n' => b'\n',
        b'r' => b'\r',
        b't' => b'\t',
        b'b' => 0x08,
        b'a' => 0x07,
        other => other,
    });
    Some(at + 2)
}

/// Inside single quotes only `\'` is an escape.
fn single_escape(line: &[u8], at: usize, arg: &mut Vec<u8>) -> Option<usize> {
    (line.get(at + 1) == Some(&b'\'')).then(|| {
        arg.push(b'\'');
        at + 2
    })
}

fn is_space(byte: u8) -> bool {
    matches!(byte, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

#[cfg(test)]
mod tests;
