//! MQTT over WebSocket on the HTTP(S) device listeners: `GET /$iothub/websocket` (the path
//! Azure's device SDKs use with `websockets=True`, the way through firewalls that let only
//! port 443 out) and `GET /mqtt` (the path most MQTT clients default to). Both upgrade to a
//! WebSocket with the subprotocol `mqtt` and then serve the device MQTT server — the same
//! policy, dialects, limits and sessions as the MQTT listeners; a TLS client certificate of the
//! HTTPS connection authenticates the device as on MQTTS.
//!
//! MQTT packets travel in binary frames, split or joined however the client likes (MQTT 3.1.1
//! §6, MQTT 5 §6); [`WsBytes`] turns the frames back into the byte stream `drover-mqtt` reads.
//! A text frame is a protocol error and closes the connection.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use axum::body::Bytes;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequestParts, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use drover_mqtt::{ConnectionInfo, MqttServer};
use futures::{Sink, Stream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::DevicePolicy;

/// The WebSocket subprotocol of MQTT (MQTT 3.1.1 §6, MQTT 5 §6).
pub const SUBPROTOCOL: &str = "mqtt";

/// The paths that carry MQTT over WebSocket.
pub const PATHS: [&str; 2] = ["/$iothub/websocket", "/mqtt"];

/// The routes that upgrade to MQTT over WebSocket, served by `server`.
pub fn router(server: Arc<MqttServer<DevicePolicy>>) -> Router {
    let mut r = Router::new();
    for path in PATHS {
        r = r.route(path, get(upgrade));
    }
    r.with_state(server)
}

async fn upgrade(State(server): State<Arc<MqttServer<DevicePolicy>>>, req: Request) -> Response {
    let (mut parts, _) = req.into_parts();
    let offered = parts
        .headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect::<Vec<_>>();
    if !offered.is_empty() && !offered.contains(&SUBPROTOCOL) {
        return refuse(format!(
            "MQTT over WebSocket needs the subprotocol '{SUBPROTOCOL}'; the client offered {}",
            offered.join(", ")
        ));
    }
    let ws = match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
        Ok(ws) => ws,
        Err(e) => {
            return refuse(format!(
                "MQTT over WebSocket: not a WebSocket upgrade request ({})",
                e.body_text()
            ))
        }
    };
    let peer = parts.extensions.get::<drover_net::Peer>().cloned();
    let Some(peer) = peer else {
        return (StatusCode::INTERNAL_SERVER_ERROR, "no peer information").into_response();
    };
    let mut info = ConnectionInfo::new(peer.addr);
    if let Some(tls) = &peer.tls {
        if let Some(chain) = &tls.client_certificates {
            info = info.with_client_certificates(chain.as_ref().clone());
        }
        info.server_name = tls.server_name.clone();
    }
    // A frame or message can hold at most one packet of the largest size, and its header.
    let limit = server.config().max_packet_size as usize + 8;
    ws.protocols([SUBPROTOCOL])
        .max_message_size(limit)
        .max_frame_size(limit)
        .on_upgrade(move |socket| async move {
            tracing::debug!(peer = %info.peer_addr, "MQTT over WebSocket");
            drover_mqtt::serve_connection(WsBytes::new(socket), info, server).await;
        })
}

fn refuse(message: String) -> Response {
    tracing::info!("{message}");
    (StatusCode::BAD_REQUEST, message).into_response()
}

/// A WebSocket as a byte stream: binary frames in, binary frames out.
pub struct WsBytes {
    ws: WebSocket,
    /// What is left of the binary message being read.
    unread: Bytes,
    /// The client closed (a Close frame, or the stream ended).
    eof: bool,
}

impl WsBytes {
    pub fn new(ws: WebSocket) -> Self {
        WsBytes {
            ws,
            unread: Bytes::new(),
            eof: false,
        }
    }
}

impl AsyncRead for WsBytes {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            if !self.unread.is_empty() {
                let n = self.unread.len().min(buf.remaining());
                let chunk = self.unread.split_to(n);
                buf.put_slice(&chunk);
                return Poll::Ready(Ok(()));
            }
            if self.eof {
                return Poll::Ready(Ok(()));
            }
            match ready!(Pin::new(&mut self.ws).poll_next(cx)) {
                Some(Ok(Message::Binary(b))) => self.unread = b,
                // Answered by the WebSocket itself (pings) or nothing to do (pongs).
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                Some(Ok(Message::Close(_))) | None => self.eof = true,
                Some(Ok(Message::Text(_))) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "MQTT over WebSocket travels in binary frames; a text frame arrived",
                    )))
                }
                Some(Err(e)) => return Poll::Ready(Err(io::Error::other(e))),
            }
        }
    }
}

impl AsyncWrite for WsBytes {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        ready!(Pin::new(&mut self.ws).poll_ready(cx)).map_err(io::Error::other)?;
        Pin::new(&mut self.ws)
            .start_send(Message::Binary(Bytes::copy_from_slice(buf)))
            .map_err(io::Error::other)?;
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.ws)
            .poll_flush(cx)
            .map_err(io::Error::other)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.ws)
            .poll_close(cx)
            .map_err(io::Error::other)
    }
}
