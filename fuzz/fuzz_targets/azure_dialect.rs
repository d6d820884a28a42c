//! Azure IoT Hub's MQTT dialect as devices send it (`drover_endpoints::azure`): CONNECT user
//! names, published topics with their property bags, subscription filters. Parsing never
//! panics; a bag that parses encodes back to one that parses to the same pairs.
#![no_main]

use drover_endpoints::azure::{encode_bag, parse_bag, parse_publish, parse_subscription, Username};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(u) = Username::parse(text) {
        assert!(!u.hub.is_empty() && !u.device.is_empty());
        assert!(u.params.iter().any(|(k, _)| k == "api-version"));
        let _ = u.client_id();
    }
    let _ = parse_publish(text, "d1");
    let _ = parse_subscription(text, "d1");
    if let Ok(pairs) = parse_bag(text) {
        assert_eq!(parse_bag(&encode_bag(&pairs)).ok(), Some(pairs));
    }
});
