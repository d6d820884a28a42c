//! One task per connection: CONNECT handshake, then a single `select!` loop over the socket
//! (read and write halves), the policy futures, the session's outbound queue, keep-alive and
//! the takeover/shutdown signals.

use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::io;
use std::num::NonZeroU16;
use std::pin::{pin, Pin};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::BytesMut;
use bytestring::ByteString;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::{sleep_until, timeout, Instant};

use crate::config::MqttConfig;
use crate::pipeline::Pipeline;
use crate::policy::{Accepted, Policy};
use crate::reason::{CloseReason, PublishRefusal, ReasonCode, Refusal};
use crate::server::MqttServer;
use crate::session::{AttachParams, Ended, Outgoing, Session, SessionHandle, SessionStore, Sink};
use crate::topic;
use crate::types::{
    ConnectRequest, ConnectionInfo, Inbound, MessageProperties, QoS, SubscribeRequest,
    Subscription, SubscriptionOptions, SubscriptionRequest, UserProperty, Will,
};
use crate::wire::{self, Codec, ConnectPacket, Grant, Handshake, Incoming};

fn protocol_error(reason: ReasonCode, detail: impl Into<String>) -> CloseReason {
    CloseReason::ProtocolError {
        reason,
        detail: detail.into(),
    }
}

/// Serves one MQTT connection until it ends. See [`crate::serve_connection`]. The caller holds
/// a token of the server's task tracker for the duration.
pub(crate) async fn run<P, IO>(io: IO, info: ConnectionInfo, server: Arc<MqttServer<P>>)
where
    P: Policy,
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let cfg = server.config();
    let (mut rd, mut wr) = tokio::io::split(io);
    let mut rbuf = BytesMut::with_capacity(cfg.read_buffer_size);
    let mut wbuf = BytesMut::new();
    let peer = info.peer_addr;

    // CONNECT.
    let handshake = tokio::select! {
        r = timeout(cfg.connect_timeout, read_connect(&mut rd, &mut rbuf, cfg)) => r,
        _ = server.shutdown.cancelled() => return,
    };
    let (mut codec, packet) = match handshake {
        Ok(Ok(connect)) => connect,
        Ok(Err(ConnectFailure::Io(e))) => {
            tracing::debug!(%peer, error = %e, "connection closed before CONNECT");
            return;
        }
        Ok(Err(ConnectFailure::Invalid(e))) => {
            tracing::warn!(%peer, client_id = "", "refused connection: {}", e.detail);
            wire::encode_refusal(e.v5, e.v3, &mut wbuf);
            close_quietly(&mut wr, &mut wbuf, cfg.close_timeout).await;
            return;
        }
        Err(_) => {
            tracing::info!(%peer, client_id = "", "refused connection: no CONNECT within {:?}", cfg.connect_timeout);
            return;
        }
    };
    let v5 = codec.is_v5();
    let prepared = match prepare(&codec, packet, &info, cfg) {
        Ok(p) => p,
        Err(refuse) => {
            tracing::warn!(%peer, client_id = %refuse.client_id, "refused CONNECT: {}", refuse.detail);
            wire::encode_refusal(
                refuse.v5.filter(|_| v5),
                refuse.v3.filter(|_| !v5),
                &mut wbuf,
            );
            close_quietly(&mut wr, &mut wbuf, cfg.close_timeout).await;
            return;
        }
    };
    let client_id = prepared.request.client_id.clone();

    // Policy.
    let accepted = tokio::select! {
        r = server.policy().connect(&prepared.request) => r,
        _ = server.shutdown.cancelled() => return,
    };
    let Accepted {
        identity,
        session_key,
        wildcard_subscriptions,
        shared_subscriptions,
    } = match accepted {
        Ok(a) => a,
        Err(refusal) => {
            tracing::info!(
                %peer, %client_id, username = ?prepared.request.username,
                "refused CONNECT: {:?} ({})", refusal, refusal.reason_code()
            );
            refuse(&mut codec, refusal, &mut wr, &mut wbuf, cfg).await;
            return;
        }
    };

    // Session.
    let mut ended: Ended = Vec::new();
    let attach = server.sessions.attach(
        AttachParams {
            key: &session_key,
            client_id: client_id.clone(),
            clean_start: prepared.request.clean_start,
            expiry: prepared.request.session_expiry,
            window: prepared.window,
        },
        &mut ended,
    );
    let mut attached = match attach {
        Ok(a) => a,
        Err(_) => {
            server.sessions_ended(std::mem::take(&mut ended)).await;
            tracing::warn!(%peer, %client_id, "refused CONNECT: session limit of {} reached", cfg.max_sessions);
            refuse(&mut codec, Refusal::ServerBusy, &mut wr, &mut wbuf, cfg).await;
            return;
        }
    };
    let generation = attached.generation;
    let session = attached.session.clone();
    let signal = attached.signal.clone();
    let mut guard = DetachGuard {
        store: &server.sessions,
        session: &session,
        generation,
        armed: true,
    };
    if let Some(previous) = attached.previous.take() {
        if timeout(cfg.takeover_timeout, previous).await.is_err() {
            tracing::warn!(%peer, %client_id, session = %session_key, "previous connection did not finish within {:?}; taking over anyway", cfg.takeover_timeout);
        }
    }
    // Sessions discarded by the attach (clean start, expired), after the previous connection's
    // teardown so that the policy hears of them in order.
    server.sessions_ended(std::mem::take(&mut ended)).await;
    if attached.present {
        tracing::debug!(%peer, %client_id, session = %session_key, "resuming session");
    }

    let grant = Grant {
        session_present: attached.present,
        session_expiry: prepared.granted_expiry,
        receive_maximum: cfg.receive_maximum,
        max_packet_size: cfg.max_packet_size,
        assigned_client_id: prepared
            .request
            .client_id_assigned
            .then(|| client_id.clone()),
        topic_alias_maximum: cfg.topic_alias_maximum,
        wildcard_subscriptions: wildcard_subscriptions.unwrap_or(cfg.wildcard_subscriptions),
        shared_subscriptions: shared_subscriptions.unwrap_or(cfg.shared_subscriptions),
        server_keep_alive: prepared.server_keep_alive,
    };
    codec.encode_connack(&grant, &mut wbuf);
    let written = timeout(cfg.connect_timeout, async {
        wr.write_all_buf(&mut wbuf).await?;
        wr.flush().await
    })
    .await;
    if !matches!(written, Ok(Ok(()))) {
        tracing::debug!(%peer, %client_id, "connection lost while sending CONNACK");
        guard.armed = false;
        server.sessions.detach(&session, generation, &mut ended);
        server.sessions_ended(ended).await;
        return;
    }
    let handle = SessionHandle::new(session.clone());
    server
        .policy()
        .connected(&identity, &handle, attached.present)
        .await;
    tracing::debug!(%peer, %client_id, session = %session_key, protocol = %prepared.request.protocol, "connected");

    // Established.
    let mut state = State {
        codec,
        v5,
        cfg,
        peer: info.peer_addr,
        client_id: client_id.clone(),
        work: VecDeque::new(),
        work_bytes: 0,
        qos1_unacked: 0,
        aliases: Vec::new(),
        expiry_zero_at_connect: prepared.request.session_expiry.is_zero(),
        wildcards: grant.wildcard_subscriptions,
        shared: grant.shared_subscriptions,
        read_closed: false,
        pump_needed: true,
    };
    let keep_alive = (prepared.request.keep_alive > 0)
        .then(|| Duration::from_millis(u64::from(prepared.request.keep_alive) * 1500));
    let close = serve(
        &mut state,
        &mut rd,
        &mut wr,
        &mut rbuf,
        &mut wbuf,
        &server,
        &identity,
        &handle,
        &session,
        generation,
        &signal,
        keep_alive,
        prepared.client_max_packet,
    )
    .await;

    // Teardown.
    match &close {
        CloseReason::ProtocolError { .. }
        | CloseReason::KeepAliveTimeout
        | CloseReason::PacketTimeout(_) => {
            tracing::warn!(%peer, %client_id, "closing connection: {close}");
        }
        CloseReason::TakenOver | CloseReason::Kicked(_) | CloseReason::PublishRefused(_) => {
            tracing::info!(%peer, %client_id, "closing connection: {close}");
        }
        _ => tracing::debug!(%peer, %client_id, "closing connection: {close}"),
    }
    if v5 && !matches!(close, CloseReason::PublishRefused(_)) {
        if let Some(code) = close.server_disconnect_code() {
            state.codec.encode_disconnect(code, &mut wbuf);
        }
    }
    if close != CloseReason::ConnectionLost {
        close_quietly(&mut wr, &mut wbuf, cfg.close_timeout).await;
    }
    guard.armed = false;
    server.sessions.detach(&session, generation, &mut ended);

    if close.publishes_will() {
        if let Some(will) = prepared.request.will.clone() {
            publish_will(
                &server,
                &identity,
                &session,
                generation,
                will,
                prepared.request.session_expiry,
            )
            .await;
        }
    }
    server.policy().disconnected(&identity, &close).await;
    server.sessions_ended(ended).await;
    drop(attached.done);
}

/// Answers a connection that arrived while its listener had `limit` connections open: reads
/// the CONNECT (within `connect_timeout`) and refuses it with Server busy (MQTT 3: Server
/// unavailable), so that the client knows to come back later.
pub(crate) async fn refuse_busy<P, IO>(
    io: IO,
    info: ConnectionInfo,
    server: &MqttServer<P>,
    limit: usize,
) where
    P: Policy,
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let cfg = server.config();
    let (mut rd, mut wr) = tokio::io::split(io);
    let mut rbuf = BytesMut::with_capacity(cfg.read_buffer_size);
    let mut wbuf = BytesMut::new();
    let peer = info.peer_addr;
    let connect = tokio::select! {
        r = timeout(cfg.connect_timeout, read_connect(&mut rd, &mut rbuf, cfg)) => r,
        _ = server.shutdown.cancelled() => return,
    };
    match connect {
        Ok(Ok((mut codec, packet))) => {
            let client_id = match &packet {
                ConnectPacket::V3(c) => c.client_id.clone(),
                ConnectPacket::V5(c) => c.client_id.clone(),
            };
            tracing::debug!(%peer, %client_id, "refused CONNECT: {limit} connections are open on this listener");
            refuse(&mut codec, Refusal::ServerBusy, &mut wr, &mut wbuf, cfg).await;
        }
        Ok(Err(ConnectFailure::Invalid(e))) => {
            wire::encode_refusal(e.v5, e.v3, &mut wbuf);
            close_quietly(&mut wr, &mut wbuf, cfg.close_timeout).await;
        }
        Ok(Err(ConnectFailure::Io(_))) | Err(_) => {}
    }
}

/// Detaches the session if the connection task is dropped mid-way (runtime shutdown).
struct DetachGuard<'a> {
    store: &'a SessionStore,
    session: &'a Arc<Session>,
    generation: u64,
    armed: bool,
}

impl Drop for DetachGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            let mut ended = Vec::new();
            self.store.detach(self.session, self.generation, &mut ended);
        }
    }
}

async fn publish_will<P: Policy>(
    server: &Arc<MqttServer<P>>,
    identity: &P::Identity,
    session: &Arc<Session>,
    generation: u64,
    will: Will,
    session_expiry: Duration,
) {
    let delay = Duration::from_secs(u64::from(will.delay_interval)).min(session_expiry);
    if delay.is_zero() {
        server.policy().will(identity, will.into_inbound()).await;
        return;
    }
    let server = server.clone();
    let identity = identity.clone();
    let session = session.clone();
    let tracker = server.tracker.clone();
    tracker.spawn(async move {
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = server.shutdown.cancelled() => return,
        }
        if !SessionStore::resumed_since(&session, generation) {
            server.policy().will(&identity, will.into_inbound()).await;
        }
    });
}

async fn refuse<W: AsyncWrite + Unpin>(
    codec: &mut Codec,
    refusal: Refusal,
    wr: &mut W,
    wbuf: &mut BytesMut,
    cfg: &MqttConfig,
) {
    if codec.is_v5() {
        wire::encode_refusal(Some(refusal.reason_code()), None, wbuf);
    } else {
        wire::encode_refusal(None, Some(refusal.v3_return_code()), wbuf);
    }
    close_quietly(wr, wbuf, cfg.close_timeout).await;
}

/// Writes what is buffered and shuts the write side down, within `limit`.
async fn close_quietly<W: AsyncWrite + Unpin>(wr: &mut W, wbuf: &mut BytesMut, limit: Duration) {
    let _ = timeout(limit, async {
        wr.write_all_buf(wbuf).await?;
        wr.flush().await?;
        wr.shutdown().await
    })
    .await;
}

enum ConnectFailure {
    Io(io::Error),
    Invalid(wire::HandshakeError),
}

async fn read_connect<R: AsyncRead + Unpin>(
    rd: &mut R,
    buf: &mut BytesMut,
    cfg: &MqttConfig,
) -> Result<(Codec, ConnectPacket), ConnectFailure> {
    let mut handshake = Handshake::Detecting;
    loop {
        match handshake.decode(buf, cfg.max_packet_size) {
            Ok(Some(connect)) => return Ok(connect),
            Ok(None) => {}
            Err(e) => return Err(ConnectFailure::Invalid(e)),
        }
        if buf.capacity() - buf.len() < 1024 {
            buf.reserve(cfg.read_buffer_size);
        }
        match rd.read_buf(buf).await {
            Ok(0) => return Err(ConnectFailure::Io(io::ErrorKind::UnexpectedEof.into())),
            Ok(_) => {}
            Err(e) => return Err(ConnectFailure::Io(e)),
        }
    }
}

struct Prepared {
    request: ConnectRequest,
    window: usize,
    client_max_packet: usize,
    server_keep_alive: Option<u16>,
    granted_expiry: Option<u32>,
}

struct Refuse {
    v5: Option<ReasonCode>,
    v3: Option<u8>,
    detail: String,
    client_id: ByteString,
}

fn assign_client_id(cfg: &MqttConfig) -> ByteString {
    format!(
        "{}{}",
        cfg.assigned_client_id_prefix,
        uuid::Uuid::new_v4().simple()
    )
    .into()
}

/// Turns the CONNECT into what the policy sees, enforcing the server's limits.
fn prepare(
    codec: &Codec,
    packet: ConnectPacket,
    info: &ConnectionInfo,
    cfg: &MqttConfig,
) -> Result<Prepared, Refuse> {
    let keep_alive = |asked: u16| -> (u16, Option<u16>) {
        let max = cfg.max_keep_alive;
        let effective = if max > 0 && (asked == 0 || asked > max) {
            max
        } else {
            asked
        };
        (effective, (effective != asked).then_some(effective))
    };
    match packet {
        ConnectPacket::V3(c) => {
            let c = *c;
            let refuse = |v3: Option<u8>, detail: String| Refuse {
                v5: None,
                v3,
                detail,
                client_id: c.client_id.clone(),
            };
            let protocol = codec.version(c.protocol.level() == 3);
            let will = match c.last_will {
                None => None,
                Some(w) => {
                    topic::validate_topic_name(&w.topic).map_err(|e| {
                        refuse(None, format!("invalid will topic {:?}: {e}", &*w.topic))
                    })?;
                    Some(Will {
                        topic: w.topic,
                        payload: w.message,
                        qos: QoS::from_codec(w.qos),
                        retain: w.retain,
                        delay_interval: 0,
                        properties: MessageProperties::default(),
                    })
                }
            };
            let (client_id, assigned) = if c.client_id.is_empty() {
                if !cfg.allow_empty_client_id {
                    return Err(refuse(Some(2), "empty client identifier".into()));
                }
                (assign_client_id(cfg), true)
            } else {
                (c.client_id, false)
            };
            let (keep_alive, _) = keep_alive(c.keep_alive);
            let session_expiry = if c.clean_session {
                Duration::ZERO
            } else {
                cfg.v3_session_expiry
            };
            Ok(Prepared {
                request: ConnectRequest {
                    protocol,
                    client_id,
                    client_id_assigned: assigned,
                    username: c.username,
                    password: c.password,
                    clean_start: c.clean_session,
                    session_expiry,
                    keep_alive,
                    will,
                    user_properties: Vec::new(),
                    connection: info.clone(),
                },
                window: usize::from(cfg.outbound_window),
                client_max_packet: usize::MAX,
                server_keep_alive: None,
                granted_expiry: None,
            })
        }
        ConnectPacket::V5(c) => {
            let mut c = *c;
            let refuse = |code: ReasonCode, detail: String| Refuse {
                v5: Some(code),
                v3: None,
                detail,
                client_id: c.client_id.clone(),
            };
            if let Some(method) = &c.auth_method {
                return Err(refuse(
                    ReasonCode::BAD_AUTHENTICATION_METHOD,
                    format!("enhanced authentication ({method}) is not supported"),
                ));
            }
            let will = match c.last_will.take() {
                None => None,
                Some(mut w) => {
                    if w.qos == rmqtt_codec::types::QoS::ExactlyOnce {
                        return Err(refuse(
                            ReasonCode::QOS_NOT_SUPPORTED,
                            "will with QoS 2".into(),
                        ));
                    }
                    if w.retain {
                        return Err(refuse(
                            ReasonCode::RETAIN_NOT_SUPPORTED,
                            "retained will".into(),
                        ));
                    }
                    if let Err(e) = topic::validate_topic_name(&w.topic) {
                        return Err(refuse(
                            ReasonCode::TOPIC_NAME_INVALID,
                            format!("invalid will topic {:?}: {e}", &*w.topic),
                        ));
                    }
                    let properties = wire::will_properties(&mut w);
                    Some(Will {
                        topic: w.topic,
                        payload: w.message,
                        qos: QoS::from_codec(w.qos),
                        retain: false,
                        delay_interval: w.will_delay_interval_sec.unwrap_or(0),
                        properties,
                    })
                }
            };
            let (client_id, assigned) = if c.client_id.is_empty() {
                if !cfg.allow_empty_client_id {
                    return Err(refuse(
                        ReasonCode::CLIENT_IDENTIFIER_NOT_VALID,
                        "empty client identifier".into(),
                    ));
                }
                (assign_client_id(cfg), true)
            } else {
                (c.client_id.clone(), false)
            };
            let (keep_alive, server_keep_alive) = keep_alive(c.keep_alive);
            let requested = Duration::from_secs(u64::from(c.session_expiry_interval_secs));
            let session_expiry = requested.min(cfg.max_session_expiry);
            let granted_expiry = (session_expiry != requested)
                .then(|| u32::try_from(session_expiry.as_secs()).unwrap_or(u32::MAX));
            let window = c
                .receive_max
                .map_or(usize::from(u16::MAX), |r| usize::from(r.get()))
                .min(usize::from(cfg.outbound_window));
            let client_max_packet = c.max_packet_size.map_or(usize::MAX, |m| {
                usize::try_from(m.get()).unwrap_or(usize::MAX)
            });
            Ok(Prepared {
                request: ConnectRequest {
                    protocol: codec.version(false),
                    client_id,
                    client_id_assigned: assigned,
                    username: c.username,
                    password: c.password,
                    clean_start: c.clean_start,
                    session_expiry,
                    keep_alive,
                    will,
                    user_properties: c.user_properties,
                    connection: info.clone(),
                },
                window,
                client_max_packet,
                server_keep_alive,
                granted_expiry,
            })
        }
    }
}

/// Decoded packets waiting for their turn, in arrival order.
enum Work {
    Publish {
        message: Inbound,
        packet_id: Option<NonZeroU16>,
    },
    Subscribe {
        packet_id: NonZeroU16,
        filters: Vec<(ByteString, SubscriptionOptions)>,
        user_properties: Vec<UserProperty>,
    },
    Unsubscribe {
        packet_id: NonZeroU16,
        filters: Vec<ByteString>,
    },
    /// DISCONNECT or end of stream: processed after everything received before it.
    End(CloseReason),
}

struct PublishMeta {
    packet_id: Option<NonZeroU16>,
    qos: QoS,
    topic: ByteString,
}

enum ControlDone {
    /// The granted subscriptions are stored in the session (and the policy told) already.
    Subscribed {
        packet_id: NonZeroU16,
        codes: Vec<ReasonCode>,
        /// Filters the policy refused (or gave no answer for), for the log.
        refused: Vec<(ByteString, ReasonCode)>,
    },
    Unsubscribed {
        packet_id: NonZeroU16,
        codes: Vec<ReasonCode>,
    },
}

type ControlFuture<'a> = Pin<Box<dyn Future<Output = ControlDone> + Send + 'a>>;

/// Per-connection state touched by the synchronous steps of the loop.
struct State<'a> {
    codec: Codec,
    v5: bool,
    cfg: &'a MqttConfig,
    peer: std::net::SocketAddr,
    client_id: ByteString,
    work: VecDeque<Work>,
    /// Payload bytes in `work` (reading pauses above the maximum packet size).
    work_bytes: usize,
    qos1_unacked: usize,
    aliases: Vec<Option<ByteString>>,
    expiry_zero_at_connect: bool,
    wildcards: bool,
    shared: bool,
    read_closed: bool,
    pump_needed: bool,
}

impl State<'_> {
    /// Decodes and handles every complete packet in `rbuf`.
    fn decode_available(
        &mut self,
        rbuf: &mut BytesMut,
        session: &Session,
        generation: u64,
        wbuf: &mut BytesMut,
    ) -> Result<(), CloseReason> {
        while !self.read_closed {
            match self.codec.decode(rbuf) {
                Ok(Some(packet)) => self.on_packet(packet, session, generation, wbuf)?,
                Ok(None) => break,
                Err(e) => {
                    let (reason, detail) = wire::decode_failure(&e);
                    return Err(protocol_error(
                        reason,
                        format!("undecodable packet: {detail}"),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Handles a decoded packet: answers what needs no policy, queues the rest.
    fn on_packet(
        &mut self,
        packet: Incoming,
        session: &Session,
        generation: u64,
        wbuf: &mut BytesMut,
    ) -> Result<(), CloseReason> {
        match packet {
            Incoming::Publish(p) => self.on_publish(*p),
            Incoming::PubAck { packet_id, reason } => {
                match session.ack(generation, packet_id, reason) {
                    crate::session::AckOutcome::Acked => self.pump_needed = true,
                    crate::session::AckOutcome::Unknown => {
                        tracing::debug!(peer = %self.peer, client_id = %self.client_id, "PUBACK for unknown packet id {packet_id}");
                    }
                }
                Ok(())
            }
            Incoming::Subscribe {
                packet_id,
                filters,
                user_properties,
                has_subscription_id,
            } => {
                if has_subscription_id {
                    return Err(protocol_error(
                        ReasonCode::SUBSCRIPTION_IDENTIFIERS_NOT_SUPPORTED,
                        "SUBSCRIBE with a subscription identifier (not available)",
                    ));
                }
                if let Some((raw, _)) = filters
                    .iter()
                    .find(|(raw, o)| o.no_local && raw.starts_with("$share/"))
                {
                    return Err(protocol_error(
                        ReasonCode::PROTOCOL_ERROR,
                        format!("No Local set on shared subscription {:?}", &**raw),
                    ));
                }
                self.work.push_back(Work::Subscribe {
                    packet_id,
                    filters,
                    user_properties,
                });
                Ok(())
            }
            Incoming::Unsubscribe { packet_id, filters } => {
                self.work
                    .push_back(Work::Unsubscribe { packet_id, filters });
                Ok(())
            }
            Incoming::PingReq => {
                self.codec.encode_pingresp(wbuf);
                Ok(())
            }
            Incoming::Disconnect {
                reason,
                session_expiry,
            } => {
                if let Some(secs) = session_expiry {
                    if self.expiry_zero_at_connect && secs != 0 {
                        return Err(protocol_error(
                            ReasonCode::PROTOCOL_ERROR,
                            "DISCONNECT sets a session expiry after CONNECT set none",
                        ));
                    }
                    let expiry =
                        Duration::from_secs(u64::from(secs)).min(self.cfg.max_session_expiry);
                    session.set_expiry(generation, expiry);
                }
                self.read_closed = true;
                self.work
                    .push_back(Work::End(CloseReason::ClientDisconnect(reason)));
                Ok(())
            }
            Incoming::Unexpected(what) => Err(protocol_error(
                ReasonCode::PROTOCOL_ERROR,
                format!("unexpected packet: {what}"),
            )),
        }
    }

    fn on_publish(&mut self, p: rmqtt_codec::types::Publish) -> Result<(), CloseReason> {
        let rmqtt_codec::types::Publish {
            dup,
            retain,
            qos,
            topic,
            packet_id,
            payload,
            properties,
        } = p;
        let qos = QoS::from_codec(qos);
        if qos == QoS::ExactlyOnce {
            return Err(protocol_error(
                ReasonCode::QOS_NOT_SUPPORTED,
                format!("QoS 2 PUBLISH to {:?}", &*topic),
            ));
        }
        if retain && self.v5 {
            return Err(protocol_error(
                ReasonCode::RETAIN_NOT_SUPPORTED,
                format!("retained PUBLISH to {:?}", &*topic),
            ));
        }
        let (properties, alias, subscription_ids) = wire::publish_properties(properties);
        if subscription_ids {
            return Err(protocol_error(
                ReasonCode::PROTOCOL_ERROR,
                "PUBLISH from a client carries a subscription identifier",
            ));
        }
        let topic = match alias {
            None => topic,
            Some(alias) => {
                let max = self.cfg.topic_alias_maximum;
                if alias.get() > max {
                    return Err(protocol_error(
                        ReasonCode::TOPIC_ALIAS_INVALID,
                        format!("topic alias {alias} above the maximum {max}"),
                    ));
                }
                let slot = usize::from(alias.get() - 1);
                if self.aliases.len() <= slot {
                    self.aliases.resize(usize::from(max), None);
                }
                if topic.is_empty() {
                    match &self.aliases[slot] {
                        Some(t) => t.clone(),
                        None => {
                            return Err(protocol_error(
                                ReasonCode::PROTOCOL_ERROR,
                                format!("unknown topic alias {alias}"),
                            ));
                        }
                    }
                } else {
                    self.aliases[slot] = Some(topic.clone());
                    topic
                }
            }
        };
        if topic.is_empty() {
            return Err(protocol_error(
                ReasonCode::PROTOCOL_ERROR,
                "empty topic name without topic alias",
            ));
        }
        if topic.len() > self.cfg.max_topic_length {
            return Err(protocol_error(
                ReasonCode::TOPIC_NAME_INVALID,
                format!(
                    "topic name of {} bytes is longer than {} (max_topic_length)",
                    topic.len(),
                    self.cfg.max_topic_length
                ),
            ));
        }
        if let Err(e) = topic::validate_topic_name(&topic) {
            return Err(protocol_error(
                ReasonCode::TOPIC_NAME_INVALID,
                format!("invalid topic name {:?}: {e}", &*topic),
            ));
        }
        if qos == QoS::AtLeastOnce {
            self.qos1_unacked += 1;
            if self.qos1_unacked > usize::from(self.cfg.receive_maximum) {
                return Err(protocol_error(
                    ReasonCode::RECEIVE_MAXIMUM_EXCEEDED,
                    format!(
                        "more than {} unacknowledged QoS 1 PUBLISHes",
                        self.cfg.receive_maximum
                    ),
                ));
            }
        }
        self.work_bytes += payload.len();
        let message = Inbound {
            topic,
            payload,
            qos,
            dup,
            retain,
            properties,
        };
        self.work.push_back(Work::Publish { message, packet_id });
        Ok(())
    }

    /// A policy `publish` future resolved: acknowledge, refuse, or close.
    fn publish_done(
        &mut self,
        meta: PublishMeta,
        result: Result<(), PublishRefusal>,
        wbuf: &mut BytesMut,
    ) -> Result<(), CloseReason> {
        let packet_id = match (meta.qos, meta.packet_id) {
            (QoS::AtLeastOnce, Some(id)) => id,
            _ => {
                if let Err(refusal) = result {
                    tracing::info!(
                        peer = %self.peer, client_id = %self.client_id, topic = %meta.topic,
                        "refused QoS 0 PUBLISH, dropped: {:?} ({})", refusal, refusal.reason_code()
                    );
                }
                return Ok(());
            }
        };
        match result {
            Ok(()) => {
                self.qos1_unacked = self.qos1_unacked.saturating_sub(1);
                self.codec
                    .encode_puback(packet_id, ReasonCode::SUCCESS, wbuf);
                Ok(())
            }
            Err(refusal) => {
                tracing::info!(
                    peer = %self.peer, client_id = %self.client_id, topic = %meta.topic,
                    "refused QoS 1 PUBLISH: {:?} ({})", refusal, refusal.reason_code()
                );
                if self.v5 {
                    self.qos1_unacked = self.qos1_unacked.saturating_sub(1);
                    self.codec
                        .encode_puback(packet_id, refusal.reason_code(), wbuf);
                    Ok(())
                } else {
                    Err(CloseReason::PublishRefused(refusal))
                }
            }
        }
    }

    /// Splits a SUBSCRIBE into what the crate refuses by itself and what the policy decides.
    /// The limits (filters per SUBSCRIBE, subscriptions per session, filter length) are applied
    /// here, before the policy sees anything, so a flood of filters costs no policy work.
    fn prepare_subscribe(
        &self,
        filters: &[(ByteString, SubscriptionOptions)],
        user_properties: Vec<UserProperty>,
        session: &Session,
    ) -> (Vec<Result<usize, ReasonCode>>, SubscribeRequest) {
        let cfg = self.cfg;
        let considered = filters.len().min(cfg.max_filters_per_subscribe);
        let mut request = SubscribeRequest {
            filters: Vec::with_capacity(considered),
            user_properties,
        };
        if filters.len() > considered {
            tracing::info!(peer = %self.peer, client_id = %self.client_id, "SUBSCRIBE with {} filters: the {} after the first {considered} refused with Quota exceeded (max_filters_per_subscribe)", filters.len(), filters.len() - considered);
        }
        let mut held = session.subscription_count();
        let mut over_quota = 0usize;
        let pre = filters
            .iter()
            .enumerate()
            .map(|(i, (raw, options))| {
                if i >= considered {
                    return Err(ReasonCode::QUOTA_EXCEEDED);
                }
                if raw.len() > cfg.max_topic_length {
                    tracing::info!(peer = %self.peer, client_id = %self.client_id, "refused subscription: filter of {} bytes is longer than {} (max_topic_length)", raw.len(), cfg.max_topic_length);
                    return Err(ReasonCode::TOPIC_FILTER_INVALID);
                }
                let (group, filter) = match topic::parse_subscription(raw) {
                    Ok(parsed) => parsed,
                    Err(e) => {
                        tracing::info!(peer = %self.peer, client_id = %self.client_id, "refused subscription {:?}: {e}", &**raw);
                        return Err(ReasonCode::TOPIC_FILTER_INVALID);
                    }
                };
                if group.is_some() && !self.shared {
                    tracing::info!(peer = %self.peer, client_id = %self.client_id, "refused subscription {:?}: shared subscriptions not available", &**raw);
                    return Err(ReasonCode::SHARED_SUBSCRIPTIONS_NOT_SUPPORTED);
                }
                if !self.wildcards && topic::has_wildcards(filter) {
                    tracing::info!(peer = %self.peer, client_id = %self.client_id, "refused subscription {:?}: wildcards not available", &**raw);
                    return Err(ReasonCode::WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED);
                }
                let repeated = request
                    .filters
                    .iter()
                    .any(|r| r.filter == filter && r.share_group.as_deref() == group);
                if !repeated && !session.has_subscription(group, filter) {
                    if held >= cfg.max_subscriptions {
                        over_quota += 1;
                        return Err(ReasonCode::QUOTA_EXCEEDED);
                    }
                    held += 1;
                }
                request.filters.push(SubscriptionRequest {
                    filter: raw.slice_ref(filter),
                    share_group: group.map(|g| raw.slice_ref(g)),
                    options: *options,
                });
                Ok(request.filters.len() - 1)
            })
            .collect();
        if over_quota > 0 {
            tracing::info!(peer = %self.peer, client_id = %self.client_id, "refused {over_quota} subscription(s) with Quota exceeded: the session holds the most allowed ({}, max_subscriptions)", cfg.max_subscriptions);
        }
        (pre, request)
    }

    fn control_done(&mut self, done: ControlDone, wbuf: &mut BytesMut) {
        match done {
            ControlDone::Subscribed {
                packet_id,
                codes,
                refused,
            } => {
                for (filter, code) in &refused {
                    tracing::info!(peer = %self.peer, client_id = %self.client_id, "refused subscription {:?}: policy said {code}", &**filter);
                }
                self.codec.encode_suback(packet_id, &codes, wbuf);
            }
            ControlDone::Unsubscribed { packet_id, codes } => {
                self.codec.encode_unsuback(packet_id, &codes, wbuf);
            }
        }
    }
}

/// Puts the session's messages on the wire.
struct WireSink<'a> {
    codec: &'a mut Codec,
    buf: &'a mut BytesMut,
    high_water: usize,
    max_size: usize,
    peer: std::net::SocketAddr,
    client_id: &'a ByteString,
}

impl Sink for WireSink<'_> {
    fn has_room(&self) -> bool {
        self.buf.len() < self.high_water
    }

    fn emit(&mut self, out: Outgoing<'_>) -> bool {
        let topic = match &out {
            Outgoing::Qos0(m, _) => m.topic.clone(),
            Outgoing::Qos1 { msg, .. } => msg.topic.clone(),
        };
        let ok = self.codec.encode_publish(out, self.max_size, self.buf);
        if !ok {
            tracing::warn!(
                peer = %self.peer, client_id = %self.client_id, %topic,
                "outbound message exceeds the client's maximum packet size of {} bytes; dropped", self.max_size
            );
        }
        ok
    }
}

/// Writes some of `wbuf`, then flushes once it is empty.
async fn write_some<W: AsyncWrite + Unpin>(
    wr: &mut W,
    wbuf: &mut BytesMut,
    needs_flush: &mut bool,
) -> io::Result<()> {
    if !wbuf.is_empty() {
        let n = wr.write_buf(wbuf).await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        *needs_flush = true;
    }
    if wbuf.is_empty() && *needs_flush {
        wr.flush().await?;
        *needs_flush = false;
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn serve<P, R, W>(
    st: &mut State<'_>,
    rd: &mut R,
    wr: &mut W,
    rbuf: &mut BytesMut,
    wbuf: &mut BytesMut,
    server: &MqttServer<P>,
    identity: &P::Identity,
    handle: &SessionHandle,
    session: &Arc<Session>,
    generation: u64,
    signal: &crate::session::ConnSignal,
    keep_alive: Option<Duration>,
    client_max_packet: usize,
) -> CloseReason
where
    P: Policy,
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let cfg = st.cfg;
    let policy = server.policy();
    let high_water = cfg.write_buffer_high_water;
    // Batches of PUBLISHes handed to the policy, and how many PUBLISHes they hold.
    let mut pipeline = Pipeline::new();
    let mut publishes_in_flight = 0;
    let mut control: Option<ControlFuture<'_>> = None;
    let mut needs_flush = false;
    let mut pump_stalled = false;
    let mut last_read = Instant::now();
    let mut last_write = last_read;
    // Packets that arrived together with the CONNECT.
    if let Err(reason) = st.decode_available(rbuf, session, generation, wbuf) {
        return reason;
    }
    let mut ka_sleep = pin!(sleep_until(
        last_read + keep_alive.unwrap_or(Duration::from_secs(3600))
    ));
    // Since when the packet whose first bytes wait in `rbuf` has been arriving: it must be
    // complete within `packet_timeout`, however steadily its bytes trickle in.
    let mut partial_since = (!rbuf.is_empty()).then_some(last_read);
    let mut packet_sleep = pin!(sleep_until(last_read + cfg.packet_timeout));

    loop {
        // Start queued work, in order: PUBLISHes up to the concurrency limit; SUBSCRIBE,
        // UNSUBSCRIBE and the end only once everything before them is done.
        while let Some(front) = st.work.front() {
            let idle = control.is_none() && pipeline.is_empty();
            match front {
                Work::Publish { .. }
                    if control.is_none() && publishes_in_flight < cfg.inbound_concurrency => {}
                Work::Publish { .. } => break,
                _ if idle => {}
                _ => break,
            }
            let Some(work) = st.work.pop_front() else {
                break;
            };
            match work {
                Work::Publish { message, packet_id } => {
                    // It and the PUBLISHes queued right behind it go to the policy together.
                    let room = cfg.inbound_concurrency - publishes_in_flight;
                    let mut messages = Vec::with_capacity(room.min(st.work.len() + 1));
                    let mut metas = Vec::with_capacity(messages.capacity());
                    let mut next = Some((message, packet_id));
                    while let Some((message, packet_id)) = next.take() {
                        st.work_bytes -= message.payload.len();
                        metas.push(PublishMeta {
                            packet_id,
                            qos: message.qos,
                            topic: message.topic.clone(),
                        });
                        messages.push(message);
                        if messages.len() < room {
                            if let Some(Work::Publish { .. }) = st.work.front() {
                                if let Some(Work::Publish { message, packet_id }) =
                                    st.work.pop_front()
                                {
                                    next = Some((message, packet_id));
                                }
                            }
                        }
                    }
                    publishes_in_flight += messages.len();
                    pipeline.push(policy.publish_batch(identity, messages), metas);
                }
                Work::Subscribe {
                    packet_id,
                    filters,
                    user_properties,
                } => {
                    let (pre, request) = st.prepare_subscribe(&filters, user_properties, session);
                    let raw: Vec<ByteString> = filters.into_iter().map(|(f, _)| f).collect();
                    control = Some(Box::pin(async move {
                        let results = if request.filters.is_empty() {
                            Vec::new()
                        } else {
                            policy.subscribe(identity, handle, &request).await
                        };
                        let mut codes = Vec::with_capacity(pre.len());
                        let mut granted = Vec::new();
                        let mut refused = Vec::new();
                        for (p, raw) in pre.into_iter().zip(raw) {
                            let code = match p {
                                // Refused by the crate, and logged then.
                                Err(code) => code,
                                Ok(i) => match (results.get(i), request.filters.get(i)) {
                                    (Some(Ok(qos)), Some(req)) => {
                                        let qos = (*qos).min(QoS::AtLeastOnce);
                                        granted.push(Subscription {
                                            filter: req.filter.clone(),
                                            share_group: req.share_group.clone(),
                                            qos,
                                            options: req.options,
                                            user_properties: request.user_properties.clone(),
                                        });
                                        ReasonCode(qos.level())
                                    }
                                    (Some(Err(refusal)), _) => {
                                        refused.push((raw, refusal.reason_code()));
                                        refusal.reason_code()
                                    }
                                    _ => {
                                        refused.push((raw, ReasonCode::UNSPECIFIED_ERROR));
                                        ReasonCode::UNSPECIFIED_ERROR
                                    }
                                },
                            };
                            codes.push(code);
                        }
                        if !granted.is_empty() {
                            session.add_subscriptions(granted.clone());
                            policy.subscribed(identity, handle, &granted).await;
                        }
                        ControlDone::Subscribed {
                            packet_id,
                            codes,
                            refused,
                        }
                    }));
                }
                Work::Unsubscribe { packet_id, filters } => {
                    let parsed: Vec<Option<(Option<&str>, &str)>> = filters
                        .iter()
                        .map(|f| topic::parse_subscription(f).ok())
                        .collect();
                    let which: Vec<(Option<&str>, &str)> =
                        parsed.iter().flatten().copied().collect();
                    let mut removed = session.remove_subscriptions(&which).into_iter();
                    let mut gone = Vec::new();
                    let codes: Vec<ReasonCode> = parsed
                        .iter()
                        .map(|p| match p {
                            None => ReasonCode::TOPIC_FILTER_INVALID,
                            Some(_) => match removed.next().flatten() {
                                Some(sub) => {
                                    gone.push(sub);
                                    ReasonCode::SUCCESS
                                }
                                None => ReasonCode::NO_SUBSCRIPTION_EXISTED,
                            },
                        })
                        .collect();
                    control = Some(Box::pin(async move {
                        if !gone.is_empty() {
                            policy.unsubscribed(identity, handle, &gone).await;
                        }
                        ControlDone::Unsubscribed { packet_id, codes }
                    }));
                }
                Work::End(reason) => return reason,
            }
        }

        // Outbound messages.
        if st.pump_needed && wbuf.len() < high_water {
            st.pump_needed = false;
            let mut sink = WireSink {
                codec: &mut st.codec,
                buf: wbuf,
                high_water,
                max_size: client_max_packet,
                peer: st.peer,
                client_id: &st.client_id,
            };
            session.pump(generation, &mut sink);
            pump_stalled = wbuf.len() >= high_water;
        }

        if rbuf.capacity() - rbuf.len() < 1024 {
            rbuf.reserve(cfg.read_buffer_size);
        }
        if wbuf.is_empty() {
            // Nothing waits for the socket: a later stall is measured from here.
            last_write = Instant::now();
        }
        let write_blocked = wbuf.len() >= 2 * high_water;
        let can_read = !st.read_closed
            && st.work.len() < cfg.inbound_queue
            && st.work_bytes < cfg.max_packet_size as usize
            && !write_blocked;

        tokio::select! {
            biased;
            _ = signal.kick.cancelled() => return signal.kick_reason(),
            _ = server.shutdown.cancelled() => return CloseReason::ServerShutdown,
            (metas, results) = poll_fn(|cx| pipeline.poll_next(cx)), if !pipeline.is_empty() => {
                publishes_in_flight -= metas.len();
                let mut results = results.into_iter();
                for meta in metas {
                    let result = results.next().unwrap_or(Err(PublishRefusal::Unspecified));
                    if let Err(reason) = st.publish_done(meta, result, wbuf) {
                        return reason;
                    }
                }
            }
            done = poll_fn(|cx| match control.as_mut() {
                Some(f) => f.as_mut().poll(cx),
                None => Poll::Pending,
            }), if control.is_some() => {
                control = None;
                st.control_done(done, wbuf);
            }
            written = write_some(wr, wbuf, &mut needs_flush), if !wbuf.is_empty() || needs_flush => {
                if let Err(e) = written {
                    tracing::debug!(peer = %st.peer, client_id = %st.client_id, error = %e, "write failed");
                    return CloseReason::ConnectionLost;
                }
                last_write = Instant::now();
                if pump_stalled {
                    st.pump_needed = true;
                }
            }
            read = rd.read_buf(rbuf), if can_read => {
                match read {
                    Ok(0) | Err(_) => {
                        st.read_closed = true;
                        st.work.push_back(Work::End(CloseReason::ConnectionLost));
                    }
                    Ok(n) => {
                        last_read = Instant::now();
                        let buffered = rbuf.len();
                        if let Err(reason) = st.decode_available(rbuf, session, generation, wbuf) {
                            return reason;
                        }
                        // A packet completed (bytes were consumed): what is left started now.
                        // (The timer is not reset here, per read: it fires at the latest
                        // deadline set and is re-armed from `partial_since` then.)
                        let completed = rbuf.len() < buffered || buffered == n;
                        partial_since = match partial_since {
                            _ if rbuf.is_empty() => None,
                            Some(since) if !completed => Some(since),
                            _ => Some(last_read),
                        };
                    }
                }
            }
            _ = &mut packet_sleep, if partial_since.is_some() => {
                let now = Instant::now();
                let since = match partial_since {
                    // While reading is paused the client cannot be blamed: count again.
                    Some(_) if !can_read => now,
                    Some(since) if since + cfg.packet_timeout <= now => {
                        return CloseReason::PacketTimeout(cfg.packet_timeout);
                    }
                    Some(since) => since,
                    None => now,
                };
                partial_since = Some(since);
                packet_sleep.as_mut().reset(since + cfg.packet_timeout);
            }
            _ = signal.outbound.notified() => {
                st.pump_needed = true;
            }
            _ = &mut ka_sleep, if keep_alive.is_some() => {
                let ka = keep_alive.unwrap_or_default();
                let now = Instant::now();
                // While reading is paused (back-pressure) the client cannot be judged idle, unless
                // it stopped reading what we send.
                if last_read + ka <= now && can_read {
                    return CloseReason::KeepAliveTimeout;
                }
                if write_blocked && last_write + ka <= now {
                    tracing::info!(peer = %st.peer, client_id = %st.client_id, "client stopped reading for {ka:?}");
                    return CloseReason::ConnectionLost;
                }
                let next = if can_read { last_read + ka } else { now + ka };
                ka_sleep.as_mut().reset(next);
            }
        }
    }
}
