//! Paths, status assertions and requests shared by the access tests.

use crate::common::Client;
use reqwest::header::WWW_AUTHENTICATE;
use reqwest::{Response, StatusCode};
use serde_json::{json, Value};

pub(crate) const USERS: &str = "/api/admin/v1alpha1/users";

pub(crate) const WHOAMI: &str = "/api/admin/v1alpha1/user/whoami";

pub(crate) const TOKENS: &str = "/api/tokens/v1alpha1";

pub(crate) const APPS: &str = "/api/registry/v1alpha1/apps";

pub(crate) fn app_path(app: &str) -> String {
    format!("{APPS}/{app}")
}

pub(crate) fn devices_path(app: &str) -> String {
    format!("{APPS}/{app}/devices")
}

pub(crate) fn device_path(app: &str, dev: &str) -> String {
    format!("{APPS}/{app}/devices/{dev}")
}

pub(crate) fn admin_path(app: &str, what: &str) -> String {
    format!("/api/admin/v1alpha1/apps/{app}/{what}")
}

pub(crate) fn token_of(c: &Client) -> String {
    c.user.as_ref().unwrap().1.clone()
}

/// Status and JSON body (Null when the body is empty or not JSON).
async fn status_body(r: Response) -> (StatusCode, Value) {
    let status = r.status();
    let text = r.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

pub(crate) async fn expect_status(r: Response, status: StatusCode, what: &str) {
    let (s, body) = status_body(r).await;
    assert_eq!(s, status, "{what}: body {body}");
}

/// Asserts a 401 AuthenticationError with a WWW-Authenticate challenge; returns the message.
pub(crate) async fn expect_unauthorized(r: Response, what: &str) -> String {
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{what}");
    let challenge = r
        .headers()
        .get(WWW_AUTHENTICATE)
        .unwrap_or_else(|| panic!("{what}: 401 without WWW-Authenticate"))
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        challenge.starts_with("Basic"),
        "{what}: challenge {challenge}"
    );
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "AuthenticationError", "{what}: {body}");
    body["message"].as_str().unwrap().to_string()
}

pub(crate) async fn whoami(c: &Client) -> Value {
    c.get_json(WHOAMI).await
}

pub(crate) async fn put_members(c: &Client, app: &str, members: Value) -> Response {
    c.put(&admin_path(app, "members"), &json!({ "members": members }))
        .await
}

pub(crate) fn device(name: &str) -> Value {
    json!({"metadata": {"name": name}})
}
