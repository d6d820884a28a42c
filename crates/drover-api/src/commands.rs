//! `/api/command/v1alpha1`: commands to devices, one-way or request/response.

use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use drover_bus::commands::{CommandError, Outcome};
use drover_integrations::commands::{CommandRequest, SendError, MAX_TIMEOUT, MAX_TTL};
use serde::Deserialize;
use utoipa::openapi::path::{Parameter, ParameterIn};
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::Object;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult, ErrorInformation};
use crate::extract::{Path, Query, RawBody};
use crate::params::{query_param, DevicePath};
use crate::ApiState;

/// Longest command name in bytes, as the command service checks it (documented in characters).
const MAX_COMMAND_NAME: usize = 255;
/// Command names as the command service checks them: no `/`, `+`, `#` (they travel in MQTT
/// topics) and no control characters.
const COMMAND_NAME_PATTERN: &str = "^[^/+#\\x00-\\x1f\\x7f-\\x9f]+$";

pub fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new().routes(routes!(send_command))
}

/// The query of a command.
#[derive(Debug, Deserialize)]
pub struct CommandQuery {
    command: String,
    timeout: Option<u64>,
    ttl: Option<u64>,
}

impl IntoParams for CommandQuery {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![
            query_param(
                "command",
                "The command's name (delivered on `command/inbox//<command>` or in the `command` \
                 header): 1 to 255 bytes without `/`, `+`, `#` or control characters.",
                true,
                command_name(),
            ),
            query_param(
                "timeout",
                "Seconds to wait for the device's reply (request/response): the answer is the \
                 device's status and body, or 504 when none came in time. Extension of the \
                 Drogue contract.",
                false,
                seconds(MAX_TIMEOUT),
            ),
            query_param(
                "ttl",
                "Seconds the command may wait for a device that cannot be reached now. Without \
                 it, an unreachable device is an error (503; 404 when the caller waits). Extension of the Drogue contract.",
                false,
                seconds(MAX_TTL),
            ),
        ]
    }
}

fn seconds(max: u64) -> Object {
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .minimum(Some(1))
        .maximum(Some(max as usize))
        .build()
}

fn command_name() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(COMMAND_NAME_PATTERN))
        .min_length(Some(1))
        .max_length(Some(MAX_COMMAND_NAME))
        .build()
}

/// Send a command to a device: 202 once it was handed to a connection of the device (or of a
/// gateway acting for it) or queued (`ttl`); with `timeout`, the device's reply. The body is the
/// command's payload. Needs the manager role (write) on the application.
#[utoipa::path(post, path = "/api/command/v1alpha1/apps/{app}/devices/{device}", tag = "commands",
    params(DevicePath, CommandQuery),
    request_body(content = Vec<u8>, description = "The command's payload", content_type = "application/octet-stream"),
    responses((status = 202, description = "Delivered to the device's connection, or queued (ttl)"),
        (status = 200, description = "With timeout: the device's reply (its status and body)"),
        (status = 403, description = "AuthenticationError: the caller may read the application but not write to it (manager role)", body = ErrorInformation),
        (status = 404, description = "NotFound: no such device or application, or the caller may not read it; DeviceNotOnline: with timeout and no ttl, the device cannot be reached now", body = ErrorInformation),
        (status = 409, description = "Conflict: the device or application is disabled", body = ErrorInformation),
        (status = 429, description = "TooManyRequests: the device's command queue is full", body = ErrorInformation),
        (status = 502, description = "ExternalEndpointError: the device's external command endpoint failed", body = ErrorInformation),
        (status = 503, description = "DeviceUnreachable: the device cannot be reached now (no ttl nor timeout given)", body = ErrorInformation),
        (status = 504, description = "Timeout: with timeout, no reply came in time", body = ErrorInformation)))]
async fn send_command(
    State(s): State<ApiState>,
    Caller(who): Caller,
    Path(DevicePath { app, device }): Path<DevicePath>,
    Query(q): Query<CommandQuery>,
    headers: HeaderMap,
    RawBody(body): RawBody,
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
        // A call that waits for the answer is a direct method in IoT Hub's terms, and an
        // offline device is its 404.
        SendError::Routing(e @ CommandError::Unreachable(_)) if timeout.is_some() => {
            ApiError::DeviceNotOnline(e.to_string())
        }
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
