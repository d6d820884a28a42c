//! Entry points for the fuzz targets (`fuzz/fuzz_targets/mqtt_wire.rs`), compiled only with the
//! `fuzzing` feature: the codec adapter is private to the crate, so this drives it the way a
//! connection does. Not an API.

use std::num::NonZeroU16;

use bytes::BytesMut;

use crate::reason::ReasonCode;
use crate::session::Outgoing;
use crate::topic;
use crate::types::{OutboundMessage, QoS};
use crate::violation::Violation;
use crate::wire::{self, Handshake, Incoming};

/// What [`decode_client_stream`] got through.
#[derive(Debug, Default)]
pub struct Decoded {
    /// Whether a CONNECT was decoded (and of which version).
    pub connect: Option<bool>,
    /// Packets decoded after the CONNECT.
    pub packets: usize,
    /// The reason code of the error that ended decoding, if any.
    pub error: Option<u8>,
}

/// Feeds `bytes` to the wire layer as a client's stream, in pieces of `chunk` bytes (at least
/// one): the CONNECT with version detection, then packets until the input ends or a packet is
/// malformed. Every decoded packet goes through what a connection does with it that needs no
/// policy (topic and filter checks, properties), and answers are encoded, so the encoders see
/// what the decoders let through.
pub fn decode_client_stream(bytes: &[u8], chunk: usize, max_packet_size: u32) -> Decoded {
    let chunk = chunk.max(1);
    let mut out = Decoded::default();
    let mut buf = BytesMut::new();
    let mut wbuf = BytesMut::new();
    let mut pieces = bytes.chunks(chunk);
    let mut handshake = Handshake::Detecting;
    let (mut codec, _connect) = loop {
        match handshake.decode(&mut buf, max_packet_size) {
            Ok(Some(connect)) => break connect,
            Ok(None) => {}
            Err(e) => {
                wire::encode_refusal(e.connack(), &mut wbuf);
                out.error = Some(match e.connack() {
                    crate::violation::ConnackRefusal::V5(code) => code.0,
                    crate::violation::ConnackRefusal::V3(code) => code,
                    crate::violation::ConnackRefusal::Close => 0,
                });
                let _ = e.to_string();
                return out;
            }
        }
        match pieces.next() {
            Some(piece) => buf.extend_from_slice(piece),
            None => return out,
        }
    };
    out.connect = Some(codec.is_v5());
    loop {
        match codec.decode(&mut buf) {
            Ok(Some(packet)) => {
                out.packets += 1;
                answer(&mut codec, packet, &mut wbuf);
                wbuf.clear();
            }
            Ok(None) => match pieces.next() {
                Some(piece) => buf.extend_from_slice(piece),
                None => return out,
            },
            Err(e) => {
                let v = Violation::Undecodable(e);
                out.error = Some(v.reason_code().0);
                let _ = v.to_string();
                codec.encode_disconnect(v.reason_code(), &mut wbuf);
                return out;
            }
        }
    }
}

fn answer(codec: &mut wire::Codec, packet: Incoming, wbuf: &mut BytesMut) {
    let id = NonZeroU16::MIN;
    match packet {
        Incoming::Publish(p) => {
            let p = *p;
            let (properties, _alias, _ids) = wire::publish_properties(p.properties);
            if topic::validate_topic_name(&p.topic).is_ok() {
                let qos = QoS::from_codec(p.qos).min(QoS::AtLeastOnce);
                let mut msg = OutboundMessage::new(p.topic.clone(), p.payload.clone(), qos);
                msg.properties = properties;
                let out = match p.packet_id {
                    Some(packet_id) if qos == QoS::AtLeastOnce => Outgoing::Qos1 {
                        msg: &msg,
                        packet_id,
                        dup: p.dup,
                        expiry: msg.properties.message_expiry_interval,
                    },
                    _ => Outgoing::Qos0(msg.clone(), None),
                };
                codec.encode_publish(out, usize::MAX, wbuf);
            }
            codec.encode_puback(p.packet_id.unwrap_or(id), ReasonCode::SUCCESS, wbuf);
        }
        Incoming::Subscribe {
            packet_id, filters, ..
        } => {
            let codes: Vec<ReasonCode> = filters
                .iter()
                .map(|(f, o)| match topic::parse_subscription(f) {
                    Ok((_, filter)) => {
                        let _ = topic::matches(filter, "a/b/c");
                        ReasonCode(o.qos.level().min(1))
                    }
                    Err(_) => ReasonCode::TOPIC_FILTER_INVALID,
                })
                .collect();
            codec.encode_suback(packet_id, &codes, wbuf);
        }
        Incoming::Unsubscribe { packet_id, filters } => {
            let codes = vec![ReasonCode::SUCCESS; filters.len()];
            codec.encode_unsuback(packet_id, &codes, wbuf);
        }
        Incoming::PingReq => codec.encode_pingresp(wbuf),
        Incoming::PubAck { .. } | Incoming::Disconnect { .. } | Incoming::Unexpected(_) => {
            codec.encode_disconnect(ReasonCode::PROTOCOL_ERROR, wbuf);
        }
    }
}
