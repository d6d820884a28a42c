//! `/api/command/v1alpha1`: commands to devices, one-way or request/response.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use drover_bus::commands::{CommandError, Outcome};
use drover_integrations::commands::{CommandRequest, SendError};
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult, ErrorInformation};
use crate::extract::{Path, Query};
use crate::ApiState;

pub fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new().routes(routes!(send_command))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CommandQuery {
    /// The command's name (delivered on `command/inbox//<command>` or in the `command` header).
    command: String,
    /// Seconds to wait for the device's reply (request/response): the answer is the device's
    /// status and body, or 504 when none came in time. Extension of the Drogue contract.
    timeout: Option<u64>,
    /// Seconds the command may wait for a device that cannot be reached now. Without it, an
    /// unreachable device is an error (503). Extension of the Drogue contract.
    ttl: Option<u64>,
}

/// Send a command to a device: 202 once it was handed to a connection of the device (or of a
/// gateway acting for it) or queued (`ttl`); with `timeout`, the device's reply. The body is the
/// command's payload. Needs the manager role (write) on the application.
#[utoipa::path(post, path = "/api/command/v1alpha1/apps/{app}/devices/{device}", tag = "commands",
    params(("app" = String, Path), ("device" = String, Path), CommandQuery),
    request_body(content = Vec<u8>, description = "The command's payload", content_type = "application/octet-stream"),
    responses((status = 202, description = "Delivered to the device's connection, or queued (ttl)"),
        (status = 200, description = "With timeout: the device's reply (its status and body)"),
        (status = 400, body = ErrorInformation), (status = 404, body = ErrorInformation),
        (status = 409, description = "The device or application is disabled", body = ErrorInformation),
        (status = 429, description = "The device's queue is full", body = ErrorInformation),
        (status = 503, description = "The device cannot be reached now (no ttl given)", body = ErrorInformation),
        (status = 504, description = "With timeout: no reply in time", body = ErrorInformation)))]
async fn send_command(
    State(s): State<ApiState>,
    Caller(who): Caller,
    Path((app, device)): Path<(String, String)>,
    Query(q): Query<CommandQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let Some(service) = &s.commands else {
        return Err(ApiError::Unavailable(
            "commands are not available on this node".into(),
        ));
    };
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let request = CommandRequest {
        app,
        device,
        name: q.command.clone(),
        payload: body,
        content_type,
        timeout: q.timeout.map(Duration::from_secs),
        ttl: q.ttl.map(Duration::from_secs),
    };
    let timeout = request.timeout;
    let sent = service.send(&who, request).await.map_err(|e| match e {
        SendError::Invalid(m) => ApiError::BadRequest(m),
        SendError::Registry(e) => e.into(),
        SendError::Disabled(m) => ApiError::Conflict(m),
        SendError::Routing(e @ CommandError::Unreachable(_)) => {
            ApiError::DeviceUnreachable(e.to_string())
        }
        SendError::Routing(e @ CommandError::QueueFull(..)) => {
            ApiError::TooManyRequests(e.to_string())
        }
        SendError::Routing(e) => ApiError::Unavailable(e.to_string()),
        e @ SendError::External(_) => ApiError::BadGateway(e.to_string()),
    })?;
    let Some(timeout) = timeout else {
        return Ok(StatusCode::ACCEPTED.into_response());
    };
    let queued = sent.outcome == Outcome::Queued;
    match service.wait(sent, timeout).await {
        Some(r) => {
            let status = StatusCode::from_u16(r.status).unwrap_or(StatusCode::OK);
            let mut resp = (status, r.payload).into_response();
            if let Some(ct) = r.content_type.and_then(|c| HeaderValue::from_str(&c).ok()) {
                resp.headers_mut().insert(header::CONTENT_TYPE, ct);
            }
            Ok(resp)
        }
        None => {
            let how = if queued {
                "was queued, but no reply came"
            } else {
                "was delivered, but no reply came"
            };
            Err(ApiError::Timeout(format!(
                "command '{}' {how} within {} s",
                q.command,
                timeout.as_secs()
            )))
        }
    }
}
