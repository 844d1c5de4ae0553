//! A listener for `axum::serve` that bounds open connections and closes idle ones.
//!
//! axum's own TCP listener accepts without limit and keeps a silent
//! connection forever, so a slow or stuck client could hold sockets and
//! memory. Here each connection holds a permit while open; past the limit a
//! client gets a 503 and the connection is closed. A connection with no bytes
//! moving in either direction for the idle timeout fails its next read or
//! write, which makes hyper drop it.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

use super::HttpLimits;
use crate::metrics::{Metrics, Protocol};

const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(1);
const REFUSAL_BODY: &str =
    r#"{"error":{"code":"overloaded","message":"too many connections to this node; retry later"}}"#;

pub(super) struct Limited {
    inner: TcpListener,
    permits: Arc<Semaphore>,
    idle_timeout: Duration,
    metrics: Arc<Metrics>,
}

impl Limited {
    pub(super) fn new(inner: TcpListener, limits: &HttpLimits, metrics: Arc<Metrics>) -> Limited {
        let permits = Arc::new(Semaphore::new(limits.connections_max as usize));
        Limited { inner, permits, idle_timeout: limits.idle_timeout, metrics }
    }
}

impl axum::serve::Listener for Limited {
    type Io = IdleStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (IdleStream, SocketAddr) {
        loop {
            let (stream, peer) = match self.inner.accept().await {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "HTTP accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            };
            let Ok(permit) = self.permits.clone().try_acquire_owned() else {
                self.metrics.connection_refused(Protocol::Http);
                tokio::spawn(refuse(stream));
                continue;
            };
            let _ = stream.set_nodelay(true);
            self.metrics.connection_opened(Protocol::Http);
            let deadline = Box::pin(tokio::time::sleep(self.idle_timeout));
            let io = IdleStream {
                stream,
                idle_timeout: self.idle_timeout,
                deadline,
                _permit: permit,
                metrics: self.metrics.clone(),
            };
            return (io, peer);
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// Answers a connection over the limit without reading its request.
async fn refuse(mut stream: TcpStream) {
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nconnection: close\r\n\
         retry-after: 1\r\ncontent-length: {}\r\n\r\n{REFUSAL_BODY}",
        REFUSAL_BODY.len()
    );
    let answer = async {
        stream.write_all(response.as_bytes()).await?;
        stream.shutdown().await?;
        // Closing with the request unread would reset the connection and
        // could discard the answer before the client reads it.
        let mut sink = [0u8; 4096];
        while stream.read(&mut sink).await? > 0 {}
        io::Result::Ok(())
    };
    let _ = tokio::time::timeout(REFUSAL_TIMEOUT, answer).await;
}

/// A client connection that fails once idle too long, and gives back its
/// permit when dropped.
pub(super) struct IdleStream {
    stream: TcpStream,
    idle_timeout: Duration,
    deadline: Pin<Box<Sleep>>,
    _permit: OwnedSemaphorePermit,
    metrics: Arc<Metrics>,
}

impl IdleStream {
    fn touch(&mut self) {
        self.deadline.as_mut().reset(Instant::now() + self.idle_timeout);
    }

    /// Turns a pending operation into an error once the deadline passed.
    fn expire<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        match self.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "connection idle"))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Drop for IdleStream {
    fn drop(&mut self) {
        self.metrics.connection_closed(Protocol::Http);
    }
}

impl AsyncRead for IdleStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.stream).poll_read(cx, buf) {
            Poll::Ready(result) => {
                if buf.filled().len() > before {
                    this.touch();
                }
                Poll::Ready(result)
            }
            Poll::Pending => this.expire(cx),
        }
    }
}

impl AsyncWrite for IdleStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.stream).poll_write(cx, buf) {
            Poll::Ready(result) => {
                if matches!(result, Ok(written) if written > 0) {
                    this.touch();
                }
                Poll::Ready(result)
            }
            Poll::Pending => this.expire(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.stream).poll_write_vectored(cx, bufs) {
            Poll::Ready(result) => {
                if matches!(result, Ok(written) if written > 0) {
                    this.touch();
                }
                Poll::Ready(result)
            }
            Poll::Pending => this.expire(cx),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}
