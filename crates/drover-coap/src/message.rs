//! The message model shared by both transports: [`Token`], [`Message`] (code, token, options,
//! payload — all an RFC 8323 frame has), and for UDP the [`MessageType`] and message id
//! around it ([`UdpMessage`]).

use bytes::Bytes;
use std::fmt;

use crate::code::Code;
use crate::option::Options;

/// A token: 0 to 8 opaque bytes chosen by the requester to match responses to requests.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Token {
    len: u8,
    bytes: [u8; 8],
}

/// A token longer than 8 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("token of {0} bytes is longer than 8")]
pub struct TokenTooLong(pub usize);

impl Token {
    pub const EMPTY: Token = Token {
        len: 0,
        bytes: [0; 8],
    };
    pub fn new(bytes: &[u8]) -> Result<Token, TokenTooLong> {
        if bytes.len() > 8 {
            return Err(TokenTooLong(bytes.len()));
        }
        let mut token = Token {
            len: bytes.len() as u8,
            bytes: [0; 8],
        };
        token.bytes[..bytes.len()].copy_from_slice(bytes);
        Ok(token)
    }
    /// A token of 8 bytes from a `u64` (e.g. a counter or random number).
    pub fn from_u64(value: u64) -> Token {
        Token {
            len: 8,
            bytes: value.to_be_bytes(),
        }
    }
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
    pub fn len(&self) -> usize {
        usize::from(self.len)
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl std::ops::Deref for Token {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(")?;
        for b in self.as_bytes() {
            write!(f, "{b:02x}")?;
        }
        f.write_str(")")
    }
}

/// A CoAP message without the transport's header: what UDP and TCP have in common.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub code: Code,
    pub token: Token,
    pub options: Options,
    pub payload: Bytes,
}

impl Message {
    pub fn new(code: Code, token: Token) -> Message {
        Message {
            code,
            token,
            options: Options::new(),
            payload: Bytes::new(),
        }
    }
    /// The Empty message 0.00 (ACK, RST, ping over UDP; ignored over TCP).
    pub fn empty() -> Message {
        Message::new(Code::EMPTY, Token::EMPTY)
    }
    /// A response to `request`: same token, no options.
    pub fn response_to(request: &Message, code: Code) -> Message {
        Message::new(code, request.token)
    }
    pub fn with_payload(mut self, payload: impl Into<Bytes>) -> Message {
        self.payload = payload.into();
        self
    }
    /// Code 0.00, no token, no options, no payload.
    pub fn is_empty(&self) -> bool {
        self.code.is_empty()
            && self.token.is_empty()
            && self.options.is_empty()
            && self.payload.is_empty()
    }
}

/// The UDP message type (RFC 7252 §4.2/§4.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageType {
    /// Confirmable: acknowledged, retransmitted until it is.
    Confirmable = 0,
    /// Non-confirmable: best effort.
    NonConfirmable = 1,
    Acknowledgement = 2,
    Reset = 3,
}

impl MessageType {
    pub const fn from_bits(bits: u8) -> MessageType {
        match bits & 3 {
            0 => MessageType::Confirmable,
            1 => MessageType::NonConfirmable,
            2 => MessageType::Acknowledgement,
            _ => MessageType::Reset,
        }
    }
}

/// A message as UDP carries it: type and message id around the [`Message`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UdpMessage {
    pub mtype: MessageType,
    pub message_id: u16,
    pub message: Message,
}

impl UdpMessage {
    /// An empty ACK for `message_id` (a confirmable request answered separately later, or a
    /// confirmable response received).
    pub fn ack(message_id: u16) -> UdpMessage {
        UdpMessage {
            mtype: MessageType::Acknowledgement,
            message_id,
            message: Message::empty(),
        }
    }
    /// RST for `message_id` (a message that cannot be processed, RFC 7252 §4.2).
    pub fn reset(message_id: u16) -> UdpMessage {
        UdpMessage {
            mtype: MessageType::Reset,
            message_id,
            message: Message::empty(),
        }
    }
    /// The response piggy-backed on the ACK of a confirmable request (RFC 7252 §5.2.1), or a
    /// non-confirmable response to a non-confirmable request with a new message id.
    pub fn piggybacked(request: &UdpMessage, response: Message, new_id: u16) -> UdpMessage {
        match request.mtype {
            MessageType::Confirmable => UdpMessage {
                mtype: MessageType::Acknowledgement,
                message_id: request.message_id,
                message: response,
            },
            _ => UdpMessage {
                mtype: MessageType::NonConfirmable,
                message_id: new_id,
                message: response,
            },
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn tokens() {
        assert_eq!(Token::new(&[1, 2, 3]).unwrap().as_bytes(), &[1, 2, 3]);
        assert_eq!(Token::new(&[0; 9]), Err(TokenTooLong(9)));
        assert!(Token::EMPTY.is_empty());
        assert_eq!(Token::from_u64(0x0102).len(), 8);
        assert_eq!(
            format!("{:?}", Token::new(&[0xab, 1]).unwrap()),
            "Token(ab01)"
        );
    }

    #[test]
    fn piggybacked_responses() {
        let req = UdpMessage {
            mtype: MessageType::Confirmable,
            message_id: 7,
            message: Message::new(Code::POST, Token::new(&[9]).unwrap()),
        };
        let resp =
            UdpMessage::piggybacked(&req, Message::response_to(&req.message, Code::CHANGED), 99);
        assert_eq!(resp.mtype, MessageType::Acknowledgement);
        assert_eq!(resp.message_id, 7);
        assert_eq!(resp.message.token, req.message.token);
        let non = UdpMessage {
            mtype: MessageType::NonConfirmable,
            ..req.clone()
        };
        let resp =
            UdpMessage::piggybacked(&non, Message::response_to(&non.message, Code::CHANGED), 99);
        assert_eq!(
            (resp.mtype, resp.message_id),
            (MessageType::NonConfirmable, 99)
        );
    }
}
