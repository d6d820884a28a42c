//! Shared access signatures (SAS), as Azure IoT devices present them:
//! `SharedAccessSignature sr=<url-encoded resource>&sig=<url-encoded base64 signature>&se=<unix
//! expiry>[&skn=<policy>]`.
//!
//! The rules (../shared/specs/azure-iot.md §2): fields come in any order; `sig` is
//! `base64(HMAC-SHA256(base64decode(key), "<sr as transmitted>\n<se>"))`, computed over the
//! **raw** `sr` the client sent (Python encodes `/` as `%2F`, C as `%2f`); the decoded `sr` must
//! equal the expected resource, compared without regard to case; `sig` is percent-decoded without
//! turning `+` into a space; a token whose `se` has passed is refused. A device may hold two
//! keys (primary, secondary): either signs.
//!
//! This module parses and checks; it knows nothing of devices or transports.

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

/// Longest token accepted, in bytes (Azure's are a few hundred).
pub const MAX_TOKEN_LEN: usize = 4096;

/// Fewest and most bytes of a symmetric key (Azure's are 32 or 64).
pub const KEY_LEN: std::ops::RangeInclusive<usize> = 16..=64;

/// Why a token was refused. The messages name the problem, never a key or the signature.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SasError {
    #[error(
        "not a shared access signature: expected 'SharedAccessSignature sr=...&sig=...&se=...'"
    )]
    NotSas,
    #[error("the shared access signature is longer than {MAX_TOKEN_LEN} bytes")]
    TooLong,
    #[error("the shared access signature lacks '{0}'")]
    Missing(&'static str),
    #[error("the shared access signature has '{0}' twice")]
    Repeated(&'static str),
    #[error("the shared access signature's '{0}' is malformed")]
    Malformed(&'static str),
    #[error("the shared access signature expired at {0} (unix time)")]
    Expired(u64),
    #[error("the shared access signature is for '{given}', not '{expected}'")]
    WrongResource { given: String, expected: String },
    #[error("the shared access signature does not verify with the device's keys")]
    BadSignature,
}

/// A parsed token. `sr_raw` is the resource as transmitted (what the signature covers).
#[derive(Clone, PartialEq, Eq)]
pub struct SasToken {
    pub sr_raw: String,
    /// The resource, percent-decoded.
    pub resource: String,
    pub signature: Vec<u8>,
    pub expiry: u64,
    /// The policy name (`skn`), when given (service policies; devices send none).
    pub policy: Option<String>,
}

impl std::fmt::Debug for SasToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SasToken")
            .field("resource", &self.resource)
            .field("expiry", &self.expiry)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

/// Percent-decodes `s`; `+` stays `+` (Azure does not form-encode).
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

impl SasToken {
    /// Parses `SharedAccessSignature k=v&k=v...`.
    pub fn parse(token: &str) -> Result<SasToken, SasError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(SasError::TooLong);
        }
        let body = token
            .strip_prefix("SharedAccessSignature ")
            .ok_or(SasError::NotSas)?
            .trim();
        let (mut sr, mut sig, mut se, mut skn) = (None, None, None, None);
        for pair in body.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').ok_or(SasError::NotSas)?;
            let (slot, name) = match k {
                "sr" => (&mut sr, "sr"),
                "sig" => (&mut sig, "sig"),
                "se" => (&mut se, "se"),
                "skn" => (&mut skn, "skn"),
                // Unknown fields are ignored, as Azure does.
                _ => continue,
            };
            if slot.replace(v).is_some() {
                return Err(SasError::Repeated(name));
            }
        }
        let sr_raw = sr.ok_or(SasError::Missing("sr"))?;
        let resource = percent_decode(sr_raw).ok_or(SasError::Malformed("sr"))?;
        let sig = percent_decode(sig.ok_or(SasError::Missing("sig"))?)
            .ok_or(SasError::Malformed("sig"))?;
        let signature = base64::engine::general_purpose::STANDARD
            .decode(sig.as_bytes())
            .map_err(|_| SasError::Malformed("sig"))?;
        let expiry = se
            .ok_or(SasError::Missing("se"))?
            .parse::<u64>()
            .map_err(|_| SasError::Malformed("se"))?;
        let policy = skn
            .map(|p| percent_decode(p).ok_or(SasError::Malformed("skn")))
            .transpose()?;
        Ok(SasToken {
            sr_raw: sr_raw.to_string(),
            resource,
            signature,
            expiry,
            policy,
        })
    }

    /// Checks the token for `expected_resource` at `now` (unix seconds) against `keys` (raw key
    /// bytes, primary first): not expired, the resource matches, one key signs it.
    pub fn verify(
        &self,
        expected_resource: &str,
        keys: &[&[u8]],
        now: u64,
    ) -> Result<(), SasError> {
        if self.expiry < now {
            return Err(SasError::Expired(self.expiry));
        }
        if !self.resource.eq_ignore_ascii_case(expected_resource) {
            return Err(SasError::WrongResource {
                given: self.resource.clone(),
                expected: expected_resource.to_string(),
            });
        }
        let message = format!("{}\n{}", self.sr_raw, self.expiry);
        let signed = keys.iter().any(|key| {
            let expected = hmac(key, message.as_bytes());
            expected.ct_eq(&self.signature).into()
        });
        if signed {
            Ok(())
        } else {
            Err(SasError::BadSignature)
        }
    }
}

fn hmac(key: &[u8], message: &[u8]) -> Vec<u8> {
    // HMAC takes keys of any length; `new_from_slice` cannot fail for it.
    let mut mac = match HmacSha256::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => return Vec::new(),
    };
    mac.update(message);
    mac.finalize().into_bytes().to_vec()
}

/// Seconds since the Unix epoch now (what `se` is compared with).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Decodes a base64 symmetric key and checks its length.
pub fn decode_key(key: &str) -> Result<Vec<u8>, String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(key.trim())
        .map_err(|_| "not base64".to_string())?;
    if !KEY_LEN.contains(&bytes.len()) {
        return Err(format!(
            "{} bytes long; a key has {} to {} bytes",
            bytes.len(),
            KEY_LEN.start(),
            KEY_LEN.end()
        ));
    }
    Ok(bytes)
}

/// Percent-encodes a resource as the Python SDK does (`/` and every byte that is not
/// unreserved).
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A token for `resource`, signed with `key` (raw bytes), valid until `expiry` (unix seconds):
/// what a device SDK makes (for tests and tools).
pub fn sign(resource: &str, key: &[u8], expiry: u64, policy: Option<&str>) -> String {
    let sr = percent_encode(resource);
    let sig = base64::engine::general_purpose::STANDARD
        .encode(hmac(key, format!("{sr}\n{expiry}").as_bytes()));
    let mut token = format!(
        "SharedAccessSignature sr={sr}&sig={}&se={expiry}",
        percent_encode(&sig)
    );
    if let Some(p) = policy {
        token.push_str(&format!("&skn={}", percent_encode(p)));
    }
    token
}

/// The key of a device in a DPS enrollment group:
/// `base64(HMAC-SHA256(base64decode(group key), registration id))`.
pub fn derive_group_key(group_key: &[u8], registration_id: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(hmac(group_key, registration_id.as_bytes()))
}

/// The hub resource of a device: `{hub}/devices/{device}`.
pub fn device_resource(hub: &str, device: &str) -> String {
    format!("{hub}/devices/{device}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

    #[test]
    fn tokens_the_python_sdk_makes_verify() {
        // What azure-iot-device 2.14 sends: `/` as `%2F`, no skn.
        let t = sign("myhub.example.com/devices/dev1", KEY, 2_000_000_000, None);
        assert!(t.contains("sr=myhub.example.com%2Fdevices%2Fdev1&"), "{t}");
        let p = SasToken::parse(&t).expect("parse");
        assert_eq!(p.resource, "myhub.example.com/devices/dev1");
        p.verify("myhub.example.com/devices/dev1", &[KEY], 1_900_000_000)
            .expect("verifies");
        // The case of the resource does not matter; the raw form is what was signed.
        p.verify("MyHub.example.com/Devices/DEV1", &[KEY], 0)
            .expect("case-insensitive");
    }

    #[test]
    fn the_c_sdk_lowercase_encoding_verifies_over_the_raw_sr() {
        let sr = "hub%2fdevices%2fd";
        let sig = base64::engine::general_purpose::STANDARD
            .encode(hmac(KEY, format!("{sr}\n100").as_bytes()));
        let t = format!(
            "SharedAccessSignature se=100&sig={}&sr={sr}",
            percent_encode(&sig)
        );
        SasToken::parse(&t)
            .expect("parse")
            .verify("hub/devices/d", &[KEY], 50)
            .expect("verifies");
    }

    #[test]
    fn plus_in_the_signature_stays_a_plus() {
        // Find a signature with '+' and send it unencoded: still verifies.
        for expiry in 0..10_000u64 {
            let sig = base64::engine::general_purpose::STANDARD
                .encode(hmac(KEY, format!("h%2Fdevices%2Fd\n{expiry}").as_bytes()));
            if sig.contains('+') {
                let t = format!("SharedAccessSignature sr=h%2Fdevices%2Fd&sig={sig}&se={expiry}");
                SasToken::parse(&t)
                    .expect("parse")
                    .verify("h/devices/d", &[KEY], 0)
                    .expect("verifies with a raw +");
                return;
            }
        }
        panic!("no signature with '+' found");
    }

    #[test]
    fn refusals_say_why() {
        let t = sign("h/devices/d", KEY, 100, Some("device"));
        let p = SasToken::parse(&t).expect("parse");
        assert_eq!(p.policy.as_deref(), Some("device"));
        assert_eq!(
            p.verify("h/devices/d", &[KEY], 101),
            Err(SasError::Expired(100))
        );
        assert!(matches!(
            p.verify("h/devices/other", &[KEY], 0),
            Err(SasError::WrongResource { .. })
        ));
        let other = b"another key that is long enough!";
        assert_eq!(
            p.verify("h/devices/d", &[other], 0),
            Err(SasError::BadSignature)
        );
        // The secondary key signs too.
        p.verify("h/devices/d", &[other, KEY], 0)
            .expect("secondary");
        assert_eq!(SasToken::parse("Bearer x"), Err(SasError::NotSas));
        assert_eq!(
            SasToken::parse("SharedAccessSignature sr=a&se=1"),
            Err(SasError::Missing("sig"))
        );
        assert_eq!(
            SasToken::parse("SharedAccessSignature sr=a&sig=AAAA&se=x"),
            Err(SasError::Malformed("se"))
        );
        assert_eq!(
            SasToken::parse("SharedAccessSignature sr=a&sr=b&sig=AAAA&se=1"),
            Err(SasError::Repeated("sr"))
        );
        assert_eq!(
            SasToken::parse(&format!("SharedAccessSignature sr={}", "a".repeat(5000))),
            Err(SasError::TooLong)
        );
        // Nothing secret in the errors or the Debug form.
        assert!(!format!("{p:?}").contains("sig"));
    }

    #[test]
    fn keys_and_group_keys() {
        assert!(decode_key("not base64!").is_err());
        assert!(decode_key(&base64::engine::general_purpose::STANDARD.encode([0u8; 8])).is_err());
        assert_eq!(
            decode_key(&base64::engine::general_purpose::STANDARD.encode(KEY)).expect("key"),
            KEY
        );
        // A known vector: HMAC-SHA256 with a fixed key, base64.
        let derived = derive_group_key(KEY, "reg-1");
        assert_eq!(
            base64::engine::general_purpose::STANDARD
                .decode(&derived)
                .expect("base64")
                .len(),
            32
        );
        assert_ne!(derive_group_key(KEY, "reg-2"), derived);
    }

    proptest! {
        #[test]
        fn signed_tokens_verify_for_their_resource_only(
            hub in "[a-z0-9.-]{1,40}",
            device in "[A-Za-z0-9_.:-]{1,64}",
            other in "[A-Za-z0-9_.:-]{1,64}",
            expiry in 1u64..4_000_000_000,
            key in proptest::collection::vec(any::<u8>(), 16..64),
        ) {
            let resource = device_resource(&hub, &device);
            let t = sign(&resource, &key, expiry, None);
            let p = SasToken::parse(&t).expect("parse");
            prop_assert!(p.verify(&resource, &[&key], expiry).is_ok());
            prop_assert!(p.verify(&resource, &[&key], expiry + 1).is_err());
            if !other.eq_ignore_ascii_case(&device) {
                prop_assert!(p.verify(&device_resource(&hub, &other), &[&key], 0).is_err());
            }
        }

        #[test]
        fn parsing_never_panics(s in ".{0,300}") {
            let _ = SasToken::parse(&format!("SharedAccessSignature {s}"));
        }
    }
}
