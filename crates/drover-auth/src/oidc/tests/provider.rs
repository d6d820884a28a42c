//! The in-process identity provider and the signing keys the tests use.

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

use crate::oidc::*;

pub(super) const RSA_KEY_PEM: &str = include_str!("../../../testdata/rsa_test_key.pem");

pub(super) const RSA_JWK: &str = include_str!("../../../testdata/rsa_test_key.jwk.json");

pub(super) struct TestKey {
    pub(super) kid: String,
    pub(super) alg: Algorithm,
    pub(super) encoding: EncodingKey,
    pub(super) jwk: Value,
}

impl TestKey {
    pub(super) fn ec(kid: &str, alg: Algorithm) -> Self {
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
    pub(super) fn rsa(kid: &str, alg: Algorithm) -> Self {
        let mut jwk: Value = serde_json::from_str(RSA_JWK).unwrap();
        jwk["kid"] = json!(kid);
        Self {
            kid: kid.to_string(),
            alg,
            encoding: EncodingKey::from_rsa_pem(RSA_KEY_PEM.as_bytes()).unwrap(),
            jwk,
        }
    }

    pub(super) fn sign(&self, claims: &Value) -> String {
        self.sign_with_kid(Some(&self.kid), claims)
    }

    pub(super) fn sign_with_kid(&self, kid: Option<&str>, claims: &Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = kid.map(str::to_string);
        jsonwebtoken::encode(&header, claims, &self.encoding).unwrap()
    }
}

pub(super) struct ProviderState {
    pub(super) issuer: String,
    pub(super) jwks: StdMutex<Value>,
    pub(super) discovery_hits: AtomicUsize,
    pub(super) jwks_hits: AtomicUsize,
    pub(super) broken: AtomicBool,
}

pub(super) struct Provider {
    pub(super) addr: SocketAddr,
    pub(super) state: Arc<ProviderState>,
}

impl Provider {
    pub(super) async fn start(keys: &[&TestKey]) -> Self {
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

    pub(super) fn publish(&self, keys: &[&TestKey]) {
        let keys: Vec<Value> = keys.iter().map(|k| k.jwk.clone()).collect();
        *self.state.jwks.lock().unwrap() = json!({ "keys": keys });
    }

    pub(super) fn issuer(&self) -> String {
        self.state.issuer.clone()
    }

    pub(super) fn config(&self) -> OidcConfig {
        OidcConfig {
            issuer_url: self.issuer(),
            audience: None,
            username_claim: "preferred_username".to_string(),
            jwks_url: None,
        }
    }

    pub(super) fn validator(&self) -> OidcValidator {
        OidcValidator::new(self.config(), reqwest::Client::new())
    }

    pub(super) fn jwks_hits(&self) -> usize {
        self.state.jwks_hits.load(Ordering::SeqCst)
    }

    pub(super) fn discovery_hits(&self) -> usize {
        self.state.discovery_hits.load(Ordering::SeqCst)
    }

    pub(super) fn claims(&self) -> Value {
        json!({
            "iss": self.issuer(),
            "sub": "f3c2a1",
            "preferred_username": "alice",
            "exp": now() + 300,
            "iat": now(),
        })
    }
}

pub(super) async fn discovery(State(state): State<Arc<ProviderState>>) -> Response {
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

pub(super) async fn jwks(State(state): State<Arc<ProviderState>>) -> Response {
    state.jwks_hits.fetch_add(1, Ordering::SeqCst);
    if state.broken.load(Ordering::SeqCst) {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    let body = state.jwks.lock().unwrap().clone();
    Json(body).into_response()
}

pub(super) fn now() -> i64 {
    chrono::Utc::now().timestamp()
}
