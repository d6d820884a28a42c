//! Reason codes and the policy's refusals, mapped to the wire in one place.

use std::fmt;

use crate::violation::Violation;

/// An MQTT 5 reason code (also used to describe MQTT 3 outcomes in logs and callbacks).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ReasonCode(pub u8);

impl ReasonCode {
    /// 0x00 Success / Normal disconnection / Granted QoS 0.
    pub const SUCCESS: ReasonCode = ReasonCode(0x00);
    /// 0x04 Disconnect with Will Message.
    pub const DISCONNECT_WITH_WILL: ReasonCode = ReasonCode(0x04);
    /// 0x10 No matching subscribers.
    pub const NO_MATCHING_SUBSCRIBERS: ReasonCode = ReasonCode(0x10);
    /// 0x11 No subscription existed.
    pub const NO_SUBSCRIPTION_EXISTED: ReasonCode = ReasonCode(0x11);
    /// 0x80 Unspecified error.
    pub const UNSPECIFIED_ERROR: ReasonCode = ReasonCode(0x80);
    /// 0x81 Malformed Packet.
    pub const MALFORMED_PACKET: ReasonCode = ReasonCode(0x81);
    /// 0x82 Protocol Error.
    pub const PROTOCOL_ERROR: ReasonCode = ReasonCode(0x82);
    /// 0x83 Implementation specific error.
    pub const IMPLEMENTATION_SPECIFIC_ERROR: ReasonCode = ReasonCode(0x83);
    /// 0x84 Unsupported Protocol Version.
    pub const UNSUPPORTED_PROTOCOL_VERSION: ReasonCode = ReasonCode(0x84);
    /// 0x85 Client Identifier not valid.
    pub const CLIENT_IDENTIFIER_NOT_VALID: ReasonCode = ReasonCode(0x85);
    /// 0x86 Bad User Name or Password.
    pub const BAD_USER_NAME_OR_PASSWORD: ReasonCode = ReasonCode(0x86);
    /// 0x87 Not authorized.
    pub const NOT_AUTHORIZED: ReasonCode = ReasonCode(0x87);
    /// 0x88 Server unavailable.
    pub const SERVER_UNAVAILABLE: ReasonCode = ReasonCode(0x88);
    /// 0x89 Server busy.
    pub const SERVER_BUSY: ReasonCode = ReasonCode(0x89);
    /// 0x8A Banned.
    pub const BANNED: ReasonCode = ReasonCode(0x8A);
    /// 0x8B Server shutting down.
    pub const SERVER_SHUTTING_DOWN: ReasonCode = ReasonCode(0x8B);
    /// 0x8C Bad authentication method.
    pub const BAD_AUTHENTICATION_METHOD: ReasonCode = ReasonCode(0x8C);
    /// 0x8D Keep Alive timeout.
    pub const KEEP_ALIVE_TIMEOUT: ReasonCode = ReasonCode(0x8D);
    /// 0x8E Session taken over.
    pub const SESSION_TAKEN_OVER: ReasonCode = ReasonCode(0x8E);
    /// 0x8F Topic Filter invalid.
    pub const TOPIC_FILTER_INVALID: ReasonCode = ReasonCode(0x8F);
    /// 0x90 Topic Name invalid.
    pub const TOPIC_NAME_INVALID: ReasonCode = ReasonCode(0x90);
    /// 0x93 Receive Maximum exceeded.
    pub const RECEIVE_MAXIMUM_EXCEEDED: ReasonCode = ReasonCode(0x93);
    /// 0x94 Topic Alias invalid.
    pub const TOPIC_ALIAS_INVALID: ReasonCode = ReasonCode(0x94);
    /// 0x95 Packet too large.
    pub const PACKET_TOO_LARGE: ReasonCode = ReasonCode(0x95);
    /// 0x97 Quota exceeded.
    pub const QUOTA_EXCEEDED: ReasonCode = ReasonCode(0x97);
    /// 0x98 Administrative action.
    pub const ADMINISTRATIVE_ACTION: ReasonCode = ReasonCode(0x98);
    /// 0x99 Payload format invalid.
    pub const PAYLOAD_FORMAT_INVALID: ReasonCode = ReasonCode(0x99);
    /// 0x9A Retain not supported.
    pub const RETAIN_NOT_SUPPORTED: ReasonCode = ReasonCode(0x9A);
    /// 0x9B QoS not supported.
    pub const QOS_NOT_SUPPORTED: ReasonCode = ReasonCode(0x9B);
    /// 0x9E Shared Subscriptions not supported.
    pub const SHARED_SUBSCRIPTIONS_NOT_SUPPORTED: ReasonCode = ReasonCode(0x9E);
    /// 0xA1 Subscription Identifiers not supported.
    pub const SUBSCRIPTION_IDENTIFIERS_NOT_SUPPORTED: ReasonCode = ReasonCode(0xA1);
    /// 0xA2 Wildcard Subscriptions not supported.
    pub const WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED: ReasonCode = ReasonCode(0xA2);
    /// 0x9F Connection rate exceeded.
    pub const CONNECTION_RATE_EXCEEDED: ReasonCode = ReasonCode(0x9F);

    /// Whether this code reports a failure (>= 0x80).
    pub fn is_error(self) -> bool {
        self.0 >= 0x80
    }

    /// The name the MQTT 5 specification gives the code.
    pub fn name(self) -> &'static str {
        match self.0 {
            0x00 => "Success",
            0x01 => "Granted QoS 1",
            0x02 => "Granted QoS 2",
            0x04 => "Disconnect with Will Message",
            0x10 => "No matching subscribers",
            0x11 => "No subscription existed",
            0x80 => "Unspecified error",
            0x81 => "Malformed Packet",
            0x82 => "Protocol Error",
            0x83 => "Implementation specific error",
            0x84 => "Unsupported Protocol Version",
            0x85 => "Client Identifier not valid",
            0x86 => "Bad User Name or Password",
            0x87 => "Not authorized",
            0x88 => "Server unavailable",
            0x89 => "Server busy",
            0x8A => "Banned",
            0x8B => "Server shutting down",
            0x8C => "Bad authentication method",
            0x8D => "Keep Alive timeout",
            0x8E => "Session taken over",
            0x8F => "Topic Filter invalid",
            0x90 => "Topic Name invalid",
            0x91 => "Packet Identifier in use",
            0x92 => "Packet Identifier not found",
            0x93 => "Receive Maximum exceeded",
            0x94 => "Topic Alias invalid",
            0x95 => "Packet too large",
            0x96 => "Message rate too high",
            0x97 => "Quota exceeded",
            0x98 => "Administrative action",
            0x99 => "Payload format invalid",
            0x9A => "Retain not supported",
            0x9B => "QoS not supported",
            0x9C => "Use another server",
            0x9D => "Server moved",
            0x9E => "Shared Subscriptions not supported",
            0x9F => "Connection rate exceeded",
            0xA0 => "Maximum connect time",
            0xA1 => "Subscription Identifiers not supported",
            0xA2 => "Wildcard Subscriptions not supported",
            _ => "Unknown",
        }
    }
}

impl fmt::Debug for ReasonCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0x{:02X} {}", self.0, self.name())
    }
}

impl fmt::Display for ReasonCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// Why the policy refuses a CONNECT. Sent as CONNACK return code (MQTT 3) / reason code (MQTT 5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// Bad user name or password: 3.1.1 code 4, v5 0x86.
    BadCredentials,
    /// Not authorized: 3.1.1 code 5, v5 0x87.
    NotAuthorized,
    /// Server unavailable (e.g. a backend is down): 3.1.1 code 3, v5 0x88.
    ServerUnavailable,
    /// Server busy (overload): 3.1.1 code 3, v5 0x89.
    ServerBusy,
    /// Client identifier not acceptable: 3.1.1 code 2, v5 0x85.
    ClientIdInvalid,
    /// Banned: 3.1.1 code 5, v5 0x8A.
    Banned,
    /// Quota exceeded: 3.1.1 code 3, v5 0x97.
    QuotaExceeded,
    /// Too many connection attempts (e.g. failed authentications) from this client: 3.1.1
    /// code 3 (server unavailable: retry later), v5 0x9F.
    ConnectionRateExceeded,
}

impl Refusal {
    /// MQTT 5 reason code.
    pub fn reason_code(self) -> ReasonCode {
        match self {
            Refusal::BadCredentials => ReasonCode::BAD_USER_NAME_OR_PASSWORD,
            Refusal::NotAuthorized => ReasonCode::NOT_AUTHORIZED,
            Refusal::ServerUnavailable => ReasonCode::SERVER_UNAVAILABLE,
            Refusal::ServerBusy => ReasonCode::SERVER_BUSY,
            Refusal::ClientIdInvalid => ReasonCode::CLIENT_IDENTIFIER_NOT_VALID,
            Refusal::Banned => ReasonCode::BANNED,
            Refusal::QuotaExceeded => ReasonCode::QUOTA_EXCEEDED,
            Refusal::ConnectionRateExceeded => ReasonCode::CONNECTION_RATE_EXCEEDED,
        }
    }

    /// MQTT 3.1/3.1.1 CONNACK return code.
    pub fn v3_return_code(self) -> u8 {
        match self {
            Refusal::ClientIdInvalid => 2,
            Refusal::ServerUnavailable
            | Refusal::ServerBusy
            | Refusal::QuotaExceeded
            | Refusal::ConnectionRateExceeded => 3,
            Refusal::BadCredentials => 4,
            Refusal::NotAuthorized | Refusal::Banned => 5,
        }
    }
}

/// Why the policy refuses an inbound PUBLISH.
///
/// QoS 0: the message is dropped (and logged). QoS 1: MQTT 5 clients get a PUBACK with the reason
/// code; MQTT 3 clients are disconnected (3.1.1 has no negative acknowledgement).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PublishRefusal {
    /// 0x87 Not authorized.
    NotAuthorized,
    /// 0x90 Topic Name invalid (e.g. a topic outside the dialect).
    TopicNameInvalid,
    /// 0x97 Quota exceeded.
    QuotaExceeded,
    /// 0x99 Payload format invalid.
    PayloadFormatInvalid,
    /// 0x80 Unspecified error.
    Unspecified,
    /// 0x83 Implementation specific error (e.g. the event log refused the append).
    ImplementationSpecific,
}

impl PublishRefusal {
    /// MQTT 5 PUBACK reason code.
    pub fn reason_code(self) -> ReasonCode {
        match self {
            PublishRefusal::NotAuthorized => ReasonCode::NOT_AUTHORIZED,
            PublishRefusal::TopicNameInvalid => ReasonCode::TOPIC_NAME_INVALID,
            PublishRefusal::QuotaExceeded => ReasonCode::QUOTA_EXCEEDED,
            PublishRefusal::PayloadFormatInvalid => ReasonCode::PAYLOAD_FORMAT_INVALID,
            PublishRefusal::Unspecified => ReasonCode::UNSPECIFIED_ERROR,
            PublishRefusal::ImplementationSpecific => ReasonCode::IMPLEMENTATION_SPECIFIC_ERROR,
        }
    }
}

/// Why the policy refuses one topic filter of a SUBSCRIBE (MQTT 5 SUBACK reason; MQTT 3 gets 0x80).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SubscribeRefusal {
    /// 0x87 Not authorized.
    NotAuthorized,
    /// 0x8F Topic Filter invalid (valid MQTT, but not a filter this server serves).
    TopicFilterInvalid,
    /// 0x9E Shared Subscriptions not supported.
    SharedSubscriptionsNotSupported,
    /// 0xA2 Wildcard Subscriptions not supported.
    WildcardsNotSupported,
    /// 0x97 Quota exceeded.
    QuotaExceeded,
    /// 0x80 Unspecified error.
    Unspecified,
    /// 0x83 Implementation specific error.
    ImplementationSpecific,
}

impl SubscribeRefusal {
    /// MQTT 5 SUBACK reason code.
    pub fn reason_code(self) -> ReasonCode {
        match self {
            SubscribeRefusal::NotAuthorized => ReasonCode::NOT_AUTHORIZED,
            SubscribeRefusal::TopicFilterInvalid => ReasonCode::TOPIC_FILTER_INVALID,
            SubscribeRefusal::SharedSubscriptionsNotSupported => {
                ReasonCode::SHARED_SUBSCRIPTIONS_NOT_SUPPORTED
            }
            SubscribeRefusal::WildcardsNotSupported => {
                ReasonCode::WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED
            }
            SubscribeRefusal::QuotaExceeded => ReasonCode::QUOTA_EXCEEDED,
            SubscribeRefusal::Unspecified => ReasonCode::UNSPECIFIED_ERROR,
            SubscribeRefusal::ImplementationSpecific => ReasonCode::IMPLEMENTATION_SPECIFIC_ERROR,
        }
    }
}

/// Why a connection ended, see [`Policy::disconnected`](crate::Policy::disconnected).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// The client sent DISCONNECT. MQTT 3 and MQTT 5 "normal" carry 0x00; an MQTT 5 client may
    /// send 0x04 (disconnect with will) or an error code.
    ClientDisconnect(ReasonCode),
    /// The peer closed the connection or the transport failed without DISCONNECT.
    ConnectionLost,
    /// Nothing arrived within 1.5 times the keep-alive.
    KeepAliveTimeout,
    /// A packet began to arrive but was not complete within
    /// [`MqttConfig::packet_timeout`](crate::MqttConfig::packet_timeout) (the value).
    PacketTimeout(std::time::Duration),
    /// Another connection took over the session.
    TakenOver,
    /// The client violated the protocol; its reason code is the one sent in the MQTT 5
    /// DISCONNECT.
    ProtocolError(Violation),
    /// An MQTT 3 client's QoS 1 PUBLISH was refused by the policy (3.1.1 has no negative ack).
    PublishRefused(PublishRefusal),
    /// The session's owner closed the connection via
    /// [`SessionHandle::disconnect`](crate::SessionHandle::disconnect).
    Kicked(ReasonCode),
    /// The server is shutting down.
    ServerShutdown,
}

impl CloseReason {
    /// Whether the will is published for this reason. Everything but a DISCONNECT with 0x00 and a
    /// server shutdown publishes it (a shutdown is not the client's failure, and the
    /// in-memory sessions end with the process anyway).
    pub fn publishes_will(&self) -> bool {
        match self {
            CloseReason::ClientDisconnect(code) => *code != ReasonCode::SUCCESS,
            CloseReason::ServerShutdown => false,
            _ => true,
        }
    }

    /// The reason code a server-initiated MQTT 5 DISCONNECT carries, if the server sends one.
    pub(crate) fn server_disconnect_code(&self) -> Option<ReasonCode> {
        match self {
            CloseReason::ClientDisconnect(_) | CloseReason::ConnectionLost => None,
            // MQTT 5 has no code of its own for a packet that never completes; the client was
            // too slow to send a packet, which is what 0x8D tells.
            CloseReason::KeepAliveTimeout | CloseReason::PacketTimeout(_) => {
                Some(ReasonCode::KEEP_ALIVE_TIMEOUT)
            }
            CloseReason::TakenOver => Some(ReasonCode::SESSION_TAKEN_OVER),
            CloseReason::ProtocolError(v) => Some(v.reason_code()),
            CloseReason::PublishRefused(r) => Some(r.reason_code()),
            CloseReason::Kicked(code) => Some(*code),
            CloseReason::ServerShutdown => Some(ReasonCode::SERVER_SHUTTING_DOWN),
        }
    }
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloseReason::ClientDisconnect(code) => write!(f, "client disconnected ({code})"),
            CloseReason::ConnectionLost => f.write_str("connection lost"),
            CloseReason::KeepAliveTimeout => f.write_str("keep-alive timeout"),
            CloseReason::PacketTimeout(t) => write!(f, "packet not complete within {t:?}"),
            CloseReason::TakenOver => f.write_str("session taken over"),
            CloseReason::ProtocolError(v) => {
                write!(f, "protocol error: {v} ({})", v.reason_code())
            }
            CloseReason::PublishRefused(r) => write!(f, "publish refused ({})", r.reason_code()),
            CloseReason::Kicked(code) => write!(f, "closed by the server ({code})"),
            CloseReason::ServerShutdown => f.write_str("server shutting down"),
        }
    }
}

/// Why a session's state was discarded, see [`Policy::session_ended`](crate::Policy::session_ended).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SessionEndReason {
    /// The session expiry interval passed while no connection was attached.
    Expired,
    /// The connection ended and the session had no expiry interval (clean MQTT 3 session,
    /// MQTT 5 expiry 0).
    Closed,
    /// A new connection asked for a clean start.
    CleanStart,
    /// The server shut down.
    ServerShutdown,
    /// The policy ended it ([`MqttServer::end_session`](crate::MqttServer::end_session)), e.g.
    /// because the user's access was revoked.
    Ended,
}
