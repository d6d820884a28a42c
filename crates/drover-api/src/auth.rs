//! Who is calling: HTTP Basic `<user>:<access token>`, or a Bearer JWT from the configured OIDC
//! issuer. Exactly one credential per request.

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use std::net::IpAddr;

use base64::Engine as _;
use drover_auth::user::{AuthenticatedUser, UserAuthError, UserCredential};
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

/// The peer's address (the `drover_net::Peer` every listener sets).
pub fn peer_ip(parts: &Parts) -> IpAddr {
    parts
        .extensions
        .get::<drover_net::Peer>()
        .map(|p| p.addr.ip())
        .unwrap_or(IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED))
}

/// Checks a credential with the user authenticator; refusals become API errors (logged, at a
/// limited rate).
pub async fn check(
    state: &ApiState,
    credential: &UserCredential,
    source: IpAddr,
) -> Result<AuthenticatedUser, ApiError> {
    state
        .users
        .authenticate(credential, source)
        .await
        .map_err(|e| refusal(state, credential, source, e))
}

fn refusal(
    state: &ApiState,
    credential: &UserCredential,
    source: IpAddr,
    e: UserAuthError,
) -> ApiError {
    match e {
        UserAuthError::Unavailable(m) => ApiError::Unavailable(m.to_string()),
        UserAuthError::Throttled(t) => ApiError::Throttled(t),
        e => {
            if let Some(held_back) = state.users.throttle().admit_log() {
                tracing::info!(%source, ?credential, held_back, "rejected credentials: {e}");
            }
            ApiError::Unauthorized(e.to_string())
        }
    }
}

/// Authenticates the request's credential, if it has one.
pub async fn authenticate(
    state: &ApiState,
    parts: &Parts,
) -> Result<Option<AuthenticatedUser>, ApiError> {
    let credential = match credential(parts)? {
        None => return Ok(None),
        Some(Credential::Basic { user, secret }) => UserCredential::Token {
            user,
            token: secret,
        },
        Some(Credential::Bearer(jwt)) => UserCredential::Bearer(jwt),
    };
    check(state, &credential, peer_ip(parts)).await.map(Some)
}

impl FromRequestParts<ApiState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &ApiState,
    ) -> Result<Self, Self::Rejection> {
        match authenticate(state, parts).await? {
            Some(u) => Ok(Caller(u.principal)),
            None => Err(ApiError::Unauthorized(
                "authentication required: use HTTP Basic '<user>:<access token>' or a Bearer token"
                    .into(),
            )),
        }
    }
}
