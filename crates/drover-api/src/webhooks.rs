//! `/api/registry/v1alpha1/apps/{app}/webhooks`: an application's webhook subscriptions —
//! create, list, read, delete, the state of their delivery and their dead letters. Reading
//! needs the reader role, creating and deleting the manager role, as for the application; a
//! caller who may not read the application gets 404. The signing secret is write-only.

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use drover_model::webhook::{DeadLetter, Webhook, WebhookInput, WebhookStatus};
use serde::Deserialize;
use utoipa::openapi::path::{Parameter, ParameterIn};
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult, ErrorInformation};
use crate::extract::{JsonBody, Path, Query};
use crate::openapi::NOT_FOUND_APP;
use crate::params::{query_param, AppPath, WebhookPath};
use crate::registry::BASE;
use crate::ApiState;

pub fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(list_webhooks, create_webhook))
        .routes(routes!(get_webhook, delete_webhook))
        .routes(routes!(webhook_status))
        .routes(routes!(dead_letters))
}

const NOT_FOUND: &str =
    "NotFound: no such webhook, or no such application, or the caller may not read it";
const FORBIDDEN_WRITE: &str =
    "AuthenticationError: the caller may read the application but not write to it";

/// List an application's webhook subscriptions, by name.
#[utoipa::path(get, path = "/apps/{app}/webhooks", tag = "webhooks", params(AppPath),
    responses((status = 200, description = "The subscriptions (secrets never shown)", body = [Webhook]),
        (status = 404, description = NOT_FOUND_APP, body = ErrorInformation)))]
async fn list_webhooks(
    State(s): State<ApiState>,
    Caller(who): Caller,
    Path(AppPath { app }): Path<AppPath>,
) -> ApiResult<Json<Vec<Webhook>>> {
    Ok(Json(s.registry.list_webhooks(&who, &app).await?))
}

/// Create a webhook subscription: the application's events (those its filters select) are
/// POSTed to `spec.url`, at least once and in order, from now on (`startAt: now`) or from the
/// oldest retained event (`earliest`). At most 20 per application.
#[utoipa::path(post, path = "/apps/{app}/webhooks", tag = "webhooks", params(AppPath), request_body = WebhookInput,
    responses((status = 201, description = "Created", body = Webhook,
            headers(("Location" = String, description = "The subscription's URL"))),
        (status = 400, description = "BadRequest: the spec breaks a rule (the message names the field), the URL is refused by the outbound address policy, or the application has the most subscriptions it may have", body = ErrorInformation),
        (status = 403, description = FORBIDDEN_WRITE, body = ErrorInformation),
        (status = 404, description = "NotFound or ReferenceNotFound: no such application, the caller may not read it, or it is being deleted", body = ErrorInformation),
        (status = 409, description = "Conflict: the name is taken", body = ErrorInformation)))]
async fn create_webhook(
    State(s): State<ApiState>,
    Caller(who): Caller,
    Path(AppPath { app }): Path<AppPath>,
    JsonBody(input): JsonBody<WebhookInput>,
) -> ApiResult<Response> {
    input.validate()?;
    drover_integrations::webhooks::check_spec(&s.settings.outbound, &input.spec)?;
    let webhook = s.registry.create_webhook(&who, &app, input).await?;
    if let Some(log) = &s.log {
        let (_, app_uid, _) = s
            .registry
            .webhook_status(&who, &app, &webhook.metadata.name)
            .await?;
        if let Err(e) =
            drover_integrations::webhooks::start_position(log.as_ref(), &app_uid, &webhook).await
        {
            // The delivery starts at the stream's end when it finds no committed offset.
            tracing::warn!(app = %app, webhook = %webhook.metadata.name, error = %drover_model::error::chain(&e),
                "cannot record where a new webhook starts");
        }
    }
    tracing::info!(app = %app, webhook = %webhook.metadata.name, user = who.name(), "webhook created");
    let location = format!(
        "{BASE}/apps/{}/webhooks/{}",
        crate::encode_segment(&app),
        crate::encode_segment(&webhook.metadata.name)
    );
    let mut resp = (StatusCode::CREATED, Json(webhook)).into_response();
    if let Ok(v) = HeaderValue::from_str(&location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    Ok(resp)
}

/// Read a webhook subscription (its secret is never shown; `signed` says whether it has one).
#[utoipa::path(get, path = "/apps/{app}/webhooks/{webhook}", tag = "webhooks", params(WebhookPath),
    responses((status = 200, description = "The subscription", body = Webhook),
        (status = 404, description = NOT_FOUND, body = ErrorInformation)))]
async fn get_webhook(
    State(s): State<ApiState>,
    Caller(who): Caller,
    Path(WebhookPath { app, webhook }): Path<WebhookPath>,
) -> ApiResult<Json<Webhook>> {
    Ok(Json(s.registry.get_webhook(&who, &app, &webhook).await?))
}

/// Delete a webhook subscription and its dead letters; its delivery stops within seconds.
#[utoipa::path(delete, path = "/apps/{app}/webhooks/{webhook}", tag = "webhooks", params(WebhookPath),
    responses((status = 204, description = "Deleted"),
        (status = 403, description = FORBIDDEN_WRITE, body = ErrorInformation),
        (status = 404, description = NOT_FOUND, body = ErrorInformation)))]
async fn delete_webhook(
    State(s): State<ApiState>,
    Caller(who): Caller,
    Path(WebhookPath { app, webhook }): Path<WebhookPath>,
) -> ApiResult<StatusCode> {
    s.registry.delete_webhook(&who, &app, &webhook).await?;
    tracing::info!(app = %app, webhook = %webhook, user = who.name(), "webhook deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// How a subscription's delivery goes: events delivered and given up, the attempt of a
/// request being retried, how far behind the stream it is (`lag`, events), the last error,
/// whether the Event Grid handshake was done, and which node delivers it.
#[utoipa::path(get, path = "/apps/{app}/webhooks/{webhook}/status", tag = "webhooks", params(WebhookPath),
    responses((status = 200, description = "The delivery's state", body = WebhookStatus),
        (status = 404, description = NOT_FOUND, body = ErrorInformation)))]
async fn webhook_status(
    State(s): State<ApiState>,
    Caller(who): Caller,
    Path(WebhookPath { app, webhook }): Path<WebhookPath>,
) -> ApiResult<Json<WebhookStatus>> {
    let (webhook, app_uid, mut status) = s.registry.webhook_status(&who, &app, &webhook).await?;
    if let Some(log) = &s.log {
        if let Err(e) =
            drover_integrations::webhooks::position(log.as_ref(), &app_uid, &webhook, &mut status)
                .await
        {
            tracing::debug!(app = %app, error = %e, "webhook status without lag");
        }
    }
    Ok(Json(status))
}

/// `after` and `limit` of the dead-letter list.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeadLetterQuery {
    after: Option<u64>,
    limit: Option<u32>,
}

impl IntoParams for DeadLetterQuery {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        let number = |max: usize| {
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .minimum(Some(0))
                .maximum(Some(max))
                .build()
        };
        vec![
            query_param(
                "after",
                "Only dead letters after this `seq` (paging)",
                false,
                number(i64::MAX as usize),
            ),
            query_param(
                "limit",
                "At most this many (default and most: 1000)",
                false,
                number(drover_registry::webhook::MAX_DEAD_LETTER_PAGE),
            ),
        ]
    }
}

/// The events a subscription gave up on (after its retry budget, or at once for answers no
/// retry can fix), oldest first, with the last failure; the newest 1000 are kept.
#[utoipa::path(get, path = "/apps/{app}/webhooks/{webhook}/dead-letters", tag = "webhooks", params(WebhookPath, DeadLetterQuery),
    responses((status = 200, description = "Dead letters", body = [DeadLetter]),
        (status = 404, description = NOT_FOUND, body = ErrorInformation)))]
async fn dead_letters(
    State(s): State<ApiState>,
    Caller(who): Caller,
    Path(WebhookPath { app, webhook }): Path<WebhookPath>,
    Query(q): Query<DeadLetterQuery>,
) -> ApiResult<Json<Vec<DeadLetter>>> {
    let max = drover_registry::webhook::MAX_DEAD_LETTER_PAGE;
    let limit = q.limit.map(|l| l as usize).unwrap_or(max);
    if limit > max {
        return Err(ApiError::BadRequest(format!("limit: at most {max}")));
    }
    let after = q.after.unwrap_or(0);
    if after > i64::MAX as u64 {
        return Err(ApiError::BadRequest("after: too large".into()));
    }
    Ok(Json(
        s.registry
            .dead_letters(&who, &app, &webhook, after, limit)
            .await?,
    ))
}
