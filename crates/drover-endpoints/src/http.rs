//! The HTTP device endpoint: `POST /v1/{channel}[/{suffix...}]`, as Drogue Cloud's.
//!
//! Query: `application`, `device` (with a `user` credential), `data_schema`, `as` (act for a
//! device behind this gateway), `ct` / `commandTimeout` (seconds to wait for a command).
//! 202 once the event is durable in the application's stream; 401 without credentials; 403
//! when they are wrong; 406 when a JSON content type does not parse; 413 over the body limit;
//! 503 when the stream cannot take it now.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{FromRequest, Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use base64::Engine as _;
use drover_auth::device::{AuthError, DeviceAuthenticator, DeviceCredentials};
use drover_bus::commands::{Command, CommandRouter, CommandSink, Reply, ReplyError, SinkRefusal};
use drover_bus::{BusError, EventLog, StreamKey};
use serde::Deserialize;
use serde_json::json;

use crate::event::{detect_content_type, is_json, telemetry, validate_channel, Message};

/// Settings of the HTTP endpoint.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    /// Largest request body in bytes.
    pub body_limit: usize,
    /// Longest `ct` honoured, in seconds.
    pub max_command_timeout: u64,
    /// Name of this node, carried in events as `instance`.
    pub instance: String,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            body_limit: 256 * 1024,
            max_command_timeout: 60,
            instance: "drover".into(),
        }
    }
}

#[derive(Clone)]
struct HttpState {
    auth: Arc<DeviceAuthenticator>,
    log: Arc<dyn EventLog>,
    commands: Arc<CommandRouter>,
    settings: Arc<HttpSettings>,
}

/// The endpoint's routes.
pub fn router(
    auth: Arc<DeviceAuthenticator>,
    log: Arc<dyn EventLog>,
    commands: Arc<CommandRouter>,
    settings: HttpSettings,
) -> Router {
    let limit = settings.body_limit;
    Router::new()
        .route("/v1/{channel}", post(publish))
        .route("/v1/{channel}/{*suffix}", post(publish_suffix))
        .route("/command-reply/{id}", post(command_reply))
        .fallback(|| async {
            error(
                StatusCode::NOT_FOUND,
                "NotFound",
                "no such endpoint: devices publish with POST /v1/<channel>",
            )
        })
        .layer(axum::extract::DefaultBodyLimit::max(limit))
        .with_state(HttpState {
            auth,
            log,
            commands,
            settings: Arc::new(settings),
        })
}

/// A refusal of the HTTP endpoint: the one place its errors become responses,
/// `{"error": "<Kind>", "message": "..."}`.
#[derive(Debug)]
struct HttpError {
    status: StatusCode,
    kind: &'static str,
    message: String,
    /// Sent as `Retry-After` (seconds, rounded up).
    retry_after: Option<Duration>,
}

fn error(status: StatusCode, kind: &'static str, message: impl Into<String>) -> HttpError {
    HttpError {
        status,
        kind,
        message: message.into(),
        retry_after: None,
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let mut r = (
            self.status,
            Json(json!({"error": self.kind, "message": self.message})),
        )
            .into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"drover\""),
            );
        }
        let retry_after = match (self.retry_after, self.status) {
            (Some(d), _) => Some(d.as_secs() + u64::from(d.subsec_nanos() > 0)),
            (None, StatusCode::SERVICE_UNAVAILABLE) => Some(1),
            _ => None,
        };
        if let Some(secs) = retry_after {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        }
        r
    }
}

#[derive(Debug, Default, Deserialize)]
struct PublishQuery {
    application: Option<String>,
    device: Option<String>,
    data_schema: Option<String>,
    #[serde(rename = "as")]
    as_device: Option<String>,
    ct: Option<u64>,
    #[serde(rename = "commandTimeout")]
    command_timeout: Option<u64>,
}

async fn publish(
    State(s): State<HttpState>,
    Path(channel): Path<String>,
    query: Result<Query<PublishQuery>, axum::extract::rejection::QueryRejection>,
    req: Request,
) -> Response {
    handle(s, channel, query, req).await
}

async fn publish_suffix(
    State(s): State<HttpState>,
    Path((channel, suffix)): Path<(String, String)>,
    query: Result<Query<PublishQuery>, axum::extract::rejection::QueryRejection>,
    req: Request,
) -> Response {
    handle(s, format!("{channel}/{suffix}"), query, req).await
}

fn basic_credentials(headers: &HeaderMap) -> Result<Option<(String, String)>, HttpError> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let Some(v) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "more than one Authorization header",
        ));
    }
    let bad = || {
        error(
            StatusCode::UNAUTHORIZED,
            "AuthenticationError",
            "malformed Basic credentials: expected base64 of 'user:password'",
        )
    };
    let v = v.to_str().map_err(|_| bad())?;
    let (scheme, rest) = v.split_once(' ').ok_or_else(bad)?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(error(
            StatusCode::UNAUTHORIZED,
            "AuthenticationError",
            format!("unsupported authorization scheme '{scheme}': devices use Basic"),
        ));
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(rest.trim())
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(bad)?;
    let (u, p) = decoded.split_once(':').ok_or_else(bad)?;
    Ok(Some((u.to_string(), p.to_string())))
}

async fn handle(
    s: HttpState,
    channel: String,
    query: Result<Query<PublishQuery>, axum::extract::rejection::QueryRejection>,
    req: Request,
) -> Response {
    match accept(s, channel, query, req).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn accept(
    s: HttpState,
    channel: String,
    query: Result<Query<PublishQuery>, axum::extract::rejection::QueryRejection>,
    req: Request,
) -> Result<Response, HttpError> {
    let q = match query {
        Ok(Query(q)) => q,
        Err(e) => {
            return Err(error(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                format!("invalid query: {}", e.body_text()),
            ))
        }
    };
    if let Err(why) = validate_channel(&channel) {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            format!("invalid channel: {why}"),
        ));
    }
    let client_certs = req
        .extensions()
        .get::<drover_net::Peer>()
        .and_then(|p| p.client_certificates().cloned());
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let creds = match (basic_credentials(req.headers()), client_certs) {
        (Err(r), _) => return Err(r),
        (Ok(Some((username, password))), _) => DeviceCredentials::Password {
            username,
            password,
            application: q.application.clone(),
            device: q.device.clone(),
        },
        (Ok(None), Some(chain)) => DeviceCredentials::Certificate {
            chain: chain.as_ref().clone(),
            application: q.application.clone(),
        },
        (Ok(None), None) => {
            return Err(error(
                StatusCode::UNAUTHORIZED,
                "AuthenticationError",
                "credentials required: HTTP Basic '<device>@<application>:<password>' or a TLS client certificate",
            ))
        }
    };
    let source = peer_ip(&req);
    let sender = match s.auth.authenticate(&creds, source).await {
        Ok(d) => d,
        Err(e) => return Err(auth_failure(&e, &creds, &s.auth)),
    };
    let device = match &q.as_device {
        Some(target) => match s.auth.authorize_as(&sender, target).await {
            Ok(d) => d,
            Err(e) => return Err(auth_failure(&e, &creds, &s.auth)),
        },
        None => sender.device.clone(),
    };
    let body = match Bytes::from_request(req, &()).await {
        Ok(b) => b,
        Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return Err(error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "PayloadTooLarge",
                format!("payload larger than {} bytes", s.settings.body_limit),
            ))
        }
        Err(e) => {
            return Err(error(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                format!("cannot read body: {e}"),
            ))
        }
    };
    if let Some(ct) = content_type.as_deref().filter(|ct| is_json(ct)) {
        if let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(&body) {
            return Err(error(
                StatusCode::NOT_ACCEPTABLE,
                "NotAcceptable",
                format!("content type '{ct}' but the payload is not valid JSON: {e}"),
            ));
        }
    }
    let message = Message {
        content_type: detect_content_type(content_type.as_deref(), &body),
        data_schema: q.data_schema.clone(),
        extensions: Vec::new(),
        data: body,
        channel,
    };
    let event = telemetry(&sender, &device, message, &s.settings.instance);
    let stream = StreamKey::new(sender.app_name(), sender.app_uid());
    match s.log.append(&stream, event).await {
        Ok(_) => {}
        Err(BusError::TooLarge(m)) => {
            return Err(error(StatusCode::PAYLOAD_TOO_LARGE, "PayloadTooLarge", m))
        }
        Err(e @ (BusError::Overloaded(_) | BusError::Unavailable(_) | BusError::Closed)) => {
            tracing::warn!(
                app = sender.app_name(),
                device = sender.device_name(),
                "cannot accept telemetry: {e}"
            );
            return Err(error(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailable",
                e.to_string(),
            ));
        }
        Err(e) => return Err(error(StatusCode::BAD_REQUEST, "BadRequest", e.to_string())),
    }
    let wait =
        q.ct.or(q.command_timeout)
            .unwrap_or(0)
            .min(s.settings.max_command_timeout);
    if wait > 0 {
        // Long poll: this request is a sink for the device's commands while it waits.
        let (tx, rx) = tokio::sync::oneshot::channel();
        let sink = Arc::new(PollSink(std::sync::Mutex::new(Some(tx))));
        let key = (sender.app_uid().to_string(), device.metadata.name.clone());
        let registration = s.commands.register(key, sink);
        let command = tokio::time::timeout(Duration::from_secs(wait), rx).await;
        drop(registration);
        if let Ok(Ok(c)) = command {
            return Ok(command_response(&c));
        }
    }
    Ok(StatusCode::ACCEPTED.into_response())
}

/// Takes one command for a device waiting in a long poll.
struct PollSink(std::sync::Mutex<Option<tokio::sync::oneshot::Sender<Command>>>);

impl CommandSink for PollSink {
    fn deliver(&self, c: &Command) -> Result<(), SinkRefusal> {
        let tx = self.0.lock().unwrap_or_else(|e| e.into_inner()).take();
        match tx {
            Some(tx) => tx.send(c.clone()).map_err(|_| SinkRefusal::Gone),
            None => Err(SinkRefusal::Gone),
        }
    }
}

/// 200 with the command: header `command` (its name), `command-request-id` when the caller
/// waits for a reply, the payload as body.
fn command_response(c: &Command) -> Response {
    let mut r = (StatusCode::OK, c.payload.clone()).into_response();
    let h = r.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&c.name) {
        h.insert("command", v);
    }
    if c.expects_reply {
        if let Ok(v) = HeaderValue::from_str(&c.id) {
            h.insert("command-request-id", v);
        }
    }
    let ct = c
        .content_type
        .as_deref()
        .unwrap_or("application/octet-stream");
    if let Ok(v) = HeaderValue::from_str(ct) {
        h.insert(header::CONTENT_TYPE, v);
    }
    r
}

#[derive(Debug, Default, Deserialize)]
struct ReplyQuery {
    status: Option<u16>,
    application: Option<String>,
    device: Option<String>,
}

/// `POST /command-reply/{id}?status=<code>`: a device answers a command it got with a
/// `command-request-id`. 204 when a caller was waiting for it; 404 when none is (unknown,
/// answered, or timed out); 403 when the command was not for this device.
async fn command_reply(
    State(s): State<HttpState>,
    Path(id): Path<String>,
    query: Result<Query<ReplyQuery>, axum::extract::rejection::QueryRejection>,
    req: Request,
) -> Response {
    let result: Result<Response, HttpError> = async {
        let q = query.map(|Query(q)| q).map_err(|e| {
            error(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                format!("invalid query: {}", e.body_text()),
            )
        })?;
        let status = q.status.unwrap_or(200);
        if !(100..600).contains(&status) {
            return Err(error(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                "status must be 100..599",
            ));
        }
        let Some((username, password)) = basic_credentials(req.headers())? else {
            return Err(error(
                StatusCode::UNAUTHORIZED,
                "AuthenticationError",
                "credentials required",
            ));
        };
        let content_type = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let creds = DeviceCredentials::Password {
            username,
            password,
            application: q.application,
            device: q.device,
        };
        let responder = s
            .auth
            .authenticate(&creds, peer_ip(&req))
            .await
            .map_err(|e| auth_failure(&e, &creds, &s.auth))?;
        let body = Bytes::from_request(req, &()).await.map_err(|e| {
            error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "PayloadTooLarge",
                e.to_string(),
            )
        })?;
        let reply = Reply {
            status,
            payload: body.clone(),
            content_type: content_type.clone(),
        };
        match s
            .commands
            .reply(responder.app_uid(), responder.device_name(), &id, reply)
        {
            Ok(()) => {}
            Err(e @ ReplyError::Unknown(_)) => {
                return Err(error(StatusCode::NOT_FOUND, "NotFound", e.to_string()))
            }
            Err(e @ ReplyError::NotYours(..)) => {
                return Err(error(
                    StatusCode::FORBIDDEN,
                    "AuthenticationError",
                    e.to_string(),
                ))
            }
        }
        let mut event = telemetry(
            &responder,
            &responder.device,
            Message {
                channel: format!("reply/{id}"),
                content_type,
                extensions: vec![
                    ("commandid".into(), id.clone()),
                    ("status".into(), status.to_string()),
                ],
                data: body,
                ..Message::default()
            },
            &s.settings.instance,
        );
        event.ty = drover_model::event::COMMAND_REPLY_TYPE.to_string();
        let stream = StreamKey::new(responder.app_name(), responder.app_uid());
        if let Err(e) = s.log.append(&stream, event).await {
            tracing::warn!("cannot record a command reply: {e}");
        }
        Ok(StatusCode::NO_CONTENT.into_response())
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

fn auth_failure(e: &AuthError, creds: &DeviceCredentials, auth: &DeviceAuthenticator) -> HttpError {
    if e.is_unavailable() {
        tracing::warn!("device authentication unavailable: {e}");
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            "device authentication is unavailable, retry later",
        );
    }
    if let Some(held_back) = auth.throttle().admit_log() {
        tracing::info!(credentials = ?creds, held_back, "device refused: {e}");
    }
    if let AuthError::Throttled(t) = e {
        return HttpError {
            retry_after: Some(t.retry_after),
            ..error(
                StatusCode::TOO_MANY_REQUESTS,
                "TooManyRequests",
                t.to_string(),
            )
        };
    }
    error(
        StatusCode::FORBIDDEN,
        "AuthenticationError",
        "authentication failed",
    )
}

/// The peer's address (the `drover_net::Peer` every listener sets).
fn peer_ip(req: &Request) -> IpAddr {
    req.extensions()
        .get::<drover_net::Peer>()
        .map(|p| p.addr.ip())
        .unwrap_or(IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED))
}
