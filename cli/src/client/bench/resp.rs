//! A minimal Redis-protocol client: one command, then its reply, on one
//! connection (no pipelining), which is what a latency benchmark needs.
//!
//! Replies are parsed in RESP2, which a node speaks until a client sends
//! `HELLO 3`. Every length from the server is checked against a bound before
//! anything is allocated, and a reply that breaks the protocol is an error,
//! never a panic.

use std::time::Duration;

use thiserror::Error;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufStream};
use tokio::net::TcpStream;

use super::super::addr::ServerAddr;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longer than a node's own request timeout (30 s).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(40);
/// Longest status, error or length line accepted.
const LINE_BYTES_MAX: u64 = 64 * 1024;
/// Largest bulk string accepted: a node's bulk limit is 32 MiB.
const BULK_BYTES_MAX: u64 = 64 * 1024 * 1024;
/// Most elements of an array reply (a context and the siblings of a key).
const ARRAY_ITEMS_MAX: u64 = 1024 * 1024;

/// One reply. Arrays hold only scalars: no command bench sends nests them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    Status(String),
    Error(String),
    Integer(i64),
    /// `None` is the null bulk string (a missing key).
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Reply>>),
}

#[derive(Debug, Error)]
pub enum RespError {
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: ServerAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot connect to {addr}: no answer within {} s", CONNECT_TIMEOUT.as_secs())]
    ConnectTimeout { addr: ServerAddr },
    #[error("the connection to {addr} failed: {source}")]
    Io {
        addr: ServerAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("{addr} did not answer within {} s", ANSWER_TIMEOUT.as_secs())]
    AnswerTimeout { addr: ServerAddr },
    #[error("{addr} broke the Redis protocol: {what}")]
    Protocol { addr: ServerAddr, what: String },
}

impl RespError {
    /// A short stable label, for counting errors by kind.
    pub fn kind(&self) -> String {
        match self {
            RespError::Connect { source, .. } => format!("connect: {}", source.kind()),
            RespError::ConnectTimeout { .. } => "connect: timed out".into(),
            RespError::Io { .. } => "connection failed".into(),
            RespError::AnswerTimeout { .. } => "no answer in time".into(),
            RespError::Protocol { .. } => "protocol error".into(),
        }
    }
}

#[derive(Debug)]
pub struct RespConnection {
    addr: ServerAddr,
    stream: BufStream<TcpStream>,
}

impl RespConnection {
    pub async fn open(addr: &ServerAddr) -> Result<RespConnection, RespError> {
        let connect = TcpStream::connect((addr.host(), addr.port()));
        let stream = match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(source)) => return Err(RespError::Connect { addr: addr.clone(), source }),
            Err(_) => return Err(RespError::ConnectTimeout { addr: addr.clone() }),
        };
        let _ = stream.set_nodelay(true);
        Ok(RespConnection { addr: addr.clone(), stream: BufStream::new(stream) })
    }

    /// Sends one command as an array of bulk strings and reads its reply.
    pub async fn command(&mut self, args: &[&[u8]]) -> Result<Reply, RespError> {
        let mut request = Vec::with_capacity(16 + args.iter().map(|arg| arg.len() + 16).sum::<usize>());
        request.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
        for arg in args {
            request.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
            request.extend_from_slice(arg);
            request.extend_from_slice(b"\r\n");
        }
        match tokio::time::timeout(ANSWER_TIMEOUT, self.exchange(&request)).await {
            Ok(reply) => reply,
            Err(_) => Err(RespError::AnswerTimeout { addr: self.addr.clone() }),
        }
    }

    async fn exchange(&mut self, request: &[u8]) -> Result<Reply, RespError> {
        self.stream.write_all(request).await.map_err(|source| self.io(source))?;
        self.stream.flush().await.map_err(|source| self.io(source))?;
        let (kind, line) = self.header().await?;
        if kind != b'*' {
            return self.scalar(kind, line).await;
        }
        let Some(count) = self.length(&line, ARRAY_ITEMS_MAX)? else { return Ok(Reply::Array(None)) };
        let mut items = Vec::with_capacity(count.min(64) as usize);
        for _ in 0..count {
            let (kind, line) = self.header().await?;
            if kind == b'*' {
                return Err(self.protocol("a nested array where none was expected".into()));
            }
            items.push(self.scalar(kind, line).await?);
        }
        Ok(Reply::Array(Some(items)))
    }

    /// The type byte and the rest of the next line.
    async fn header(&mut self) -> Result<(u8, String), RespError> {
        let mut line = Vec::new();
        let read = (&mut self.stream).take(LINE_BYTES_MAX).read_until(b'\n', &mut line).await;
        read.map_err(|source| self.io(source))?;
        if !line.ends_with(b"\r\n") {
            let what = match line.is_empty() {
                true => "the connection closed".to_owned(),
                false => format!("a line without CRLF within {LINE_BYTES_MAX} bytes"),
            };
            return Err(self.protocol(what));
        }
        line.truncate(line.len() - 2);
        let Some((&kind, rest)) = line.split_first() else {
            return Err(self.protocol("an empty line".into()));
        };
        Ok((kind, String::from_utf8_lossy(rest).into_owned()))
    }

    async fn scalar(&mut self, kind: u8, line: String) -> Result<Reply, RespError> {
        match kind {
            b'+' => Ok(Reply::Status(line)),
            b'-' => Ok(Reply::Error(line)),
            b':' => line.parse().map(Reply::Integer).map_err(|_| self.protocol(format!("integer {line:?}"))),
            b'$' => {
                let Some(len) = self.length(&line, BULK_BYTES_MAX)? else { return Ok(Reply::Bulk(None)) };
                let mut value = vec![0; len as usize + 2];
                self.stream.read_exact(&mut value).await.map_err(|source| self.io(source))?;
                if !value.ends_with(b"\r\n") {
                    return Err(self.protocol("a bulk string not followed by CRLF".into()));
                }
                value.truncate(len as usize);
                Ok(Reply::Bulk(Some(value)))
            }
            other => Err(self.protocol(format!("unknown reply type {:?}", other as char))),
        }
    }

    /// A length line: `None` for -1 (null), otherwise at most `max`.
    fn length(&self, line: &str, max: u64) -> Result<Option<u64>, RespError> {
        match line.parse::<i64>() {
            Ok(-1) => Ok(None),
            Ok(len) if (0..=max as i64).contains(&len) => Ok(Some(len as u64)),
            _ => Err(self.protocol(format!("length {line:?} (at most {max} accepted)"))),
        }
    }

    fn io(&self, source: std::io::Error) -> RespError {
        RespError::Io { addr: self.addr.clone(), source }
    }

    fn protocol(&self, what: String) -> RespError {
        RespError::Protocol { addr: self.addr.clone(), what }
    }
}

#[cfg(test)]
mod tests {
    use tokio::net::TcpListener;

    use super::*;

    /// Sends `PING` to a server that answers with `reply`, whatever is asked.
    async fn answer(reply: &'static [u8]) -> Result<Reply, RespError> {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("address").port();
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.expect("accept");
            let mut request = [0; 14];
            let _ = stream.read_exact(&mut request).await;
            let _ = stream.write_all(reply).await;
        });
        let mut connection = RespConnection::open(&ServerAddr::new("127.0.0.1", port)).await?;
        connection.command(&[b"PING"]).await
    }

    #[tokio::test]
    async fn replies_parse() {
        assert_eq!(answer(b"+PONG\r\n").await.ok(), Some(Reply::Status("PONG".into())));
        assert_eq!(answer(b"-ERR no\r\n").await.ok(), Some(Reply::Error("ERR no".into())));
        assert_eq!(answer(b":-7\r\n").await.ok(), Some(Reply::Integer(-7)));
        assert_eq!(answer(b"$-1\r\n").await.ok(), Some(Reply::Bulk(None)));
        assert_eq!(answer(b"$3\r\na\r\n\r\n").await.ok(), Some(Reply::Bulk(Some(b"a\r\n".to_vec()))));
        let array = Reply::Array(Some(vec![Reply::Bulk(Some(b"ctx".to_vec())), Reply::Bulk(None)]));
        assert_eq!(answer(b"*2\r\n$3\r\nctx\r\n$-1\r\n").await.ok(), Some(array));
    }

    #[tokio::test]
    async fn broken_replies_are_errors_not_panics() {
        for reply in [
            &b"$99999999999\r\n"[..],
            b"*2\r\n*1\r\n",
            b"$3\r\nabcde",
            b"?what\r\n",
            b":x\r\n",
            b"+no end",
            b"",
            b"*-2\r\n",
        ] {
            let result = answer(reply).await;
            assert!(
                matches!(result, Err(RespError::Protocol { .. } | RespError::Io { .. })),
                "{reply:?} gave {result:?}"
            );
        }
    }
}
