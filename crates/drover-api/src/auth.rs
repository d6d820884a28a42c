//! Who is calling: HTTP Basic `<user>:<access token>`, or a Bearer JWT from the configured OIDC
//! issuer. Exactly one credential per request.

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use base64::Engine as _;
use drover_model::Principal;

use crate::error::ApiError;
use crate::ApiState;

/// The authenticated caller of a request.
pub struct Caller(pub Principal);

/// The credential a request carries.
enum Credential {
    Basic { user: String, secret: String },
    Bearer(String),
}

fn credential(parts: &Parts) -> Result<Option<Credential>, ApiError> {
    let mut headers = parts.headers.get_all(AUTHORIZATION).iter();
    let Some(value) = headers.next() else {
        return Ok(None);
    };
    if headers.next().is_some() {
        return Err(ApiError::BadRequest(
            "more than one credential in the request: send exactly one Authorization header".into(),
        ));
    }
    let value = value
        .to_str()
        .map_err(|_| ApiError::Unauthorized("Authorization header is not valid ASCII".into()))?;
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(rest)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| {
                ApiError::Unauthorized(
                    "malformed Basic credentials: not base64 of 'user:token'".into(),
                )
            })?;
        let (user, secret) = decoded.split_once(':').ok_or_else(|| {
            ApiError::Unauthorized("malformed Basic credentials: expected 'user:token'".into())
        })?;
        Ok(Some(Credential::Basic {
            user: user.to_string(),
            secret: secret.to_string(),
        }))
    } else if scheme.eq_ignore_ascii_case("bearer") {
        if rest.is_empty() {
            return Err(ApiError::Unauthorized("empty Bearer token".into()));
        }
        Ok(Some(Credential::Bearer(rest.to_string())))
    } else {
        Err(ApiError::Unauthorized(format!(
            "unsupported authorization scheme '{scheme}': use Basic '<user>:<access token>' or Bearer"
        )))
    }
}

/// Authenticates the request's credential, if it has one.
pub async fn authenticate(state: &ApiState, parts: &Parts) -> Result<Option<Principal>, ApiError> {
    match credential(parts)? {
        None => Ok(None),
        Some(Credential::Basic { user, secret }) => {
            if user.is_empty() || secret.is_empty() {
                return Err(ApiError::Unauthorized(
                    "Basic credentials need a user name and an access token".into(),
                ));
            }
            let p = state
                .registry
                .authenticate_token(&user, &secret)
                .await
                .map_err(|e| {
                    tracing::info!(user = %user, "rejected access token: {e}");
                    ApiError::from(e)
                })?;
            Ok(Some(p))
        }
        Some(Credential::Bearer(jwt)) => {
            let Some(oidc) = &state.oidc else {
                return Err(ApiError::Unauthorized(
                    "Bearer tokens are accepted only when single sign-on (oidc.issuer_url) is configured; use Basic '<user>:<access token>'".into(),
                ));
            };
            let user = oidc.validate(&jwt).await.map_err(|e| {
                if e.is_unavailable() {
                    ApiError::Unavailable(format!("single sign-on issuer unavailable: {e}"))
                } else {
                    tracing::info!("rejected bearer token: {e}");
                    ApiError::Unauthorized(format!("invalid bearer token: {e}"))
                }
            })?;
            Ok(Some(state.registry.principal_for(&user).await?))
        }
    }
}

impl FromRequestParts<ApiState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &ApiState,
    ) -> Result<Self, Self::Rejection> {
        match authenticate(state, parts).await? {
            Some(p) => Ok(Caller(p)),
            None => Err(ApiError::Unauthorized(
                "authentication required: use HTTP Basic '<user>:<access token>' or a Bearer token"
                    .into(),
            )),
        }
    }
}
