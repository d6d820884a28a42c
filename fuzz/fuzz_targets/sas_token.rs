//! Shared access signatures as Azure IoT devices send them (the MQTT password): parsing and
//! verification never panic, and what `sign` makes for any resource verifies for it.
#![no_main]

use drover_auth::sas::{sign, SasToken};
use libfuzzer_sys::fuzz_target;

const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

fuzz_target!(|input: (&str, &str, u32)| {
    let (token, resource, expiry) = input;
    if let Ok(t) = SasToken::parse(token) {
        let _ = t.verify(resource, &[KEY], 0);
        let _ = t.verify(&t.resource.clone(), &[KEY], u64::from(expiry));
    }
    let signed = sign(resource, KEY, u64::from(expiry), None);
    if signed.len() <= drover_auth::sas::MAX_TOKEN_LEN {
        let t = SasToken::parse(&signed).expect("what sign makes parses");
        assert_eq!(t.resource, resource);
        t.verify(resource, &[KEY], u64::from(expiry))
            .expect("what sign makes verifies");
    }
});
