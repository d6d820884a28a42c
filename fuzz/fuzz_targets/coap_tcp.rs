//! CoAP over TCP/TLS (RFC 8323) through drover-coap's streaming decoder: arbitrary bytes as a
//! peer's stream, fed in pieces of every size under a small or the default maximum message
//! size. The frames and the error must not depend on how the stream was split; every frame
//! encodes back to one that decodes the same, and signaling messages are read. Never panics.
#![no_main]

use bytes::BytesMut;
use drover_coap::{DecodeError, Message, Signal, TcpCodec};
use libfuzzer_sys::fuzz_target;

fn decode(codec: &TcpCodec, stream: &[u8], chunk: usize) -> (Vec<Message>, Option<DecodeError>) {
    let mut buf = BytesMut::new();
    let mut messages = Vec::new();
    for piece in stream.chunks(chunk) {
        buf.extend_from_slice(piece);
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(m)) => messages.push(m),
                Ok(None) => break,
                Err(e) => return (messages, Some(e)),
            }
        }
    }
    (messages, None)
}

fuzz_target!(|data: &[u8]| {
    // The first byte picks the piece size (1..=256) and a small or the base maximum size.
    let Some((&first, stream)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(first & 0x7f) * 2 + 1;
    let codec = TcpCodec::new(if first & 0x80 != 0 { 64 } else { 1152 });
    let pieces = decode(&codec, stream, chunk);
    let whole = decode(&codec, stream, stream.len().max(1));
    assert_eq!(pieces, whole);
    for msg in &whole.0 {
        if msg.code.is_signaling() {
            let _ = Signal::from_message(msg);
        }
        let mut out = BytesMut::new();
        codec.encode(msg, &mut out).expect("a decoded frame encodes");
        assert_eq!(codec.decode(&mut out).as_ref(), Ok(&Some(msg.clone())));
        assert!(out.is_empty());
    }
});
