//! End-to-end tests of single sign-on: Bearer JWTs from a local OpenID Connect provider (axum on
//! 127.0.0.1:0 serving discovery and the JWKS of an ES256 key made with rcgen).
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::routing::get;
use axum::{Json, Router};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use common::{expect_error, TestServer};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use reqwest::{Method, Response, StatusCode};
use serde_json::{json, Value};

const APPS: &str = "/api/registry/v1alpha1/apps";
const WHOAMI: &str = "/api/admin/v1alpha1/user/whoami";
const AUDIENCE: &str = "drover";

struct TestKey {
    kid: String,
    encoding: EncodingKey,
    jwk: Value,
}

impl TestKey {
    fn es256(kid: &str) -> Self {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        // Uncompressed point: 0x04 || x || y.
        let raw = pair.public_key_raw();
        assert_eq!(raw.len(), 65);
        let jwk = json!({
            "kty": "EC",
            "crv": "P-256",
            "kid": kid,
            "use": "sig",
            "alg": "ES256",
            "x": URL_SAFE_NO_PAD.encode(&raw[1..33]),
            "y": URL_SAFE_NO_PAD.encode(&raw[33..]),
        });
        let encoding = EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).unwrap();
        Self {
            kid: kid.to_string(),
            encoding,
            jwk,
        }
    }

    fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding).unwrap()
    }
}

/// A tiny identity provider.
struct Provider {
    issuer: String,
    task: tokio::task::JoinHandle<()>,
}

impl Provider {
    async fn start(keys: &[&TestKey]) -> Provider {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let issuer = format!("http://{}", listener.local_addr().unwrap());
        let discovery = json!({
            "issuer": issuer,
            "jwks_uri": format!("{issuer}/keys"),
            "authorization_endpoint": format!("{issuer}/auth"),
            "token_endpoint": format!("{issuer}/token"),
        });
        let jwks = json!({ "keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>() });
        let app = Router::new()
            .route(
                "/.well-known/openid-configuration",
                get(move || async move { Json(discovery) }),
            )
            .route("/keys", get(move || async move { Json(jwks) }));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Provider { issuer, task }
    }

    /// Stops serving: the port refuses connections afterwards.
    async fn stop(self) {
        self.task.abort();
        let _ = self.task.await;
    }

    fn claims(&self, user: &str) -> Value {
        json!({
            "iss": self.issuer,
            "aud": AUDIENCE,
            "sub": format!("sub-{user}"),
            "preferred_username": user,
            "iat": now(),
            "exp": now() + 300,
        })
    }
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A fresh Drover that accepts tokens of `issuer` for audience `drover`.
async fn drover_for(issuer: &str) -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::config(dir.path());
    config.oidc_issuer_url = Some(issuer.to_string());
    config.oidc_audience = Some(AUDIENCE.into());
    let mut t = TestServer::start_with(config).await;
    t.dir = Some(dir);
    t
}

async fn bearer(
    t: &TestServer,
    method: Method,
    path: &str,
    jwt: &str,
    body: Option<Value>,
) -> Response {
    let mut r = t.http.request(method, t.url(path)).bearer_auth(jwt);
    if let Some(b) = body {
        r = r.json(&b);
    }
    r.send().await.unwrap()
}

async fn bearer_get(t: &TestServer, path: &str, jwt: &str) -> Response {
    bearer(t, Method::GET, path, jwt, None).await
}

async fn json_ok(r: Response, what: &str) -> Value {
    let status = r.status();
    let text = r.text().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{what}: {text}");
    serde_json::from_str(&text).unwrap()
}

async fn expect_unauthorized(r: Response, what: &str) -> String {
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{what}");
    assert!(
        r.headers().get(WWW_AUTHENTICATE).is_some(),
        "{what}: no WWW-Authenticate"
    );
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "AuthenticationError", "{what}: {body}");
    body["message"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn sso_user_signs_in() {
    let key = TestKey::es256("k1");
    let idp = Provider::start(&[&key]).await;
    let t = drover_for(&idp.issuer).await;
    let carol = key.sign(&idp.claims("carol"));

    let me = json_ok(bearer_get(&t, WHOAMI, &carol).await, "whoami").await;
    assert_eq!(me, json!({"name": "carol", "admin": false}));

    let r = bearer(
        &t,
        Method::POST,
        APPS,
        &carol,
        Some(json!({"metadata": {"name": "carol-app"}})),
    )
    .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let app = json_ok(
        bearer_get(&t, &format!("{APPS}/carol-app"), &carol).await,
        "get app",
    )
    .await;
    assert_eq!(app["metadata"]["name"], "carol-app");
    let apps = json_ok(bearer_get(&t, APPS, &carol).await, "list apps").await;
    let names: Vec<&str> = apps
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["carol-app"]);

    // Another SSO user is another tenant.
    let dave = key.sign(&idp.claims("dave"));
    let r = bearer_get(&t, &format!("{APPS}/carol-app"), &dave).await;
    expect_error(r, StatusCode::NOT_FOUND, "NotFound").await;
    assert_eq!(
        json_ok(bearer_get(&t, APPS, &dave).await, "dave's apps").await,
        json!([])
    );

    // An SSO user can create an access token for drg, and use it with Basic.
    let r = bearer(
        &t,
        Method::POST,
        "/api/tokens/v1alpha1?description=drg",
        &carol,
        None,
    )
    .await;
    let created = json_ok(r, "create token").await;
    let token = created["token"].as_str().unwrap();
    let basic = t.client("carol", token);
    assert_eq!(basic.get_json(WHOAMI).await["name"], "carol");
    basic.get_json(&format!("{APPS}/carol-app")).await;

    // A JWT for a user known by token is that same user.
    let erin_basic = t.user("erin").await;
    erin_basic.create_app("erin-app").await;
    let erin = key.sign(&idp.claims("erin"));
    json_ok(
        bearer_get(&t, &format!("{APPS}/erin-app"), &erin).await,
        "erin by JWT",
    )
    .await;
}

#[tokio::test]
async fn invalid_tokens_are_rejected() {
    let key = TestKey::es256("k1");
    let idp = Provider::start(&[&key]).await;
    let t = drover_for(&idp.issuer).await;
    // A valid token first (keys are fetched and cached).
    let good = key.sign(&idp.claims("carol"));
    json_ok(bearer_get(&t, WHOAMI, &good).await, "valid token").await;

    let mut expired = idp.claims("carol");
    expired["exp"] = json!(now() - 3600);
    expired["iat"] = json!(now() - 7200);
    let msg =
        expect_unauthorized(bearer_get(&t, WHOAMI, &key.sign(&expired)).await, "expired").await;
    assert!(msg.contains("expired"), "{msg}");

    let mut wrong_aud = idp.claims("carol");
    wrong_aud["aud"] = json!("someone-else");
    expect_unauthorized(
        bearer_get(&t, WHOAMI, &key.sign(&wrong_aud)).await,
        "wrong audience",
    )
    .await;
    let mut no_aud = idp.claims("carol");
    no_aud.as_object_mut().unwrap().remove("aud");
    expect_unauthorized(
        bearer_get(&t, WHOAMI, &key.sign(&no_aud)).await,
        "no audience",
    )
    .await;

    let mut wrong_iss = idp.claims("carol");
    wrong_iss["iss"] = json!("http://evil.example.com");
    expect_unauthorized(
        bearer_get(&t, WHOAMI, &key.sign(&wrong_iss)).await,
        "wrong issuer",
    )
    .await;

    let mut no_user = idp.claims("carol");
    no_user
        .as_object_mut()
        .unwrap()
        .remove("preferred_username");
    expect_unauthorized(
        bearer_get(&t, WHOAMI, &key.sign(&no_user)).await,
        "no username claim",
    )
    .await;

    let mut no_exp = idp.claims("carol");
    no_exp.as_object_mut().unwrap().remove("exp");
    expect_unauthorized(bearer_get(&t, WHOAMI, &key.sign(&no_exp)).await, "no exp").await;

    // Signed by another key, with the published key's id, or with an unknown one.
    let other = TestKey::es256("k1");
    expect_unauthorized(
        bearer_get(&t, WHOAMI, &other.sign(&idp.claims("carol"))).await,
        "other key",
    )
    .await;
    let other = TestKey::es256("k2");
    expect_unauthorized(
        bearer_get(&t, WHOAMI, &other.sign(&idp.claims("carol"))).await,
        "unknown key",
    )
    .await;

    // A symmetric token with the issuer's claims.
    let hs = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &idp.claims("carol"),
        &EncodingKey::from_secret(b"guessable"),
    )
    .unwrap();
    expect_unauthorized(bearer_get(&t, WHOAMI, &hs).await, "HS256").await;
    // Unsigned.
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(idp.claims("carol").to_string());
    expect_unauthorized(
        bearer_get(&t, WHOAMI, &format!("{header}.{payload}.")).await,
        "alg none",
    )
    .await;
    // Tampered payload.
    let mut parts: Vec<&str> = good.split('.').collect();
    let forged = URL_SAFE_NO_PAD.encode(idp.claims("admin").to_string());
    parts[1] = &forged;
    expect_unauthorized(bearer_get(&t, WHOAMI, &parts.join(".")).await, "tampered").await;
    expect_unauthorized(bearer_get(&t, WHOAMI, "not-a-jwt").await, "garbage").await;

    // Nothing of that created anything.
    let r = bearer(
        &t,
        Method::POST,
        APPS,
        &key.sign(&expired),
        Some(json!({"metadata": {"name": "x"}})),
    )
    .await;
    expect_unauthorized(r, "expired token creating an app").await;
    assert_eq!(t.admin().get_json(APPS).await, json!([]));
    // And the good token still works.
    json_ok(bearer_get(&t, WHOAMI, &good).await, "valid token again").await;
}

#[tokio::test]
async fn bearer_and_basic_together_is_a_bad_request() {
    let key = TestKey::es256("k1");
    let idp = Provider::start(&[&key]).await;
    let t = drover_for(&idp.issuer).await;
    let jwt = key.sign(&idp.claims("carol"));
    let basic = STANDARD.encode(format!("admin:{}", common::ADMIN_TOKEN));
    for (first, second) in [
        (format!("Bearer {jwt}"), format!("Basic {basic}")),
        (format!("Basic {basic}"), format!("Bearer {jwt}")),
        (format!("Bearer {jwt}"), format!("Bearer {jwt}")),
    ] {
        let r = t
            .http
            .get(t.url(WHOAMI))
            .header(AUTHORIZATION, first)
            .header(AUTHORIZATION, second)
            .send()
            .await
            .unwrap();
        expect_error(r, StatusCode::BAD_REQUEST, "BadRequest").await;
    }
}

#[tokio::test]
async fn discovery_advertises_the_configured_issuer() {
    let key = TestKey::es256("k1");
    let idp = Provider::start(&[&key]).await;
    let t = drover_for(&idp.issuer).await;
    let doc = t
        .anonymous()
        .get_json("/.well-known/drogue-endpoints")
        .await;
    assert_eq!(doc["issuer_url"], idp.issuer.as_str(), "{doc}");
    assert_eq!(doc["registry"]["url"], t.base.as_str(), "{doc}");
    let jwt = key.sign(&idp.claims("carol"));
    let info = json_ok(
        bearer_get(&t, "/api/console/v1alpha1/info", &jwt).await,
        "info",
    )
    .await;
    assert_eq!(info["issuer_url"], idp.issuer.as_str(), "{info}");
    assert_eq!(
        info["endpoints"]["issuer_url"],
        idp.issuer.as_str(),
        "{info}"
    );
    // drg reads the issuer's own discovery document.
    let r = t
        .http
        .get(format!("{}/.well-known/openid-configuration", idp.issuer))
        .send()
        .await
        .unwrap();
    let oidc = json_ok(r, "provider discovery").await;
    assert!(oidc["authorization_endpoint"].is_string() && oidc["token_endpoint"].is_string());
}

#[tokio::test]
async fn unreachable_provider_is_service_unavailable() {
    let key = TestKey::es256("k1");
    let idp = Provider::start(&[&key]).await;
    let jwt = key.sign(&idp.claims("carol"));
    let issuer = idp.issuer.clone();
    idp.stop().await;
    // A fresh server: no keys cached.
    let t = drover_for(&issuer).await;
    let r = tokio::time::timeout(Duration::from_secs(30), bearer_get(&t, WHOAMI, &jwt))
        .await
        .unwrap();
    let status = r.status();
    let body: Value = r.json().await.unwrap();
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"], "ServiceUnavailable", "{body}");
    // Access tokens do not depend on the provider.
    assert_eq!(t.admin().get_json(WHOAMI).await["name"], "admin");
    // Invalid tokens are still 401 when they can be told apart without keys.
    expect_unauthorized(
        bearer_get(&t, WHOAMI, "not-a-jwt").await,
        "garbage while the provider is down",
    )
    .await;
}
