//! The codec adapter: the only place that touches `rmqtt-codec` types (with the mapping of its
//! decoding errors in [`crate::violation`]). It turns MQTT 3.1, 3.1.1 and 5.0 packets into one
//! version-neutral [`Incoming`]; `encode` writes the server's packets for the version the
//! connection speaks.

use std::num::{NonZeroU16, NonZeroU32};

use bytes::BytesMut;
use bytestring::ByteString;
use rmqtt_codec::error::DecodeError;
use rmqtt_codec::types::Publish;
use rmqtt_codec::version::{ProtocolVersion as CodecVersion, VersionCodec};
use rmqtt_codec::{v3, v5};
use tokio_util::codec::Decoder;

use crate::reason::ReasonCode;
use crate::types::{MessageProperties, ProtocolVersion, QoS, SubscriptionOptions, UserProperty};
use crate::violation::{ConnectError, PacketError};

mod encode;

pub(crate) use encode::{encode_refusal, Grant};

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

impl Handshake {
    /// Decodes the CONNECT from `buf` once it is complete.
    pub(crate) fn decode(
        &mut self,
        buf: &mut BytesMut,
        max_packet_size: u32,
    ) -> Result<Option<(Codec, ConnectPacket)>, ConnectError> {
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
                    // A CONNECT with the MQTT protocol name and a level we do not know gets the
                    // 3.1.1 "unacceptable protocol level" answer.
                    Err(e) => {
                        return Err(match unknown_protocol_level(buf) {
                            Some(level) => ConnectError::UnsupportedLevel(level),
                            None => ConnectError::NotMqtt(PacketError::new(e)),
                        })
                    }
                },
                Handshake::Decoding(Codec::V3(codec)) => {
                    return match codec.decode(buf) {
                        Ok(None) => Ok(None),
                        Ok(Some((v3::Packet::Connect(c), _))) => {
                            Ok(Some((Codec::V3(codec.clone()), ConnectPacket::V3(c))))
                        }
                        Ok(Some(_)) => Err(ConnectError::NotConnect { v5: false }),
                        Err(e) => Err(ConnectError::Invalid {
                            v5: false,
                            source: PacketError::new(e),
                        }),
                    };
                }
                Handshake::Decoding(Codec::V5(codec)) => {
                    return match codec.decode(buf) {
                        Ok(None) => Ok(None),
                        Ok(Some((v5::Packet::Connect(c), _))) => {
                            Ok(Some((Codec::V5(codec.clone()), ConnectPacket::V5(c))))
                        }
                        Ok(Some(_)) => Err(ConnectError::NotConnect { v5: true }),
                        Err(e) => Err(ConnectError::Invalid {
                            v5: true,
                            source: PacketError::new(e),
                        }),
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
    // The remaining length: at most four bytes, the last without the continuation bit. A
    // malformed one is not a CONNECT of an unknown level (and deciding so from however many
    // bytes have arrived would make the answer depend on how the stream was split).
    let mut i = 1;
    while *buf.get(i)? & 0x80 != 0 {
        i += 1;
        if i > 4 {
            return None;
        }
    }
    let name = buf.get(i + 1..i + 7)?;
    let level = *buf.get(i + 7)?;
    (name == b"\x00\x04MQTT" && !(3..=5).contains(&level)).then_some(level)
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
    pub(crate) fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Incoming>, PacketError> {
        self.decode_codec(buf).map_err(PacketError::new)
    }

    fn decode_codec(&mut self, buf: &mut BytesMut) -> Result<Option<Incoming>, DecodeError> {
        Ok(match self {
            Codec::V3(codec) => codec.decode(buf)?.map(|(packet, _)| from_v3(packet)),
            Codec::V5(codec) => codec.decode(buf)?.map(|(packet, _)| from_v5(packet)),
        })
    }
}

fn from_v3(packet: v3::Packet) -> Incoming {
    match packet {
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
    }
}

fn from_v5(packet: v5::Packet) -> Incoming {
    match packet {
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
        // Found by the fuzz target mqtt_wire: a malformed remaining length (four bytes, all
        // with the continuation bit) was taken for a CONNECT of level 0 when the whole packet
        // had arrived, and for no CONNECT when only its first bytes had.
        assert_eq!(
            unknown_protocol_level(b"\x10\xff\xff\xff\xff\x15\x00\x04MQTT\x00\x04"),
            None
        );
        assert_eq!(
            unknown_protocol_level(b"\x10\x90\x01\x00\x04MQTT\x06\x02"),
            Some(6)
        );
        assert_eq!(unknown_protocol_level(b"\x10\xff\xff\xff\xff\xff"), None);
    }
}
