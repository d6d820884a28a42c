//! The MQTT integration: applications consume their devices' events over MQTT 3.1.1 and 5,
//! at least once, ordered per device, in shared groups. A second [`drover_mqtt::Policy`]
//! ([`IntegrationPolicy`]) on the session machinery the device endpoint uses, on its own listener.
//!
//! # Connecting
//!
//! User name and an access token of that user as the password; or, when single sign-on is
//! configured, a Bearer JWT as the password (a password with two dots is taken for a JWT; the
//! user is the token's, the user name field is not looked at). Bad credentials: CONNACK 0x86
//! (3.1.1: 4); registry or identity provider unavailable: 0x88 (3.1.1: 3).
//!
//! The session key is `<user>/<client id>` (the user percent-encoded), so one live connection per
//! client id *of a user*: a second connection with the same client id takes the session over;
//! another user's client with the same id is a different session.
//!
//! # Topics
//!
//! | SUBSCRIBE filter | delivers | topic of the messages |
//! |---|---|---|
//! | `app/<app>` (also `a/<app>`, `application/<app>`) | every event of the application | the filter |
//! | `app/<app>/<channel>` (extension) | the events of one channel (`subject`), e.g. `app/my-app/telemetry` | the filter |
//! | `$share/<group>/app/<app>[/<channel>]` | the group's share of the events (see below) | the filter without `$share/<group>/` |
//! | anything with `+` or `#` | refused: wildcards are not available (CONNACK says so); SUBACK 0xA2 (3.1.1: 0x80) | — |
//! | `command/...`, any other filter | refused: SUBACK 0x8F Topic Filter invalid (3.1.1: 0x80) | — |
//! | an application that does not exist *or that the user may not read* | refused, the same way for both: SUBACK 0x87 Not authorized (3.1.1: 0x80) | — |
//!
//! Reading an application needs the reader role (or more) on it. Granted QoS is the requested
//! one, at most 1. `a/<app>` and `app/<app>` in one shared group are the same group (the prefix is
//! an alias); a session that subscribes twice with the same filter keeps one subscription (an
//! unchanged re-subscription, as resuming clients send, changes nothing).
//!
//! # Commands
//!
//! A PUBLISH to `command/<app>/<device>/<command>` sends a command (the user needs the manager
//! role on the application); the PUBACK follows once it was handed to the device's connection
//! or queued. MQTT 5 user properties `ttl` (seconds: queue for an offline device) and `timeout`
//! (seconds, default 30) apply; with a Response Topic the device's reply is published there with
//! the request's Correlation Data and a user property `status`. Refusals: 0x90 for other topics
//! or bad names, 0x87 for applications/devices the user may not command, 0x97 for a full queue,
//! 0x80 for a device that cannot be reached (3.1.1: the connection closes); each is logged.
//!
//! # Content modes
//!
//! | mode | chosen by | payload | MQTT 5 properties |
//! |---|---|---|---|
//! | structured (default) | nothing, or SUBSCRIBE user property `content-mode: structured` | the JSON CloudEvent ([`crate::cloudevent::write_json`]; a JSON payload embedded as the device sent it) | content type `application/cloudevents+json`, payload format UTF-8 |
//! | binary (MQTT 5 only) | SUBSCRIBE user property `content-mode: binary` | the event's data | content type = `datacontenttype`; every other attribute and extension a user property named exactly like it (`specversion`, `id`, `type`, `source`, `subject`, `time`, `dataschema`, `application`, `device`, `sender`, `instance`, `partitionkey`, …), as the CloudEvents MQTT binding prescribes |
//!
//! Any other `content-mode` value refuses the SUBSCRIBE's filters with 0x83.
//!
//! # Delivery
//!
//! One dispatcher task per consumer group reads the application's durable stream and hands
//! events to the members' MQTT sessions; the session layer's in-flight window (the client's
//! Receive Maximum, capped by [`IntegrationSettings::inflight_window`]; MQTT 3.1.1 gets the cap)
//! and its bounded queue are the flow control. The groups:
//!
//! * a non-shared subscription of a **persistent session** (3.1.1 CleanSession = 0, or MQTT 5
//!   Session Expiry Interval > 0) is its own durable group `mqtt:<user>/<client id>/<filter>`;
//!   it starts live at its first subscription and from then on resumes where it left off;
//! * a non-shared subscription of a **clean session** reads live and commits nothing;
//! * a **shared subscription** `$share/<g>/app/<app>[/<channel>]` is the durable group
//!   `mqtt-share:<app>:<g>[/<channel>]` of all its subscribers (of any user who may read the
//!   application), on this node; it too starts live when first created.
//!
//! Within a shared group every device's events go to one *connected* member at a time, chosen
//! by rendezvous hashing of the device name over the connected members: per-device order holds
//! within each member, and a membership change moves only the devices of the member that came
//! or went.
//!
//! | guarantee | QoS 1 subscription | QoS 0 subscription |
//! |---|---|---|
//! | delivery | at least once: a group's offset is committed only up to the oldest event not yet acknowledged (PUBACK) — the contiguous acknowledged prefix | at most once: committed when handed to the session |
//! | order | the stream's order per device, in every member (events of different devices may interleave differently in different members) | the same, with gaps possible |
//! | connection lost, persistent session resumed (same client id, within the session expiry) | the session resends every unacknowledged message (DUP) in order, then continues; nothing is read ahead meanwhile | what was not sent is lost |
//! | session gone (expired, clean start, unsubscribed, server restart), same persistent client subscribes again | resumes after the committed offset: every event not acknowledged is delivered again, in order, no gap | resumes after the last event handed out |
//! | clean session | live events from the SUBACK on; nothing is kept when it ends | the same |
//! | shared group member joins, leaves, connects or disconnects | the moved devices' unacknowledged events are handed to their new member, in order, before anything newer — the old member may have received (and may still receive, from its session) the same events: duplicates are possible, losses are not | moved devices continue at the new member |
//! | server restart | committed offsets survive (the event log writes them at least every second and on close); everything after them is delivered again | — |
//! | slow consumer | lags on the durable log: never slows ingestion or other consumers; a group more than [`IntegrationSettings::max_lag`] events behind that does not catch up between two checks has the member it waits for disconnected (MQTT 5 DISCONNECT 0x97 Quota exceeded, logged) | the same |
//! | application deleted | delivery stops (logged); the subscription stays in the session but gets nothing | the same |
//!
//! A consumer that was disconnected for lag and comes back is not disconnected again as long
//! as it catches up (its lag shrinks from one check to the next), however far behind it is.
//!
//! On a cluster ([`IntegrationPolicy::with_group_peers`]) durable groups span the nodes that
//! have online members: the devices are split between the nodes, and a change of nodes
//! rewinds to the committed offset (see [`drover_bus::groups`]). Sessions are in memory (a
//! server restart ends them, clients subscribe again and resume from the committed offsets).

use crate::commands::{CommandRequest, CommandService, SendError};
use drover_bus::commands::CommandError;

mod dispatch;
mod message;
mod topic;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use drover_auth::user::{AuthenticatedUser, UserAuthError, UserAuthenticator, UserCredential};
use drover_bus::{EventLog, StreamKey};
use drover_model::names::encode_segment;
use drover_model::Principal;
use drover_mqtt::{
    Accepted, ByteString, CloseReason, ConnectRequest, Inbound, MqttConfig, MqttServer, Policy,
    ProtocolVersion, PublishRefusal, QoS, Refusal, SessionEndReason, SessionHandle,
    SubscribeRefusal, SubscribeRequest, Subscription, SubscriptionRequest,
};
use drover_registry::{AccessReader, RegistryError};

use crate::access::{AccessCheck, CheckError};
use crate::limits::{ConnectionSlot, UserConnections};

use self::dispatch::{lock, Group, Member, Tuning};
pub use self::message::{ContentMode, STRUCTURED_CONTENT_TYPE};
use self::topic::FilterError;

/// Settings of the MQTT integration.
#[derive(Debug, Clone)]
pub struct IntegrationSettings {
    /// A consumer group more than this many events behind the end of its application's stream
    /// that did not catch up since the previous check has the member it waits for
    /// disconnected (0: never). Default 10 000.
    pub max_lag: u64,
    /// How often the lag is checked. Default 1 s.
    pub lag_check_interval: Duration,
    /// QoS 1 messages in flight per MQTT 3.1.1 subscriber, and the cap on an MQTT 5
    /// subscriber's Receive Maximum (applied by [`IntegrationPolicy::mqtt_config`]). Default 64.
    pub inflight_window: u16,
    /// Events a consumer reads from the log at once. Default 100.
    pub read_batch: usize,
}

impl Default for IntegrationSettings {
    fn default() -> Self {
        IntegrationSettings {
            max_lag: 10_000,
            lag_check_interval: Duration::from_secs(1),
            inflight_window: 64,
            read_batch: 100,
        }
    }
}

/// An authenticated integration client: the identity of its connection.
#[derive(Debug)]
pub struct IntegrationClient {
    /// The user.
    pub principal: Principal,
    /// How the user authenticated (checked again when access changes).
    user: AuthenticatedUser,
    /// The user's connection slot, freed with the connection.
    _slot: Option<ConnectionSlot>,
    /// The MQTT client identifier.
    pub client_id: ByteString,
    /// `<user>/<client id>`, the user percent-encoded.
    pub session_key: String,
    /// Whether the session outlives the connection (3.1.1 CleanSession = 0, MQTT 5 Session
    /// Expiry Interval > 0): its non-shared subscriptions are durable groups.
    pub persistent: bool,
    /// Protocol version.
    pub protocol: ProtocolVersion,
    /// The session, once connected (replies to commands are published to it).
    session: std::sync::OnceLock<SessionHandle>,
}

/// A subscription, as a session holds it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct SubKey {
    share_group: Option<ByteString>,
    filter: ByteString,
}

/// A shared group on this node.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct SharedKey {
    app_uid: String,
    group: String,
    channel: Option<String>,
}

struct SubEntry {
    group: Arc<Group>,
    member: u64,
    shared: Option<SharedKey>,
    qos: QoS,
    mode: ContentMode,
    app_uid: String,
    /// The application's name (its access is checked again when access changes).
    app: String,
}

struct SessionSubs {
    handle: SessionHandle,
    subs: HashMap<SubKey, SubEntry>,
}

#[derive(Default)]
struct State {
    sessions: HashMap<String, SessionSubs>,
    shared: HashMap<SharedKey, Arc<Group>>,
    /// Who each session belongs to (set when a connection is established, dropped when the
    /// session ends): checked again when access changes.
    users: HashMap<String, (AuthenticatedUser, SessionHandle)>,
}

/// Removes a member from its group; a group left empty is removed and queued for stopping.
fn leave(
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
fn session_subs<'a>(
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

async fn stop_all(groups: Vec<Arc<Group>>) {
    for g in groups {
        g.stop().await;
    }
}

/// The MQTT integration's policy (see the [module docs](self)).
pub struct IntegrationPolicy {
    registry: Arc<dyn AccessReader>,
    users: Arc<UserAuthenticator>,
    access: AccessCheck,
    connections: Option<Arc<UserConnections>>,
    log: Arc<dyn EventLog>,
    settings: IntegrationSettings,
    state: Mutex<State>,
    next_member: AtomicU64,
    commands: Option<Arc<CommandService>>,
    group_peers: Option<Arc<dyn drover_bus::groups::GroupPeers>>,
}

impl std::fmt::Debug for IntegrationPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IntegrationPolicy")
            .field("settings", &self.settings)
            .field("users", &self.users)
            .finish_non_exhaustive()
    }
}

impl IntegrationPolicy {
    /// A policy that authenticates users with `users`, authorizes them against `registry` and
    /// delivers from `log`.
    pub fn new(
        registry: Arc<dyn AccessReader>,
        users: Arc<UserAuthenticator>,
        log: Arc<dyn EventLog>,
        settings: IntegrationSettings,
    ) -> Self {
        IntegrationPolicy {
            access: AccessCheck::new(users.clone(), registry.clone()),
            registry,
            users,
            connections: None,
            log,
            settings,
            state: Mutex::new(State::default()),
            next_member: AtomicU64::new(1),
            commands: None,
            group_peers: None,
        }
    }

    /// On a cluster: durable groups (shared groups, persistent sessions' subscriptions) split
    /// their work with the other nodes that run them (see [`drover_bus::groups`]).
    pub fn with_group_peers(mut self, peers: Arc<dyn drover_bus::groups::GroupPeers>) -> Self {
        self.group_peers = Some(peers);
        self
    }

    /// Counts each user's connections against `limits` (shared with the WebSocket integration):
    /// a CONNECT over the limit is refused with 0x97 Quota exceeded (3.1.1: 3).
    pub fn with_user_connections(mut self, limits: Arc<UserConnections>) -> Self {
        self.connections = Some(limits);
        self
    }

    /// Lets integration clients send commands: PUBLISH to `command/<app>/<device>/<command>`
    /// (MQTT 5: with a response topic, the device's reply comes back there).
    pub fn with_commands(mut self, service: Arc<CommandService>) -> Self {
        self.commands = Some(service);
        self
    }

    /// The settings.
    pub fn settings(&self) -> &IntegrationSettings {
        &self.settings
    }

    /// `config` as the integration needs it: the in-flight window from the settings, wildcard
    /// subscriptions unavailable, shared subscriptions available.
    pub fn mqtt_config(&self, mut config: MqttConfig) -> MqttConfig {
        config.outbound_window = self.settings.inflight_window.max(1);
        config.wildcard_subscriptions = false;
        config.shared_subscriptions = true;
        config
    }

    /// The MQTT server of this policy, with [`mqtt_config`](Self::mqtt_config) applied to
    /// `config`. Serve it with [`drover_mqtt::serve_tcp`] or [`serve_tls`]; its shutdown
    /// ([`MqttServer::closed`]) stops every consumer after committing what was acknowledged.
    pub fn into_server(self, config: MqttConfig) -> Arc<MqttServer<Self>> {
        let config = self.mqtt_config(config);
        let server = MqttServer::new(self, config);
        if tokio::runtime::Handle::try_current().is_ok() {
            tokio::spawn(watch_access(Arc::downgrade(&server)));
        }
        server
    }

    /// How many consumer groups are delivering.
    pub fn active_consumers(&self) -> usize {
        let st = lock(&self.state);
        let mut seen: Vec<*const Group> = st
            .sessions
            .values()
            .flat_map(|s| s.subs.values())
            .filter(|e| !e.group.is_finished())
            .map(|e| Arc::as_ptr(&e.group))
            .collect();
        seen.sort();
        seen.dedup();
        seen.len()
    }

    fn tuning(&self) -> Tuning {
        Tuning {
            max_lag: self.settings.max_lag,
            lag_check_interval: if self.settings.lag_check_interval.is_zero() {
                Duration::from_secs(1)
            } else {
                self.settings.lag_check_interval
            },
            read_batch: self.settings.read_batch.max(1),
        }
    }

    async fn authenticate(&self, req: &ConnectRequest) -> Result<AuthenticatedUser, Refusal> {
        let peer = req.connection.peer_addr;
        let client_id = &req.client_id;
        let Some(password) = req.password.as_ref() else {
            tracing::info!(%peer, %client_id, "MQTT integration: CONNECT refused: no password (send the user name and an access token, or a bearer token as the password)");
            return Err(Refusal::BadCredentials);
        };
        let Ok(password) = std::str::from_utf8(password) else {
            tracing::info!(%peer, %client_id, "MQTT integration: CONNECT refused: the password is not UTF-8");
            return Err(Refusal::BadCredentials);
        };
        let credential = if self.users.single_sign_on() && password.matches('.').count() == 2 {
            UserCredential::Bearer(password.to_string())
        } else {
            let Some(user) = req.username.as_deref().filter(|u| !u.is_empty()) else {
                tracing::info!(%peer, %client_id, "MQTT integration: CONNECT refused: no user name (send the user name and an access token)");
                return Err(Refusal::BadCredentials);
            };
            UserCredential::Token {
                user: user.to_string(),
                token: password.to_string(),
            }
        };
        match self.users.authenticate(&credential, peer.ip()).await {
            Ok(user) => Ok(user),
            Err(UserAuthError::Unavailable(e)) => {
                tracing::warn!(%peer, %client_id, "MQTT integration: CONNECT refused: {e}");
                Err(Refusal::ServerUnavailable)
            }
            Err(e) => {
                if let Some(held_back) = self.users.throttle().admit_log() {
                    tracing::info!(%peer, %client_id, ?credential, held_back, "MQTT integration: CONNECT refused: {e}");
                }
                Err(match e {
                    UserAuthError::Throttled(_) => Refusal::ConnectionRateExceeded,
                    _ => Refusal::BadCredentials,
                })
            }
        }
    }

    /// Checks every session's access again; ends those that lost it (their clients get
    /// DISCONNECT 0x87 Not authorized and start a new session when they come back). Returns
    /// whether some check could not be answered (to try again shortly).
    async fn recheck_sessions(&self, server: &MqttServer<Self>) -> bool {
        let sessions: Vec<(String, AuthenticatedUser, Vec<String>)> = {
            let st = lock(&self.state);
            st.users
                .iter()
                .map(|(key, (user, _))| {
                    let mut apps: Vec<String> = st
                        .sessions
                        .get(key)
                        .map(|s| s.subs.values().map(|e| e.app.clone()).collect())
                        .unwrap_or_default();
                    apps.sort();
                    apps.dedup();
                    (key.clone(), user.clone(), apps)
                })
                .collect()
        };
        let mut principals: HashMap<String, Result<Principal, CheckError>> = HashMap::new();
        let mut unanswered = false;
        for (key, user, apps) in sessions {
            let id = format!("{user:?}");
            let principal = match principals.get(&id) {
                Some(p) => p.clone(),
                None => {
                    let p = self.access.principal(&user).await;
                    principals.insert(id, p.clone());
                    p
                }
            };
            let verdict = match principal {
                Ok(p) => {
                    let mut verdict = Ok(());
                    for app in &apps {
                        verdict = self.access.may_read(&p, app).await;
                        if verdict.is_err() {
                            break;
                        }
                    }
                    verdict
                }
                Err(e) => Err(e),
            };
            match verdict {
                Ok(()) => {}
                Err(CheckError::Unanswered(e)) => {
                    tracing::warn!(session = %key, "MQTT integration: {e}; checking again shortly");
                    unanswered = true;
                }
                Err(CheckError::Revoked(r)) => {
                    tracing::info!(session = %key, user = user.name(), "MQTT integration: ending the session: {r}");
                    server
                        .end_session(&key, drover_mqtt::ReasonCode::NOT_AUTHORIZED)
                        .await;
                }
            }
        }
        unanswered
    }

    async fn subscribe_one(
        &self,
        client: &IntegrationClient,
        session: &SessionHandle,
        f: &SubscriptionRequest,
        mode: ContentMode,
        apps: &mut HashMap<String, Result<drover_model::Resource, RegistryError>>,
    ) -> Result<QoS, SubscribeRefusal> {
        let user = client.principal.name();
        let client_id = &client.client_id;
        let shown = match &f.share_group {
            Some(g) => format!("$share/{g}/{}", f.filter),
            None => f.filter.to_string(),
        };
        let target = topic::parse(&f.filter).map_err(|e| match e {
            FilterError::Wildcard => {
                tracing::info!(user, %client_id, filter = %shown, "MQTT integration: subscription refused: wildcards are not supported; subscribe to app/<application>[/<channel>]");
                SubscribeRefusal::WildcardsNotSupported
            }
            FilterError::Foreign(why) => {
                tracing::info!(user, %client_id, filter = %shown, "MQTT integration: subscription refused: {why}");
                SubscribeRefusal::TopicFilterInvalid
            }
        })?;
        let looked_up = match apps.get(&target.app) {
            Some(answer) => answer.clone(),
            None => {
                let answer = self.registry.get_app(&client.principal, &target.app).await;
                apps.insert(target.app.clone(), answer.clone());
                answer
            }
        };
        let app = match looked_up {
            Ok(app) => app,
            Err(e @ (RegistryError::Unavailable(_) | RegistryError::Internal(_))) => {
                tracing::warn!(user, %client_id, filter = %shown, "MQTT integration: subscription refused: registry unavailable: {e}");
                return Err(SubscribeRefusal::ImplementationSpecific);
            }
            Err(e) => {
                // Not there, or not readable by this user: the same answer for both.
                tracing::info!(user, %client_id, filter = %shown, "MQTT integration: subscription refused: application '{}' does not exist or the user may not read it ({e})", target.app);
                return Err(SubscribeRefusal::NotAuthorized);
            }
        };
        let qos = f.options.qos.min(QoS::AtLeastOnce);
        let stream = StreamKey::new(app.metadata.name.clone(), app.metadata.uid.clone());
        let key = SubKey {
            share_group: f.share_group.clone(),
            filter: f.filter.clone(),
        };
        let shared_key = f.share_group.as_ref().map(|g| SharedKey {
            app_uid: stream.app_uid.clone(),
            group: g.to_string(),
            channel: target.channel.clone(),
        });

        // An unchanged re-subscription (a resuming client) keeps its consumer.
        let mut to_stop = Vec::new();
        let unchanged = {
            let mut guard = lock(&self.state);
            let st = &mut *guard;
            let subs = session_subs(&mut st.sessions, &mut st.shared, session, &mut to_stop);
            subs.subs.get(&key).is_some_and(|e| {
                e.qos == qos
                    && e.mode == mode
                    && e.app_uid == stream.app_uid
                    && !e.group.is_finished()
            })
        };
        stop_all(to_stop).await;
        if unchanged {
            tracing::debug!(user, %client_id, filter = %shown, "MQTT integration: unchanged re-subscription");
            return Ok(qos);
        }

        // Open a consumer, unless there is a shared group to join.
        let join_existing = shared_key.as_ref().is_some_and(|k| {
            lock(&self.state)
                .shared
                .get(k)
                .is_some_and(|g| !g.is_finished())
        });
        let opened = if join_existing {
            None
        } else {
            let (durable, label) = match &shared_key {
                Some(k) => (
                    Some(topic::shared_group(
                        &app.metadata.name,
                        &k.group,
                        k.channel.as_deref(),
                    )),
                    shown.clone(),
                ),
                None => (
                    client
                        .persistent
                        .then(|| topic::personal_group(session.key(), &f.filter)),
                    format!("{} {}", session.key(), f.filter),
                ),
            };
            let link = match (&self.group_peers, &durable) {
                (Some(peers), Some(name)) => Some(peers.join(&stream, name)),
                _ => None,
            };
            match dispatch::open(
                self.log.clone(),
                stream.clone(),
                durable,
                target.channel.clone(),
                self.tuning(),
                label,
                link,
            )
            .await
            {
                Ok(opened) => Some(opened),
                Err(e) => {
                    tracing::warn!(user, %client_id, filter = %shown, "MQTT integration: subscription refused: cannot open the application's stream: {e}");
                    return Err(SubscribeRefusal::ImplementationSpecific);
                }
            }
        };

        let member = Member {
            session: session.clone(),
            rank_key: format!("{}\u{0}{}", session.key(), f.filter),
            topic: f.filter.clone(),
            qos,
            mode,
            online: session.is_connected(),
        };
        let mut to_stop = Vec::new();
        let installed = {
            let mut guard = lock(&self.state);
            let st = &mut *guard;
            let subs = session_subs(&mut st.sessions, &mut st.shared, session, &mut to_stop);
            if let Some(old) = subs.subs.remove(&key) {
                leave(&mut st.shared, old, &mut to_stop);
            }
            let group = match &shared_key {
                Some(k) => match st.shared.get(k).filter(|g| !g.is_finished()) {
                    Some(g) => Some(g.clone()),
                    None => opened.map(|o| {
                        let g = o.start();
                        st.shared.insert(k.clone(), g.clone());
                        g
                    }),
                },
                None => opened.map(dispatch::Opened::start),
            };
            group.map(|group| {
                let id = self.next_member.fetch_add(1, Ordering::Relaxed);
                group.add(id, member);
                subs.subs.insert(
                    key,
                    SubEntry {
                        group,
                        member: id,
                        shared: shared_key,
                        qos,
                        mode,
                        app_uid: stream.app_uid.clone(),
                        app: app.metadata.name.clone(),
                    },
                );
            })
        };
        stop_all(to_stop).await;
        match installed {
            Some(()) => {
                tracing::info!(user, %client_id, filter = %shown, qos = qos.level(), ?mode, persistent = client.persistent, "MQTT integration: subscribed");
                Ok(qos)
            }
            None => {
                // The shared group's stream ended between looking and joining.
                tracing::info!(user, %client_id, filter = %shown, "MQTT integration: subscription refused: the application's stream ended");
                Err(SubscribeRefusal::ImplementationSpecific)
            }
        }
    }

    /// Tells the session's groups whether it has a connection now. Asks the session rather
    /// than trusting the callback, so a late `disconnected` of a taken-over connection cannot
    /// mark the new connection's session offline.
    fn refresh_online(&self, session_key: &str) {
        let st = lock(&self.state);
        if let Some(subs) = st.sessions.get(session_key) {
            let online = subs.handle.is_connected();
            for entry in subs.subs.values() {
                entry.group.set_online(entry.member, online);
            }
        }
    }
}

impl Policy for IntegrationPolicy {
    type Identity = Arc<IntegrationClient>;

    async fn connect(&self, req: &ConnectRequest) -> Result<Accepted<Self::Identity>, Refusal> {
        let user = self.authenticate(req).await?;
        let principal = user.principal.clone();
        let slot = match &self.connections {
            Some(limits) => match limits.acquire(principal.name()) {
                Ok(slot) => Some(slot),
                Err(e) => {
                    tracing::info!(peer = %req.connection.peer_addr, client_id = %req.client_id, "MQTT integration: CONNECT refused: {e}");
                    return Err(Refusal::QuotaExceeded);
                }
            },
            None => None,
        };
        let session_key = format!("{}/{}", encode_segment(principal.name()), req.client_id);
        tracing::debug!(peer = %req.connection.peer_addr, client_id = %req.client_id, user = principal.name(), "MQTT integration: client authenticated");
        let client = IntegrationClient {
            principal,
            user,
            _slot: slot,
            client_id: req.client_id.clone(),
            session_key: session_key.clone(),
            persistent: !req.session_expiry.is_zero(),
            protocol: req.protocol,
            session: std::sync::OnceLock::new(),
        };
        Ok(Accepted::new(Arc::new(client), session_key)
            .wildcard_subscriptions(false)
            .shared_subscriptions(true))
    }

    async fn connected(&self, client: &Self::Identity, session: &SessionHandle, present: bool) {
        tracing::debug!(user = client.principal.name(), client_id = %client.client_id, present, "MQTT integration: client connected");
        lock(&self.state).users.insert(
            session.key().to_string(),
            (client.user.clone(), session.clone()),
        );
        self.refresh_online(session.key());
        let _ = client.session.set(session.clone());
    }

    async fn publish(&self, client: &Self::Identity, msg: Inbound) -> Result<(), PublishRefusal> {
        let refuse = |why: &str, r: PublishRefusal| {
            tracing::info!(user = client.principal.name(), client_id = %client.client_id, topic = %msg.topic, "MQTT integration: PUBLISH refused: {why}");
            Err(r)
        };
        let Some(service) = &self.commands else {
            return refuse("commands are not available", PublishRefusal::NotAuthorized);
        };
        let Some((app, rest)) = msg
            .topic
            .strip_prefix("command/")
            .and_then(|r| r.split_once('/'))
        else {
            return refuse(
                "integration clients publish only commands, to command/<app>/<device>/<command>",
                PublishRefusal::TopicNameInvalid,
            );
        };
        let Some((device, name)) = rest.rsplit_once('/') else {
            return refuse(
                "expected command/<app>/<device>/<command>",
                PublishRefusal::TopicNameInvalid,
            );
        };
        let prop = |k: &str| msg.properties.user_property(k)?.parse::<u64>().ok();
        let response_topic = msg.properties.response_topic.clone();
        let timeout = response_topic
            .as_ref()
            .map(|_| std::time::Duration::from_secs(prop("timeout").unwrap_or(30)));
        let request = CommandRequest {
            app: app.to_string(),
            device: device.to_string(),
            name: name.to_string(),
            payload: msg.payload.clone(),
            content_type: msg.properties.content_type.as_ref().map(|c| c.to_string()),
            timeout,
            ttl: prop("ttl").map(std::time::Duration::from_secs),
        };
        let sent = match service.send(&client.principal, request).await {
            Ok(s) => s,
            Err(e) => {
                let code = match &e {
                    SendError::Invalid(_) => PublishRefusal::TopicNameInvalid,
                    SendError::Routing(CommandError::QueueFull(..)) => {
                        PublishRefusal::QuotaExceeded
                    }
                    SendError::Routing(CommandError::Unreachable(_)) => PublishRefusal::Unspecified,
                    SendError::Routing(_) | SendError::External(_) => {
                        PublishRefusal::ImplementationSpecific
                    }
                    _ => PublishRefusal::NotAuthorized,
                };
                return refuse(&format!("command not sent: {e}"), code);
            }
        };
        // MQTT 5: the reply goes to the response topic, with the correlation data.
        if let (Some(topic), Some(timeout), Some(session)) =
            (response_topic, timeout, client.session.get().cloned())
        {
            let service = service.clone();
            let correlation = msg.properties.correlation_data.clone();
            tokio::spawn(async move {
                let (status, payload, content_type) = match service.wait(sent, timeout).await {
                    Some(r) => (r.status, r.payload, r.content_type),
                    None => (
                        504,
                        bytes::Bytes::from_static(b"no reply from the device in time"),
                        Some("text/plain".into()),
                    ),
                };
                let props = drover_mqtt::MessageProperties {
                    correlation_data: correlation,
                    content_type: content_type.map(Into::into),
                    user_properties: vec![("status".into(), status.to_string().into())],
                    ..Default::default()
                };
                let reply = drover_mqtt::OutboundMessage::new(topic, payload, QoS::AtLeastOnce)
                    .with_properties(props);
                if let Err(e) = session.publish(reply).await {
                    tracing::info!("cannot deliver a command reply to the integration client: {e}");
                }
            });
        }
        Ok(())
    }

    async fn subscribe(
        &self,
        client: &Self::Identity,
        session: &SessionHandle,
        req: &SubscribeRequest,
    ) -> Vec<Result<QoS, SubscribeRefusal>> {
        let mode = match ContentMode::from_user_properties(&req.user_properties) {
            Ok(mode) => mode,
            Err(value) => {
                tracing::info!(user = client.principal.name(), client_id = %client.client_id, "MQTT integration: subscription refused: unknown content-mode '{value}' (use 'binary' or 'structured')");
                return vec![Err(SubscribeRefusal::ImplementationSpecific); req.filters.len()];
            }
        };
        // Each application is looked up once per SUBSCRIBE, however many filters name it (and
        // the filters are few: the session layer caps them, see `MqttConfig`).
        let mut apps = HashMap::new();
        let mut results = Vec::with_capacity(req.filters.len());
        for f in &req.filters {
            results.push(
                self.subscribe_one(client, session, f, mode, &mut apps)
                    .await,
            );
        }
        results
    }

    async fn unsubscribed(
        &self,
        client: &Self::Identity,
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

    async fn disconnected(&self, client: &Self::Identity, reason: &CloseReason) {
        tracing::debug!(user = client.principal.name(), client_id = %client.client_id, %reason, "MQTT integration: client disconnected");
        self.refresh_online(&client.session_key);
    }

    async fn session_ended(&self, session_key: &str, reason: SessionEndReason) {
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

/// Follows the registry's access changes and ends the sessions whose user lost access (see
/// [`IntegrationPolicy::recheck_sessions`]); stops with the server.
async fn watch_access(server: std::sync::Weak<MqttServer<IntegrationPolicy>>) {
    let mut changes = match server.upgrade() {
        Some(s) => s.policy().access.changes(),
        None => return,
    };
    changes.mark_unchanged();
    loop {
        if changes.changed().await.is_err() {
            return;
        }
        loop {
            let Some(server) = server.upgrade() else {
                return;
            };
            if server.is_shutting_down() {
                return;
            }
            if !server.policy().recheck_sessions(&server).await {
                break;
            }
            drop(server);
            tokio::time::sleep(drover_auth::user::RECHECK_RETRY).await;
        }
    }
}
