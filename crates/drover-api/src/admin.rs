//! `/api/admin/v1alpha1`: users, whoami, members and ownership transfer.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use drover_registry::{MembersDoc, User};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Caller;
use crate::error::{ApiResult, ErrorInformation};
use crate::extract::{JsonBody, Path};
use crate::openapi::NOT_FOUND_APP;
use crate::params::{AppPath, UserPath};
use crate::ApiState;

pub const BASE: &str = "/api/admin/v1alpha1";

// Descriptions of answers several operations give.
const NOT_ADMIN: &str = "AuthenticationError: the caller is not a system administrator";
const NOT_APP_ADMIN: &str =
    "AuthenticationError: the caller may read the application but not administer it";
const NOT_OWNER: &str =
    "AuthenticationError: the caller may read the application but does not own it";

pub fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(whoami))
        .routes(routes!(list_users, create_user))
        .routes(routes!(delete_user))
        .routes(routes!(get_members, set_members))
        .routes(routes!(get_transfer, transfer_ownership, cancel_transfer))
        .routes(routes!(accept_ownership))
}

/// The caller's identity.
#[derive(Debug, Serialize, ToSchema)]
pub struct WhoAmI {
    pub name: String,
    /// Whether the caller is a system administrator.
    pub admin: bool,
}

/// The caller's identity.
#[utoipa::path(get, path = "/user/whoami", tag = "admin",
    responses((status = 200, description = "The caller", body = WhoAmI)))]
async fn whoami(Caller(who): Caller) -> Json<WhoAmI> {
    Json(WhoAmI {
        name: who.name().to_string(),
        admin: who.is_admin(),
    })
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    #[schema(schema_with = crate::params::user_name)]
    pub name: String,
    /// Make the user a system administrator.
    #[serde(default)]
    pub admin: bool,
}

/// A created user with its first access token (shown only this once).
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedUser {
    pub name: String,
    pub admin: bool,
    pub token: String,
}

/// List users (system administrators only).
#[utoipa::path(get, path = "/users", tag = "admin",
    responses((status = 200, description = "Every user", body = [User]),
        (status = 403, description = NOT_ADMIN, body = ErrorInformation)))]
async fn list_users(State(s): State<ApiState>, Caller(who): Caller) -> ApiResult<Json<Vec<User>>> {
    Ok(Json(s.registry.list_users(&who).await?))
}

/// Create a user and its first access token (system administrators only).
#[utoipa::path(post, path = "/users", tag = "admin", request_body = NewUser,
    responses((status = 201, description = "Created, with the user's first token", body = CreatedUser),
        (status = 403, description = NOT_ADMIN, body = ErrorInformation),
        (status = 409, description = "Conflict: a user of that name exists", body = ErrorInformation)))]
async fn create_user(
    State(s): State<ApiState>,
    Caller(who): Caller,
    JsonBody(u): JsonBody<NewUser>,
) -> ApiResult<Response> {
    let (user, token) = s.registry.create_user(&who, &u.name, u.admin).await?;
    tracing::info!(user = %user.name, by = who.name(), "user created");
    Ok((
        StatusCode::CREATED,
        Json(CreatedUser {
            name: user.name,
            admin: user.admin,
            token: token.token,
        }),
    )
        .into_response())
}

/// Delete a user and its tokens. Applications the user owned stay, owned by nobody: only system
/// administrators can reach them (and transfer them). The user's memberships end.
#[utoipa::path(delete, path = "/users/{name}", tag = "admin", params(UserPath),
    responses((status = 204, description = "Deleted"),
        (status = 400, description = "BadRequest: the system administrator `admin` cannot be deleted", body = ErrorInformation),
        (status = 403, description = NOT_ADMIN, body = ErrorInformation),
        (status = 404, description = "NotFound: no such user", body = ErrorInformation)))]
async fn delete_user(
    State(s): State<ApiState>,
    Caller(who): Caller,
    Path(UserPath { name }): Path<UserPath>,
) -> ApiResult<StatusCode> {
    s.registry.delete_user(&who, &name).await?;
    tracing::info!(user = %name, by = who.name(), "user deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// Read an application's members (owner, admins).
#[utoipa::path(get, path = "/apps/{app}/members", tag = "admin", params(AppPath),
    responses((status = 200, description = "The members", body = MembersDoc),
        (status = 403, description = NOT_APP_ADMIN, body = ErrorInformation),
        (status = 404, description = NOT_FOUND_APP, body = ErrorInformation)))]
async fn get_members(
    State(s): State<ApiState>,
    Caller(who): Caller,
    Path(AppPath { app }): Path<AppPath>,
) -> ApiResult<Json<MembersDoc>> {
    Ok(Json(s.registry.get_members(&who, &app).await?))
}

/// Replace an application's members. `resourceVersion`, when sent, must match.
#[utoipa::path(put, path = "/apps/{app}/members", tag = "admin", params(AppPath), request_body = MembersDoc,
    responses((status = 204, description = "Replaced (or nothing changed)"),
        (status = 403, description = NOT_APP_ADMIN, body = ErrorInformation),
        (status = 404, description = NOT_FOUND_APP, body = ErrorInformation),
        (status = 409, description = "OptimisticLockFailed: `resourceVersion` does not match the stored members", body = ErrorInformation)))]
async fn set_members(
    State(s): State<ApiState>,
    Caller(who): Caller,
    Path(AppPath { app }): Path<AppPath>,
    JsonBody(doc): JsonBody<MembersDoc>,
) -> ApiResult<StatusCode> {
    s.registry.set_members(&who, &app, doc).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TransferOwnership {
    #[schema(schema_with = crate::params::user_name)]
    pub new_user: String,
}

/// The pending ownership transfer (owner, or the user it is offered to).
#[utoipa::path(get, path = "/apps/{app}/transfer-ownership", tag = "admin", params(AppPath),
    responses((status = 200, description = "The pending transfer", body = TransferOwnership),
        (status = 204, description = "No transfer pending"),
        (status = 403, description = NOT_OWNER, body = ErrorInformation),
        (status = 404, description = NOT_FOUND_APP, body = ErrorInformation)))]
async fn get_transfer(
    State(s): State<ApiState>,
    Caller(who): Caller,
    Path(AppPath { app }): Path<AppPath>,
) -> ApiResult<Response> {
    Ok(match s.registry.pending_transfer(&who, &app).await? {
        Some(new_user) => Json(TransferOwnership { new_user }).into_response(),
        None => StatusCode::NO_CONTENT.into_response(),
    })
}

/// Offer the application to another user (owner only); they accept with `accept-ownership`.
#[utoipa::path(put, path = "/apps/{app}/transfer-ownership", tag = "admin", params(AppPath), request_body = TransferOwnership,
    responses((status = 204, description = "Offered"),
        (status = 403, description = NOT_OWNER, body = ErrorInformation),
        (status = 404, description = NOT_FOUND_APP, body = ErrorInformation)))]
async fn transfer_ownership(
    State(s): State<ApiState>,
    Caller(who): Caller,
    Path(AppPath { app }): Path<AppPath>,
    JsonBody(t): JsonBody<TransferOwnership>,
) -> ApiResult<StatusCode> {
    s.registry
        .transfer_ownership(&who, &app, &t.new_user)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Cancel a pending transfer (owner only).
#[utoipa::path(delete, path = "/apps/{app}/transfer-ownership", tag = "admin", params(AppPath),
    responses((status = 204, description = "No transfer is pending now"),
        (status = 403, description = NOT_OWNER, body = ErrorInformation),
        (status = 404, description = NOT_FOUND_APP, body = ErrorInformation)))]
async fn cancel_transfer(
    State(s): State<ApiState>,
    Caller(who): Caller,
    Path(AppPath { app }): Path<AppPath>,
) -> ApiResult<StatusCode> {
    s.registry.cancel_transfer(&who, &app).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Accept the ownership offered to the caller.
#[utoipa::path(put, path = "/apps/{app}/accept-ownership", tag = "admin", params(AppPath),
    responses((status = 204, description = "The caller owns the application now"),
        (status = 400, description = "BadRequest: no transfer to the caller is pending", body = ErrorInformation),
        (status = 404, description = NOT_FOUND_APP, body = ErrorInformation)))]
async fn accept_ownership(
    State(s): State<ApiState>,
    Caller(who): Caller,
    Path(AppPath { app }): Path<AppPath>,
) -> ApiResult<StatusCode> {
    s.registry.accept_ownership(&who, &app).await?;
    Ok(StatusCode::NO_CONTENT)
}
