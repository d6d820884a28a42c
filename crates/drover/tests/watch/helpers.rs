//! Registry writes and revisions shared by the watch tests.

use crate::common::Client;
use reqwest::StatusCode;
use serde_json::{json, Value};

pub(crate) const APPS: &str = "/api/registry/v1alpha1/apps";

/// The registry revision a list was read at.
pub(crate) async fn list_revision(c: &Client) -> u64 {
    let r = c.get(APPS).await;
    assert_eq!(r.status(), StatusCode::OK);
    let rev = r
        .headers()
        .get("drover-revision")
        .expect("lists carry drover-revision");
    rev.to_str().unwrap().parse().unwrap()
}

pub(crate) fn rv(res: &Value) -> u64 {
    res["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

pub(crate) fn uid(res: &Value) -> String {
    res["metadata"]["uid"].as_str().unwrap().to_string()
}

pub(crate) async fn put_ok(c: &Client, path: &str, body: Value) {
    let r = c.put(path, &body).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT, "PUT {path} {body}");
}

pub(crate) async fn delete_ok(c: &Client, path: &str) {
    let r = c.delete(path).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT, "DELETE {path}");
}

/// Creates app `app` with device `d1`, then updates the device's labels and `spec.core`:
/// four changes. Returns the app and the updated device.
pub(crate) async fn four_changes(c: &Client, app: &str) -> (Value, Value, Value) {
    let a = c.create_app(app).await;
    let d = c
        .create_device(app, json!({"metadata": {"name": "d1"}}))
        .await;
    put_ok(
        c,
        &format!("{APPS}/{app}/devices/d1"),
        json!({"metadata": {"name": "d1", "labels": {"room": "kitchen"}}, "spec": {"core": {"disabled": true}}}),
    )
    .await;
    let updated = c.get_json(&format!("{APPS}/{app}/devices/d1")).await;
    (a, d, updated)
}
