//! Password hashes as Drogue Cloud stores them for devices and users.
//!
//! Three forms exist: SHA-512 crypt (`$6$…`, what `drg set password` writes), bcrypt
//! (`$2a$`/`$2b$`/`$2y$`, typically supplied by clients who hash on their side) and plain text.
//!
//! Verification never panics: a malformed hash simply verifies as `false`. Use the `is_*` shape
//! checks to reject malformed client-supplied hashes up front, when they are stored.
//!
//! SHA-512 crypt and bcrypt are deliberately slow (milliseconds). They are blocking functions:
//! async callers run them on `tokio::task::spawn_blocking` and cache successful results.

use rand::Rng;
use sha2::{Digest, Sha256};
use sha_crypt::Sha512Params;
use subtle::ConstantTimeEq;

/// Characters of the crypt(3) base64 alphabet, used for salts and hash output.
const CRYPT_ALPHABET: &[u8; 64] =
    b"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
/// Salt length written by [`hash_sha512_crypt`], the maximum SHA-crypt uses.
const SHA512_SALT_LEN: usize = 16;
/// Length of the encoded SHA-512 crypt digest.
const SHA512_HASH_LEN: usize = 86;
/// Accepted range of SHA-512 crypt rounds (those the implementation can verify).
const SHA512_ROUNDS: std::ops::RangeInclusive<u64> = 1_000..=999_999_999;
/// Length of salt plus digest in a bcrypt hash.
const BCRYPT_SALT_HASH_LEN: usize = 53;
/// Accepted range of bcrypt costs.
const BCRYPT_COSTS: std::ops::RangeInclusive<u32> = 4..=31;

/// Hashes `plain` with SHA-512 crypt: `$6$<16 char salt>$<86 char hash>`, 5000 rounds (the
/// default, so no `rounds=` field). The same format glibc's `crypt(3)`, `mkpasswd -m sha-512`
/// and `openssl passwd -6` produce.
pub fn hash_sha512_crypt(plain: &str) -> String {
    let mut rng = rand::thread_rng();
    let salt: String = (0..SHA512_SALT_LEN)
        .map(|_| char::from(CRYPT_ALPHABET[rng.gen_range(0..CRYPT_ALPHABET.len())]))
        .collect();
    let params = Sha512Params::default();
    match sha_crypt::sha512_crypt_b64(plain.as_bytes(), salt.as_bytes(), &params) {
        Ok(hash) => format!("$6${salt}${hash}"),
        // Only an out-of-range round count can fail, and the default is in range.
        Err(err) => unreachable!("SHA-512 crypt with default parameters failed: {err:?}"),
    }
}

/// Checks `plain` against a SHA-512 crypt hash (`$6$[rounds=N$]salt$hash`).
pub fn verify_sha512_crypt(plain: &str, hash: &str) -> bool {
    is_sha512_crypt(hash) && sha_crypt::sha512_check(plain, hash).is_ok()
}

/// Checks `plain` against a bcrypt hash (`$2a$`, `$2b$` or `$2y$`).
pub fn verify_bcrypt(plain: &str, hash: &str) -> bool {
    is_bcrypt(hash) && bcrypt::verify(plain, hash).unwrap_or(false)
}

/// Compares a plain-text password with a stored plain-text password in constant time (neither
/// content nor length is revealed: both are hashed first).
pub fn verify_plain(plain: &str, stored: &str) -> bool {
    let a = Sha256::digest(plain.as_bytes());
    let b = Sha256::digest(stored.as_bytes());
    a.as_slice().ct_eq(b.as_slice()).into()
}

/// Checks `plain` against a hash in any supported format ([`is_sha512_crypt`] or
/// [`is_bcrypt`]); `false` for anything else.
pub fn verify_hashed(plain: &str, hash: &str) -> bool {
    if is_sha512_crypt(hash) {
        verify_sha512_crypt(plain, hash)
    } else if is_bcrypt(hash) {
        verify_bcrypt(plain, hash)
    } else {
        false
    }
}

/// Whether `s` is a well-formed SHA-512 crypt hash: `$6$`, optionally `rounds=N$` with N in
/// 1000..=999999999, a salt of up to 16 characters of `[./0-9A-Za-z]`, `$`, and 86 characters
/// of the same alphabet.
pub fn is_sha512_crypt(s: &str) -> bool {
    let Some(rest) = s.strip_prefix("$6$") else {
        return false;
    };
    let mut parts: Vec<&str> = rest.split('$').collect();
    if let Some(rounds) = parts.first().and_then(|p| p.strip_prefix("rounds=")) {
        let valid = !rounds.is_empty()
            && rounds.len() <= 10
            && rounds.bytes().all(|b| b.is_ascii_digit())
            && rounds
                .parse::<u64>()
                .is_ok_and(|r| SHA512_ROUNDS.contains(&r));
        if !valid {
            return false;
        }
        parts.remove(0);
    }
    let [salt, hash] = parts[..] else {
        return false;
    };
    salt.len() <= SHA512_SALT_LEN
        && is_crypt_base64(salt)
        && hash.len() == SHA512_HASH_LEN
        && is_crypt_base64(hash)
}

/// Whether `s` is a well-formed bcrypt hash: `$2a$`, `$2b$` or `$2y$`, a two-digit cost in
/// 04..=31, `$`, and 53 characters of `[./0-9A-Za-z]` (22 of salt, 31 of hash).
pub fn is_bcrypt(s: &str) -> bool {
    let Some(rest) = s
        .strip_prefix("$2a$")
        .or_else(|| s.strip_prefix("$2b$"))
        .or_else(|| s.strip_prefix("$2y$"))
    else {
        return false;
    };
    let Some((cost, salt_hash)) = rest.split_once('$') else {
        return false;
    };
    cost.len() == 2
        && cost.bytes().all(|b| b.is_ascii_digit())
        && cost.parse::<u32>().is_ok_and(|c| BCRYPT_COSTS.contains(&c))
        && salt_hash.len() == BCRYPT_SALT_HASH_LEN
        && is_crypt_base64(salt_hash)
}

fn is_crypt_base64(s: &str) -> bool {
    s.bytes().all(|b| CRYPT_ALPHABET.contains(&b))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    // python3 -c 'import crypt; print(crypt.crypt("secret", "$6$saltsalt$"))'
    // (also `openssl passwd -6 -salt saltsalt secret`)
    const SHA512_SECRET: &str = "$6$saltsalt$TVLlQcbpFVof5W3Yz4DTP6gRstiNuHwwTt6GLc1E5n0U0aDehy0S5knV8wiOQSpT0Y77vwPZN.Pq.H91p5hVO1";
    // python3 -c 'import crypt; print(crypt.crypt("secret", "$6$rounds=10000$saltsalt$"))'
    const SHA512_ROUNDS_SECRET: &str = "$6$rounds=10000$saltsalt$WowrPBpEDVlCoruBosYlrZycTCx3//TyDHYqEhX9DUHHt0XTztUqzQDDUuvUGRA8aUe9p55hcAxeGcu58sm3u.";
    // python3 -c 'import crypt; print(crypt.crypt("pässwörd", "$6$abcdefghijklmnop$"))'
    const SHA512_UNICODE: &str = "$6$abcdefghijklmnop$Z142AM4CbyHnvFikRKauX.vgsnvjYLvt4bZlZZZrlgVhDW0zltnUun6G9I5xvVirZ/Y9MRz96lJh5eoUicidR.";
    // Openwall crypt_blowfish test vector for "U*U".
    const BCRYPT_OPENWALL: &str = "$2a$05$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW";

    #[test]
    fn sha512_known_vectors() {
        assert!(verify_sha512_crypt("secret", SHA512_SECRET));
        assert!(!verify_sha512_crypt("Secret", SHA512_SECRET));
        assert!(!verify_sha512_crypt("", SHA512_SECRET));
        assert!(verify_sha512_crypt("secret", SHA512_ROUNDS_SECRET));
        assert!(!verify_sha512_crypt("secret2", SHA512_ROUNDS_SECRET));
        assert!(verify_sha512_crypt("pässwörd", SHA512_UNICODE));
        assert!(verify_hashed("secret", SHA512_SECRET));
    }

    #[test]
    fn sha512_round_trip() {
        let hash = hash_sha512_crypt("s3cr3t pässword");
        assert!(hash.starts_with("$6$"), "{hash}");
        assert!(is_sha512_crypt(&hash), "{hash}");
        assert_eq!(hash.len(), 3 + 16 + 1 + 86);
        assert!(verify_sha512_crypt("s3cr3t pässword", &hash));
        assert!(!verify_sha512_crypt("s3cr3t password", &hash));
        // Random salt.
        assert_ne!(hash, hash_sha512_crypt("s3cr3t pässword"));
    }

    #[test]
    fn bcrypt_known_vectors() {
        assert!(verify_bcrypt("U*U", BCRYPT_OPENWALL));
        assert!(!verify_bcrypt("U*U*", BCRYPT_OPENWALL));
        for prefix in ["$2b$", "$2y$"] {
            let hash = BCRYPT_OPENWALL.replacen("$2a$", prefix, 1);
            assert!(is_bcrypt(&hash));
            assert!(verify_bcrypt("U*U", &hash), "{hash}");
        }
        assert!(verify_hashed("U*U", BCRYPT_OPENWALL));
    }

    #[test]
    fn bcrypt_generated() {
        let hash = bcrypt::hash("secret", 4).unwrap();
        assert!(is_bcrypt(&hash), "{hash}");
        assert!(verify_bcrypt("secret", &hash));
        assert!(!verify_bcrypt("secreT", &hash));
        assert!(!verify_sha512_crypt("secret", &hash));
    }

    #[test]
    fn plain() {
        assert!(verify_plain("secret", "secret"));
        assert!(verify_plain("", ""));
        assert!(!verify_plain("secret", "secret "));
        assert!(!verify_plain("secret", ""));
        assert!(!verify_hashed("secret", "secret"));
    }

    #[test]
    fn shape_checks() {
        assert!(is_sha512_crypt(SHA512_SECRET));
        assert!(is_sha512_crypt(SHA512_ROUNDS_SECRET));
        assert!(!is_bcrypt(SHA512_SECRET));
        assert!(is_bcrypt(BCRYPT_OPENWALL));
        assert!(!is_sha512_crypt(BCRYPT_OPENWALL));

        let bad_sha = [
            "",
            "$6$",
            "$6$salt",
            "$6$salt$",
            "$6$salt$short",
            "$5$saltsalt$TVLlQcbpFVof5W3Yz4DTP6gRstiNuHwwTt6GLc1E5n0U0aDehy0S5knV8wiOQSpT0Y77vwPZN.Pq.H91p5hVO1",
            "$6$rounds=999$saltsalt$TVLlQcbpFVof5W3Yz4DTP6gRstiNuHwwTt6GLc1E5n0U0aDehy0S5knV8wiOQSpT0Y77vwPZN.Pq.H91p5hVO1",
            "$6$rounds=1000000000$saltsalt$TVLlQcbpFVof5W3Yz4DTP6gRstiNuHwwTt6GLc1E5n0U0aDehy0S5knV8wiOQSpT0Y77vwPZN.Pq.H91p5hVO1",
            "$6$rounds=$saltsalt$TVLlQcbpFVof5W3Yz4DTP6gRstiNuHwwTt6GLc1E5n0U0aDehy0S5knV8wiOQSpT0Y77vwPZN.Pq.H91p5hVO1",
            "$6$rounds=+5000$saltsalt$TVLlQcbpFVof5W3Yz4DTP6gRstiNuHwwTt6GLc1E5n0U0aDehy0S5knV8wiOQSpT0Y77vwPZN.Pq.H91p5hVO1",
            "$6$salt:salt$TVLlQcbpFVof5W3Yz4DTP6gRstiNuHwwTt6GLc1E5n0U0aDehy0S5knV8wiOQSpT0Y77vwPZN.Pq.H91p5hVO1",
            "$6$saltsaltsaltsalt1$TVLlQcbpFVof5W3Yz4DTP6gRstiNuHwwTt6GLc1E5n0U0aDehy0S5knV8wiOQSpT0Y77vwPZN.Pq.H91p5hVO1",
            "$6$saltsalt$TVLlQcbpFVof5W3Yz4DTP6gRstiNuHwwTt6GLc1E5n0U0aDehy0S5knV8wiOQSpT0Y77vwPZN.Pq.H91p5hVO1$",
            "$6$saltsalt$TVLlQcbpFVof5W3Yz4DTP6gRstiNuHwwTt6GLc1E5n0U0aDehy0S5knV8wiOQSpT0Y77vwPZN.Pq.H91p5hVO!",
            " $6$saltsalt$TVLlQcbpFVof5W3Yz4DTP6gRstiNuHwwTt6GLc1E5n0U0aDehy0S5knV8wiOQSpT0Y77vwPZN.Pq.H91p5hVO1",
        ];
        for hash in bad_sha {
            assert!(!is_sha512_crypt(hash), "{hash}");
            assert!(!verify_sha512_crypt("secret", hash), "{hash}");
            assert!(!verify_hashed("secret", hash), "{hash}");
        }

        let bad_bcrypt = [
            "",
            "$2a$",
            "$2a$05$",
            "$2x$05$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW",
            "$2c$05$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW",
            "$2a$5$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW",
            "$2a$03$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW",
            "$2a$32$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW",
            "$2a$-5$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW",
            "$2a$05$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOe",
            "$2a$05$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeWW",
            "$2a$05$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOe+",
            "$2a$05$CCCCCCCCCCCCCCCCCCCCC$E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW",
        ];
        for hash in bad_bcrypt {
            assert!(!is_bcrypt(hash), "{hash}");
            assert!(!verify_bcrypt("U*U", hash), "{hash}");
            assert!(!verify_hashed("U*U", hash), "{hash}");
        }
    }

    #[test]
    fn malformed_hashes_never_panic() {
        let inputs = [
            "$6$rounds=1000$$",
            "$6$$",
            "$6$é$ü",
            "$2a$04$ééééééééééééééééééééééééééé",
            "$2b$04$.....................................................",
            "$$$$$$$$",
            "\0",
        ];
        for hash in inputs {
            let _ = verify_sha512_crypt("x", hash);
            let _ = verify_bcrypt("x", hash);
            let _ = verify_hashed("x", hash);
        }
    }
}
