//! Tokens that validate, by key type and algorithm, and tokens refused for their signature or
//! algorithm.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{EncodingKey, Header};
use serde_json::json;

use super::provider::{Provider, TestKey};
use crate::oidc::*;

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
