//! Replies in RESP2 and RESP3.
//!
//! Commands build a [`Value`] once; the connection's protocol version decides
//! the bytes. RESP3-only types degrade the way Redis degrades them for RESP2
//! clients: maps and sets become flat arrays, booleans integers, doubles,
//! big numbers and verbatim strings bulk strings, null the null bulk string.

use std::io::Write as _;

/// The protocol a connection speaks: RESP2 until the client sends `HELLO 3`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Version {
    #[default]
    Resp2,
    Resp3,
}

impl Version {
    pub fn number(self) -> i64 {
        match self {
            Version::Resp2 => 2,
            Version::Resp3 => 3,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// A short status line such as `OK`.
    Simple(String),
    /// An error line starting with its code, such as `ERR syntax error`.
    Error(String),
    Integer(i64),
    Bulk(Vec<u8>),
    Null,
    Array(Vec<Value>),
    Map(Vec<(Value, Value)>),
    Set(Vec<Value>),
    Double(f64),
    Boolean(bool),
    /// Text meant for people, with its three-letter format (`txt` or `mkd`).
    Verbatim {
        format: [u8; 3],
        text: Vec<u8>,
    },
    BigNumber(String),
}

impl Value {
    pub fn ok() -> Value {
        Value::Simple("OK".into())
    }

    /// An error whose text starts with its code, e.g. `Value::error("ERR syntax error")`.
    pub fn error(text: impl Into<String>) -> Value {
        Value::Error(text.into())
    }

    pub fn bulk(bytes: impl Into<Vec<u8>>) -> Value {
        Value::Bulk(bytes.into())
    }

    pub fn text(text: impl Into<Vec<u8>>) -> Value {
        Value::Verbatim { format: *b"txt", text: text.into() }
    }

    pub fn is_error(&self) -> bool {
        matches!(self, Value::Error(_))
    }

    /// Appends the encoding of this value for `version` to `out`.
    pub fn encode(&self, version: Version, out: &mut Vec<u8>) {
        match self {
            Value::Simple(text) => line(out, b'+', text.as_bytes()),
            Value::Error(text) => line(out, b'-', text.as_bytes()),
            Value::Integer(number) => header(out, b':', *number),
            Value::Bulk(bytes) => bulk(out, b'$', bytes),
            Value::Null => match version {
                Version::Resp2 => out.extend_from_slice(b"$-1\r\n"),
                Version::Resp3 => out.extend_from_slice(b"_\r\n"),
            },
            Value::Array(items) => sequence(out, b'*', items, version),
            Value::Set(items) => {
                let marker = if version == Version::Resp3 { b'~' } else { b'*' };
                sequence(out, marker, items, version);
            }
            Value::Map(pairs) => map(out, pairs, version),
            Value::Double(number) => {
                let text = double(*number);
                match version {
                    Version::Resp2 => bulk(out, b'$', text.as_bytes()),
                    Version::Resp3 => line(out, b',', text.as_bytes()),
                }
            }
            Value::Boolean(truth) => match version {
                Version::Resp2 => header(out, b':', i64::from(*truth)),
                Version::Resp3 => out.extend_from_slice(if *truth { b"#t\r\n" } else { b"#f\r\n" }),
            },
            Value::Verbatim { format, text } => match version {
                Version::Resp2 => bulk(out, b'$', text),
                Version::Resp3 => {
                    header(out, b'=', text.len() as i64 + 4);
                    out.extend_from_slice(format);
                    out.push(b':');
                    out.extend_from_slice(text);
                    out.extend_from_slice(b"\r\n");
                }
            },
            Value::BigNumber(digits) => match version {
                Version::Resp2 => bulk(out, b'$', digits.as_bytes()),
                Version::Resp3 => line(out, b'(', digits.as_bytes()),
            },
        }
    }

    /// The encoding as a new buffer; convenient in tests.
    pub fn to_bytes(&self, version: Version) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode(version, &mut out);
        out
    }
}

/// A one-line reply. CR and LF would end the line early and let a message
/// smuggle a second reply in, so they become spaces, as Redis does.
fn line(out: &mut Vec<u8>, marker: u8, text: &[u8]) {
    out.push(marker);
    out.extend(text.iter().map(|&byte| if byte == b'\r' || byte == b'\n' { b' ' } else { byte }));
    out.extend_from_slice(b"\r\n");
}

fn header(out: &mut Vec<u8>, marker: u8, number: i64) {
    out.push(marker);
    // Writing to a Vec cannot fail.
    let _ = write!(out, "{number}\r\n");
}

fn bulk(out: &mut Vec<u8>, marker: u8, bytes: &[u8]) {
    header(out, marker, bytes.len() as i64);
    out.extend_from_slice(bytes);
    out.extend_from_slice(b"\r\n");
}

fn sequence(out: &mut Vec<u8>, marker: u8, items: &[Value], version: Version) {
    header(out, marker, items.len() as i64);
    for item in items {
        item.encode(version, out);
    }
}

fn map(out: &mut Vec<u8>, pairs: &[(Value, Value)], version: Version) {
    match version {
        Version::Resp2 => header(out, b'*', pairs.len() as i64 * 2),
        Version::Resp3 => header(out, b'%', pairs.len() as i64),
    }
    for (key, value) in pairs {
        key.encode(version, out);
        value.encode(version, out);
    }
}

/// Doubles as Redis writes them: `inf`, `-inf`, `nan`, or the shortest
/// decimal that reads back as the same number.
fn double(number: f64) -> String {
    if number.is_nan() {
        "nan".into()
    } else if number.is_infinite() {
        if number > 0.0 { "inf".into() } else { "-inf".into() }
    } else {
        format!("{number}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn both(value: Value) -> (String, String) {
        let text = |version| String::from_utf8_lossy(&value.to_bytes(version)).into_owned();
        (text(Version::Resp2), text(Version::Resp3))
    }

    #[test]
    fn scalars() {
        assert_eq!(both(Value::ok()), ("+OK\r\n".into(), "+OK\r\n".into()));
        assert_eq!(both(Value::error("ERR bad\r\nthing")).0, "-ERR bad  thing\r\n");
        assert_eq!(both(Value::Integer(-42)).0, ":-42\r\n");
        assert_eq!(both(Value::bulk("hi")).0, "$2\r\nhi\r\n");
        assert_eq!(both(Value::bulk("")).0, "$0\r\n\r\n");
        assert_eq!(both(Value::Null), ("$-1\r\n".into(), "_\r\n".into()));
    }

    #[test]
    fn resp3_types_degrade_for_resp2() {
        let map = Value::Map(vec![(Value::bulk("a"), Value::Integer(1))]);
        assert_eq!(both(map), ("*2\r\n$1\r\na\r\n:1\r\n".into(), "%1\r\n$1\r\na\r\n:1\r\n".into()));
        let set = Value::Set(vec![Value::Simple("x".into())]);
        assert_eq!(both(set), ("*1\r\n+x\r\n".into(), "~1\r\n+x\r\n".into()));
        assert_eq!(both(Value::Double(1.5)), ("$3\r\n1.5\r\n".into(), ",1.5\r\n".into()));
        assert_eq!(both(Value::Double(f64::NEG_INFINITY)).1, ",-inf\r\n");
        assert_eq!(both(Value::Double(f64::NAN)).1, ",nan\r\n");
        assert_eq!(both(Value::Boolean(true)), (":1\r\n".into(), "#t\r\n".into()));
        assert_eq!(both(Value::Boolean(false)), (":0\r\n".into(), "#f\r\n".into()));
        assert_eq!(both(Value::text("a\r\nb")), ("$4\r\na\r\nb\r\n".into(), "=8\r\ntxt:a\r\nb\r\n".into()));
        assert_eq!(both(Value::BigNumber("123".into())), ("$3\r\n123\r\n".into(), "(123\r\n".into()));
    }

    #[test]
    fn nested_arrays() {
        let value = Value::Array(vec![Value::bulk("ctx"), Value::Null, Value::Array(vec![])]);
        assert_eq!(
            both(value),
            ("*3\r\n$3\r\nctx\r\n$-1\r\n*0\r\n".into(), "*3\r\n$3\r\nctx\r\n_\r\n*0\r\n".into())
        );
    }
}
