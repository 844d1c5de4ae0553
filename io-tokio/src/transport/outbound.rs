//! The writer task of one peer: it connects, shakes hands, writes the
//! queue in batches, and after any failure waits out a backoff and starts
//! over. It only writes; the one thing it reads is the end of the stream,
//! which tells it early that the peer has gone.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;

use super::backoff::Backoff;
use super::handshake::{self, HandshakeError, Identity};
use super::inbound::KEEPALIVE_FRAME;
use super::peer::Peer;
use super::{Shared, TransportConfig, net};

/// A batch buffer that grew past this (a burst, a large message) is given
/// back instead of being kept for the next batch.
const BATCH_CAPACITY_KEPT: usize = 4 * 1024 * 1024;

#[derive(Debug, Error)]
enum OpenError {
    #[error("connect: {0}")]
    Connect(io::Error),
    #[error("connect did not finish within {0:?}")]
    ConnectTimeout(Duration),
    #[error("handshake: {0}")]
    Handshake(#[from] HandshakeError),
}

#[derive(Debug, Error)]
enum SessionError {
    #[error("write: {0}")]
    Io(#[from] io::Error),
    #[error("a batch was not taken within {0:?}")]
    WriteTimeout(Duration),
    #[error("the peer closed the connection")]
    PeerClosed,
    #[error("the peer sent bytes on a connection that only carries frames to it")]
    Unexpected,
}

/// How a connection ended.
enum Ended {
    /// The peer was removed or the transport shut down.
    Stopped,
    /// The peer moved: connect to its new address now.
    Readdressed,
    Failed(SessionError),
}

pub(super) async fn run(shared: Arc<Shared>, peer: Arc<Peer>) {
    let config = &shared.config;
    let me = Identity { node: config.node, cluster: &config.cluster };
    let seed = Backoff::seed(config.node, peer.id);
    let mut backoff = Backoff::new(config.backoff_min, config.backoff_max, seed);
    let mut address = peer.address.subscribe();
    let mut batch = Vec::new();
    let mut failures_in_a_row = 0u32;
    loop {
        let target = *address.borrow_and_update();
        let opened = tokio::select! {
            biased;
            () = peer.stop.cancelled() => break,
            opened = open(config, me, peer.id, target) => opened,
        };
        match opened {
            Ok(stream) => {
                backoff.reset();
                failures_in_a_row = 0;
                peer.counters.connects.add(1);
                peer.counters.set_connected(true);
                tracing::info!(peer = %peer.id, address = %target, "connected to peer");
                let ended = session(&shared, &peer, stream, &mut batch, &mut address).await;
                peer.counters.set_connected(false);
                match ended {
                    Ended::Stopped => break,
                    Ended::Readdressed => continue,
                    Ended::Failed(error) => {
                        tracing::info!(peer = %peer.id, address = %target, %error, "connection to peer lost");
                    }
                }
            }
            Err(error) => {
                report_open_failure(&peer, target, &error, failures_in_a_row);
                failures_in_a_row = failures_in_a_row.saturating_add(1);
                // The peer cannot be reached: what is queued for it would be
                // stale by the time it returns, and would only fill memory
                // meanwhile. Its requests time out like any lost message.
                peer.discard();
            }
        }
        tokio::select! {
            biased;
            () = peer.stop.cancelled() => break,
            _ = address.changed() => backoff.reset(),
            () = peer.redial.notified() => backoff.reset(),
            () = tokio::time::sleep(backoff.next_delay()) => {}
        }
    }
    peer.discard();
}

async fn open(
    config: &TransportConfig,
    me: Identity<'_>,
    peer: keel_core::NodeId,
    address: SocketAddr,
) -> Result<net::Stream, OpenError> {
    let mut stream = match tokio::time::timeout(config.connect_timeout, net::connect(address)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(error)) => return Err(OpenError::Connect(error)),
        Err(_) => return Err(OpenError::ConnectTimeout(config.connect_timeout)),
    };
    handshake::initiate(&mut stream, me, peer, config.handshake_timeout).await?;
    Ok(stream)
}

/// Counts a failed attempt. A peer that is down would fill the log at every
/// retry, so only the first failure in a row is logged above debug; a
/// refusal over configuration is a warning every time.
fn report_open_failure(peer: &Peer, address: SocketAddr, error: &OpenError, failures_in_a_row: u32) {
    let misconfigured = match error {
        OpenError::Handshake(handshake) => {
            peer.counters.handshake_failures.add(1);
            handshake.is_misconfiguration()
        }
        OpenError::Connect(_) | OpenError::ConnectTimeout(_) => {
            peer.counters.connect_failures.add(1);
            false
        }
    };
    if misconfigured {
        tracing::warn!(peer = %peer.id, %address, %error, "peer refused the connection");
    } else if failures_in_a_row == 0 {
        tracing::info!(peer = %peer.id, %address, %error, "cannot reach peer; retrying with backoff");
    } else {
        tracing::debug!(peer = %peer.id, %address, %error, failures_in_a_row, "cannot reach peer");
    }
}

/// Writes whatever is queued until the connection fails or the peer stops.
async fn session<S>(
    shared: &Shared,
    peer: &Peer,
    mut stream: S,
    batch: &mut Vec<u8>,
    address: &mut watch::Receiver<SocketAddr>,
) -> Ended
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let config = &shared.config;
    let mut probe = [0u8; 1];
    loop {
        if let Err(error) = write_queued(config, peer, &mut stream, batch).await {
            return Ended::Failed(error);
        }
        tokio::select! {
            biased;
            () = peer.stop.cancelled() => {
                if shared.shutdown.is_cancelled() {
                    flush(config, peer, &mut stream, batch).await;
                }
                return Ended::Stopped;
            }
            _ = address.changed() => return Ended::Readdressed,
            () = peer.wake.notified() => {}
            read = stream.read(&mut probe) => {
                return Ended::Failed(match read {
                    Ok(0) => SessionError::PeerClosed,
                    Ok(_) => SessionError::Unexpected,
                    Err(error) => SessionError::Io(error),
                });
            }
            () = tokio::time::sleep(config.keepalive_interval) => {
                if let Err(error) = write_batch(config, peer, &mut stream, &KEEPALIVE_FRAME).await {
                    return Ended::Failed(error);
                }
                peer.counters.keepalives_sent.add(1);
            }
        }
    }
}

/// Writes the queue in batches until it is empty.
async fn write_queued<S>(
    config: &TransportConfig,
    peer: &Peer,
    stream: &mut S,
    batch: &mut Vec<u8>,
) -> Result<(), SessionError>
where
    S: AsyncWrite + Unpin,
{
    loop {
        let messages = peer.take(batch) as u64;
        if messages == 0 {
            return Ok(());
        }
        let bytes = batch.len() as u64;
        let written = write_batch(config, peer, stream, batch).await;
        batch.clear();
        if batch.capacity() > BATCH_CAPACITY_KEPT {
            *batch = Vec::new();
        }
        if let Err(error) = written {
            peer.counters.dropped_unsent.add(messages);
            return Err(error);
        }
        peer.counters.messages_sent.add(messages);
        peer.counters.bytes_sent.add(bytes);
    }
}

/// One `write_all`, bounded by the write timeout, and once the peer is
/// stopping, by the shutdown flush timeout as well.
async fn write_batch<S>(
    config: &TransportConfig,
    peer: &Peer,
    stream: &mut S,
    bytes: &[u8],
) -> Result<(), SessionError>
where
    S: AsyncWrite + Unpin,
{
    let write = async {
        stream.write_all(bytes).await?;
        stream.flush().await
    };
    let stopping = async {
        peer.stop.cancelled().await;
        tokio::time::sleep(config.shutdown_flush_timeout).await;
    };
    tokio::select! {
        written = tokio::time::timeout(config.write_timeout, write) => match written {
            Ok(result) => Ok(result?),
            Err(_) => Err(SessionError::WriteTimeout(config.write_timeout)),
        },
        () = stopping => Err(SessionError::WriteTimeout(config.shutdown_flush_timeout)),
    }
}

/// On shutdown: hand over what is queued, then close the connection
/// cleanly, all within the shutdown flush timeout.
async fn flush<S>(config: &TransportConfig, peer: &Peer, stream: &mut S, batch: &mut Vec<u8>)
where
    S: AsyncWrite + Unpin,
{
    let drain = async {
        write_queued(config, peer, stream, batch).await?;
        stream.shutdown().await?;
        Ok::<(), SessionError>(())
    };
    match tokio::time::timeout(config.shutdown_flush_timeout, drain).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::debug!(peer = %peer.id, %error, "flush on shutdown failed"),
        Err(_) => tracing::debug!(peer = %peer.id, "flush on shutdown timed out"),
    }
}
