//! The RESP server: one task per connection, commands executed in the order
//! they arrive, replies written in that order.
//!
//! A connection reads what the socket has, runs every complete command in
//! the buffer (a pipeline), and writes all their replies at once, so a
//! pipelined client pays one write per read. Commands of one connection run
//! one after another: Redis clients rely on a pipelined `SET` being visible
//! to the `GET` behind it. Concurrency comes from many connections and from
//! multi-key commands, which fan out.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::command::{Shared, execute};
use super::{Parser, RespLimits, Value};
use crate::metrics::Protocol;
use crate::service::{Handle, Introspect};

/// Replies are flushed once this many bytes are pending, even mid-pipeline.
const PENDING_REPLY_BYTES_MAX: usize = 64 * 1024;
/// Size of each socket read, and what an idle connection keeps allocated.
const READ_BYTES: usize = 16 * 1024;
/// How long a refused client gets to read why.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(1);
/// The idle timer's period when idle connections are kept forever (it never fires then).
const NO_IDLE_TIMEOUT: Duration = Duration::from_secs(86_400 * 365);
/// Pause after a failed accept (out of file descriptors, say) before retrying.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Serves Redis clients on `listener` until `shutdown` is cancelled, then
/// stops accepting, lets every connection finish the commands it has
/// received and send their replies, and returns when all have closed.
pub async fn serve_resp(
    listener: TcpListener,
    handle: Handle,
    introspect: Arc<dyn Introspect>,
    limits: RespLimits,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let port = listener.local_addr()?.port();
    let permits = Arc::new(Semaphore::new(limits.connections_max as usize));
    let shared = Arc::new(Shared::new(handle, introspect, limits, port));
    let metrics = shared.handle.metrics().clone();
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => match permits.clone().try_acquire_owned() {
                    Ok(permit) => {
                        metrics.connection_opened(Protocol::Resp);
                        connections.spawn(connection(stream, peer, shared.clone(), shutdown.clone(), permit));
                    }
                    Err(_) => {
                        metrics.connection_refused(Protocol::Resp);
                        tokio::spawn(refuse(stream));
                    }
                },
                Err(error) => {
                    tracing::warn!(%error, "RESP accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
        }
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
    Ok(())
}

/// Redis answers a client over `maxclients` with this line and closes.
async fn refuse(mut stream: TcpStream) {
    let line = b"-ERR max number of clients reached\r\n";
    let _ = tokio::time::timeout(REFUSAL_TIMEOUT, stream.write_all(line)).await;
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
    permit: OwnedSemaphorePermit,
) {
    let _ = stream.set_nodelay(true);
    let local = stream.local_addr().ok();
    let mut session = shared.session(Some(peer), local);
    let result =
        Connection { stream, shared: &shared, buffer: Vec::with_capacity(READ_BYTES), out: Vec::new() }
            .run(&mut session, &shutdown)
            .await;
    if let Err(error) = result {
        tracing::debug!(%peer, %error, "RESP connection ended with an error");
    }
    shared.handle.metrics().connection_closed(Protocol::Resp);
    drop(permit);
}

struct Connection<'a> {
    stream: TcpStream,
    shared: &'a Shared,
    /// Received bytes not yet consumed by a complete command.
    buffer: Vec<u8>,
    /// Encoded replies not yet written.
    out: Vec<u8>,
}

/// Whether a connection goes on after the commands in its buffer.
enum Flow {
    Continue,
    Close,
}

impl Connection<'_> {
    async fn run(
        mut self,
        session: &mut super::Session,
        shutdown: &CancellationToken,
    ) -> std::io::Result<()> {
        let mut parser = Parser::new(self.shared.limits.clone());
        let idle_timeout = self.shared.limits.idle_timeout;
        // One timer for the connection's life, moved only when it fires:
        // arming a timer for every read costs as much as a whole command.
        let idle = tokio::time::sleep(idle_timeout.unwrap_or(NO_IDLE_TIMEOUT));
        // Made once: each new waiter on the token takes its lock twice.
        let cancelled = shutdown.cancelled();
        tokio::pin!(idle, cancelled);
        loop {
            let flow = self.execute_buffered(&mut parser, session).await;
            self.flush().await?;
            if matches!(flow, Flow::Close) || shutdown.is_cancelled() {
                return Ok(());
            }
            if self.buffer.is_empty() && self.buffer.capacity() > 4 * READ_BYTES {
                // Give back the memory a large request needed.
                self.buffer = Vec::with_capacity(READ_BYTES);
            }
            self.buffer.reserve(READ_BYTES);
            let waiting_since = tokio::time::Instant::now();
            loop {
                tokio::select! {
                    biased;
                    () = &mut cancelled => return Ok(()),
                    result = self.stream.read_buf(&mut self.buffer) => match result {
                        Ok(0) => return Ok(()),
                        Ok(_) => break,
                        Err(error) => return Err(error),
                    },
                    () = &mut idle, if idle_timeout.is_some() => {
                        let deadline = waiting_since + idle_timeout.unwrap_or_default();
                        if deadline <= tokio::time::Instant::now() {
                            return Ok(());
                        }
                        idle.as_mut().reset(deadline);
                    }
                }
            }
        }
    }

    /// Runs every complete command in the buffer and encodes the replies.
    async fn execute_buffered(&mut self, parser: &mut Parser, session: &mut super::Session) -> Flow {
        let mut consumed = 0;
        let flow = loop {
            match parser.next(&self.buffer[consumed..]) {
                Ok(Some((command, used))) => {
                    consumed += used;
                    if command.is_empty() {
                        continue;
                    }
                    let answer = execute(self.shared, session, command).await;
                    answer.value.encode(session.version, &mut self.out);
                    if answer.close {
                        break Flow::Close;
                    }
                    if self.out.len() >= PENDING_REPLY_BYTES_MAX && self.flush().await.is_err() {
                        break Flow::Close;
                    }
                }
                Ok(None) => break Flow::Continue,
                Err(error) => {
                    // The stream cannot be resynchronised: answer and close, as Redis does.
                    Value::error(format!("ERR {error}")).encode(session.version, &mut self.out);
                    break Flow::Close;
                }
            }
        };
        self.buffer.drain(..consumed);
        flow
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        // The socket usually takes all the replies at once; only a client
        // that does not read needs the timer.
        let written = match self.stream.try_write(&self.out) {
            Ok(written) => written,
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => 0,
            Err(error) => return Err(error),
        };
        if written < self.out.len() {
            let write = self.stream.write_all(&self.out[written..]);
            match tokio::time::timeout(self.shared.limits.write_timeout, write).await {
                Ok(result) => result?,
                Err(_) => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "client did not read its replies",
                    ));
                }
            }
        }
        self.out.clear();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use tokio::task::JoinHandle;

    use super::*;
    use crate::service::testing::{MemoryBackend, StaticIntrospect};

    struct Server {
        address: SocketAddr,
        shutdown: CancellationToken,
        task: JoinHandle<std::io::Result<()>>,
    }

    async fn start(limits: RespLimits) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let backend = MemoryBackend::new();
        let handle = backend.spawn(64);
        let introspect = StaticIntrospect::single(Some(backend));
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(serve_resp(listener, handle, introspect, limits, shutdown.clone()));
        Server { address, shutdown, task }
    }

    /// Sends `request` and reads until `expected` bytes arrived or the server closed.
    async fn exchange(stream: &mut TcpStream, request: &[u8], expected: usize) -> Vec<u8> {
        stream.write_all(request).await.expect("write");
        let mut reply = Vec::new();
        while reply.len() < expected {
            let mut chunk = [0u8; 4096];
            let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut chunk)).await;
            match read.expect("reply in time").expect("read") {
                0 => break,
                count => reply.extend_from_slice(&chunk[..count]),
            }
        }
        reply
    }

    async fn closed(stream: &mut TcpStream) -> bool {
        let mut byte = [0u8; 1];
        matches!(
            tokio::time::timeout(Duration::from_secs(5), stream.read(&mut byte)).await,
            Ok(Ok(0)) | Ok(Err(_))
        )
    }

    #[tokio::test]
    async fn pipelined_commands_are_answered_in_order() {
        let server = start(RespLimits::default()).await;
        let mut stream = TcpStream::connect(server.address).await.expect("connect");
        let request = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\nGET k\r\n*0\r\nPING\r\n*2\r\n$4\r\nECHO\r\n$2\r\nhi\r\n";
        let expected = b"+OK\r\n$1\r\nv\r\n+PONG\r\n$2\r\nhi\r\n";
        assert_eq!(exchange(&mut stream, request, expected.len()).await, expected);
        let hello = exchange(&mut stream, b"HELLO 3\r\nGET missing\r\n", 1).await;
        assert!(hello.starts_with(b"%7\r\n"), "{}", String::from_utf8_lossy(&hello));
        let quit = exchange(&mut stream, b"QUIT\r\nPING\r\n", 5).await;
        assert!(quit.ends_with(b"_\r\n+OK\r\n") || quit == b"+OK\r\n", "{}", String::from_utf8_lossy(&quit));
        assert!(closed(&mut stream).await);
        server.shutdown.cancel();
        server.task.await.expect("join").expect("serve");
    }

    #[tokio::test]
    async fn a_protocol_error_is_answered_and_closes() {
        let server = start(RespLimits::default()).await;
        let mut stream = TcpStream::connect(server.address).await.expect("connect");
        let expected = b"+PONG\r\n-ERR Protocol error: invalid multibulk length\r\n";
        assert_eq!(exchange(&mut stream, b"PING\r\n*x\r\nPING\r\n", expected.len()).await, expected);
        assert!(closed(&mut stream).await);
        server.shutdown.cancel();
    }

    #[tokio::test]
    async fn clients_over_the_limit_are_refused() {
        let server = start(RespLimits { connections_max: 1, ..RespLimits::default() }).await;
        let mut first = TcpStream::connect(server.address).await.expect("connect");
        assert_eq!(exchange(&mut first, b"PING\r\n", 7).await, b"+PONG\r\n");
        let mut second = TcpStream::connect(server.address).await.expect("connect");
        let refusal = b"-ERR max number of clients reached\r\n";
        assert_eq!(exchange(&mut second, b"", refusal.len()).await, refusal);
        drop(first);
        // The slot frees once the first connection's task has noticed the close.
        let mut answered = false;
        for _ in 0..50 {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let mut third = TcpStream::connect(server.address).await.expect("connect");
            if exchange(&mut third, b"PING\r\n", 7).await == b"+PONG\r\n" {
                answered = true;
                break;
            }
        }
        assert!(answered);
        server.shutdown.cancel();
    }

    #[tokio::test]
    async fn idle_connections_are_closed() {
        let limits = RespLimits { idle_timeout: Some(Duration::from_millis(50)), ..RespLimits::default() };
        let server = start(limits).await;
        let mut stream = TcpStream::connect(server.address).await.expect("connect");
        assert!(closed(&mut stream).await);
        server.shutdown.cancel();
    }

    #[tokio::test]
    async fn a_connection_in_use_outlives_its_idle_timeout() {
        let limits = RespLimits { idle_timeout: Some(Duration::from_millis(100)), ..RespLimits::default() };
        let server = start(limits).await;
        let mut stream = TcpStream::connect(server.address).await.expect("connect");
        // Six times the idle timeout in all, never idle for more than half of it.
        for _ in 0..10 {
            tokio::time::sleep(Duration::from_millis(60)).await;
            assert_eq!(exchange(&mut stream, b"PING\r\n", 7).await, b"+PONG\r\n");
        }
        let idle_since = std::time::Instant::now();
        assert!(closed(&mut stream).await);
        assert!(
            idle_since.elapsed() >= Duration::from_millis(90),
            "closed early: {:?}",
            idle_since.elapsed()
        );
        server.shutdown.cancel();
    }

    #[tokio::test]
    async fn shutdown_stops_accepting_and_closes_idle_connections() {
        let server = start(RespLimits::default()).await;
        let mut stream = TcpStream::connect(server.address).await.expect("connect");
        assert_eq!(exchange(&mut stream, b"PING\r\n", 7).await, b"+PONG\r\n");
        server.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(5), server.task)
            .await
            .expect("stops")
            .expect("join")
            .expect("ok");
        assert!(closed(&mut stream).await);
        assert!(TcpStream::connect(server.address).await.is_err());
    }

    #[tokio::test]
    async fn large_values_arrive_in_many_reads() {
        let server = start(RespLimits::default()).await;
        let mut stream = TcpStream::connect(server.address).await.expect("connect");
        let value = vec![b'x'; 3 * 1024 * 1024];
        let mut request = format!("*3\r\n$3\r\nSET\r\n$3\r\nbig\r\n${}\r\n", value.len()).into_bytes();
        request.extend_from_slice(&value);
        request.extend_from_slice(b"\r\nGET big\r\n");
        // +OK, then the bulk header, the value and its CRLF.
        let expected = 5 + "$3145728\r\n".len() + value.len() + 2;
        let reply = exchange(&mut stream, &request, expected).await;
        assert!(reply.starts_with(b"+OK\r\n$3145728\r\nxxx"));
        assert_eq!(reply.len(), expected);
        server.shutdown.cancel();
    }
}
