//! Monitoring: `/health`, `/v1/status`, `/v1/ring`, `/metrics`.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::IntoResponse;
use serde::Serialize;

use super::AppState;
use crate::service::{NodeStatus, RingView};

#[derive(Serialize)]
pub(super) struct Health {
    status: &'static str,
}

/// The process is up and serving HTTP. Whether the node can reach a quorum
/// is in `/v1/status`.
pub(super) async fn health() -> Json<Health> {
    Json(Health { status: "ok" })
}

#[derive(Serialize)]
pub(super) struct Status {
    version: &'static str,
    #[serde(flatten)]
    node: NodeStatus,
}

pub(super) async fn status(State(state): State<AppState>) -> Json<Status> {
    Json(Status { version: env!("CARGO_PKG_VERSION"), node: state.introspect.status() })
}

pub(super) async fn ring(State(state): State<AppState>) -> Json<RingView> {
    Json(state.introspect.ring())
}

/// Prometheus text format 0.0.4: the servers' metrics, then the node's.
pub(super) async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let mut text = state.handle.metrics().render();
    state.introspect.status().write_metrics(&mut text);
    state.introspect.write_metrics(&mut text);
    let content_type = HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8");
    ([(header::CONTENT_TYPE, content_type)], text)
}
