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
use crate::ApiState;

pub const BASE: &str = "/api/admin/v1alpha1";

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
    responses((status = 200, body = WhoAmI), (status = 401, body = ErrorInformation)))]
async fn whoami(Caller(who): Caller) -> Json<WhoAmI> {
    Json(WhoAmI {
        name: who.name().to_string(),
        admin: who.is_admin(),
    })
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
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
    responses((status = 200, body = [User]), (status = 403, body = ErrorInformation)))]
async fn list_users(State(s): State<ApiState>, Caller(who): Caller) -> ApiResult<Json<Vec<User>>> {
    Ok(Json(s.registry.list_users(&who).await?))
}

/// Create a user and its first access token (system administrators only).
#[utoipa::path(post, path = "/users", tag = "admin", request_body = NewUser,
    responses((status = 201, body = CreatedUser), (status = 400, body = ErrorInformation),
        (status = 403, body = ErrorInformation), (status = 409, body = ErrorInformation)))]
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
#[utoipa::path(delete, path = "/users/{name}", tag = "admin", params(("name" = String, Path)),
    responses((status = 204), (status = 403, body = ErrorInformation), (status = 404, body = ErrorInformation)))]
async fn delete_user(
    State(s): State<ApiState>,
    Caller(who): Caller,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    s.registry.delete_user(&who, &name).await?;
    tracing::info!(user = %name, by = who.name(), "user deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// Read an application's members (owner, admins).
#[utoipa::path(get, path = "/apps/{app}/members", tag = "admin", params(("app" = String, Path)),
    responses((status = 200, body = MembersDoc), (status = 403, body = ErrorInformation), (status = 404, body = ErrorInformation)))]
async fn get_members(
    State(s): State<ApiState>,
    Caller(who): Caller,
    Path(app): Path<String>,
) -> ApiResult<Json<MembersDoc>> {
    Ok(Json(s.registry.get_members(&who, &app).await?))
}

/// Replace an application's members. `resourceVersion`, when sent, must match.
#[utoipa::path(put, path = "/apps/{app}/members", tag = "admin", params(("app" = String, Path)), request_body = MembersDoc,
    responses((status = 204), (status = 400, body = ErrorInformation), (status = 403, body = ErrorInformation),
        (status = 404, body = ErrorInformation), (status = 409, body = ErrorInformation)))]
async fn set_members(
    State(s): State<ApiState>,
    Caller(who): Caller,
    Path(app): Path<String>,
    JsonBody(doc): JsonBody<MembersDoc>,
) -> ApiResult<StatusCode> {
    s.registry.set_members(&who, &app, doc).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TransferOwnership {
    pub new_user: String,
}

/// The pending ownership transfer (owner, or the user it is offered to).
#[utoipa::path(get, path = "/apps/{app}/transfer-ownership", tag = "admin", params(("app" = String, Path)),
    responses((status = 200, body = TransferOwnership), (status = 204, description = "No transfer pending"),
        (status = 404, body = ErrorInformation)))]
async fn get_transfer(
    State(s): State<ApiState>,
    Caller(who): Caller,
    Path(app): Path<String>,
) -> ApiResult<Response> {
    Ok(match s.registry.pending_transfer(&who, &app).await? {
        Some(new_user) => Json(TransferOwnership { new_user }).into_response(),
        None => StatusCode::NO_CONTENT.into_response(),
    })
}

/// Offer the application to another user (owner only); they accept with `accept-ownership`.
#[utoipa::path(put, path = "/apps/{app}/transfer-ownership", tag = "admin", params(("app" = String, Path)), request_body = TransferOwnership,
    responses((status = 204), (status = 403, body = ErrorInformation), (status = 404, body = ErrorInformation)))]
async fn transfer_ownership(
    State(s): State<ApiState>,
    Caller(who): Caller,
    Path(app): Path<String>,
    JsonBody(t): JsonBody<TransferOwnership>,
) -> ApiResult<StatusCode> {
    s.registry
        .transfer_ownership(&who, &app, &t.new_user)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Cancel a pending transfer (owner only).
#[utoipa::path(delete, path = "/apps/{app}/transfer-ownership", tag = "admin", params(("app" = String, Path)),
    responses((status = 204), (status = 403, body = ErrorInformation), (status = 404, body = ErrorInformation)))]
async fn cancel_transfer(
    State(s): State<ApiState>,
    Caller(who): Caller,
    Path(app): Path<String>,
) -> ApiResult<StatusCode> {
    s.registry.cancel_transfer(&who, &app).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Accept the ownership offered to the caller.
#[utoipa::path(put, path = "/apps/{app}/accept-ownership", tag = "admin", params(("app" = String, Path)),
    responses((status = 204), (status = 400, body = ErrorInformation), (status = 404, body = ErrorInformation)))]
async fn accept_ownership(
    State(s): State<ApiState>,
    Caller(who): Caller,
    Path(app): Path<String>,
) -> ApiResult<StatusCode> {
    s.registry.accept_ownership(&who, &app).await?;
    Ok(StatusCode::NO_CONTENT)
}
