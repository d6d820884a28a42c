//! Access tokens as clients send them: the format check never panics, and what it accepts
//! hashes and verifies against its own hash.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|token: &str| {
    if let Ok(prefix) = drover_auth::token::parse(token) {
        assert!(token.starts_with(prefix));
        let hash = drover_auth::token::hash(token);
        assert!(drover_auth::token::verify_hash(token, &hash));
    }
});
