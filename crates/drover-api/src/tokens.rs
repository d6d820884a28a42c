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
    /// A description to remember the token by (at most 256 bytes).
    #[param(max_length = 256)]
    description: Option<String>,
}

/// List the caller's tokens (prefixes only; secrets are never stored).
#[utoipa::path(get, path = "/api/tokens/v1alpha1", tag = "tokens",
    responses((status = 200, description = "The caller's tokens", body = [TokenInfo])))]
async fn list_tokens(
    State(s): State<ApiState>,
    Caller(who): Caller,
) -> ApiResult<Json<Vec<TokenInfo>>> {
    Ok(Json(s.registry.list_tokens(&who).await?))
}

/// Create an access token for the caller. The response is the only time the token is shown.
#[utoipa::path(post, path = "/api/tokens/v1alpha1", tag = "tokens", params(CreateQuery),
    responses((status = 200, description = "Created (200, as drg expects)", body = CreatedToken)))]
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
#[utoipa::path(delete, path = "/api/tokens/v1alpha1/{prefix}", tag = "tokens",
    params(("prefix" = String, Path, description = "The token's prefix (`drg_` and six characters), as listed")),
    responses((status = 204, description = "Deleted"),
        (status = 404, description = "NotFound: the caller has no token with this prefix", body = ErrorInformation),
        (status = 409, description = "Conflict: the last token of the system administrator `admin` cannot be deleted", body = ErrorInformation)))]
async fn delete_token(
    State(s): State<ApiState>,
    Caller(who): Caller,
    Path(prefix): Path<String>,
) -> ApiResult<StatusCode> {
    s.registry.delete_token(&who, &prefix).await?;
    Ok(StatusCode::NO_CONTENT)
}
