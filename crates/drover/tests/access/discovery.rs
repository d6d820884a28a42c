//! Discovery documents, and the host they name.

use crate::common::TestServer;
use crate::helpers::expect_unauthorized;
use reqwest::StatusCode;
use serde_json::Value;

#[tokio::test]
async fn discovery_documents() {
    let t = TestServer::start().await;
    let anon = t.anonymous();

    let doc = anon.get_json("/.well-known/drogue-endpoints").await;
    assert_eq!(doc["registry"]["url"], t.base.as_str(), "{doc}");
    assert!(t.base.starts_with("http://127.0.0.1:"));
    let issuer = doc["issuer_url"].as_str().unwrap().to_string();
    assert!(!issuer.ends_with('/'), "issuer_url {issuer}");
    assert!(issuer.starts_with("http"), "issuer_url {issuer}");

    let r = t
        .http
        .get(format!("{issuer}/.well-known/openid-configuration"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let oidc: Value = r.json().await.unwrap();
    assert!(
        oidc["authorization_endpoint"]
            .as_str()
            .is_some_and(|s| s.starts_with("http")),
        "{oidc}"
    );
    assert!(
        oidc["token_endpoint"]
            .as_str()
            .is_some_and(|s| s.starts_with("http")),
        "{oidc}"
    );

    let v = anon.get_json("/.well-known/drogue-version").await;
    assert!(v["version"].as_str().is_some_and(|s| !s.is_empty()), "{v}");

    let r = anon.get("/api/console/v1alpha1/info").await;
    expect_unauthorized(r, "info without credentials").await;
    let alice = t.user("alice").await;
    let info = alice.get_json("/api/console/v1alpha1/info").await;
    assert_eq!(info["registry"]["url"], t.base.as_str(), "{info}");
    assert_eq!(
        info["endpoints"]["registry"]["url"],
        t.base.as_str(),
        "{info}"
    );
    assert_eq!(info["issuer_url"], issuer.as_str(), "{info}");
    assert_eq!(info["endpoints"]["issuer_url"], issuer.as_str(), "{info}");
}

#[tokio::test]
async fn discovery_follows_the_host_the_client_used() {
    let t = TestServer::start().await;
    let port = t.base.rsplit(':').next().unwrap().to_string();
    let base = format!("http://localhost:{port}");
    let r = t
        .http
        .get(format!("{base}/.well-known/drogue-endpoints"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let doc: Value = r.json().await.unwrap();
    assert_eq!(doc["registry"]["url"], base.as_str(), "{doc}");
}
