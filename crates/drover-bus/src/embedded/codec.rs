//! The record format of segment files.
//!
//! A segment is a plain sequence of frames, nothing before, between or after them:
//!
//! ```text
//! frame   = body_len:u32le  crc:u32le  body            crc = CRC-32 (IEEE) of body
//! body    = format:u8 (=1)  offset:u64le  appended_ms:i64le
//!           event_secs:i64le  event_nanos:u32le  flags:u8
//!           id  type  channel  [content_type]  [data_schema]
//!           [application  application_uid]
//!           device  device_uid  [sender  sender_uid]  instance
//!           n_extensions:varint  (name value)*n_extensions
//!           data                                            (the rest of the body)
//! string  = len:varint  utf8-bytes                          varint = unsigned LEB128
//! flags   = bit 0: content_type present, bit 1: data_schema present,
//!           bit 2: application and application_uid are those of the stream (left out)
//!           bit 3: sender and sender_uid are device and device_uid (left out)
//! ```
//!
//! `appended_ms` is when the log accepted the record (milliseconds since the Unix epoch, from the
//! log's clock); retention by age uses it. The event's own `time` is stored separately, exactly.
//! A typical telemetry event with 64 bytes of data (a UUID as id and device uid, short names,
//! a content type, one extension) takes about 250 bytes.

use bytes::Bytes;
use chrono::DateTime;
use drover_model::Event;

use crate::{Offset, StreamKey};

/// Length of the frame header (body length and CRC).
pub(crate) const HEADER_LEN: usize = 8;
/// The only body format so far.
pub(crate) const FORMAT: u8 = 1;
/// Where the offset and the append time sit in a frame (patched by the writer).
const OFFSET_AT: usize = HEADER_LEN + 1;
const APPENDED_AT: usize = OFFSET_AT + 8;
/// Fixed part of a body: format, offset, appended, event secs, event nanos, flags.
pub(crate) const FIXED_BODY: usize = 1 + 8 + 8 + 8 + 4 + 1;
/// The shortest possible frame: the fixed part, six empty strings (id, type, channel, device,
/// device uid, instance) and no extensions.
pub(crate) const MIN_FRAME: usize = HEADER_LEN + FIXED_BODY + 6 + 1;
/// No body is ever longer than this (a sanity bound for readers; `max_event_bytes` is capped
/// by it).
pub(crate) const MAX_BODY: usize = 64 << 20;

const HAS_CONTENT_TYPE: u8 = 1;
const HAS_DATA_SCHEMA: u8 = 2;
const APP_ELIDED: u8 = 4;
const SENDER_IS_DEVICE: u8 = 8;

/// Why a body could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum CodecError {
    #[error("record body is truncated")]
    Truncated,
    #[error("unknown record format {0}")]
    Format(u8),
    #[error("record holds invalid UTF-8")]
    Utf8,
    #[error("record holds an invalid timestamp")]
    Time,
    #[error("record holds a malformed length")]
    Varint,
}

fn varint_len(mut v: u64) -> usize {
    let mut n = 1;
    while v >= 0x80 {
        v >>= 7;
        n += 1;
    }
    n
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn str_len(s: &str) -> usize {
    varint_len(s.len() as u64) + s.len()
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_varint(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

fn elides_app(event: &Event, stream: &StreamKey) -> bool {
    event.application == stream.app && event.application_uid == stream.app_uid
}

fn sender_is_device(event: &Event) -> bool {
    event.sender == event.device && event.sender_uid == event.device_uid
}

/// The length of the frame [`encode`] produces.
pub(crate) fn frame_len(event: &Event, stream: &StreamKey) -> usize {
    HEADER_LEN + 1 + 16 + event_len(event, stream)
}

/// The length of the event's encoding (what [`encode_event`] produces): the body after its
/// format, offset and append time.
pub(crate) fn event_len(event: &Event, stream: &StreamKey) -> usize {
    let mut n = FIXED_BODY - 1 - 16;
    n += str_len(&event.id) + str_len(&event.ty) + str_len(&event.channel);
    n += event.content_type.as_deref().map_or(0, str_len);
    n += event.data_schema.as_deref().map_or(0, str_len);
    if !elides_app(event, stream) {
        n += str_len(&event.application) + str_len(&event.application_uid);
    }
    n += str_len(&event.device) + str_len(&event.device_uid) + str_len(&event.instance);
    if !sender_is_device(event) {
        n += str_len(&event.sender) + str_len(&event.sender_uid);
    }
    n += varint_len(event.extensions.len() as u64);
    n += event
        .extensions
        .iter()
        .map(|(k, v)| str_len(k) + str_len(v))
        .sum::<usize>();
    n + event.data.len()
}

/// Appends the frame of `event` to `out`, with offset, append time and CRC left zero: the
/// writer fills them in with [`seal`] once it has assigned the offset.
pub(crate) fn encode(event: &Event, stream: &StreamKey, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0; HEADER_LEN]);
    out.push(FORMAT);
    out.extend_from_slice(&[0; 16]); // offset, appended
    encode_event(event, stream, out);
    let body_len = (out.len() - start - HEADER_LEN) as u32;
    out[start..start + 4].copy_from_slice(&body_len.to_le_bytes());
}

/// Appends the encoding of `event` alone to `out`: the part of a body from `event_secs` to the
/// end of the data. The NATS JetStream backend stores exactly this as a message's payload (its
/// offset and append time are the message's sequence and timestamp).
pub(crate) fn encode_event(event: &Event, stream: &StreamKey, out: &mut Vec<u8>) {
    out.extend_from_slice(&event.time.timestamp().to_le_bytes());
    out.extend_from_slice(&event.time.timestamp_subsec_nanos().to_le_bytes());
    let elide = elides_app(event, stream);
    let mut flags = 0;
    if event.content_type.is_some() {
        flags |= HAS_CONTENT_TYPE;
    }
    if event.data_schema.is_some() {
        flags |= HAS_DATA_SCHEMA;
    }
    if elide {
        flags |= APP_ELIDED;
    }
    let own_sender = sender_is_device(event);
    if own_sender {
        flags |= SENDER_IS_DEVICE;
    }
    out.push(flags);
    put_str(out, &event.id);
    put_str(out, &event.ty);
    put_str(out, &event.channel);
    if let Some(s) = &event.content_type {
        put_str(out, s);
    }
    if let Some(s) = &event.data_schema {
        put_str(out, s);
    }
    if !elide {
        put_str(out, &event.application);
        put_str(out, &event.application_uid);
    }
    put_str(out, &event.device);
    put_str(out, &event.device_uid);
    if !own_sender {
        put_str(out, &event.sender);
        put_str(out, &event.sender_uid);
    }
    put_str(out, &event.instance);
    put_varint(out, event.extensions.len() as u64);
    for (k, v) in &event.extensions {
        put_str(out, k);
        put_str(out, v);
    }
    out.extend_from_slice(&event.data);
}

/// Fills in offset and append time of an encoded frame and computes its CRC.
pub(crate) fn seal(frame: &mut [u8], offset: Offset, appended_ms: i64) {
    frame[OFFSET_AT..OFFSET_AT + 8].copy_from_slice(&offset.to_le_bytes());
    frame[APPENDED_AT..APPENDED_AT + 8].copy_from_slice(&appended_ms.to_le_bytes());
    let crc = crc32fast::hash(&frame[HEADER_LEN..]);
    frame[4..8].copy_from_slice(&crc.to_le_bytes());
}

/// Body length and CRC from a frame header.
pub(crate) fn header(h: &[u8; HEADER_LEN]) -> (usize, u32) {
    let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as usize;
    let crc = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
    (len, crc)
}

/// Offset and append time of a (CRC-checked) body, without decoding the event.
pub(crate) fn peek(body: &[u8]) -> Result<(Offset, i64), CodecError> {
    if body.len() < FIXED_BODY {
        return Err(CodecError::Truncated);
    }
    if body[0] != FORMAT {
        return Err(CodecError::Format(body[0]));
    }
    let mut r = Reader { buf: &body[1..] };
    Ok((r.u64()?, r.u64()? as i64))
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], CodecError> {
        if self.buf.len() < n {
            return Err(CodecError::Truncated);
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], CodecError> {
        let mut a = [0; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn u64(&mut self) -> Result<u64, CodecError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    fn varint(&mut self) -> Result<u64, CodecError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.take(1)?[0];
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(CodecError::Varint)
    }

    fn str(&mut self) -> Result<String, CodecError> {
        let len = usize::try_from(self.varint()?).map_err(|_| CodecError::Varint)?;
        let bytes = self.take(len)?;
        std::str::from_utf8(bytes)
            .map(str::to_owned)
            .map_err(|_| CodecError::Utf8)
    }
}

/// Decodes the event of a (CRC-checked) body of a record of `stream` (its offset and append
/// time come from [`peek`]).
pub(crate) fn decode(body: &[u8], stream: &StreamKey) -> Result<Event, CodecError> {
    peek(body)?;
    decode_event(&body[1 + 16..], stream)
}

/// Decodes what [`encode_event`] produced for an event of `stream`.
pub(crate) fn decode_event(encoded: &[u8], stream: &StreamKey) -> Result<Event, CodecError> {
    let mut r = Reader { buf: encoded };
    let secs = i64::from_le_bytes(r.array()?);
    let nanos = u32::from_le_bytes(r.array()?);
    let time = DateTime::from_timestamp(secs, nanos).ok_or(CodecError::Time)?;
    let flags = r.array::<1>()?[0];
    let id = r.str()?;
    let ty = r.str()?;
    let channel = r.str()?;
    let content_type = if flags & HAS_CONTENT_TYPE != 0 {
        Some(r.str()?)
    } else {
        None
    };
    let data_schema = if flags & HAS_DATA_SCHEMA != 0 {
        Some(r.str()?)
    } else {
        None
    };
    let (application, application_uid) = if flags & APP_ELIDED != 0 {
        (stream.app.clone(), stream.app_uid.clone())
    } else {
        (r.str()?, r.str()?)
    };
    let device = r.str()?;
    let device_uid = r.str()?;
    let (sender, sender_uid) = if flags & SENDER_IS_DEVICE != 0 {
        (device.clone(), device_uid.clone())
    } else {
        (r.str()?, r.str()?)
    };
    let instance = r.str()?;
    let n = r.varint()?;
    // Each extension takes at least two bytes: never trust a count to size an allocation.
    if n > (r.buf.len() / 2) as u64 {
        return Err(CodecError::Truncated);
    }
    let mut extensions = Vec::with_capacity(n as usize);
    for _ in 0..n {
        extensions.push((r.str()?, r.str()?));
    }
    let data = Bytes::copy_from_slice(r.buf);
    Ok(Event {
        id,
        ty,
        channel,
        time,
        content_type,
        data_schema,
        application,
        application_uid,
        device,
        device_uid,
        sender,
        sender_uid,
        instance,
        extensions,
        data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arb_event() -> impl Strategy<Value = Event> {
        let s = || any::<String>();
        (
            (
                s(),
                s(),
                s(),
                -62_000_000_000i64..250_000_000_000,
                0u32..1_000_000_000,
            ),
            (
                proptest::option::of(s()),
                proptest::option::of(s()),
                s(),
                s(),
            ),
            (s(), s(), s(), s(), s()),
            (
                proptest::collection::vec((s(), s()), 0..4),
                proptest::collection::vec(any::<u8>(), 0..300),
            ),
        )
            .prop_map(
                |(
                    (id, ty, channel, secs, nanos),
                    (content_type, data_schema, application, application_uid),
                    (device, device_uid, sender, sender_uid, instance),
                    (extensions, data),
                )| Event {
                    id,
                    ty,
                    channel,
                    time: DateTime::from_timestamp(secs, nanos).unwrap_or_default(),
                    content_type,
                    data_schema,
                    application,
                    application_uid,
                    device,
                    device_uid,
                    sender,
                    sender_uid,
                    instance,
                    extensions,
                    data: Bytes::from(data),
                },
            )
    }

    fn roundtrip(event: &Event, stream: &StreamKey, offset: Offset, appended: i64) {
        let mut buf = vec![0xAA; 3]; // encoding appends: never touches what is there
        encode(event, stream, &mut buf);
        assert_eq!(&buf[..3], &[0xAA; 3]);
        let frame = &mut buf[3..];
        assert_eq!(frame.len(), frame_len(event, stream));
        seal(frame, offset, appended);
        let (len, crc) = header(frame[..HEADER_LEN].try_into().expect("header"));
        assert_eq!(len, frame.len() - HEADER_LEN);
        let body = &frame[HEADER_LEN..];
        assert_eq!(crc, crc32fast::hash(body));
        assert_eq!(peek(body), Ok((offset, appended)));
        assert_eq!(&decode(body, stream).expect("decodes"), event);
        // The event's part alone (what the JetStream log stores) is the body's tail.
        let mut alone = Vec::new();
        encode_event(event, stream, &mut alone);
        assert_eq!(alone.len(), event_len(event, stream));
        assert_eq!(&body[1 + 16..], &alone[..]);
        assert_eq!(&decode_event(&alone, stream).expect("decodes"), event);
    }

    proptest! {
        #[test]
        fn roundtrips(
            mut event in arb_event(),
            offset in any::<u64>(),
            appended in any::<i64>(),
            own_sender in any::<bool>(),
        ) {
            if own_sender {
                event.sender = event.device.clone();
                event.sender_uid = event.device_uid.clone();
            }
            // Once with the stream's own application (elided), once with another one.
            let own = StreamKey::new(event.application.clone(), event.application_uid.clone());
            roundtrip(&event, &own, offset, appended);
            let other = StreamKey::new(format!("{}x", event.application), "uid");
            roundtrip(&event, &other, offset, appended);
        }

        #[test]
        fn garbage_never_panics(body in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode(&body, &StreamKey::new("a", "u"));
        }

        #[test]
        fn truncated_bodies_are_rejected(event in arb_event(), cut in any::<prop::sample::Index>()) {
            let stream = StreamKey::new(event.application.clone(), event.application_uid.clone());
            let mut buf = Vec::new();
            encode(&event, &stream, &mut buf);
            seal(&mut buf, 1, 1);
            let body = &buf[HEADER_LEN..];
            // Cut anywhere before the data: some field must come up short.
            let fixed = body.len() - event.data.len();
            let at = cut.index(fixed);
            prop_assert!(decode(&body[..at], &stream).is_err());
        }
    }

    #[test]
    fn the_smallest_frame_is_min_frame() {
        let stream = StreamKey::new("", "");
        let event = Event {
            id: String::new(),
            ty: String::new(),
            channel: String::new(),
            time: DateTime::from_timestamp(0, 0).unwrap_or_default(),
            content_type: None,
            data_schema: None,
            application: String::new(),
            application_uid: String::new(),
            device: String::new(),
            device_uid: String::new(),
            sender: String::new(),
            sender_uid: String::new(),
            instance: String::new(),
            extensions: Vec::new(),
            data: Bytes::new(),
        };
        assert_eq!(frame_len(&event, &stream), MIN_FRAME);
    }

    #[test]
    fn varints() {
        for v in [
            0u64,
            1,
            127,
            128,
            300,
            16_383,
            16_384,
            u32::MAX as u64,
            u64::MAX,
        ] {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            assert_eq!(out.len(), varint_len(v));
            assert_eq!(Reader { buf: &out }.varint(), Ok(v));
        }
        assert_eq!(
            Reader { buf: &[0xff; 11] }.varint(),
            Err(CodecError::Varint)
        );
    }
}
