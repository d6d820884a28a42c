//! # drover-mqtt
//!
//! MQTT session machinery shared by Drover's device endpoint and its MQTT integration: the
//! codec adapter, the CONNECT handshake, keep-alive, QoS 0/1 flows in both directions, and
//! session state (subscriptions, queued messages, takeover, expiry).
//!
//! **It owns** everything MQTT 3.1, 3.1.1 and 5.0 say about a connection and a session. **It knows
//! nothing of** the registry, the event bus, Drover's topics or authentication: what a CONNECT,
//! PUBLISH or SUBSCRIBE *means* is decided by a [`Policy`] that the user of the crate supplies,
//! and messages for a client are handed in through a [`SessionHandle`]. Every MQTT byte Drover
//! parses is parsed here (framing by [`rmqtt-codec`](https://docs.rs/rmqtt-codec), pinned,
//! wrapped in one module so no other crate sees its types).
//!
//! ## Quick start
//!
//! ```no_run
//! use drover_mqtt::{
//!     serve_tcp, Accepted, ConnectRequest, Inbound, MqttConfig, MqttServer, OutboundMessage,
//!     Policy, PublishRefusal, QoS, Refusal, SessionHandle, SubscribeRefusal, SubscribeRequest,
//! };
//!
//! struct Devices;
//!
//! impl Policy for Devices {
//!     /// What `connect` learned; handed back on every later call.
//!     type Identity = String;
//!
//!     async fn connect(&self, req: &ConnectRequest) -> Result<Accepted<String>, Refusal> {
//!         match req.username.as_deref() {
//!             Some(user) if req.password.as_deref() == Some(&b"secret"[..]) => {
//!                 // One live connection per device: the key decides takeover.
//!                 Ok(Accepted::new(user.to_string(), format!("app/{user}")))
//!             }
//!             _ => Err(Refusal::BadCredentials),
//!         }
//!     }
//!
//!     async fn publish(&self, device: &String, msg: Inbound) -> Result<(), PublishRefusal> {
//!         // Append durably here: for QoS 1 the PUBACK goes out when this returns Ok.
//!         println!("{device} sent {} bytes to {}", msg.payload.len(), &*msg.topic);
//!         Ok(())
//!     }
//!
//!     async fn subscribe(
//!         &self,
//!         _device: &String,
//!         _session: &SessionHandle,
//!         req: &SubscribeRequest,
//!     ) -> Vec<Result<QoS, SubscribeRefusal>> {
//!         req.filters.iter().map(|f| Ok(f.options.qos)).collect()
//!     }
//! }
//!
//! # async fn run() -> std::io::Result<()> {
//! let server = MqttServer::new(Devices, MqttConfig::default());
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:1883").await?;
//! let shutdown = async { let _ = tokio::signal::ctrl_c().await; };
//! tokio::spawn(serve_tcp(listener, server.clone(), shutdown));
//!
//! // Later, e.g. from a command router: deliver to a device's session (queued while it is
//! // offline, if its session is persistent), and learn when it acknowledged.
//! if let Some(session) = server.session("app/dev1") {
//!     if let Some(qos) = session.subscription_qos("command/inbox//reboot") {
//!         let delivery = session
//!             .publish(OutboundMessage::new("command/inbox//reboot", "{}", qos.min(QoS::AtLeastOnce)))
//!             .await;
//!         if let Ok(delivery) = delivery {
//!             let _ = delivery.acknowledged().await; // resolves on PUBACK
//!         }
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! Listeners are `drover-net`'s: [`serve`] runs MQTT on a [`drover_net::Listener`] (plain or
//! TLS, with its cap on open connections; a connection over the cap gets CONNACK Server busy);
//! [`serve_tcp`] and [`serve_tls`] are shorthands with `drover-net`'s defaults. Other
//! transports (a WebSocket adapter) call [`serve_connection`] with the stream and a
//! [`ConnectionInfo`]; their accept loop should stop on [`MqttServer::shutdown_requested`].
//!
//! ## How a connection runs
//!
//! One task per connection ([`serve_connection`]): it reads the CONNECT (version detection,
//! [`MqttConfig::connect_timeout`]), asks [`Policy::connect`], attaches to the session named by
//! [`Accepted::session_key`] (taking it over from a live connection, whose teardown completes
//! first), writes CONNACK, calls [`Policy::connected`], then runs one `select!` loop over: the
//! socket's read half, the write half (everything encoded since the last write goes out in one
//! write, then one flush), the policy futures, the session's outbound queue, the keep-alive and
//! packet timers and the takeover/shutdown signals. No lock is held across an `.await`; the steady state
//! allocates nothing per message beyond what the codec does (one box per PUBLISH) and a oneshot
//! per outbound QoS 1 message.
//!
//! * **Inbound PUBLISH**: validated (QoS, retain, topic, aliases, receive maximum) as it is
//!   decoded, then handed to [`Policy::publish`] strictly in packet order. QoS 1 is acknowledged
//!   only when the policy's future resolved `Ok`; acknowledgements go out in packet order. With
//!   [`MqttConfig::inbound_concurrency`] > 1 several policy futures run at once (each first
//!   polled in packet order). SUBSCRIBE, UNSUBSCRIBE and DISCONNECT wait until everything before
//!   them is done. Reading pauses while [`MqttConfig::inbound_queue`] packets (or a maximum
//!   packet size of payload) wait, or while the client does not read its acknowledgements.
//! * **SUBSCRIBE**: filters are validated (`$share/<group>/<filter>` split into group and filter;
//!   wildcard and shared availability enforced) and the rest go to [`Policy::subscribe`] with
//!   the packet's user properties; granted subscriptions are stored in the session, then SUBACK
//!   is sent. The crate does not route messages between clients: whoever delivers uses
//!   [`SessionHandle::subscription_qos`] / [`SessionHandle::subscriptions`].
//! * **Outbound** ([`SessionHandle::publish`]): a bounded per-session queue
//!   ([`MqttConfig::session_queue_limit`]; `publish` waits, [`SessionHandle::try_publish`] does
//!   not) feeds an in-flight window (the client's Receive Maximum capped by
//!   [`MqttConfig::outbound_window`]; MQTT 3 uses the cap). [`Delivery`] tells whether the
//!   session was connected ([`Enqueued`]) and resolves on PUBACK. Messages above the client's
//!   Maximum Packet Size are dropped ([`DeliveryError::TooLarge`], logged); expired ones too.
//! * **Sessions** are in memory ([`MqttConfig::max_sessions`]), keyed by the policy's session
//!   key. CleanSession = 0 (3.1.1) / Clean Start = 0 with an expiry (5) keeps subscriptions and
//!   unacknowledged QoS 1 messages across connections; they are resent with DUP = 1, in order,
//!   on resumption (session present = 1), so an Azure IoT device that never re-subscribes still
//!   gets its cloud-to-device messages. MQTT 3 persistent sessions expire after
//!   [`MqttConfig::v3_session_expiry`]. Expired sessions are reaped every
//!   [`MqttConfig::reap_interval`]; [`Policy::session_ended`] is told.
//! * **Wills** go to [`Policy::will`] when a connection ends for any reason but DISCONNECT 0x00
//!   or server shutdown (so also on keep-alive timeout, protocol error, takeover, and MQTT 5
//!   DISCONNECT 0x04), after the MQTT 5 Will Delay Interval (capped by the session expiry),
//!   unless the session was resumed meanwhile.
//! * **Shutdown** ([`MqttServer::shutdown`], or the future given to [`serve_tcp`]): stop
//!   accepting, send MQTT 5 clients DISCONNECT 0x8B, flush, close; [`MqttServer::closed`] waits
//!   for all connections and then discards the sessions.
//!
//! Every refusal and protocol violation is logged as one `tracing` line with `peer`, `client_id`
//! and the precise reason, a protocol violation as a [`Violation`] that keeps its cause; the
//! server never panics on input (property-tested with random, truncated and mutated byte
//! streams; fuzzed by `fuzz/` targets `mqtt_wire`, the wire adapter alone, and
//! `mqtt_connection`, a whole connection).
//!
//! ## Protocol decisions
//!
//! | situation | MQTT 5 | MQTT 3.1 / 3.1.1 |
//! |---|---|---|
//! | [`Refusal::BadCredentials`] | CONNACK 0x86 | CONNACK 4 |
//! | [`Refusal::NotAuthorized`] / [`Refusal::Banned`] | 0x87 / 0x8A | 5 |
//! | [`Refusal::ServerUnavailable`] / [`Refusal::ServerBusy`] / [`Refusal::QuotaExceeded`] | 0x88 / 0x89 / 0x97 | 3 |
//! | [`Refusal::ClientIdInvalid`], empty client id not allowed | 0x85 | 2 |
//! | session store full ([`MqttConfig::max_sessions`]) | 0x89 | 3 |
//! | unknown protocol level | CONNACK 1 (3.1.1 format) | 1 |
//! | malformed CONNECT / too large | 0x81, 0x82 / 0x95 | close |
//! | enhanced authentication (Authentication Method) | 0x8C | — |
//! | will with QoS 2 / retain / invalid topic | 0x9B / 0x9A / 0x90 | accepted / passed on / close |
//! | no CONNECT within `connect_timeout` | close | close |
//! | CONNACK properties | Maximum QoS 1, Retain Available 0, Receive Maximum, Maximum Packet Size, Topic Alias Maximum, Wildcard / Shared Subscription Available (config or [`Accepted`]), Subscription Identifiers Available 0, Server Keep Alive (when capped), Session Expiry Interval (when capped), Assigned Client Identifier | — |
//! | [`PublishRefusal`] on QoS 1 | PUBACK 0x87, 0x90, 0x97, 0x99, 0x80, 0x83 | close |
//! | [`PublishRefusal`] on QoS 0 | dropped, logged | dropped, logged |
//! | PUBLISH QoS 2 | DISCONNECT 0x9B | close |
//! | PUBLISH with RETAIN | DISCONNECT 0x9A (Retain Available is 0) | passed to the policy with `retain = true` (3.1.1 cannot advertise it; the crate stores nothing) |
//! | topic with wildcard or U+0000 | DISCONNECT 0x90 | close |
//! | empty topic without alias / unknown alias | DISCONNECT 0x82 | close |
//! | topic alias 0 or above maximum | DISCONNECT 0x94 | — |
//! | invalid UTF-8, bad lengths, bad flags | DISCONNECT 0x81 (0x82 for flag/type errors) | close |
//! | packet above [`MqttConfig::max_packet_size`] | DISCONNECT 0x95 | close |
//! | more unacknowledged QoS 1 than Receive Maximum | DISCONNECT 0x93 | close |
//! | subscription identifier in SUBSCRIBE / PUBLISH | DISCONNECT 0xA1 / 0x82 | — |
//! | No Local on a shared subscription | DISCONNECT 0x82 | — |
//! | PUBREC/PUBREL/PUBCOMP, AUTH, second CONNECT, server-only packets | DISCONNECT 0x82 | close |
//! | DISCONNECT sets an expiry after CONNECT set 0 | DISCONNECT 0x82 | — |
//! | SUBACK per filter | 0x00/0x01 granted (QoS 2 lowered to 1), 0x87, 0x8F invalid filter, 0x9E shared unavailable, 0xA2 wildcards unavailable, 0x97, 0x80, 0x83 | granted QoS or 0x80 |
//! | UNSUBACK per filter | 0x00, 0x11 no subscription existed, 0x8F | plain UNSUBACK |
//! | keep-alive: nothing received for 1.5 × keep-alive | DISCONNECT 0x8D | close |
//! | a packet not complete [`MqttConfig::packet_timeout`] after its first byte (bytes trickled to keep the keep-alive going) | DISCONNECT 0x8D | close |
//! | CONNECT on a listener that has its cap of connections open | CONNACK 0x89 | CONNACK 3 |
//! | keep-alive 0 or above [`MqttConfig::max_keep_alive`] | raised/lowered to the maximum, told in Server Keep Alive | held to the maximum silently |
//! | session taken over | DISCONNECT 0x8E to the old connection | close |
//! | [`SessionHandle::disconnect`] | DISCONNECT with the given code | close |
//! | server shutdown | DISCONNECT 0x8B | close |
//!
//! Not supported, by design: QoS 2 (Maximum QoS is 1), retained messages, MQTT 5 enhanced
//! authentication (AUTH), subscription identifiers, server → client topic aliases, request /
//! response information. The Payload Format Indicator is passed on, not checked: a policy that
//! cares refuses with [`PublishRefusal::PayloadFormatInvalid`].
//!
//! ## rmqtt-codec, and what this crate does about its quirks
//!
//! * Invalid UTF-8 in strings is reported by the codec as "payload format invalid" (0x99); it is a
//!   malformed packet (0x81) and mapped so.
//! * Its MQTT 5 outbound size limit (`set_max_outbound_size`) underflows for tiny client Maximum
//!   Packet Sizes; it is not used: the crate checks the size of each encoded PUBLISH itself and
//!   never sends more than the client allows.
//! * Its MQTT 3 encoder panics on a remaining length above 268 435 455; outbound messages are
//!   size-checked before they are queued ([`PublishError::Invalid`]), and every encode error
//!   truncates the write buffer back to the last whole packet.
//! * Its inbound size limit applies to the remaining length; the crate derives the largest
//!   remaining length that keeps the whole packet within [`MqttConfig::max_packet_size`].
//! * It refuses an empty client id with Clean Start = 0 for MQTT 5 as well (the 3.1.1 rule);
//!   such clients get 0x85.
//! * Its client-side MQTT 3.1 CONNECT encoder writes level 4 (irrelevant for a server; tests
//!   write 3.1 CONNECTs by hand).
//! * Every PUBLISH is boxed by the codec (one allocation per message in each direction).
//!
//! ## Known limits
//!
//! Session state lives in this process (the [`SessionHandle`] API and the internal
//! `SessionStore` are the seam for a shared store later). Shared subscriptions are parsed,
//! validated and stored with their group; distributing messages within a group is the job of
//! whoever delivers (the MQTT integration's consumer groups).

#![forbid(unsafe_code)]

mod config;
mod connection;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod handshake;
mod listener;
mod pipeline;
mod policy;
mod reason;
mod server;
mod session;
pub mod topic;
mod types;
mod violation;
mod wire;

pub use bytes::Bytes;
pub use bytestring::ByteString;
pub use config::{ConfigError, MqttConfig};
pub use listener::{serve, serve_tcp, serve_tls};
pub use policy::{Accepted, Policy};
pub use reason::{
    CloseReason, PublishRefusal, ReasonCode, Refusal, SessionEndReason, SubscribeRefusal,
};
pub use server::{serve_connection, MqttServer};
pub use session::{
    Delivery, DeliveryError, Enqueued, PublishError, SessionHandle, TryPublishError,
};
pub use topic::matches;
pub use types::{
    ConnectRequest, ConnectionInfo, Inbound, MessageProperties, OutboundMessage, ProtocolVersion,
    QoS, SubscribeRequest, Subscription, SubscriptionOptions, SubscriptionRequest, UserProperty,
    Will,
};
pub use violation::{PacketError, Violation};
