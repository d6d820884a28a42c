//! Drogue-format access tokens ("API keys").
//!
//! A token looks like `drg_Ab12Cd_<30 alphanumeric characters><checksum>`:
//!
//! - `drg_` followed by 6 alphanumeric characters is the token's **prefix**. It is not secret;
//!   it identifies the token (listing, deletion) and is stored in clear.
//! - `_` and 30 random alphanumeric characters form the secret key.
//! - The checksum is the CRC-32 (IEEE) of everything before it, encoded in base62 (alphabet
//!   `0-9A-Za-z`). Like Drogue Cloud, the encoding is *not* padded, so the checksum is 1 to 6
//!   characters long (about 21 % of tokens have a checksum shorter than 6 characters). For
//!   leniency, [`parse`] also accepts the checksum left-padded with `0` to exactly 6 characters.
//!
//! The checksum lets [`parse`] reject typos and foreign strings before any lookup. Tokens are
//! high-entropy (30 × log2(62) ≈ 178 bits), so they are stored only as a plain SHA-256 hash
//! ([`hash`]) and compared in constant time ([`verify_hash`]).

use std::fmt;

use rand::distributions::Alphanumeric;
use rand::Rng;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The literal start of every token.
pub const TOKEN_SCHEME: &str = "drg_";
/// Number of random characters in the prefix after `drg_`.
pub const PREFIX_RANDOM_LEN: usize = 6;
/// Length of the prefix, including `drg_`.
pub const PREFIX_LEN: usize = TOKEN_SCHEME.len() + PREFIX_RANDOM_LEN;
/// Number of random characters in the secret key.
pub const KEY_LEN: usize = 30;
/// Length of the checksummed part: prefix, `_`, key.
const BODY_LEN: usize = PREFIX_LEN + 1 + KEY_LEN;
/// Longest base62 encoding of a `u32`.
const MAX_CHECKSUM_LEN: usize = 6;
/// Shortest possible token (checksum of a single character).
pub const MIN_TOKEN_LEN: usize = BODY_LEN + 1;
/// Longest possible token.
pub const MAX_TOKEN_LEN: usize = BODY_LEN + MAX_CHECKSUM_LEN;

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// A freshly generated access token. The full `token` is shown to the user once and then only
/// its [`hash`] is kept.
#[derive(Clone, PartialEq, Eq)]
pub struct AccessToken {
    /// `drg_` plus 6 alphanumeric characters; identifies the token.
    pub prefix: String,
    /// The complete token, secret.
    pub token: String,
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessToken")
            .field("prefix", &self.prefix)
            .field("token", &"<redacted>")
            .finish()
    }
}

/// Why a string is not a well-formed access token.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum TokenFormatError {
    /// The string does not start with `drg_`.
    #[error("access token must start with '{TOKEN_SCHEME}'")]
    MissingScheme,
    /// The string is too short or too long.
    #[error("access token has {0} characters, expected {MIN_TOKEN_LEN} to {MAX_TOKEN_LEN}")]
    InvalidLength(usize),
    /// A character is not allowed at its position (a byte offset).
    #[error("access token has an invalid character at offset {0}")]
    InvalidCharacter(usize),
    /// The checksum does not match the rest of the token (typo or truncated copy).
    #[error("access token checksum does not match")]
    InvalidChecksum,
}

/// Generates a new random access token.
pub fn generate() -> AccessToken {
    let mut rng = rand::thread_rng();
    let mut random = |len: usize| -> String {
        (&mut rng)
            .sample_iter(&Alphanumeric)
            .take(len)
            .map(char::from)
            .collect()
    };
    let prefix_random = random(PREFIX_RANDOM_LEN);
    let key = random(KEY_LEN);
    assemble(&prefix_random, &key)
}

/// Builds a token from its random parts (6 and 30 alphanumeric characters).
fn assemble(prefix_random: &str, key: &str) -> AccessToken {
    let mut token = String::with_capacity(MAX_TOKEN_LEN);
    token.push_str(TOKEN_SCHEME);
    token.push_str(prefix_random);
    let prefix = token.clone();
    token.push('_');
    token.push_str(key);
    let checksum = base62(crc32fast::hash(token.as_bytes()));
    token.push_str(&checksum);
    AccessToken { prefix, token }
}

/// Validates the shape and checksum of `token` and returns its prefix (`drg_XXXXXX`).
///
/// This does not say whether the token exists; look the prefix up and check the token with
/// [`verify_hash`].
pub fn parse(token: &str) -> Result<&str, TokenFormatError> {
    let bytes = token.as_bytes();
    if !token.starts_with(TOKEN_SCHEME) {
        return Err(TokenFormatError::MissingScheme);
    }
    if !(MIN_TOKEN_LEN..=MAX_TOKEN_LEN).contains(&bytes.len()) {
        return Err(TokenFormatError::InvalidLength(token.chars().count()));
    }
    for (i, &b) in bytes.iter().enumerate().skip(TOKEN_SCHEME.len()) {
        let ok = if i == PREFIX_LEN {
            b == b'_'
        } else {
            b.is_ascii_alphanumeric()
        };
        if !ok {
            return Err(TokenFormatError::InvalidCharacter(i));
        }
    }
    // All ASCII from here on, so byte indices are char boundaries.
    let (body, checksum) = token.split_at(BODY_LEN);
    let crc = crc32fast::hash(body.as_bytes());
    let expected = base62(crc);
    let padded = format!("{expected:0>6}");
    if checksum != expected && checksum != padded {
        return Err(TokenFormatError::InvalidChecksum);
    }
    Ok(&token[..PREFIX_LEN])
}

/// The hash under which a token is stored: lowercase hex SHA-256 of the token.
pub fn hash(token: &str) -> String {
    hex(&Sha256::digest(token.as_bytes()))
}

/// Checks `token` against a hash produced by [`hash`], in constant time (with respect to the
/// content of both; the length of a malformed stored hash may leak, which reveals nothing).
pub fn verify_hash(token: &str, stored_hash: &str) -> bool {
    let actual = hash(token);
    let stored = stored_hash.to_ascii_lowercase();
    actual.as_bytes().ct_eq(stored.as_bytes()).into()
}

/// Base62 (`0-9A-Za-z`), most significant digit first, without padding.
fn base62(mut n: u32) -> String {
    let mut digits = [0u8; MAX_CHECKSUM_LEN];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = BASE62[(n % 62) as usize];
        n /= 62;
        if n == 0 {
            break;
        }
    }
    digits[i..].iter().map(|&b| char::from(b)).collect()
}

fn hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(HEX[usize::from(b >> 4)]));
        s.push(char::from(HEX[usize::from(b & 0x0f)]));
    }
    s
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The vector from Drogue Cloud's own test suite.
    const DROGUE_VECTOR: &str = "drg_012345_01234567890123456789012345678920BetF";

    #[test]
    fn matches_drogue_vector() {
        let token = assemble("012345", "012345678901234567890123456789");
        assert_eq!(token.prefix, "drg_012345");
        assert_eq!(token.token, DROGUE_VECTOR);
        assert_eq!(parse(DROGUE_VECTOR), Ok("drg_012345"));
    }

    #[test]
    fn base62_encoding() {
        assert_eq!(base62(0), "0");
        assert_eq!(base62(61), "z");
        assert_eq!(base62(62), "10");
        assert_eq!(base62(u32::MAX), "4gfFC3");
        assert_eq!(base62(1_835_044_457), "20BetF");
    }

    #[test]
    fn short_checksum_accepted_unpadded_and_padded() {
        // Find a body whose checksum encodes to at most 4 characters.
        let token = (0..)
            .map(|i| assemble("abcdef", &format!("{i:0>30}")))
            .find(|t| t.token.len() <= BODY_LEN + 4)
            .unwrap();
        assert_eq!(parse(&token.token), Ok("drg_abcdef"));
        let (body, checksum) = token.token.split_at(BODY_LEN);
        let padded = format!("{body}{checksum:0>6}");
        assert_eq!(parse(&padded), Ok("drg_abcdef"));
        // Padding to any other length is not accepted.
        let over_padded = format!("{body}0{checksum}");
        assert_eq!(parse(&over_padded), Err(TokenFormatError::InvalidChecksum));
    }

    #[test]
    fn rejects_garbage() {
        assert_eq!(parse(""), Err(TokenFormatError::MissingScheme));
        assert_eq!(parse("drg_"), Err(TokenFormatError::InvalidLength(4)));
        assert_eq!(
            parse("abc_012345_01234567890123456789012345678920BetF"),
            Err(TokenFormatError::MissingScheme)
        );
        assert_eq!(
            parse("drg_012345_01234567890123456789012345678920BetE"),
            Err(TokenFormatError::InvalidChecksum)
        );
        assert_eq!(
            parse("drg_012345_01234567890123456789012345678920BetF_way_too_much"),
            Err(TokenFormatError::InvalidLength(60))
        );
        assert_eq!(
            parse("drg_012345-01234567890123456789012345678920BetF"),
            Err(TokenFormatError::InvalidCharacter(10))
        );
        assert_eq!(
            parse("drg_01234é_0123456789012345678901234567892BetF"),
            Err(TokenFormatError::InvalidCharacter(9))
        );
        assert!(parse("drg_012345_012345678901234567890123456789ééé").is_err());
    }

    #[test]
    fn generated_tokens_parse() {
        for _ in 0..1000 {
            let token = generate();
            assert_eq!(parse(&token.token), Ok(token.prefix.as_str()));
            assert_eq!(token.prefix.len(), PREFIX_LEN);
            assert!(token.prefix.starts_with("drg_"));
        }
    }

    #[test]
    fn hash_and_verify() {
        let token = generate();
        let stored = hash(&token.token);
        assert_eq!(stored.len(), 64);
        assert!(stored
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
        assert!(verify_hash(&token.token, &stored));
        assert!(verify_hash(&token.token, &stored.to_ascii_uppercase()));
        assert!(!verify_hash(&generate().token, &stored));
        assert!(!verify_hash(&token.token, ""));
        assert!(!verify_hash(&token.token, &stored[..63]));
        // Known SHA-256 vector.
        assert_eq!(
            hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn debug_redacts_token() {
        let token = generate();
        let debug = format!("{token:?}");
        assert!(debug.contains(&token.prefix));
        assert!(!debug.contains(&token.token));
    }

    const ALPHABET: &str = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_-";

    proptest! {
        #[test]
        fn assembled_tokens_parse(prefix in "[A-Za-z0-9]{6}", key in "[A-Za-z0-9]{30}") {
            let token = assemble(&prefix, &key);
            prop_assert_eq!(parse(&token.token), Ok(token.prefix.as_str()));
            prop_assert_eq!(token.prefix, format!("drg_{prefix}"));
        }

        #[test]
        fn generated_tokens_always_parse(_seed in any::<u8>()) {
            let token = generate();
            prop_assert_eq!(parse(&token.token), Ok(token.prefix.as_str()));
        }

        #[test]
        fn changing_any_character_breaks_parse(
            prefix in "[A-Za-z0-9]{6}",
            key in "[A-Za-z0-9]{30}",
            position in any::<prop::sample::Index>(),
            replacement in any::<prop::sample::Index>(),
        ) {
            let token = assemble(&prefix, &key).token;
            let position = position.index(token.len());
            let original = token.as_bytes()[position];
            let candidates: Vec<u8> = ALPHABET.bytes().filter(|&b| b != original).collect();
            let new = candidates[replacement.index(candidates.len())];
            let mut bytes = token.into_bytes();
            bytes[position] = new;
            let flipped = String::from_utf8(bytes).unwrap();
            prop_assert!(parse(&flipped).is_err(), "{} parsed", flipped);
        }

        #[test]
        fn parse_never_panics(s in "\\PC{0,60}") {
            let _ = parse(&s);
        }
    }
}
