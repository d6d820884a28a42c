//! Server settings.

use std::time::Duration;

/// Settings of an [`MqttServer`](crate::MqttServer). `Default` gives values fit for production;
/// callers map their own configuration onto it (this crate reads no files or environment).
#[derive(Clone, Debug)]
pub struct MqttConfig {
    /// How long a new connection may take to send a complete CONNECT (default 10 s).
    pub connect_timeout: Duration,
    /// How long a packet may take to arrive once its first byte did (default 30 s): a client
    /// trickling a packet byte by byte is closed (MQTT 5: DISCONNECT 0x8D) even while the bytes
    /// keep its keep-alive going.
    pub packet_timeout: Duration,
    /// Largest keep-alive the server accepts, in seconds (default 1200). A client asking for more,
    /// or for none (0), gets this value: MQTT 5 clients are told via Server Keep Alive, MQTT 3
    /// clients are simply held to it. A connection is closed when nothing arrived for 1.5 times
    /// the keep-alive.
    pub max_keep_alive: u16,
    /// Largest packet the server accepts, in bytes including the fixed header (default 1 MiB).
    /// Advertised to MQTT 5 clients; bigger packets close the connection (MQTT 5: 0x95).
    pub max_packet_size: u32,
    /// Receive Maximum: how many QoS 1 PUBLISHes a client may have unacknowledged towards the
    /// server (default 32). Advertised to MQTT 5 clients; exceeding it is a protocol error (0x93).
    pub receive_maximum: u16,
    /// How many inbound PUBLISHes may be in the policy at once on one connection (default 1).
    /// Policy calls always *start* in packet order and acknowledgements are always sent in
    /// packet order; with more than 1 the futures run concurrently, so only work done before a
    /// policy future first suspends is guaranteed to happen in packet order.
    pub inbound_concurrency: usize,
    /// How many decoded packets may wait for processing before the server stops reading from
    /// the socket (default 256).
    pub inbound_queue: usize,
    /// Server → client in-flight window for QoS 1: the limit for MQTT 3 clients, and the cap on
    /// an MQTT 5 client's Receive Maximum (default 64).
    pub outbound_window: u16,
    /// How many messages a session queues (not yet sent, or waiting for a window slot) before
    /// [`SessionHandle::publish`](crate::SessionHandle::publish) waits (default 1000).
    pub session_queue_limit: usize,
    /// Largest session expiry the server grants (default 1 day).
    pub max_session_expiry: Duration,
    /// Session expiry of MQTT 3 connections with CleanSession = 0 (default 1 day; MQTT 3 has no
    /// expiry of its own, so the server picks one). Capped by `max_session_expiry`.
    pub v3_session_expiry: Duration,
    /// Most sessions (connected or not) held at once (default 100 000); further CONNECTs are
    /// refused with Server busy (MQTT 3: Server unavailable).
    pub max_sessions: usize,
    /// Topic Alias Maximum for client → server aliases (default 16; 0 disables aliases).
    pub topic_alias_maximum: u16,
    /// Whether a client may send an empty client identifier and get one assigned (default true).
    pub allow_empty_client_id: bool,
    /// Prefix of assigned client identifiers (default `"drover-"`).
    pub assigned_client_id_prefix: String,
    /// Whether wildcard subscriptions are available (default true); a policy may override it
    /// per connection with [`Accepted`](crate::Accepted).
    pub wildcard_subscriptions: bool,
    /// Whether shared subscriptions (`$share/<group>/<filter>`) are available (default true);
    /// overridable per connection.
    pub shared_subscriptions: bool,
    /// How long a taking-over connection waits for the previous connection of the same session
    /// to finish its teardown before it proceeds anyway (default 5 s).
    pub takeover_timeout: Duration,
    /// How long a closing connection may spend flushing its last packets (default 2 s).
    pub close_timeout: Duration,
    /// Bytes of encoded packets a connection buffers for the socket before it stops pulling more
    /// messages from its session and stops reading (default 64 KiB).
    pub write_buffer_high_water: usize,
    /// Read buffer size (default 8 KiB; kept per connection, so mind it with many idle devices).
    pub read_buffer_size: usize,
    /// How often expired sessions are reaped (default 10 s).
    pub reap_interval: Duration,
    /// Most subscriptions one session holds (default 100). Further filters are refused in the
    /// SUBACK with 0x97 Quota exceeded (MQTT 3.1.1: 0x80); replacing an existing subscription
    /// does not count.
    pub max_subscriptions: usize,
    /// Most topic filters one SUBSCRIBE may carry (default 32). The filters after the first
    /// this many are refused with 0x97 Quota exceeded (MQTT 3.1.1: 0x80) without looking at
    /// them.
    pub max_filters_per_subscribe: usize,
    /// Longest topic name or topic filter in bytes (default 1024; MQTT allows 65535). A longer
    /// PUBLISH topic closes the connection (MQTT 5: DISCONNECT 0x90); a longer filter is
    /// refused in the SUBACK with 0x8F (MQTT 3.1.1: 0x80).
    pub max_topic_length: usize,
}

impl Default for MqttConfig {
    fn default() -> Self {
        MqttConfig {
            connect_timeout: Duration::from_secs(10),
            packet_timeout: Duration::from_secs(30),
            max_keep_alive: 1200,
            max_packet_size: 1024 * 1024,
            receive_maximum: 32,
            inbound_concurrency: 1,
            inbound_queue: 256,
            outbound_window: 64,
            session_queue_limit: 1000,
            max_session_expiry: Duration::from_secs(24 * 3600),
            v3_session_expiry: Duration::from_secs(24 * 3600),
            max_sessions: 100_000,
            topic_alias_maximum: 16,
            allow_empty_client_id: true,
            assigned_client_id_prefix: "drover-".to_string(),
            wildcard_subscriptions: true,
            shared_subscriptions: true,
            takeover_timeout: Duration::from_secs(5),
            close_timeout: Duration::from_secs(2),
            write_buffer_high_water: 64 * 1024,
            read_buffer_size: 8 * 1024,
            reap_interval: Duration::from_secs(10),
            max_subscriptions: 100,
            max_filters_per_subscribe: 32,
            max_topic_length: 1024,
        }
    }
}

/// A setting of [`MqttConfig`] that cannot work.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid MQTT setting `{setting}`: {problem}")]
pub struct ConfigError {
    /// Field name.
    pub setting: &'static str,
    /// What is wrong with it.
    pub problem: &'static str,
}

impl MqttConfig {
    /// Checks the settings; [`MqttServer::new`](crate::MqttServer::new) clamps instead of failing,
    /// so call this where configuration is validated.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let fail = |setting, problem| Err(ConfigError { setting, problem });
        if self.max_packet_size < 64 {
            return fail("max_packet_size", "must be at least 64 bytes");
        }
        if self.max_packet_size > MAX_WIRE_PACKET {
            return fail("max_packet_size", "must be at most 268435460 bytes");
        }
        if self.receive_maximum == 0 {
            return fail("receive_maximum", "must be at least 1");
        }
        if self.inbound_concurrency == 0 {
            return fail("inbound_concurrency", "must be at least 1");
        }
        if self.inbound_queue == 0 {
            return fail("inbound_queue", "must be at least 1");
        }
        if self.outbound_window == 0 {
            return fail("outbound_window", "must be at least 1");
        }
        if self.session_queue_limit == 0 {
            return fail("session_queue_limit", "must be at least 1");
        }
        if self.max_sessions == 0 {
            return fail("max_sessions", "must be at least 1");
        }
        if self.connect_timeout.is_zero() {
            return fail("connect_timeout", "must be positive");
        }
        if self.packet_timeout.is_zero() {
            return fail("packet_timeout", "must be positive");
        }
        if self.reap_interval.is_zero() {
            return fail("reap_interval", "must be positive");
        }
        if self.max_subscriptions == 0 {
            return fail("max_subscriptions", "must be at least 1");
        }
        if self.max_filters_per_subscribe == 0 {
            return fail("max_filters_per_subscribe", "must be at least 1");
        }
        if !(16..=65535).contains(&self.max_topic_length) {
            return fail("max_topic_length", "must be 16 to 65535 bytes");
        }
        Ok(())
    }

    /// A copy with every setting that would stall the server clamped to a working value.
    pub(crate) fn clamped(mut self) -> Self {
        self.max_packet_size = self.max_packet_size.clamp(64, MAX_WIRE_PACKET);
        self.receive_maximum = self.receive_maximum.max(1);
        self.inbound_concurrency = self.inbound_concurrency.max(1);
        self.inbound_queue = self.inbound_queue.max(1);
        self.outbound_window = self.outbound_window.max(1);
        self.session_queue_limit = self.session_queue_limit.clamp(1, MAX_QUEUE);
        self.max_sessions = self.max_sessions.max(1);
        self.v3_session_expiry = self.v3_session_expiry.min(self.max_session_expiry);
        if self.connect_timeout.is_zero() {
            self.connect_timeout = Duration::from_secs(10);
        }
        if self.reap_interval.is_zero() {
            self.reap_interval = Duration::from_secs(10);
        }
        if self.packet_timeout.is_zero() {
            self.packet_timeout = Duration::from_secs(30);
        }
        self.write_buffer_high_water = self.write_buffer_high_water.max(1024);
        self.read_buffer_size = self.read_buffer_size.max(1024);
        self.max_subscriptions = self.max_subscriptions.max(1);
        self.max_filters_per_subscribe = self.max_filters_per_subscribe.max(1);
        self.max_topic_length = self.max_topic_length.clamp(16, 65535);
        self
    }
}

/// Largest packet MQTT can frame: remaining length 268 435 455 plus 5 header bytes.
pub(crate) const MAX_WIRE_PACKET: u32 = 268_435_455 + 5;
/// Semaphore permits are bounded; no session needs more queued messages than this.
const MAX_QUEUE: usize = 1 << 24;
