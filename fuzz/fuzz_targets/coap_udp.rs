//! CoAP datagrams (RFC 7252) through drover-coap's UDP codec: arbitrary bytes as one datagram,
//! decoded under a small or the default maximum size; whatever decodes is read through the
//! typed option accessors, the critical-option rule, block-wise and signaling views, and must
//! encode back to bytes that decode to the same message. Must never panic.
#![no_main]

use drover_coap::block::block2_slice;
use drover_coap::udp::peek_header;
use drover_coap::{Block1Assembler, Signal, UdpCodec};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&first, datagram)) = data.split_first() else {
        return;
    };
    let codec = UdpCodec::new(if first & 1 == 1 { 64 } else { 1152 });
    let decoded = codec.decode(datagram);
    if datagram.len() >= 4 {
        assert!(peek_header(datagram).is_some());
    }
    let Ok(msg) = decoded else {
        return;
    };
    let o = &msg.message.options;
    let _ = (o.uri_path(), o.uri_query(), o.location_path(), o.content_format());
    let _ = (o.accept(), o.observe(), o.max_age(), o.size1(), o.size2());
    let _ = o.unrecognized_critical(&[]);
    let _ = Signal::from_message(&msg.message);
    if let Ok(Some(block)) = o.block2() {
        let _ = block2_slice(&msg.message.payload, Some(block), 1 << (first >> 5));
    }
    if let Ok(Some(block)) = o.block1() {
        let mut assembler = Block1Assembler::new(usize::from(first) * 8);
        let _ = assembler.push(block, o.size1().ok().flatten(), &msg.message.payload);
    }
    let again = codec.to_bytes(&msg).expect("a decoded message encodes");
    assert!(again.len() <= datagram.len());
    assert_eq!(codec.decode(&again).as_ref(), Ok(&msg));
});
