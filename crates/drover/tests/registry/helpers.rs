//! Paths, requests and assertions shared by the registry tests.

use crate::common;
use crate::common::{expect_error, Client, TestServer};
use reqwest::{Method, Response, StatusCode};
use serde_json::Value;

pub(crate) const API: &str = "/api/registry/v1alpha1";

pub(crate) fn apps() -> String {
    format!("{API}/apps")
}

pub(crate) fn app_path(app: &str) -> String {
    format!("{API}/apps/{app}")
}

pub(crate) fn devices(app: &str) -> String {
    format!("{API}/apps/{app}/devices")
}

pub(crate) fn device_path(app: &str, device: &str) -> String {
    format!("{API}/apps/{app}/devices/{device}")
}

/// GET with query parameters.
pub(crate) async fn get_query(c: &Client, path: &str, query: &[(&str, &str)]) -> Response {
    c.request(Method::GET, path)
        .query(query)
        .send()
        .await
        .unwrap()
}

/// A list request: the items and the `drover-revision` header (which must be numeric).
pub(crate) async fn list(c: &Client, path: &str, query: &[(&str, &str)]) -> (Vec<Value>, u64) {
    let r = get_query(c, path, query).await;
    let status = r.status();
    if status != StatusCode::OK {
        panic!("GET {path} {query:?}: {status} {}", r.text().await.unwrap());
    }
    let rev = r
        .headers()
        .get("drover-revision")
        .unwrap_or_else(|| panic!("no drover-revision header on GET {path}"))
        .to_str()
        .unwrap()
        .parse::<u64>()
        .unwrap_or_else(|e| panic!("drover-revision on GET {path} is not numeric: {e}"));
    (r.json().await.unwrap(), rev)
}

/// Names of the listed items, in order.
pub(crate) async fn names(c: &Client, path: &str, query: &[(&str, &str)]) -> Vec<String> {
    list(c, path, query)
        .await
        .0
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap().to_string())
        .collect()
}

/// PUT that must answer 204.
pub(crate) async fn put_ok(c: &Client, path: &str, body: &Value) {
    let r = c.put(path, body).await;
    let status = r.status();
    if status != StatusCode::NO_CONTENT {
        panic!("PUT {path} {body}: {status} {}", r.text().await.unwrap());
    }
}

/// DELETE (no body) that must answer 204.
pub(crate) async fn delete_ok(c: &Client, path: &str) {
    let r = c.delete(path).await;
    let status = r.status();
    if status != StatusCode::NO_CONTENT {
        panic!("DELETE {path}: {status} {}", r.text().await.unwrap());
    }
}

/// Asserts the resource at `path` is gone (404 NotFound).
pub(crate) async fn assert_gone(c: &Client, path: &str) {
    let msg = expect_error(c.get(path).await, StatusCode::NOT_FOUND, "NotFound").await;
    assert!(!msg.is_empty());
}

pub(crate) fn rv(v: &Value) -> String {
    v["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string()
}

pub(crate) fn generation(v: &Value) -> u64 {
    v["metadata"]["generation"].as_u64().unwrap()
}

pub(crate) fn finalizers(v: &Value) -> Vec<String> {
    match &v["metadata"]["finalizers"] {
        Value::Null => Vec::new(),
        f => f
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_string())
            .collect(),
    }
}

/// The Location header of a response.
pub(crate) fn location_of(r: &Response) -> String {
    r.headers()
        .get("location")
        .expect("Location header on 201")
        .to_str()
        .unwrap()
        .to_string()
}

/// GETs a Location (absolute, or absolute path) as the administrator; must answer 200.
pub(crate) async fn follow(t: &TestServer, location: &str) -> Value {
    let url = if location.starts_with('/') {
        t.url(location)
    } else {
        location.to_string()
    };
    let r = t
        .http
        .get(&url)
        .basic_auth("admin", Some(common::ADMIN_TOKEN))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "GET Location {location}");
    r.json().await.unwrap()
}

pub(crate) fn assert_server_timestamp(v: &Value, what: &str) {
    let ts = v
        .as_str()
        .unwrap_or_else(|| panic!("{what} is not a string: {v}"));
    assert!(
        ts.contains('T') && ts.len() >= 20,
        "{what} is not RFC 3339: {ts}"
    );
    assert!(ts > "2024-", "{what} is not a server time: {ts}");
}
