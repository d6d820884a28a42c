//! CoAP over UDP (RFC 7252 §3): the 4-byte header (version 1, type, token length, code,
//! message id), token, options and payload of one datagram, bounded by a configurable maximum
//! message size. [`UdpCodec::decode`] returns a precise [`DecodeError`] for every malformed
//! datagram; [`peek_header`] still tells the type and message id of one, so that a server can
//! answer a malformed confirmable message with RST (RFC 7252 §4.2).
//!
//! The codec is written here rather than wrapping `coap-lite`: that crate's decoder reports
//! five error kinds without saying where or what (no distinction of truncation from reserved
//! nibbles, no size limit), keeps options in a map, and its option codec is not reachable for
//! the RFC 8323 framing, which must share the option model with UDP.

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::{DecodeError, EncodeError, Part};
use crate::message::{Message, MessageType, Token, UdpMessage};
use crate::{code::Code, wire};

/// RFC 7252 §4.6's default: 1024 bytes of payload and 128 of header fit 1152 bytes.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 1152;

/// Encodes and decodes UDP datagrams, refusing those above `max_message_size`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpCodec {
    pub max_message_size: usize,
}

impl Default for UdpCodec {
    fn default() -> UdpCodec {
        UdpCodec {
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
        }
    }
}

/// The fixed header of a datagram, readable even when the rest is malformed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub version: u8,
    pub mtype: MessageType,
    pub token_length: u8,
    pub code: Code,
    pub message_id: u16,
}

/// The header of a datagram of at least 4 bytes.
pub fn peek_header(datagram: &[u8]) -> Option<Header> {
    let h = datagram.get(..4)?;
    Some(Header {
        version: h[0] >> 6,
        mtype: MessageType::from_bits(h[0] >> 4),
        token_length: h[0] & 0x0f,
        code: Code(h[1]),
        message_id: u16::from_be_bytes([h[2], h[3]]),
    })
}

impl UdpCodec {
    pub fn new(max_message_size: usize) -> UdpCodec {
        UdpCodec { max_message_size }
    }

    /// Decodes one datagram.
    pub fn decode(&self, datagram: &[u8]) -> Result<UdpMessage, DecodeError> {
        self.decode_bytes(Bytes::copy_from_slice(datagram))
    }

    /// Decodes one datagram without copying: options and payload share `datagram`.
    pub fn decode_bytes(&self, datagram: Bytes) -> Result<UdpMessage, DecodeError> {
        if datagram.len() > self.max_message_size {
            return Err(DecodeError::TooLarge {
                size: datagram.len() as u64,
                max: self.max_message_size,
            });
        }
        let header = peek_header(&datagram).ok_or(DecodeError::Truncated(Part::Header))?;
        if header.version != 1 {
            return Err(DecodeError::Version(header.version));
        }
        if header.token_length > 8 {
            return Err(DecodeError::TokenLength(header.token_length));
        }
        if header.code.is_empty() && datagram.len() > 4 {
            return Err(DecodeError::EmptyNotEmpty(datagram.len() - 4));
        }
        let token_end = 4 + usize::from(header.token_length);
        let token = datagram
            .get(4..token_end)
            .ok_or(DecodeError::Truncated(Part::Token))?;
        let token = Token::new(token).map_err(|_| DecodeError::TokenLength(header.token_length))?;
        let (options, payload) = wire::decode_body(&datagram.slice(token_end..), token_end)?;
        Ok(UdpMessage {
            mtype: header.mtype,
            message_id: header.message_id,
            message: Message {
                code: header.code,
                token,
                options,
                payload,
            },
        })
    }

    /// The size [`UdpCodec::encode`] would write.
    pub fn encoded_len(msg: &UdpMessage) -> usize {
        let m = &msg.message;
        4 + m.token.len() + wire::body_len(&m.options, &m.payload)
    }

    /// Appends the datagram of `msg` to `out`; nothing is written on error.
    pub fn encode(&self, msg: &UdpMessage, out: &mut BytesMut) -> Result<(), EncodeError> {
        let m = &msg.message;
        if m.code.is_empty() && !m.is_empty() {
            return Err(EncodeError::EmptyNotEmpty);
        }
        wire::check_options(&m.options)?;
        let size = Self::encoded_len(msg);
        if size > self.max_message_size {
            return Err(EncodeError::TooLarge {
                size,
                max: self.max_message_size,
            });
        }
        out.reserve(size);
        out.put_u8((1 << 6) | ((msg.mtype as u8) << 4) | m.token.len() as u8);
        out.put_u8(m.code.0);
        out.put_u16(msg.message_id);
        out.put_slice(&m.token);
        wire::encode_body(&m.options, &m.payload, out);
        Ok(())
    }

    /// The datagram of `msg` as bytes.
    pub fn to_bytes(&self, msg: &UdpMessage) -> Result<Bytes, EncodeError> {
        let mut out = BytesMut::new();
        self.encode(msg, &mut out)?;
        Ok(out.freeze())
    }
}
