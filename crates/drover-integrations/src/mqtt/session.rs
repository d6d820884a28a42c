//! Session state: the subscriptions of each session on this node, the shared groups they
//! belong to, and the users the sessions belong to.

use std::collections::HashMap;
use std::sync::Arc;

use drover_auth::user::AuthenticatedUser;
use drover_mqtt::{ByteString, QoS, SessionEndReason, SessionHandle, Subscription};

use super::dispatch::{lock, Group};
use super::{ContentMode, IntegrationClient, IntegrationPolicy};

/// A subscription, as a session holds it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct SubKey {
    pub(super) share_group: Option<ByteString>,
    pub(super) filter: ByteString,
}

/// A shared group on this node.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct SharedKey {
    pub(super) app_uid: String,
    pub(super) group: String,
    pub(super) channel: Option<String>,
}

/// A subscription of a session: its membership in a group.
pub(super) struct SubEntry {
    pub(super) group: Arc<Group>,
    pub(super) member: u64,
    pub(super) shared: Option<SharedKey>,
    pub(super) qos: QoS,
    pub(super) mode: ContentMode,
    pub(super) app_uid: String,
    /// The application's name (its access is checked again when access changes).
    pub(super) app: String,
}

/// The subscriptions of one session.
pub(super) struct SessionSubs {
    pub(super) handle: SessionHandle,
    pub(super) subs: HashMap<SubKey, SubEntry>,
}

/// The integration's sessions on this node, by session key, and its shared groups.
#[derive(Default)]
pub(super) struct State {
    pub(super) sessions: HashMap<String, SessionSubs>,
    pub(super) shared: HashMap<SharedKey, Arc<Group>>,
    /// Who each session belongs to (set when a connection is established, dropped when the
    /// session ends): checked again when access changes.
    pub(super) users: HashMap<String, (AuthenticatedUser, SessionHandle)>,
}

/// Removes a member from its group; a group left empty is removed and queued for stopping.
pub(super) fn leave(
    shared: &mut HashMap<SharedKey, Arc<Group>>,
    entry: SubEntry,
    to_stop: &mut Vec<Arc<Group>>,
) {
    if entry.group.remove(entry.member) == 0 {
        if let Some(key) = &entry.shared {
            if shared
                .get(key)
                .is_some_and(|g| Arc::ptr_eq(g, &entry.group))
            {
                shared.remove(key);
            }
        }
        to_stop.push(entry.group);
    }
}

/// The subscriptions of `session`, discarding those of an ended session with the same key.
pub(super) fn session_subs<'a>(
    sessions: &'a mut HashMap<String, SessionSubs>,
    shared: &mut HashMap<SharedKey, Arc<Group>>,
    session: &SessionHandle,
    to_stop: &mut Vec<Arc<Group>>,
) -> &'a mut SessionSubs {
    let subs = sessions
        .entry(session.key().to_string())
        .or_insert_with(|| SessionSubs {
            handle: session.clone(),
            subs: HashMap::new(),
        });
    if subs.handle.is_ended() {
        subs.handle = session.clone();
        for (_, entry) in subs.subs.drain() {
            leave(shared, entry, to_stop);
        }
    }
    subs
}

/// Stops the groups (after committing what was acknowledged).
pub(super) async fn stop_all(groups: Vec<Arc<Group>>) {
    for g in groups {
        g.stop().await;
    }
}

impl IntegrationPolicy {
    /// Records who the session belongs to (checked again when access changes) and that it has
    /// a connection now.
    pub(super) fn session_connected(&self, client: &IntegrationClient, session: &SessionHandle) {
        lock(&self.state).users.insert(
            session.key().to_string(),
            (client.user.clone(), session.clone()),
        );
        self.refresh_online(session.key());
    }

    /// Tells the session's groups whether it has a connection now. Asks the session rather
    /// than trusting the callback, so a late `disconnected` of a taken-over connection cannot
    /// mark the new connection's session offline.
    pub(super) fn refresh_online(&self, session_key: &str) {
        let st = lock(&self.state);
        if let Some(subs) = st.sessions.get(session_key) {
            let online = subs.handle.is_connected();
            for entry in subs.subs.values() {
                entry.group.set_online(entry.member, online);
            }
        }
    }

    /// Removes the session's subscriptions that the client unsubscribed.
    pub(super) async fn unsubscribe(
        &self,
        client: &IntegrationClient,
        session: &SessionHandle,
        removed: &[Subscription],
    ) {
        let mut to_stop = Vec::new();
        {
            let mut guard = lock(&self.state);
            let st = &mut *guard;
            if let Some(subs) = st.sessions.get_mut(session.key()) {
                for s in removed {
                    let key = SubKey {
                        share_group: s.share_group.clone(),
                        filter: s.filter.clone(),
                    };
                    if let Some(entry) = subs.subs.remove(&key) {
                        tracing::info!(user = client.principal.name(), client_id = %client.client_id, filter = %s.filter, group = ?s.share_group, "MQTT integration: unsubscribed");
                        leave(&mut st.shared, entry, &mut to_stop);
                    }
                }
            }
        }
        stop_all(to_stop).await;
    }

    /// Forgets an ended session and stops its groups that are left without members.
    pub(super) async fn end_session(&self, session_key: &str, reason: SessionEndReason) {
        let mut to_stop = Vec::new();
        {
            let mut guard = lock(&self.state);
            let st = &mut *guard;
            if st
                .users
                .get(session_key)
                .is_some_and(|(_, handle)| handle.is_ended())
            {
                st.users.remove(session_key);
            }
            let ended = st
                .sessions
                .get(session_key)
                .is_some_and(|s| s.handle.is_ended());
            if ended {
                if let Some(mut subs) = st.sessions.remove(session_key) {
                    for (_, entry) in subs.subs.drain() {
                        leave(&mut st.shared, entry, &mut to_stop);
                    }
                }
            }
        }
        if !to_stop.is_empty() {
            tracing::debug!(
                session = session_key,
                ?reason,
                consumers = to_stop.len(),
                "MQTT integration: session ended; stopping its consumers"
            );
        }
        stop_all(to_stop).await;
    }
}
