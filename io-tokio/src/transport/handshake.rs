//! The handshake that opens every peer connection.
//!
//! The connecting node sends a hello; the accepting node checks it and
//! answers with its own hello and a verdict byte; the connecting node checks
//! that hello and the verdict. A hello is
//!
//! ```text
//! magic    4 bytes  "KEEL"
//! version  u16 LE   PROTOCOL_VERSION
//! cluster  u8 length, then that many bytes of the cluster name
//! from     u64 LE   the sender's node id
//! to       u64 LE   the node id the sender means to reach
//! ```
//!
//! The magic and the version come first and never move, so a node that sees
//! another version stops there and never parses a layout it does not know.

use std::io;
use std::time::Duration;

use keel_core::NodeId;
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::stats::Refusal;

/// The first bytes of every peer connection.
pub const MAGIC: [u8; 4] = *b"KEEL";
/// Raised whenever the hello, the framing or the messages change incompatibly.
pub const PROTOCOL_VERSION: u16 = 2;
/// Longest cluster name; its length travels in one byte.
pub const CLUSTER_NAME_BYTES_MAX: usize = u8::MAX as usize;
/// Magic, version, cluster length, cluster, two node ids.
const HELLO_BYTES_MAX: usize = 4 + 2 + 1 + CLUSTER_NAME_BYTES_MAX + 8 + 8;

/// Who this node is, as the handshake presents it.
#[derive(Clone, Copy, Debug)]
pub(super) struct Identity<'a> {
    pub(super) node: NodeId,
    pub(super) cluster: &'a str,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Hello {
    cluster: Vec<u8>,
    from: NodeId,
    to: NodeId,
}

/// The accepting side's answer, the byte after its hello.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(super) enum Verdict {
    Accepted = 0,
    Version = 1,
    Cluster = 2,
    UnknownNode = 3,
    WrongTarget = 4,
}

#[derive(Debug, Error)]
pub(super) enum HandshakeError {
    #[error("not a keel peer: the first bytes are {0:02x?}")]
    BadMagic(Vec<u8>),
    #[error("the peer speaks protocol version {theirs}, this node speaks {PROTOCOL_VERSION}")]
    Version { theirs: u16 },
    #[error("the peer is in cluster {theirs:?}, this node is in {ours:?}")]
    Cluster { ours: String, theirs: String },
    #[error("node {0} is not a peer of this node")]
    UnknownNode(NodeId),
    #[error("the peer meant to reach node {to}, this is node {this}")]
    WrongTarget { to: NodeId, this: NodeId },
    #[error("expected node {expected} at this address, found node {found}")]
    WrongNode { expected: NodeId, found: NodeId },
    #[error("the peer refused the connection: {0:?}")]
    Refused(Verdict),
    #[error("the peer answered with the unknown verdict {0}")]
    UnknownVerdict(u8),
    #[error("the peer sent bytes after its handshake reply")]
    Unexpected,
    #[error("the handshake did not finish within {0:?}")]
    Timeout(Duration),
    #[error("the connection closed during the handshake")]
    Closed,
    #[error("handshake i/o: {0}")]
    Io(#[from] io::Error),
}

impl HandshakeError {
    /// How an inbound refusal is counted.
    pub(super) fn refusal(&self) -> Refusal {
        match self {
            HandshakeError::BadMagic(_) => Refusal::BadMagic,
            HandshakeError::Version { .. } => Refusal::Version,
            HandshakeError::Cluster { .. } => Refusal::Cluster,
            HandshakeError::UnknownNode(_) => Refusal::UnknownNode,
            HandshakeError::WrongTarget { .. } | HandshakeError::WrongNode { .. } => Refusal::WrongTarget,
            HandshakeError::Timeout(_) => Refusal::Timeout,
            HandshakeError::Refused(_)
            | HandshakeError::UnknownVerdict(_)
            | HandshakeError::Unexpected
            | HandshakeError::Closed
            | HandshakeError::Io(_) => Refusal::Closed,
        }
    }

    /// Whether this is a disagreement between configurations rather than a
    /// network hiccup: worth a warning every time.
    pub(super) fn is_misconfiguration(&self) -> bool {
        matches!(
            self.refusal(),
            Refusal::Version | Refusal::Cluster | Refusal::UnknownNode | Refusal::WrongTarget
        ) || matches!(self, HandshakeError::Refused(_))
    }

    fn verdict(&self) -> Verdict {
        match self {
            HandshakeError::Version { .. } => Verdict::Version,
            HandshakeError::Cluster { .. } => Verdict::Cluster,
            HandshakeError::UnknownNode(_) => Verdict::UnknownNode,
            _ => Verdict::WrongTarget,
        }
    }
}

impl Hello {
    fn new(me: Identity<'_>, to: NodeId) -> Hello {
        Hello { cluster: me.cluster.as_bytes().to_vec(), from: me.node, to }
    }

    fn encode(&self, out: &mut Vec<u8>) {
        // The configuration is checked at start: cluster names fit in one length byte.
        let cluster_len = u8::try_from(self.cluster.len()).expect("cluster name length is checked at start");
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&PROTOCOL_VERSION.to_le_bytes());
        out.push(cluster_len);
        out.extend_from_slice(&self.cluster);
        out.extend_from_slice(&self.from.0.to_le_bytes());
        out.extend_from_slice(&self.to.0.to_le_bytes());
    }

    /// Reads a hello from the front of `buf`: `Ok(None)` until it is whole.
    /// Garbage fails as soon as its first four bytes are in.
    fn decode(buf: &[u8]) -> Result<Option<(Hello, usize)>, HandshakeError> {
        let Some(magic) = buf.get(..MAGIC.len()) else {
            return Ok(None);
        };
        if magic != MAGIC {
            return Err(HandshakeError::BadMagic(magic.to_vec()));
        }
        let Some(&[low, high, cluster_len]) = buf.get(4..7) else {
            return Ok(None);
        };
        let version = u16::from_le_bytes([low, high]);
        if version != PROTOCOL_VERSION {
            return Err(HandshakeError::Version { theirs: version });
        }
        let cluster_len = usize::from(cluster_len);
        let Some(rest) = buf.get(7..7 + cluster_len + 16) else {
            return Ok(None);
        };
        let (cluster, ids) = rest.split_at(cluster_len);
        let (from, to) = ids.split_at(8);
        let hello = Hello {
            cluster: cluster.to_vec(),
            from: NodeId(u64::from_le_bytes(from.try_into().expect("8 of 16 bytes"))),
            to: NodeId(u64::from_le_bytes(to.try_into().expect("8 of 16 bytes"))),
        };
        Ok(Some((hello, 7 + cluster_len + 16)))
    }

    fn check_cluster(&self, me: Identity<'_>) -> Result<(), HandshakeError> {
        if self.cluster == me.cluster.as_bytes() {
            return Ok(());
        }
        let theirs = String::from_utf8_lossy(&self.cluster).into_owned();
        Err(HandshakeError::Cluster { ours: me.cluster.to_owned(), theirs })
    }
}

/// The connecting side: presents `me` to `peer` and waits for its consent.
pub(super) async fn initiate<S>(
    stream: &mut S,
    me: Identity<'_>,
    peer: NodeId,
    timeout: Duration,
) -> Result<(), HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let exchange = async {
        let mut out = Vec::with_capacity(HELLO_BYTES_MAX);
        Hello::new(me, peer).encode(&mut out);
        stream.write_all(&out).await?;
        stream.flush().await?;
        let mut buf = Vec::new();
        let reply = read_hello(stream, &mut buf).await?;
        reply.check_cluster(me)?;
        if reply.from != peer {
            return Err(HandshakeError::WrongNode { expected: peer, found: reply.from });
        }
        if reply.to != me.node {
            return Err(HandshakeError::WrongTarget { to: reply.to, this: me.node });
        }
        if buf.is_empty() {
            let mut byte = [0u8; 1];
            if stream.read(&mut byte).await? == 0 {
                return Err(HandshakeError::Closed);
            }
            buf.push(byte[0]);
        }
        match buf[0] {
            0 if buf.len() > 1 => Err(HandshakeError::Unexpected),
            0 => Ok(()),
            1 => Err(HandshakeError::Refused(Verdict::Version)),
            2 => Err(HandshakeError::Refused(Verdict::Cluster)),
            3 => Err(HandshakeError::Refused(Verdict::UnknownNode)),
            4 => Err(HandshakeError::Refused(Verdict::WrongTarget)),
            code => Err(HandshakeError::UnknownVerdict(code)),
        }
    };
    tokio::time::timeout(timeout, exchange).await.unwrap_or(Err(HandshakeError::Timeout(timeout)))
}

/// The accepting side: checks the hello of whoever connected, answers, and
/// returns the peer's id with any bytes it sent after its hello.
pub(super) async fn respond<S>(
    stream: &mut S,
    me: Identity<'_>,
    is_peer: impl Fn(NodeId) -> bool,
    timeout: Duration,
) -> Result<(NodeId, Vec<u8>), HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let exchange = async {
        let mut buf = Vec::new();
        let hello = match read_hello(stream, &mut buf).await {
            Ok(hello) => hello,
            Err(error @ HandshakeError::Version { .. }) => {
                // Say which version this node speaks; the rest of the hello is unread.
                let _ = answer(stream, me, NodeId(0), Verdict::Version).await;
                return Err(error);
            }
            Err(error) => return Err(error),
        };
        let judged = judge(&hello, me, is_peer);
        let verdict = judged.as_ref().map_or_else(HandshakeError::verdict, |_| Verdict::Accepted);
        answer(stream, me, hello.from, verdict).await?;
        judged.map(|()| (hello.from, buf))
    };
    tokio::time::timeout(timeout, exchange).await.unwrap_or(Err(HandshakeError::Timeout(timeout)))
}

fn judge(hello: &Hello, me: Identity<'_>, is_peer: impl Fn(NodeId) -> bool) -> Result<(), HandshakeError> {
    hello.check_cluster(me)?;
    if hello.to != me.node {
        return Err(HandshakeError::WrongTarget { to: hello.to, this: me.node });
    }
    if hello.from == me.node || !is_peer(hello.from) {
        return Err(HandshakeError::UnknownNode(hello.from));
    }
    Ok(())
}

async fn answer<S>(stream: &mut S, me: Identity<'_>, to: NodeId, verdict: Verdict) -> io::Result<()>
where
    S: AsyncWrite + Unpin,
{
    let mut out = Vec::with_capacity(HELLO_BYTES_MAX + 1);
    Hello::new(me, to).encode(&mut out);
    out.push(verdict as u8);
    stream.write_all(&out).await?;
    stream.flush().await
}

/// Reads until `buf` starts with a whole hello, which it removes. `buf`
/// never grows past two hellos: a whole one is at most `HELLO_BYTES_MAX`.
async fn read_hello<S>(stream: &mut S, buf: &mut Vec<u8>) -> Result<Hello, HandshakeError>
where
    S: AsyncRead + Unpin,
{
    loop {
        if let Some((hello, used)) = Hello::decode(buf)? {
            buf.drain(..used);
            return Ok(hello);
        }
        let mut chunk = [0u8; HELLO_BYTES_MAX];
        match stream.read(&mut chunk).await? {
            0 => return Err(HandshakeError::Closed),
            read => buf.extend_from_slice(&chunk[..read]),
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::duplex;

    use super::*;
    use crate::transport::backoff::SplitMix64;

    const ME: Identity<'static> = Identity { node: NodeId(1), cluster: "prod" };
    const PEER: Identity<'static> = Identity { node: NodeId(2), cluster: "prod" };
    const TIMEOUT: Duration = Duration::from_secs(5);

    fn encoded(hello: &Hello) -> Vec<u8> {
        let mut out = Vec::new();
        hello.encode(&mut out);
        out
    }

    #[test]
    fn a_hello_round_trips_and_is_incomplete_until_whole() {
        let hello = Hello::new(ME, NodeId(u64::MAX));
        let mut wire = encoded(&hello);
        for cut in 0..wire.len() {
            assert!(matches!(Hello::decode(&wire[..cut]), Ok(None)), "cut at {cut}");
        }
        wire.extend_from_slice(b"next");
        let (decoded, used) = Hello::decode(&wire).unwrap().unwrap();
        assert_eq!((decoded, used), (hello, wire.len() - 4));
    }

    #[test]
    fn bad_magic_and_other_versions_fail_early() {
        assert!(matches!(Hello::decode(b"GET / HTTP/1.1"), Err(HandshakeError::BadMagic(_))));
        let mut wire = encoded(&Hello::new(ME, NodeId(2)));
        wire[4] = 9;
        assert!(matches!(Hello::decode(&wire[..7]), Err(HandshakeError::Version { theirs: 9 })));
    }

    #[test]
    fn decoding_random_bytes_never_panics() {
        let mut rng = SplitMix64(7);
        for round in 0..20_000 {
            let len = (rng.next() % 300) as usize;
            let mut bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            if round % 2 == 0 && len >= 6 {
                // Get past the magic and version to reach the lengths and ids.
                bytes[..4].copy_from_slice(&MAGIC);
                bytes[4..6].copy_from_slice(&PROTOCOL_VERSION.to_le_bytes());
            }
            let _ = Hello::decode(&bytes);
        }
    }

    /// Runs both sides over an in-memory pipe.
    async fn shake(
        connector: Identity<'static>,
        target: NodeId,
        acceptor: Identity<'static>,
        known: &[NodeId],
    ) -> (Result<(), HandshakeError>, Result<(NodeId, Vec<u8>), HandshakeError>) {
        let (mut near, mut far) = duplex(1024);
        let is_peer = |id| known.contains(&id);
        tokio::join!(
            initiate(&mut near, connector, target, TIMEOUT),
            respond(&mut far, acceptor, is_peer, TIMEOUT)
        )
    }

    #[tokio::test]
    async fn peers_of_one_cluster_agree() {
        let (initiated, responded) = shake(ME, NodeId(2), PEER, &[NodeId(1)]).await;
        initiated.unwrap();
        assert_eq!(responded.unwrap(), (NodeId(1), Vec::new()));
    }

    #[tokio::test]
    async fn mismatches_are_refused_on_both_sides() {
        let other_cluster = Identity { node: NodeId(2), cluster: "staging" };
        let (initiated, responded) = shake(ME, NodeId(2), other_cluster, &[NodeId(1)]).await;
        assert!(matches!(initiated, Err(HandshakeError::Cluster { .. })), "{initiated:?}");
        assert!(matches!(responded, Err(HandshakeError::Cluster { .. })), "{responded:?}");

        let (initiated, responded) = shake(ME, NodeId(2), PEER, &[NodeId(3)]).await;
        assert!(matches!(initiated, Err(HandshakeError::Refused(Verdict::UnknownNode))), "{initiated:?}");
        assert!(matches!(responded, Err(HandshakeError::UnknownNode(NodeId(1)))), "{responded:?}");

        let (initiated, responded) = shake(ME, NodeId(5), PEER, &[NodeId(1)]).await;
        assert!(matches!(initiated, Err(HandshakeError::WrongNode { .. })), "{initiated:?}");
        assert!(matches!(responded, Err(HandshakeError::WrongTarget { .. })), "{responded:?}");
    }

    #[tokio::test]
    async fn another_version_is_told_which_version_this_node_speaks() {
        let (mut near, mut far) = duplex(1024);
        let mut wire = encoded(&Hello::new(ME, NodeId(2)));
        wire[4..6].copy_from_slice(&7u16.to_le_bytes());
        near.write_all(&wire).await.unwrap();
        let responded = respond(&mut far, PEER, |_| true, TIMEOUT).await;
        assert!(matches!(responded, Err(HandshakeError::Version { theirs: 7 })), "{responded:?}");
        let mut reply = [0u8; 6];
        near.read_exact(&mut reply).await.unwrap();
        assert_eq!(&reply[..4], &MAGIC);
        assert_eq!(u16::from_le_bytes([reply[4], reply[5]]), PROTOCOL_VERSION);
    }

    #[tokio::test]
    async fn a_silent_connection_times_out() {
        let (_near, mut far) = duplex(1024);
        let responded = respond(&mut far, PEER, |_| true, Duration::from_millis(20)).await;
        assert!(matches!(responded, Err(HandshakeError::Timeout(_))), "{responded:?}");
    }
}
