//! Session state: subscriptions and the outbound queue of one session key, outliving
//! connections for the session expiry interval.
//!
//! [`SessionStore`] (`store`) is the only place that creates, takes over, and discards
//! sessions; it is the seam where a later, cross-node store plugs in. `delivery` holds the
//! outbound queue and the QoS 1 in-flight window, `handle` the public [`SessionHandle`]. Locks:
//! the store's map lock is always taken before a session's lock; neither is ever held across an
//! `.await`.

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytestring::ByteString;
use tokio::sync::{oneshot, Notify, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::reason::{CloseReason, SessionEndReason};
use crate::types::Subscription;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
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
}

mod delivery;
mod handle;
mod store;
#[cfg(test)]
mod tests;

pub(crate) use delivery::{AckOutcome, Outgoing, Sink};
pub use delivery::{Delivery, DeliveryError, Enqueued};
use delivery::{InFlight, Queued};
pub use handle::{PublishError, SessionHandle, TryPublishError};
pub(crate) use store::{AttachParams, Attached, Ended, SessionStore};
