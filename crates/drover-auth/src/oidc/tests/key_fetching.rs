//! Fetching the key set: refetch on an unknown key id (rate limited), one fetch for concurrent
//! first uses, and an issuer that is unreachable, failing or without usable keys.

use std::sync::atomic::Ordering;

use serde_json::json;

use super::provider::{now, Provider, TestKey};
use crate::oidc::*;

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
