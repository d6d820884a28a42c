//! The part of the wire format both transports share (RFC 7252 §3.1, RFC 8323 §3.2): options
//! as delta/length nibbles with their 13 (+1 byte) and 14 (+2 bytes) extended forms, then the
//! payload marker `0xFF` and the payload. Used by [`crate::udp`] and [`crate::tcp`].

use bytes::{BufMut, Bytes};

use crate::error::{DecodeError, EncodeError, Part};
use crate::option::{OptionNumber, Options};

/// The longest option value the length field can express (14: 269 + 65535).
pub const MAX_OPTION_LEN: usize = 269 + 0xffff;

/// The nibble and extended bytes for a delta or length value.
fn nibble(value: usize) -> (u8, usize) {
    match value {
        0..=12 => (value as u8, 0),
        13..=268 => (13, 1),
        _ => (14, 2),
    }
}

fn put_extended(out: &mut impl BufMut, value: usize) {
    match value {
        0..=12 => {}
        13..=268 => out.put_u8((value - 13) as u8),
        _ => out.put_u16((value - 269) as u16),
    }
}

/// The size of options and payload as [`encode_body`] writes them.
pub fn body_len(options: &Options, payload: &[u8]) -> usize {
    let mut previous = 0;
    let mut len = 0;
    for (number, value) in options.iter() {
        let delta = usize::from(number.0 - previous);
        previous = number.0;
        len += 1 + nibble(delta).1 + nibble(value.len()).1 + value.len();
    }
    if !payload.is_empty() {
        len += 1 + payload.len();
    }
    len
}

/// Checks that every option value fits the length field.
pub fn check_options(options: &Options) -> Result<(), EncodeError> {
    match options.iter().find(|(_, v)| v.len() > MAX_OPTION_LEN) {
        Some((number, v)) => Err(EncodeError::OptionTooLong {
            number,
            len: v.len(),
        }),
        None => Ok(()),
    }
}

/// Writes options and, if there is one, the payload marker and payload. Call
/// [`check_options`] first.
pub fn encode_body(options: &Options, payload: &[u8], out: &mut impl BufMut) {
    let mut previous = 0;
    for (number, value) in options.iter() {
        let delta = usize::from(number.0 - previous);
        previous = number.0;
        let (d, _) = nibble(delta);
        let (l, _) = nibble(value.len());
        out.put_u8((d << 4) | l);
        put_extended(out, delta);
        put_extended(out, value.len());
        out.put_slice(value);
    }
    if !payload.is_empty() {
        out.put_u8(0xff);
        out.put_slice(payload);
    }
}

/// Reads the extended form of a nibble at `*at`; `position` is the option header byte's
/// position in the message, for errors.
fn extended(
    body: &[u8],
    at: &mut usize,
    nibble: u8,
    part: Part,
    position: usize,
) -> Result<usize, DecodeError> {
    let take = |n: usize, at: &mut usize| -> Result<&[u8], DecodeError> {
        let bytes = body.get(*at..*at + n).ok_or(DecodeError::Truncated(part))?;
        *at += n;
        Ok(bytes)
    };
    match nibble {
        0..=12 => Ok(usize::from(nibble)),
        13 => Ok(usize::from(take(1, at)?[0]) + 13),
        14 => {
            let b = take(2, at)?;
            Ok(usize::from(u16::from_be_bytes([b[0], b[1]])) + 269)
        }
        _ => Err(match part {
            Part::OptionDelta => DecodeError::OptionDelta { offset: position },
            _ => DecodeError::OptionLength { offset: position },
        }),
    }
}

/// Reads options and payload from `body` (everything after the token). `offset` is where
/// `body` starts in the message, for error positions.
pub fn decode_body(body: &Bytes, offset: usize) -> Result<(Options, Bytes), DecodeError> {
    let mut options = Options::new();
    let mut number: u32 = 0;
    let mut at = 0;
    while at < body.len() {
        let first = body[at];
        let position = offset + at;
        at += 1;
        if first == 0xff {
            if at == body.len() {
                return Err(DecodeError::EmptyPayload);
            }
            return Ok((options, body.slice(at..)));
        }
        let delta = extended(body, &mut at, first >> 4, Part::OptionDelta, position)?;
        let len = extended(body, &mut at, first & 0x0f, Part::OptionLength, position)?;
        number += delta as u32;
        let Ok(n) = u16::try_from(number) else {
            return Err(DecodeError::OptionNumber {
                number,
                offset: position,
            });
        };
        if body.len() - at < len {
            return Err(DecodeError::Truncated(Part::OptionValue));
        }
        options.push_decoded(OptionNumber(n), body.slice(at..at + len));
        at += len;
    }
    Ok((options, Bytes::new()))
}
