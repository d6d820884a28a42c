//! Properties of both codecs over arbitrary input: encode → decode is the identity for every
//! valid message; decoding arbitrary bytes never panics, and what decodes encodes back to
//! bytes that decode to the same message; the streaming TCP decoder gives the same frames and
//! the same error however the input is split; Block2 slices reassemble through Block1.
#![allow(clippy::unwrap_used)]

use bytes::{Bytes, BytesMut};
use drover_coap::block::block2_slice;
use drover_coap::{
    Block1Assembler, Block1Progress, Code, DecodeError, Message, MessageType, OptionNumber,
    Options, TcpCodec, Token, UdpCodec, UdpMessage,
};
use proptest::prelude::*;

fn option_number() -> impl Strategy<Value = u16> {
    prop_oneof![0..30u16, 0..400u16, any::<u16>()]
}

fn option_value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => proptest::collection::vec(any::<u8>(), 0..16),
        1 => proptest::collection::vec(any::<u8>(), 0..600),
    ]
}

fn options() -> impl Strategy<Value = Options> {
    proptest::collection::vec((option_number(), option_value()), 0..8).prop_map(|list| {
        list.into_iter()
            .map(|(n, v)| (OptionNumber(n), Bytes::from(v)))
            .collect()
    })
}

fn message(code: impl Strategy<Value = u8>) -> impl Strategy<Value = Message> {
    (
        code,
        proptest::collection::vec(any::<u8>(), 0..=8),
        options(),
        proptest::collection::vec(any::<u8>(), 0..300),
    )
        .prop_map(|(code, token, options, payload)| Message {
            code: Code(code),
            token: Token::new(&token).unwrap(),
            options,
            payload: Bytes::from(payload),
        })
}

fn udp_message() -> impl Strategy<Value = UdpMessage> {
    (0..4u8, any::<u16>(), message(1..=255u8), any::<bool>()).prop_map(
        |(t, message_id, message, empty)| UdpMessage {
            mtype: MessageType::from_bits(t),
            message_id,
            // Empty messages (0.00) have nothing but their header.
            message: if empty { Message::empty() } else { message },
        },
    )
}

fn encode_tcp(codec: &TcpCodec, messages: &[Message]) -> BytesMut {
    let mut out = BytesMut::new();
    for m in messages {
        codec.encode(m, &mut out).unwrap();
    }
    out
}

/// Decodes a stream handed over in pieces cut at `cuts`: the messages and the error, if any.
fn decode_in_pieces(
    codec: &TcpCodec,
    stream: &[u8],
    cuts: &[usize],
) -> (Vec<Message>, Option<DecodeError>) {
    let mut bounds: Vec<usize> = cuts.iter().map(|c| c % (stream.len() + 1)).collect();
    bounds.push(stream.len());
    bounds.sort_unstable();
    let mut buf = BytesMut::new();
    let mut messages = Vec::new();
    let mut at = 0;
    for end in bounds {
        buf.extend_from_slice(&stream[at..end]);
        at = end;
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

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn udp_roundtrip(msg in udp_message()) {
        let codec = UdpCodec::new(1 << 20);
        let bytes = codec.to_bytes(&msg).unwrap();
        prop_assert_eq!(bytes.len(), UdpCodec::encoded_len(&msg));
        prop_assert_eq!(codec.decode(&bytes).unwrap(), msg);
    }

    #[test]
    fn tcp_roundtrip(msg in message(any::<u8>())) {
        let codec = TcpCodec::new(1 << 20);
        let mut buf = encode_tcp(&codec, std::slice::from_ref(&msg));
        prop_assert_eq!(buf.len(), TcpCodec::encoded_len(&msg));
        prop_assert_eq!(codec.decode(&mut buf).unwrap(), Some(msg));
        prop_assert!(buf.is_empty());
    }

    #[test]
    fn udp_decode_of_any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..200), max in 0..300usize) {
        let codec = UdpCodec::new(max);
        if let Ok(msg) = codec.decode(&bytes) {
            // What decodes is canonical after one re-encoding.
            let again = codec.to_bytes(&msg).unwrap();
            prop_assert!(again.len() <= bytes.len());
            prop_assert_eq!(codec.decode(&again).unwrap(), msg);
        }
    }

    #[test]
    fn tcp_decode_of_any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..200), max in 0..300usize) {
        let codec = TcpCodec::new(max);
        let (messages, _) = decode_in_pieces(&codec, &bytes, &[]);
        let again = encode_tcp(&codec, &messages);
        let (decoded, error) = decode_in_pieces(&codec, &again, &[]);
        prop_assert_eq!(decoded, messages);
        prop_assert_eq!(error, None);
    }

    #[test]
    fn tcp_split_invariance(
        messages in proptest::collection::vec(message(any::<u8>()), 0..5),
        tail in proptest::collection::vec(any::<u8>(), 0..40),
        cuts in proptest::collection::vec(any::<usize>(), 0..12),
        max in prop_oneof![Just(1usize << 20), 16..2000usize],
    ) {
        let mut stream = encode_tcp(&TcpCodec::new(1 << 20), &messages).to_vec();
        stream.extend(tail);
        let codec = TcpCodec::new(max);
        let whole = decode_in_pieces(&codec, &stream, &[]);
        prop_assert_eq!(decode_in_pieces(&codec, &stream, &cuts), whole.clone());
        let bytewise: Vec<usize> = (0..stream.len()).collect();
        prop_assert_eq!(decode_in_pieces(&codec, &stream, &bytewise), whole);
    }

    #[test]
    fn block2_slices_reassemble_through_block1(
        body in proptest::collection::vec(any::<u8>(), 0..3000),
        size in 16..1100usize,
    ) {
        let body = Bytes::from(body);
        let mut assembler = Block1Assembler::new(body.len());
        let mut requested = None;
        loop {
            let (chunk, block) = block2_slice(&body, requested, size).unwrap();
            let Some(block) = block else {
                prop_assert_eq!(chunk, body.clone());
                break;
            };
            match assembler.push(block, None, &chunk).unwrap() {
                Block1Progress::Continue(b) => {
                    prop_assert!(b.more);
                    requested = Some(drover_coap::BlockOption { num: b.num + 1, more: false, ..b });
                }
                Block1Progress::Complete(whole, _) => {
                    prop_assert_eq!(whole, body.clone());
                    break;
                }
            }
        }
    }
}
