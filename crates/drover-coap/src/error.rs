//! The errors of the codecs: [`DecodeError`] names every way bytes can fail to be a CoAP message
//! (UDP or TCP), [`EncodeError`] every way a message can fail to be written. Both are plain
//! values (`Clone`, `PartialEq`), so callers and tests match on them exactly.

use crate::option::OptionNumber;

/// Which part of a message the input ended in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// The fixed UDP header (4 bytes).
    Header,
    /// The TCP length's extended bytes, or the code byte after them.
    Length,
    /// The token.
    Token,
    /// An option's extended delta bytes.
    OptionDelta,
    /// An option's extended length bytes.
    OptionLength,
    /// An option's value.
    OptionValue,
}

impl std::fmt::Display for Part {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Part::Header => "header",
            Part::Length => "length and code",
            Part::Token => "token",
            Part::OptionDelta => "option delta",
            Part::OptionLength => "option length",
            Part::OptionValue => "option value",
        })
    }
}

/// Why bytes are not a CoAP message. Each variant is a "message format error" of RFC 7252
/// §3/§4.2 or RFC 8323 §3.2 (a UDP server answers a confirmable one with RST, a TCP server
/// closes the connection, with Abort).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The message (or the length a TCP frame announces) is above the configured maximum.
    #[error("message of {size} bytes exceeds the maximum of {max}")]
    TooLarge { size: u64, max: usize },
    /// The input ended inside a part of the message.
    #[error("message truncated in its {0}")]
    Truncated(Part),
    /// UDP: the version field is not 1.
    #[error("unsupported CoAP version {0}")]
    Version(u8),
    /// Token lengths 9 to 15 are reserved.
    #[error("reserved token length {0}")]
    TokenLength(u8),
    /// An option delta nibble of 15 that is not the payload marker `0xFF`.
    #[error("reserved option delta 15 at byte {offset}")]
    OptionDelta { offset: usize },
    /// An option length nibble of 15.
    #[error("reserved option length 15 at byte {offset}")]
    OptionLength { offset: usize },
    /// The option number (previous number plus delta) is above 65535.
    #[error("option number {number} at byte {offset} is above 65535")]
    OptionNumber { number: u32, offset: usize },
    /// A payload marker followed by no payload (RFC 7252 §3).
    #[error("payload marker without payload")]
    EmptyPayload,
    /// UDP: an Empty message (code 0.00) with a token, options or a payload (RFC 7252 §4.1).
    #[error("empty message (0.00) carries {0} bytes after its header")]
    EmptyNotEmpty(usize),
}

/// Why a message cannot be written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// The encoded message would be above the configured maximum.
    #[error("encoded message of {size} bytes exceeds the maximum of {max}")]
    TooLarge { size: usize, max: usize },
    /// An option value longer than the wire can carry (65804 bytes).
    #[error("option {number} value of {len} bytes is too long to encode")]
    OptionTooLong { number: OptionNumber, len: usize },
    /// UDP: an Empty message (0.00) must have no token, options or payload.
    #[error("an empty message (0.00) must have no token, options or payload")]
    EmptyNotEmpty,
}
