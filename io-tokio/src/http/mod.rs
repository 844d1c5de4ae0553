//! The HTTP/JSON API, with axum.
//!
//! Single keys at `/v1/kv/{key}` (raw bodies, context in `X-Keel-Context`),
//! batches at `/v1/batch/get` and `/v1/batch/put`, and monitoring at
//! `/health`, `/v1/status`, `/v1/ring` and `/metrics`. The shapes of bodies
//! and the error mapping are documented in `docs/API.md`.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::HttpBody as _;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

mod admin;
mod batch;
mod error;
mod kv;
mod listener;

pub use error::{ApiError, status_of};

use crate::service::{Handle, Introspect};

/// The header that carries a causal context, base64url without padding.
pub const CONTEXT_HEADER: &str = "x-keel-context";

/// Bounds on what HTTP clients may send and hold.
#[derive(Clone, Debug)]
pub struct HttpLimits {
    /// Largest body of `PUT /v1/kv/{key}`; set it to the node's value limit.
    pub value_bytes_max: u32,
    /// Largest body of a batch request (values in JSON grow by a third in base64).
    pub batch_bytes_max: u32,
    /// Most keys or items in one batch.
    pub batch_items_max: u32,
    /// Single-key requests one batch keeps in flight.
    pub fanout_max: u32,
    /// Most open connections; more are answered 503 and closed.
    pub connections_max: u32,
    /// Most requests being served at once; more are answered 503.
    pub requests_max: u32,
    /// A request not answered in this time is answered 504.
    pub request_timeout: Duration,
    /// A connection with no bytes in either direction this long is closed.
    /// Keep it above `request_timeout`, so a slow request is answered first.
    pub idle_timeout: Duration,
}

impl Default for HttpLimits {
    fn default() -> HttpLimits {
        HttpLimits {
            value_bytes_max: 16 * 1024 * 1024,
            batch_bytes_max: 64 * 1024 * 1024,
            batch_items_max: 1000,
            fanout_max: 32,
            connections_max: 10_000,
            requests_max: 4096,
            request_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(120),
        }
    }
}

#[derive(Clone)]
struct AppState {
    handle: Handle,
    introspect: Arc<dyn Introspect>,
    limits: HttpLimits,
    requests: Arc<Semaphore>,
}

/// The API as a router, without a listener: for embedding and tests.
pub fn router(handle: Handle, introspect: Arc<dyn Introspect>, limits: HttpLimits) -> Router {
    let requests = Arc::new(Semaphore::new(limits.requests_max as usize));
    let state = AppState { handle, introspect, limits, requests };
    // `/v1/kv/` is the empty key: the node refuses it as it refuses it on
    // every interface (400 key_empty), not a rule of this shell's own.
    let kv = Router::new()
        .route("/v1/kv/{*key}", get(kv::get).put(kv::put).delete(kv::delete))
        .route("/v1/kv/", get(kv::get).put(kv::put).delete(kv::delete))
        .layer(DefaultBodyLimit::max(state.limits.value_bytes_max as usize))
        .layer(middleware::from_fn_with_state(state.clone(), announced_value_size));
    let batch = Router::new()
        .route("/v1/batch/get", post(batch::get))
        .route("/v1/batch/put", post(batch::put))
        .layer(DefaultBodyLimit::max(state.limits.batch_bytes_max as usize))
        .layer(middleware::from_fn_with_state(state.clone(), announced_batch_size));
    let monitoring = Router::new()
        .route("/health", get(admin::health))
        .route("/v1/status", get(admin::status))
        .route("/v1/ring", get(admin::ring))
        .route("/metrics", get(admin::metrics));
    Router::new()
        .merge(kv)
        .merge(batch)
        .merge(monitoring)
        .fallback(no_route)
        .method_not_allowed_fallback(wrong_method)
        .layer(middleware::from_fn_with_state(state.clone(), guard))
        .with_state(state)
}

/// Serves the API on `listener` until `shutdown` is cancelled, then stops
/// accepting, finishes the requests in flight and returns.
pub async fn serve_http(
    listener: TcpListener,
    handle: Handle,
    introspect: Arc<dyn Introspect>,
    limits: HttpLimits,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let metrics = handle.metrics().clone();
    let listener = listener::Limited::new(listener, &limits, metrics);
    let app = router(handle, introspect, limits);
    axum::serve(listener, app).with_graceful_shutdown(shutdown.cancelled_owned()).await
}

/// Bounds the requests in flight and their duration, and counts responses.
/// Monitoring routes skip the bound so an overloaded node can still be seen.
async fn guard(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let route = route_label(request.uri().path());
    let bounded = matches!(route, "kv" | "batch_get" | "batch_put");
    let permit = match bounded.then(|| state.requests.try_acquire()) {
        Some(Err(_)) => {
            let limit = state.limits.requests_max;
            let message =
                format!("node is overloaded: requests in flight at its limit of {limit}; retry later");
            state.handle.metrics().record_response(route, 503);
            return ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "overloaded", message).into_response();
        }
        Some(Ok(permit)) => Some(permit),
        None => None,
    };
    let timeout = state.limits.request_timeout;
    let response = match tokio::time::timeout(timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            let message = format!(
                "request not answered within {} ms; a write may still take effect",
                timeout.as_millis()
            );
            ApiError::new(StatusCode::GATEWAY_TIMEOUT, "timeout", message).into_response()
        }
    };
    drop(permit);
    state.handle.metrics().record_response(route, response.status().as_u16());
    response
}

/// Refuses a value body whose `Content-Length` is over the limit before it
/// is buffered. hyper sends `100 Continue` to a client that asked for it
/// (`Expect: 100-continue`) only once a handler starts reading the body, so
/// such a client gets the 413 at once and never sends the body.
async fn announced_value_size(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let max = state.limits.value_bytes_max;
    match announced_over(&request, max) {
        Some(length) => refuse_body(request, max, kv::too_large(length, max)).await,
        None => next.run(request).await,
    }
}

/// As [`announced_value_size`], for batch bodies.
async fn announced_batch_size(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let max = state.limits.batch_bytes_max;
    match announced_over(&request, max) {
        Some(length) => refuse_body(request, max, batch::too_large(length, max)).await,
        None => next.run(request).await,
    }
}

/// The request's `Content-Length` when it is over `max`. A body without
/// one (chunked) is still bounded while it is read.
fn announced_over(request: &Request, max: u32) -> Option<u64> {
    let length = request.headers().get(header::CONTENT_LENGTH)?;
    let length: u64 = length.to_str().ok()?.trim().parse().ok()?;
    (length > u64::from(max)).then_some(length)
}

/// Answers `error` without buffering the body. A client that did not ask
/// `Expect: 100-continue` is sending the body already; closing on it would
/// reset the connection and could lose the 413 before the client reads it,
/// so up to twice the limit of it is read and dropped first (nginx's
/// lingering close, bounded: past that the connection is closed unread).
async fn refuse_body(request: Request, max: u32, error: ApiError) -> Response {
    let expects_continue = request
        .headers()
        .get(header::EXPECT)
        .is_some_and(|value| value.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    if !expects_continue {
        let mut body = request.into_body();
        let mut drained: u64 = 0;
        while drained <= 2 * u64::from(max) {
            let frame = std::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx)).await;
            match frame {
                Some(Ok(frame)) => {
                    drained += frame.data_ref().map_or(0, |data| data.len() as u64);
                }
                Some(Err(_)) | None => break,
            }
        }
    }
    error.into_response()
}

/// A bounded set of labels for the response counter.
fn route_label(path: &str) -> &'static str {
    match path {
        _ if path.starts_with("/v1/kv/") => "kv",
        "/v1/batch/get" => "batch_get",
        "/v1/batch/put" => "batch_put",
        "/health" => "health",
        "/v1/status" => "status",
        "/v1/ring" => "ring",
        "/metrics" => "metrics",
        _ => "other",
    }
}

async fn no_route() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "no_route", "no such endpoint; see docs/API.md")
}

async fn wrong_method() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this endpoint does not take that method",
    )
}

#[cfg(test)]
mod tests;
