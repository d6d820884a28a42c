//! The CONNECT handshake: read the CONNECT (version detection, `connect_timeout`), turn it into
//! the [`ConnectRequest`] the policy sees (enforcing the server's limits), authenticate it with
//! [`Policy::connect`], attach to the session (taking it over from a live connection, whose
//! teardown completes first), write CONNACK and tell the policy. Refusals are answered here.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use bytestring::ByteString;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::oneshot;
use tokio::time::timeout;

use crate::config::MqttConfig;
use crate::connection::Transport;
use crate::policy::{Accepted, Policy};
use crate::reason::Refusal;
use crate::server::MqttServer;
use crate::session::{AttachParams, Attached, ConnSignal, Session, SessionHandle, SessionStore};
use crate::topic;
use crate::types::{ConnectRequest, ConnectionInfo, MessageProperties, QoS, Will};
use crate::violation::{ConnackRefusal, ConnectError};
use crate::wire::{self, Codec, ConnectPacket, Grant, Handshake};

/// A connection past CONNACK: what the session loop needs.
pub(crate) struct Established<'s, P: Policy> {
    pub(crate) codec: Codec,
    pub(crate) request: ConnectRequest,
    /// The client's Maximum Packet Size (MQTT 5), else unlimited.
    pub(crate) client_max_packet: usize,
    pub(crate) identity: P::Identity,
    pub(crate) handle: SessionHandle,
    pub(crate) session: Arc<Session>,
    pub(crate) generation: u64,
    pub(crate) signal: Arc<ConnSignal>,
    /// Held until the teardown is complete (a taking-over connection waits for it).
    pub(crate) done: oneshot::Sender<()>,
    pub(crate) guard: DetachGuard<'s>,
    pub(crate) wildcards: bool,
    pub(crate) shared: bool,
}

/// Runs the handshake. `None` when the connection ended in it (refused, lost, shutdown).
pub(crate) async fn establish<'s, P, R, W>(
    io: &mut Transport<R, W>,
    info: &ConnectionInfo,
    server: &'s MqttServer<P>,
) -> Option<Established<'s, P>>
where
    P: Policy,
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let (mut codec, prepared) = receive(io, info, server).await?;
    let request = &prepared.request;
    let cfg = server.config();
    let peer = info.peer_addr;
    let accepted = tokio::select! {
        r = server.policy().connect(request) => r,
        _ = server.shutdown.cancelled() => return None,
    };
    let accepted = match accepted {
        Ok(a) => a,
        Err(refusal) => {
            tracing::info!(
                %peer, client_id = %request.client_id, username = ?request.username,
                "refused CONNECT: {:?} ({})", refusal, refusal.reason_code()
            );
            refuse(&mut codec, refusal, io, cfg).await;
            return None;
        }
    };
    let (attached, guard) = attach(
        io,
        &mut codec,
        server,
        &prepared,
        &accepted.session_key,
        peer,
    )
    .await?;
    let grant = grant(cfg, &prepared, &accepted, attached.present);
    codec.encode_connack(&grant, &mut io.wbuf);
    let written = timeout(cfg.connect_timeout, async {
        io.wr.write_all_buf(&mut io.wbuf).await?;
        io.wr.flush().await
    })
    .await;
    if !matches!(written, Ok(Ok(()))) {
        tracing::debug!(%peer, client_id = %request.client_id, "connection lost while sending CONNACK");
        guard.disarm();
        let mut ended = Vec::new();
        server
            .sessions
            .detach(&attached.session, attached.generation, &mut ended);
        server.sessions_ended(ended).await;
        return None;
    }
    let handle = SessionHandle::new(attached.session.clone());
    let Accepted { identity, .. } = accepted;
    server
        .policy()
        .connected(&identity, &handle, attached.present)
        .await;
    tracing::debug!(%peer, client_id = %request.client_id, session = %handle.key(), protocol = %request.protocol, "connected");
    Some(Established {
        codec,
        client_max_packet: prepared.client_max_packet,
        request: prepared.request,
        identity,
        handle,
        session: attached.session,
        generation: attached.generation,
        signal: attached.signal,
        done: attached.done,
        guard,
        wildcards: grant.wildcard_subscriptions,
        shared: grant.shared_subscriptions,
    })
}

/// Reads the CONNECT and prepares the request, answering what is refused before the policy.
async fn receive<P, R, W>(
    io: &mut Transport<R, W>,
    info: &ConnectionInfo,
    server: &MqttServer<P>,
) -> Option<(Codec, Prepared)>
where
    P: Policy,
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let cfg = server.config();
    let peer = info.peer_addr;
    let handshake = tokio::select! {
        r = timeout(cfg.connect_timeout, read_connect(&mut io.rd, &mut io.rbuf, cfg)) => r,
        _ = server.shutdown.cancelled() => return None,
    };
    let (codec, packet) = match handshake {
        Ok(Ok(connect)) => connect,
        Ok(Err(ConnectFailure::Io(e))) => {
            tracing::debug!(%peer, error = %e, "connection closed before CONNECT");
            return None;
        }
        Ok(Err(ConnectFailure::Invalid(e))) => {
            tracing::warn!(%peer, client_id = "", "refused connection: {e}");
            wire::encode_refusal(e.connack(), &mut io.wbuf);
            close_quietly(&mut io.wr, &mut io.wbuf, cfg.close_timeout).await;
            return None;
        }
        Err(_) => {
            tracing::info!(%peer, client_id = "", "refused connection: no CONNECT within {:?}", cfg.connect_timeout);
            return None;
        }
    };
    match prepare(&codec, packet, info, cfg) {
        Ok(p) => Some((codec, p)),
        Err(refuse) => {
            tracing::warn!(%peer, client_id = %refuse.client_id, "refused CONNECT: {}", refuse.error);
            wire::encode_refusal(refuse.error.connack(), &mut io.wbuf);
            close_quietly(&mut io.wr, &mut io.wbuf, cfg.close_timeout).await;
            None
        }
    }
}

/// Attaches to the session the policy named, waiting for a previous connection's teardown.
async fn attach<'s, P, R, W>(
    io: &mut Transport<R, W>,
    codec: &mut Codec,
    server: &'s MqttServer<P>,
    prepared: &Prepared,
    session_key: &str,
    peer: std::net::SocketAddr,
) -> Option<(Attached, DetachGuard<'s>)>
where
    P: Policy,
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let cfg = server.config();
    let client_id = &prepared.request.client_id;
    let mut ended = Vec::new();
    let attach = server.sessions.attach(
        AttachParams {
            key: session_key,
            client_id: client_id.clone(),
            clean_start: prepared.request.clean_start,
            expiry: prepared.request.session_expiry,
            window: prepared.window,
        },
        &mut ended,
    );
    let Ok(mut attached) = attach else {
        server.sessions_ended(ended).await;
        tracing::warn!(%peer, %client_id, "refused CONNECT: session limit of {} reached", cfg.max_sessions);
        refuse(codec, Refusal::ServerBusy, io, cfg).await;
        return None;
    };
    let guard = DetachGuard {
        store: &server.sessions,
        session: attached.session.clone(),
        generation: attached.generation,
        armed: true,
    };
    if let Some(previous) = attached.previous.take() {
        if timeout(cfg.takeover_timeout, previous).await.is_err() {
            tracing::warn!(%peer, %client_id, session = %session_key, "previous connection did not finish within {:?}; taking over anyway", cfg.takeover_timeout);
        }
    }
    // Sessions discarded by the attach (clean start, expired), after the previous connection's
    // teardown so that the policy hears of them in order.
    server.sessions_ended(ended).await;
    if attached.present {
        tracing::debug!(%peer, %client_id, session = %session_key, "resuming session");
    }
    Some((attached, guard))
}

fn grant<I>(cfg: &MqttConfig, prepared: &Prepared, accepted: &Accepted<I>, present: bool) -> Grant {
    let request = &prepared.request;
    Grant {
        session_present: present,
        session_expiry: prepared.granted_expiry,
        receive_maximum: cfg.receive_maximum,
        max_packet_size: cfg.max_packet_size,
        assigned_client_id: request
            .client_id_assigned
            .then(|| request.client_id.clone()),
        topic_alias_maximum: cfg.topic_alias_maximum,
        wildcard_subscriptions: accepted
            .wildcard_subscriptions
            .unwrap_or(cfg.wildcard_subscriptions),
        shared_subscriptions: accepted
            .shared_subscriptions
            .unwrap_or(cfg.shared_subscriptions),
        server_keep_alive: prepared.server_keep_alive,
    }
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
    let mut io = Transport::new(io, cfg);
    let peer = info.peer_addr;
    let connect = tokio::select! {
        r = timeout(cfg.connect_timeout, read_connect(&mut io.rd, &mut io.rbuf, cfg)) => r,
        _ = server.shutdown.cancelled() => return,
    };
    match connect {
        Ok(Ok((mut codec, packet))) => {
            let client_id = match &packet {
                ConnectPacket::V3(c) => c.client_id.clone(),
                ConnectPacket::V5(c) => c.client_id.clone(),
            };
            tracing::debug!(%peer, %client_id, "refused CONNECT: {limit} connections are open on this listener");
            refuse(&mut codec, Refusal::ServerBusy, &mut io, cfg).await;
        }
        Ok(Err(ConnectFailure::Invalid(e))) => {
            wire::encode_refusal(e.connack(), &mut io.wbuf);
            close_quietly(&mut io.wr, &mut io.wbuf, cfg.close_timeout).await;
        }
        Ok(Err(ConnectFailure::Io(_))) | Err(_) => {}
    }
}

/// Detaches the session if the connection task is dropped mid-way (runtime shutdown).
pub(crate) struct DetachGuard<'a> {
    store: &'a SessionStore,
    session: Arc<Session>,
    generation: u64,
    armed: bool,
}

impl DetachGuard<'_> {
    /// The connection detaches by itself from here on.
    pub(crate) fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for DetachGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            let mut ended = Vec::new();
            self.store
                .detach(&self.session, self.generation, &mut ended);
        }
    }
}

async fn refuse<R, W: AsyncWrite + Unpin>(
    codec: &mut Codec,
    refusal: Refusal,
    io: &mut Transport<R, W>,
    cfg: &MqttConfig,
) {
    let answer = if codec.is_v5() {
        ConnackRefusal::V5(refusal.reason_code())
    } else {
        ConnackRefusal::V3(refusal.v3_return_code())
    };
    wire::encode_refusal(answer, &mut io.wbuf);
    close_quietly(&mut io.wr, &mut io.wbuf, cfg.close_timeout).await;
}

/// Writes what is buffered and shuts the write side down, within `limit`.
pub(crate) async fn close_quietly<W: AsyncWrite + Unpin>(
    wr: &mut W,
    wbuf: &mut BytesMut,
    limit: Duration,
) {
    let _ = timeout(limit, async {
        wr.write_all_buf(wbuf).await?;
        wr.flush().await?;
        wr.shutdown().await
    })
    .await;
}

enum ConnectFailure {
    Io(io::Error),
    Invalid(ConnectError),
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

/// A CONNECT refused before the policy sees it.
struct Refuse {
    error: ConnectError,
    client_id: ByteString,
}

/// Turns the CONNECT into what the policy sees, enforcing the server's limits.
fn prepare(
    codec: &Codec,
    packet: ConnectPacket,
    info: &ConnectionInfo,
    cfg: &MqttConfig,
) -> Result<Prepared, Refuse> {
    match packet {
        ConnectPacket::V3(c) => {
            let client_id = c.client_id.clone();
            prepare_v3(codec, *c, info, cfg).map_err(|error| Refuse { error, client_id })
        }
        ConnectPacket::V5(c) => {
            let client_id = c.client_id.clone();
            prepare_v5(codec, *c, info, cfg).map_err(|error| Refuse { error, client_id })
        }
    }
}

/// The keep-alive in effect, and the Server Keep Alive to tell when it differs from the
/// client's.
fn keep_alive(cfg: &MqttConfig, asked: u16) -> (u16, Option<u16>) {
    let max = cfg.max_keep_alive;
    let effective = if max > 0 && (asked == 0 || asked > max) {
        max
    } else {
        asked
    };
    (effective, (effective != asked).then_some(effective))
}

/// The client id, or one assigned when it is empty (and that is allowed).
fn client_id(
    asked: ByteString,
    cfg: &MqttConfig,
    v5: bool,
) -> Result<(ByteString, bool), ConnectError> {
    if !asked.is_empty() {
        return Ok((asked, false));
    }
    if !cfg.allow_empty_client_id {
        return Err(ConnectError::EmptyClientId { v5 });
    }
    let assigned = format!(
        "{}{}",
        cfg.assigned_client_id_prefix,
        uuid::Uuid::new_v4().simple()
    );
    Ok((assigned.into(), true))
}

fn prepare_v3(
    codec: &Codec,
    c: rmqtt_codec::v3::Connect,
    info: &ConnectionInfo,
    cfg: &MqttConfig,
) -> Result<Prepared, ConnectError> {
    let protocol = codec.version(c.protocol.level() == 3);
    let will = match c.last_will {
        None => None,
        Some(w) => {
            if let Err(source) = topic::validate_topic_name(&w.topic) {
                return Err(ConnectError::WillTopic {
                    v5: false,
                    topic: w.topic,
                    source,
                });
            }
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
    let (client_id, assigned) = client_id(c.client_id, cfg, false)?;
    let (keep_alive, _) = keep_alive(cfg, c.keep_alive);
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

fn will_v5(mut w: rmqtt_codec::v5::LastWill) -> Result<Will, ConnectError> {
    if w.qos == rmqtt_codec::types::QoS::ExactlyOnce {
        return Err(ConnectError::WillQos2);
    }
    if w.retain {
        return Err(ConnectError::RetainedWill);
    }
    if let Err(source) = topic::validate_topic_name(&w.topic) {
        return Err(ConnectError::WillTopic {
            v5: true,
            topic: w.topic,
            source,
        });
    }
    let properties = wire::will_properties(&mut w);
    Ok(Will {
        topic: w.topic,
        payload: w.message,
        qos: QoS::from_codec(w.qos),
        retain: false,
        delay_interval: w.will_delay_interval_sec.unwrap_or(0),
        properties,
    })
}

fn prepare_v5(
    codec: &Codec,
    mut c: rmqtt_codec::v5::Connect,
    info: &ConnectionInfo,
    cfg: &MqttConfig,
) -> Result<Prepared, ConnectError> {
    if let Some(method) = c.auth_method.take() {
        return Err(ConnectError::EnhancedAuthentication(method));
    }
    let will = c.last_will.take().map(will_v5).transpose()?;
    let (client_id, assigned) = client_id(c.client_id, cfg, true)?;
    let (keep_alive, server_keep_alive) = keep_alive(cfg, c.keep_alive);
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
