//! Encoding the server's packets for the version the connection speaks.

use std::num::{NonZeroU16, NonZeroU32};

use bytes::BytesMut;
use bytestring::ByteString;
use rmqtt_codec::types::Publish;
use rmqtt_codec::{v3, v5};
use tokio_util::codec::Encoder;

use super::Codec;
use crate::reason::ReasonCode;
use crate::session::Outgoing;
use crate::types::{MessageProperties, OutboundMessage};
use crate::violation::ConnackRefusal;

/// Encodes a CONNACK that refuses a connection (and nothing else); nothing for
/// [`ConnackRefusal::Close`].
pub(crate) fn encode_refusal(refusal: ConnackRefusal, buf: &mut BytesMut) {
    match refusal {
        ConnackRefusal::V5(code) => {
            let ack = v5::ConnectAck {
                reason_code: code
                    .0
                    .try_into()
                    .unwrap_or(v5::ConnectAckReason::UnspecifiedError),
                ..Default::default()
            };
            let _ = v5::Codec::new(0, 0).encode(v5::Packet::ConnectAck(Box::new(ack)), buf);
        }
        ConnackRefusal::V3(code) => {
            let ack = v3::ConnectAck {
                return_code: code
                    .try_into()
                    .unwrap_or(v3::ConnectAckReason::NotAuthorized),
                session_present: false,
            };
            let _ = v3::Codec::new(0).encode(v3::Packet::ConnectAck(ack), buf);
        }
        ConnackRefusal::Close => {}
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

/// The codec's reason codes for ours; `fallback` for a code it does not know.
fn v5_codes<T: TryFrom<u8> + Copy>(codes: &[ReasonCode], fallback: T) -> Vec<T> {
    codes
        .iter()
        .map(|c| T::try_from(c.0).unwrap_or(fallback))
        .collect()
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

impl Codec {
    /// Encodes `packet` with the connection's codec into `buf`; on failure `buf` is as it was
    /// and the error is logged.
    fn encode_with<C, P>(codec: &mut C, packet: P, buf: &mut BytesMut) -> bool
    where
        C: Encoder<P>,
        C::Error: std::fmt::Display,
    {
        let start = buf.len();
        match codec.encode(packet, buf) {
            Ok(()) => true,
            Err(e) => {
                buf.truncate(start);
                tracing::error!(error = %e, "failed to encode an MQTT packet");
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
                Self::encode_with(codec, v3::Packet::ConnectAck(ack), buf);
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
                Self::encode_with(codec, v5::Packet::ConnectAck(Box::new(ack)), buf);
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
                Self::encode_with(codec, v3::Packet::PublishAck { packet_id }, buf);
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
                Self::encode_with(codec, v5::Packet::PublishAck(ack), buf);
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
                Self::encode_with(codec, v3::Packet::SubscribeAck { packet_id, status }, buf);
            }
            Codec::V5(codec) => {
                let ack = v5::SubscribeAck {
                    packet_id,
                    properties: Vec::new(),
                    reason_string: None,
                    status: v5_codes(codes, v5::SubscribeAckReason::UnspecifiedError),
                };
                Self::encode_with(codec, v5::Packet::SubscribeAck(ack), buf);
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
                Self::encode_with(codec, v3::Packet::UnsubscribeAck { packet_id }, buf);
            }
            Codec::V5(codec) => {
                let ack = v5::UnsubscribeAck {
                    packet_id,
                    properties: Vec::new(),
                    reason_string: None,
                    status: v5_codes(codes, v5::UnsubscribeAckReason::UnspecifiedError),
                };
                Self::encode_with(codec, v5::Packet::UnsubscribeAck(ack), buf);
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
            Self::encode_with(
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
            Codec::V3(codec) => {
                Self::encode_with(codec, v3::Packet::Publish(Box::new(publish)), buf)
            }
            Codec::V5(codec) => {
                Self::encode_with(codec, v5::Packet::Publish(Box::new(publish)), buf)
            }
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
