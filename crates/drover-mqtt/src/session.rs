//! Session state: subscriptions and the outbound queue of one session key, outliving
//! connections for the session expiry interval.
//!
//! [`SessionStore`] is the only place that creates, takes over, and discards sessions; it is the
//! seam where a later, cross-node store plugs in. Locks: the store's map lock is always taken
//! before a session's lock; neither is ever held across an `.await`.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::num::NonZeroU16;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytestring::ByteString;
use tokio::sync::{oneshot, Notify, Semaphore, TryAcquireError};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::reason::{CloseReason, ReasonCode, SessionEndReason};
use crate::topic;
use crate::types::{OutboundMessage, QoS, Subscription};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Why a message handed to [`SessionHandle::publish`] could not be queued. The message is
/// handed back.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The session no longer exists (expired, replaced by a clean start, closed).
    #[error("session ended")]
    SessionEnded(Box<OutboundMessage>),
    /// QoS 0 message for a session without a live connection (QoS 0 is not queued offline).
    #[error("session offline, QoS 0 message not queued")]
    Offline(Box<OutboundMessage>),
    /// Not a message that can be sent (bad topic, QoS 2, too large to frame).
    #[error("invalid outbound message: {reason}")]
    Invalid {
        /// The message.
        message: Box<OutboundMessage>,
        /// What is wrong.
        reason: &'static str,
    },
}

/// Why [`SessionHandle::try_publish`] could not queue a message.
#[derive(Debug, thiserror::Error)]
pub enum TryPublishError {
    /// The session queue is full (a slow or offline client): back off, retry, or give up.
    #[error("session queue full")]
    Full(Box<OutboundMessage>),
    /// Any other reason, as for [`SessionHandle::publish`].
    #[error(transparent)]
    Publish(#[from] PublishError),
}

/// Why a queued QoS 1 message was not acknowledged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DeliveryError {
    /// The session ended before the client acknowledged the message.
    #[error("session ended before the message was acknowledged")]
    SessionEnded,
    /// The encoded message exceeds the client's Maximum Packet Size; it was dropped.
    #[error("message exceeds the client's maximum packet size")]
    TooLarge,
    /// The message's expiry interval passed before it could be sent; it was dropped.
    #[error("message expired before it could be sent")]
    Expired,
}

/// Whether the session had a live connection when a message was queued.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Enqueued {
    /// A connection was attached: the message goes out as soon as the window allows.
    Connected,
    /// No connection: the message waits for the client to resume its persistent session
    /// (QoS 1 only).
    Offline,
}

type AckResult = Result<ReasonCode, DeliveryError>;

/// The receipt of a queued message, see [`SessionHandle::publish`].
#[derive(Debug)]
#[must_use = "a Delivery tells whether and when the client acknowledged the message"]
pub struct Delivery {
    enqueued: Enqueued,
    ack: Option<oneshot::Receiver<AckResult>>,
}

impl Delivery {
    /// Whether the session was connected when the message was queued.
    pub fn enqueued(&self) -> Enqueued {
        self.enqueued
    }

    /// Resolves when the client acknowledged the message (QoS 1 PUBACK) with the PUBACK's
    /// reason code (always 0x00 for MQTT 3; an MQTT 5 client may answer an error code such as
    /// 0x80, which still means it received the message). Resolves at once for QoS 0, which has no
    /// acknowledgement. A message queued for an offline session resolves when the client has
    /// resumed the session and acknowledged it, or fails when the session ends.
    pub async fn acknowledged(self) -> Result<ReasonCode, DeliveryError> {
        match self.ack {
            None => Ok(ReasonCode::SUCCESS),
            Some(rx) => rx.await.unwrap_or(Err(DeliveryError::SessionEnded)),
        }
    }
}

struct Queued {
    msg: OutboundMessage,
    ack: Option<oneshot::Sender<AckResult>>,
    expires_at: Option<Instant>,
}

struct InFlight {
    packet_id: NonZeroU16,
    msg: OutboundMessage,
    ack: Option<oneshot::Sender<AckResult>>,
    expires_at: Option<Instant>,
}

/// Signals to the connection task currently attached to a session.
pub(crate) struct ConnSignal {
    /// Cancelled to close the connection (takeover, [`SessionHandle::disconnect`]).
    pub(crate) kick: CancellationToken,
    kick_reason: Mutex<Option<CloseReason>>,
    /// Notified when the session's queue went from empty to non-empty.
    pub(crate) outbound: Notify,
}

impl ConnSignal {
    fn new() -> Self {
        ConnSignal {
            kick: CancellationToken::new(),
            kick_reason: Mutex::new(None),
            outbound: Notify::new(),
        }
    }

    fn kick(&self, reason: CloseReason) {
        lock(&self.kick_reason).get_or_insert(reason);
        self.kick.cancel();
    }

    /// Why the connection was kicked.
    pub(crate) fn kick_reason(&self) -> CloseReason {
        lock(&self.kick_reason)
            .clone()
            .unwrap_or(CloseReason::TakenOver)
    }
}

struct Link {
    generation: u64,
    signal: Arc<ConnSignal>,
    window: usize,
    /// Resolves (with an error) when the attached connection finished its teardown.
    done: Option<oneshot::Receiver<()>>,
}

struct Inner {
    ended: Option<SessionEndReason>,
    client_id: ByteString,
    link: Option<Link>,
    expiry: Duration,
    detached_at: Option<Instant>,
    pending: VecDeque<Queued>,
    /// Sent (a prefix of `sent_unacked` entries) then unsent (after a reconnect) QoS 1 messages.
    inflight: VecDeque<InFlight>,
    sent_unacked: usize,
    next_packet_id: u16,
    subscriptions: Vec<Subscription>,
}

impl Inner {
    /// Whether the connection `generation` is the one attached.
    fn attached(&self, generation: u64) -> bool {
        self.link
            .as_ref()
            .is_some_and(|l| l.generation == generation)
    }

    fn expired(&self, now: Instant) -> bool {
        self.link.is_none()
            && self
                .detached_at
                .and_then(|at| at.checked_add(self.expiry))
                .is_some_and(|deadline| deadline <= now)
    }

    fn end(&mut self, reason: SessionEndReason) {
        let kick = match reason {
            SessionEndReason::ServerShutdown => CloseReason::ServerShutdown,
            _ => CloseReason::TakenOver,
        };
        self.end_with(reason, kick);
    }

    /// Ends the session; an attached connection closes for `kick`.
    fn end_with(&mut self, reason: SessionEndReason, kick: CloseReason) {
        self.ended.get_or_insert(reason);
        if let Some(link) = self.link.take() {
            link.signal.kick(kick);
        }
        // Dropping the senders fails the deliveries with `SessionEnded`.
        self.pending.clear();
        self.inflight.clear();
        self.sent_unacked = 0;
        self.subscriptions.clear();
    }

    fn allocate_packet_id(&mut self) -> NonZeroU16 {
        loop {
            self.next_packet_id = self.next_packet_id.wrapping_add(1);
            if let Some(id) = NonZeroU16::new(self.next_packet_id) {
                if !self.inflight.iter().any(|e| e.packet_id == id) {
                    return id;
                }
            }
        }
    }
}

pub(crate) struct Session {
    key: Box<str>,
    inner: Mutex<Inner>,
    /// Free slots of `pending`.
    space: Semaphore,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

/// One message the connection should put on the wire.
pub(crate) enum Outgoing<'a> {
    /// QoS 0: the message is handed over.
    Qos0(OutboundMessage, Option<u32>),
    /// QoS 1: stays in the session until acknowledged.
    Qos1 {
        msg: &'a OutboundMessage,
        packet_id: NonZeroU16,
        dup: bool,
        expiry: Option<u32>,
    },
}

/// Where [`Session::pump`] writes to: the connection's encoder and write buffer.
pub(crate) trait Sink {
    /// Whether the write buffer can take another packet.
    fn has_room(&self) -> bool;
    /// Encodes the message; `false` when it exceeds the client's maximum packet size (nothing
    /// was written).
    fn emit(&mut self, out: Outgoing<'_>) -> bool;
}

/// What [`Session::ack`] found.
pub(crate) enum AckOutcome {
    /// A message was acknowledged and left the window.
    Acked,
    /// No such packet id in flight (or the connection is no longer attached).
    Unknown,
}

fn remaining_secs(expires_at: Option<Instant>, now: Instant) -> Option<u32> {
    expires_at.map(|at| {
        let left = at.saturating_duration_since(now);
        u32::try_from(left.as_secs() + u64::from(left.subsec_nanos() > 0))
            .unwrap_or(u32::MAX)
            .max(1)
    })
}

impl Session {
    fn new(key: &str, client_id: ByteString, expiry: Duration, queue_limit: usize) -> Self {
        Session {
            key: key.into(),
            inner: Mutex::new(Inner {
                ended: None,
                client_id,
                link: None,
                expiry,
                detached_at: None,
                pending: VecDeque::new(),
                inflight: VecDeque::new(),
                sent_unacked: 0,
                next_packet_id: 0,
                subscriptions: Vec::new(),
            }),
            space: Semaphore::new(queue_limit),
        }
    }

    pub(crate) fn key(&self) -> &str {
        &self.key
    }

    /// Moves queued messages to the sink: first unsent in-flight messages (redelivery with
    /// DUP after a reconnect), then the queue, while the window and the sink allow.
    /// Returns `false` when `generation` is no longer attached.
    pub(crate) fn pump(&self, generation: u64, sink: &mut dyn Sink) -> bool {
        let now = Instant::now();
        let mut freed = 0;
        let mut failed: Vec<(oneshot::Sender<AckResult>, DeliveryError)> = Vec::new();
        {
            let mut guard = lock(&self.inner);
            let inner = &mut *guard;
            let window = match &inner.link {
                Some(link) if link.generation == generation => link.window,
                _ => return false,
            };
            // Redeliveries.
            while inner.sent_unacked < inner.inflight.len()
                && inner.sent_unacked < window
                && sink.has_room()
            {
                let idx = inner.sent_unacked;
                let entry = &inner.inflight[idx];
                let out = Outgoing::Qos1 {
                    msg: &entry.msg,
                    packet_id: entry.packet_id,
                    dup: true,
                    expiry: remaining_secs(entry.expires_at, now),
                };
                if sink.emit(out) {
                    inner.sent_unacked += 1;
                } else if let Some(entry) = inner.inflight.remove(idx) {
                    failed.extend(entry.ack.map(|tx| (tx, DeliveryError::TooLarge)));
                }
            }
            // New messages.
            while sink.has_room() {
                let Some(front) = inner.pending.front() else {
                    break;
                };
                let qos1 = front.msg.qos != QoS::AtMostOnce;
                if qos1
                    && (inner.sent_unacked < inner.inflight.len() || inner.sent_unacked >= window)
                {
                    break;
                }
                let Some(q) = inner.pending.pop_front() else {
                    break;
                };
                freed += 1;
                if q.expires_at.is_some_and(|at| at <= now) {
                    failed.extend(q.ack.map(|tx| (tx, DeliveryError::Expired)));
                    continue;
                }
                let expiry = remaining_secs(q.expires_at, now);
                if !qos1 {
                    // A QoS 0 message too large for the client is simply dropped (logged by the sink).
                    sink.emit(Outgoing::Qos0(q.msg, expiry));
                    continue;
                }
                let packet_id = inner.allocate_packet_id();
                if sink.emit(Outgoing::Qos1 {
                    msg: &q.msg,
                    packet_id,
                    dup: false,
                    expiry,
                }) {
                    inner.inflight.push_back(InFlight {
                        packet_id,
                        msg: q.msg,
                        ack: q.ack,
                        expires_at: q.expires_at,
                    });
                    inner.sent_unacked += 1;
                } else {
                    failed.extend(q.ack.map(|tx| (tx, DeliveryError::TooLarge)));
                }
            }
        }
        if freed > 0 {
            self.space.add_permits(freed);
        }
        for (tx, err) in failed {
            let _ = tx.send(Err(err));
        }
        true
    }

    /// A PUBACK from the client attached as `generation`.
    pub(crate) fn ack(
        &self,
        generation: u64,
        packet_id: NonZeroU16,
        reason: ReasonCode,
    ) -> AckOutcome {
        let tx = {
            let mut inner = lock(&self.inner);
            if !inner.attached(generation) {
                return AckOutcome::Unknown;
            }
            let sent = inner.sent_unacked;
            let Some(idx) = inner
                .inflight
                .iter()
                .take(sent)
                .position(|e| e.packet_id == packet_id)
            else {
                return AckOutcome::Unknown;
            };
            let Some(entry) = inner.inflight.remove(idx) else {
                return AckOutcome::Unknown;
            };
            inner.sent_unacked -= 1;
            entry.ack
        };
        if let Some(tx) = tx {
            let _ = tx.send(Ok(reason));
        }
        AckOutcome::Acked
    }

    /// Changes the expiry (MQTT 5 DISCONNECT with Session Expiry Interval).
    pub(crate) fn set_expiry(&self, generation: u64, expiry: Duration) {
        let mut inner = lock(&self.inner);
        if inner.attached(generation) {
            inner.expiry = expiry;
        }
    }

    /// Adds (or replaces, same group and filter) subscriptions.
    pub(crate) fn add_subscriptions(&self, subs: Vec<Subscription>) {
        let mut inner = lock(&self.inner);
        if inner.ended.is_some() {
            return;
        }
        for sub in subs {
            match inner
                .subscriptions
                .iter_mut()
                .find(|s| s.filter == sub.filter && s.share_group == sub.share_group)
            {
                Some(existing) => *existing = sub,
                None => inner.subscriptions.push(sub),
            }
        }
    }

    /// How many subscriptions the session holds.
    pub(crate) fn subscription_count(&self) -> usize {
        lock(&self.inner).subscriptions.len()
    }

    /// Whether the session holds the subscription `filter` of `group`.
    pub(crate) fn has_subscription(&self, group: Option<&str>, filter: &str) -> bool {
        lock(&self.inner)
            .subscriptions
            .iter()
            .any(|s| &*s.filter == filter && s.share_group.as_deref() == group)
    }

    /// Removes subscriptions; one entry per request, `None` when it did not exist.
    pub(crate) fn remove_subscriptions(
        &self,
        which: &[(Option<&str>, &str)],
    ) -> Vec<Option<Subscription>> {
        let mut inner = lock(&self.inner);
        which
            .iter()
            .map(|(group, filter)| {
                let pos = inner
                    .subscriptions
                    .iter()
                    .position(|s| &*s.filter == *filter && s.share_group.as_deref() == *group)?;
                Some(inner.subscriptions.remove(pos))
            })
            .collect()
    }

    fn enqueue(&self, msg: OutboundMessage) -> Result<Delivery, PublishError> {
        let mut inner = lock(&self.inner);
        if inner.ended.is_some() {
            return Err(PublishError::SessionEnded(Box::new(msg)));
        }
        let online = inner.link.is_some();
        if msg.qos == QoS::AtMostOnce && !online {
            drop(inner);
            self.space.add_permits(1);
            return Err(PublishError::Offline(Box::new(msg)));
        }
        let (tx, rx) = if msg.qos == QoS::AtMostOnce {
            (None, None)
        } else {
            let (tx, rx) = oneshot::channel();
            (Some(tx), Some(rx))
        };
        let expires_at = msg
            .properties
            .message_expiry_interval
            .and_then(|secs| Instant::now().checked_add(Duration::from_secs(u64::from(secs))));
        let was_empty = inner.pending.is_empty();
        inner.pending.push_back(Queued {
            msg,
            ack: tx,
            expires_at,
        });
        if was_empty {
            if let Some(link) = &inner.link {
                link.signal.outbound.notify_one();
            }
        }
        Ok(Delivery {
            enqueued: if online {
                Enqueued::Connected
            } else {
                Enqueued::Offline
            },
            ack: rx,
        })
    }
}

/// A handle on a session: publish to its client, look at its subscriptions. Cheap to clone;
/// stays valid across reconnects of a persistent session, and refuses to publish once the
/// session ended.
#[derive(Clone, Debug)]
pub struct SessionHandle {
    session: Arc<Session>,
}

impl SessionHandle {
    pub(crate) fn new(session: Arc<Session>) -> Self {
        SessionHandle { session }
    }

    /// The session key the policy chose.
    pub fn key(&self) -> &str {
        self.session.key()
    }

    /// Client identifier of the latest connection.
    pub fn client_id(&self) -> ByteString {
        lock(&self.session.inner).client_id.clone()
    }

    /// Whether a connection is attached.
    pub fn is_connected(&self) -> bool {
        lock(&self.session.inner).link.is_some()
    }

    /// Whether the session ended (its state was discarded).
    pub fn is_ended(&self) -> bool {
        lock(&self.session.inner).ended.is_some()
    }

    /// The subscriptions the session holds.
    pub fn subscriptions(&self) -> Vec<Subscription> {
        lock(&self.session.inner).subscriptions.clone()
    }

    /// The highest QoS granted to a subscription matching `topic`, or `None` when no
    /// subscription matches. A sender that should only deliver what the client subscribed to
    /// checks this first and publishes with at most this QoS.
    pub fn subscription_qos(&self, topic: &str) -> Option<QoS> {
        lock(&self.session.inner)
            .subscriptions
            .iter()
            .filter(|s| topic::matches(&s.filter, topic))
            .map(|s| s.qos)
            .max()
    }

    /// Messages queued and not yet sent (the lag of a slow or offline client).
    pub fn queued(&self) -> usize {
        lock(&self.session.inner).pending.len()
    }

    /// QoS 1 messages sent (or to be resent) and not yet acknowledged.
    pub fn in_flight(&self) -> usize {
        lock(&self.session.inner).inflight.len()
    }

    /// Queues a message for the client, waiting while the session queue is full (bounded by
    /// [`MqttConfig::session_queue_limit`](crate::MqttConfig::session_queue_limit)). Wrap it in
    /// a timeout, or use [`try_publish`](Self::try_publish), to bound the wait; cancelling the
    /// wait queues nothing.
    ///
    /// QoS 1 messages are queued for an offline persistent session too
    /// ([`Delivery::enqueued`] says [`Enqueued::Offline`]) and resent with DUP after a
    /// reconnect until acknowledged; QoS 0 messages for an offline session are refused.
    pub async fn publish(&self, message: OutboundMessage) -> Result<Delivery, PublishError> {
        if let Err(reason) = validate_outbound(&message) {
            return Err(PublishError::Invalid {
                message: Box::new(message),
                reason,
            });
        }
        if message.qos == QoS::AtMostOnce && !self.is_connected() {
            return Err(PublishError::Offline(Box::new(message)));
        }
        match self.session.space.acquire().await {
            Ok(permit) => permit.forget(),
            Err(_) => return Err(PublishError::SessionEnded(Box::new(message))),
        }
        self.session.enqueue(message)
    }

    /// Queues a message if the session queue has room, without waiting.
    pub fn try_publish(&self, message: OutboundMessage) -> Result<Delivery, TryPublishError> {
        if let Err(reason) = validate_outbound(&message) {
            return Err(PublishError::Invalid {
                message: Box::new(message),
                reason,
            }
            .into());
        }
        if message.qos == QoS::AtMostOnce && !self.is_connected() {
            return Err(PublishError::Offline(Box::new(message)).into());
        }
        match self.session.space.try_acquire() {
            Ok(permit) => permit.forget(),
            Err(TryAcquireError::NoPermits) => {
                return Err(TryPublishError::Full(Box::new(message)))
            }
            Err(TryAcquireError::Closed) => {
                return Err(PublishError::SessionEnded(Box::new(message)).into())
            }
        }
        Ok(self.session.enqueue(message)?)
    }

    /// Closes the attached connection, if any (MQTT 5 clients get DISCONNECT with `reason`,
    /// e.g. [`ReasonCode::ADMINISTRATIVE_ACTION`] or [`ReasonCode::NOT_AUTHORIZED`]). The session
    /// itself stays. Returns whether a connection was attached.
    pub fn disconnect(&self, reason: ReasonCode) -> bool {
        let inner = lock(&self.session.inner);
        match &inner.link {
            Some(link) => {
                link.signal.kick(CloseReason::Kicked(reason));
                true
            }
            None => false,
        }
    }
}

/// Largest encoded PUBLISH this crate frames (the MQTT remaining-length limit, with headroom).
const MAX_ENCODED: usize = 268_435_455 - 16;

fn validate_outbound(msg: &OutboundMessage) -> Result<(), &'static str> {
    if msg.qos == QoS::ExactlyOnce {
        return Err("QoS 2 is not supported");
    }
    if topic::validate_topic_name(&msg.topic).is_err() {
        return Err("invalid topic name");
    }
    let p = &msg.properties;
    let strings = [p.content_type.as_deref(), p.response_topic.as_deref()];
    if strings.iter().flatten().any(|s| s.len() > 65535)
        || p.correlation_data.as_ref().is_some_and(|d| d.len() > 65535)
        || p.user_properties
            .iter()
            .any(|(k, v)| k.len() > 65535 || v.len() > 65535)
    {
        return Err("property longer than 65535 bytes");
    }
    if let Some(rt) = &p.response_topic {
        if topic::validate_topic_name(rt).is_err() {
            return Err("invalid response topic");
        }
    }
    let size = 2 + msg.topic.len() + 2 + 4 + p.encoded_len() + msg.payload.len();
    if size > MAX_ENCODED {
        return Err("message too large for MQTT");
    }
    Ok(())
}

/// The store is full.
#[derive(Debug)]
pub(crate) struct StoreFull;

/// What [`SessionStore::attach`] hands the connection.
pub(crate) struct Attached {
    pub(crate) session: Arc<Session>,
    pub(crate) generation: u64,
    pub(crate) signal: Arc<ConnSignal>,
    pub(crate) present: bool,
    /// The previous connection's teardown; wait for it before CONNACK.
    pub(crate) previous: Option<oneshot::Receiver<()>>,
    /// Held by the connection until its teardown is complete.
    pub(crate) done: oneshot::Sender<()>,
}

/// Sessions whose state was discarded by an operation; the caller tells the policy.
pub(crate) type Ended = Vec<(Arc<Session>, SessionEndReason)>;

pub(crate) struct AttachParams<'a> {
    pub(crate) key: &'a str,
    pub(crate) client_id: ByteString,
    pub(crate) clean_start: bool,
    pub(crate) expiry: Duration,
    pub(crate) window: usize,
}

/// All sessions of a server, in memory, bounded by `max_sessions`.
pub(crate) struct SessionStore {
    sessions: Mutex<HashMap<Box<str>, Arc<Session>>>,
    next_generation: AtomicU64,
    max_sessions: usize,
    queue_limit: usize,
}

impl SessionStore {
    pub(crate) fn new(max_sessions: usize, queue_limit: usize) -> Self {
        SessionStore {
            sessions: Mutex::new(HashMap::new()),
            next_generation: AtomicU64::new(1),
            max_sessions,
            queue_limit,
        }
    }

    pub(crate) fn get(&self, key: &str) -> Option<Arc<Session>> {
        lock(&self.sessions).get(key).cloned()
    }

    pub(crate) fn len(&self) -> usize {
        lock(&self.sessions).len()
    }

    /// Attaches a new connection to the session `key`: resumes it (taking it over from a live
    /// connection), or starts a new one (clean start, none, or expired).
    pub(crate) fn attach(
        &self,
        p: AttachParams<'_>,
        ended: &mut Ended,
    ) -> Result<Attached, StoreFull> {
        let now = Instant::now();
        let generation = self.next_generation.fetch_add(1, Ordering::Relaxed);
        let signal = Arc::new(ConnSignal::new());
        let (done_tx, done_rx) = oneshot::channel();
        let mut map = lock(&self.sessions);

        if let Some(existing) = map.get(p.key).cloned() {
            let mut inner = lock(&existing.inner);
            let expired = inner.expired(now);
            let mut previous = inner.link.take().map(|old| {
                old.signal.kick(CloseReason::TakenOver);
                old.done
            });
            if !p.clean_start && !expired && inner.ended.is_none() {
                inner.link = Some(Link {
                    generation,
                    signal: signal.clone(),
                    window: p.window,
                    done: Some(done_rx),
                });
                inner.detached_at = None;
                inner.expiry = p.expiry;
                inner.client_id = p.client_id;
                inner.sent_unacked = 0;
                drop(inner);
                return Ok(Attached {
                    session: existing,
                    generation,
                    signal,
                    present: true,
                    previous: previous.take().flatten(),
                    done: done_tx,
                });
            }
            let reason = if expired {
                SessionEndReason::Expired
            } else {
                SessionEndReason::CleanStart
            };
            inner.end(reason);
            drop(inner);
            existing.space.close();
            map.remove(p.key);
            ended.push((existing, reason));
            let session = Arc::new(Session::new(p.key, p.client_id, p.expiry, self.queue_limit));
            lock(&session.inner).link = Some(Link {
                generation,
                signal: signal.clone(),
                window: p.window,
                done: Some(done_rx),
            });
            map.insert(p.key.into(), session.clone());
            return Ok(Attached {
                session,
                generation,
                signal,
                present: false,
                previous: previous.flatten(),
                done: done_tx,
            });
        }

        if map.len() >= self.max_sessions {
            Self::reap_locked(&mut map, now, ended);
            if map.len() >= self.max_sessions {
                return Err(StoreFull);
            }
        }
        let session = Arc::new(Session::new(p.key, p.client_id, p.expiry, self.queue_limit));
        lock(&session.inner).link = Some(Link {
            generation,
            signal: signal.clone(),
            window: p.window,
            done: Some(done_rx),
        });
        map.insert(p.key.into(), session.clone());
        Ok(Attached {
            session,
            generation,
            signal,
            present: false,
            previous: None,
            done: done_tx,
        })
    }

    /// The connection `generation` left the session. Ends the session when it has no expiry.
    pub(crate) fn detach(&self, session: &Arc<Session>, generation: u64, ended: &mut Ended) {
        let now = Instant::now();
        let mut map = lock(&self.sessions);
        let mut inner = lock(&session.inner);
        if !inner.attached(generation) {
            return; // taken over or ended meanwhile
        }
        inner.link = None;
        inner.detached_at = Some(now);
        inner.sent_unacked = 0;
        if inner.expiry.is_zero() {
            inner.end(SessionEndReason::Closed);
            drop(inner);
            session.space.close();
            if map
                .get(session.key())
                .is_some_and(|s| Arc::ptr_eq(s, session))
            {
                map.remove(session.key());
            }
            ended.push((session.clone(), SessionEndReason::Closed));
        }
    }

    /// Whether the connection `generation` is still the one attached (for will delay).
    pub(crate) fn resumed_since(session: &Session, generation: u64) -> bool {
        let inner = lock(&session.inner);
        inner.ended.is_none()
            && inner
                .link
                .as_ref()
                .is_some_and(|l| l.generation > generation)
    }

    /// Removes sessions whose expiry passed.
    pub(crate) fn reap(&self, ended: &mut Ended) {
        let now = Instant::now();
        let mut map = lock(&self.sessions);
        Self::reap_locked(&mut map, now, ended);
    }

    fn reap_locked(map: &mut HashMap<Box<str>, Arc<Session>>, now: Instant, ended: &mut Ended) {
        map.retain(|_, session| {
            let mut inner = lock(&session.inner);
            if inner.expired(now) {
                inner.end(SessionEndReason::Expired);
                drop(inner);
                session.space.close();
                ended.push((session.clone(), SessionEndReason::Expired));
                false
            } else {
                true
            }
        });
    }

    /// Ends the session `key`, closing its connection (MQTT 5: DISCONNECT with `reason`).
    pub(crate) fn end(&self, key: &str, reason: ReasonCode, ended: &mut Ended) -> bool {
        let mut map = lock(&self.sessions);
        let Some(session) = map.remove(key) else {
            return false;
        };
        lock(&session.inner).end_with(SessionEndReason::Ended, CloseReason::Kicked(reason));
        session.space.close();
        ended.push((session, SessionEndReason::Ended));
        true
    }

    /// Ends every session (server shutdown).
    pub(crate) fn clear(&self, ended: &mut Ended) {
        let mut map = lock(&self.sessions);
        for (_, session) in map.drain() {
            lock(&session.inner).end(SessionEndReason::ServerShutdown);
            session.space.close();
            ended.push((session, SessionEndReason::ServerShutdown));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    struct VecSink {
        room: usize,
        out: Vec<(Option<NonZeroU16>, bool, String)>,
        max_payload: usize,
    }

    impl Sink for VecSink {
        fn has_room(&self) -> bool {
            self.out.len() < self.room
        }
        fn emit(&mut self, out: Outgoing<'_>) -> bool {
            let (id, dup, msg) = match &out {
                Outgoing::Qos0(m, _) => (None, false, m),
                Outgoing::Qos1 {
                    msg,
                    packet_id,
                    dup,
                    ..
                } => (Some(*packet_id), *dup, *msg),
            };
            if msg.payload.len() > self.max_payload {
                return false;
            }
            self.out
                .push((id, dup, String::from_utf8_lossy(&msg.payload).into_owned()));
            true
        }
    }

    fn sink(room: usize) -> VecSink {
        VecSink {
            room,
            out: Vec::new(),
            max_payload: usize::MAX,
        }
    }

    fn msg(payload: &str, qos: QoS) -> OutboundMessage {
        OutboundMessage::new("t", Bytes::copy_from_slice(payload.as_bytes()), qos)
    }

    fn attach(store: &SessionStore, clean: bool, window: usize) -> Attached {
        let mut ended = Vec::new();
        let params = AttachParams {
            key: "k",
            client_id: ByteString::from_static("c"),
            clean_start: clean,
            expiry: Duration::from_secs(60),
            window,
        };
        store.attach(params, &mut ended).expect("attach")
    }

    #[tokio::test]
    async fn window_redelivery_and_acks() {
        let store = SessionStore::new(10, 100);
        let a = attach(&store, true, 2);
        let h = SessionHandle::new(a.session.clone());
        let mut deliveries = Vec::new();
        for i in 0..4 {
            deliveries.push(
                h.publish(msg(&format!("m{i}"), QoS::AtLeastOnce))
                    .await
                    .expect("queued"),
            );
        }
        let mut s = sink(100);
        assert!(a.session.pump(a.generation, &mut s));
        assert_eq!(s.out.len(), 2, "window of 2");
        assert_eq!(h.queued(), 2);
        // Reconnect: the two in flight are resent with DUP, in order, before anything new.
        let mut ended = Vec::new();
        store.detach(&a.session, a.generation, &mut ended);
        assert!(ended.is_empty());
        let b = attach(&store, false, 3);
        assert!(b.present);
        let mut s2 = sink(100);
        assert!(
            !a.session.pump(a.generation, &mut s2),
            "stale generation pumps nothing"
        );
        assert!(b.session.pump(b.generation, &mut s2));
        let ids: Vec<_> = s.out.iter().map(|o| o.0).collect();
        assert_eq!(s2.out[0], (ids[0], true, "m0".into()));
        assert_eq!(s2.out[1], (ids[1], true, "m1".into()));
        assert_eq!(s2.out[2].2, "m2");
        assert!(!s2.out[2].1);
        assert_eq!(s2.out.len(), 3);
        assert!(matches!(
            b.session
                .ack(b.generation, s2.out[1].0.expect("id"), ReasonCode::SUCCESS),
            AckOutcome::Acked
        ));
        assert!(matches!(
            b.session
                .ack(a.generation, s2.out[0].0.expect("id"), ReasonCode::SUCCESS),
            AckOutcome::Unknown
        ));
        let d1 = deliveries.remove(1);
        assert_eq!(d1.acknowledged().await, Ok(ReasonCode::SUCCESS));
        // A clean start discards the rest.
        let mut ended = Vec::new();
        store.detach(&b.session, b.generation, &mut ended);
        let c = store
            .attach(
                AttachParams {
                    key: "k",
                    client_id: "c".into(),
                    clean_start: true,
                    expiry: Duration::ZERO,
                    window: 1,
                },
                &mut ended,
            )
            .expect("attach");
        assert!(!c.present);
        assert_eq!(ended.len(), 1);
        assert_eq!(
            deliveries.remove(0).acknowledged().await,
            Err(DeliveryError::SessionEnded)
        );
        assert!(h.publish(msg("x", QoS::AtLeastOnce)).await.is_err());
    }

    #[tokio::test]
    async fn queue_limit_and_offline() {
        let store = SessionStore::new(10, 2);
        let a = attach(&store, true, 10);
        let h = SessionHandle::new(a.session.clone());
        let _d1 = h.try_publish(msg("a", QoS::AtMostOnce)).expect("room");
        let _d2 = h.try_publish(msg("b", QoS::AtLeastOnce)).expect("room");
        assert!(matches!(
            h.try_publish(msg("c", QoS::AtLeastOnce)),
            Err(TryPublishError::Full(_))
        ));
        let mut s = sink(1);
        a.session.pump(a.generation, &mut s);
        let d3 = h
            .try_publish(msg("c", QoS::AtLeastOnce))
            .expect("one slot freed");
        assert_eq!(d3.enqueued(), Enqueued::Connected);
        let mut ended = Vec::new();
        store.detach(&a.session, a.generation, &mut ended);
        assert!(matches!(
            h.try_publish(msg("d", QoS::AtMostOnce)),
            Err(TryPublishError::Publish(PublishError::Offline(_)))
        ));
        let mut s = sink(10);
        assert!(!a.session.pump(a.generation, &mut s));
        assert!(matches!(
            h.try_publish(msg("", QoS::ExactlyOnce)),
            Err(TryPublishError::Publish(PublishError::Invalid { .. }))
        ));
    }

    #[tokio::test]
    async fn too_large_messages_are_dropped() {
        let store = SessionStore::new(10, 10);
        let a = attach(&store, true, 10);
        let h = SessionHandle::new(a.session.clone());
        let big = h
            .publish(msg("0123456789", QoS::AtLeastOnce))
            .await
            .expect("queued");
        let small = h
            .publish(msg("ok", QoS::AtLeastOnce))
            .await
            .expect("queued");
        let mut s = sink(10);
        s.max_payload = 5;
        a.session.pump(a.generation, &mut s);
        assert_eq!(s.out.len(), 1);
        assert_eq!(big.acknowledged().await, Err(DeliveryError::TooLarge));
        assert_eq!(h.in_flight(), 1);
        drop(small);
    }

    #[tokio::test(start_paused = true)]
    async fn expiry_and_reaping() {
        let store = SessionStore::new(1, 10);
        let a = attach(&store, true, 10);
        let h = SessionHandle::new(a.session.clone());
        let mut ended = Vec::new();
        store.detach(&a.session, a.generation, &mut ended);
        let d = h
            .publish(msg("queued", QoS::AtLeastOnce))
            .await
            .expect("queued offline");
        assert_eq!(d.enqueued(), Enqueued::Offline);
        // Full store: another key is refused until the first session expires.
        let other = AttachParams {
            key: "other",
            client_id: "o".into(),
            clean_start: true,
            expiry: Duration::ZERO,
            window: 1,
        };
        assert!(store.attach(other, &mut ended).is_err());
        tokio::time::advance(Duration::from_secs(61)).await;
        store.reap(&mut ended);
        assert_eq!(ended.len(), 1);
        assert_eq!(ended[0].1, SessionEndReason::Expired);
        assert_eq!(d.acknowledged().await, Err(DeliveryError::SessionEnded));
        assert!(h.is_ended());
        assert_eq!(store.len(), 0);
    }
}
