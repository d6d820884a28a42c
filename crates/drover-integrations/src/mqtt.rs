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

mod commands;
mod connect;
mod dispatch;
mod message;
mod recheck;
mod session;
mod subscribe;
mod topic;

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use drover_auth::user::{AuthenticatedUser, UserAuthenticator};
use drover_bus::EventLog;
use drover_model::Principal;
use drover_mqtt::{
    Accepted, ByteString, CloseReason, ConnectRequest, Inbound, MqttConfig, MqttServer, Policy,
    ProtocolVersion, PublishRefusal, QoS, Refusal, SessionEndReason, SessionHandle,
    SubscribeRefusal, SubscribeRequest, Subscription,
};
use drover_registry::AccessReader;

use crate::access::AccessCheck;
use crate::commands::CommandService;
use crate::limits::{ConnectionSlot, UserConnections};

use self::dispatch::{lock, Group, Tuning};
pub use self::message::{ContentMode, STRUCTURED_CONTENT_TYPE};
use self::session::State;

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
            tokio::spawn(recheck::watch_access(Arc::downgrade(&server)));
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
}

impl Policy for IntegrationPolicy {
    type Identity = Arc<IntegrationClient>;

    async fn connect(&self, req: &ConnectRequest) -> Result<Accepted<Self::Identity>, Refusal> {
        self.accept(req).await
    }

    async fn connected(&self, client: &Self::Identity, session: &SessionHandle, present: bool) {
        tracing::debug!(user = client.principal.name(), client_id = %client.client_id, present, "MQTT integration: client connected");
        self.session_connected(client, session);
        let _ = client.session.set(session.clone());
    }

    async fn publish(&self, client: &Self::Identity, msg: Inbound) -> Result<(), PublishRefusal> {
        self.send_command(client, msg).await
    }

    async fn subscribe(
        &self,
        client: &Self::Identity,
        session: &SessionHandle,
        req: &SubscribeRequest,
    ) -> Vec<Result<QoS, SubscribeRefusal>> {
        self.subscribe_all(client, session, req).await
    }

    async fn unsubscribed(
        &self,
        client: &Self::Identity,
        session: &SessionHandle,
        removed: &[Subscription],
    ) {
        self.unsubscribe(client, session, removed).await;
    }

    async fn disconnected(&self, client: &Self::Identity, reason: &CloseReason) {
        tracing::debug!(user = client.principal.name(), client_id = %client.client_id, %reason, "MQTT integration: client disconnected");
        self.refresh_online(&client.session_key);
    }

    async fn session_ended(&self, session_key: &str, reason: SessionEndReason) {
        self.end_session(session_key, reason).await;
    }
}
