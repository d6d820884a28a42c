//! The codec adapter: the only place that touches `rmqtt-codec` types. It turns MQTT 3.1, 3.1.1 and
//! 5.0 packets into one version-neutral [`Incoming`] and encodes the server's packets for the
//! version the connection speaks.

use std::num::{NonZeroU16, NonZeroU32};

use bytes::BytesMut;
use bytestring::ByteString;
use rmqtt_codec::error::DecodeError;
use rmqtt_codec::types::Publish;
use rmqtt_codec::version::{ProtocolVersion as CodecVersion, VersionCodec};
use rmqtt_codec::{v3, v5};
use tokio_util::codec::{Decoder, Encoder};

use crate::reason::ReasonCode;
use crate::session::Outgoing;
use crate::types::{
    MessageProperties, OutboundMessage, ProtocolVersion, QoS, SubscriptionOptions, UserProperty,
};

/// A packet from the client, after the CONNECT.
pub(crate) enum Incoming {
    Publish(Box<Publish>),
    PubAck {
        packet_id: NonZeroU16,
        reason: ReasonCode,
    },
    Subscribe {
        packet_id: NonZeroU16,
        filters: Vec<(ByteString, SubscriptionOptions)>,
        user_properties: Vec<UserProperty>,
        has_subscription_id: bool,
    },
    Unsubscribe {
        packet_id: NonZeroU16,
        filters: Vec<ByteString>,
    },
    PingReq,
    Disconnect {
        reason: ReasonCode,
        session_expiry: Option<u32>,
    },
    /// A packet a client must not send to a server at this point.
    Unexpected(&'static str),
}

/// The CONNECT packet, per version.
pub(crate) enum ConnectPacket {
    V3(Box<v3::Connect>),
    V5(Box<v5::Connect>),
}

/// The version-specific codec of an established connection.
pub(crate) enum Codec {
    V3(v3::Codec),
    V5(v5::Codec),
}

/// How decoding the CONNECT failed: what to answer before closing.
pub(crate) struct HandshakeError {
    /// MQTT 5 CONNACK reason code, when the client speaks MQTT 5.
    pub(crate) v5: Option<ReasonCode>,
    /// MQTT 3 CONNACK return code to send, when one applies.
    pub(crate) v3: Option<u8>,
    pub(crate) detail: String,
}

/// The CONNECT decoding state: first the protocol level, then the CONNECT itself.
pub(crate) enum Handshake {
    Detecting,
    Decoding(Codec),
}

/// Largest remaining length such that the whole packet fits in `max_packet_size` bytes.
pub(crate) fn max_remaining_length(max_packet_size: u32) -> u32 {
    (1..=4u32)
        .filter_map(|len_bytes| {
            let r = max_packet_size.checked_sub(1 + len_bytes)?;
            let needed = match r {
                0..=127 => 1,
                128..=16_383 => 2,
                16_384..=2_097_151 => 3,
                _ => 4,
            };
            (needed <= len_bytes && r <= 268_435_455).then_some(r)
        })
        .max()
        .unwrap_or(0)
}

fn decode_error(e: &DecodeError) -> (ReasonCode, String) {
    let code = match e {
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
        // The codec maps invalid UTF-8 to 0x99 (payload format); in a packet's strings it is a
        // malformed packet.
        DecodeError::Utf8Error
        | DecodeError::InvalidLength
        | DecodeError::MalformedPacket
        | DecodeError::ConnAckReservedFlagSet
        | DecodeError::Io(_) => ReasonCode::MALFORMED_PACKET,
    };
    (code, e.to_string())
}

/// Decoding error of an established connection: reason code and description.
pub(crate) fn decode_failure(e: &DecodeError) -> (ReasonCode, String) {
    decode_error(e)
}

impl Handshake {
    /// Decodes the CONNECT from `buf` once it is complete.
    pub(crate) fn decode(
        &mut self,
        buf: &mut BytesMut,
        max_packet_size: u32,
    ) -> Result<Option<(Codec, ConnectPacket)>, HandshakeError> {
        let max_remaining = max_remaining_length(max_packet_size);
        loop {
            match self {
                Handshake::Detecting => match VersionCodec.decode(buf) {
                    Ok(None) => return Ok(None),
                    Ok(Some(CodecVersion::MQTT3)) => {
                        *self = Handshake::Decoding(Codec::V3(v3::Codec::new(max_remaining)));
                    }
                    Ok(Some(CodecVersion::MQTT5)) => {
                        *self = Handshake::Decoding(Codec::V5(v5::Codec::new(max_remaining, 0)));
                    }
                    Err(e) => {
                        // A CONNECT with the MQTT protocol name and a level we do not know gets
                        // the 3.1.1 "unacceptable protocol level" answer.
                        let unknown_level = unknown_protocol_level(buf);
                        return Err(HandshakeError {
                            v5: None,
                            v3: unknown_level.map(|_| 1),
                            detail: match unknown_level {
                                Some(level) => format!("unsupported protocol level {level}"),
                                None => format!("first packet is not an MQTT CONNECT ({e})"),
                            },
                        });
                    }
                },
                Handshake::Decoding(Codec::V3(codec)) => {
                    return match codec.decode(buf) {
                        Ok(None) => Ok(None),
                        Ok(Some((v3::Packet::Connect(c), _))) => {
                            Ok(Some((Codec::V3(codec.clone()), ConnectPacket::V3(c))))
                        }
                        Ok(Some(_)) => Err(HandshakeError {
                            v5: None,
                            v3: None,
                            detail: "first packet is not CONNECT".into(),
                        }),
                        Err(e) => {
                            let (code, detail) = decode_error(&e);
                            Err(HandshakeError {
                                v5: None,
                                v3: match code {
                                    ReasonCode::CLIENT_IDENTIFIER_NOT_VALID => Some(2),
                                    ReasonCode::UNSUPPORTED_PROTOCOL_VERSION => Some(1),
                                    _ => None,
                                },
                                detail: format!("invalid CONNECT: {detail}"),
                            })
                        }
                    };
                }
                Handshake::Decoding(Codec::V5(codec)) => {
                    return match codec.decode(buf) {
                        Ok(None) => Ok(None),
                        Ok(Some((v5::Packet::Connect(c), _))) => {
                            Ok(Some((Codec::V5(codec.clone()), ConnectPacket::V5(c))))
                        }
                        Ok(Some(_)) => Err(HandshakeError {
                            v5: Some(ReasonCode::PROTOCOL_ERROR),
                            v3: None,
                            detail: "first packet is not CONNECT".into(),
                        }),
                        Err(e) => {
                            let (code, detail) = decode_error(&e);
                            Err(HandshakeError {
                                v5: Some(code),
                                v3: None,
                                detail: format!("invalid CONNECT: {detail}"),
                            })
                        }
                    };
                }
            }
        }
    }
}

/// The protocol level of a CONNECT that names "MQTT" but has a level other than 3, 4, 5.
fn unknown_protocol_level(buf: &[u8]) -> Option<u8> {
    if buf.first() != Some(&0x10) {
        return None;
    }
    let mut i = 1;
    while i < buf.len() && i <= 4 && buf[i] & 0x80 != 0 {
        i += 1;
    }
    let name = buf.get(i + 1..i + 7)?;
    let level = *buf.get(i + 7)?;
    (name == b"\x00\x04MQTT" && !(3..=5).contains(&level)).then_some(level)
}

/// Encodes a CONNACK that refuses a connection (and nothing else). `None` for MQTT 3 without a
/// return code: the connection is simply closed.
pub(crate) fn encode_refusal(v5_code: Option<ReasonCode>, v3_code: Option<u8>, buf: &mut BytesMut) {
    if let Some(code) = v5_code {
        let ack = v5::ConnectAck {
            reason_code: code
                .0
                .try_into()
                .unwrap_or(v5::ConnectAckReason::UnspecifiedError),
            ..Default::default()
        };
        let _ = v5::Codec::new(0, 0).encode(v5::Packet::ConnectAck(Box::new(ack)), buf);
    } else if let Some(code) = v3_code {
        let ack = v3::ConnectAck {
            return_code: code
                .try_into()
                .unwrap_or(v3::ConnectAckReason::NotAuthorized),
            session_present: false,
        };
        let _ = v3::Codec::new(0).encode(v3::Packet::ConnectAck(ack), buf);
    }
}

/// What the server grants in a successful CONNACK.
pub(crate) struct Grant {
    pub(crate) session_present: bool,
    pub(crate) session_expiry: Option<u32>,
    pub(crate) receive_maximum: u16,
    pub(crate) max_packet_size: u32,
    pub(crate) assigned_client_id: Option<ByteString>,
    pub(crate) topic_alias_maximum: u16,
    pub(crate) wildcard_subscriptions: bool,
    pub(crate) shared_subscriptions: bool,
    pub(crate) server_keep_alive: Option<u16>,
}

fn props_from_codec(p: v5::PublishProperties) -> MessageProperties {
    MessageProperties {
        payload_format_utf8: p.is_utf8_payload,
        message_expiry_interval: p.message_expiry_interval.map(NonZeroU32::get),
        content_type: p.content_type,
        response_topic: p.response_topic,
        correlation_data: p.correlation_data,
        user_properties: p.user_properties,
    }
}

/// Splits the codec's PUBLISH properties into ours plus the topic alias and whether subscription
/// identifiers were present (a client must not send them).
pub(crate) fn publish_properties(
    p: Option<v5::PublishProperties>,
) -> (MessageProperties, Option<NonZeroU16>, bool) {
    match p {
        None => (MessageProperties::default(), None, false),
        Some(p) => {
            let alias = p.topic_alias;
            let sub_ids = !p.subscription_ids.is_empty();
            (props_from_codec(p), alias, sub_ids)
        }
    }
}

/// A will from the v5 CONNECT.
pub(crate) fn will_properties(w: &mut v5::LastWill) -> MessageProperties {
    MessageProperties {
        payload_format_utf8: w.is_utf8_payload.unwrap_or(false),
        message_expiry_interval: w.message_expiry_interval.map(NonZeroU32::get),
        content_type: w.content_type.take(),
        response_topic: w.response_topic.take(),
        correlation_data: w.correlation_data.take(),
        user_properties: std::mem::take(&mut w.user_properties),
    }
}

fn to_codec_props(p: MessageProperties, expiry: Option<u32>) -> v5::PublishProperties {
    v5::PublishProperties {
        topic_alias: None,
        correlation_data: p.correlation_data,
        message_expiry_interval: expiry.and_then(NonZeroU32::new),
        content_type: p.content_type,
        user_properties: p.user_properties,
        is_utf8_payload: p.payload_format_utf8,
        response_topic: p.response_topic,
        subscription_ids: Vec::new(),
    }
}

fn sub_options(o: v5::SubscriptionOptions) -> SubscriptionOptions {
    SubscriptionOptions {
        qos: QoS::from_codec(o.qos),
        no_local: o.no_local,
        retain_as_published: o.retain_as_published,
        retain_handling: u8::from(o.retain_handling),
    }
}

impl Codec {
    pub(crate) fn version(&self, connect_level_31: bool) -> ProtocolVersion {
        match self {
            Codec::V5(_) => ProtocolVersion::V5,
            Codec::V3(_) if connect_level_31 => ProtocolVersion::V3_1,
            Codec::V3(_) => ProtocolVersion::V3_1_1,
        }
    }

    pub(crate) fn is_v5(&self) -> bool {
        matches!(self, Codec::V5(_))
    }

    /// Decodes the next packet, if complete.
    pub(crate) fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Incoming>, DecodeError> {
        match self {
            Codec::V3(codec) => Ok(codec.decode(buf)?.map(|(packet, _)| match packet {
                v3::Packet::Publish(p) => Incoming::Publish(p),
                v3::Packet::PublishAck { packet_id } => Incoming::PubAck {
                    packet_id,
                    reason: ReasonCode::SUCCESS,
                },
                v3::Packet::Subscribe {
                    packet_id,
                    topic_filters,
                } => Incoming::Subscribe {
                    packet_id,
                    filters: topic_filters
                        .into_iter()
                        .map(|(f, qos)| {
                            let options = SubscriptionOptions {
                                qos: QoS::from_codec(qos),
                                no_local: false,
                                retain_as_published: false,
                                retain_handling: 0,
                            };
                            (f, options)
                        })
                        .collect(),
                    user_properties: Vec::new(),
                    has_subscription_id: false,
                },
                v3::Packet::Unsubscribe {
                    packet_id,
                    topic_filters,
                } => Incoming::Unsubscribe {
                    packet_id,
                    filters: topic_filters,
                },
                v3::Packet::PingRequest => Incoming::PingReq,
                v3::Packet::Disconnect => Incoming::Disconnect {
                    reason: ReasonCode::SUCCESS,
                    session_expiry: None,
                },
                v3::Packet::Connect(_) => Incoming::Unexpected("second CONNECT"),
                v3::Packet::PublishReceived { .. }
                | v3::Packet::PublishRelease { .. }
                | v3::Packet::PublishComplete { .. } => Incoming::Unexpected("QoS 2 flow packet"),
                v3::Packet::ConnectAck(_)
                | v3::Packet::SubscribeAck { .. }
                | v3::Packet::UnsubscribeAck { .. }
                | v3::Packet::PingResponse => Incoming::Unexpected("server-to-client packet"),
            })),
            Codec::V5(codec) => Ok(codec.decode(buf)?.map(|(packet, _)| match packet {
                v5::Packet::Publish(p) => Incoming::Publish(p),
                v5::Packet::PublishAck(ack) => Incoming::PubAck {
                    packet_id: ack.packet_id,
                    reason: ReasonCode(u8::from(ack.reason_code)),
                },
                v5::Packet::Subscribe(s) => Incoming::Subscribe {
                    packet_id: s.packet_id,
                    filters: s
                        .topic_filters
                        .into_iter()
                        .map(|(f, o)| (f, sub_options(o)))
                        .collect(),
                    user_properties: s.user_properties,
                    has_subscription_id: s.id.is_some(),
                },
                v5::Packet::Unsubscribe(u) => Incoming::Unsubscribe {
                    packet_id: u.packet_id,
                    filters: u.topic_filters,
                },
                v5::Packet::PingRequest => Incoming::PingReq,
                v5::Packet::Disconnect(d) => Incoming::Disconnect {
                    reason: ReasonCode(u8::from(d.reason_code)),
                    session_expiry: d.session_expiry_interval_secs,
                },
                v5::Packet::Connect(_) => Incoming::Unexpected("second CONNECT"),
                v5::Packet::Auth(_) => {
                    Incoming::Unexpected("AUTH (enhanced authentication is not supported)")
                }
                v5::Packet::PublishReceived(_)
                | v5::Packet::PublishRelease(_)
                | v5::Packet::PublishComplete(_) => Incoming::Unexpected("QoS 2 flow packet"),
                v5::Packet::ConnectAck(_)
                | v5::Packet::SubscribeAck(_)
                | v5::Packet::UnsubscribeAck(_)
                | v5::Packet::PingResponse => Incoming::Unexpected("server-to-client packet"),
            })),
        }
    }

    fn encode_v5(codec: &mut v5::Codec, packet: v5::Packet, buf: &mut BytesMut) -> bool {
        let start = buf.len();
        match codec.encode(packet, buf) {
            Ok(()) => true,
            Err(e) => {
                buf.truncate(start);
                tracing::error!(error = %e, "failed to encode an MQTT 5 packet");
                false
            }
        }
    }

    fn encode_v3(codec: &mut v3::Codec, packet: v3::Packet, buf: &mut BytesMut) -> bool {
        let start = buf.len();
        match codec.encode(packet, buf) {
            Ok(()) => true,
            Err(e) => {
                buf.truncate(start);
                tracing::error!(error = %e, "failed to encode an MQTT 3 packet");
                false
            }
        }
    }

    pub(crate) fn encode_connack(&mut self, grant: &Grant, buf: &mut BytesMut) {
        match self {
            Codec::V3(codec) => {
                let ack = v3::ConnectAck {
                    return_code: v3::ConnectAckReason::ConnectionAccepted,
                    session_present: grant.session_present,
                };
                Self::encode_v3(codec, v3::Packet::ConnectAck(ack), buf);
            }
            Codec::V5(codec) => {
                let ack = v5::ConnectAck {
                    session_present: grant.session_present,
                    reason_code: v5::ConnectAckReason::Success,
                    session_expiry_interval_secs: grant.session_expiry,
                    receive_max: NonZeroU16::new(grant.receive_maximum).unwrap_or(NonZeroU16::MIN),
                    max_qos: rmqtt_codec::types::QoS::AtLeastOnce,
                    max_packet_size: Some(grant.max_packet_size),
                    assigned_client_id: grant.assigned_client_id.clone(),
                    topic_alias_max: grant.topic_alias_maximum,
                    retain_available: false,
                    wildcard_subscription_available: grant.wildcard_subscriptions,
                    subscription_identifiers_available: false,
                    shared_subscription_available: grant.shared_subscriptions,
                    server_keepalive_sec: grant.server_keep_alive,
                    ..Default::default()
                };
                Self::encode_v5(codec, v5::Packet::ConnectAck(Box::new(ack)), buf);
            }
        }
    }

    pub(crate) fn encode_puback(
        &mut self,
        packet_id: NonZeroU16,
        reason: ReasonCode,
        buf: &mut BytesMut,
    ) {
        match self {
            Codec::V3(codec) => {
                Self::encode_v3(codec, v3::Packet::PublishAck { packet_id }, buf);
            }
            Codec::V5(codec) => {
                let ack = v5::PublishAck {
                    packet_id,
                    reason_code: reason
                        .0
                        .try_into()
                        .unwrap_or(v5::PublishAckReason::UnspecifiedError),
                    properties: Vec::new(),
                    reason_string: None,
                };
                Self::encode_v5(codec, v5::Packet::PublishAck(ack), buf);
            }
        }
    }

    pub(crate) fn encode_suback(
        &mut self,
        packet_id: NonZeroU16,
        codes: &[ReasonCode],
        buf: &mut BytesMut,
    ) {
        match self {
            Codec::V3(codec) => {
                let status = codes
                    .iter()
                    .map(|c| match c.0 {
                        0 => v3::SubscribeReturnCode::Success(rmqtt_codec::types::QoS::AtMostOnce),
                        1 => v3::SubscribeReturnCode::Success(rmqtt_codec::types::QoS::AtLeastOnce),
                        _ => v3::SubscribeReturnCode::Failure,
                    })
                    .collect();
                Self::encode_v3(codec, v3::Packet::SubscribeAck { packet_id, status }, buf);
            }
            Codec::V5(codec) => {
                let status = codes
                    .iter()
                    .map(|c| {
                        c.0.try_into()
                            .unwrap_or(v5::SubscribeAckReason::UnspecifiedError)
                    })
                    .collect();
                let ack = v5::SubscribeAck {
                    packet_id,
                    properties: Vec::new(),
                    reason_string: None,
                    status,
                };
                Self::encode_v5(codec, v5::Packet::SubscribeAck(ack), buf);
            }
        }
    }

    pub(crate) fn encode_unsuback(
        &mut self,
        packet_id: NonZeroU16,
        codes: &[ReasonCode],
        buf: &mut BytesMut,
    ) {
        match self {
            Codec::V3(codec) => {
                Self::encode_v3(codec, v3::Packet::UnsubscribeAck { packet_id }, buf);
            }
            Codec::V5(codec) => {
                let status = codes
                    .iter()
                    .map(|c| {
                        c.0.try_into()
                            .unwrap_or(v5::UnsubscribeAckReason::UnspecifiedError)
                    })
                    .collect();
                let ack = v5::UnsubscribeAck {
                    packet_id,
                    properties: Vec::new(),
                    reason_string: None,
                    status,
                };
                Self::encode_v5(codec, v5::Packet::UnsubscribeAck(ack), buf);
            }
        }
    }

    pub(crate) fn encode_pingresp(&mut self, buf: &mut BytesMut) {
        buf.extend_from_slice(&[0xD0, 0x00]);
    }

    /// A server DISCONNECT (MQTT 5 only; MQTT 3 has none).
    pub(crate) fn encode_disconnect(&mut self, reason: ReasonCode, buf: &mut BytesMut) {
        if let Codec::V5(codec) = self {
            let code = reason
                .0
                .try_into()
                .unwrap_or(v5::DisconnectReasonCode::UnspecifiedError);
            Self::encode_v5(
                codec,
                v5::Packet::Disconnect(v5::Disconnect::new(code)),
                buf,
            );
        }
    }

    /// Encodes an outbound PUBLISH. Returns `false` (writing nothing) when it would exceed
    /// `max_size` bytes (the client's Maximum Packet Size).
    pub(crate) fn encode_publish(
        &mut self,
        out: Outgoing<'_>,
        max_size: usize,
        buf: &mut BytesMut,
    ) -> bool {
        let publish = match out {
            Outgoing::Qos0(msg, expiry) => self.publish_packet(msg, None, false, expiry),
            Outgoing::Qos1 {
                msg,
                packet_id,
                dup,
                expiry,
            } => self.publish_packet(msg.clone(), Some(packet_id), dup, expiry),
        };
        let start = buf.len();
        let ok = match self {
            Codec::V3(codec) => Self::encode_v3(codec, v3::Packet::Publish(Box::new(publish)), buf),
            Codec::V5(codec) => Self::encode_v5(codec, v5::Packet::Publish(Box::new(publish)), buf),
        };
        if ok && buf.len() - start > max_size {
            buf.truncate(start);
            return false;
        }
        ok
    }

    fn publish_packet(
        &self,
        msg: OutboundMessage,
        packet_id: Option<NonZeroU16>,
        dup: bool,
        expiry: Option<u32>,
    ) -> Publish {
        Publish {
            dup,
            retain: false,
            qos: msg.qos.to_codec(),
            topic: msg.topic,
            packet_id,
            payload: msg.payload,
            properties: self.is_v5().then(|| to_codec_props(msg.properties, expiry)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vlen(r: u32) -> u32 {
        match r {
            0..=127 => 1,
            128..=16_383 => 2,
            16_384..=2_097_151 => 3,
            _ => 4,
        }
    }

    #[test]
    fn remaining_length_limit_fits_the_packet_size() {
        for max in [
            64u32,
            128,
            129,
            130,
            131,
            16_384,
            16_386,
            16_387,
            1 << 20,
            268_435_460,
        ] {
            let r = max_remaining_length(max);
            assert!(r + 1 + vlen(r) <= max, "{max}: {r}");
            assert!(
                r + 1 + 1 + vlen(r + 1) > max || r == 268_435_455,
                "{max}: {r} is not the largest"
            );
        }
    }

    #[test]
    fn unknown_level_is_recognised() {
        assert_eq!(
            unknown_protocol_level(b"\x10\x10\x00\x04MQTT\x06\x02"),
            Some(6)
        );
        assert_eq!(
            unknown_protocol_level(b"\x10\x10\x00\x04MQTT\x04\x02"),
            None
        );
        assert_eq!(
            unknown_protocol_level(b"\x10\x10\x00\x04MQTX\x06\x02"),
            None
        );
        assert_eq!(unknown_protocol_level(b"\x10"), None);
        assert_eq!(unknown_protocol_level(b"\x10\xff\xff\xff\xff\xff"), None);
    }
}
