//! [`SessionStore`]: all sessions of a server; the only place that creates, takes over, and
//! discards sessions.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytestring::ByteString;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::{lock, ConnSignal, Link, Session};
use crate::reason::{CloseReason, ReasonCode, SessionEndReason};

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
        let link = Link {
            generation,
            signal: signal.clone(),
            window: p.window,
            done: Some(done_rx),
        };
        let mut map = lock(&self.sessions);
        let (session, present, previous) = match map.get(p.key).cloned() {
            Some(existing) => self.take_over(&mut map, existing, p, link, now, ended),
            None => {
                if map.len() >= self.max_sessions {
                    Self::reap_locked(&mut map, now, ended);
                    if map.len() >= self.max_sessions {
                        return Err(StoreFull);
                    }
                }
                (self.insert(&mut map, p, link), false, None)
            }
        };
        Ok(Attached {
            session,
            generation,
            signal,
            present,
            previous,
            done: done_tx,
        })
    }

    /// Attaches to an existing session: resumes it, or replaces it (clean start, expired, or
    /// ended). A live connection is kicked either way; its teardown is returned to wait for.
    fn take_over(
        &self,
        map: &mut HashMap<Box<str>, Arc<Session>>,
        existing: Arc<Session>,
        p: AttachParams<'_>,
        link: Link,
        now: Instant,
        ended: &mut Ended,
    ) -> (Arc<Session>, bool, Option<oneshot::Receiver<()>>) {
        let mut inner = lock(&existing.inner);
        let expired = inner.expired(now);
        let previous = inner.link.take().and_then(|old| {
            old.signal.kick(CloseReason::TakenOver);
            old.done
        });
        if !p.clean_start && !expired && inner.ended.is_none() {
            inner.link = Some(link);
            inner.detached_at = None;
            inner.expiry = p.expiry;
            inner.client_id = p.client_id;
            inner.sent_unacked = 0;
            drop(inner);
            return (existing, true, previous);
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
        (self.insert(map, p, link), false, previous)
    }

    /// A new session for `p`, with `link` attached.
    fn insert(
        &self,
        map: &mut HashMap<Box<str>, Arc<Session>>,
        p: AttachParams<'_>,
        link: Link,
    ) -> Arc<Session> {
        let session = Arc::new(Session::new(p.key, p.client_id, p.expiry, self.queue_limit));
        lock(&session.inner).link = Some(link);
        map.insert(p.key.into(), session.clone());
        session
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
