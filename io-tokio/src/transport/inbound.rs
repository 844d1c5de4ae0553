//! Accepting peers' connections and reading their frames.
//!
//! An inbound connection only carries frames from the peer that opened it:
//! after the handshake this node never writes to it. Frames are
//! `keel_core::frame`s holding a postcard [`Message`], except the 8 zero
//! bytes of an empty keepalive frame, which no message can be (a message
//! encodes to at least one byte). A frame that is oversize or fails its
//! checksum closes the connection: its length cannot be trusted, so the
//! stream cannot be resynchronised, and the peer will reconnect. A whole
//! frame whose checksum holds but whose payload is no valid message (it
//! does not decode, or breaks an invariant of what it carries) is dropped
//! and counted, and the connection goes on at the next frame, whose start
//! is known: see docs/TRANSPORT.md for why.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use keel_core::frame::{self, FrameError, HEADER_LEN};
use keel_core::message::Message;
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tokio_util::sync::CancellationToken;

use super::handshake::{self, Identity};
use super::peer::Peer;
use super::stats::Refusal;
use super::{Inbound, Shared, net};

/// A frame with an empty payload: length 0, and the crc32c of nothing, 0.
pub(super) const KEEPALIVE_FRAME: [u8; HEADER_LEN] = [0; HEADER_LEN];
/// Bytes asked of the socket per read, and what an idle connection keeps.
const READ_BYTES: usize = 64 * 1024;
/// Pause after a failed accept (out of file descriptors, say) before retrying.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

#[derive(Debug, Error)]
enum ReadError {
    #[error("read: {0}")]
    Io(#[from] io::Error),
    #[error("no bytes for {0:?}")]
    Idle(Duration),
    #[error("corrupt frame: {0}")]
    Frame(#[from] FrameError),
}

/// Gives back an inbound connection's place under the limit when dropped.
struct Slot(Arc<Shared>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.inbound_open.fetch_sub(1, Ordering::Relaxed);
    }
}

pub(super) async fn accept_loop(
    shared: Arc<Shared>,
    listener: net::Listener,
    inbound: mpsc::Sender<Inbound>,
) {
    loop {
        let accepted = tokio::select! {
            biased;
            () = shared.shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, remote) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "peer accept failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let open = shared.inbound_open.fetch_add(1, Ordering::Relaxed);
        let slot = Slot(shared.clone());
        let limit = shared.inbound_connections_max();
        if open >= limit {
            shared.counters.refused(Refusal::OverLimit);
            tracing::warn!(%remote, limit, "refused a peer connection over the limit");
            continue;
        }
        shared.tasks.spawn(connection(shared.clone(), stream, remote, inbound.clone(), slot));
    }
    tracing::debug!(node = %shared.config.node, "peer listener closed");
}

async fn connection<S>(
    shared: Arc<Shared>,
    mut stream: S,
    remote: SocketAddr,
    inbound: mpsc::Sender<Inbound>,
    _slot: Slot,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let config = &shared.config;
    let me = Identity { node: config.node, cluster: &config.cluster };
    let is_peer = |id| shared.peer(id).is_some();
    let responded = tokio::select! {
        biased;
        () = shared.shutdown.cancelled() => return,
        responded = handshake::respond(&mut stream, me, is_peer, config.handshake_timeout) => responded,
    };
    let (from, leftover) = match responded {
        Ok(accepted) => accepted,
        Err(error) => {
            shared.counters.refused(error.refusal());
            if error.is_misconfiguration() {
                tracing::warn!(%remote, %error, "refused a peer connection");
            } else {
                tracing::debug!(%remote, %error, "refused a peer connection");
            }
            return;
        }
    };
    // The peer may have been removed since the handshake looked it up.
    let Some(peer) = shared.peer(from) else {
        return;
    };
    shared.counters.inbound_accepted.add(1);
    let serial = shared.inbound_serial.fetch_add(1, Ordering::Relaxed);
    let stop = peer.replace_inbound(serial);
    tracing::debug!(peer = %from, %remote, "accepted a peer connection");
    // It is up: if our own connection to it is waiting out a backoff, retry now.
    peer.redial.notify_one();
    let reader = Reader {
        shared: &shared,
        peer: &peer,
        inbound: &inbound,
        stop: &stop,
        buffer: leftover,
        rejected: 0,
    };
    match reader.run(stream).await {
        Ok(()) => tracing::debug!(peer = %from, %remote, "peer connection closed"),
        Err(ReadError::Frame(error)) => {
            peer.counters.decode_errors.add(1);
            tracing::warn!(peer = %from, %remote, %error, "closed a peer connection for a corrupt frame");
        }
        Err(error) => tracing::info!(peer = %from, %remote, %error, "peer connection closed"),
    }
    peer.clear_inbound(serial);
}

/// What one inbound connection reads into and delivers to.
struct Reader<'a> {
    shared: &'a Shared,
    peer: &'a Peer,
    inbound: &'a mpsc::Sender<Inbound>,
    /// Cancelled when the peer is removed, replaced by a newer connection,
    /// or the transport shuts down.
    stop: &'a CancellationToken,
    /// Received bytes not yet decoded. Never longer than one whole frame
    /// plus one read: a frame's length is checked against the maximum as
    /// soon as its header is in.
    buffer: Vec<u8>,
    /// Frames dropped on this connection for what they held.
    rejected: u64,
}

impl Reader<'_> {
    /// Delivers frames until the peer closes (`Ok`) or something fails.
    async fn run<S>(mut self, mut stream: S) -> Result<(), ReadError>
    where
        S: AsyncRead + Unpin,
    {
        let idle_timeout = self.shared.config.idle_timeout;
        loop {
            if !self.deliver_buffered().await? {
                return Ok(());
            }
            if self.buffer.is_empty() && self.buffer.capacity() > 4 * READ_BYTES {
                // Give back what a large frame needed.
                self.buffer = Vec::with_capacity(READ_BYTES);
            }
            self.buffer.reserve(READ_BYTES);
            let read = tokio::time::timeout(idle_timeout, stream.read_buf(&mut self.buffer));
            tokio::select! {
                biased;
                () = self.stop.cancelled() => return Ok(()),
                read = read => match read {
                    Err(_) => return Err(ReadError::Idle(idle_timeout)),
                    Ok(Ok(0)) => return Ok(()),
                    Ok(Ok(_)) => {}
                    Ok(Err(error)) => return Err(error.into()),
                },
            }
        }
    }

    /// Delivers every whole frame in the buffer; `false` once this
    /// connection should stop (stopped, or nobody receives any more).
    async fn deliver_buffered(&mut self) -> Result<bool, ReadError> {
        let frame_bytes_max = self.shared.config.frame_bytes_max;
        let counters = &self.peer.counters;
        let mut consumed = 0;
        let mut going = true;
        while going {
            if self.stop.is_cancelled() {
                // A replaced connection must not deliver beside its successor.
                going = false;
                break;
            }
            let rest = &self.buffer[consumed..];
            if rest.starts_with(&KEEPALIVE_FRAME) {
                consumed += HEADER_LEN;
                continue;
            }
            let Some((payload, used)) = frame::take(rest, frame_bytes_max)? else {
                break;
            };
            consumed += used;
            let message = match frame::decode_payload::<Message>(payload) {
                Ok(message) => message,
                Err(error) => {
                    self.reject(&error);
                    continue;
                }
            };
            counters.messages_received.add(1);
            counters.bytes_received.add(used as u64);
            let inbound = Inbound { from: self.peer.id, message };
            going = match self.inbound.try_send(inbound) {
                Ok(()) => true,
                Err(TrySendError::Closed(_)) => false,
                // The driver is behind: wait, and let TCP push back on the peer.
                Err(TrySendError::Full(inbound)) => tokio::select! {
                    biased;
                    () = self.stop.cancelled() => false,
                    sent = self.inbound.send(inbound) => sent.is_ok(),
                },
            };
        }
        self.buffer.drain(..consumed);
        Ok(going)
    }

    /// Counts a frame dropped for its payload. The first on a connection is
    /// a warning; more would only repeat it, so they are debug messages.
    fn reject(&mut self, error: &FrameError) {
        self.peer.counters.messages_rejected.add(1);
        self.rejected += 1;
        let peer = self.peer.id;
        if self.rejected == 1 {
            tracing::warn!(%peer, %error, "dropped a frame from a peer: no valid message");
        } else {
            tracing::debug!(%peer, %error, rejected = self.rejected, "dropped a frame from a peer");
        }
    }
}
