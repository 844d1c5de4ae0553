//! JSON errors: `{"error":{"code":"…","message":"…"}}` with the status that
//! tells a client what happened before it reads the body.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use keel_core::client::{ClientError, Context};
use serde::Serialize;

use super::CONTEXT_HEADER;
use crate::service::{encode_context, error_code};

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Sent in the context header: a 404 carries what the read saw.
    pub context: Option<Context>,
}

#[derive(Serialize)]
pub(crate) struct Body<'a> {
    pub error: Detail<'a>,
}

#[derive(Serialize)]
pub(crate) struct Detail<'a> {
    pub code: &'a str,
    pub message: &'a str,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { status, code, message: message.into(), context: None }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn not_found(context: Context) -> ApiError {
        ApiError {
            context: Some(context),
            ..ApiError::new(StatusCode::NOT_FOUND, "not_found", "key not found")
        }
    }
}

/// The status for each node error. Unavailable and Overloaded are 503 (retry
/// elsewhere or later); Timeout is 504 and indeterminate for writes.
pub fn status_of(error: &ClientError) -> StatusCode {
    match error {
        ClientError::KeyTooLarge { .. } | ClientError::ValueTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        ClientError::BadConsistency { .. }
        | ClientError::BadContext { .. }
        | ClientError::KeyEmpty { .. } => StatusCode::BAD_REQUEST,
        ClientError::SiblingsTooMany { .. } => StatusCode::CONFLICT,
        ClientError::Unavailable { .. }
        | ClientError::Overloaded { .. }
        | ClientError::ShuttingDown
        | ClientError::CopiesUnreadable { .. }
        | ClientError::CoordinatorCopyUnreadable { .. } => StatusCode::SERVICE_UNAVAILABLE,
        ClientError::Timeout { .. } | ClientError::ReplyLost { .. } | ClientError::CoordinatorRestarted => {
            StatusCode::GATEWAY_TIMEOUT
        }
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl From<ClientError> for ApiError {
    fn from(error: ClientError) -> ApiError {
        ApiError::new(status_of(&error), error_code(&error), error.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Body { error: Detail { code: self.code, message: &self.message } };
        let mut response = (self.status, axum::Json(body)).into_response();
        let headers = response.headers_mut();
        if let Some(context) = &self.context {
            if let Ok(value) = HeaderValue::from_str(&encode_context(context)) {
                headers.insert(CONTEXT_HEADER, value);
            }
        }
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}
