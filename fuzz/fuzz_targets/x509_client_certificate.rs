//! Client certificates as a TLS handshake hands them over (DER, any bytes), and trust anchors
//! as tenants write them (base64 of PEM): parsing and chain verification never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (Vec<u8>, Vec<u8>, String)| {
    let (leaf, intermediate, anchor) = input;
    let _ = drover_auth::x509::client_identity(&leaf);
    if drover_auth::x509::parse_trust_anchor(&anchor).is_ok() {
        let _ = drover_auth::x509::verify_client_chain(
            &[leaf, intermediate],
            &[anchor],
            std::time::SystemTime::now(),
        );
    }
});
