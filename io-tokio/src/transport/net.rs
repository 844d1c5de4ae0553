//! The only file of the transport that names socket types.
//!
//! Everything else works on any `AsyncRead + AsyncWrite` stream. To run the
//! transport over a simulated network (madsim's `tokio` replacement exposes
//! the same `TcpListener` and `TcpStream`), only this file has to change,
//! if even it does.

use std::io;
use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpStream};

/// The byte stream of one peer connection.
pub(super) type Stream = TcpStream;

#[derive(Debug)]
pub(super) struct Listener {
    inner: TcpListener,
}

impl Listener {
    pub(super) async fn bind(address: SocketAddr) -> io::Result<Listener> {
        Ok(Listener { inner: TcpListener::bind(address).await? })
    }

    pub(super) fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    pub(super) async fn accept(&self) -> io::Result<(Stream, SocketAddr)> {
        let (stream, remote) = self.inner.accept().await?;
        no_delay(&stream);
        Ok((stream, remote))
    }
}

pub(super) async fn connect(address: SocketAddr) -> io::Result<Stream> {
    let stream = TcpStream::connect(address).await?;
    no_delay(&stream);
    Ok(stream)
}

/// Frames are written in whole batches, so Nagle's delay only adds latency.
fn no_delay(stream: &TcpStream) {
    if let Err(error) = stream.set_nodelay(true) {
        tracing::debug!(%error, "could not set TCP_NODELAY");
    }
}
