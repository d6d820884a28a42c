//! Version-neutral message and connection types handed to and received from the [`Policy`].
//!
//! [`Policy`]: crate::Policy

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use bytestring::ByteString;

/// A user property: an ordered `(name, value)` pair of UTF-8 strings (MQTT 5).
pub type UserProperty = (ByteString, ByteString);

/// MQTT protocol version spoken on a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProtocolVersion {
    /// MQTT 3.1 (`MQIsdp`, level 3).
    V3_1,
    /// MQTT 3.1.1 (level 4).
    V3_1_1,
    /// MQTT 5.0 (level 5).
    V5,
}

impl ProtocolVersion {
    /// Whether this is MQTT 5 (reason codes, properties).
    pub fn is_v5(self) -> bool {
        self == ProtocolVersion::V5
    }
}

impl fmt::Display for ProtocolVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ProtocolVersion::V3_1 => "3.1",
            ProtocolVersion::V3_1_1 => "3.1.1",
            ProtocolVersion::V5 => "5.0",
        })
    }
}

/// Quality of service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum QoS {
    /// At most once (0).
    AtMostOnce = 0,
    /// At least once (1).
    AtLeastOnce = 1,
    /// Exactly once (2). Never granted or used by this crate; it appears only in what clients
    /// request (SUBSCRIBE options, will QoS of MQTT 3 clients).
    ExactlyOnce = 2,
}

impl QoS {
    /// The numeric level.
    pub fn level(self) -> u8 {
        self as u8
    }

    pub(crate) fn from_codec(q: rmqtt_codec::types::QoS) -> Self {
        match q {
            rmqtt_codec::types::QoS::AtMostOnce => QoS::AtMostOnce,
            rmqtt_codec::types::QoS::AtLeastOnce => QoS::AtLeastOnce,
            rmqtt_codec::types::QoS::ExactlyOnce => QoS::ExactlyOnce,
        }
    }

    pub(crate) fn to_codec(self) -> rmqtt_codec::types::QoS {
        match self {
            QoS::AtMostOnce => rmqtt_codec::types::QoS::AtMostOnce,
            QoS::AtLeastOnce => rmqtt_codec::types::QoS::AtLeastOnce,
            QoS::ExactlyOnce => rmqtt_codec::types::QoS::ExactlyOnce,
        }
    }
}

/// The MQTT 5 properties of an application message (PUBLISH or will). Empty for MQTT 3.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MessageProperties {
    /// Payload Format Indicator: `true` when the sender declares the payload UTF-8.
    pub payload_format_utf8: bool,
    /// Message Expiry Interval in seconds.
    pub message_expiry_interval: Option<u32>,
    /// Content Type.
    pub content_type: Option<ByteString>,
    /// Response Topic.
    pub response_topic: Option<ByteString>,
    /// Correlation Data.
    pub correlation_data: Option<Bytes>,
    /// User properties, in the order they were sent.
    pub user_properties: Vec<UserProperty>,
}

impl MessageProperties {
    /// Whether no property is set.
    pub fn is_empty(&self) -> bool {
        !self.payload_format_utf8
            && self.message_expiry_interval.is_none()
            && self.content_type.is_none()
            && self.response_topic.is_none()
            && self.correlation_data.is_none()
            && self.user_properties.is_empty()
    }

    /// The value of the first user property named exactly `name`.
    pub fn user_property(&self, name: &str) -> Option<&str> {
        self.user_properties
            .iter()
            .find(|(k, _)| &**k == name)
            .map(|(_, v)| &**v)
    }

    /// Encoded size of these properties in a PUBLISH (without the length prefix).
    pub(crate) fn encoded_len(&self) -> usize {
        let mut n = 0;
        if self.payload_format_utf8 {
            n += 2;
        }
        if self.message_expiry_interval.is_some() {
            n += 5;
        }
        n += self.content_type.as_ref().map_or(0, |s| 3 + s.len());
        n += self.response_topic.as_ref().map_or(0, |s| 3 + s.len());
        n += self.correlation_data.as_ref().map_or(0, |s| 3 + s.len());
        n += self
            .user_properties
            .iter()
            .map(|(k, v)| 5 + k.len() + v.len())
            .sum::<usize>();
        n
    }
}

/// An application message received from a client (PUBLISH, or a will handed to
/// [`Policy::will`](crate::Policy::will)).
///
/// `topic` and `payload` share the connection's read buffer: no copy is made.
#[derive(Clone, Debug)]
pub struct Inbound {
    /// Topic name (aliases already resolved; never empty, never contains wildcards).
    pub topic: ByteString,
    /// Payload.
    pub payload: Bytes,
    /// QoS the client published with (0 or 1; a will of an MQTT 3 client may say 2).
    pub qos: QoS,
    /// DUP flag (a redelivery by the client).
    pub dup: bool,
    /// RETAIN flag. Only MQTT 3 clients can set it (MQTT 5 retained publishes are refused);
    /// the crate stores nothing, the policy decides what it means.
    pub retain: bool,
    /// MQTT 5 properties; empty for MQTT 3.
    pub properties: MessageProperties,
}

/// A message for a client, see [`SessionHandle::publish`](crate::SessionHandle::publish).
#[derive(Clone, Debug)]
pub struct OutboundMessage {
    /// Topic name (must be a valid topic name: non-empty, no wildcards, at most 65535 bytes).
    pub topic: ByteString,
    /// Payload.
    pub payload: Bytes,
    /// QoS 0 or 1 (`ExactlyOnce` is refused).
    pub qos: QoS,
    /// MQTT 5 properties; dropped when the client speaks MQTT 3. A message expiry interval
    /// counts down while the message waits in the session and the message is dropped once
    /// it expired before it could be sent.
    pub properties: MessageProperties,
}

impl OutboundMessage {
    /// A message without properties.
    pub fn new(topic: impl Into<ByteString>, payload: impl Into<Bytes>, qos: QoS) -> Self {
        OutboundMessage {
            topic: topic.into(),
            payload: payload.into(),
            qos,
            properties: MessageProperties::default(),
        }
    }

    /// Builder: set the properties.
    pub fn with_properties(mut self, properties: MessageProperties) -> Self {
        self.properties = properties;
        self
    }
}

/// The will of a connection, as sent in CONNECT.
#[derive(Clone, Debug)]
pub struct Will {
    /// Will topic.
    pub topic: ByteString,
    /// Will payload.
    pub payload: Bytes,
    /// Will QoS.
    pub qos: QoS,
    /// Will retain flag (MQTT 3 only; MQTT 5 clients asking for it are refused).
    pub retain: bool,
    /// Will Delay Interval (MQTT 5), in seconds.
    pub delay_interval: u32,
    /// MQTT 5 will properties.
    pub properties: MessageProperties,
}

impl Will {
    pub(crate) fn into_inbound(self) -> Inbound {
        Inbound {
            topic: self.topic,
            payload: self.payload,
            qos: self.qos,
            dup: false,
            retain: self.retain,
            properties: self.properties,
        }
    }
}

/// What the transport knows about a connection: who is on the other end.
///
/// Built by the listener (TCP, TLS, WebSocket) and handed to
/// [`serve_connection`](crate::serve_connection).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ConnectionInfo {
    /// Remote address.
    pub peer_addr: SocketAddr,
    /// The TLS client certificate chain (DER, leaf first) when the client presented one.
    pub client_certificates: Option<Vec<Vec<u8>>>,
    /// The TLS server name (SNI) the client asked for.
    pub server_name: Option<String>,
}

impl ConnectionInfo {
    /// Info for a plain connection from `peer_addr`.
    pub fn new(peer_addr: SocketAddr) -> Self {
        ConnectionInfo {
            peer_addr,
            client_certificates: None,
            server_name: None,
        }
    }

    /// Builder: the TLS client certificate chain (DER, leaf first).
    pub fn with_client_certificates(mut self, chain: Vec<Vec<u8>>) -> Self {
        self.client_certificates = Some(chain);
        self
    }

    /// Builder: the TLS server name (SNI).
    pub fn with_server_name(mut self, name: impl Into<String>) -> Self {
        self.server_name = Some(name.into());
        self
    }
}

/// A CONNECT as the policy sees it, see [`Policy::connect`](crate::Policy::connect).
#[derive(Clone)]
pub struct ConnectRequest {
    /// Protocol version.
    pub protocol: ProtocolVersion,
    /// Client identifier. When the client sent an empty one and the server assigned one,
    /// this is the assigned identifier and `client_id_assigned` is set.
    pub client_id: ByteString,
    /// Whether `client_id` was assigned by the server.
    pub client_id_assigned: bool,
    /// User name.
    pub username: Option<ByteString>,
    /// Password (binary in MQTT 5).
    pub password: Option<Bytes>,
    /// CleanSession (3.1.1) / Clean Start (5).
    pub clean_start: bool,
    /// How long the session outlives the connection, after the server's cap:
    /// zero for a clean MQTT 3 session, the configured MQTT 3 expiry for a persistent one,
    /// the requested Session Expiry Interval (capped) for MQTT 5.
    pub session_expiry: Duration,
    /// Keep-alive the server enforces (after the server's cap), in seconds; 0 = none.
    pub keep_alive: u16,
    /// The will, if any.
    pub will: Option<Will>,
    /// MQTT 5 CONNECT user properties.
    pub user_properties: Vec<UserProperty>,
    /// Transport facts (peer address, TLS client certificates).
    pub connection: ConnectionInfo,
}

impl fmt::Debug for ConnectRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectRequest")
            .field("protocol", &self.protocol)
            .field("client_id", &self.client_id)
            .field("client_id_assigned", &self.client_id_assigned)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("clean_start", &self.clean_start)
            .field("session_expiry", &self.session_expiry)
            .field("keep_alive", &self.keep_alive)
            .field("will", &self.will.as_ref().map(|w| &w.topic))
            .field("user_properties", &self.user_properties)
            .field("connection", &self.connection)
            .finish()
    }
}

/// Options of one requested subscription (MQTT 5 subscription options; defaults for MQTT 3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SubscriptionOptions {
    /// Requested maximum QoS.
    pub qos: QoS,
    /// No Local (MQTT 5): do not deliver the subscriber's own publications.
    pub no_local: bool,
    /// Retain As Published (MQTT 5).
    pub retain_as_published: bool,
    /// Retain Handling (MQTT 5): 0, 1 or 2.
    pub retain_handling: u8,
}

/// One topic filter of a SUBSCRIBE, already validated and with any `$share/<group>/` prefix
/// split off.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubscriptionRequest {
    /// The topic filter (without the `$share/<group>/` prefix).
    pub filter: ByteString,
    /// The shared-subscription group, for `$share/<group>/<filter>`.
    pub share_group: Option<ByteString>,
    /// Subscription options as requested.
    pub options: SubscriptionOptions,
}

/// A SUBSCRIBE as the policy sees it, see [`Policy::subscribe`](crate::Policy::subscribe).
#[derive(Clone, Debug)]
pub struct SubscribeRequest {
    /// The valid filters of the packet, in packet order. Filters the crate refused on its own
    /// (invalid, wildcards or shared subscriptions unavailable) are not in this list.
    pub filters: Vec<SubscriptionRequest>,
    /// MQTT 5 SUBSCRIBE user properties, in order.
    pub user_properties: Vec<UserProperty>,
}

/// A subscription held in a session (granted by the policy).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subscription {
    /// Topic filter (without the `$share/<group>/` prefix).
    pub filter: ByteString,
    /// Shared-subscription group.
    pub share_group: Option<ByteString>,
    /// Granted QoS (0 or 1).
    pub qos: QoS,
    /// Options as requested.
    pub options: SubscriptionOptions,
    /// User properties of the SUBSCRIBE packet that created it (MQTT 5).
    pub user_properties: Vec<UserProperty>,
}
