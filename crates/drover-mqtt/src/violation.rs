//! What a client did wrong, as typed errors that keep their cause, and the one mapping of each
//! to the reason code the server answers with (CONNACK during the handshake, DISCONNECT after).
//!
//! The `Display` texts are the log lines' details; where an error wraps a cause (the codec's
//! decoding error, a [`TopicError`]) the text repeats the cause's own text, which is what the
//! single log line shows, and `source()` hands out the cause itself.

use std::fmt;
use std::num::NonZeroU16;

use bytestring::ByteString;
use rmqtt_codec::error::DecodeError;

use crate::reason::ReasonCode;
use crate::topic::TopicError;

/// A packet the codec could not decode. Opaque: the codec's types stay inside this crate; the
/// codec's error is the [`source`](std::error::Error::source).
#[derive(Clone, Debug)]
pub struct PacketError(DecodeError);

impl PacketError {
    pub(crate) fn new(e: DecodeError) -> Self {
        PacketError(e)
    }

    /// The reason code a malformed packet of this kind is answered with.
    pub fn reason_code(&self) -> ReasonCode {
        match &self.0 {
            DecodeError::MaxSizeExceeded { .. } => ReasonCode::PACKET_TOO_LARGE,
            DecodeError::InvalidTopicName => ReasonCode::TOPIC_NAME_INVALID,
            DecodeError::InvalidTopicFilter => ReasonCode::TOPIC_FILTER_INVALID,
            DecodeError::InvalidProtocol
            | DecodeError::ConnectReservedFlagSet
            | DecodeError::InvalidConnectFlags
            | DecodeError::PacketIdRequired
            | DecodeError::UnsupportedPacketType => ReasonCode::PROTOCOL_ERROR,
            DecodeError::UnsupportedProtocolLevel => ReasonCode::UNSUPPORTED_PROTOCOL_VERSION,
            DecodeError::InvalidClientId => ReasonCode::CLIENT_IDENTIFIER_NOT_VALID,
            // The codec maps invalid UTF-8 to 0x99 (payload format); in a packet's strings it
            // is a malformed packet.
            DecodeError::Utf8Error
            | DecodeError::InvalidLength
            | DecodeError::MalformedPacket
            | DecodeError::ConnAckReservedFlagSet
            | DecodeError::Io(_) => ReasonCode::MALFORMED_PACKET,
        }
    }

    /// The MQTT 3 CONNACK return code for a CONNECT that failed so, if 3.1.1 has one.
    fn v3_return_code(&self) -> Option<u8> {
        match self.reason_code() {
            ReasonCode::CLIENT_IDENTIFIER_NOT_VALID => Some(2),
            ReasonCode::UNSUPPORTED_PROTOCOL_VERSION => Some(1),
            _ => None,
        }
    }
}

impl fmt::Display for PacketError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for PacketError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

impl PartialEq for PacketError {
    fn eq(&self, other: &Self) -> bool {
        self.reason_code() == other.reason_code() && self.0.to_string() == other.0.to_string()
    }
}

impl Eq for PacketError {}

/// A protocol violation by a connected client: the detail of
/// [`CloseReason::ProtocolError`](crate::CloseReason::ProtocolError).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Violation {
    /// A packet the codec could not decode.
    #[error("undecodable packet: {0}")]
    Undecodable(#[source] PacketError),
    /// A packet a client must not send to a server at this point (second CONNECT, QoS 2
    /// flow, AUTH, server-to-client packets).
    #[error("unexpected packet: {0}")]
    UnexpectedPacket(&'static str),
    /// SUBSCRIBE with a subscription identifier (not available).
    #[error("SUBSCRIBE with a subscription identifier (not available)")]
    SubscriptionIdentifier,
    /// No Local on a `$share/` subscription.
    #[error("No Local set on shared subscription {:?}", &**.0)]
    NoLocalOnShared(ByteString),
    /// DISCONNECT sets a session expiry after CONNECT set 0.
    #[error("DISCONNECT sets a session expiry after CONNECT set none")]
    ExpiryAfterZero,
    /// PUBLISH with QoS 2.
    #[error("QoS 2 PUBLISH to {:?}", &**.0)]
    Qos2Publish(ByteString),
    /// Retained PUBLISH from an MQTT 5 client (Retain Available is 0).
    #[error("retained PUBLISH to {:?}", &**.0)]
    RetainedPublish(ByteString),
    /// PUBLISH from a client with a subscription identifier.
    #[error("PUBLISH from a client carries a subscription identifier")]
    PublishSubscriptionIdentifier,
    /// Topic alias above the Topic Alias Maximum.
    #[error("topic alias {alias} above the maximum {max}")]
    TopicAliasAboveMaximum {
        /// The alias.
        alias: NonZeroU16,
        /// The maximum the server granted.
        max: u16,
    },
    /// Empty topic with an alias the client never set.
    #[error("unknown topic alias {0}")]
    UnknownTopicAlias(NonZeroU16),
    /// Empty topic without a topic alias.
    #[error("empty topic name without topic alias")]
    EmptyTopic,
    /// Topic name longer than [`MqttConfig::max_topic_length`](crate::MqttConfig::max_topic_length).
    #[error("topic name of {len} bytes is longer than {max} (max_topic_length)")]
    TopicTooLong {
        /// Its length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// An invalid topic name.
    #[error("invalid topic name {:?}: {source}", &**.topic)]
    InvalidTopic {
        /// The topic.
        topic: ByteString,
        /// What is wrong with it.
        #[source]
        source: TopicError,
    },
    /// More unacknowledged QoS 1 PUBLISHes than the Receive Maximum (the value).
    #[error("more than {0} unacknowledged QoS 1 PUBLISHes")]
    ReceiveMaximumExceeded(u16),
}

impl Violation {
    /// The reason code of the server's MQTT 5 DISCONNECT.
    pub fn reason_code(&self) -> ReasonCode {
        match self {
            Violation::Undecodable(e) => e.reason_code(),
            Violation::SubscriptionIdentifier => ReasonCode::SUBSCRIPTION_IDENTIFIERS_NOT_SUPPORTED,
            Violation::Qos2Publish(_) => ReasonCode::QOS_NOT_SUPPORTED,
            Violation::RetainedPublish(_) => ReasonCode::RETAIN_NOT_SUPPORTED,
            Violation::TopicAliasAboveMaximum { .. } => ReasonCode::TOPIC_ALIAS_INVALID,
            Violation::TopicTooLong { .. } | Violation::InvalidTopic { .. } => {
                ReasonCode::TOPIC_NAME_INVALID
            }
            Violation::ReceiveMaximumExceeded(_) => ReasonCode::RECEIVE_MAXIMUM_EXCEEDED,
            Violation::UnexpectedPacket(_)
            | Violation::NoLocalOnShared(_)
            | Violation::ExpiryAfterZero
            | Violation::PublishSubscriptionIdentifier
            | Violation::UnknownTopicAlias(_)
            | Violation::EmptyTopic => ReasonCode::PROTOCOL_ERROR,
        }
    }
}

/// Why a CONNECT is refused before the policy sees it.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnectError {
    /// "MQTT" with a protocol level other than 3, 4, 5.
    #[error("unsupported protocol level {0}")]
    UnsupportedLevel(u8),
    /// Not an MQTT CONNECT at all.
    #[error("first packet is not an MQTT CONNECT ({0})")]
    NotMqtt(#[source] PacketError),
    /// Another packet than CONNECT came first.
    #[error("first packet is not CONNECT")]
    NotConnect { v5: bool },
    /// A CONNECT the codec could not decode.
    #[error("invalid CONNECT: {source}")]
    Invalid {
        v5: bool,
        #[source]
        source: PacketError,
    },
    #[error("invalid will topic {:?}: {source}", &**.topic)]
    WillTopic {
        v5: bool,
        topic: ByteString,
        #[source]
        source: TopicError,
    },
    #[error("empty client identifier")]
    EmptyClientId { v5: bool },
    #[error("enhanced authentication ({0}) is not supported")]
    EnhancedAuthentication(ByteString),
    #[error("will with QoS 2")]
    WillQos2,
    #[error("retained will")]
    RetainedWill,
}

/// The CONNACK a refused CONNECT gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ConnackRefusal {
    /// MQTT 5 reason code.
    V5(ReasonCode),
    /// MQTT 3 return code.
    V3(u8),
    /// None: the connection is simply closed.
    Close,
}

impl ConnectError {
    /// What the client is answered with before the connection closes.
    pub(crate) fn connack(&self) -> ConnackRefusal {
        use ConnackRefusal::{Close, V3, V5};
        match self {
            ConnectError::UnsupportedLevel(_) => V3(1),
            ConnectError::NotMqtt(_) => Close,
            ConnectError::NotConnect { v5: true } => V5(ReasonCode::PROTOCOL_ERROR),
            ConnectError::NotConnect { v5: false } => Close,
            ConnectError::Invalid { v5: true, source } => V5(source.reason_code()),
            ConnectError::Invalid { v5: false, source } => {
                source.v3_return_code().map_or(Close, V3)
            }
            ConnectError::WillTopic { v5: true, .. } => V5(ReasonCode::TOPIC_NAME_INVALID),
            ConnectError::WillTopic { v5: false, .. } => Close,
            ConnectError::EmptyClientId { v5: true } => V5(ReasonCode::CLIENT_IDENTIFIER_NOT_VALID),
            ConnectError::EmptyClientId { v5: false } => V3(2),
            ConnectError::EnhancedAuthentication(_) => V5(ReasonCode::BAD_AUTHENTICATION_METHOD),
            ConnectError::WillQos2 => V5(ReasonCode::QOS_NOT_SUPPORTED),
            ConnectError::RetainedWill => V5(ReasonCode::RETAIN_NOT_SUPPORTED),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn violations_keep_their_cause_and_code() {
        let v = Violation::Undecodable(PacketError::new(DecodeError::Utf8Error));
        assert_eq!(v.reason_code(), ReasonCode::MALFORMED_PACKET);
        assert!(v.source().is_some_and(|s| s.source().is_some()));
        let v = Violation::InvalidTopic {
            topic: "a/+".into(),
            source: TopicError::WildcardInName,
        };
        assert_eq!(v.reason_code(), ReasonCode::TOPIC_NAME_INVALID);
        assert_eq!(
            v.to_string(),
            "invalid topic name \"a/+\": wildcard in topic name"
        );
        assert!(v.source().is_some());
    }

    #[test]
    fn connect_errors_answer_per_version() {
        let e = ConnectError::Invalid {
            v5: false,
            source: PacketError::new(DecodeError::InvalidClientId),
        };
        assert_eq!(e.connack(), ConnackRefusal::V3(2));
        assert!(std::error::Error::source(&e).is_some());
        let e = ConnectError::Invalid {
            v5: false,
            source: PacketError::new(DecodeError::MalformedPacket),
        };
        assert_eq!(e.connack(), ConnackRefusal::Close);
        let e = ConnectError::Invalid {
            v5: true,
            source: PacketError::new(DecodeError::MalformedPacket),
        };
        assert_eq!(
            e.connack(),
            ConnackRefusal::V5(ReasonCode::MALFORMED_PACKET)
        );
        assert_eq!(
            ConnectError::EmptyClientId { v5: false }.connack(),
            ConnackRefusal::V3(2)
        );
    }
}
