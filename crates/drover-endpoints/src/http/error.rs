//! The one place where the HTTP device endpoint's refusals become responses:
//! `{"error": "<Kind>", "message": "..."}`, with `WWW-Authenticate` on 401 and `Retry-After`
//! on 429 and 503.

use std::time::Duration;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use drover_auth::device::{AuthError, DeviceAuthenticator, DeviceCredentials};
use drover_bus::BusError;
use serde_json::json;

/// A refusal of the HTTP endpoint.
#[derive(Debug)]
pub struct HttpError {
    pub status: StatusCode,
    pub kind: &'static str,
    pub message: String,
    /// Sent as `Retry-After` (seconds, rounded up).
    pub retry_after: Option<Duration>,
}

/// A refusal with `status`, `kind` and `message`.
pub fn error(status: StatusCode, kind: &'static str, message: impl Into<String>) -> HttpError {
    HttpError {
        status,
        kind,
        message: message.into(),
        retry_after: None,
    }
}

/// 400 BadRequest.
pub fn bad_request(message: impl Into<String>) -> HttpError {
    error(StatusCode::BAD_REQUEST, "BadRequest", message)
}

impl HttpError {
    /// A failed authentication: 503 when the registry cannot answer, 429 for a locked-out
    /// source, else 403 with a message that tells nothing (the reason is logged, at a limited
    /// rate).
    pub fn authentication(
        e: &AuthError,
        creds: &DeviceCredentials,
        auth: &DeviceAuthenticator,
    ) -> HttpError {
        if e.is_unavailable() {
            tracing::warn!("device authentication unavailable: {e}");
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailable",
                "device authentication is unavailable, retry later",
            );
        }
        if let Some(held_back) = auth.throttle().admit_log() {
            tracing::info!(credentials = ?creds, held_back, "device refused: {e}");
        }
        if let AuthError::Throttled(t) = e {
            return HttpError {
                retry_after: Some(t.retry_after),
                ..error(
                    StatusCode::TOO_MANY_REQUESTS,
                    "TooManyRequests",
                    t.to_string(),
                )
            };
        }
        error(
            StatusCode::FORBIDDEN,
            "AuthenticationError",
            "authentication failed",
        )
    }

    /// The event log refused an append: 413 for what is too large, 503 for what may work
    /// later, else 400.
    pub fn append(e: BusError) -> HttpError {
        match e {
            BusError::TooLarge(m) => error(StatusCode::PAYLOAD_TOO_LARGE, "PayloadTooLarge", m),
            e @ (BusError::Overloaded(_) | BusError::Unavailable(_) | BusError::Closed) => error(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailable",
                e.to_string(),
            ),
            e => bad_request(e.to_string()),
        }
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let mut r = (
            self.status,
            Json(json!({"error": self.kind, "message": self.message})),
        )
            .into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"drover\""),
            );
        }
        let retry_after = match (self.retry_after, self.status) {
            (Some(d), _) => Some(d.as_secs() + u64::from(d.subsec_nanos() > 0)),
            (None, StatusCode::SERVICE_UNAVAILABLE) => Some(1),
            _ => None,
        };
        if let Some(secs) = retry_after {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        }
        r
    }
}
