//! RFC 8323 framing and signaling: the extended lengths at their boundaries, the CSMs captured
//! from aiocoap and libcoap, streaming input, limits, and every signaling message.
#![allow(clippy::unwrap_used)]

use bytes::{Bytes, BytesMut};
use drover_coap::signal::{BAD_CSM_OPTION, BLOCK_WISE_TRANSFER, MAX_MESSAGE_SIZE};
use drover_coap::{
    Code, CsmSettings, DecodeError, EncodeError, Message, OptionNumber, Part, Signal, SignalError,
    TcpCodec, Token,
};

fn hex(s: &str) -> Vec<u8> {
    s.split_whitespace()
        .map(|b| u8::from_str_radix(b, 16).unwrap())
        .collect()
}

fn codec() -> TcpCodec {
    TcpCodec::new(1 << 20)
}

/// Decodes one whole frame, checks nothing is left and that re-encoding gives the same bytes.
fn roundtrip(bytes: &[u8]) -> Message {
    let mut buf = BytesMut::from(bytes);
    let msg = codec().decode(&mut buf).unwrap().unwrap();
    assert!(buf.is_empty());
    let mut out = BytesMut::new();
    codec().encode(&msg, &mut out).unwrap();
    assert_eq!(&out[..], bytes);
    assert_eq!(TcpCodec::encoded_len(&msg), bytes.len());
    msg
}

#[test]
fn captured_csms() {
    // aiocoap: Max-Message-Size 1048576, Block-Wise-Transfer.
    let aiocoap = roundtrip(&hex("50 e1 23 10 00 00 20"));
    assert_eq!(aiocoap.code, Code::CSM);
    let signal = Signal::from_message(&aiocoap).unwrap();
    assert_eq!(
        signal,
        Signal::Csm {
            max_message_size: Some(1_048_576),
            block_wise_transfer: true
        }
    );
    assert_eq!(signal.to_message(Token::EMPTY), aiocoap);
    // libcoap: 8388864.
    let libcoap = roundtrip(&hex("50 e1 23 80 01 00 20"));
    let mut settings = CsmSettings::default();
    assert_eq!(settings.max_message_size, 1152);
    settings.apply(&Signal::from_message(&libcoap).unwrap());
    assert_eq!(settings.max_message_size, 0x0080_0100);
    assert!(settings.block_wise_transfer);
    // Cumulative: a later CSM without options changes nothing.
    settings.apply(&Signal::from_message(&roundtrip(&hex("00 e1"))).unwrap());
    assert_eq!(settings.max_message_size, 0x0080_0100);
}

#[test]
fn extended_lengths_at_their_boundaries() {
    // (options + payload length, first byte's Len nibble, extended bytes)
    for (body, nibble, ext) in [
        (0usize, 0u8, &[][..]),
        (12, 12, &[][..]),
        (13, 13, &[0][..]),
        (268, 13, &[255][..]),
        (269, 14, &[0, 0][..]),
        (65804, 14, &[255, 255][..]),
        (65805, 15, &[0, 0, 0, 0][..]),
        (65806, 15, &[0, 0, 0, 1][..]),
    ] {
        let mut msg = Message::new(Code::POST, Token::new(&[7, 7]).unwrap());
        if body > 0 {
            // The payload marker is one byte of the body.
            msg.payload = Bytes::from(vec![0xab; body - 1]);
        }
        let mut out = BytesMut::new();
        codec().encode(&msg, &mut out).unwrap();
        assert_eq!(out[0], (nibble << 4) | 2, "body {body}");
        assert_eq!(&out[1..1 + ext.len()], ext, "body {body}");
        assert_eq!(out[1 + ext.len()], Code::POST.0);
        assert_eq!(out.len(), 1 + ext.len() + 1 + 2 + body);
        assert_eq!(roundtrip(&out), msg);
    }
}

#[test]
fn ping_pong_release_abort() {
    let ping = roundtrip(&hex("01 e2 42"));
    assert_eq!(
        Signal::from_message(&ping).unwrap(),
        Signal::Ping { custody: false }
    );
    let custody = roundtrip(&hex("11 e2 42 20"));
    assert_eq!(
        Signal::from_message(&custody).unwrap(),
        Signal::Ping { custody: true }
    );
    let pong = Signal::Pong { custody: false }.to_message(ping.token);
    assert_eq!(pong.token, ping.token);
    let release = Signal::Release {
        alternative_addresses: vec!["coap+tcp://node-2:5683".into()],
        hold_off: Some(30),
    };
    let msg = release.to_message(Token::EMPTY);
    let mut out = BytesMut::new();
    codec().encode(&msg, &mut out).unwrap();
    // Len 13 + 13 = 26: option 2 with 22 bytes (2 + 22), option 4 with one (2).
    assert_eq!(&out[..5], &hex("d0 0d e4 2d 09")[..]);
    assert_eq!(Signal::from_message(&roundtrip(&out)).unwrap(), release);
    let abort = Signal::Abort {
        bad_csm_option: Some(3),
    };
    let msg = abort
        .to_message(Token::EMPTY)
        .with_payload("unknown critical option");
    assert_eq!(msg.options.get_uint(BAD_CSM_OPTION).unwrap(), Some(3));
    assert_eq!(Signal::from_message(&msg).unwrap(), abort);
}

#[test]
fn signaling_errors() {
    let mut csm = Signal::Csm {
        max_message_size: None,
        block_wise_transfer: false,
    }
    .to_message(Token::EMPTY);
    // An unknown elective option is ignored, an unknown critical one is an error (→ Abort).
    csm.options.push(OptionNumber(6), Bytes::new());
    assert!(Signal::from_message(&csm).is_ok());
    csm.options.push(OptionNumber(3), Bytes::new());
    assert_eq!(
        Signal::from_message(&csm),
        Err(SignalError::UnknownCriticalOption {
            code: Code::CSM,
            number: OptionNumber(3)
        })
    );
    let mut bad = Message::new(Code::CSM, Token::EMPTY);
    bad.options
        .push(MAX_MESSAGE_SIZE, Bytes::from_static(&[1, 2, 3, 4, 5]));
    assert_eq!(
        Signal::from_message(&bad),
        Err(SignalError::BadOption {
            code: Code::CSM,
            number: MAX_MESSAGE_SIZE
        })
    );
    let mut bad = Message::new(Code::CSM, Token::EMPTY);
    bad.options
        .push(BLOCK_WISE_TRANSFER, Bytes::from_static(b"x"));
    assert!(matches!(
        Signal::from_message(&bad),
        Err(SignalError::BadOption { .. })
    ));
    let unknown = Message::new(Code::new(7, 6), Token::EMPTY);
    assert_eq!(
        Signal::from_message(&unknown),
        Err(SignalError::UnknownCode(Code::new(7, 6)))
    );
    assert_eq!(
        Signal::from_message(&Message::new(Code::GET, Token::EMPTY)),
        Err(SignalError::NotSignaling(Code::GET))
    );
}

#[test]
fn streaming_decode_waits_for_whole_frames() {
    let mut stream = hex("50 e1 23 10 00 00 20");
    stream.extend(hex("01 e2 42"));
    stream.extend(hex("00 00")); // an empty 0.00 message
    let mut buf = BytesMut::new();
    let mut decoded = Vec::new();
    for byte in stream {
        buf.extend_from_slice(&[byte]);
        while let Some(msg) = codec().decode(&mut buf).unwrap() {
            decoded.push(msg.code);
        }
    }
    assert!(buf.is_empty());
    assert_eq!(decoded, [Code::CSM, Code::PING, Code::EMPTY]);
}

#[test]
fn malformed_frames_are_named() {
    let cases: &[(&str, DecodeError)] = &[
        ("09", DecodeError::TokenLength(9)),
        ("2f e1 00 00", DecodeError::TokenLength(15)),
        ("10 02 ff", DecodeError::EmptyPayload),
        ("20 02 b5 61", DecodeError::Truncated(Part::OptionValue)),
        ("10 02 d0", DecodeError::Truncated(Part::OptionDelta)),
        ("20 02 0e 01", DecodeError::Truncated(Part::OptionLength)),
        ("21 02 aa f1 00", DecodeError::OptionDelta { offset: 3 }),
        ("10 02 bf", DecodeError::OptionLength { offset: 2 }),
        (
            "30 02 e0 ff ff",
            DecodeError::OptionNumber {
                number: 65804,
                offset: 2,
            },
        ),
    ];
    for (input, error) in cases {
        let mut buf = BytesMut::from(&hex(input)[..]);
        assert_eq!(codec().decode(&mut buf), Err(error.clone()), "{input}");
    }
}

#[test]
fn an_oversized_length_is_refused_before_buffering() {
    let small = TcpCodec::new(1152);
    // Len 15 with 2^32 − 1: refused with only the 5 length bytes there.
    let mut buf = BytesMut::from(&hex("f0 ff ff ff ff")[..]);
    assert_eq!(
        small.decode(&mut buf),
        Err(DecodeError::TooLarge {
            size: 2 + 4 + 0xffff_ffff + 65805,
            max: 1152
        })
    );
    // Partial extended length: wait.
    let mut buf = BytesMut::from(&hex("f0 00 00")[..]);
    assert_eq!(small.decode(&mut buf), Ok(None));
    // Exactly at the limit: 1 + 2 + 1 + 0 + body = 1152 → body 1148 → Len 14, 879.
    let mut msg = Message::new(Code::CONTENT, Token::EMPTY);
    msg.payload = Bytes::from(vec![1; 1147]);
    let mut out = BytesMut::new();
    small.encode(&msg, &mut out).unwrap();
    assert_eq!(out.len(), 1152);
    assert_eq!(small.decode(&mut out).unwrap().unwrap(), msg);
    msg.payload = Bytes::from(vec![1; 1148]);
    assert_eq!(
        small.encode(&msg, &mut out),
        Err(EncodeError::TooLarge {
            size: 1153,
            max: 1152
        })
    );
    assert!(out.is_empty());
    let mut frame = BytesMut::new();
    codec().encode(&msg, &mut frame).unwrap();
    frame.truncate(4);
    assert_eq!(
        small.decode(&mut frame),
        Err(DecodeError::TooLarge {
            size: 1153,
            max: 1152
        })
    );
}

#[test]
fn tokio_codec_reports_a_frame_cut_by_eof() {
    use tokio_util::codec::Decoder;
    let mut codec = codec();
    let mut buf = BytesMut::from(&hex("01 e2 42 50 e1 23")[..]);
    assert_eq!(
        codec.decode_eof(&mut buf).unwrap().unwrap().code,
        Code::PING
    );
    assert!(codec.decode_eof(&mut buf).is_err());
    assert!(codec.decode_eof(&mut buf).unwrap().is_none());
}
