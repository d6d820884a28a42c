//! `/api/registry/v1alpha1`: applications and devices.

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use drover_model::{Resource, ResourceInput, Selector};
use drover_registry::{ListOptions, Listing, Preconditions};
use serde::Deserialize;
use utoipa::openapi::path::{Parameter, ParameterIn};
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Caller;
use crate::error::{ApiResult, ErrorInformation};
use crate::extract::{body_bytes, parse_json, JsonBody, Path, Query};
use crate::openapi::NOT_FOUND_APP;
use crate::params::{AppPath, DevicePath};
use crate::ApiState;

pub const BASE: &str = "/api/registry/v1alpha1";
/// Response header of lists: the registry revision the list was read at (start a watch there).
pub const REVISION_HEADER: &str = "drover-revision";

pub fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(list_apps, create_app))
        .routes(routes!(get_app, update_app, delete_app))
        .routes(routes!(list_devices, create_device))
        .routes(routes!(get_device, update_device, delete_device))
}

/// `labels`, `limit` and `offset` (documented in [`crate::params::list_params`]).
#[derive(Debug, Deserialize)]
pub struct ListQuery {
    labels: Option<String>,
    limit: Option<u32>,
    offset: Option<u32>,
}

impl IntoParams for ListQuery {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        crate::params::list_params()
    }
}

impl ListQuery {
    fn options(&self) -> ApiResult<ListOptions> {
        let selector = match &self.labels {
            Some(s) => s.parse::<Selector>()?,
            None => Selector::default(),
        };
        Ok(ListOptions {
            selector,
            limit: self.limit.map(|l| l as usize),
            offset: self.offset.unwrap_or(0) as usize,
        })
    }
}

fn listing(l: Listing<Resource>) -> Response {
    let mut resp = Json(l.items).into_response();
    resp.headers_mut()
        .insert(REVISION_HEADER, HeaderValue::from(l.revision));
    resp
}

fn created(location: String, res: Resource) -> Response {
    let mut resp = (StatusCode::CREATED, Json(res)).into_response();
    if let Ok(v) = HeaderValue::from_str(&location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}

/// External command endpoints the outbound address policy refuses outright (a literal address or
/// `localhost`) are refused before the registry sees the device; names are judged when a command
/// is sent.
fn check_command_endpoints(s: &ApiState, input: &ResourceInput) -> ApiResult<()> {
    Ok(drover_integrations::commands::check_endpoints(
        &s.settings.outbound,
        &input.spec,
    )?)
}

/// `DELETE` bodies: optional `{"preconditions": {"uid", "resourceVersion"}}` (no body, or
/// `null`: none).
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeleteParams {
    #[serde(default)]
    preconditions: Preconditions,
}

async fn delete_params(req: Request, state: &ApiState) -> ApiResult<Preconditions> {
    let bytes = body_bytes(req, state).await?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Preconditions::default());
    }
    Ok(parse_json::<Option<DeleteParams>>(&bytes)?
        .unwrap_or_default()
        .preconditions)
}

use crate::encode_segment as path_segment;

// Descriptions of answers several operations give.
const NOT_FOUND_DEVICE: &str =
    "NotFound: no such device, or no such application, or the caller may not read it";
const FORBIDDEN_WRITE: &str =
    "AuthenticationError: the caller may read the application but not write to it";
const OPTIMISTIC_LOCK: &str =
    "OptimisticLockFailed: `uid` or `resourceVersion` does not match the stored resource";
const PRECONDITIONS: &str =
    "OptimisticLockFailed: the preconditions (`uid`, `resourceVersion`) do not match";

/// List the applications the caller may read, ordered by name.
#[utoipa::path(get, path = "/apps", tag = "registry", params(ListQuery),
    responses((status = 200, description = "Applications", body = [Resource],
        headers(("drover-revision" = u64, description = "Registry revision of this list")))))]
async fn list_apps(
    State(s): State<ApiState>,
    Caller(who): Caller,
    Query(q): Query<ListQuery>,
) -> ApiResult<Response> {
    Ok(listing(s.registry.list_apps(&who, &q.options()?).await?))
}

/// Create an application; the caller becomes its owner.
#[utoipa::path(post, path = "/apps", tag = "registry", request_body = ResourceInput,
    responses((status = 201, description = "Created", body = Resource,
            headers(("Location" = String, description = "The application's URL"))),
        (status = 409, description = "Conflict: the name is taken", body = ErrorInformation)))]
async fn create_app(
    State(s): State<ApiState>,
    Caller(who): Caller,
    JsonBody(input): JsonBody<ResourceInput>,
) -> ApiResult<Response> {
    let app = s.registry.create_app(&who, input).await?;
    tracing::info!(app = %app.metadata.name, user = who.name(), "application created");
    Ok(created(
        format!("{BASE}/apps/{}", path_segment(&app.metadata.name)),
        app,
    ))
}

/// Read an application.
#[utoipa::path(get, path = "/apps/{app}", tag = "registry", params(AppPath),
    responses((status = 200, description = "The application", body = Resource),
        (status = 404, description = NOT_FOUND_APP, body = ErrorInformation)))]
async fn get_app(
    State(s): State<ApiState>,
    Caller(who): Caller,
    Path(AppPath { app }): Path<AppPath>,
) -> ApiResult<Json<Resource>> {
    Ok(Json(s.registry.get_app(&who, &app).await?))
}

/// Update an application. `uid` and `resourceVersion`, when sent, must match (optimistic locking).
#[utoipa::path(put, path = "/apps/{app}", tag = "registry", params(AppPath), request_body = ResourceInput,
    responses((status = 204, description = "Updated (or nothing changed)"),
        (status = 403, description = FORBIDDEN_WRITE, body = ErrorInformation),
        (status = 404, description = NOT_FOUND_APP, body = ErrorInformation),
        (status = 409, description = OPTIMISTIC_LOCK, body = ErrorInformation)))]
async fn update_app(
    State(s): State<ApiState>,
    Caller(who): Caller,
    Path(AppPath { app }): Path<AppPath>,
    JsonBody(input): JsonBody<ResourceInput>,
) -> ApiResult<StatusCode> {
    s.registry.update_app(&who, &app, input).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Delete an application and its devices. With finalizers (or devices holding finalizers) the
/// application is marked deleted and goes when they are removed.
#[utoipa::path(delete, path = "/apps/{app}", tag = "registry", params(AppPath), request_body(content = Option<DeleteParams>),
    responses((status = 204, description = "Deleted or marked for deletion"),
        (status = 403, description = "AuthenticationError: the caller may read the application but not administer it", body = ErrorInformation),
        (status = 404, description = NOT_FOUND_APP, body = ErrorInformation),
        (status = 409, description = PRECONDITIONS, body = ErrorInformation)))]
async fn delete_app(
    State(s): State<ApiState>,
    Caller(who): Caller,
    Path(AppPath { app }): Path<AppPath>,
    req: Request,
) -> ApiResult<StatusCode> {
    let pre = delete_params(req, &s).await?;
    s.registry.delete_app(&who, &app, pre).await?;
    tracing::info!(app = %app, user = who.name(), "application deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// List the devices of an application, ordered by name.
#[utoipa::path(get, path = "/apps/{app}/devices", tag = "registry", params(AppPath, ListQuery),
    responses((status = 200, description = "Devices (secrets redacted for readers)", body = [Resource],
            headers(("drover-revision" = u64, description = "Registry revision of this list"))),
        (status = 404, description = NOT_FOUND_APP, body = ErrorInformation)))]
async fn list_devices(
    State(s): State<ApiState>,
    Caller(who): Caller,
    Path(AppPath { app }): Path<AppPath>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Response> {
    Ok(listing(
        s.registry.list_devices(&who, &app, &q.options()?).await?,
    ))
}

/// Create a device. Plain passwords are stored as sha512-crypt hashes.
#[utoipa::path(post, path = "/apps/{app}/devices", tag = "registry", params(AppPath), request_body = ResourceInput,
    responses((status = 201, description = "Created", body = Resource,
            headers(("Location" = String, description = "The device's URL"))),
        (status = 400, description = "BadRequest: also an external command endpoint the outbound address policy refuses", body = ErrorInformation),
        (status = 403, description = FORBIDDEN_WRITE, body = ErrorInformation),
        (status = 404, description = "ReferenceNotFound: the application is missing, not readable by the caller, or being deleted", body = ErrorInformation),
        (status = 409, description = "Conflict: the name, an alias or a username is taken", body = ErrorInformation)))]
async fn create_device(
    State(s): State<ApiState>,
    Caller(who): Caller,
    Path(AppPath { app }): Path<AppPath>,
    JsonBody(input): JsonBody<ResourceInput>,
) -> ApiResult<Response> {
    check_command_endpoints(&s, &input)?;
    let dev = s.registry.create_device(&who, &app, input).await?;
    Ok(created(
        format!(
            "{BASE}/apps/{}/devices/{}",
            path_segment(&app),
            path_segment(&dev.metadata.name)
        ),
        dev,
    ))
}

/// Read a device.
#[utoipa::path(get, path = "/apps/{app}/devices/{device}", tag = "registry", params(DevicePath),
    responses((status = 200, description = "The device (secrets redacted for readers)", body = Resource),
        (status = 404, description = NOT_FOUND_DEVICE, body = ErrorInformation)))]
async fn get_device(
    State(s): State<ApiState>,
    Caller(who): Caller,
    Path(DevicePath { app, device }): Path<DevicePath>,
) -> ApiResult<Json<Resource>> {
    Ok(Json(s.registry.get_device(&who, &app, &device).await?))
}

/// Update a device (optimistic locking as for applications).
#[utoipa::path(put, path = "/apps/{app}/devices/{device}", tag = "registry", params(DevicePath), request_body = ResourceInput,
    responses((status = 204, description = "Updated (or nothing changed)"),
        (status = 400, description = "BadRequest: also an external command endpoint the outbound address policy refuses", body = ErrorInformation),
        (status = 403, description = FORBIDDEN_WRITE, body = ErrorInformation),
        (status = 404, description = NOT_FOUND_DEVICE, body = ErrorInformation),
        (status = 409, description = "OptimisticLockFailed: `uid` or `resourceVersion` does not match the stored device; or Conflict: an alias or username is taken", body = ErrorInformation)))]
async fn update_device(
    State(s): State<ApiState>,
    Caller(who): Caller,
    Path(DevicePath { app, device }): Path<DevicePath>,
    JsonBody(input): JsonBody<ResourceInput>,
) -> ApiResult<StatusCode> {
    check_command_endpoints(&s, &input)?;
    s.registry.update_device(&who, &app, &device, input).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Delete a device (soft while it has finalizers).
#[utoipa::path(delete, path = "/apps/{app}/devices/{device}", tag = "registry", params(DevicePath), request_body(content = Option<DeleteParams>),
    responses((status = 204, description = "Deleted or marked for deletion"),
        (status = 403, description = FORBIDDEN_WRITE, body = ErrorInformation),
        (status = 404, description = NOT_FOUND_DEVICE, body = ErrorInformation),
        (status = 409, description = PRECONDITIONS, body = ErrorInformation)))]
async fn delete_device(
    State(s): State<ApiState>,
    Caller(who): Caller,
    Path(DevicePath { app, device }): Path<DevicePath>,
    req: Request,
) -> ApiResult<StatusCode> {
    let pre = delete_params(req, &s).await?;
    s.registry.delete_device(&who, &app, &device, pre).await?;
    Ok(StatusCode::NO_CONTENT)
}
