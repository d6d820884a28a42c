//! [`SessionHandle`]: what the users of the crate hold to publish to a session's client and
//! look at its subscriptions, and why publishing can fail.

use std::sync::Arc;

use bytestring::ByteString;
use tokio::sync::TryAcquireError;

use super::{lock, Delivery, Session};
use crate::reason::{CloseReason, ReasonCode};
use crate::topic;
use crate::types::{OutboundMessage, QoS, Subscription};

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
    /// ([`Delivery::enqueued`] says [`Enqueued::Offline`](crate::Enqueued::Offline)) and resent with DUP after a
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
