//! The Redis and HTTP servers on the in-memory test backend, to try clients
//! against without a cluster: `cargo run -p keel-io-tokio --example
//! memory_server -- 6379 8080`, then `redis-cli -p 6379` or
//! `curl localhost:8080/v1/kv/a`. Nothing is replicated or persisted.

use keel_io_tokio::http::{HttpLimits, serve_http};
use keel_io_tokio::resp::{RespLimits, serve_resp};
use keel_io_tokio::service::testing::{MemoryBackend, StaticIntrospect};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let mut ports = std::env::args().skip(1).map(|port| port.parse::<u16>());
    let resp_port = ports.next().unwrap_or(Ok(6379)).map_err(std::io::Error::other)?;
    let http_port = ports.next().unwrap_or(Ok(8080)).map_err(std::io::Error::other)?;
    let backend = MemoryBackend::new();
    let handle = backend.spawn(4096);
    let introspect = StaticIntrospect::single(Some(backend));
    let shutdown = CancellationToken::new();
    let resp = TcpListener::bind(("127.0.0.1", resp_port)).await?;
    let http = TcpListener::bind(("127.0.0.1", http_port)).await?;
    println!("RESP on {}, HTTP on {}; Ctrl-C stops", resp.local_addr()?, http.local_addr()?);
    let resp = serve_resp(resp, handle.clone(), introspect.clone(), RespLimits::default(), shutdown.clone());
    let http = serve_http(http, handle, introspect, HttpLimits::default(), shutdown.clone());
    let stop = async {
        let _ = tokio::signal::ctrl_c().await;
        shutdown.cancel();
    };
    let (resp, http, ()) = tokio::join!(resp, http, stop);
    resp.and(http)
}
