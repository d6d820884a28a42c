//! The HTTP device endpoint: `POST /v1/{channel}[/{suffix...}]`, as Drogue Cloud's.
//!
//! Query: `application`, `device` (with a `user` credential), `data_schema`, `as` (act for a
//! device behind this gateway), `ct` / `commandTimeout` (seconds to wait for a command).
//! 202 once the event is durable in the application's stream; 401 without credentials; 403
//! when they are wrong; 406 when a JSON content type does not parse; 413 over the body limit;
//! 429 when the source is locked out after failed logins; 503 when the stream cannot take it
//! now.
//!
//! [`request`] reads what a request says (nothing else looks at its bytes); [`error`] turns
//! refusals into responses; this module acts.

mod error;
pub mod request;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{FromRequest, Path, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use drover_auth::device::DeviceAuthenticator;
use drover_bus::commands::{Command, CommandRouter, CommandSink, Reply, ReplyError, SinkRefusal};
use drover_bus::{EventLog, StreamKey};

use self::error::{error, HttpError};
use self::request::{check_payload, PublishRequest, ReplyRequest};
use crate::event::{detect_content_type, telemetry, Message};

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

async fn publish(
    State(s): State<HttpState>,
    Path(channel): Path<String>,
    req: Request,
) -> Response {
    accept(s, channel, req)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn publish_suffix(
    State(s): State<HttpState>,
    Path((channel, suffix)): Path<(String, String)>,
    req: Request,
) -> Response {
    accept(s, format!("{channel}/{suffix}"), req)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

/// The client certificates the TLS handshake proved the client holds.
fn client_certificates(req: &Request) -> Option<Arc<Vec<Vec<u8>>>> {
    req.extensions()
        .get::<drover_net::Peer>()
        .and_then(|p| p.client_certificates().cloned())
}

/// Reads the body, within the body limit.
async fn body(req: Request, limit: usize) -> Result<Bytes, HttpError> {
    Bytes::from_request(req, &()).await.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "PayloadTooLarge",
                format!("payload larger than {limit} bytes"),
            )
        } else {
            error::bad_request(format!("cannot read body: {e}"))
        }
    })
}

async fn accept(s: HttpState, channel: String, req: Request) -> Result<Response, HttpError> {
    let certs = client_certificates(&req);
    let r = PublishRequest::parse(
        channel,
        req.uri().query(),
        req.headers(),
        certs.as_deref().map(Vec::as_slice),
    )?;
    let sender = s
        .auth
        .authenticate(&r.credentials, peer_ip(&req))
        .await
        .map_err(|e| HttpError::authentication(&e, &r.credentials, &s.auth))?;
    let device = match &r.query.as_device {
        Some(target) => s
            .auth
            .authorize_as(&sender, target)
            .await
            .map_err(|e| HttpError::authentication(&e, &r.credentials, &s.auth))?,
        None => sender.device.clone(),
    };
    let body = body(req, s.settings.body_limit).await?;
    check_payload(r.content_type.as_deref(), &body)?;
    let wait = r.command_wait(s.settings.max_command_timeout);
    let message = Message {
        content_type: detect_content_type(r.content_type.as_deref(), &body),
        data_schema: r.query.data_schema,
        extensions: Vec::new(),
        data: body,
        channel: r.channel,
    };
    let event = telemetry(&sender, &device, message, &s.settings.instance);
    let stream = StreamKey::new(sender.app_name(), sender.app_uid());
    if let Err(e) = s.log.append(&stream, event).await {
        tracing::warn!(
            app = sender.app_name(),
            device = sender.device_name(),
            "cannot accept telemetry: {e}"
        );
        return Err(HttpError::append(e));
    }
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

/// `POST /command-reply/{id}?status=<code>`: a device answers a command it got with a
/// `command-request-id`. 204 when a caller was waiting for it; 404 when none is (unknown,
/// answered, or timed out); 403 when the command was not for this device.
async fn command_reply(
    State(s): State<HttpState>,
    Path(id): Path<String>,
    req: Request,
) -> Response {
    reply(s, id, req)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn reply(s: HttpState, id: String, req: Request) -> Result<Response, HttpError> {
    let r = ReplyRequest::parse(req.uri().query(), req.headers())?;
    let responder = s
        .auth
        .authenticate(&r.credentials, peer_ip(&req))
        .await
        .map_err(|e| HttpError::authentication(&e, &r.credentials, &s.auth))?;
    let body = body(req, s.settings.body_limit).await?;
    let reply = Reply {
        status: r.status,
        payload: body.clone(),
        content_type: r.content_type.clone(),
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
            content_type: r.content_type,
            extensions: vec![
                ("commandid".into(), id.clone()),
                ("status".into(), r.status.to_string()),
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

/// The peer's address (the `drover_net::Peer` every listener sets).
fn peer_ip(req: &Request) -> IpAddr {
    req.extensions()
        .get::<drover_net::Peer>()
        .map(|p| p.addr.ip())
        .unwrap_or(IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED))
}
