//! # drover-net
//!
//! The one way Drover listens on a socket. Every listener of the platform — the management API,
//! the HTTP(S) device endpoint, MQTT(S) for devices and for the MQTT integration — runs the same
//! accept loop ([`Listener::serve`]):
//!
//! * **a cap on open connections** ([`Listener::max_connections`]): a connection over the cap is
//!   answered with the protocol's refusal ([`Handler::refuse`]: HTTP 503, MQTT CONNACK "server
//!   busy") by at most [`MAX_REFUSING`] tasks at once, and closed unanswered beyond that; the
//!   slot is held by the socket itself ([`Stream`]), so it is freed when the socket is closed,
//!   also after an HTTP upgrade hands the socket to a WebSocket task;
//! * **TLS** (optional): the handshake runs in the connection's task, bounded by
//!   [`Listener::handshake_timeout`]; the client certificate chain and server name reach the
//!   protocol in [`Peer::tls`];
//! * **graceful stop**: when the shutdown future resolves, the loop stops accepting, tells every
//!   connection to finish ([`Handler::serve`]'s `stop` token) and returns once all have ended
//!   (dropping the future aborts them);
//! * **a tracing span per connection** (`connection`, with the listener's name and the peer).
//!
//! [`http::serve`] serves HTTP/1.1 and HTTP/2 (hyper) on such a listener with the timeouts
//! HTTP needs to not be held open by idle or slow clients ([`http::HttpTimeouts`]).
//!
//! **It owns** sockets, TLS streams and HTTP connection handling. **It knows nothing of** what
//! the requests or packets mean: routes are a `tower` service handed in, MQTT is
//! `drover-mqtt`'s (which implements [`Handler`]).

#![forbid(unsafe_code)]

pub mod http;
mod listener;
mod stream;

pub use listener::{Connection, Handler, Listener, DEFAULT_MAX_CONNECTIONS, MAX_REFUSING};
pub use stream::{Peer, Stream, TlsInfo};
