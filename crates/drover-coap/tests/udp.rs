//! The UDP codec against RFC 7252's examples and every malformed-datagram case.
#![allow(clippy::unwrap_used)]

use bytes::{Bytes, BytesMut};
use drover_coap::udp::peek_header;
use drover_coap::{
    Code, DecodeError, EncodeError, Message, MessageType, OptionNumber, Part, Token, UdpCodec,
    UdpMessage,
};

fn hex(s: &str) -> Vec<u8> {
    s.split_whitespace()
        .map(|b| u8::from_str_radix(b, 16).unwrap())
        .collect()
}

fn codec() -> UdpCodec {
    UdpCodec::new(64 * 1024)
}

/// Decodes, checks re-encoding gives the same bytes, returns the message.
fn roundtrip(bytes: &[u8]) -> UdpMessage {
    let msg = codec().decode(bytes).unwrap();
    assert_eq!(&codec().to_bytes(&msg).unwrap()[..], bytes);
    assert_eq!(UdpCodec::encoded_len(&msg), bytes.len());
    msg
}

#[test]
fn rfc7252_appendix_a_get_and_piggybacked_response() {
    // Figure 16: CON [0x7d34] GET /temperature, then ACK [0x7d34] 2.05 "22.5 C".
    let get = roundtrip(&hex("40 01 7d 34 bb 74 65 6d 70 65 72 61 74 75 72 65"));
    assert_eq!(get.mtype, MessageType::Confirmable);
    assert_eq!(get.message_id, 0x7d34);
    assert_eq!(get.message.code, Code::GET);
    assert_eq!(get.message.options.uri_path().unwrap(), ["temperature"]);
    let resp = roundtrip(&hex("60 45 7d 34 ff 32 32 2e 35 20 43"));
    assert_eq!(resp.mtype, MessageType::Acknowledgement);
    assert_eq!(resp.message.code, Code::CONTENT);
    assert_eq!(&resp.message.payload[..], b"22.5 C");
    assert!(resp.message.options.is_empty());
}

#[test]
fn token_host_and_path() {
    // CON GET, MID 0x5d1f, token 00 00 39 74, Uri-Host "localhost", Uri-Path "tv1".
    let msg = roundtrip(&hex(
        "44 01 5d 1f 00 00 39 74 39 6c 6f 63 61 6c 68 6f 73 74 83 74 76 31",
    ));
    assert_eq!(msg.message.token, Token::new(&[0, 0, 0x39, 0x74]).unwrap());
    let host = msg
        .message
        .options
        .get(OptionNumber::URI_HOST)
        .unwrap()
        .unwrap();
    assert_eq!(&host[..], b"localhost");
    assert_eq!(msg.message.options.uri_path().unwrap(), ["tv1"]);
}

#[test]
fn empty_ack_and_reset() {
    let ack = roundtrip(&hex("60 00 12 34"));
    assert_eq!(ack, UdpMessage::ack(0x1234));
    let rst = roundtrip(&hex("70 00 12 34"));
    assert_eq!(rst, UdpMessage::reset(0x1234));
    // A CoAP ping is an empty CON.
    assert_eq!(
        roundtrip(&hex("40 00 00 01")).mtype,
        MessageType::Confirmable
    );
}

#[test]
fn extended_option_forms() {
    let mut msg = Message::new(Code::POST, Token::EMPTY);
    msg.options.set_uint(OptionNumber::CONTENT_FORMAT, 50);
    msg.options
        .push(OptionNumber::URI_QUERY, Bytes::from(vec![b'q'; 13]));
    msg.options
        .push(OptionNumber::PROXY_URI, Bytes::from(vec![b'u'; 269]));
    msg.options
        .set_uint(OptionNumber::OCF_ACCEPT_CONTENT_FORMAT_VERSION, 0x0800);
    msg.options.set_uint(OptionNumber(65535), 1);
    let udp = UdpMessage {
        mtype: MessageType::NonConfirmable,
        message_id: 1,
        message: msg,
    };
    let mut expected = hex("50 02 00 01");
    expected.extend(hex("c1 32")); // delta 12, length 1
    expected.extend(hex("3d 00")); // delta 3, length 13 + 0
    expected.extend([b'q'; 13]);
    expected.extend(hex("de 07 00 00")); // delta 13 + 7 = 20, length 269 + 0
    expected.extend([b'u'; 269]);
    expected.extend(hex("e2 06 d1 08 00")); // delta 269 + 0x06d1 = 2014 (to 2049), length 2
    expected.extend(hex("e1 f6 f1 01")); // delta 269 + 0xf6f1 = 63486 (to 65535), length 1
    assert_eq!(&codec().to_bytes(&udp).unwrap()[..], &expected[..]);
    assert_eq!(roundtrip(&expected), udp);
    let o = &udp.message.options;
    assert_eq!(o.content_format().unwrap(), Some(50));
    assert_eq!(
        o.get_uint(OptionNumber::OCF_ACCEPT_CONTENT_FORMAT_VERSION)
            .unwrap(),
        Some(0x0800)
    );
}

#[test]
fn malformed_datagrams_are_named() {
    let cases: &[(&str, DecodeError)] = &[
        ("", DecodeError::Truncated(Part::Header)),
        ("40 01 00", DecodeError::Truncated(Part::Header)),
        ("00 01 00 00", DecodeError::Version(0)),
        ("80 01 00 00", DecodeError::Version(2)),
        (
            "49 01 00 00 01 02 03 04 05 06 07 08 09",
            DecodeError::TokenLength(9),
        ),
        ("4f 01 00 00", DecodeError::TokenLength(15)),
        ("44 01 00 00 01 02", DecodeError::Truncated(Part::Token)),
        ("40 00 00 00 ff", DecodeError::EmptyNotEmpty(1)),
        ("41 00 00 00 01", DecodeError::EmptyNotEmpty(1)),
        ("40 01 00 00 ff", DecodeError::EmptyPayload),
        ("40 01 00 00 b1 61 ff", DecodeError::EmptyPayload),
        ("40 01 00 00 f1 00", DecodeError::OptionDelta { offset: 4 }),
        (
            "41 01 00 00 07 b1 61 f0",
            DecodeError::OptionDelta { offset: 7 },
        ),
        ("40 01 00 00 bf", DecodeError::OptionLength { offset: 4 }),
        ("40 01 00 00 d0", DecodeError::Truncated(Part::OptionDelta)),
        (
            "40 01 00 00 e0 01",
            DecodeError::Truncated(Part::OptionDelta),
        ),
        ("40 01 00 00 0d", DecodeError::Truncated(Part::OptionLength)),
        (
            "40 01 00 00 0e 01",
            DecodeError::Truncated(Part::OptionLength),
        ),
        (
            "40 01 00 00 b5 61 62",
            DecodeError::Truncated(Part::OptionValue),
        ),
        (
            "40 01 00 00 e0 ff ff",
            DecodeError::OptionNumber {
                number: 65804,
                offset: 4,
            },
        ),
        (
            "40 01 00 00 e0 fe f2 10",
            DecodeError::OptionNumber {
                number: 65536,
                offset: 7,
            },
        ),
    ];
    for (input, error) in cases {
        assert_eq!(codec().decode(&hex(input)), Err(error.clone()), "{input}");
    }
    // Option 65535 is the last one that exists.
    let msg = codec().decode(&hex("40 01 00 00 e0 fe f2")).unwrap();
    assert!(msg.message.options.contains(OptionNumber(65535)));
}

#[test]
fn the_header_of_a_malformed_confirmable_is_readable_for_rst() {
    let bad = hex("42 01 ab cd 01");
    assert!(codec().decode(&bad).is_err());
    let h = peek_header(&bad).unwrap();
    assert_eq!((h.mtype, h.message_id), (MessageType::Confirmable, 0xabcd));
}

#[test]
fn size_limits_both_ways() {
    let small = UdpCodec::new(16);
    let mut msg = Message::new(Code::POST, Token::EMPTY);
    msg.payload = Bytes::from(vec![0; 11]);
    let udp = UdpMessage {
        mtype: MessageType::Confirmable,
        message_id: 0,
        message: msg,
    };
    // 4 + 1 + 11 = 16: fits exactly.
    let bytes = small.to_bytes(&udp).unwrap();
    assert_eq!(bytes.len(), 16);
    assert_eq!(small.decode(&bytes).unwrap(), udp);
    let mut bigger = udp.clone();
    bigger.message.payload = Bytes::from(vec![0; 12]);
    assert_eq!(
        small.to_bytes(&bigger),
        Err(EncodeError::TooLarge { size: 17, max: 16 })
    );
    let datagram = codec().to_bytes(&bigger).unwrap();
    assert_eq!(
        small.decode(&datagram),
        Err(DecodeError::TooLarge { size: 17, max: 16 })
    );
    assert_eq!(UdpCodec::default().max_message_size, 1152);
}

#[test]
fn encode_refuses_what_the_wire_cannot_carry() {
    let mut empty = UdpMessage::ack(1);
    empty.message.payload = Bytes::from_static(b"x");
    assert_eq!(codec().to_bytes(&empty), Err(EncodeError::EmptyNotEmpty));
    let mut msg = UdpMessage::ack(1);
    msg.message.code = Code::CONTENT;
    msg.message
        .options
        .push(OptionNumber(2048), Bytes::from(vec![0; 65805]));
    let huge = UdpCodec::new(1 << 20);
    assert_eq!(
        huge.to_bytes(&msg),
        Err(EncodeError::OptionTooLong {
            number: OptionNumber(2048),
            len: 65805
        })
    );
    // Nothing is written on error.
    let mut out = BytesMut::from(&b"keep"[..]);
    assert!(huge.encode(&msg, &mut out).is_err());
    assert_eq!(&out[..], b"keep");
    // The longest value the length field carries.
    msg.message
        .options
        .set(OptionNumber(2048), Bytes::from(vec![0; 65804]));
    let bytes = huge.to_bytes(&msg).unwrap();
    assert_eq!(huge.decode(&bytes).unwrap(), msg);
}
