//! `/api/command/v1alpha1`: commands to devices, one-way or request/response.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use drover_bus::commands::{Command, CommandError, Outcome};
use drover_bus::StreamKey;
use drover_model::{Event, Permission};
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult, ErrorInformation};
use crate::extract::{Path, Query};
use crate::ApiState;

/// Longest `timeout` (seconds) a caller may wait for a reply.
pub const MAX_TIMEOUT: u64 = 300;
/// Longest `ttl` (seconds) a command may wait for an offline device.
pub const MAX_TTL: u64 = 7 * 24 * 3600;

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

fn validate_name(name: &str) -> ApiResult<()> {
    if name.is_empty()
        || name.len() > 255
        || name.contains(['/', '+', '#'])
        || name.chars().any(char::is_control)
    {
        return Err(ApiError::BadRequest(format!(
            "invalid command name '{name}': 1 to 255 characters without '/', '+', '#' or control characters"
        )));
    }
    Ok(())
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
    validate_name(&q.command)?;
    let timeout = match q.timeout {
        Some(t) if t == 0 || t > MAX_TIMEOUT => {
            return Err(ApiError::BadRequest(format!(
                "timeout must be 1 to {MAX_TIMEOUT} seconds"
            )))
        }
        t => t,
    };
    let ttl = match q.ttl {
        Some(t) if t == 0 || t > MAX_TTL => {
            return Err(ApiError::BadRequest(format!(
                "ttl must be 1 to {MAX_TTL} seconds"
            )))
        }
        t => t,
    };
    let application = s.registry.authorize(&who, &app, Permission::Write).await?;
    let target = s.registry.get_device(&who, &app, &device).await?;
    let (Some(router), Some(log)) = (&s.commands, &s.log) else {
        return Err(ApiError::Unavailable(
            "commands are not available on this node".into(),
        ));
    };
    if application.is_deleting() || drover_model::spec::disabled(&application.spec) {
        return Err(ApiError::Conflict(format!(
            "application '{app}' is disabled or being deleted"
        )));
    }
    if target.is_deleting() || drover_model::spec::disabled(&target.spec) {
        return Err(ApiError::Conflict(format!(
            "device '{device}' is disabled or being deleted"
        )));
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let command = Command {
        id: uuid::Uuid::new_v4().to_string(),
        app: app.clone(),
        app_uid: application.metadata.uid.clone(),
        device: target.metadata.name.clone(),
        name: q.command.clone(),
        payload: body.clone(),
        content_type: content_type.clone(),
        expects_reply: timeout.is_some(),
    };
    // The device itself first, then the gateways it names.
    let gateways = drover_model::spec::gateways(&target.spec);
    let targets: Vec<_> = std::iter::once(target.metadata.name.clone())
        .chain(gateways.iter().cloned())
        .map(|d| (application.metadata.uid.clone(), d))
        .collect();
    let reply = match timeout {
        Some(_) => {
            let responders = targets.iter().map(|(_, d)| d.clone()).collect();
            Some(
                router
                    .expect_reply(&command, responders)
                    .map_err(|e| ApiError::Unavailable(e.to_string()))?,
            )
        }
        None => None,
    };
    let event = command_event(&command, &target, &s.settings.version);
    let outcome = router.send(command.clone(), &targets, ttl.map(Duration::from_secs));
    let outcome = match outcome {
        Ok(o) => o,
        Err(e) => {
            router.forget(&command.id);
            return Err(match e {
                CommandError::Unreachable(_) => ApiError::DeviceUnreachable(e.to_string()),
                CommandError::QueueFull(..) => ApiError::TooManyRequests(e.to_string()),
                CommandError::TooManyWaiting(_) => ApiError::Unavailable(e.to_string()),
            });
        }
    };
    // Audit: every command is in the application's stream.
    let stream = StreamKey::new(app.clone(), application.metadata.uid.clone());
    if let Err(e) = log.append(&stream, event).await {
        tracing::warn!(app = %app, "cannot record the command in the event stream: {e}");
    }
    tracing::info!(app = %app, device = %device, command = %q.command, ?outcome, user = who.name(), "command sent");
    let Some(reply) = reply else {
        return Ok(StatusCode::ACCEPTED.into_response());
    };
    let waited = timeout.unwrap_or(1);
    match tokio::time::timeout(Duration::from_secs(waited), reply).await {
        Ok(Ok(r)) => {
            let status = StatusCode::from_u16(r.status).unwrap_or(StatusCode::OK);
            let mut resp = (status, r.payload).into_response();
            if let Some(ct) = r.content_type.and_then(|c| HeaderValue::from_str(&c).ok()) {
                resp.headers_mut().insert(header::CONTENT_TYPE, ct);
            }
            Ok(resp)
        }
        _ => {
            router.forget(&command.id);
            let how = if outcome == Outcome::Queued {
                "queued, but no reply came"
            } else {
                "delivered, but no reply came"
            };
            Err(ApiError::Timeout(format!(
                "command '{}' {how} within {waited} s",
                q.command
            )))
        }
    }
}

fn command_event(c: &Command, device: &drover_model::Resource, _version: &str) -> Event {
    let mut extensions = vec![("commandid".to_string(), c.id.clone())];
    extensions.push(("command".to_string(), c.name.clone()));
    Event {
        id: uuid::Uuid::new_v4().to_string(),
        ty: drover_model::event::COMMAND_TYPE.to_string(),
        channel: c.name.clone(),
        time: chrono::Utc::now(),
        content_type: c.content_type.clone(),
        data_schema: None,
        application: c.app.clone(),
        application_uid: c.app_uid.clone(),
        device: c.device.clone(),
        device_uid: device.metadata.uid.clone(),
        sender: c.device.clone(),
        sender_uid: device.metadata.uid.clone(),
        instance: "api".to_string(),
        extensions,
        data: c.payload.clone(),
    }
}
