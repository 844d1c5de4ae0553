//! Splitting a shell line into words, and showing values, the way redis-cli
//! does: quotes group words, `\xHH` in double quotes writes any byte, and
//! values print quoted with anything unprintable escaped.

use std::fmt::Write as _;

/// The words of `line`. Whitespace separates words; `'…'` is literal;
/// `"…"` understands `\"`, `\\`, `\n`, `\r`, `\t` and `\xHH`; outside
/// quotes a backslash keeps the next character as it is.
pub fn split(line: &str) -> Result<Vec<Vec<u8>>, String> {
    let mut words = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            return Ok(words);
        }
        let mut word = Vec::new();
        while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
            match c {
                '\'' => loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => push_char(&mut word, c),
                        None => return Err("a single quote is not closed".into()),
                    }
                },
                '"' => double_quoted(&mut chars, &mut word)?,
                '\\' => match chars.next() {
                    Some(c) => push_char(&mut word, c),
                    None => push_char(&mut word, '\\'),
                },
                c => push_char(&mut word, c),
            }
        }
        words.push(word);
    }
}

fn double_quoted(
    chars: &mut std::iter::Peekable<std::str::Chars<'_>>,
    word: &mut Vec<u8>,
) -> Result<(), String> {
    loop {
        match chars.next() {
            None => return Err("a double quote is not closed".into()),
            Some('"') => return Ok(()),
            Some('\\') => match chars.next() {
                Some('n') => word.push(b'\n'),
                Some('r') => word.push(b'\r'),
                Some('t') => word.push(b'\t'),
                Some('x') => {
                    let digits: String = [chars.next(), chars.next()].into_iter().flatten().collect();
                    let byte = u8::from_str_radix(&digits, 16)
                        .map_err(|_| format!("\\x must be followed by two hex digits, not {digits:?}"))?;
                    word.push(byte);
                }
                Some(c) => push_char(word, c),
                None => return Err("a double quote is not closed".into()),
            },
            Some(c) => push_char(word, c),
        }
    }
}

fn push_char(word: &mut Vec<u8>, c: char) {
    let mut buffer = [0; 4];
    word.extend_from_slice(c.encode_utf8(&mut buffer).as_bytes());
}

/// A value in double quotes: UTF-8 text as text, other bytes as `\xHH`.
pub fn quoted(value: &[u8]) -> String {
    if let Ok(text) = std::str::from_utf8(value) {
        return format!("{text:?}");
    }
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for &byte in value {
        match byte {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            0x20..=0x7e => out.push(byte as char),
            _ => {
                let _ = write!(out, "\\x{byte:02x}");
            }
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(line: &str) -> Vec<String> {
        let words = split(line).expect("splits");
        words.into_iter().map(|word| String::from_utf8_lossy(&word).into_owned()).collect()
    }

    #[test]
    fn quotes_group_and_escape() {
        assert_eq!(words("  put  k   v "), ["put", "k", "v"]);
        assert_eq!(words(r#"put k "hello world""#), ["put", "k", "hello world"]);
        assert_eq!(words(r#"put 'a b'c "d\"e""#), ["put", "a bc", "d\"e"]);
        assert_eq!(words(r"put a\ b"), ["put", "a b"]);
        assert_eq!(words(r#"put k """#), ["put", "k", ""]);
        assert_eq!(split(r#"put k "\x00\xff\n""#).expect("splits")[2], b"\x00\xff\n");
        assert!(words("").is_empty());
    }

    #[test]
    fn unclosed_quotes_and_bad_escapes_are_errors() {
        assert!(split("put k 'v").is_err());
        assert!(split("put k \"v").is_err());
        assert!(split(r#"put k "\xZZ""#).is_err());
        assert!(split(r#"put k "\x1"#).is_err());
    }

    #[test]
    fn values_print_quoted_and_escaped() {
        assert_eq!(quoted(b"hello"), "\"hello\"");
        assert_eq!(quoted("é\n".as_bytes()), "\"é\\n\"");
        assert_eq!(quoted(b"a\xff\"\\"), "\"a\\xff\\\"\\\\\"");
    }
}
