//! `keel node`: run one storage node with its HTTP and Redis servers.

mod checks;
mod config;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use keel_io_tokio::driver::{self, DriverConfig};
use keel_io_tokio::http::{HttpLimits, serve_http};
use keel_io_tokio::resp::{RespLimits, serve_resp};
use keel_io_tokio::service::Introspect;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use self::config::{LogFormat, NodeArgs, Settings};

/// How long requests in flight get to finish on shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

pub fn command(args: NodeArgs) -> ExitCode {
    let settings = match Settings::resolve(&args) {
        Ok(settings) => settings,
        Err(message) => {
            eprintln!("keel node: {message}");
            return ExitCode::from(2);
        }
    };
    crate::logging::init(settings.log_format, &settings.log);
    let mut builder = if settings.worker_threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(settings.worker_threads);
        builder
    };
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("keel node: cannot start the runtime: {error}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(serve(settings)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            tracing::error!("{message}");
            eprintln!("keel node: {message}");
            ExitCode::from(1)
        }
    }
}

async fn serve(settings: Settings) -> Result<(), String> {
    let node_config = settings.node_config()?;
    let shutdown = CancellationToken::new();
    let http = bind(settings.listen_http, "HTTP").await?;
    let redis = bind(settings.listen_redis, "Redis").await?;
    let driver_config = DriverConfig {
        node: settings.node,
        cluster: settings.cluster.clone(),
        node_config,
        data_dir: settings.data_dir.clone(),
        peer_listen: settings.listen_peer,
        peers: settings.peers.clone(),
        calls_queue_max: 16 * 1024,
        shutdown_grace: SHUTDOWN_GRACE,
        seed: None,
    };
    let running = driver::start(driver_config, shutdown.clone()).await.map_err(start_error)?;
    announce(&settings, http.local_addr().ok(), redis.local_addr().ok(), running.peer_addr);
    let introspect: Arc<dyn Introspect> = Arc::new(running.introspect.clone());
    let http_limits = HttpLimits {
        value_bytes_max: settings.value_bytes_max,
        connections_max: settings.connections_max,
        ..HttpLimits::default()
    };
    let redis_limits = resp_limits(&settings);
    let handle = running.handle.clone();
    let servers = async {
        tokio::join!(
            serve_http(http, handle.clone(), introspect.clone(), http_limits, shutdown.clone()),
            serve_resp(redis, handle.clone(), introspect, redis_limits, shutdown.clone()),
        )
    };
    let signals = wait_for_signal(shutdown.clone());
    let ((http_result, redis_result), ()) = tokio::join!(servers, signals);
    running.stopped().await;
    http_result.map_err(|error| format!("HTTP server failed: {error}"))?;
    redis_result.map_err(|error| format!("Redis server failed: {error}"))?;
    tracing::info!("stopped cleanly");
    Ok(())
}

/// RESP's bulk and request limits stay above the value limit, as
/// [`RespLimits`] asks, so that a value too large gets the node's precise
/// error rather than a protocol error that closes the connection.
fn resp_limits(settings: &Settings) -> RespLimits {
    let defaults = RespLimits::default();
    let headroom = 1 << 20;
    let bulk_bytes_max = defaults.bulk_bytes_max.max(settings.value_bytes_max.saturating_add(headroom));
    let request_bytes_max = defaults
        .request_bytes_max
        .max(u64::from(bulk_bytes_max) + u64::from(settings.key_bytes_max) + u64::from(headroom));
    RespLimits { connections_max: settings.connections_max, bulk_bytes_max, request_bytes_max, ..defaults }
}

/// Why the node did not start; a loss the operator must accept says how.
fn start_error(error: driver::StartError) -> String {
    let lost = matches!(&error, driver::StartError::Node(keel_core::node::OpenError::RecordsLost(_)));
    let mut message = error.to_string();
    if lost {
        message.push_str(
            "\nTo start without the lost records, pass --accept-data-loss (or set KEEL_ACCEPT_DATA_LOSS=true, or accept_data_loss = true in the config file).",
        );
    }
    message
}

async fn bind(address: std::net::SocketAddr, what: &str) -> Result<TcpListener, String> {
    TcpListener::bind(address)
        .await
        .map_err(|error| format!("cannot listen for {what} on {address}: {error}"))
}

/// Cancels `shutdown` on the first SIGINT or SIGTERM; a servers' failure
/// cancels it too, so this also returns then.
async fn wait_for_signal(shutdown: CancellationToken) {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupted; shutting down"),
        () = terminate => tracing::info!("terminated; shutting down"),
        () = shutdown.cancelled() => {}
    }
    shutdown.cancel();
}

fn announce(
    settings: &Settings,
    http: Option<std::net::SocketAddr>,
    redis: Option<std::net::SocketAddr>,
    peer: std::net::SocketAddr,
) {
    let show =
        |address: Option<std::net::SocketAddr>| address.map_or("?".to_owned(), |address| address.to_string());
    let peers: Vec<String> = settings.peers.iter().map(|(id, address)| format!("{id}@{address}")).collect();
    tracing::info!(
        node = %settings.node,
        cluster = %settings.cluster,
        data_dir = %settings.data_dir.display(),
        http = %show(http),
        redis = %show(redis),
        peer = %peer,
        peers = %peers.join(","),
        "keel node ready"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resp_limits_stay_above_the_largest_value_allowed() {
        let defaults = Settings::resolve(&NodeArgs::default()).unwrap();
        let limits = resp_limits(&defaults);
        assert_eq!(
            limits.bulk_bytes_max,
            RespLimits::default().bulk_bytes_max,
            "defaults already leave room"
        );
        assert_eq!(limits.connections_max, defaults.connections_max);
        let largest = NodeArgs { value_bytes_max: Some(67_043_328), ..NodeArgs::default() };
        let settings = Settings::resolve(&largest).unwrap();
        let limits = resp_limits(&settings);
        assert!(limits.bulk_bytes_max > settings.value_bytes_max);
        let request_max = u64::from(settings.value_bytes_max) + u64::from(settings.key_bytes_max);
        assert!(limits.request_bytes_max > request_max);
    }
}
