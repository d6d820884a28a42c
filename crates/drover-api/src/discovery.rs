//! Discovery documents drg reads: `/.well-known/drogue-endpoints`, `/.well-known/drogue-version`,
//! `/.well-known/openid-configuration` (when Drover is its own issuer) and the console info.

use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::Json;
use serde_json::{json, Map, Value};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult, ErrorInformation};
use crate::ApiState;

pub fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(endpoints))
        .routes(routes!(version))
        .routes(routes!(openid_configuration))
        .routes(routes!(info))
        .routes(routes!(sso_authorize))
        .routes(routes!(sso_token))
}

/// The origin clients reach this API at (no trailing slash): the configured public URL, else
/// the request's scheme and Host.
pub fn base_url(state: &ApiState, headers: &HeaderMap) -> String {
    if let Some(u) = &state.settings.public_url {
        return u.trim_end_matches('/').to_string();
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_string)
        .unwrap_or_else(|| state.settings.fallback_host.clone());
    let scheme = headers
        .get("x-forwarded-proto")
        .and_then(|h| h.to_str().ok())
        .filter(|p| *p == "https" || *p == "http")
        .unwrap_or("http");
    format!("{scheme}://{host}")
}

fn issuer_url(state: &ApiState, base: &str) -> String {
    match &state.settings.oidc_issuer {
        Some(i) => i.trim_end_matches('/').to_string(),
        None => base.to_string(),
    }
}

/// The endpoints document: where the registry, the issuer and (as they are enabled) the device
/// endpoints and integrations are.
pub fn endpoints_doc(state: &ApiState, headers: &HeaderMap) -> Map<String, Value> {
    let base = base_url(state, headers);
    let mut doc = Map::new();
    doc.insert("api".into(), json!(base));
    doc.insert("issuer_url".into(), json!(issuer_url(state, &base)));
    doc.insert("registry".into(), json!({ "url": base }));
    if state.log.is_some() {
        let ws = match base.split_once("://") {
            Some(("https", rest)) => format!("wss://{rest}"),
            Some((_, rest)) => format!("ws://{rest}"),
            None => base.clone(),
        };
        doc.insert(
            "websocket_integration".into(),
            json!({ "url": format!("{ws}{}", crate::WS_PATH) }),
        );
    }
    let host = base.split_once("://").map(|(_, h)| h).unwrap_or(&base);
    let host = host.rsplit_once(':').map(|(h, _)| h).unwrap_or(host);
    for (k, v) in (state.settings.endpoints)(host) {
        doc.insert(k, v);
    }
    doc
}

/// Where the registry, the issuer and the device endpoints are (no authentication).
#[utoipa::path(get, path = "/.well-known/drogue-endpoints", tag = "discovery", security(()),
    responses((status = 200, description = "Endpoints document", body = Object)))]
async fn endpoints(State(s): State<ApiState>, headers: HeaderMap) -> Json<Map<String, Value>> {
    Json(endpoints_doc(&s, &headers))
}

/// The server version.
#[utoipa::path(get, path = "/.well-known/drogue-version", tag = "discovery", security(()),
    responses((status = 200, description = "`{\"version\": \"...\"}`", body = Object)))]
async fn version(State(s): State<ApiState>) -> Json<Value> {
    Json(json!({ "version": s.settings.version }))
}

/// OpenID discovery for drg when Drover is its own issuer (no SSO configured). Interactive login
/// is not offered: log in with an access token.
#[utoipa::path(get, path = "/.well-known/openid-configuration", tag = "discovery", security(()),
    responses((status = 200, description = "OpenID provider metadata", body = Object)))]
async fn openid_configuration(State(s): State<ApiState>, headers: HeaderMap) -> Json<Value> {
    let base = base_url(&s, &headers);
    Json(json!({
        "issuer": issuer_url(&s, &base),
        "authorization_endpoint": format!("{base}/api/sso/v1alpha1/authorize"),
        "token_endpoint": format!("{base}/api/sso/v1alpha1/token"),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
    }))
}

fn no_interactive_login() -> ApiError {
    ApiError::NotImplemented(
        "interactive login is not offered by this server: log in with an access token, e.g. `drg login <url> --access-token <user>:<token>`".into(),
    )
}

/// Placeholder of the issuer's authorization endpoint: always 501.
#[utoipa::path(get, path = "/api/sso/v1alpha1/authorize", tag = "discovery", security(()),
    responses((status = 501, description = "NotImplemented: log in with an access token", body = ErrorInformation)))]
async fn sso_authorize() -> ApiResult<()> {
    Err(no_interactive_login())
}

/// Placeholder of the issuer's token endpoint: always 501.
#[utoipa::path(post, path = "/api/sso/v1alpha1/token", tag = "discovery", security(()),
    responses((status = 501, description = "NotImplemented: log in with an access token", body = ErrorInformation)))]
async fn sso_token() -> ApiResult<()> {
    Err(no_interactive_login())
}

/// The endpoints document for a logged-in user (drg validates a login with it). The fields are
/// served flat, as drg reads them, and once more under `endpoints`.
#[utoipa::path(get, path = "/api/console/v1alpha1/info", tag = "discovery",
    responses((status = 200, description = "Endpoints document", body = Object)))]
async fn info(
    State(s): State<ApiState>,
    Caller(_who): Caller,
    headers: HeaderMap,
) -> Json<Map<String, Value>> {
    let mut doc = endpoints_doc(&s, &headers);
    doc.insert("endpoints".into(), Value::Object(doc.clone()));
    Json(doc)
}
