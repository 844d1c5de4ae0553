//! The node's HTTP API (docs/API.md) from the client's side.
//!
//! One [`Connection`] is one keep-alive TCP connection carrying requests one
//! after another, over hyper's connection API. There is no pool, no redirect,
//! no proxy and no TLS on purpose: a client command talks to one node, the
//! shell holds one connection and reopens it when the node closed it, and
//! each bench worker holds its own.

use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::client::conn::http1::{self, SendRequest};
use hyper::{Method, Request, StatusCode, header};
use hyper_util::rt::TokioIo;
use keel_core::client::Consistency;
use serde::Deserialize;
use thiserror::Error;
use tokio::net::TcpStream;

use super::addr::ServerAddr;
use super::api::{ErrorBody, Health, RingView, SiblingsBody, Status};

/// The header that carries a causal context, base64url without padding.
pub const CONTEXT_HEADER: &str = "x-keel-context";
/// How long opening a connection may take before the node counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longer than the node's own request timeout (30 s), so a slow request ends
/// with the node's answer, which says whether a write may still happen.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(40);
/// Largest body read from a node: a few siblings of the largest value (16 MiB
/// by default), each a third larger in base64.
const BODY_BYTES_MAX: usize = 256 * 1024 * 1024;
/// How much of an unexpected body an error message quotes.
const QUOTE_BYTES_MAX: usize = 200;

/// Why a call to a node did not give an answer the command can use.
#[derive(Debug, Error)]
pub enum CallError {
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: ServerAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot connect to {addr}: no answer within {} s", CONNECT_TIMEOUT.as_secs())]
    ConnectTimeout { addr: ServerAddr },
    #[error("the connection to {addr} failed: {source}")]
    Transport {
        addr: ServerAddr,
        #[source]
        source: hyper::Error,
    },
    #[error("{addr} did not answer within {} s; a write may still take effect", ANSWER_TIMEOUT.as_secs())]
    AnswerTimeout { addr: ServerAddr },
    #[error("the context {0:?} is not base64url; pass a context exactly as keel printed it")]
    BadContext(String),
    /// The node answered with one of its JSON errors.
    #[error("{message} ({status} {code})")]
    Api { status: u16, code: String, message: String },
    #[error("{addr} answered in a way keel does not expect ({what}); is it a keel node's HTTP port?")]
    BadAnswer { addr: ServerAddr, what: String },
}

impl CallError {
    /// The exit code of a command that ends with this error: 1 when a node
    /// understood the request and said the operation failed; 2 when the
    /// request never got that far (no connection, a malformed request, or
    /// not a keel node at the other end).
    pub fn exit_code(&self) -> u8 {
        match self {
            CallError::Api { status: 400, .. } => 2,
            CallError::Api { code, .. } if code == "no_route" || code == "method_not_allowed" => 2,
            CallError::Api { .. } | CallError::AnswerTimeout { .. } => 1,
            _ => 2,
        }
    }

    /// True when the connection is unusable and a later call should reopen it.
    pub fn broke_connection(&self) -> bool {
        matches!(
            self,
            CallError::Connect { .. }
                | CallError::ConnectTimeout { .. }
                | CallError::Transport { .. }
                | CallError::AnswerTimeout { .. }
                | CallError::BadAnswer { .. }
        )
    }

    /// A short stable label, for counting errors by kind.
    pub fn kind(&self) -> String {
        match self {
            CallError::Connect { source, .. } => format!("connect: {}", source.kind()),
            CallError::ConnectTimeout { .. } => "connect: timed out".into(),
            CallError::Transport { .. } => "connection failed".into(),
            CallError::AnswerTimeout { .. } => "no answer in time".into(),
            CallError::BadContext(_) => "bad context".into(),
            CallError::Api { status, code, .. } => format!("http {status} {code}"),
            CallError::BadAnswer { .. } => "unexpected answer".into(),
        }
    }
}

/// What a read found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Read {
    /// One value, or several concurrent ones (siblings) in the node's order.
    Found { values: Vec<Vec<u8>>, context: String },
    /// No live value; the context may still cover deletions.
    NotFound { context: String },
}

/// A status, the context header and the body of one answer.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub context: Option<String>,
    pub body: Bytes,
}

/// One keep-alive connection to a node's HTTP port.
#[derive(Debug)]
pub struct Connection {
    addr: ServerAddr,
    sender: SendRequest<Full<Bytes>>,
}

impl Connection {
    pub async fn open(addr: &ServerAddr) -> Result<Connection, CallError> {
        let connect = TcpStream::connect((addr.host(), addr.port()));
        let stream = match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(source)) => return Err(CallError::Connect { addr: addr.clone(), source }),
            Err(_) => return Err(CallError::ConnectTimeout { addr: addr.clone() }),
        };
        // Requests are small and latency-bound; do not hold them back.
        let _ = stream.set_nodelay(true);
        let (sender, connection) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|source| CallError::Transport { addr: addr.clone(), source })?;
        // The connection task moves the bytes; its failures reach the sender.
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(Connection { addr: addr.clone(), sender })
    }

    /// Sends one request and reads the whole answer.
    pub async fn call(
        &mut self,
        method: Method,
        path: &str,
        context: Option<&str>,
        body: Bytes,
    ) -> Result<Answer, CallError> {
        let mut request =
            Request::builder().method(method).uri(path).header(header::HOST, self.addr.to_string());
        if let Some(context) = context {
            if !is_base64url(context) {
                return Err(CallError::BadContext(context.to_owned()));
            }
            request = request.header(CONTEXT_HEADER, context);
        }
        let request = request.body(Full::new(body)).map_err(|error| CallError::BadAnswer {
            addr: self.addr.clone(),
            what: format!("cannot build the request: {error}"),
        })?;
        match tokio::time::timeout(ANSWER_TIMEOUT, self.exchange(request)).await {
            Ok(answer) => answer,
            Err(_) => Err(CallError::AnswerTimeout { addr: self.addr.clone() }),
        }
    }

    async fn exchange(&mut self, request: Request<Full<Bytes>>) -> Result<Answer, CallError> {
        let addr = self.addr.clone();
        let transport = |source| CallError::Transport { addr: addr.clone(), source };
        self.sender.ready().await.map_err(transport)?;
        let response = self.sender.send_request(request).await.map_err(transport)?;
        let status = response.status();
        let context = response
            .headers()
            .get(CONTEXT_HEADER)
            .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned());
        let body = match Limited::new(response.into_body(), BODY_BYTES_MAX).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(error) => match error.downcast::<hyper::Error>() {
                Ok(source) => return Err(CallError::Transport { addr: self.addr.clone(), source: *source }),
                Err(_) => return Err(self.unexpected(format!("a body over {BODY_BYTES_MAX} bytes"))),
            },
        };
        Ok(Answer { status, context, body })
    }

    pub async fn get(&mut self, key: &[u8], consistency: Option<Consistency>) -> Result<Read, CallError> {
        let answer = self.call(Method::GET, &kv_path(key, consistency), None, Bytes::new()).await?;
        let context = answer.context.clone().unwrap_or_default();
        match answer.status {
            StatusCode::OK => Ok(Read::Found { values: vec![answer.body.to_vec()], context }),
            StatusCode::MULTIPLE_CHOICES => {
                let siblings: SiblingsBody = self.json(&answer)?;
                let values = siblings.decode().map_err(|what| self.unexpected(what))?;
                Ok(Read::Found { values, context: siblings.context })
            }
            StatusCode::NOT_FOUND if self.error_code(&answer).as_deref() == Some("not_found") => {
                Ok(Read::NotFound { context })
            }
            _ => Err(self.failure(&answer)),
        }
    }

    /// Stores `value`; returns the context of the new version.
    pub async fn put(
        &mut self,
        key: &[u8],
        value: Bytes,
        context: Option<&str>,
        consistency: Option<Consistency>,
    ) -> Result<String, CallError> {
        let answer = self.call(Method::PUT, &kv_path(key, consistency), context, value).await?;
        self.written(answer)
    }

    /// Writes a tombstone; returns its context (or the read's, when nothing was live).
    pub async fn delete(
        &mut self,
        key: &[u8],
        context: Option<&str>,
        consistency: Option<Consistency>,
    ) -> Result<String, CallError> {
        let answer = self.call(Method::DELETE, &kv_path(key, consistency), context, Bytes::new()).await?;
        self.written(answer)
    }

    pub async fn status(&mut self) -> Result<Status, CallError> {
        self.monitoring("/v1/status").await
    }

    pub async fn health(&mut self) -> Result<Health, CallError> {
        self.monitoring("/health").await
    }

    pub async fn ring(&mut self) -> Result<RingView, CallError> {
        self.monitoring("/v1/ring").await
    }

    async fn monitoring<T: for<'de> Deserialize<'de>>(&mut self, path: &str) -> Result<T, CallError> {
        let answer = self.call(Method::GET, path, None, Bytes::new()).await?;
        match answer.status {
            StatusCode::OK => self.json(&answer),
            _ => Err(self.failure(&answer)),
        }
    }

    fn written(&self, answer: Answer) -> Result<String, CallError> {
        match answer.status {
            StatusCode::NO_CONTENT | StatusCode::OK => Ok(answer.context.unwrap_or_default()),
            _ => Err(self.failure(&answer)),
        }
    }

    fn json<T: for<'de> Deserialize<'de>>(&self, answer: &Answer) -> Result<T, CallError> {
        serde_json::from_slice(&answer.body).map_err(|error| {
            self.unexpected(format!("{} with a body that is not the expected JSON: {error}", answer.status))
        })
    }

    fn error_code(&self, answer: &Answer) -> Option<String> {
        serde_json::from_slice::<ErrorBody>(&answer.body).ok().map(|body| body.error.code)
    }

    /// The node's JSON error, or what came instead of one.
    fn failure(&self, answer: &Answer) -> CallError {
        match serde_json::from_slice::<ErrorBody>(&answer.body) {
            Ok(body) => CallError::Api {
                status: answer.status.as_u16(),
                code: body.error.code,
                message: body.error.message,
            },
            Err(_) => {
                let quoted = &answer.body[..answer.body.len().min(QUOTE_BYTES_MAX)];
                self.unexpected(format!("{} {:?}", answer.status, String::from_utf8_lossy(quoted)))
            }
        }
    }

    fn unexpected(&self, what: String) -> CallError {
        CallError::BadAnswer { addr: self.addr.clone(), what }
    }
}

/// `/v1/kv/{key}`, every byte outside RFC 3986's unreserved set
/// percent-encoded, so any byte string is a key.
pub fn kv_path(key: &[u8], consistency: Option<Consistency>) -> String {
    let mut path = String::with_capacity(7 + key.len() * 3 + 20);
    path.push_str("/v1/kv/");
    for &byte in key {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            path.push(byte as char);
        } else {
            path.push_str(&format!("%{byte:02X}"));
        }
    }
    if let Some(consistency) = consistency {
        path.push_str(&format!("?consistency={consistency}"));
    }
    path
}

/// Contexts are base64url, padding allowed; anything else cannot be one and
/// might not even be a valid header value.
fn is_base64url(text: &str) -> bool {
    text.bytes().all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'='))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_percent_encoded_byte_by_byte() {
        assert_eq!(kv_path(b"user/42", None), "/v1/kv/user%2F42");
        assert_eq!(kv_path(b"a b\x00\xff~", Some(Consistency::All)), "/v1/kv/a%20b%00%FF~?consistency=all");
        assert_eq!(kv_path("é".as_bytes(), Some(Consistency::Replicas(2))), "/v1/kv/%C3%A9?consistency=2");
    }

    #[test]
    fn contexts_must_look_like_base64url() {
        assert!(is_base64url(""));
        assert!(is_base64url("AAAAAAAAAAE"));
        assert!(is_base64url("ab-_=="));
        assert!(!is_base64url("a b"));
        assert!(!is_base64url("ab\ncd"));
        assert!(!is_base64url("ab+/"));
    }

    #[test]
    fn exit_codes_separate_failed_operations_from_usage_and_connection_errors() {
        let api = |status, code: &str| CallError::Api { status, code: code.into(), message: String::new() };
        assert_eq!(api(503, "unavailable").exit_code(), 1);
        assert_eq!(api(413, "value_too_large").exit_code(), 1);
        assert_eq!(api(400, "bad_consistency").exit_code(), 2);
        assert_eq!(api(404, "no_route").exit_code(), 2);
        let addr = ServerAddr::new("127.0.0.1", 1);
        assert_eq!(CallError::ConnectTimeout { addr: addr.clone() }.exit_code(), 2);
        assert_eq!(CallError::AnswerTimeout { addr }.exit_code(), 1);
    }
}
