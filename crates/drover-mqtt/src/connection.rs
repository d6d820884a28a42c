//! One task per connection: the handshake ([`crate::handshake`]), then a single `select!` loop
//! ([`Conn::serve`]) over the socket (read and write halves), the policy futures, the session's
//! outbound queue, the keep-alive and packet timers and the takeover/shutdown signals, then the
//! teardown (DISCONNECT, will, policy callbacks).
//!
//! The loop's parts: `inbound` (decoding and checking what the client sends, QoS 1 inbound
//! bookkeeping and acknowledgements), `control` (SUBSCRIBE/UNSUBSCRIBE), `outbound` (the
//! session's messages onto the write buffer, and writing it), `timers` (keep-alive, packet
//! timeout).

use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::io;
use std::num::NonZeroU16;
use std::pin::pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::BytesMut;
use bytestring::ByteString;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::time::sleep_until;

use crate::config::MqttConfig;
use crate::handshake::{self, close_quietly, Established};
use crate::pipeline::Pipeline;
use crate::policy::Policy;
use crate::reason::{CloseReason, PublishRefusal};
use crate::server::MqttServer;
use crate::session::{ConnSignal, Session, SessionHandle, SessionStore};
use crate::types::{ConnectionInfo, Inbound, QoS, SubscriptionOptions, UserProperty, Will};
use crate::wire::Codec;

mod control;
mod inbound;
mod outbound;
mod timers;

use control::{ControlDone, ControlFuture};
use timers::Timers;

/// The socket's halves and their buffers.
pub(crate) struct Transport<R, W> {
    pub(crate) rd: R,
    pub(crate) wr: W,
    pub(crate) rbuf: BytesMut,
    pub(crate) wbuf: BytesMut,
}

impl<IO: AsyncRead + AsyncWrite> Transport<tokio::io::ReadHalf<IO>, tokio::io::WriteHalf<IO>> {
    pub(crate) fn new(io: IO, cfg: &MqttConfig) -> Self {
        let (rd, wr) = tokio::io::split(io);
        Transport {
            rd,
            wr,
            rbuf: BytesMut::with_capacity(cfg.read_buffer_size),
            wbuf: BytesMut::new(),
        }
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
    let mut io = Transport::new(io, cfg);
    let Some(est) = handshake::establish(&mut io, &info, &server).await else {
        return;
    };
    let Established {
        codec,
        request,
        client_max_packet,
        identity,
        handle,
        session,
        generation,
        signal,
        done,
        guard,
        wildcards,
        shared,
    } = est;
    let v5 = codec.is_v5();
    let mut state = State {
        codec,
        v5,
        cfg,
        peer: info.peer_addr,
        client_id: request.client_id.clone(),
        work: VecDeque::new(),
        work_bytes: 0,
        qos1_unacked: 0,
        aliases: Vec::new(),
        expiry_zero_at_connect: request.session_expiry.is_zero(),
        wildcards,
        shared,
        read_closed: false,
        pump_needed: true,
        pump_stalled: false,
        needs_flush: false,
    };
    let conn = Conn {
        server: &server,
        identity,
        handle,
        session,
        generation,
        signal,
        keep_alive: (request.keep_alive > 0)
            .then(|| Duration::from_millis(u64::from(request.keep_alive) * 1500)),
        client_max_packet,
    };
    let close = conn.serve(&mut state, &mut io).await;
    state.log_close(&close);
    if v5 && !matches!(close, CloseReason::PublishRefused(_)) {
        if let Some(code) = close.server_disconnect_code() {
            state.codec.encode_disconnect(code, &mut io.wbuf);
        }
    }
    if close != CloseReason::ConnectionLost {
        close_quietly(&mut io.wr, &mut io.wbuf, cfg.close_timeout).await;
    }
    guard.disarm();
    conn.teardown(close, request.will, request.session_expiry)
        .await;
    drop(done);
}

/// What stays the same for the life of an established connection.
struct Conn<'s, P: Policy> {
    server: &'s Arc<MqttServer<P>>,
    identity: P::Identity,
    handle: SessionHandle,
    session: Arc<Session>,
    generation: u64,
    signal: Arc<ConnSignal>,
    /// 1.5 times the keep-alive; `None` for keep-alive 0.
    keep_alive: Option<Duration>,
    /// The client's Maximum Packet Size.
    client_max_packet: usize,
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

/// What the loop needs to acknowledge a PUBLISH once the policy is done with it.
struct PublishMeta {
    packet_id: Option<NonZeroU16>,
    qos: QoS,
    topic: ByteString,
}

/// What [`Conn::start_work`] started besides PUBLISHes.
enum Started<'c> {
    Nothing,
    Control(ControlFuture<'c>),
    End(CloseReason),
}

/// What woke the loop up (besides the timers, which it handles itself).
enum Event {
    Close(CloseReason),
    Published(Vec<PublishMeta>, Vec<Result<(), PublishRefusal>>),
    ControlDone(ControlDone),
    Written(io::Result<()>),
    Read(io::Result<usize>),
    Outbound,
}

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
    /// Inbound QoS 1 PUBLISHes not acknowledged yet (against the Receive Maximum).
    qos1_unacked: usize,
    aliases: Vec<Option<ByteString>>,
    expiry_zero_at_connect: bool,
    wildcards: bool,
    shared: bool,
    read_closed: bool,
    /// The session may have messages to put on the wire.
    pump_needed: bool,
    /// The last pump stopped at the write buffer's high-water mark.
    pump_stalled: bool,
    /// Bytes were written since the last flush.
    needs_flush: bool,
}

impl<P: Policy> Conn<'_, P> {
    async fn serve<R, W>(&self, st: &mut State<'_>, io: &mut Transport<R, W>) -> CloseReason
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let cfg = st.cfg;
        let policy = self.server.policy();
        // Batches of PUBLISHes handed to the policy, and how many PUBLISHes they hold.
        let mut pipeline = Pipeline::new();
        let mut publishes_in_flight = 0;
        let mut control: Option<ControlFuture<'_>> = None;
        let mut timers = Timers::new(self.keep_alive, cfg.packet_timeout);
        // Packets that arrived together with the CONNECT.
        if let Err(reason) = self.decode(st, io) {
            return reason;
        }
        let mut ka_sleep = pin!(sleep_until(timers.keep_alive_start()));
        timers.started(!io.rbuf.is_empty());
        let mut packet_sleep = pin!(sleep_until(timers.packet_start()));

        loop {
            if control.is_none() {
                let publish = |messages| policy.publish_batch(&self.identity, messages);
                match self.start_work(st, &mut pipeline, &mut publishes_in_flight, publish) {
                    Started::Control(c) => control = Some(c),
                    Started::End(reason) => return reason,
                    Started::Nothing => {}
                }
            }
            let (can_read, write_blocked) = self.before_wait(st, io, &mut timers);

            let event = tokio::select! {
                biased;
                _ = self.signal.kick.cancelled() => Event::Close(self.signal.kick_reason()),
                _ = self.server.shutdown.cancelled() => Event::Close(CloseReason::ServerShutdown),
                (metas, results) = poll_fn(|cx| pipeline.poll_next(cx)), if !pipeline.is_empty() => {
                    publishes_in_flight -= metas.len();
                    Event::Published(metas, results)
                }
                done = poll_fn(|cx| match control.as_mut() {
                    Some(f) => f.as_mut().poll(cx),
                    None => Poll::Pending,
                }), if control.is_some() => {
                    control = None;
                    Event::ControlDone(done)
                }
                written = outbound::write_some(&mut io.wr, &mut io.wbuf, &mut st.needs_flush),
                    if !io.wbuf.is_empty() || st.needs_flush => Event::Written(written),
                read = io.rd.read_buf(&mut io.rbuf), if can_read => Event::Read(read),
                _ = &mut packet_sleep, if timers.packet_pending() => {
                    match timers.packet_expired(can_read) {
                        Ok(next) => packet_sleep.as_mut().reset(next),
                        Err(reason) => return reason,
                    }
                    continue;
                }
                _ = self.signal.outbound.notified() => Event::Outbound,
                _ = &mut ka_sleep, if self.keep_alive.is_some() => {
                    match timers.keep_alive_expired(can_read, write_blocked, st) {
                        Ok(next) => ka_sleep.as_mut().reset(next),
                        Err(reason) => return reason,
                    }
                    continue;
                }
            };
            if let Err(reason) = self.on_event(event, st, io, &mut timers) {
                return reason;
            }
        }
    }

    /// Starts queued work, in order (called while no SUBSCRIBE/UNSUBSCRIBE runs): PUBLISHes
    /// (batched, through `publish`) up to the concurrency limit; SUBSCRIBE, UNSUBSCRIBE and the
    /// end only once everything before them is done.
    fn start_work<'c, F: Future>(
        &'c self,
        st: &mut State<'_>,
        pipeline: &mut Pipeline<F, Vec<PublishMeta>>,
        publishes_in_flight: &mut usize,
        publish: impl Fn(Vec<Inbound>) -> F,
    ) -> Started<'c> {
        let concurrency = st.cfg.inbound_concurrency;
        while let Some(front) = st.work.front() {
            match front {
                Work::Publish { .. } if *publishes_in_flight < concurrency => {}
                Work::Publish { .. } => break,
                _ if pipeline.is_empty() => {}
                _ => break,
            }
            let Some(work) = st.work.pop_front() else {
                break;
            };
            match work {
                Work::Publish { message, packet_id } => {
                    let room = concurrency - *publishes_in_flight;
                    let (messages, metas) = st.publish_batch(message, packet_id, room);
                    *publishes_in_flight += messages.len();
                    pipeline.push(publish(messages), metas);
                }
                Work::Subscribe {
                    packet_id,
                    filters,
                    user_properties,
                } => {
                    let c = self.subscribe(st, packet_id, filters, user_properties);
                    return Started::Control(c);
                }
                Work::Unsubscribe { packet_id, filters } => {
                    return Started::Control(self.unsubscribe(packet_id, filters));
                }
                Work::End(reason) => return Started::End(reason),
            }
        }
        Started::Nothing
    }

    /// Before the loop waits: puts the session's messages on the wire, makes room to read.
    /// Whether the loop may read, and whether writing is blocked (the client does not read).
    fn before_wait<R, W>(
        &self,
        st: &mut State<'_>,
        io: &mut Transport<R, W>,
        timers: &mut Timers,
    ) -> (bool, bool) {
        let cfg = st.cfg;
        self.pump(st, &mut io.wbuf);
        if io.rbuf.capacity() - io.rbuf.len() < 1024 {
            io.rbuf.reserve(cfg.read_buffer_size);
        }
        timers.write_idle(io.wbuf.is_empty());
        let write_blocked = io.wbuf.len() >= 2 * cfg.write_buffer_high_water;
        let can_read = !st.read_closed
            && st.work.len() < cfg.inbound_queue
            && st.work_bytes < cfg.max_packet_size as usize
            && !write_blocked;
        (can_read, write_blocked)
    }

    /// Handles what the loop woke up for; `Err` ends the connection.
    fn on_event<R, W>(
        &self,
        event: Event,
        st: &mut State<'_>,
        io: &mut Transport<R, W>,
        timers: &mut Timers,
    ) -> Result<(), CloseReason> {
        match event {
            Event::Close(reason) => return Err(reason),
            Event::Published(metas, results) => {
                let mut results = results.into_iter();
                for meta in metas {
                    let result = results.next().unwrap_or(Err(PublishRefusal::Unspecified));
                    st.publish_done(meta, result, &mut io.wbuf)?;
                }
            }
            Event::ControlDone(done) => st.control_done(done, &mut io.wbuf),
            Event::Written(Err(e)) => {
                tracing::debug!(peer = %st.peer, client_id = %st.client_id, error = %e, "write failed");
                return Err(CloseReason::ConnectionLost);
            }
            Event::Written(Ok(())) => {
                timers.written();
                if st.pump_stalled {
                    st.pump_needed = true;
                }
            }
            Event::Read(Ok(0) | Err(_)) => {
                st.read_closed = true;
                st.work.push_back(Work::End(CloseReason::ConnectionLost));
            }
            Event::Read(Ok(n)) => {
                let buffered = io.rbuf.len();
                timers.read();
                self.decode(st, io)?;
                timers.decoded(n, buffered, io.rbuf.len());
            }
            Event::Outbound => st.pump_needed = true,
        }
        Ok(())
    }

    /// Decodes and handles every complete packet in the read buffer.
    fn decode<R, W>(
        &self,
        st: &mut State<'_>,
        io: &mut Transport<R, W>,
    ) -> Result<(), CloseReason> {
        st.decode_available(&mut io.rbuf, &self.session, self.generation, &mut io.wbuf)
    }

    /// After the connection closed: detach from the session, publish the will if the reason
    /// calls for it, tell the policy.
    async fn teardown(&self, close: CloseReason, will: Option<Will>, session_expiry: Duration) {
        let server = self.server;
        let mut ended = Vec::new();
        server
            .sessions
            .detach(&self.session, self.generation, &mut ended);
        if close.publishes_will() {
            if let Some(will) = will {
                self.publish_will(will, session_expiry).await;
            }
        }
        server.policy().disconnected(&self.identity, &close).await;
        server.sessions_ended(ended).await;
    }

    async fn publish_will(&self, will: Will, session_expiry: Duration) {
        let delay = Duration::from_secs(u64::from(will.delay_interval)).min(session_expiry);
        let server = self.server;
        if delay.is_zero() {
            server
                .policy()
                .will(&self.identity, will.into_inbound())
                .await;
            return;
        }
        let server = server.clone();
        let identity = self.identity.clone();
        let session = self.session.clone();
        let generation = self.generation;
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
}

impl State<'_> {
    /// The PUBLISH and those queued right behind it, up to `room`: they go to the policy
    /// together.
    fn publish_batch(
        &mut self,
        message: Inbound,
        packet_id: Option<NonZeroU16>,
        room: usize,
    ) -> (Vec<Inbound>, Vec<PublishMeta>) {
        let mut messages = Vec::with_capacity(room.min(self.work.len() + 1));
        let mut metas = Vec::with_capacity(messages.capacity());
        let mut next = Some((message, packet_id));
        while let Some((message, packet_id)) = next.take() {
            self.work_bytes -= message.payload.len();
            metas.push(PublishMeta {
                packet_id,
                qos: message.qos,
                topic: message.topic.clone(),
            });
            messages.push(message);
            if messages.len() < room {
                if let Some(Work::Publish { .. }) = self.work.front() {
                    if let Some(Work::Publish { message, packet_id }) = self.work.pop_front() {
                        next = Some((message, packet_id));
                    }
                }
            }
        }
        (messages, metas)
    }

    fn log_close(&self, close: &CloseReason) {
        let (peer, client_id) = (self.peer, &self.client_id);
        match close {
            CloseReason::ProtocolError(_)
            | CloseReason::KeepAliveTimeout
            | CloseReason::PacketTimeout(_) => {
                tracing::warn!(%peer, %client_id, "closing connection: {close}");
            }
            CloseReason::TakenOver | CloseReason::Kicked(_) | CloseReason::PublishRefused(_) => {
                tracing::info!(%peer, %client_id, "closing connection: {close}");
            }
            _ => tracing::debug!(%peer, %client_id, "closing connection: {close}"),
        }
    }
}
