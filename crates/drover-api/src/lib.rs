//! Drover's management REST API, wire-compatible with Drogue Cloud (so `drg` works unchanged):
//! registry (`/api/registry/v1alpha1`, with twins and webhook subscriptions), admin (`/api/admin/v1alpha1`), access tokens
//! (`/api/tokens/v1alpha1`), discovery documents, the change watch, and the OpenAPI document
//! generated from the handlers themselves (`/api/openapi.json`).
//!
//! This crate maps HTTP to the registry and back; it knows nothing of device protocols.

mod admin;
mod auth;
pub mod certificates;
mod commands;
mod discovery;
pub mod error;
mod extract;
pub mod health;
mod openapi;
mod params;
mod provisioning;
mod registry;
mod tokens;
mod twins;
mod watch;
mod webhooks;
mod ws;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::http::Uri;
use axum::routing::get;
use axum::{Json, Router};
use drover_registry::Registry;
use serde_json::Value;
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;

pub use error::{ApiError, ErrorInformation};
pub use params::{APP_NAME_PATTERN, MAX_PAGE, USER_NAME_PATTERN};
pub use registry::REVISION_HEADER;
pub use watch::change_event;
pub use ws::WS_PATH;

/// Extra entries of the endpoints document (device endpoints, integrations), given the host name
/// the client used.
pub type EndpointsFn = Arc<dyn Fn(&str) -> Vec<(String, Value)> + Send + Sync>;

/// Probes the node's backends for `/health/ready`.
pub type ReadinessFn =
    Arc<dyn Fn() -> futures::future::BoxFuture<'static, Vec<health::Check>> + Send + Sync>;

/// Settings of the API.
#[derive(Clone)]
pub struct ApiSettings {
    /// The externally visible origin (e.g. `https://drover.example.com`); else taken from requests.
    pub public_url: Option<String>,
    /// Host to advertise when a request has no Host header.
    pub fallback_host: String,
    /// Largest request body in bytes (larger: 413).
    pub body_limit: usize,
    /// The configured OIDC issuer, advertised as `issuer_url`.
    pub oidc_issuer: Option<String>,
    pub version: String,
    pub endpoints: EndpointsFn,
    /// WebSocket integration: disconnect streams opened live this many events behind (0: never).
    pub ws_max_lag: u64,
    /// WebSocket integration: disconnect clients that take no frame for this long.
    pub ws_send_timeout: std::time::Duration,
    /// Readiness probe of the backends (`None`: ready while running).
    pub readiness: Option<ReadinessFn>,
    /// The outbound address policy: devices whose external command endpoints it refuses
    /// (literal addresses, `localhost`) are refused at write time (400).
    pub outbound: Arc<drover_integrations::outbound::OutboundPolicy>,
    /// The installation's provisioning ID scope (DPS).
    pub id_scope: Option<String>,
}

impl Default for ApiSettings {
    fn default() -> Self {
        Self {
            public_url: None,
            fallback_host: "localhost".into(),
            body_limit: 1024 * 1024,
            oidc_issuer: None,
            version: env!("CARGO_PKG_VERSION").into(),
            endpoints: Arc::new(|_| Vec::new()),
            ws_max_lag: 0,
            ws_send_timeout: std::time::Duration::from_secs(30),
            readiness: None,
            outbound: Arc::default(),
            id_scope: None,
        }
    }
}

/// What every handler gets.
#[derive(Clone)]
pub struct ApiState {
    pub registry: Arc<dyn Registry>,
    /// The event log, for the WebSocket integration.
    pub log: Option<Arc<dyn drover_bus::EventLog>>,
    /// Sends commands (the command API).
    pub commands: Option<Arc<drover_integrations::commands::CommandService>>,
    /// Authenticates users (access tokens; Bearer JWTs with single sign-on), throttling
    /// failures; shared with the MQTT integration.
    pub users: Arc<drover_auth::user::UserAuthenticator>,
    /// Each user's integration connections (WebSocket streams count here, with the MQTT
    /// integration's).
    pub user_connections: Arc<drover_integrations::limits::UserConnections>,
    pub settings: Arc<ApiSettings>,
    /// The installation's device CA (the certificates API).
    pub device_ca: Option<Arc<certificates::CaSettings>>,
    /// Turns true when the server shuts down: long-lived responses end.
    pub shutdown: tokio::sync::watch::Receiver<bool>,
}

fn api_router() -> OpenApiRouter<ApiState> {
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .nest(registry::BASE, registry::routes())
        .nest(registry::BASE, twins::routes())
        .nest(registry::BASE, webhooks::routes())
        .nest(admin::BASE, admin::routes())
        .nest(certificates::BASE, certificates::routes())
        .nest(provisioning::BASE, provisioning::routes())
        .merge(tokens::routes())
        .merge(watch::routes())
        .merge(ws::routes())
        .merge(commands::routes())
        .merge(discovery::routes())
        .merge(health::routes())
}

/// The routes and their OpenAPI document.
fn routes_and_document() -> (Router<ApiState>, utoipa::openapi::OpenApi) {
    let (router, mut api) = api_router().split_for_parts();
    openapi::CommonResponses.modify(&mut api);
    (router, api)
}

/// The OpenAPI document of exactly the routes [`router`] serves.
pub fn openapi() -> utoipa::openapi::OpenApi {
    routes_and_document().1
}

/// The management API.
pub fn router(state: ApiState) -> Router {
    let (router, api) = routes_and_document();
    let api = Arc::new(api);
    let limit = state.settings.body_limit;
    router
        .route(
            "/api/openapi.json",
            get(move || async move { Json(api.as_ref().clone()) }),
        )
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(limit))
        // 5xx answers are the API telling a client to retry (503 while a backend is away, 504);
        // the handlers log the cause themselves. A warning, not an error, per response.
        .layer(
            tower_http::trace::TraceLayer::new_for_http()
                .on_failure(tower_http::trace::DefaultOnFailure::new().level(tracing::Level::WARN)),
        )
        .with_state(state)
}

pub(crate) use drover_model::names::encode_segment;

async fn not_found(uri: Uri) -> ApiError {
    ApiError::NotFound(format!("no such endpoint: {}", uri.path()))
}

async fn method_not_allowed(method: axum::http::Method, uri: Uri) -> ApiError {
    ApiError::MethodNotAllowed(format!("method {method} is not allowed on {}", uri.path()))
}
