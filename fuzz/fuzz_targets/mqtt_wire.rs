//! MQTT packets through drover-mqtt's wire adapter: arbitrary bytes as a client's stream (the
//! CONNECT with version detection, 3.1, 3.1.1 and 5, then any packets), fed in pieces of every
//! size, decoded, checked and answered. Must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first byte picks the piece size (1..=256) and a small or the default maximum packet
    // size, so partial packets and the size limit are both exercised.
    let Some((&first, stream)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(first & 0x7f) * 2 + 1;
    let max_packet_size = if first & 0x80 != 0 { 256 } else { 1024 * 1024 };
    let decoded = drover_mqtt::fuzzing::decode_client_stream(stream, chunk, max_packet_size);
    assert!(decoded.packets <= stream.len());
    // The same stream in one piece decodes to the same outcome.
    let whole = drover_mqtt::fuzzing::decode_client_stream(stream, stream.len(), max_packet_size);
    assert_eq!(decoded.connect, whole.connect);
    assert_eq!(decoded.packets, whole.packets);
    assert_eq!(decoded.error, whole.error);
});
