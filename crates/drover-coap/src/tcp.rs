//! CoAP over TCP and TLS (RFC 8323 §3.2): frames of `Len << 4 | TKL`, the extended length (13:
//! one more byte, value − 13; 14: two, value − 269; 15: four, value − 65805; the length counts
//! options and payload only), code, token, options and payload; no type, message id, ACK or RST.
//!
//! [`TcpCodec::decode`] is a streaming decoder: it takes what has arrived so far and returns a
//! message once its whole frame is there, `Ok(None)` until then. A frame whose announced size
//! is above the configured maximum is refused as soon as its length is readable, before any
//! of it is buffered. The codec also implements `tokio_util::codec` `Decoder` and `Encoder`
//! for `Framed` connections. Signaling messages (7.xx) are ordinary [`Message`]s here; their
//! meaning is [`crate::signal`]'s.

use bytes::{Buf, BufMut, BytesMut};

use crate::code::Code;
use crate::error::{DecodeError, EncodeError, Part};
use crate::message::{Message, Token};
use crate::wire;

/// The base value of Max-Message-Size (RFC 8323 §5.3.1): what a peer may send before it has
/// seen a CSM raising it.
pub const BASE_MAX_MESSAGE_SIZE: usize = 1152;

/// Frames messages on a byte stream. `max_message_size` bounds the whole frame (header,
/// extended length, code, token, options, payload) in both directions: decode refuses larger
/// frames from the peer, encode refuses to write larger ones (set it to what the peer's CSM
/// allows before encoding for it, or keep two codecs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpCodec {
    pub max_message_size: usize,
}

impl Default for TcpCodec {
    fn default() -> TcpCodec {
        TcpCodec {
            max_message_size: BASE_MAX_MESSAGE_SIZE,
        }
    }
}

/// How many extended length bytes a Len nibble announces.
const fn extended_len(nibble: u8) -> usize {
    match nibble {
        13 => 1,
        14 => 2,
        15 => 4,
        _ => 0,
    }
}

impl TcpCodec {
    pub fn new(max_message_size: usize) -> TcpCodec {
        TcpCodec { max_message_size }
    }

    /// Takes the first complete frame off `buf`: `Ok(None)` while it is incomplete (nothing is
    /// consumed), an error for a malformed or oversized one (the connection must be closed,
    /// after an Abort). Never panics, whatever the bytes.
    pub fn decode(&self, buf: &mut BytesMut) -> Result<Option<Message>, DecodeError> {
        let Some(&first) = buf.first() else {
            return Ok(None);
        };
        let (len_nibble, tkl) = (first >> 4, first & 0x0f);
        if tkl > 8 {
            return Err(DecodeError::TokenLength(tkl));
        }
        let ext = extended_len(len_nibble);
        let Some(ext_bytes) = buf.get(1..1 + ext) else {
            return Ok(None);
        };
        let body_len: u64 = match ext {
            0 => u64::from(len_nibble),
            1 => u64::from(ext_bytes[0]) + 13,
            2 => u64::from(u16::from_be_bytes([ext_bytes[0], ext_bytes[1]])) + 269,
            _ => {
                let b = [ext_bytes[0], ext_bytes[1], ext_bytes[2], ext_bytes[3]];
                u64::from(u32::from_be_bytes(b)) + 65805
            }
        };
        let header_len = 2 + ext + usize::from(tkl);
        let size = header_len as u64 + body_len;
        if size > self.max_message_size as u64 {
            return Err(DecodeError::TooLarge {
                size,
                max: self.max_message_size,
            });
        }
        // `size` is at most max_message_size, a usize.
        let size = size as usize;
        if buf.len() < size {
            buf.reserve(size - buf.len());
            return Ok(None);
        }
        let frame = buf.split_to(size).freeze();
        let code = Code(frame[1 + ext]);
        let token = Token::new(&frame[2 + ext..header_len])
            .map_err(|_| DecodeError::Truncated(Part::Token))?;
        let (options, payload) = wire::decode_body(&frame.slice(header_len..), header_len)?;
        Ok(Some(Message {
            code,
            token,
            options,
            payload,
        }))
    }

    /// The size [`TcpCodec::encode`] would write.
    pub fn encoded_len(msg: &Message) -> usize {
        let body = wire::body_len(&msg.options, &msg.payload);
        let ext = match body {
            0..=12 => 0,
            13..=268 => 1,
            269..=65804 => 2,
            _ => 4,
        };
        2 + ext + msg.token.len() + body
    }

    /// Appends the frame of `msg` to `out`; nothing is written on error.
    pub fn encode(&self, msg: &Message, out: &mut BytesMut) -> Result<(), EncodeError> {
        wire::check_options(&msg.options)?;
        let size = Self::encoded_len(msg);
        let body = wire::body_len(&msg.options, &msg.payload);
        if size > self.max_message_size || body as u64 > u64::from(u32::MAX) + 65805 {
            return Err(EncodeError::TooLarge {
                size,
                max: self.max_message_size,
            });
        }
        out.reserve(size);
        let tkl = msg.token.len() as u8;
        match body {
            0..=12 => out.put_u8(((body as u8) << 4) | tkl),
            13..=268 => {
                out.put_u8((13 << 4) | tkl);
                out.put_u8((body - 13) as u8);
            }
            269..=65804 => {
                out.put_u8((14 << 4) | tkl);
                out.put_u16((body - 269) as u16);
            }
            _ => {
                out.put_u8((15 << 4) | tkl);
                out.put_u32((body - 65805) as u32);
            }
        }
        out.put_u8(msg.code.0);
        out.put_slice(&msg.token);
        wire::encode_body(&msg.options, &msg.payload, out);
        Ok(())
    }
}

/// What a `Framed` CoAP-over-TCP connection can fail with.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error(transparent)]
    Encode(#[from] EncodeError),
}

impl tokio_util::codec::Decoder for TcpCodec {
    type Item = Message;
    type Error = CodecError;
    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Message>, CodecError> {
        Ok(TcpCodec::decode(self, src)?)
    }
    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Message>, CodecError> {
        match TcpCodec::decode(self, buf)? {
            Some(msg) => Ok(Some(msg)),
            None if buf.is_empty() => Ok(None),
            None => {
                let pending = buf.remaining();
                buf.clear();
                Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!("connection closed inside a frame ({pending} bytes pending)"),
                )
                .into())
            }
        }
    }
}

impl tokio_util::codec::Encoder<&Message> for TcpCodec {
    type Error = CodecError;
    fn encode(&mut self, msg: &Message, dst: &mut BytesMut) -> Result<(), CodecError> {
        Ok(TcpCodec::encode(self, msg, dst)?)
    }
}
