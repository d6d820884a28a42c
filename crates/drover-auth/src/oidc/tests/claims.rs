//! Claims: expiry, not-before, issuer, audience and the username claim.

use serde_json::json;

use super::provider::{now, Provider, TestKey};
use crate::oidc::*;

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
