//! Where a node listens: `host:port`, as typed on the command line.
//!
//! Accepts what people paste: `127.0.0.1:7420`, `localhost`, `[::1]:7420`,
//! `::1`, and `http://host:port/`. A missing port is the protocol's default.
//! `https://` is refused with a reason rather than silently spoken to in clear.

use std::fmt;
use std::net::Ipv6Addr;

use thiserror::Error;

/// The HTTP port `keel node` listens on unless told otherwise.
pub const HTTP_PORT_DEFAULT: u16 = 7420;
/// The Redis-protocol port `keel node` listens on unless told otherwise.
pub const RESP_PORT_DEFAULT: u16 = 7421;
/// `--server` when neither the flag nor `KEEL_SERVER` is given.
pub const HTTP_SERVER_DEFAULT: &str = "127.0.0.1:7420";
/// The Redis-protocol address `keel bench --protocol redis` uses by default.
pub const RESP_SERVER_DEFAULT: &str = "127.0.0.1:7421";

/// A node's address: a host name or IP, and a port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerAddr {
    host: String,
    port: u16,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum AddrError {
    #[error("the server address is empty; give host:port, e.g. 127.0.0.1:7420")]
    Empty,
    #[error("{0:?}: keel nodes do not speak TLS yet; use http:// or a bare host:port")]
    Tls(String),
    #[error("{text:?}: the port must be a number from 1 to 65535")]
    BadPort { text: String },
    #[error("{0:?}: expected host:port, e.g. 127.0.0.1:7420 or [::1]:7420")]
    Malformed(String),
}

impl ServerAddr {
    pub fn new(host: impl Into<String>, port: u16) -> ServerAddr {
        ServerAddr { host: host.into(), port }
    }

    /// Parses `text`, using `port_default` when it names no port.
    pub fn parse(text: &str, port_default: u16) -> Result<ServerAddr, AddrError> {
        let trimmed = text.trim();
        if trimmed.starts_with("https://") {
            return Err(AddrError::Tls(text.to_owned()));
        }
        let bare = trimmed.strip_prefix("http://").unwrap_or(trimmed);
        let bare = bare.strip_suffix('/').unwrap_or(bare);
        if bare.is_empty() {
            return Err(AddrError::Empty);
        }
        if bare.contains('/') || bare.contains(char::is_whitespace) {
            return Err(AddrError::Malformed(text.to_owned()));
        }
        let (host, port) = split_host_port(bare).ok_or_else(|| AddrError::Malformed(text.to_owned()))?;
        if host.is_empty() {
            return Err(AddrError::Malformed(text.to_owned()));
        }
        let port = match port {
            None => port_default,
            Some(digits) => match digits.parse::<u16>() {
                Ok(port) if port > 0 => port,
                _ => return Err(AddrError::BadPort { text: text.to_owned() }),
            },
        };
        Ok(ServerAddr { host: host.to_owned(), port })
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn port(&self) -> u16 {
        self.port
    }
}

/// `[v6]:port`, `[v6]`, a bare IPv6 address, `host:port` or `host`.
fn split_host_port(text: &str) -> Option<(&str, Option<&str>)> {
    if let Some(rest) = text.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        return match after {
            "" => Some((host, None)),
            _ => Some((host, Some(after.strip_prefix(':')?))),
        };
    }
    if text.parse::<Ipv6Addr>().is_ok() {
        return Some((text, None));
    }
    match text.split_once(':') {
        Some((_, port)) if port.contains(':') => None,
        Some((host, port)) => Some((host, Some(port))),
        None => Some((text, None)),
    }
}

impl fmt::Display for ServerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// For clap: an HTTP address, default port 7420.
pub fn parse_http(text: &str) -> Result<ServerAddr, AddrError> {
    ServerAddr::parse(text, HTTP_PORT_DEFAULT)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<String, AddrError> {
        ServerAddr::parse(text, HTTP_PORT_DEFAULT).map(|addr| addr.to_string())
    }

    #[test]
    fn accepts_what_people_paste() {
        assert_eq!(parse("127.0.0.1:7000"), Ok("127.0.0.1:7000".into()));
        assert_eq!(parse("localhost"), Ok("localhost:7420".into()));
        assert_eq!(parse("http://node-3:8080/"), Ok("node-3:8080".into()));
        assert_eq!(parse("[::1]:9000"), Ok("[::1]:9000".into()));
        assert_eq!(parse("[::1]"), Ok("[::1]:7420".into()));
        assert_eq!(parse("::1"), Ok("[::1]:7420".into()));
        assert_eq!(parse(" 10.0.0.1:1 "), Ok("10.0.0.1:1".into()));
    }

    #[test]
    fn refuses_with_a_reason() {
        assert_eq!(parse(""), Err(AddrError::Empty));
        assert_eq!(parse("http://"), Err(AddrError::Empty));
        assert!(matches!(parse("https://a:1"), Err(AddrError::Tls(_))));
        assert!(matches!(parse("a:0"), Err(AddrError::BadPort { .. })));
        assert!(matches!(parse("a:70000"), Err(AddrError::BadPort { .. })));
        assert!(matches!(parse("a:port"), Err(AddrError::BadPort { .. })));
        assert!(matches!(parse("a:1:2"), Err(AddrError::Malformed(_))));
        assert!(matches!(parse(":7420"), Err(AddrError::Malformed(_))));
        assert!(matches!(parse("a:1/v1"), Err(AddrError::Malformed(_))));
        assert!(matches!(parse("[::1"), Err(AddrError::Malformed(_))));
    }
}
