//! `/api/tokens/v1alpha1`: the caller's access tokens.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use drover_registry::{CreatedToken, TokenInfo};
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Caller;
use crate::error::{ApiResult, ErrorInformation};
use crate::extract::{Path, Query};
use crate::ApiState;

pub fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(list_tokens, create_token))
        .routes(routes!(delete_token))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CreateQuery {
    /// A description to remember the token by.
    description: Option<String>,
}

/// List the caller's tokens (prefixes only; secrets are never stored).
#[utoipa::path(get, path = "/api/tokens/v1alpha1", tag = "tokens", responses((status = 200, body = [TokenInfo]), (status = 401, body = ErrorInformation)))]
async fn list_tokens(
    State(s): State<ApiState>,
    Caller(who): Caller,
) -> ApiResult<Json<Vec<TokenInfo>>> {
    Ok(Json(s.registry.list_tokens(&who).await?))
}

/// Create an access token for the caller. The response is the only time the token is shown.
#[utoipa::path(post, path = "/api/tokens/v1alpha1", tag = "tokens", params(CreateQuery),
    responses((status = 200, description = "Created (200, as drg expects)", body = CreatedToken), (status = 400, body = ErrorInformation), (status = 401, body = ErrorInformation)))]
async fn create_token(
    State(s): State<ApiState>,
    Caller(who): Caller,
    Query(q): Query<CreateQuery>,
) -> ApiResult<Json<CreatedToken>> {
    Ok(Json(
        s.registry
            .create_token(&who, q.description.as_deref())
            .await?,
    ))
}

/// Delete one of the caller's tokens by its prefix.
#[utoipa::path(delete, path = "/api/tokens/v1alpha1/{prefix}", tag = "tokens", params(("prefix" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorInformation)))]
async fn delete_token(
    State(s): State<ApiState>,
    Caller(who): Caller,
    Path(prefix): Path<String>,
) -> ApiResult<StatusCode> {
    s.registry.delete_token(&who, &prefix).await?;
    Ok(StatusCode::NO_CONTENT)
}
