//! `GET | PUT | DELETE /v1/kv/{key}`.
//!
//! The key is the rest of the path, percent-decoded to bytes, so any byte
//! string can be a key (`%00`, `%2F` for a slash inside a key, `%FF`). Values
//! are raw bodies. The causal context travels in `X-Keel-Context`.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use keel_core::client::{Consistency, Context, Delete, Get, Put, Read, Replaces, Written};
use serde::{Deserialize, Serialize};

use super::{ApiError, AppState, CONTEXT_HEADER};
use crate::service::{decode_context, encode_context};

const KV_PREFIX: &str = "/v1/kv/";

/// On a write's answer: acknowledgements from fallback nodes (sloppy quorum).
const FALLBACKS_HEADER: &str = "x-keel-fallbacks";

/// Query parameters. Unknown ones are rejected, so a misspelt `?consistancy=`
/// is an error rather than silently the default.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct KvQuery {
    r: Option<String>,
    w: Option<String>,
    consistency: Option<String>,
    /// `true`: only the key's own replicas count towards `w` (no hints).
    strict: Option<String>,
    /// `true` on a read: this node's own copy, no other replica asked.
    local: Option<String>,
}

/// The body of a `300 Multiple Choices`: every sibling, base64 (RFC 4648
/// §4, padded), and the context that replaces them all when written back.
#[derive(Debug, Serialize)]
pub(super) struct Siblings {
    pub siblings: Vec<String>,
    pub context: String,
}

pub(super) async fn get(State(state): State<AppState>, uri: Uri) -> Result<Response, ApiError> {
    let key = key_of(&uri)?;
    let (read, _) = consistency(&uri, Access::Read)?;
    let found = if local_read(&uri)? {
        state.handle.local_copy(key).await?
    } else {
        state.handle.get(Get { key, read }).await?
    };
    let Read { mut values, context } = found;
    match values.len() {
        0 => Err(ApiError::not_found(context)),
        1 => {
            let value = values.pop().unwrap_or_default();
            let headers = [(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"))];
            Ok((StatusCode::OK, context_header(&context), headers, value).into_response())
        }
        _ => {
            let siblings = values.iter().map(|value| base64_value(value)).collect();
            let body = Siblings { siblings, context: encode_context(&context) };
            Ok((StatusCode::MULTIPLE_CHOICES, context_header(&context), axum::Json(body)).into_response())
        }
    }
}

/// Without a context header, the value replaces what the coordinating
/// replica holds, as a plain Redis `SET` does.
pub(super) async fn put(
    State(state): State<AppState>,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let key = key_of(&uri)?;
    let (write, strict) = consistency(&uri, Access::Write)?;
    let replaces = context_of(&headers)?.map_or(Replaces::Held, Replaces::Context);
    let value = body.map_err(|rejection| body_error(rejection, state.limits.value_bytes_max))?.to_vec();
    let written = state.handle.put(Put { key, value, replaces, write, strict }).await?;
    Ok(written_response(&written))
}

/// Without a context header, deletes what a read at the same consistency
/// sees (the node reads first); deleting an absent key writes nothing.
pub(super) async fn delete(
    State(state): State<AppState>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let key = key_of(&uri)?;
    let (write, strict) = consistency(&uri, Access::Write)?;
    let replaces = context_of(&headers)?.map_or(Replaces::Read, Replaces::Context);
    let written = state.handle.delete(Delete { key, replaces, write, strict }).await?;
    Ok(written_response(&written))
}

/// `204` with the new context, and how many acknowledgements came from
/// fallback nodes keeping hints, when any did.
fn written_response(written: &Written) -> Response {
    let mut response = (StatusCode::NO_CONTENT, context_header(&written.context)).into_response();
    if written.fallbacks > 0 {
        response.headers_mut().insert(FALLBACKS_HEADER, HeaderValue::from(u16::from(written.fallbacks)));
    }
    response
}

fn context_header(context: &Context) -> [(&'static str, HeaderValue); 1] {
    // base64url is always a valid header value.
    let value = HeaderValue::from_str(&encode_context(context)).unwrap_or(HeaderValue::from_static(""));
    [(CONTEXT_HEADER, value)]
}

fn context_of(headers: &HeaderMap) -> Result<Option<Context>, ApiError> {
    let Some(value) = headers.get(CONTEXT_HEADER) else { return Ok(None) };
    // Present but empty is meaningful: the write becomes a sibling of everything.
    Ok(Some(decode_context(value.as_bytes()).map_err(ApiError::from)?))
}

fn body_error(rejection: BytesRejection, max: u32) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        let message = format!("request body exceeds the limit of {max} bytes; nothing was written");
        return ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "value_too_large", message);
    }
    ApiError::bad_request("bad_body", rejection.body_text())
}

/// A body announced over the limit, refused before it is read.
pub(super) fn too_large(length: u64, max: u32) -> ApiError {
    let message = format!("value of {length} bytes exceeds the limit of {max} bytes; nothing was written");
    ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "value_too_large", message)
}

pub(super) fn base64_value(value: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(value)
}

/// The key from the raw path, percent-decoded to bytes. An empty key goes
/// to the node, which refuses it as on every interface.
fn key_of(uri: &Uri) -> Result<Vec<u8>, ApiError> {
    let raw = uri.path().strip_prefix(KV_PREFIX).unwrap_or_default();
    percent_decode(raw.as_bytes())
        .ok_or_else(|| ApiError::bad_request("bad_key", "the key has a '%' not followed by two hex digits"))
}

pub(super) fn percent_decode(text: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len());
    let mut bytes = text.iter();
    while let Some(&byte) = bytes.next() {
        if byte != b'%' {
            out.push(byte);
            continue;
        }
        let high = bytes.next().and_then(|digit| (*digit as char).to_digit(16))?;
        let low = bytes.next().and_then(|digit| (*digit as char).to_digit(16))?;
        out.push((high * 16 + low) as u8);
    }
    Some(out)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Access {
    Read,
    Write,
}

/// `r` for reads, `w` for writes, or `consistency` for either; the node's
/// default (quorum) when none is given.
/// Whether a read asks for this node's own copy (`local=true`), which
/// names no consistency: nothing else is asked.
fn local_read(uri: &Uri) -> Result<bool, ApiError> {
    let Query(query) = Query::<KvQuery>::try_from_uri(uri)
        .map_err(|rejection| ApiError::bad_request("bad_query", rejection.body_text()))?;
    let Some(text) = query.local.as_deref() else { return Ok(false) };
    let local = parse_bool(text).ok_or_else(|| {
        ApiError::bad_request("bad_query", format!("`local` is true or false, not {text:?}"))
    })?;
    if local && (query.r.is_some() || query.consistency.is_some()) {
        let message = "`local=true` reads this node's own copy: it takes no `r` or `consistency`";
        return Err(ApiError::bad_request("bad_query", message.to_string()));
    }
    Ok(local)
}

/// The consistency a request asks for, and for a write whether it is strict.
fn consistency(uri: &Uri, access: Access) -> Result<(Consistency, bool), ApiError> {
    let Query(query) = Query::<KvQuery>::try_from_uri(uri)
        .map_err(|rejection| ApiError::bad_request("bad_query", rejection.body_text()))?;
    if query.local.is_some() && access == Access::Write {
        let message = "`local` applies to reads: a write always goes to the key's replicas";
        return Err(ApiError::bad_request("bad_query", message.to_string()));
    }
    let strict = match (query.strict.as_deref(), access) {
        (None, _) => false,
        (Some(_), Access::Read) => {
            let message = "`strict` applies to writes: a read always asks the key's own replicas";
            return Err(ApiError::bad_request("bad_query", message.to_string()));
        }
        (Some(text), Access::Write) => parse_bool(text).ok_or_else(|| {
            ApiError::bad_request("bad_query", format!("`strict` is true or false, not {text:?}"))
        })?,
    };
    let (own, other, own_name, other_name) = match access {
        Access::Read => (query.r, query.w, "r", "w"),
        Access::Write => (query.w, query.r, "w", "r"),
    };
    if other.is_some() {
        let message =
            format!("`{other_name}` does not apply to this method; use `{own_name}` or `consistency`");
        return Err(ApiError::bad_request("bad_query", message));
    }
    let text = match (own, query.consistency) {
        (Some(_), Some(_)) => {
            let message = format!("give `{own_name}` or `consistency`, not both");
            return Err(ApiError::bad_request("bad_query", message));
        }
        (Some(text), None) | (None, Some(text)) => text,
        (None, None) => return Ok((Consistency::Quorum, strict)),
    };
    let consistency = text.parse().map_err(|error: keel_core::client::ParseConsistencyError| {
        ApiError::bad_request("bad_consistency", error.to_string())
    })?;
    Ok((consistency, strict))
}

/// `true` or `false`, in any case.
fn parse_bool(text: &str) -> Option<bool> {
    match text.to_ascii_lowercase().as_str() {
        "true" => Some(true),
        "false" => Some(false),
        _ => None,
    }
}
