//! Outbound delivery: the session's queue, the QoS 1 in-flight window (packet ids,
//! redelivery with DUP after a reconnect, PUBACKs), message expiry, and the [`Delivery`]
//! receipts that resolve on PUBACK.

use std::num::NonZeroU16;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

use super::{lock, Inner, PublishError, Session};
use crate::reason::ReasonCode;
use crate::types::{OutboundMessage, QoS};

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

/// The receipt of a queued message, see [`SessionHandle::publish`](crate::SessionHandle::publish).
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

pub(super) struct Queued {
    msg: OutboundMessage,
    ack: Option<oneshot::Sender<AckResult>>,
    expires_at: Option<Instant>,
}

pub(super) struct InFlight {
    packet_id: NonZeroU16,
    msg: OutboundMessage,
    ack: Option<oneshot::Sender<AckResult>>,
    expires_at: Option<Instant>,
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

/// Deliveries that failed, told once the session's lock is released.
type Failed = Vec<(oneshot::Sender<AckResult>, DeliveryError)>;

impl Inner {
    /// Resends in-flight messages not yet sent on this connection (DUP after a reconnect), while
    /// the window and the sink allow.
    fn redeliver(&mut self, window: usize, now: Instant, sink: &mut dyn Sink, failed: &mut Failed) {
        while self.sent_unacked < self.inflight.len()
            && self.sent_unacked < window
            && sink.has_room()
        {
            let idx = self.sent_unacked;
            let entry = &self.inflight[idx];
            let out = Outgoing::Qos1 {
                msg: &entry.msg,
                packet_id: entry.packet_id,
                dup: true,
                expiry: remaining_secs(entry.expires_at, now),
            };
            if sink.emit(out) {
                self.sent_unacked += 1;
            } else if let Some(entry) = self.inflight.remove(idx) {
                failed.extend(entry.ack.map(|tx| (tx, DeliveryError::TooLarge)));
            }
        }
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

impl Session {
    /// Moves queued messages to the sink: first unsent in-flight messages (redelivery with
    /// DUP after a reconnect), then the queue, while the window and the sink allow.
    /// Returns `false` when `generation` is no longer attached.
    pub(crate) fn pump(&self, generation: u64, sink: &mut dyn Sink) -> bool {
        let now = Instant::now();
        let mut freed = 0;
        let mut failed: Failed = Vec::new();
        {
            let mut guard = lock(&self.inner);
            let inner = &mut *guard;
            let window = match &inner.link {
                Some(link) if link.generation == generation => link.window,
                _ => return false,
            };
            inner.redeliver(window, now, sink, &mut failed);
            // New messages, after the redeliveries.
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

    pub(super) fn enqueue(&self, msg: OutboundMessage) -> Result<Delivery, PublishError> {
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
