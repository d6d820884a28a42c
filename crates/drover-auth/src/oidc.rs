//! Optional single sign-on: Bearer JWTs signed by a configured OpenID Connect issuer.
//!
//! [`OidcValidator`] checks a token's signature against the issuer's published keys (JWKS),
//! then `exp` (required), `nbf` (if present), `iss`, `aud` (when configured), and returns the
//! username from the configured claim.
//!
//! Keys are fetched lazily on first use — from `jwks_url` if configured, otherwise from the
//! `jwks_uri` of `<issuer>/.well-known/openid-configuration` — and cached. A token whose `kid`
//! is not in the cached set triggers a refetch (the issuer may have rotated its keys), at most
//! once per [`DEFAULT_REFETCH_INTERVAL`]; cached keys are also refreshed after
//! [`MAX_KEY_AGE`], falling back to the old ones if the issuer cannot be reached. Concurrent
//! requests share a single fetch.
//!
//! When the discovery document or the key set cannot be fetched, validation fails with
//! [`OidcError::Unavailable`], so that callers can answer 503 rather than 401.
//!
//! Supported algorithms: RS256, RS384, RS512, PS256, PS384, PS512 (RSA keys) and ES256, ES384
//! (EC keys on P-256 and P-384). Symmetric algorithms are never accepted.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{Map, Value};
use tokio::sync::{Mutex, RwLock};
use tokio::time::Instant;

/// Clock skew tolerated for `exp` and `nbf`, in seconds.
pub const LEEWAY_SECS: u64 = 60;
/// Minimum time between two key set fetches triggered by an unknown `kid`.
pub const DEFAULT_REFETCH_INTERVAL: Duration = Duration::from_secs(30);
/// Age after which cached keys are refreshed on next use.
pub const MAX_KEY_AGE: Duration = Duration::from_secs(3600);

const SUPPORTED_ALGORITHMS: [Algorithm; 8] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
];

/// Where tokens come from and how to read them.
#[derive(Clone, Debug)]
pub struct OidcConfig {
    /// The issuer, exactly as in the tokens' `iss` claim (a trailing `/` is tolerated).
    pub issuer_url: String,
    /// If set, tokens must list this value in `aud`.
    pub audience: Option<String>,
    /// Claim holding the username, e.g. `preferred_username`.
    pub username_claim: String,
    /// Key set location; if unset, discovered from
    /// `<issuer_url>/.well-known/openid-configuration`.
    pub jwks_url: Option<String>,
}

/// Why a token was rejected, or could not be checked.
#[derive(thiserror::Error, Debug)]
pub enum OidcError {
    /// Not a JWT, or a claim has the wrong type.
    #[error("malformed token: {0}")]
    Malformed(String),
    /// `exp` is in the past (beyond the leeway).
    #[error("token expired")]
    Expired,
    /// `nbf` is in the future (beyond the leeway).
    #[error("token not valid yet")]
    NotYetValid,
    /// `iss` is not the configured issuer.
    #[error("issuer '{found}' is not the configured issuer '{expected}'")]
    InvalidIssuer {
        /// The token's `iss`.
        found: String,
        /// The configured issuer.
        expected: String,
    },
    /// `aud` does not contain the configured audience.
    #[error("audience {found} does not include the configured audience '{expected}'")]
    InvalidAudience {
        /// The token's `aud`, as JSON.
        found: String,
        /// The configured audience.
        expected: String,
    },
    /// The signature does not verify with the issuer's key.
    #[error("invalid token signature")]
    InvalidSignature,
    /// The header names an algorithm that is not accepted (e.g. `HS256`).
    #[error("signing algorithm {0} is not supported")]
    UnsupportedAlgorithm(String),
    /// The issuer does not publish a key with the token's `kid`.
    #[error("signing key '{0}' is not published by the issuer")]
    UnknownKey(String),
    /// The token has no `kid`, and the issuer publishes no key usable with its algorithm.
    #[error("the issuer publishes no key for algorithm {0}")]
    NoMatchingKey(String),
    /// A required claim is absent.
    #[error("claim '{0}' missing")]
    MissingClaim(String),
    /// The issuer's discovery document or key set cannot be fetched (answer 503, not 401).
    #[error("identity provider unavailable: {0}")]
    Unavailable(String),
}

impl OidcError {
    /// Whether the token could not be checked because the issuer is unreachable (as opposed to
    /// the token being invalid).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }
}

/// Validates JWTs of one issuer. Cheap to clone; clones share the key cache.
#[derive(Clone)]
pub struct OidcValidator {
    inner: Arc<Inner>,
}

impl fmt::Debug for OidcValidator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OidcValidator")
            .field("config", &self.inner.config)
            .field("refetch_interval", &self.inner.refetch_interval)
            .finish_non_exhaustive()
    }
}

struct Inner {
    config: OidcConfig,
    http: reqwest::Client,
    refetch_interval: Duration,
    cache: RwLock<Cache>,
    /// Serializes fetches; holds the `jwks_uri` found by discovery.
    fetch: Mutex<Option<String>>,
}

#[derive(Default)]
struct Cache {
    keys: Option<Arc<KeySet>>,
    /// Last successful fetch.
    fetched_at: Option<Instant>,
    /// Last fetch attempt, successful or not.
    attempted_at: Option<Instant>,
    /// Number of fetch attempts so far.
    generation: u64,
    /// Error of the last attempt, if it failed.
    last_error: Option<String>,
}

impl OidcValidator {
    /// Creates a validator. No request is made until the first token is validated. The HTTP
    /// client should have timeouts set.
    pub fn new(config: OidcConfig, http: reqwest::Client) -> Self {
        Self::with_parts(config, http, DEFAULT_REFETCH_INTERVAL)
    }

    /// Replaces the minimum interval between key set fetches triggered by unknown key ids
    /// (default [`DEFAULT_REFETCH_INTERVAL`]). Call right after [`OidcValidator::new`]: the
    /// returned validator starts with an empty cache and does not share it with `self`.
    pub fn with_refetch_interval(self, interval: Duration) -> Self {
        Self::with_parts(self.inner.config.clone(), self.inner.http.clone(), interval)
    }

    fn with_parts(config: OidcConfig, http: reqwest::Client, refetch_interval: Duration) -> Self {
        Self {
            inner: Arc::new(Inner {
                config,
                http,
                refetch_interval,
                cache: RwLock::new(Cache::default()),
                fetch: Mutex::new(None),
            }),
        }
    }

    /// The configuration this validator was created with.
    pub fn config(&self) -> &OidcConfig {
        &self.inner.config
    }

    /// Validates `jwt` (without the `Bearer ` prefix) and returns the username.
    pub async fn validate(&self, jwt: &str) -> Result<String, OidcError> {
        let header = jsonwebtoken::decode_header(jwt)
            .map_err(|e| OidcError::Malformed(format!("invalid token header: {e}")))?;
        let alg = header.alg;
        if !SUPPORTED_ALGORITHMS.contains(&alg) {
            return Err(OidcError::UnsupportedAlgorithm(format!("{alg:?}")));
        }
        let kid = header.kid.as_deref();

        let mut keys = self.inner.current_keys().await?;
        if keys.candidates(kid, alg)?.is_empty() {
            // The issuer may have rotated its keys since we fetched them.
            if let Some(refreshed) = self.inner.refetch_for_unknown_key(&keys).await? {
                keys = refreshed;
            }
        }
        let candidates = keys.candidates(kid, alg)?;
        if candidates.is_empty() {
            return Err(match kid {
                Some(kid) => OidcError::UnknownKey(kid.to_string()),
                None => OidcError::NoMatchingKey(format!("{alg:?}")),
            });
        }

        let claims = decode_with_any(jwt, alg, &candidates)?;
        self.inner.check_claims(&claims)
    }
}

/// Verifies the signature (with the first key that works), `exp` and `nbf`.
fn decode_with_any(
    jwt: &str,
    alg: Algorithm,
    candidates: &[&KeyEntry],
) -> Result<Map<String, Value>, OidcError> {
    let mut validation = Validation::new(alg);
    validation.leeway = LEEWAY_SECS;
    validation.validate_exp = true;
    validation.validate_nbf = true;
    // `iss` and `aud` are checked by `check_claims`, with precise errors.
    validation.validate_aud = false;
    validation.set_required_spec_claims(&["exp"]);

    let mut last = OidcError::InvalidSignature;
    for entry in candidates {
        match jsonwebtoken::decode::<Map<String, Value>>(jwt, &entry.key, &validation) {
            Ok(data) => return Ok(data.claims),
            Err(err) => match map_jwt_error(&err) {
                // Another key may still verify the signature.
                OidcError::InvalidSignature => last = OidcError::InvalidSignature,
                other => return Err(other),
            },
        }
    }
    Err(last)
}

fn map_jwt_error(err: &jsonwebtoken::errors::Error) -> OidcError {
    match err.kind() {
        ErrorKind::InvalidSignature
        | ErrorKind::InvalidEcdsaKey
        | ErrorKind::InvalidRsaKey(_)
        | ErrorKind::InvalidKeyFormat
        | ErrorKind::Crypto(_) => OidcError::InvalidSignature,
        ErrorKind::ExpiredSignature => OidcError::Expired,
        ErrorKind::ImmatureSignature => OidcError::NotYetValid,
        ErrorKind::MissingRequiredClaim(claim) => OidcError::MissingClaim(claim.clone()),
        ErrorKind::InvalidAlgorithm => {
            OidcError::Malformed("algorithm does not match the signing key".to_string())
        }
        ErrorKind::Json(e) => OidcError::Malformed(format!("invalid claims: {e}")),
        _ => OidcError::Malformed(err.to_string()),
    }
}

impl Inner {
    fn check_claims(&self, claims: &Map<String, Value>) -> Result<String, OidcError> {
        let issuer = string_claim(claims, "iss")?;
        let expected = &self.config.issuer_url;
        if issuer.trim_end_matches('/') != expected.trim_end_matches('/') {
            return Err(OidcError::InvalidIssuer {
                found: issuer.to_string(),
                expected: expected.clone(),
            });
        }

        if let Some(audience) = &self.config.audience {
            let aud = claims
                .get("aud")
                .filter(|v| !v.is_null())
                .ok_or_else(|| OidcError::MissingClaim("aud".to_string()))?;
            let matches = match aud {
                Value::String(s) => s == audience,
                Value::Array(items) => items.iter().any(|v| v.as_str() == Some(audience)),
                _ => {
                    return Err(OidcError::Malformed(
                        "claim 'aud' is neither a string nor an array".to_string(),
                    ))
                }
            };
            if !matches {
                return Err(OidcError::InvalidAudience {
                    found: aud.to_string(),
                    expected: audience.clone(),
                });
            }
        }

        let username = string_claim(claims, &self.config.username_claim)?;
        if username.is_empty() {
            return Err(OidcError::Malformed(format!(
                "claim '{}' is empty",
                self.config.username_claim
            )));
        }
        Ok(username.to_string())
    }

    /// The cached keys, fetching them first if there are none yet or they are old.
    async fn current_keys(&self) -> Result<Arc<KeySet>, OidcError> {
        let (generation, stale) = {
            let cache = self.cache.read().await;
            match (&cache.keys, cache.fetched_at) {
                (Some(keys), Some(at)) if at.elapsed() < MAX_KEY_AGE => return Ok(keys.clone()),
                _ => (cache.generation, cache.keys.clone()),
            }
        };
        match self.refresh(generation).await {
            Ok(keys) => Ok(keys),
            Err(err) => match stale {
                Some(keys) => {
                    tracing::warn!(issuer = %self.config.issuer_url, error = %err,
                        "cannot refresh OIDC signing keys, using the cached ones");
                    Ok(keys)
                }
                None => Err(err),
            },
        }
    }

    /// Refetches keys after a lookup in `seen` failed, unless that was done too recently.
    /// Returns `None` when rate limited.
    async fn refetch_for_unknown_key(
        &self,
        seen: &Arc<KeySet>,
    ) -> Result<Option<Arc<KeySet>>, OidcError> {
        let generation = {
            let cache = self.cache.read().await;
            if let Some(keys) = &cache.keys {
                if !Arc::ptr_eq(keys, seen) {
                    // Someone else already refreshed them.
                    return Ok(Some(keys.clone()));
                }
            }
            if cache
                .attempted_at
                .is_some_and(|at| at.elapsed() < self.refetch_interval)
            {
                tracing::debug!(issuer = %self.config.issuer_url,
                    "unknown signing key, not refetching keys yet");
                return Ok(None);
            }
            cache.generation
        };
        self.refresh(generation).await.map(Some)
    }

    /// Fetches the key set, unless another task finished an attempt since `seen_generation`
    /// was read, in which case its outcome is reused.
    async fn refresh(&self, seen_generation: u64) -> Result<Arc<KeySet>, OidcError> {
        let mut jwks_uri = self.fetch.lock().await;
        {
            let cache = self.cache.read().await;
            if cache.generation != seen_generation {
                return match (&cache.last_error, &cache.keys) {
                    (None, Some(keys)) => Ok(keys.clone()),
                    (Some(err), _) => Err(OidcError::Unavailable(err.clone())),
                    (None, None) => Err(OidcError::Unavailable(
                        "signing keys are not available".to_string(),
                    )),
                };
            }
        }

        let result = self.fetch_keys(&mut jwks_uri).await;

        let now = Instant::now();
        let mut cache = self.cache.write().await;
        cache.generation += 1;
        cache.attempted_at = Some(now);
        match result {
            Ok(keys) => {
                let keys = Arc::new(keys);
                cache.keys = Some(keys.clone());
                cache.fetched_at = Some(now);
                cache.last_error = None;
                Ok(keys)
            }
            Err(err) => {
                if let OidcError::Unavailable(msg) = &err {
                    cache.last_error = Some(msg.clone());
                }
                Err(err)
            }
        }
    }

    async fn fetch_keys(&self, jwks_uri: &mut Option<String>) -> Result<KeySet, OidcError> {
        let uri = match (&self.config.jwks_url, &*jwks_uri) {
            (Some(configured), _) => configured.clone(),
            (None, Some(discovered)) => discovered.clone(),
            (None, None) => {
                let discovered = self.discover().await?;
                *jwks_uri = Some(discovered.clone());
                discovered
            }
        };
        tracing::debug!(issuer = %self.config.issuer_url, jwks_uri = %uri, "fetching OIDC signing keys");
        let jwks: JwksDocument = match self.get_json("key set", &uri).await {
            Ok(jwks) => jwks,
            Err(err) => {
                // The location may have changed: discover again next time.
                *jwks_uri = None;
                return Err(err);
            }
        };
        let keys = KeySet::from_document(jwks);
        if keys.entries.is_empty() {
            return Err(OidcError::Unavailable(format!(
                "key set at {uri} contains no usable signing key"
            )));
        }
        Ok(keys)
    }

    async fn discover(&self) -> Result<String, OidcError> {
        let url = format!(
            "{}/.well-known/openid-configuration",
            self.config.issuer_url.trim_end_matches('/')
        );
        let doc: DiscoveryDocument = self.get_json("discovery document", &url).await?;
        if let Some(issuer) = &doc.issuer {
            if issuer.trim_end_matches('/') != self.config.issuer_url.trim_end_matches('/') {
                tracing::warn!(configured = %self.config.issuer_url, advertised = %issuer,
                    "OIDC discovery document advertises a different issuer");
            }
        }
        doc.jwks_uri.ok_or_else(|| {
            OidcError::Unavailable(format!("discovery document at {url} has no 'jwks_uri'"))
        })
    }

    async fn get_json<T: DeserializeOwned>(&self, what: &str, url: &str) -> Result<T, OidcError> {
        let response = self
            .http
            .get(url)
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| {
                OidcError::Unavailable(format!(
                    "cannot fetch {what} from {url}: {}",
                    drover_model::error::chain(&e)
                ))
            })?;
        let status = response.status();
        if !status.is_success() {
            return Err(OidcError::Unavailable(format!(
                "fetching {what} from {url} failed with HTTP status {status}"
            )));
        }
        response.json::<T>().await.map_err(|e| {
            OidcError::Unavailable(format!(
                "invalid {what} at {url}: {}",
                drover_model::error::chain(&e)
            ))
        })
    }
}

fn string_claim<'a>(claims: &'a Map<String, Value>, name: &str) -> Result<&'a str, OidcError> {
    match claims.get(name) {
        None | Some(Value::Null) => Err(OidcError::MissingClaim(name.to_string())),
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(OidcError::Malformed(format!(
            "claim '{name}' is not a string"
        ))),
    }
}

#[derive(Deserialize)]
struct DiscoveryDocument {
    issuer: Option<String>,
    jwks_uri: Option<String>,
}

#[derive(Deserialize)]
struct JwksDocument {
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

struct KeyEntry {
    kid: Option<String>,
    family: KeyFamily,
    /// The key's `alg`, if it restricts itself to one.
    alg: Option<Algorithm>,
    key: DecodingKey,
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

struct KeySet {
    entries: Vec<KeyEntry>,
}

impl KeySet {
    /// Keeps the usable signing keys; skips (and logs) the others.
    fn from_document(doc: JwksDocument) -> Self {
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
    fn candidates(&self, kid: Option<&str>, alg: Algorithm) -> Result<Vec<&KeyEntry>, OidcError> {
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
