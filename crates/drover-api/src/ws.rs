//! The WebSocket integration's HTTP side: `GET /api/integrations/v1alpha1/ws/{app}[/{channel}]`
//! (upgrade), authenticated like every API call or — for browsers — with `?token=<jwt>` or
//! `?username=<user>&api_key=<access token>`. The streaming itself is `drover-integrations`'.

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::State;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use drover_auth::user::{AuthenticatedUser, UserCredential};
use drover_bus::StreamKey;
use drover_integrations::access::AccessCheck;
use drover_integrations::websocket::{self, StreamOptions};
use serde::Deserialize;
use utoipa::openapi::path::{Parameter, ParameterIn};
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::{ApiError, ApiResult, ErrorInformation};
use crate::extract::{Path, Query};
use crate::openapi::NOT_FOUND_APP;
use crate::params::{query_param, AppPath, ChannelPath};
use crate::ApiState;

/// Where the WebSocket integration is served; clients append the application name.
pub const WS_PATH: &str = "/api/integrations/v1alpha1/ws/";

// Descriptions of the answers of both operations.
const BAD_UPGRADE: &str = "BadRequest: not a WebSocket upgrade request, an invalid `from` or \
    `group_id`, or credentials mixed (header and query, or `token` with `username`)";
const TOO_MANY_STREAMS: &str = "TooManyRequests: the user holds \
    `integration_max_connections_per_user` integration connections on this node";
const NO_STREAM: &str = "ServiceUnavailable: the application's event stream is not available";

pub fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(stream_app))
        .routes(routes!(stream_channel))
}

/// The query of a stream: where to start, and credentials for clients that cannot set headers.
#[derive(Debug, Deserialize)]
pub struct WsQuery {
    group_id: Option<String>,
    from: Option<String>,
    token: Option<String>,
    username: Option<String>,
    api_key: Option<String>,
}

/// Longest consumer group name, in bytes.
const MAX_GROUP_ID: usize = 128;

impl IntoParams for WsQuery {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        let string = || ObjectBuilder::new().schema_type(Type::String);
        vec![
            query_param(
                "group_id",
                "Consumer group: resume from its committed offset (new groups start live). 1 to \
                 128 bytes without control characters.",
                false,
                string()
                    .pattern(Some("^[^\\x00-\\x1f\\x7f-\\x9f]+$"))
                    .min_length(Some(1))
                    .max_length(Some(MAX_GROUP_ID))
                    .build(),
            ),
            query_param(
                "from",
                "`earliest` to start with the oldest retained event (when the group has no \
                 offset); `latest` (the default) to start live.",
                false,
                string().enum_values(Some(["earliest", "latest"])).build(),
            ),
            query_param(
                "token",
                "A Bearer JWT, for clients that cannot set headers (not with `username`, \
                 `api_key` or an Authorization header).",
                false,
                string().build(),
            ),
            query_param(
                "username",
                "User name with `api_key`, for clients that cannot set headers.",
                false,
                crate::params::user_name(),
            ),
            query_param(
                "api_key",
                "Access token with `username`.",
                false,
                string().build(),
            ),
        ]
    }
}

async fn caller(s: &ApiState, parts: &Parts, q: &WsQuery) -> ApiResult<AuthenticatedUser> {
    let header = crate::auth::authenticate(s, parts).await?;
    let query = match (&q.token, &q.username, &q.api_key) {
        (None, None, None) => None,
        (Some(jwt), None, None) => Some(UserCredential::Bearer(jwt.clone())),
        (None, Some(user), Some(key)) => Some(UserCredential::Token {
            user: user.clone(),
            token: key.clone(),
        }),
        _ => {
            return Err(ApiError::BadRequest(
                "use either 'token' or 'username' with 'api_key' in the query, not a mix".into(),
            ))
        }
    };
    match (header, query) {
        (Some(_), Some(_)) => Err(ApiError::BadRequest(
            "more than one credential in the request: send the Authorization header or query credentials, not both".into(),
        )),
        (Some(u), None) => Ok(u),
        (None, Some(c)) => crate::auth::check(s, &c, crate::auth::peer_ip(parts)).await,
        (None, None) => Err(ApiError::Unauthorized(
            "authentication required: HTTP Basic '<user>:<access token>', Bearer, or ?username=&api_key=".into(),
        )),
    }
}

async fn upgrade(
    s: ApiState,
    parts: Parts,
    app: String,
    channel: Option<String>,
    q: WsQuery,
) -> ApiResult<Response> {
    let user = caller(&s, &parts, &q).await?;
    let application = s.registry.get_app(&user.principal, &app).await?;
    let slot = s
        .user_connections
        .acquire(user.name())
        .map_err(|e| ApiError::TooManyRequests(e.to_string()))?;
    let Some(log) = s.log.clone() else {
        return Err(ApiError::Unavailable(
            "the event stream is not available on this node".into(),
        ));
    };
    let from_earliest = match q.from.as_deref() {
        None | Some("latest") => false,
        Some("earliest") => true,
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "invalid 'from' value '{other}': use 'earliest' or 'latest'"
            )))
        }
    };
    if let Some(g) = &q.group_id {
        if g.is_empty() || g.len() > MAX_GROUP_ID || g.chars().any(char::is_control) {
            return Err(ApiError::BadRequest(format!(
                "group_id must be 1 to {MAX_GROUP_ID} bytes without control characters"
            )));
        }
    }
    let mut parts = parts;
    let ws = <WebSocketUpgrade as axum::extract::FromRequestParts<ApiState>>::from_request_parts(
        &mut parts, &s,
    )
    .await
    .map_err(|e| {
        ApiError::BadRequest(format!(
            "not a WebSocket upgrade request: {}",
            e.body_text()
        ))
    })?;
    let stream = StreamKey::new(
        application.metadata.name.clone(),
        application.metadata.uid.clone(),
    );
    let opts = StreamOptions {
        group: q.group_id,
        from_earliest,
        channel,
        max_lag: s.settings.ws_max_lag,
        send_timeout: s.settings.ws_send_timeout,
    };
    tracing::info!(app = %app, user = user.name(), group = ?opts.group, "websocket integration connected");
    let opened = websocket::open(log.as_ref(), &stream, &opts)
        .await
        .map_err(|e| ApiError::Unavailable(format!("event stream unavailable: {e}")))?;
    let shutdown = s.shutdown.clone();
    let access = AccessCheck::new(s.users.clone(), s.registry.clone());
    let revoked = async move {
        let _slot = slot;
        access.revoked(&user, &app).await.to_string()
    };
    Ok(ws
        .on_upgrade(move |socket| {
            websocket::serve(socket, opened, log, stream, opts, revoked, shutdown)
        })
        .into_response())
}

/// Stream the application's events over a WebSocket (JSON CloudEvents in text frames).
#[utoipa::path(get, path = "/api/integrations/v1alpha1/ws/{app}", tag = "integrations", params(AppPath, WsQuery),
    responses((status = 101, description = "WebSocket upgrade; then one CloudEvent per text frame"),
        (status = 400, description = BAD_UPGRADE, body = ErrorInformation),
        (status = 404, description = NOT_FOUND_APP, body = ErrorInformation),
        (status = 429, description = TOO_MANY_STREAMS, body = ErrorInformation),
        (status = 503, description = NO_STREAM, body = ErrorInformation)))]
async fn stream_app(
    State(s): State<ApiState>,
    Path(AppPath { app }): Path<AppPath>,
    Query(q): Query<WsQuery>,
    req: axum::extract::Request,
) -> ApiResult<Response> {
    upgrade(s, req.into_parts().0, app, None, q).await
}

/// Stream the events of one channel of the application over a WebSocket.
#[utoipa::path(get, path = "/api/integrations/v1alpha1/ws/{app}/{channel}", tag = "integrations", params(ChannelPath, WsQuery),
    responses((status = 101, description = "WebSocket upgrade; then one CloudEvent of the channel per text frame"),
        (status = 400, description = BAD_UPGRADE, body = ErrorInformation),
        (status = 404, description = NOT_FOUND_APP, body = ErrorInformation),
        (status = 429, description = TOO_MANY_STREAMS, body = ErrorInformation),
        (status = 503, description = NO_STREAM, body = ErrorInformation)))]
async fn stream_channel(
    State(s): State<ApiState>,
    Path(ChannelPath { app, channel }): Path<ChannelPath>,
    Query(q): Query<WsQuery>,
    req: axum::extract::Request,
) -> ApiResult<Response> {
    upgrade(s, req.into_parts().0, app, Some(channel), q).await
}
