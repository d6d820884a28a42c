//! The one place where errors become HTTP responses: `{"error": "<Kind>", "message": "..."}`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use drover_registry::RegistryError;
use serde::Serialize;
use utoipa::ToSchema;

/// The error body of every failed request.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorInformation {
    /// NotFound, Conflict, OptimisticLockFailed, ReferenceNotFound, BadRequest, AuthenticationError,
    /// PayloadTooLarge, ServiceUnavailable, InternalError.
    pub error: String,
    pub message: String,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    OptimisticLockFailed(String),
    #[error("{0}")]
    ReferenceNotFound(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    Gone(String),
    #[error("{0}")]
    DeviceUnreachable(String),
    /// A caller waits for the answer of a device that cannot be reached (IoT Hub's 404 for a
    /// direct method to an offline device).
    #[error("{0}")]
    DeviceNotOnline(String),
    #[error("{0}")]
    TooManyRequests(String),
    /// Too many failed authentications from the caller's address.
    #[error(transparent)]
    Throttled(drover_auth::throttle::Throttled),
    #[error("{0}")]
    Timeout(String),
    #[error("{0}")]
    BadGateway(String),
    #[error("{0}")]
    MethodNotAllowed(String),
    #[error("{0}")]
    NotImplemented(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::NotFound(_) | ApiError::ReferenceNotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) | ApiError::OptimisticLockFailed(_) => StatusCode::CONFLICT,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Gone(_) => StatusCode::GONE,
            ApiError::DeviceUnreachable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::DeviceNotOnline(_) => StatusCode::NOT_FOUND,
            ApiError::TooManyRequests(_) | ApiError::Throttled(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            ApiError::BadGateway(_) => StatusCode::BAD_GATEWAY,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::NotImplemented(_) => StatusCode::NOT_IMPLEMENTED,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            ApiError::NotFound(_) => "NotFound",
            ApiError::Conflict(_) => "Conflict",
            ApiError::OptimisticLockFailed(_) => "OptimisticLockFailed",
            ApiError::ReferenceNotFound(_) => "ReferenceNotFound",
            ApiError::BadRequest(_) => "BadRequest",
            ApiError::Unauthorized(_) | ApiError::Forbidden(_) => "AuthenticationError",
            ApiError::PayloadTooLarge(_) => "PayloadTooLarge",
            ApiError::Gone(_) => "Gone",
            ApiError::DeviceUnreachable(_) => "DeviceUnreachable",
            ApiError::DeviceNotOnline(_) => "DeviceNotOnline",
            ApiError::TooManyRequests(_) | ApiError::Throttled(_) => "TooManyRequests",
            ApiError::Timeout(_) => "Timeout",
            ApiError::BadGateway(_) => "ExternalEndpointError",
            ApiError::MethodNotAllowed(_) => "MethodNotAllowed",
            ApiError::NotImplemented(_) => "NotImplemented",
            ApiError::Unavailable(_) => "ServiceUnavailable",
            ApiError::Internal(_) => "InternalError",
        }
    }
}

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> Self {
        match e {
            RegistryError::NotFound(m) => ApiError::NotFound(m),
            RegistryError::Conflict(m) => ApiError::Conflict(m),
            RegistryError::OptimisticLockFailed(m) => ApiError::OptimisticLockFailed(m),
            RegistryError::ReferenceNotFound(m) => ApiError::ReferenceNotFound(m),
            RegistryError::BadRequest(m) => ApiError::BadRequest(m),
            RegistryError::Forbidden(m) => ApiError::Forbidden(m),
            RegistryError::Unauthorized(m) => ApiError::Unauthorized(m),
            RegistryError::Unavailable(m) => ApiError::Unavailable(m.to_string()),
            RegistryError::Internal(m) => ApiError::Internal(m.to_string()),
        }
    }
}

impl From<drover_model::ValidationError> for ApiError {
    fn from(e: drover_model::ValidationError) -> Self {
        ApiError::BadRequest(e.0)
    }
}

impl From<drover_integrations::commands::EndpointRefused> for ApiError {
    fn from(e: drover_integrations::commands::EndpointRefused) -> Self {
        ApiError::BadRequest(e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        match &self {
            ApiError::Internal(m) => tracing::error!(error = %m, "internal error"),
            ApiError::Unavailable(m) => tracing::warn!(error = %m, "service unavailable"),
            _ => tracing::debug!(status = status.as_u16(), error = %self, "request failed"),
        }
        let body = ErrorInformation {
            error: self.kind().to_string(),
            message: self.to_string(),
        };
        let mut resp = (status, axum::Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"drover\""),
            );
        }
        let retry_after = match &self {
            ApiError::Throttled(t) => Some(t.retry_after.as_secs() + 1),
            _ if status == StatusCode::SERVICE_UNAVAILABLE => Some(1),
            _ => None,
        };
        if let Some(secs) = retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
