//! `/api/provisioning/v1alpha1`: device provisioning (Azure DPS compatible) — the installation's
//! ID scope, each application's enrollments (individual ones by registration id, groups by
//! group id) and the records of registrations. Roles as for the application: reading needs the
//! reader role (enrollment keys are shown to its administrators only), writing the manager
//! role.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use drover_registry::provisioning::{Enrollment, EnrollmentKind, RegistrationRecord};
use serde::Deserialize;
use serde_json::{json, Value};
use utoipa::openapi::path::{Parameter, ParameterIn};
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult, ErrorInformation};
use crate::extract::{JsonBody, Path};
use crate::params::{app_param, path_param, AppPath};
use crate::ApiState;

pub const BASE: &str = "/api/provisioning/v1alpha1";

pub fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(info))
        .routes(routes!(list_enrollments))
        .routes(routes!(get_individual, put_individual, delete_individual))
        .routes(routes!(get_group, put_group, delete_group))
        .routes(routes!(list_registrations))
        .routes(routes!(delete_registration))
}

const NOT_FOUND: &str =
    "NotFound: no such enrollment or application, or the caller may not read it";
const FORBIDDEN_WRITE: &str =
    "AuthenticationError: the caller may read the application but not write to it";

/// `{app}/{id}`.
#[derive(Debug, Deserialize)]
struct IdPath {
    app: String,
    id: String,
}

impl IntoParams for IdPath {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![
            app_param(),
            path_param(
                "id",
                "The registration id (individual) or group id: 1 to 128 letters, digits, '-', '.', '_' or ':'",
                utoipa::openapi::schema::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::String)
                    .pattern(Some("^[A-Za-z0-9._:-]{1,128}$"))
                    .min_length(Some(1))
                    .max_length(Some(128))
                    .build(),
            ),
        ]
    }
}

/// The installation's ID scope: what devices give to provision.
#[utoipa::path(get, path = "/info", tag = "provisioning",
    responses((status = 200, description = "`{\"idScope\"}`", body = Object)))]
async fn info(State(s): State<ApiState>, Caller(_who): Caller) -> ApiResult<Json<Value>> {
    let scope = s.settings.id_scope.clone().ok_or_else(|| {
        ApiError::Unavailable("provisioning is not available on this node".into())
    })?;
    Ok(Json(json!({"idScope": scope})))
}

/// The application's enrollments, individual ones first (reader role; keys for administrators).
#[utoipa::path(get, path = "/apps/{app}/enrollments", tag = "provisioning", params(AppPath),
    responses((status = 200, description = "The enrollments", body = Vec<Enrollment>),
        (status = 404, description = crate::openapi::NOT_FOUND_APP, body = ErrorInformation)))]
async fn list_enrollments(
    State(s): State<ApiState>,
    Caller(who): Caller,
    Path(AppPath { app }): Path<AppPath>,
) -> ApiResult<Json<Vec<Enrollment>>> {
    Ok(Json(s.registry.enrollments(&who, &app).await?))
}

async fn put(
    s: ApiState,
    who: drover_model::Principal,
    app: String,
    kind: EnrollmentKind,
    id: String,
    mut e: Enrollment,
) -> ApiResult<Response> {
    e.kind = kind;
    e.id = id;
    e.application = app.clone();
    let existed = s.registry.enrollment(&who, &app, kind, &e.id).await.is_ok();
    let stored = s.registry.put_enrollment(&who, &app, e).await?;
    tracing::info!(app = %app, kind = kind.as_str(), id = %stored.id, user = who.name(), "enrollment stored");
    let status = if existed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(stored.redacted())).into_response())
}

async fn get(
    s: ApiState,
    who: drover_model::Principal,
    app: String,
    kind: EnrollmentKind,
    id: String,
) -> ApiResult<Json<Enrollment>> {
    Ok(Json(s.registry.enrollment(&who, &app, kind, &id).await?))
}

async fn delete(
    s: ApiState,
    who: drover_model::Principal,
    app: String,
    kind: EnrollmentKind,
    id: String,
) -> ApiResult<StatusCode> {
    s.registry.delete_enrollment(&who, &app, kind, &id).await?;
    tracing::info!(app = %app, kind = kind.as_str(), id = %id, user = who.name(), "enrollment deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// An individual enrollment (reader role; keys for administrators).
#[utoipa::path(get, path = "/apps/{app}/enrollments/{id}", tag = "provisioning", params(IdPath),
    responses((status = 200, description = "The enrollment", body = Enrollment),
        (status = 404, description = NOT_FOUND, body = ErrorInformation)))]
async fn get_individual(
    State(s): State<ApiState>,
    Caller(who): Caller,
    Path(IdPath { app, id }): Path<IdPath>,
) -> ApiResult<Json<Enrollment>> {
    get(s, who, app, EnrollmentKind::Individual, id).await
}

/// Create or replace an individual enrollment: registration `id` provisions into this
/// application (manager role). The answer does not show the keys.
#[utoipa::path(put, path = "/apps/{app}/enrollments/{id}", tag = "provisioning", params(IdPath),
    request_body = Enrollment,
    responses((status = 201, description = "Created", body = Enrollment),
        (status = 200, description = "Replaced", body = Enrollment),
        (status = 403, description = FORBIDDEN_WRITE, body = ErrorInformation),
        (status = 404, description = crate::openapi::NOT_FOUND_APP, body = ErrorInformation),
        (status = 409, description = "Conflict: the id is enrolled in another application", body = ErrorInformation)))]
async fn put_individual(
    State(s): State<ApiState>,
    Caller(who): Caller,
    Path(IdPath { app, id }): Path<IdPath>,
    JsonBody(e): JsonBody<Enrollment>,
) -> ApiResult<Response> {
    put(s, who, app, EnrollmentKind::Individual, id, e).await
}

/// Delete an individual enrollment (manager role); the devices it provisioned stay.
#[utoipa::path(delete, path = "/apps/{app}/enrollments/{id}", tag = "provisioning", params(IdPath),
    responses((status = 204, description = "Deleted"),
        (status = 403, description = FORBIDDEN_WRITE, body = ErrorInformation),
        (status = 404, description = NOT_FOUND, body = ErrorInformation)))]
async fn delete_individual(
    State(s): State<ApiState>,
    Caller(who): Caller,
    Path(IdPath { app, id }): Path<IdPath>,
) -> ApiResult<StatusCode> {
    delete(s, who, app, EnrollmentKind::Individual, id).await
}

/// An enrollment group (reader role; keys for administrators).
#[utoipa::path(get, path = "/apps/{app}/groups/{id}", tag = "provisioning", params(IdPath),
    responses((status = 200, description = "The group", body = Enrollment),
        (status = 404, description = NOT_FOUND, body = ErrorInformation)))]
async fn get_group(
    State(s): State<ApiState>,
    Caller(who): Caller,
    Path(IdPath { app, id }): Path<IdPath>,
) -> ApiResult<Json<Enrollment>> {
    get(s, who, app, EnrollmentKind::Group, id).await
}

/// Create or replace an enrollment group: every registration attested by a key derived from
/// the group's key provisions into this application (manager role).
#[utoipa::path(put, path = "/apps/{app}/groups/{id}", tag = "provisioning", params(IdPath),
    request_body = Enrollment,
    responses((status = 201, description = "Created", body = Enrollment),
        (status = 200, description = "Replaced", body = Enrollment),
        (status = 403, description = FORBIDDEN_WRITE, body = ErrorInformation),
        (status = 404, description = crate::openapi::NOT_FOUND_APP, body = ErrorInformation),
        (status = 409, description = "Conflict: the id is used by another application", body = ErrorInformation)))]
async fn put_group(
    State(s): State<ApiState>,
    Caller(who): Caller,
    Path(IdPath { app, id }): Path<IdPath>,
    JsonBody(e): JsonBody<Enrollment>,
) -> ApiResult<Response> {
    put(s, who, app, EnrollmentKind::Group, id, e).await
}

/// Delete an enrollment group (manager role); the devices it provisioned stay.
#[utoipa::path(delete, path = "/apps/{app}/groups/{id}", tag = "provisioning", params(IdPath),
    responses((status = 204, description = "Deleted"),
        (status = 403, description = FORBIDDEN_WRITE, body = ErrorInformation),
        (status = 404, description = NOT_FOUND, body = ErrorInformation)))]
async fn delete_group(
    State(s): State<ApiState>,
    Caller(who): Caller,
    Path(IdPath { app, id }): Path<IdPath>,
) -> ApiResult<StatusCode> {
    delete(s, who, app, EnrollmentKind::Group, id).await
}

/// The registration records of the application: which registration ids were provisioned as
/// which device, when, with which custom payload (reader role).
#[utoipa::path(get, path = "/apps/{app}/registrations", tag = "provisioning", params(AppPath),
    responses((status = 200, description = "The registrations", body = Vec<RegistrationRecord>),
        (status = 404, description = crate::openapi::NOT_FOUND_APP, body = ErrorInformation)))]
async fn list_registrations(
    State(s): State<ApiState>,
    Caller(who): Caller,
    Path(AppPath { app }): Path<AppPath>,
) -> ApiResult<Json<Vec<RegistrationRecord>>> {
    Ok(Json(s.registry.registrations(&who, &app).await?))
}

/// Delete a registration record (manager role): the next registration of that id is an
/// initial assignment again. The device stays.
#[utoipa::path(delete, path = "/apps/{app}/registrations/{id}", tag = "provisioning", params(IdPath),
    responses((status = 204, description = "Deleted"),
        (status = 403, description = FORBIDDEN_WRITE, body = ErrorInformation),
        (status = 404, description = "NotFound: no such registration or application, or the caller may not read it", body = ErrorInformation)))]
async fn delete_registration(
    State(s): State<ApiState>,
    Caller(who): Caller,
    Path(IdPath { app, id }): Path<IdPath>,
) -> ApiResult<StatusCode> {
    s.registry.delete_registration(&who, &app, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}
