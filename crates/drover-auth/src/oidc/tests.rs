//! Tests against a tiny in-process identity provider (axum on 127.0.0.1:0).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex as StdMutex;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{EncodingKey, Header};
use serde_json::json;

use super::*;

const RSA_KEY_PEM: &str = include_str!("../../testdata/rsa_test_key.pem");
const RSA_JWK: &str = include_str!("../../testdata/rsa_test_key.jwk.json");

struct TestKey {
    kid: String,
    alg: Algorithm,
    encoding: EncodingKey,
    jwk: Value,
}

impl TestKey {
    fn ec(kid: &str, alg: Algorithm) -> Self {
        let (rcgen_alg, crv, len) = match alg {
            Algorithm::ES256 => (&rcgen::PKCS_ECDSA_P256_SHA256, "P-256", 32),
            Algorithm::ES384 => (&rcgen::PKCS_ECDSA_P384_SHA384, "P-384", 48),
            _ => unreachable!(),
        };
        let pair = rcgen::KeyPair::generate_for(rcgen_alg).unwrap();
        // Uncompressed point: 0x04 || x || y.
        let raw = pair.public_key_raw();
        assert_eq!(raw.len(), 1 + 2 * len);
        let jwk = json!({
            "kty": "EC",
            "crv": crv,
            "kid": kid,
            "use": "sig",
            "alg": format!("{alg:?}"),
            "x": URL_SAFE_NO_PAD.encode(&raw[1..=len]),
            "y": URL_SAFE_NO_PAD.encode(&raw[1 + len..]),
        });
        let encoding = EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).unwrap();
        Self {
            kid: kid.to_string(),
            alg,
            encoding,
            jwk,
        }
    }

    /// The fixture RSA key, published without `alg` so it serves RS* and PS*.
    fn rsa(kid: &str, alg: Algorithm) -> Self {
        let mut jwk: Value = serde_json::from_str(RSA_JWK).unwrap();
        jwk["kid"] = json!(kid);
        Self {
            kid: kid.to_string(),
            alg,
            encoding: EncodingKey::from_rsa_pem(RSA_KEY_PEM.as_bytes()).unwrap(),
            jwk,
        }
    }

    fn sign(&self, claims: &Value) -> String {
        self.sign_with_kid(Some(&self.kid), claims)
    }

    fn sign_with_kid(&self, kid: Option<&str>, claims: &Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = kid.map(str::to_string);
        jsonwebtoken::encode(&header, claims, &self.encoding).unwrap()
    }
}

struct ProviderState {
    issuer: String,
    jwks: StdMutex<Value>,
    discovery_hits: AtomicUsize,
    jwks_hits: AtomicUsize,
    broken: AtomicBool,
}

struct Provider {
    addr: SocketAddr,
    state: Arc<ProviderState>,
}

impl Provider {
    async fn start(keys: &[&TestKey]) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(ProviderState {
            issuer: format!("http://{addr}"),
            jwks: StdMutex::new(Value::Null),
            discovery_hits: AtomicUsize::new(0),
            jwks_hits: AtomicUsize::new(0),
            broken: AtomicBool::new(false),
        });
        let provider = Self { addr, state };
        provider.publish(keys);
        let app = Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/keys", get(jwks))
            .with_state(provider.state.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        provider
    }

    fn publish(&self, keys: &[&TestKey]) {
        let keys: Vec<Value> = keys.iter().map(|k| k.jwk.clone()).collect();
        *self.state.jwks.lock().unwrap() = json!({ "keys": keys });
    }

    fn issuer(&self) -> String {
        self.state.issuer.clone()
    }

    fn config(&self) -> OidcConfig {
        OidcConfig {
            issuer_url: self.issuer(),
            audience: None,
            username_claim: "preferred_username".to_string(),
            jwks_url: None,
        }
    }

    fn validator(&self) -> OidcValidator {
        OidcValidator::new(self.config(), reqwest::Client::new())
    }

    fn jwks_hits(&self) -> usize {
        self.state.jwks_hits.load(Ordering::SeqCst)
    }

    fn discovery_hits(&self) -> usize {
        self.state.discovery_hits.load(Ordering::SeqCst)
    }

    fn claims(&self) -> Value {
        json!({
            "iss": self.issuer(),
            "sub": "f3c2a1",
            "preferred_username": "alice",
            "exp": now() + 300,
            "iat": now(),
        })
    }
}

async fn discovery(State(state): State<Arc<ProviderState>>) -> Response {
    state.discovery_hits.fetch_add(1, Ordering::SeqCst);
    if state.broken.load(Ordering::SeqCst) {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    Json(json!({
        "issuer": state.issuer,
        "jwks_uri": format!("{}/keys", state.issuer),
        "authorization_endpoint": format!("{}/auth", state.issuer),
    }))
    .into_response()
}

async fn jwks(State(state): State<Arc<ProviderState>>) -> Response {
    state.jwks_hits.fetch_add(1, Ordering::SeqCst);
    if state.broken.load(Ordering::SeqCst) {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    let body = state.jwks.lock().unwrap().clone();
    Json(body).into_response()
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

#[test]
fn validator_is_send_sync_clone() {
    fn check<T: Send + Sync + Clone + 'static>() {}
    check::<OidcValidator>();
}

#[tokio::test]
async fn valid_token_yields_username() {
    let key = TestKey::ec("k1", Algorithm::ES256);
    let provider = Provider::start(&[&key]).await;
    let validator = provider.validator();

    let token = key.sign(&provider.claims());
    assert_eq!(validator.validate(&token).await.unwrap(), "alice");

    // Keys are cached: a second token needs no request.
    let mut claims = provider.claims();
    claims["preferred_username"] = json!("bob");
    assert_eq!(validator.validate(&key.sign(&claims)).await.unwrap(), "bob");
    assert_eq!(validator.clone().validate(&token).await.unwrap(), "alice");
    assert_eq!(provider.discovery_hits(), 1);
    assert_eq!(provider.jwks_hits(), 1);
}

#[tokio::test]
async fn es384_token_without_kid() {
    let key = TestKey::ec("k384", Algorithm::ES384);
    let other = TestKey::ec("k256", Algorithm::ES256);
    let provider = Provider::start(&[&other, &key]).await;
    let token = key.sign_with_kid(None, &provider.claims());
    assert_eq!(
        provider.validator().validate(&token).await.unwrap(),
        "alice"
    );
}

#[tokio::test]
async fn rsa_tokens_with_configured_jwks_url() {
    let provider = Provider::start(&[&TestKey::rsa("rsa", Algorithm::RS256)]).await;
    let mut config = provider.config();
    config.jwks_url = Some(format!("http://{}/keys", provider.addr));
    let validator = OidcValidator::new(config, reqwest::Client::new());
    for alg in [
        Algorithm::RS256,
        Algorithm::RS384,
        Algorithm::RS512,
        Algorithm::PS256,
        Algorithm::PS384,
        Algorithm::PS512,
    ] {
        let key = TestKey::rsa("rsa", alg);
        let token = key.sign(&provider.claims());
        assert_eq!(
            validator.validate(&token).await.unwrap(),
            "alice",
            "{alg:?}"
        );
    }
    assert_eq!(provider.discovery_hits(), 0);
    assert_eq!(provider.jwks_hits(), 1);
}

#[tokio::test]
async fn expired_token() {
    let key = TestKey::ec("k1", Algorithm::ES256);
    let provider = Provider::start(&[&key]).await;
    let validator = provider.validator();

    let mut claims = provider.claims();
    claims["exp"] = json!(now() - 3600);
    let err = validator.validate(&key.sign(&claims)).await.unwrap_err();
    assert!(matches!(err, OidcError::Expired), "{err:?}");
    assert_eq!(err.to_string(), "token expired");
    assert!(!err.is_unavailable());

    // Within the leeway.
    claims["exp"] = json!(now() - 30);
    assert_eq!(
        validator.validate(&key.sign(&claims)).await.unwrap(),
        "alice"
    );
}

#[tokio::test]
async fn missing_exp() {
    let key = TestKey::ec("k1", Algorithm::ES256);
    let provider = Provider::start(&[&key]).await;
    let mut claims = provider.claims();
    claims.as_object_mut().unwrap().remove("exp");
    let err = provider
        .validator()
        .validate(&key.sign(&claims))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, OidcError::MissingClaim(c) if c == "exp"),
        "{err:?}"
    );
}

#[tokio::test]
async fn not_yet_valid() {
    let key = TestKey::ec("k1", Algorithm::ES256);
    let provider = Provider::start(&[&key]).await;
    let validator = provider.validator();

    let mut claims = provider.claims();
    claims["nbf"] = json!(now() + 600);
    let err = validator.validate(&key.sign(&claims)).await.unwrap_err();
    assert!(matches!(err, OidcError::NotYetValid), "{err:?}");

    claims["nbf"] = json!(now() + 30);
    assert_eq!(
        validator.validate(&key.sign(&claims)).await.unwrap(),
        "alice"
    );
}

#[tokio::test]
async fn wrong_issuer() {
    let key = TestKey::ec("k1", Algorithm::ES256);
    let provider = Provider::start(&[&key]).await;
    let mut claims = provider.claims();
    claims["iss"] = json!("https://evil.example.com");
    let err = provider
        .validator()
        .validate(&key.sign(&claims))
        .await
        .unwrap_err();
    assert!(matches!(err, OidcError::InvalidIssuer { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!(
            "issuer 'https://evil.example.com' is not the configured issuer '{}'",
            provider.issuer()
        )
    );

    claims.as_object_mut().unwrap().remove("iss");
    let err = provider
        .validator()
        .validate(&key.sign(&claims))
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "claim 'iss' missing");
}

#[tokio::test]
async fn issuer_trailing_slash_is_tolerated() {
    let key = TestKey::ec("k1", Algorithm::ES256);
    let provider = Provider::start(&[&key]).await;

    // Configured with a slash, token without.
    let mut config = provider.config();
    config.issuer_url = format!("{}/", provider.issuer());
    let validator = OidcValidator::new(config, reqwest::Client::new());
    assert_eq!(
        validator
            .validate(&key.sign(&provider.claims()))
            .await
            .unwrap(),
        "alice"
    );

    // Token with a slash, configured without.
    let mut claims = provider.claims();
    claims["iss"] = json!(format!("{}/", provider.issuer()));
    assert_eq!(
        provider
            .validator()
            .validate(&key.sign(&claims))
            .await
            .unwrap(),
        "alice"
    );
}

#[tokio::test]
async fn audience() {
    let key = TestKey::ec("k1", Algorithm::ES256);
    let provider = Provider::start(&[&key]).await;
    let mut config = provider.config();
    config.audience = Some("drover".to_string());
    let validator = OidcValidator::new(config, reqwest::Client::new());

    let mut claims = provider.claims();
    claims["aud"] = json!("other");
    let err = validator.validate(&key.sign(&claims)).await.unwrap_err();
    assert!(matches!(err, OidcError::InvalidAudience { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "audience \"other\" does not include the configured audience 'drover'"
    );

    claims["aud"] = json!(["account", "other"]);
    let err = validator.validate(&key.sign(&claims)).await.unwrap_err();
    assert!(matches!(err, OidcError::InvalidAudience { .. }), "{err:?}");

    claims.as_object_mut().unwrap().remove("aud");
    let err = validator.validate(&key.sign(&claims)).await.unwrap_err();
    assert_eq!(err.to_string(), "claim 'aud' missing");

    claims["aud"] = json!("drover");
    assert_eq!(
        validator.validate(&key.sign(&claims)).await.unwrap(),
        "alice"
    );
    claims["aud"] = json!(["account", "drover"]);
    assert_eq!(
        validator.validate(&key.sign(&claims)).await.unwrap(),
        "alice"
    );

    // Without a configured audience, `aud` is not checked.
    claims["aud"] = json!("other");
    assert_eq!(
        provider
            .validator()
            .validate(&key.sign(&claims))
            .await
            .unwrap(),
        "alice"
    );
}

#[tokio::test]
async fn signed_by_another_key() {
    let key = TestKey::ec("k1", Algorithm::ES256);
    let impostor = TestKey::ec("k1", Algorithm::ES256);
    let provider = Provider::start(&[&key]).await;
    let err = provider
        .validator()
        .validate(&impostor.sign(&provider.claims()))
        .await
        .unwrap_err();
    assert!(matches!(err, OidcError::InvalidSignature), "{err:?}");
    assert_eq!(err.to_string(), "invalid token signature");

    // Without kid too.
    let err = provider
        .validator()
        .validate(&impostor.sign_with_kid(None, &provider.claims()))
        .await
        .unwrap_err();
    assert!(matches!(err, OidcError::InvalidSignature), "{err:?}");

    // Tampered payload.
    let token = key.sign(&provider.claims());
    let parts: Vec<&str> = token.split('.').collect();
    let mut claims = provider.claims();
    claims["preferred_username"] = json!("admin");
    let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap());
    let tampered = format!("{}.{}.{}", parts[0], payload, parts[2]);
    let err = provider.validator().validate(&tampered).await.unwrap_err();
    assert!(matches!(err, OidcError::InvalidSignature), "{err:?}");
}

#[tokio::test]
async fn missing_or_invalid_username_claim() {
    let key = TestKey::ec("k1", Algorithm::ES256);
    let provider = Provider::start(&[&key]).await;
    let validator = provider.validator();

    let mut claims = provider.claims();
    claims.as_object_mut().unwrap().remove("preferred_username");
    let err = validator.validate(&key.sign(&claims)).await.unwrap_err();
    assert!(matches!(&err, OidcError::MissingClaim(c) if c == "preferred_username"));
    assert_eq!(err.to_string(), "claim 'preferred_username' missing");

    claims["preferred_username"] = json!(42);
    let err = validator.validate(&key.sign(&claims)).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "malformed token: claim 'preferred_username' is not a string"
    );

    // Another claim can be configured.
    let mut config = provider.config();
    config.username_claim = "sub".to_string();
    let validator = OidcValidator::new(config, reqwest::Client::new());
    assert_eq!(
        validator.validate(&key.sign(&claims)).await.unwrap(),
        "f3c2a1"
    );
}

#[tokio::test]
async fn unsupported_algorithms_and_garbage() {
    let key = TestKey::ec("k1", Algorithm::ES256);
    let provider = Provider::start(&[&key]).await;
    let validator = provider.validator();

    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("k1".to_string());
    let hs = jsonwebtoken::encode(
        &header,
        &provider.claims(),
        &EncodingKey::from_secret(b"secret"),
    )
    .unwrap();
    let err = validator.validate(&hs).await.unwrap_err();
    assert!(matches!(err, OidcError::UnsupportedAlgorithm(_)), "{err:?}");
    assert_eq!(err.to_string(), "signing algorithm HS256 is not supported");

    // `alg: none` is not even a known algorithm.
    let none_header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(provider.claims().to_string());
    let err = validator
        .validate(&format!("{none_header}.{payload}."))
        .await
        .unwrap_err();
    assert!(matches!(err, OidcError::Malformed(_)), "{err:?}");

    for garbage in ["", "not a jwt", "a.b.c", "a.b", "....."] {
        let err = validator.validate(garbage).await.unwrap_err();
        assert!(matches!(err, OidcError::Malformed(_)), "{garbage}: {err:?}");
    }

    // An ES256 token naming an ES384 key.
    let p384 = TestKey::ec("k384", Algorithm::ES384);
    provider.publish(&[&key, &p384]);
    let validator = provider.validator();
    let token = key.sign_with_kid(Some("k384"), &provider.claims());
    let err = validator.validate(&token).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "malformed token: key 'k384' cannot verify ES256 signatures"
    );

    // Only the last validator needed the keys: the others failed before.
    assert_eq!(provider.jwks_hits(), 1);
}

#[tokio::test]
async fn unknown_kid_refetch_is_rate_limited() {
    let old = TestKey::ec("old", Algorithm::ES256);
    let new = TestKey::ec("new", Algorithm::ES256);
    let provider = Provider::start(&[&old]).await;
    let validator = provider.validator();

    assert_eq!(
        validator
            .validate(&old.sign(&provider.claims()))
            .await
            .unwrap(),
        "alice"
    );
    assert_eq!(provider.jwks_hits(), 1);

    // The issuer rotates its keys; within 30 s of the last fetch we do not refetch.
    provider.publish(&[&old, &new]);
    let token = new.sign(&provider.claims());
    for _ in 0..3 {
        let err = validator.validate(&token).await.unwrap_err();
        assert!(
            matches!(&err, OidcError::UnknownKey(k) if k == "new"),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            "signing key 'new' is not published by the issuer"
        );
    }
    assert_eq!(provider.jwks_hits(), 1);
}

#[tokio::test]
async fn unknown_kid_triggers_refetch() {
    let old = TestKey::ec("old", Algorithm::ES256);
    let new = TestKey::ec("new", Algorithm::ES256);
    let provider = Provider::start(&[&old]).await;
    let validator = provider.validator().with_refetch_interval(Duration::ZERO);

    assert_eq!(
        validator
            .validate(&old.sign(&provider.claims()))
            .await
            .unwrap(),
        "alice"
    );
    provider.publish(&[&old, &new]);
    assert_eq!(
        validator
            .validate(&new.sign(&provider.claims()))
            .await
            .unwrap(),
        "alice"
    );
    assert_eq!(provider.jwks_hits(), 2);

    // A kid that is still unknown after the refetch.
    let stray = TestKey::ec("stray", Algorithm::ES256);
    let err = validator
        .validate(&stray.sign(&provider.claims()))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, OidcError::UnknownKey(k) if k == "stray"),
        "{err:?}"
    );
    assert_eq!(provider.jwks_hits(), 3);
    // Discovery is done once.
    assert_eq!(provider.discovery_hits(), 1);
}

#[tokio::test]
async fn concurrent_first_use_fetches_once() {
    let key = TestKey::ec("k1", Algorithm::ES256);
    let provider = Provider::start(&[&key]).await;
    let validator = provider.validator();
    let token = key.sign(&provider.claims());
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let validator = validator.clone();
            let token = token.clone();
            tokio::spawn(async move { validator.validate(&token).await })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap().unwrap(), "alice");
    }
    assert_eq!(provider.jwks_hits(), 1);
    assert_eq!(provider.discovery_hits(), 1);
}

#[tokio::test]
async fn issuer_unreachable() {
    // A port nobody listens on.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);

    let key = TestKey::ec("k1", Algorithm::ES256);
    let config = OidcConfig {
        issuer_url: format!("http://{addr}"),
        audience: None,
        username_claim: "preferred_username".to_string(),
        jwks_url: None,
    };
    let validator = OidcValidator::new(config, reqwest::Client::new());
    let claims = json!({ "iss": format!("http://{addr}"), "preferred_username": "alice", "exp": now() + 300 });
    let err = validator.validate(&key.sign(&claims)).await.unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
    let message = err.to_string();
    assert!(
        message.starts_with(&format!(
            "identity provider unavailable: cannot fetch discovery document from http://{addr}/.well-known/openid-configuration"
        )),
        "{message}"
    );
}

#[tokio::test]
async fn issuer_failing() {
    let key = TestKey::ec("k1", Algorithm::ES256);
    let provider = Provider::start(&[&key]).await;
    provider.state.broken.store(true, Ordering::SeqCst);
    let validator = provider.validator();
    let token = key.sign(&provider.claims());

    let err = validator.validate(&token).await.unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
    assert!(
        err.to_string()
            .ends_with("failed with HTTP status 500 Internal Server Error"),
        "{err}"
    );

    // Recovers once the issuer does.
    provider.state.broken.store(false, Ordering::SeqCst);
    assert_eq!(validator.validate(&token).await.unwrap(), "alice");
}

#[tokio::test]
async fn key_set_without_usable_keys() {
    let provider = Provider::start(&[]).await;
    *provider.state.jwks.lock().unwrap() = json!({ "keys": [
        { "kty": "oct", "k": "c2VjcmV0", "kid": "hmac" },
        { "kty": "RSA", "use": "enc", "alg": "RSA-OAEP", "n": "AQAB", "e": "AQAB", "kid": "enc" },
        { "kty": "EC", "crv": "P-521", "x": "AA", "y": "AA", "kid": "p521" },
        { "kty": "EC", "crv": "P-256", "kid": "no-coordinates" },
        "not an object",
    ]});
    let key = TestKey::ec("k1", Algorithm::ES256);
    let err = provider
        .validator()
        .validate(&key.sign(&provider.claims()))
        .await
        .unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
    assert!(
        err.to_string().ends_with("contains no usable signing key"),
        "{err}"
    );

    // Unusable entries are skipped, usable ones kept.
    let mut jwks = provider.state.jwks.lock().unwrap().clone();
    jwks["keys"].as_array_mut().unwrap().push(key.jwk.clone());
    *provider.state.jwks.lock().unwrap() = jwks;
    assert_eq!(
        provider
            .validator()
            .validate(&key.sign(&provider.claims()))
            .await
            .unwrap(),
        "alice"
    );
}
