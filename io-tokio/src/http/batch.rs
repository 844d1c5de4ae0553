//! `POST /v1/batch/get` and `POST /v1/batch/put`: many keys in one request,
//! issued as concurrent single-key requests, answered item by item.
//!
//! Keys and values are JSON strings in the request's `encoding`: `utf8` (the
//! default, convenient with curl) or `base64` (RFC 4648 §4, for binary data).
//! Results come in request order, each with its own status, so one failing
//! key does not hide the others: every failure of a key's request (damaged,
//! unavailable, timeout, a key over the limit or empty…) is that item's
//! `error`, never the batch's, because keys live on different replicas and
//! fail independently. The batch itself is 200 unless the request is
//! malformed or over a limit, and then nothing was done.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use base64::Engine as _;
use keel_core::client::{ClientError, Consistency, Get, Put, Read, Replaces, Written};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::{ApiError, AppState};
use crate::service::{decode_context, encode_context, error_code, fan_out};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Encoding {
    #[default]
    Utf8,
    Base64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GetBatch {
    keys: Vec<String>,
    #[serde(default)]
    consistency: Option<String>,
    #[serde(default)]
    encoding: Encoding,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PutBatch {
    items: Vec<PutItem>,
    #[serde(default)]
    consistency: Option<String>,
    /// Only the keys' own replicas count (no hints); see `kv`.
    #[serde(default)]
    strict: bool,
    #[serde(default)]
    encoding: Encoding,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PutItem {
    key: String,
    value: String,
    /// Absent: the value replaces what the coordinating replica holds, as a
    /// plain PUT does. Empty: it becomes a sibling of whatever is stored.
    #[serde(default)]
    context: Option<String>,
}

#[derive(Debug, Serialize)]
pub(super) struct Results {
    results: Vec<ItemResult>,
}

/// One key's outcome: `found` (with `values`), `not_found`, `written`, or
/// `error` (with `error`). `context` accompanies every outcome but errors.
#[derive(Debug, Serialize)]
struct ItemResult {
    key: String,
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    values: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    context: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<ItemError>,
}

#[derive(Debug, Serialize)]
struct ItemError {
    code: &'static str,
    message: String,
}

pub(super) async fn get(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Results>, ApiError> {
    let batch: GetBatch = parse_body(body, &state)?;
    check_count(batch.keys.len(), &state)?;
    let read = batch_consistency(batch.consistency.as_deref())?;
    let encoding = batch.encoding;
    let keys = batch.keys.iter().map(|key| decode(key, encoding, "key")).collect::<Result<Vec<_>, _>>()?;
    let handle = &state.handle;
    let work = |key| {
        let handle = handle.clone();
        async move { handle.get(Get { key, read }).await }
    };
    let replies = fan_out(keys, state.limits.fanout_max as usize, work, lost).await;
    let results =
        batch.keys.into_iter().zip(replies).map(|(key, reply)| item_read(key, reply, encoding)).collect();
    Ok(Json(Results { results }))
}

pub(super) async fn put(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Results>, ApiError> {
    let batch: PutBatch = parse_body(body, &state)?;
    check_count(batch.items.len(), &state)?;
    let write = batch_consistency(batch.consistency.as_deref())?;
    let encoding = batch.encoding;
    let mut requests = Vec::with_capacity(batch.items.len());
    for item in &batch.items {
        let key = decode(&item.key, encoding, "key")?;
        let value = decode(&item.value, encoding, "value")?;
        let replaces = match item.context.as_deref() {
            Some(text) => Replaces::Context(decode_context(text.as_bytes()).map_err(ApiError::from)?),
            None => Replaces::Held,
        };
        requests.push(Put { key, value, replaces, write, strict: batch.strict });
    }
    let handle = &state.handle;
    let work = |request| {
        let handle = handle.clone();
        async move { handle.put(request).await }
    };
    let replies = fan_out(requests, state.limits.fanout_max as usize, work, lost).await;
    let keys = batch.items.into_iter().map(|item| item.key);
    let results = keys.zip(replies).map(|(key, reply)| item_written(key, reply)).collect();
    Ok(Json(Results { results }))
}

fn lost<T>() -> Result<T, ClientError> {
    Err(ClientError::ReplyLost { waited_ms: 0 })
}

fn item_read(key: String, reply: Result<Read, ClientError>, encoding: Encoding) -> ItemResult {
    let mut result = ItemResult { key, status: "error", values: None, context: None, error: None };
    match reply {
        Ok(Read { values, context }) if values.is_empty() => {
            result.status = "not_found";
            result.context = Some(encode_context(&context));
        }
        Ok(Read { values, context }) => {
            let encoded: Result<Vec<String>, ItemError> =
                values.iter().map(|value| encode(value, encoding)).collect();
            match encoded {
                Ok(values) => {
                    result.status = "found";
                    result.values = Some(values);
                    result.context = Some(encode_context(&context));
                }
                Err(error) => result.error = Some(error),
            }
        }
        Err(error) => result.error = Some(item_error(&error)),
    }
    result
}

fn item_written(key: String, reply: Result<Written, ClientError>) -> ItemResult {
    let mut result = ItemResult { key, status: "error", values: None, context: None, error: None };
    match reply {
        Ok(written) => {
            result.status = "written";
            result.context = Some(encode_context(&written.context));
        }
        Err(error) => result.error = Some(item_error(&error)),
    }
    result
}

fn item_error(error: &ClientError) -> ItemError {
    ItemError { code: error_code(error), message: error.to_string() }
}

fn parse_body<T: DeserializeOwned>(
    body: Result<Bytes, BytesRejection>,
    state: &AppState,
) -> Result<T, ApiError> {
    let body = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            let max = state.limits.batch_bytes_max;
            let message = format!("request body exceeds the limit of {max} bytes; nothing was written");
            return ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "batch_too_large", message);
        }
        ApiError::bad_request("bad_body", rejection.body_text())
    })?;
    serde_json::from_slice(&body).map_err(|error| ApiError::bad_request("bad_json", error.to_string()))
}

/// A body announced over the limit, refused before it is read.
pub(super) fn too_large(length: u64, max: u32) -> ApiError {
    let message =
        format!("request body of {length} bytes exceeds the limit of {max} bytes; nothing was done");
    ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "batch_too_large", message)
}

fn check_count(count: usize, state: &AppState) -> Result<(), ApiError> {
    let max = state.limits.batch_items_max;
    if count as u64 > u64::from(max) {
        let message = format!("batch of {count} items exceeds the limit of {max}; nothing was done");
        return Err(ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "batch_too_large", message));
    }
    Ok(())
}

fn batch_consistency(text: Option<&str>) -> Result<Consistency, ApiError> {
    match text {
        None => Ok(Consistency::Quorum),
        Some(text) => text.parse().map_err(|error: keel_core::client::ParseConsistencyError| {
            ApiError::bad_request("bad_consistency", error.to_string())
        }),
    }
}

fn decode(text: &str, encoding: Encoding, what: &str) -> Result<Vec<u8>, ApiError> {
    match encoding {
        Encoding::Utf8 => Ok(text.as_bytes().to_vec()),
        Encoding::Base64 => base64::engine::general_purpose::STANDARD.decode(text).map_err(|error| {
            ApiError::bad_request("bad_base64", format!("{what} {text:?} is not base64: {error}"))
        }),
    }
}

fn encode(value: &[u8], encoding: Encoding) -> Result<String, ItemError> {
    match encoding {
        Encoding::Base64 => Ok(base64::engine::general_purpose::STANDARD.encode(value)),
        Encoding::Utf8 => String::from_utf8(value.to_vec()).map_err(|_| ItemError {
            code: "not_utf8",
            message: "the value is not UTF-8 text; ask with \"encoding\": \"base64\"".into(),
        }),
    }
}
