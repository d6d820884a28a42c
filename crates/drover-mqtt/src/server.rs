//! The server object shared by all connections, and the entry points for listeners.

use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::MqttConfig;
use crate::policy::Policy;
use crate::session::{Ended, SessionHandle, SessionStore};
use crate::types::ConnectionInfo;

/// An MQTT server: a policy, settings, the sessions, and the connections being served.
///
/// Create it with [`MqttServer::new`] (inside a Tokio runtime: it starts the session reaper),
/// then hand connections to [`serve_connection`] or a listener to [`serve`](crate::serve)
/// ([`serve_tcp`](crate::serve_tcp), [`serve_tls`](crate::serve_tls)).
pub struct MqttServer<P: Policy> {
    policy: P,
    config: MqttConfig,
    pub(crate) sessions: SessionStore,
    pub(crate) shutdown: CancellationToken,
    pub(crate) tracker: TaskTracker,
}

impl<P: Policy> std::fmt::Debug for MqttServer<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MqttServer")
            .field("config", &self.config)
            .field("sessions", &self.sessions.len())
            .field("connections", &self.tracker.len())
            .finish_non_exhaustive()
    }
}

impl<P: Policy> MqttServer<P> {
    /// A server with `policy` and `config` (settings that cannot work are clamped; use
    /// [`MqttConfig::validate`] to report them). Starts a task that reaps expired sessions
    /// every [`MqttConfig::reap_interval`] when called inside a Tokio runtime; it stops when the
    /// server is dropped or shut down.
    pub fn new(policy: P, config: MqttConfig) -> Arc<Self> {
        let config = config.clamped();
        let server = Arc::new(MqttServer {
            sessions: SessionStore::new(config.max_sessions, config.session_queue_limit),
            policy,
            config,
            shutdown: CancellationToken::new(),
            tracker: TaskTracker::new(),
        });
        if tokio::runtime::Handle::try_current().is_ok() {
            tokio::spawn(reaper(
                Arc::downgrade(&server),
                server.config.reap_interval,
                server.shutdown.clone(),
            ));
        }
        server
    }

    /// The policy.
    pub fn policy(&self) -> &P {
        &self.policy
    }

    /// The effective settings.
    pub fn config(&self) -> &MqttConfig {
        &self.config
    }

    /// The session with this key, connected or not.
    pub fn session(&self, key: &str) -> Option<SessionHandle> {
        self.sessions.get(key).map(SessionHandle::new)
    }

    /// Number of sessions held.
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// Number of connections being served (plus wills waiting for their delay).
    pub fn connection_count(&self) -> usize {
        self.tracker.len()
    }

    /// Starts a graceful shutdown: listeners stop accepting, every connection sends MQTT 5
    /// clients DISCONNECT 0x8B (Server shutting down), flushes and closes. Wait for it with
    /// [`closed`](Self::closed).
    pub fn shutdown(&self) {
        self.shutdown.cancel();
    }

    /// Whether [`shutdown`](Self::shutdown) was called.
    pub fn is_shutting_down(&self) -> bool {
        self.shutdown.is_cancelled()
    }

    /// Resolves when [`shutdown`](Self::shutdown) is called; for accept loops of other listeners
    /// (TLS, WebSocket).
    pub async fn shutdown_requested(&self) {
        self.shutdown.cancelled().await;
    }

    /// Shuts down (if not yet), waits until every connection has finished, then discards all
    /// sessions (their pending deliveries fail, [`Policy::session_ended`] is called with
    /// `ServerShutdown`).
    pub async fn closed(&self) {
        self.shutdown();
        self.tracker.close();
        self.tracker.wait().await;
        let mut ended = Vec::new();
        self.sessions.clear(&mut ended);
        self.sessions_ended(ended).await;
    }

    /// Ends the session `key` now: its state is discarded ([`Policy::session_ended`] is called
    /// with [`SessionEndReason::Ended`](crate::SessionEndReason::Ended)) and its connection, if
    /// any, is closed (MQTT 5 clients get DISCONNECT with `reason`, e.g.
    /// [`ReasonCode::NOT_AUTHORIZED`](crate::ReasonCode::NOT_AUTHORIZED)). A client that connects
    /// again starts a new session. Returns whether the session existed.
    pub async fn end_session(&self, key: &str, reason: crate::ReasonCode) -> bool {
        let mut ended = Vec::new();
        let existed = self.sessions.end(key, reason, &mut ended);
        self.sessions_ended(ended).await;
        existed
    }

    /// Discards sessions whose expiry passed; returns how many. Runs periodically by itself.
    pub async fn reap_expired(&self) -> usize {
        let mut ended = Vec::new();
        self.sessions.reap(&mut ended);
        let n = ended.len();
        self.sessions_ended(ended).await;
        n
    }

    pub(crate) async fn sessions_ended(&self, ended: Ended) {
        for (session, reason) in ended {
            tracing::debug!(session = %session.key(), ?reason, "session ended");
            self.policy.session_ended(session.key(), reason).await;
        }
    }
}

async fn reaper<P: Policy>(
    server: Weak<MqttServer<P>>,
    every: Duration,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        let Some(server) = server.upgrade() else {
            return;
        };
        server.reap_expired().await;
    }
}

/// Serves one MQTT connection over any byte stream (TCP, TLS, WebSocket adapter) until it ends.
///
/// `peer` carries what the transport knows (address, TLS client certificate chain); it reaches
/// the policy in [`ConnectRequest::connection`](crate::ConnectRequest::connection). Returns at
/// once when the server is shutting down.
pub async fn serve_connection<P, IO>(io: IO, peer: ConnectionInfo, server: Arc<MqttServer<P>>)
where
    P: Policy,
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let _tracked = server.tracker.token();
    // Tracked before this check, so `closed` either waits for this connection or it returns.
    if server.is_shutting_down() {
        return;
    }
    crate::connection::run(io, peer, server).await;
}
