//! Signing keys from a JWKS document: which keys are usable (RSA, EC P-256/P-384, signing
//! keys of a supported algorithm) and which may have signed a token.

use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Deserialize;
use serde_json::Value;

use super::{OidcError, SUPPORTED_ALGORITHMS};

#[derive(Deserialize)]
/// A key set document (JWKS).
pub(super) struct JwksDocument {
    #[serde(default)]
    keys: Vec<Value>,
}

/// The fields of a JWK this module uses; others are ignored.
#[derive(Deserialize)]
struct RawJwk {
    kty: String,
    kid: Option<String>,
    #[serde(rename = "use")]
    use_: Option<String>,
    alg: Option<String>,
    crv: Option<String>,
    n: Option<String>,
    e: Option<String>,
    x: Option<String>,
    y: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum KeyFamily {
    Rsa,
    EcP256,
    EcP384,
}

/// A usable signing key.
pub(super) struct KeyEntry {
    kid: Option<String>,
    family: KeyFamily,
    /// The key's `alg`, if it restricts itself to one.
    alg: Option<Algorithm>,
    pub(super) key: DecodingKey,
}

impl KeyEntry {
    fn accepts(&self, alg: Algorithm) -> bool {
        let family_ok = match alg {
            Algorithm::RS256
            | Algorithm::RS384
            | Algorithm::RS512
            | Algorithm::PS256
            | Algorithm::PS384
            | Algorithm::PS512 => self.family == KeyFamily::Rsa,
            Algorithm::ES256 => self.family == KeyFamily::EcP256,
            Algorithm::ES384 => self.family == KeyFamily::EcP384,
            _ => false,
        };
        family_ok && self.alg.is_none_or(|a| a == alg)
    }

    fn from_jwk(raw: RawJwk) -> Result<Self, String> {
        if raw.use_.as_deref().is_some_and(|u| u != "sig") {
            return Err("not a signing key".to_string());
        }
        let alg = match raw.alg.as_deref() {
            None => None,
            Some(name) => match name.parse::<Algorithm>() {
                Ok(alg) if SUPPORTED_ALGORITHMS.contains(&alg) => Some(alg),
                _ => return Err(format!("unsupported algorithm {name}")),
            },
        };
        let (family, key) = match raw.kty.as_str() {
            "RSA" => {
                let (Some(n), Some(e)) = (&raw.n, &raw.e) else {
                    return Err("RSA key without 'n' and 'e'".to_string());
                };
                let key = DecodingKey::from_rsa_components(n, e).map_err(|e| e.to_string())?;
                (KeyFamily::Rsa, key)
            }
            "EC" => {
                let family = match raw.crv.as_deref() {
                    Some("P-256") => KeyFamily::EcP256,
                    Some("P-384") => KeyFamily::EcP384,
                    other => return Err(format!("unsupported curve {other:?}")),
                };
                let (Some(x), Some(y)) = (&raw.x, &raw.y) else {
                    return Err("EC key without 'x' and 'y'".to_string());
                };
                let key = DecodingKey::from_ec_components(x, y).map_err(|e| e.to_string())?;
                (family, key)
            }
            other => return Err(format!("unsupported key type {other}")),
        };
        Ok(Self {
            kid: raw.kid,
            family,
            alg,
            key,
        })
    }
}

/// The usable signing keys of a key set.
pub(super) struct KeySet {
    pub(super) entries: Vec<KeyEntry>,
}

impl KeySet {
    /// Keeps the usable signing keys; skips (and logs) the others.
    pub(super) fn from_document(doc: JwksDocument) -> Self {
        let mut entries = Vec::with_capacity(doc.keys.len());
        for value in doc.keys {
            let parsed = serde_json::from_value::<RawJwk>(value)
                .map_err(|e| e.to_string())
                .and_then(|raw| {
                    let kid = raw.kid.clone();
                    KeyEntry::from_jwk(raw).map_err(|e| format!("{e} (kid {kid:?})"))
                });
            match parsed {
                Ok(entry) => entries.push(entry),
                Err(reason) => tracing::debug!(%reason, "skipping JWK"),
            }
        }
        Self { entries }
    }

    /// Keys that may have signed a token with this `kid` and `alg`. A key with the right id but
    /// of the wrong type is an error, not a reason to refetch.
    pub(super) fn candidates(
        &self,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Result<Vec<&KeyEntry>, OidcError> {
        match kid {
            Some(kid) => {
                let with_id: Vec<&KeyEntry> = self
                    .entries
                    .iter()
                    .filter(|e| e.kid.as_deref() == Some(kid))
                    .collect();
                if !with_id.is_empty() && !with_id.iter().any(|e| e.accepts(alg)) {
                    return Err(OidcError::Malformed(format!(
                        "key '{kid}' cannot verify {alg:?} signatures"
                    )));
                }
                Ok(with_id.into_iter().filter(|e| e.accepts(alg)).collect())
            }
            None => Ok(self.entries.iter().filter(|e| e.accepts(alg)).collect()),
        }
    }
}
