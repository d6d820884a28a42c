//! End-to-end tests of the registry API semantics (contract `drogue-compat.md` §2) over real
//! HTTP against the in-process server.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashSet;

use base64::Engine as _;
use common::{expect_error, Client, TestServer};
use reqwest::{Method, Response, StatusCode};
use serde_json::{json, Value};

const API: &str = "/api/registry/v1alpha1";

fn apps() -> String {
    format!("{API}/apps")
}

fn app_path(app: &str) -> String {
    format!("{API}/apps/{app}")
}

fn devices(app: &str) -> String {
    format!("{API}/apps/{app}/devices")
}

fn device_path(app: &str, device: &str) -> String {
    format!("{API}/apps/{app}/devices/{device}")
}

/// Sends `body` as-is with a JSON content type.
async fn send_raw(c: &Client, method: Method, path: &str, body: &str) -> Response {
    c.request(method, path)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap()
}

/// DELETE with a JSON body (preconditions).
async fn delete_with(c: &Client, path: &str, body: &Value) -> Response {
    c.request(Method::DELETE, path)
        .json(body)
        .send()
        .await
        .unwrap()
}

/// GET with query parameters.
async fn get_query(c: &Client, path: &str, query: &[(&str, &str)]) -> Response {
    c.request(Method::GET, path)
        .query(query)
        .send()
        .await
        .unwrap()
}

/// A list request: the items and the `drover-revision` header (which must be numeric).
async fn list(c: &Client, path: &str, query: &[(&str, &str)]) -> (Vec<Value>, u64) {
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
async fn names(c: &Client, path: &str, query: &[(&str, &str)]) -> Vec<String> {
    list(c, path, query)
        .await
        .0
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap().to_string())
        .collect()
}

/// PUT that must answer 204.
async fn put_ok(c: &Client, path: &str, body: &Value) {
    let r = c.put(path, body).await;
    let status = r.status();
    if status != StatusCode::NO_CONTENT {
        panic!("PUT {path} {body}: {status} {}", r.text().await.unwrap());
    }
}

/// DELETE (no body) that must answer 204.
async fn delete_ok(c: &Client, path: &str) {
    let r = c.delete(path).await;
    let status = r.status();
    if status != StatusCode::NO_CONTENT {
        panic!("DELETE {path}: {status} {}", r.text().await.unwrap());
    }
}

async fn status_of(c: &Client, path: &str) -> StatusCode {
    c.get(path).await.status()
}

/// Asserts the resource at `path` is gone (404 NotFound).
async fn assert_gone(c: &Client, path: &str) {
    let msg = expect_error(c.get(path).await, StatusCode::NOT_FOUND, "NotFound").await;
    assert!(!msg.is_empty());
}

fn rv(v: &Value) -> String {
    v["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string()
}

fn generation(v: &Value) -> u64 {
    v["metadata"]["generation"].as_u64().unwrap()
}

fn finalizers(v: &Value) -> Vec<String> {
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

fn password_spec(pass: Value) -> Value {
    json!({"authentication": {"credentials": [{"pass": pass}]}})
}

/// A self-signed CA certificate (CN=Registry Test CA, O=Drover, 2024-01-01 .. 2034-01-01) as the
/// base64 of its PEM text.
fn ca_certificate_b64() -> String {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(rcgen::DnType::CommonName, "Registry Test CA");
    dn.push(rcgen::DnType::OrganizationName, "Drover");
    params.distinguished_name = dn;
    params.not_before = rcgen::date_time_ymd(2024, 1, 1);
    params.not_after = rcgen::date_time_ymd(2034, 1, 1);
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let cert = params.self_signed(&key).unwrap();
    base64::engine::general_purpose::STANDARD.encode(cert.pem())
}

/// The Location header of a response.
fn location_of(r: &Response) -> String {
    r.headers()
        .get("location")
        .expect("Location header on 201")
        .to_str()
        .unwrap()
        .to_string()
}

/// GETs a Location (absolute, or absolute path) as the administrator; must answer 200.
async fn follow(t: &TestServer, location: &str) -> Value {
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

fn assert_server_timestamp(v: &Value, what: &str) {
    let ts = v
        .as_str()
        .unwrap_or_else(|| panic!("{what} is not a string: {v}"));
    assert!(
        ts.contains('T') && ts.len() >= 20,
        "{what} is not RFC 3339: {ts}"
    );
    assert!(ts > "2024-", "{what} is not a server time: {ts}");
}

// ---------------------------------------------------------------------------------------------
// server-assigned fields
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn create_assigns_server_fields_and_ignores_client_ones() {
    let t = TestServer::start().await;
    let c = t.admin();

    // What drg sends, plus forged server-assigned fields.
    let r = c
        .post(
            &apps(),
            &json!({"metadata": {
                "name": "drg-app",
                "creationTimestamp": "2000-01-01T00:00:00Z",
                "generation": 0,
                "uid": "client-uid",
                "resourceVersion": "999",
            }}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let location = location_of(&r);
    let app: Value = r.json().await.unwrap();
    let m = &app["metadata"];
    assert_eq!(m["name"], "drg-app");
    let uid = m["uid"].as_str().unwrap();
    assert_ne!(uid, "client-uid");
    assert_eq!(uid.len(), 36, "uid is a UUID: {uid}");
    assert_eq!(m["generation"], 1);
    let app_rv = rv(&app);
    assert!(!app_rv.is_empty());
    assert_ne!(app_rv, "999");
    assert_ne!(m["creationTimestamp"], "2000-01-01T00:00:00Z");
    assert_server_timestamp(&m["creationTimestamp"], "creationTimestamp");
    assert!(m.get("deletionTimestamp").is_none(), "{app}");
    assert!(
        m.get("application").is_none(),
        "apps have no metadata.application: {app}"
    );

    // The created body is what is stored, and the Location points to it.
    assert_eq!(c.get_json(&app_path("drg-app")).await, app);
    assert_eq!(follow(&t, &location).await, app);

    // Any generation sent is ignored.
    let other = c
        .post(
            &apps(),
            &json!({"metadata": {"name": "gen-app", "generation": 7}}),
        )
        .await;
    assert_eq!(other.status(), StatusCode::CREATED);
    let other: Value = other.json().await.unwrap();
    assert_eq!(other["metadata"]["generation"], 1);
    assert_ne!(other["metadata"]["uid"], uid);

    // Devices: the same, plus metadata.application.
    let r = c
        .post(
            &devices("drg-app"),
            &json!({"metadata": {
                "name": "dev-1",
                "application": "drg-app",
                "creationTimestamp": "2000-01-01T00:00:00Z",
                "generation": 5,
                "uid": "client-uid",
                "resourceVersion": "999",
                "deletionTimestamp": "2000-01-01T00:00:00Z",
            }}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let location = location_of(&r);
    let dev: Value = r.json().await.unwrap();
    let m = &dev["metadata"];
    assert_eq!(m["name"], "dev-1");
    assert_eq!(m["application"], "drg-app");
    let dev_uid = m["uid"].as_str().unwrap();
    assert_ne!(dev_uid, "client-uid");
    assert_ne!(dev_uid, uid);
    assert_eq!(dev_uid.len(), 36);
    assert_eq!(m["generation"], 1);
    assert!(!rv(&dev).is_empty());
    assert_ne!(rv(&dev), "999");
    assert_server_timestamp(&m["creationTimestamp"], "device creationTimestamp");
    assert!(
        m.get("deletionTimestamp").is_none(),
        "a new device is not deleting: {dev}"
    );
    assert_eq!(c.get_json(&device_path("drg-app", "dev-1")).await, dev);
    assert_eq!(follow(&t, &location).await, dev);

    // A device created without metadata.application gets it too.
    let dev2 = c
        .create_device("drg-app", json!({"metadata": {"name": "dev-2"}}))
        .await;
    assert_eq!(dev2["metadata"]["application"], "drg-app");
}

#[tokio::test]
async fn location_header_is_the_canonical_resource_url() {
    let t = TestServer::start().await;
    let c = t.admin();
    let r = c
        .post(&apps(), &json!({"metadata": {"name": "my-app"}}))
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let location = location_of(&r);
    // Unreserved characters such as '-' are not percent-encoded (RFC 3986 section 2.3).
    assert!(
        location.ends_with("/api/registry/v1alpha1/apps/my-app"),
        "Location: {location}"
    );

    let r = c
        .post(
            &devices("my-app"),
            &json!({"metadata": {"name": "dev-1.a_b~c"}}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let location = location_of(&r);
    assert!(
        location.ends_with("/api/registry/v1alpha1/apps/my-app/devices/dev-1.a_b~c"),
        "Location: {location}"
    );

    // Characters that must be encoded are, and the Location still leads to the device.
    let r = c
        .post(
            &devices("my-app"),
            &json!({"metadata": {"name": "room 1/sensor"}}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let location = location_of(&r);
    assert!(
        location.ends_with("/api/registry/v1alpha1/apps/my-app/devices/room%201%2Fsensor"),
        "Location: {location}"
    );
    assert_eq!(
        follow(&t, &location).await["metadata"]["name"],
        "room 1/sensor"
    );
}

// ---------------------------------------------------------------------------------------------
// create conflicts, names
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn create_conflicts_and_invalid_app_names() {
    let t = TestServer::start().await;
    let c = t.admin();
    let first = c.create_app("taken").await;

    let msg = expect_error(
        c.post(&apps(), &json!({"metadata": {"name": "taken"}}))
            .await,
        StatusCode::CONFLICT,
        "Conflict",
    )
    .await;
    assert!(msg.contains("taken"), "{msg}");
    // The existing app is untouched.
    assert_eq!(c.get_json(&app_path("taken")).await, first);

    let long_ok = "a".repeat(63);
    c.create_app(&long_ok).await;

    let too_long = "a".repeat(64);
    for bad in [
        "Upper",
        "under_score",
        too_long.as_str(),
        "-lead",
        "trail-",
        "dot.ted",
        "",
    ] {
        let r = c.post(&apps(), &json!({"metadata": {"name": bad}})).await;
        let msg = expect_error(r, StatusCode::BAD_REQUEST, "BadRequest").await;
        assert!(msg.contains("invalid application name"), "{bad:?}: {msg}");
    }
    let msg = expect_error(
        c.post(&apps(), &json!({"metadata": {}})).await,
        StatusCode::BAD_REQUEST,
        "BadRequest",
    )
    .await;
    assert!(msg.contains("metadata.name"), "{msg}");

    assert_eq!(
        names(&c, &apps(), &[]).await,
        vec![long_ok, "taken".to_string()]
    );
}

#[tokio::test]
async fn create_device_conflicts_and_names() {
    let t = TestServer::start().await;
    let c = t.admin();
    c.create_app("app").await;
    let first = c
        .create_device(
            "app",
            json!({"metadata": {"name": "dev"}, "spec": {"x": 1}}),
        )
        .await;

    let r = c
        .post(
            &devices("app"),
            &json!({"metadata": {"name": "dev"}, "spec": {"x": 2}}),
        )
        .await;
    let msg = expect_error(r, StatusCode::CONFLICT, "Conflict").await;
    assert!(msg.contains("dev"), "{msg}");
    assert_eq!(c.get_json(&device_path("app", "dev")).await, first);

    // Empty name.
    let r = c
        .post(&devices("app"), &json!({"metadata": {"name": ""}}))
        .await;
    let msg = expect_error(r, StatusCode::BAD_REQUEST, "BadRequest").await;
    assert!(msg.contains("empty"), "{msg}");
    // Missing name.
    let r = c.post(&devices("app"), &json!({"metadata": {}})).await;
    let msg = expect_error(r, StatusCode::BAD_REQUEST, "BadRequest").await;
    assert!(msg.contains("metadata.name"), "{msg}");

    // 256 bytes (128 two-byte characters): too long.
    let too_long = "ä".repeat(128);
    assert_eq!(too_long.len(), 256);
    let r = c
        .post(&devices("app"), &json!({"metadata": {"name": too_long}}))
        .await;
    let msg = expect_error(r, StatusCode::BAD_REQUEST, "BadRequest").await;
    assert!(msg.contains("255"), "{msg}");

    // Exactly 255 bytes, multibyte: fine, and found again by that name.
    let max = format!("{}x", "ä".repeat(127));
    assert_eq!(max.len(), 255);
    let dev = c
        .create_device("app", json!({"metadata": {"name": max}}))
        .await;
    assert_eq!(dev["metadata"]["name"], max.as_str());
    let got = c.get_json(&device_path("app", &max)).await;
    assert_eq!(got["metadata"]["name"], max.as_str());
    assert_eq!(got["metadata"]["uid"], dev["metadata"]["uid"]);

    // Device names may be uppercase and contain characters app names may not.
    c.create_device("app", json!({"metadata": {"name": "Sensor_1.floor-2"}}))
        .await;

    let mut want = vec!["Sensor_1.floor-2".to_string(), "dev".to_string(), max];
    want.sort();
    assert_eq!(names(&c, &devices("app"), &[]).await, want);
}

// ---------------------------------------------------------------------------------------------
// not found
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn missing_resources_are_not_found() {
    let t = TestServer::start().await;
    let c = t.admin();

    let msg = expect_error(
        c.get(&app_path("nope")).await,
        StatusCode::NOT_FOUND,
        "NotFound",
    )
    .await;
    assert!(msg.contains("nope"), "{msg}");
    expect_error(
        c.get(&devices("nope")).await,
        StatusCode::NOT_FOUND,
        "NotFound",
    )
    .await;
    expect_error(
        c.get(&device_path("nope", "dev")).await,
        StatusCode::NOT_FOUND,
        "NotFound",
    )
    .await;
    expect_error(
        c.put(&app_path("nope"), &json!({"metadata": {"name": "nope"}}))
            .await,
        StatusCode::NOT_FOUND,
        "NotFound",
    )
    .await;
    expect_error(
        c.delete(&app_path("nope")).await,
        StatusCode::NOT_FOUND,
        "NotFound",
    )
    .await;

    // Device create in a missing app: ReferenceNotFound.
    let r = c
        .post(&devices("nope"), &json!({"metadata": {"name": "dev"}}))
        .await;
    let msg = expect_error(r, StatusCode::NOT_FOUND, "ReferenceNotFound").await;
    assert!(msg.contains("nope"), "{msg}");

    c.create_app("app").await;
    let msg = expect_error(
        c.get(&device_path("app", "ghost")).await,
        StatusCode::NOT_FOUND,
        "NotFound",
    )
    .await;
    assert!(msg.contains("ghost"), "{msg}");
    expect_error(
        c.put(
            &device_path("app", "ghost"),
            &json!({"metadata": {"name": "ghost"}}),
        )
        .await,
        StatusCode::NOT_FOUND,
        "NotFound",
    )
    .await;
    expect_error(
        c.delete(&device_path("app", "ghost")).await,
        StatusCode::NOT_FOUND,
        "NotFound",
    )
    .await;
    // A PUT does not create.
    assert_eq!(names(&c, &devices("app"), &[]).await, Vec::<String>::new());
}

// ---------------------------------------------------------------------------------------------
// update
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn app_update_optimistic_locking() {
    let t = TestServer::start().await;
    let c = t.admin();
    c.create_app("app").await;
    let v1 = c.get_json(&app_path("app")).await;

    // PUT with the current version.
    let mut body = v1.clone();
    body["metadata"]["labels"] = json!({"step": "one"});
    put_ok(&c, &app_path("app"), &body).await;
    let v2 = c.get_json(&app_path("app")).await;
    assert_eq!(v2["metadata"]["labels"], json!({"step": "one"}));
    assert_ne!(rv(&v2), rv(&v1));

    // Stale resourceVersion: refused, nothing changes.
    let mut stale = v1.clone();
    stale["metadata"]["labels"] = json!({"step": "stale"});
    let msg = expect_error(
        c.put(&app_path("app"), &stale).await,
        StatusCode::CONFLICT,
        "OptimisticLockFailed",
    )
    .await;
    assert!(msg.contains("resourceVersion"), "{msg}");
    assert_eq!(c.get_json(&app_path("app")).await, v2);

    // Wrong uid (resourceVersion current): refused.
    let mut wrong_uid = v2.clone();
    wrong_uid["metadata"]["uid"] = json!("00000000-0000-4000-8000-000000000000");
    wrong_uid["metadata"]["labels"] = json!({"step": "wrong-uid"});
    let msg = expect_error(
        c.put(&app_path("app"), &wrong_uid).await,
        StatusCode::CONFLICT,
        "OptimisticLockFailed",
    )
    .await;
    assert!(msg.contains("uid"), "{msg}");
    assert_eq!(c.get_json(&app_path("app")).await, v2);

    // Wrong uid alone (no resourceVersion): refused too.
    let msg = expect_error(
        c.put(
            &app_path("app"),
            &json!({"metadata": {"name": "app", "uid": "00000000-0000-4000-8000-000000000000"}}),
        )
        .await,
        StatusCode::CONFLICT,
        "OptimisticLockFailed",
    )
    .await;
    assert!(msg.contains("uid"), "{msg}");

    // Matching uid without resourceVersion: accepted.
    put_ok(&c, &app_path("app"), &json!({"metadata": {"name": "app", "uid": v1["metadata"]["uid"], "labels": {"step": "uid-only"}}})).await;
    assert_eq!(
        c.get_json(&app_path("app")).await["metadata"]["labels"],
        json!({"step": "uid-only"})
    );

    // Neither: unconditional write.
    put_ok(
        &c,
        &app_path("app"),
        &json!({"metadata": {"name": "app", "labels": {"step": "two"}}}),
    )
    .await;
    let v3 = c.get_json(&app_path("app")).await;
    assert_eq!(v3["metadata"]["labels"], json!({"step": "two"}));
    assert_eq!(v3["metadata"]["uid"], v1["metadata"]["uid"]);

    // Body name differs from the path.
    let r = c
        .put(
            &app_path("app"),
            &json!({"metadata": {"name": "other", "labels": {"step": "x"}}}),
        )
        .await;
    let msg = expect_error(r, StatusCode::BAD_REQUEST, "BadRequest").await;
    assert!(msg.contains("other") && msg.contains("app"), "{msg}");
    assert_eq!(c.get_json(&app_path("app")).await, v3);
    assert_gone(&c, &app_path("other")).await;
}

#[tokio::test]
async fn device_update_optimistic_locking() {
    let t = TestServer::start().await;
    let c = t.admin();
    c.create_app("app").await;
    c.create_app("app2").await;
    c.create_device("app", json!({"metadata": {"name": "dev"}}))
        .await;
    let p = device_path("app", "dev");
    let v1 = c.get_json(&p).await;

    let mut body = v1.clone();
    body["spec"] = json!({"custom": {"a": 1}});
    put_ok(&c, &p, &body).await;
    let v2 = c.get_json(&p).await;
    assert_eq!(v2["spec"], json!({"custom": {"a": 1}}));
    assert_ne!(rv(&v2), rv(&v1));

    let mut stale = v1.clone();
    stale["spec"] = json!({"custom": {"a": 2}});
    let msg = expect_error(
        c.put(&p, &stale).await,
        StatusCode::CONFLICT,
        "OptimisticLockFailed",
    )
    .await;
    assert!(msg.contains("resourceVersion"), "{msg}");
    assert_eq!(c.get_json(&p).await, v2);

    let mut wrong_uid = v2.clone();
    wrong_uid["metadata"]["uid"] = json!("00000000-0000-4000-8000-000000000000");
    wrong_uid["spec"] = json!({"custom": {"a": 3}});
    let msg = expect_error(
        c.put(&p, &wrong_uid).await,
        StatusCode::CONFLICT,
        "OptimisticLockFailed",
    )
    .await;
    assert!(msg.contains("uid"), "{msg}");
    assert_eq!(c.get_json(&p).await, v2);

    put_ok(
        &c,
        &p,
        &json!({"metadata": {"name": "dev"}, "spec": {"custom": {"a": 4}}}),
    )
    .await;
    let v3 = c.get_json(&p).await;
    assert_eq!(v3["spec"], json!({"custom": {"a": 4}}));
    assert_eq!(v3["metadata"]["uid"], v1["metadata"]["uid"]);
    assert_eq!(v3["metadata"]["application"], "app");

    // Name mismatch.
    let msg = expect_error(
        c.put(
            &p,
            &json!({"metadata": {"name": "other"}, "spec": {"custom": {"a": 5}}}),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "BadRequest",
    )
    .await;
    assert!(msg.contains("other"), "{msg}");
    // metadata.application naming another app.
    let msg = expect_error(
        c.put(&p, &json!({"metadata": {"name": "dev", "application": "app2"}, "spec": {"custom": {"a": 6}}})).await,
        StatusCode::BAD_REQUEST,
        "BadRequest",
    )
    .await;
    assert!(msg.contains("app2"), "{msg}");
    assert_eq!(c.get_json(&p).await, v3);
    assert_gone(&c, &device_path("app", "other")).await;
    assert_eq!(names(&c, &devices("app2"), &[]).await, Vec::<String>::new());
}

#[tokio::test]
async fn generation_and_resource_version_rules() {
    let t = TestServer::start().await;
    let c = t.admin();
    let created = c.create_app("app").await;
    let p = app_path("app");
    let mut versions = HashSet::new();
    versions.insert(rv(&created));

    // Labels only: new resourceVersion, same generation.
    let mut body = c.get_json(&p).await;
    body["metadata"]["labels"] = json!({"a": "1"});
    put_ok(&c, &p, &body).await;
    let v = c.get_json(&p).await;
    assert_eq!(generation(&v), 1);
    assert!(versions.insert(rv(&v)), "resourceVersion reused: {v}");

    // Annotations only.
    let mut body = v.clone();
    body["metadata"]["annotations"] = json!({"note": "anything goes here"});
    put_ok(&c, &p, &body).await;
    let v = c.get_json(&p).await;
    assert_eq!(
        v["metadata"]["annotations"],
        json!({"note": "anything goes here"})
    );
    assert_eq!(generation(&v), 1);
    assert!(versions.insert(rv(&v)), "resourceVersion reused: {v}");

    // Spec: generation 2.
    let mut body = v.clone();
    body["spec"] = json!({"core": {"disabled": true}});
    put_ok(&c, &p, &body).await;
    let v = c.get_json(&p).await;
    assert_eq!(generation(&v), 2);
    assert!(versions.insert(rv(&v)), "resourceVersion reused: {v}");

    // Status only: new version, same generation.
    let mut body = v.clone();
    body["status"] = json!({"custom": {"phase": "ready"}});
    put_ok(&c, &p, &body).await;
    let v = c.get_json(&p).await;
    assert_eq!(v["status"]["custom"], json!({"phase": "ready"}));
    assert_eq!(generation(&v), 2);
    assert!(versions.insert(rv(&v)), "resourceVersion reused: {v}");

    // Spec again: generation 3.
    let mut body = v.clone();
    body["spec"] = json!({"core": {"disabled": false}});
    put_ok(&c, &p, &body).await;
    let v = c.get_json(&p).await;
    assert_eq!(generation(&v), 3);
    assert!(versions.insert(rv(&v)), "resourceVersion reused: {v}");

    // No-op PUT of the GET body: nothing changes (even though the registry moved on meanwhile).
    c.create_app("unrelated").await;
    put_ok(&c, &p, &v).await;
    assert_eq!(c.get_json(&p).await, v);
    // No-op without preconditions, with forged server fields (ignored): nothing changes.
    let mut forged = v.clone();
    forged["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("resourceVersion");
    forged["metadata"]["generation"] = json!(42);
    forged["metadata"]["creationTimestamp"] = json!("2000-01-01T00:00:00Z");
    put_ok(&c, &p, &forged).await;
    assert_eq!(c.get_json(&p).await, v);
    // A client-sent deletionTimestamp does not delete anything.
    let mut forged = v.clone();
    forged["metadata"]["deletionTimestamp"] = json!("2000-01-01T00:00:00Z");
    put_ok(&c, &p, &forged).await;
    assert_eq!(c.get_json(&p).await, v);

    // Devices follow the same rules.
    c.create_device("app", json!({"metadata": {"name": "dev"}}))
        .await;
    let dp = device_path("app", "dev");
    let d1 = c.get_json(&dp).await;
    let mut body = d1.clone();
    body["metadata"]["labels"] = json!({"x": "y"});
    put_ok(&c, &dp, &body).await;
    let d2 = c.get_json(&dp).await;
    assert_eq!(generation(&d2), 1);
    assert_ne!(rv(&d2), rv(&d1));
    let mut body = d2.clone();
    body["spec"] = json!({"gatewaySelector": {"matchNames": ["gw"]}});
    put_ok(&c, &dp, &body).await;
    let d3 = c.get_json(&dp).await;
    assert_eq!(generation(&d3), 2);
    assert_ne!(rv(&d3), rv(&d2));
    assert_ne!(rv(&d3), rv(&d1));
    c.create_device("unrelated", json!({"metadata": {"name": "other"}}))
        .await;
    put_ok(&c, &dp, &d3).await;
    assert_eq!(c.get_json(&dp).await, d3);
}

#[tokio::test]
async fn concurrent_writes_with_the_same_version_have_one_winner() {
    let t = TestServer::start().await;
    let c = t.admin();
    c.create_app("app").await;
    c.create_device("app", json!({"metadata": {"name": "dev"}}))
        .await;
    let p = device_path("app", "dev");
    let base = c.get_json(&p).await;

    // Eight writers read the same version; exactly one may write.
    let puts = (0..8).map(|i| {
        let mut body = base.clone();
        body["metadata"]["labels"] = json!({"writer": i.to_string()});
        let c = c.clone();
        let p = p.clone();
        async move { c.put(&p, &body).await.status() }
    });
    let statuses = futures::future::join_all(puts).await;
    let won: Vec<usize> = statuses
        .iter()
        .enumerate()
        .filter(|(_, s)| **s == StatusCode::NO_CONTENT)
        .map(|(i, _)| i)
        .collect();
    assert_eq!(won.len(), 1, "{statuses:?}");
    assert!(
        statuses
            .iter()
            .all(|s| *s == StatusCode::NO_CONTENT || *s == StatusCode::CONFLICT),
        "{statuses:?}"
    );
    let after = c.get_json(&p).await;
    assert_eq!(
        after["metadata"]["labels"],
        json!({"writer": won[0].to_string()})
    );

    // Concurrent creates of one name: one 201, the rest 409.
    let creates = (0..6).map(|i| {
        let c = c.clone();
        async move {
            c.post(
                &devices("app"),
                &json!({"metadata": {"name": "race"}, "spec": {"n": i}}),
            )
            .await
            .status()
        }
    });
    let statuses = futures::future::join_all(creates).await;
    assert_eq!(
        statuses
            .iter()
            .filter(|s| **s == StatusCode::CREATED)
            .count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses
            .iter()
            .filter(|s| **s == StatusCode::CONFLICT)
            .count(),
        5,
        "{statuses:?}"
    );

    // Concurrent creates claiming one alias: one wins.
    let creates = (0..6).map(|i| {
        let c = c.clone();
        async move { c.post(&devices("app"), &json!({"metadata": {"name": format!("al-{i}")}, "spec": {"alias": ["shared-alias"]}})).await.status() }
    });
    let statuses = futures::future::join_all(creates).await;
    assert_eq!(
        statuses
            .iter()
            .filter(|s| **s == StatusCode::CREATED)
            .count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses
            .iter()
            .filter(|s| **s == StatusCode::CONFLICT)
            .count(),
        5,
        "{statuses:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// label selectors, paging
// ---------------------------------------------------------------------------------------------

/// The four items s1..s4 under `path` carry: s1 env=prod,tier=web; s2 env=dev; s3 env=test,tier=db;
/// s4 no labels.
async fn check_selectors(c: &Client, path: &str) {
    let cases: &[(&str, &[&str])] = &[
        ("env=prod", &["s1"]),
        ("env!=prod", &["s2", "s3", "s4"]),
        ("env in (prod,dev)", &["s1", "s2"]),
        ("env in (prod, dev)", &["s1", "s2"]),
        ("env notin (prod,dev)", &["s3", "s4"]),
        ("env notin (prod, dev)", &["s3", "s4"]),
        ("tier", &["s1", "s3"]),
        ("!tier", &["s2", "s4"]),
        ("env=prod,tier=web", &["s1"]),
        ("env,tier=db", &["s3"]),
        ("env=prod,tier=db", &[]),
        ("env,!tier", &["s2"]),
        ("env in (prod,dev,test),tier notin (web)", &["s2", "s3"]),
        ("", &["s1", "s2", "s3", "s4"]),
    ];
    for (sel, want) in cases {
        assert_eq!(
            names(c, path, &[("labels", *sel)]).await,
            *want,
            "selector {sel:?} on {path}"
        );
    }
    assert_eq!(names(c, path, &[]).await, ["s1", "s2", "s3", "s4"]);

    for bad in ["a in b", "env in (prod", "env=prod,"] {
        let r = get_query(c, path, &[("labels", bad)]).await;
        let msg = expect_error(r, StatusCode::BAD_REQUEST, "BadRequest").await;
        assert!(
            msg.contains(bad),
            "message names the selector {bad:?}: {msg}"
        );
    }
}

fn selector_labels() -> [(&'static str, Value); 4] {
    [
        ("s3", json!({"env": "test", "tier": "db"})),
        ("s1", json!({"env": "prod", "tier": "web"})),
        ("s4", json!({})),
        ("s2", json!({"env": "dev"})),
    ]
}

#[tokio::test]
async fn label_selectors_on_apps() {
    let t = TestServer::start().await;
    let c = t.admin();
    for (name, labels) in selector_labels() {
        let r = c
            .post(
                &apps(),
                &json!({"metadata": {"name": name, "labels": labels}}),
            )
            .await;
        assert_eq!(r.status(), StatusCode::CREATED);
    }
    check_selectors(&c, &apps()).await;
}

#[tokio::test]
async fn label_selectors_on_devices() {
    let t = TestServer::start().await;
    let c = t.admin();
    c.create_app("app").await;
    // A device in another app with matching labels must never show up.
    c.create_app("other").await;
    c.create_device(
        "other",
        json!({"metadata": {"name": "s0", "labels": {"env": "prod", "tier": "web"}}}),
    )
    .await;
    for (name, labels) in selector_labels() {
        c.create_device("app", json!({"metadata": {"name": name, "labels": labels}}))
            .await;
    }
    check_selectors(&c, &devices("app")).await;
}

#[tokio::test]
async fn paging_ordering_and_revision_header() {
    let t = TestServer::start().await;
    let c = t.admin();
    let (_, rev0) = list(&c, &apps(), &[]).await;
    for name in ["p-c", "p-a", "p-e", "p-b", "p-d"] {
        let even = if matches!(name, "p-b" | "p-d") {
            json!({"even": "yes"})
        } else {
            json!({})
        };
        let r = c
            .post(
                &apps(),
                &json!({"metadata": {"name": name, "labels": even}}),
            )
            .await;
        assert_eq!(r.status(), StatusCode::CREATED);
    }
    let (items, rev1) = list(&c, &apps(), &[]).await;
    assert!(rev1 > rev0, "revision grows with writes: {rev0} -> {rev1}");
    let all: Vec<&str> = items
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(all, ["p-a", "p-b", "p-c", "p-d", "p-e"]);

    assert_eq!(names(&c, &apps(), &[("limit", "2")]).await, ["p-a", "p-b"]);
    assert_eq!(
        names(&c, &apps(), &[("limit", "2"), ("offset", "2")]).await,
        ["p-c", "p-d"]
    );
    assert_eq!(names(&c, &apps(), &[("offset", "4")]).await, ["p-e"]);
    assert_eq!(
        names(&c, &apps(), &[("limit", "10"), ("offset", "3")]).await,
        ["p-d", "p-e"]
    );
    assert_eq!(
        names(&c, &apps(), &[("offset", "10")]).await,
        Vec::<String>::new()
    );
    // Paging applies after filtering.
    assert_eq!(
        names(
            &c,
            &apps(),
            &[("labels", "even"), ("limit", "1"), ("offset", "1")]
        )
        .await,
        ["p-d"]
    );
    assert_eq!(
        names(&c, &apps(), &[("labels", "!even"), ("limit", "2")]).await,
        ["p-a", "p-c"]
    );

    let msg = expect_error(
        get_query(&c, &apps(), &[("limit", "many")]).await,
        StatusCode::BAD_REQUEST,
        "BadRequest",
    )
    .await;
    assert!(msg.contains("limit"), "{msg}");

    // Devices.
    for name in ["d3", "d1", "d2"] {
        c.create_device("p-a", json!({"metadata": {"name": name}}))
            .await;
    }
    let (_, drev) = list(&c, &devices("p-a"), &[]).await;
    assert!(
        drev > rev1,
        "device writes advance the revision: {rev1} -> {drev}"
    );
    assert_eq!(names(&c, &devices("p-a"), &[]).await, ["d1", "d2", "d3"]);
    assert_eq!(names(&c, &devices("p-a"), &[("limit", "1")]).await, ["d1"]);
    assert_eq!(
        names(&c, &devices("p-a"), &[("limit", "1"), ("offset", "1")]).await,
        ["d2"]
    );
    assert_eq!(names(&c, &devices("p-a"), &[("offset", "2")]).await, ["d3"]);

    // A read does not move the revision.
    let (_, again) = list(&c, &devices("p-a"), &[]).await;
    assert_eq!(again, drev);
}

// ---------------------------------------------------------------------------------------------
// soft delete, preconditions
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn device_soft_delete_with_finalizers() {
    let t = TestServer::start().await;
    let c = t.admin();
    c.create_app("app").await;
    c.create_device(
        "app",
        json!({"metadata": {"name": "held", "finalizers": ["example.com/cleanup"]}}),
    )
    .await;
    c.create_device("app", json!({"metadata": {"name": "free"}}))
        .await;
    let p = device_path("app", "held");

    // Without finalizers: gone at once.
    delete_ok(&c, &device_path("app", "free")).await;
    assert_gone(&c, &device_path("app", "free")).await;

    // With finalizers: marked.
    delete_ok(&c, &p).await;
    let d = c.get_json(&p).await;
    assert_server_timestamp(&d["metadata"]["deletionTimestamp"], "deletionTimestamp");
    assert_eq!(finalizers(&d), ["example.com/cleanup"]);
    assert_eq!(names(&c, &devices("app"), &[]).await, ["held"]);

    // No new finalizer on a deleting resource.
    let mut add = d.clone();
    add["metadata"]["finalizers"] = json!(["example.com/cleanup", "example.com/other"]);
    let msg = expect_error(c.put(&p, &add).await, StatusCode::BAD_REQUEST, "BadRequest").await;
    assert!(msg.contains("example.com/other"), "{msg}");
    assert_eq!(c.get_json(&p).await, d);

    // Removing the last finalizer removes the device.
    let mut done = d.clone();
    done["metadata"]["finalizers"] = json!([]);
    put_ok(&c, &p, &done).await;
    assert_gone(&c, &p).await;
    assert_eq!(names(&c, &devices("app"), &[]).await, Vec::<String>::new());

    // The name is free again.
    let again = c
        .create_device("app", json!({"metadata": {"name": "held"}}))
        .await;
    assert_ne!(again["metadata"]["uid"], d["metadata"]["uid"]);
    assert!(again["metadata"].get("deletionTimestamp").is_none());
}

#[tokio::test]
async fn delete_preconditions() {
    let t = TestServer::start().await;
    let c = t.admin();
    c.create_app("app").await;
    let old = c
        .create_device("app", json!({"metadata": {"name": "dev"}}))
        .await;
    let p = device_path("app", "dev");
    let mut body = old.clone();
    body["metadata"]["labels"] = json!({"v": "2"});
    put_ok(&c, &p, &body).await;
    let cur = c.get_json(&p).await;

    let r = delete_with(
        &c,
        &p,
        &json!({"preconditions": {"resourceVersion": rv(&old)}}),
    )
    .await;
    let msg = expect_error(r, StatusCode::CONFLICT, "OptimisticLockFailed").await;
    assert!(msg.contains("resourceVersion"), "{msg}");
    assert_eq!(c.get_json(&p).await, cur);

    let r = delete_with(
        &c,
        &p,
        &json!({"preconditions": {"uid": "00000000-0000-4000-8000-000000000000"}}),
    )
    .await;
    expect_error(r, StatusCode::CONFLICT, "OptimisticLockFailed").await;
    assert_eq!(c.get_json(&p).await, cur);

    let r = delete_with(
        &c,
        &p,
        &json!({"preconditions": {"uid": cur["metadata"]["uid"]}}),
    )
    .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_gone(&c, &p).await;

    // A `null` body is no preconditions (the document allows it).
    c.create_device("app", json!({"metadata": {"name": "dev"}}))
        .await;
    let r = delete_with(&c, &p, &Value::Null).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_gone(&c, &p).await;

    // Applications too.
    let app_old = c.get_json(&app_path("app")).await;
    let mut body = app_old.clone();
    body["metadata"]["labels"] = json!({"v": "2"});
    put_ok(&c, &app_path("app"), &body).await;
    let app_cur = c.get_json(&app_path("app")).await;
    let r = delete_with(
        &c,
        &app_path("app"),
        &json!({"preconditions": {"resourceVersion": rv(&app_old)}}),
    )
    .await;
    expect_error(r, StatusCode::CONFLICT, "OptimisticLockFailed").await;
    let r = delete_with(
        &c,
        &app_path("app"),
        &json!({"preconditions": {"uid": "00000000-0000-4000-8000-000000000000"}}),
    )
    .await;
    expect_error(r, StatusCode::CONFLICT, "OptimisticLockFailed").await;
    assert_eq!(c.get_json(&app_path("app")).await, app_cur);
    let r = delete_with(
        &c,
        &app_path("app"),
        &json!({"preconditions": {"uid": app_cur["metadata"]["uid"], "resourceVersion": rv(&app_cur)}}),
    )
    .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_gone(&c, &app_path("app")).await;
}

// ---------------------------------------------------------------------------------------------
// application cascade
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn app_delete_cascades_to_devices() {
    let t = TestServer::start().await;
    let c = t.admin();
    let old_app = c.create_app("casc").await;
    for name in ["free1", "free2"] {
        c.create_device(
            "casc",
            json!({"metadata": {"name": name}, "spec": {"alias": [format!("{name}-alias")]}}),
        )
        .await;
    }
    for name in ["held1", "held2"] {
        c.create_device(
            "casc",
            json!({"metadata": {"name": name, "finalizers": ["example.com/f"]}}),
        )
        .await;
    }

    delete_ok(&c, &app_path("casc")).await;

    // Finalizer-free devices are gone at once; the others are marked.
    assert_gone(&c, &device_path("casc", "free1")).await;
    assert_gone(&c, &device_path("casc", "free2")).await;
    for name in ["held1", "held2"] {
        let d = c.get_json(&device_path("casc", name)).await;
        assert_server_timestamp(
            &d["metadata"]["deletionTimestamp"],
            "device deletionTimestamp",
        );
        assert_eq!(finalizers(&d), ["example.com/f"]);
    }
    assert_eq!(names(&c, &devices("casc"), &[]).await, ["held1", "held2"]);

    // The app is held by its devices.
    let app = c.get_json(&app_path("casc")).await;
    assert_server_timestamp(
        &app["metadata"]["deletionTimestamp"],
        "app deletionTimestamp",
    );
    assert!(
        finalizers(&app).contains(&"has-devices".to_string()),
        "{app}"
    );
    assert_eq!(app["metadata"]["uid"], old_app["metadata"]["uid"]);

    // No new device in a deleting app, and the name is still taken.
    let r = c
        .post(&devices("casc"), &json!({"metadata": {"name": "late"}}))
        .await;
    let msg = expect_error(r, StatusCode::NOT_FOUND, "ReferenceNotFound").await;
    assert!(msg.contains("casc"), "{msg}");
    expect_error(
        c.post(&apps(), &json!({"metadata": {"name": "casc"}}))
            .await,
        StatusCode::CONFLICT,
        "Conflict",
    )
    .await;

    // A client cannot take `has-devices` away while devices remain.
    let mut strip = app.clone();
    strip["metadata"]["finalizers"] = json!([]);
    let status = c.put(&app_path("casc"), &strip).await.status();
    assert!(
        status.is_client_error() || status == StatusCode::NO_CONTENT,
        "{status}"
    );
    let app = c.get_json(&app_path("casc")).await;
    assert!(
        finalizers(&app).contains(&"has-devices".to_string()),
        "{app}"
    );

    // A device marked by the cascade takes no new finalizer either.
    let mut d = c.get_json(&device_path("casc", "held1")).await;
    d["metadata"]["finalizers"] = json!(["example.com/f", "example.com/g"]);
    let msg = expect_error(
        c.put(&device_path("casc", "held1"), &d).await,
        StatusCode::BAD_REQUEST,
        "BadRequest",
    )
    .await;
    assert!(msg.contains("example.com/g"), "{msg}");

    // First held device released: the app still waits for the second.
    let mut d = c.get_json(&device_path("casc", "held1")).await;
    d["metadata"]["finalizers"] = json!([]);
    put_ok(&c, &device_path("casc", "held1"), &d).await;
    assert_gone(&c, &device_path("casc", "held1")).await;
    let app = c.get_json(&app_path("casc")).await;
    assert!(
        finalizers(&app).contains(&"has-devices".to_string()),
        "{app}"
    );

    // Last one released: device, then app, gone.
    let mut d = c.get_json(&device_path("casc", "held2")).await;
    d["metadata"]["finalizers"] = json!([]);
    put_ok(&c, &device_path("casc", "held2"), &d).await;
    assert_gone(&c, &device_path("casc", "held2")).await;
    assert_gone(&c, &app_path("casc")).await;
    assert_eq!(names(&c, &apps(), &[]).await, Vec::<String>::new());

    // A new app of the same name is a new resource, with none of the old devices.
    let new_app = c.create_app("casc").await;
    assert_ne!(new_app["metadata"]["uid"], old_app["metadata"]["uid"]);
    assert!(new_app["metadata"].get("deletionTimestamp").is_none());
    assert!(finalizers(&new_app).is_empty(), "{new_app}");
    assert_eq!(names(&c, &devices("casc"), &[]).await, Vec::<String>::new());
    assert_gone(&c, &device_path("casc", "held2")).await;
    // Old names and aliases are free.
    c.create_device("casc", json!({"metadata": {"name": "held1"}}))
        .await;
    c.create_device(
        "casc",
        json!({"metadata": {"name": "x"}, "spec": {"alias": ["free1-alias"]}}),
    )
    .await;
    c.create_device("casc", json!({"metadata": {"name": "free1"}}))
        .await;
}

#[tokio::test]
async fn app_with_own_finalizer_waits_for_it() {
    let t = TestServer::start().await;
    let c = t.admin();
    let r = c
        .post(
            &apps(),
            &json!({"metadata": {"name": "own", "finalizers": ["example.com/app"]}}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    c.create_device(
        "own",
        json!({"metadata": {"name": "dev", "finalizers": ["example.com/dev"]}}),
    )
    .await;

    delete_ok(&c, &app_path("own")).await;
    let app = c.get_json(&app_path("own")).await;
    let f = finalizers(&app);
    assert!(
        f.contains(&"example.com/app".to_string()) && f.contains(&"has-devices".to_string()),
        "{app}"
    );

    // The device goes; the app keeps waiting for its own finalizer.
    let mut d = c.get_json(&device_path("own", "dev")).await;
    d["metadata"]["finalizers"] = json!([]);
    put_ok(&c, &device_path("own", "dev"), &d).await;
    assert_gone(&c, &device_path("own", "dev")).await;
    let app = c.get_json(&app_path("own")).await;
    assert_eq!(finalizers(&app), ["example.com/app"]);
    assert_server_timestamp(&app["metadata"]["deletionTimestamp"], "deletionTimestamp");
    expect_error(
        c.post(&devices("own"), &json!({"metadata": {"name": "late"}}))
            .await,
        StatusCode::NOT_FOUND,
        "ReferenceNotFound",
    )
    .await;

    // Adding a finalizer to the deleting app is refused.
    let mut add = app.clone();
    add["metadata"]["finalizers"] = json!(["example.com/app", "example.com/more"]);
    let msg = expect_error(
        c.put(&app_path("own"), &add).await,
        StatusCode::BAD_REQUEST,
        "BadRequest",
    )
    .await;
    assert!(msg.contains("example.com/more"), "{msg}");

    let mut done = app.clone();
    done["metadata"]["finalizers"] = json!([]);
    put_ok(&c, &app_path("own"), &done).await;
    assert_gone(&c, &app_path("own")).await;

    // An app with neither finalizers nor held devices goes at once.
    c.create_app("plain").await;
    c.create_device("plain", json!({"metadata": {"name": "d"}}))
        .await;
    delete_ok(&c, &app_path("plain")).await;
    assert_gone(&c, &app_path("plain")).await;
}

// ---------------------------------------------------------------------------------------------
// validation
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn malformed_documents_are_refused() {
    let t = TestServer::start().await;
    let c = t.admin();
    c.create_app("app").await;

    let bad: &[(Value, &str)] = &[
        (json!({"metadata": {"nmae": "x"}}), "nmae"),
        (json!({"metadata": {"name": "x"}, "sepc": {}}), "sepc"),
        (
            json!({"metadata": {"name": "x", "labels": ["a", "b"]}}),
            "labels",
        ),
        (
            json!({"metadata": {"name": "x", "generation": "1"}}),
            "generation",
        ),
        (
            json!({"metadata": {"name": "x", "labels": {"bad key": "v"}}}),
            "bad key",
        ),
        (
            json!({"metadata": {"name": "x", "labels": {"k": "has space"}}}),
            "label",
        ),
        (
            json!({"metadata": {"name": "x", "finalizers": [""]}}),
            "finalizer",
        ),
        (json!({"metadata": {"name": "x"}, "spec": []}), "spec"),
        (json!([]), "invalid"),
    ];
    for (body, needle) in bad {
        for path in [apps(), devices("app")] {
            let r = c.post(&path, body).await;
            let msg = expect_error(r, StatusCode::BAD_REQUEST, "BadRequest").await;
            assert!(
                msg.contains(needle),
                "POST {path} {body}: message should mention {needle:?}: {msg}"
            );
        }
        // Same on update.
        let mut body = body.clone();
        if body["metadata"].is_object() && body["metadata"].get("name").is_some() {
            body["metadata"]["name"] = json!("app");
        }
        let r = c.put(&app_path("app"), &body).await;
        expect_error(r, StatusCode::BAD_REQUEST, "BadRequest").await;
    }

    for path in [apps(), devices("app"), app_path("app")] {
        let method = if path == app_path("app") {
            Method::PUT
        } else {
            Method::POST
        };
        let r = send_raw(&c, method.clone(), &path, "{\"metadata\": {\"name\": ").await;
        let msg = expect_error(r, StatusCode::BAD_REQUEST, "BadRequest").await;
        assert!(msg.contains("malformed JSON"), "{method} {path}: {msg}");
        let r = c.request(method.clone(), &path).send().await.unwrap();
        let msg = expect_error(r, StatusCode::BAD_REQUEST, "BadRequest").await;
        assert!(msg.contains("empty"), "{method} {path}: {msg}");
    }

    // Nothing was created or changed.
    assert_eq!(names(&c, &apps(), &[]).await, ["app"]);
    assert_eq!(names(&c, &devices("app"), &[]).await, Vec::<String>::new());
    assert_eq!(generation(&c.get_json(&app_path("app")).await), 1);
}

#[tokio::test]
async fn trailing_data_after_the_json_document_is_refused() {
    let t = TestServer::start().await;
    let c = t.admin();
    c.create_app("app").await;
    let before = c.get_json(&app_path("app")).await;
    let cases = [
        (
            Method::POST,
            apps(),
            "{\"metadata\": {\"name\": \"x\"}} trailing",
        ),
        (Method::POST, apps(), "{\"metadata\": {\"name\": \"y\"}}{}"),
        (
            Method::POST,
            devices("app"),
            "{\"metadata\": {\"name\": \"x\"}} trailing",
        ),
        (
            Method::PUT,
            app_path("app"),
            "{\"metadata\": {\"name\": \"app\", \"labels\": {\"k\": \"v\"}}} ]",
        ),
    ];
    for (method, path, body) in cases {
        let r = send_raw(&c, method.clone(), &path, body).await;
        let msg = expect_error(r, StatusCode::BAD_REQUEST, "BadRequest").await;
        assert!(
            msg.contains("malformed JSON"),
            "{method} {path} {body:?}: {msg}"
        );
    }
    assert_eq!(names(&c, &apps(), &[]).await, ["app"]);
    assert_eq!(names(&c, &devices("app"), &[]).await, Vec::<String>::new());
    assert_eq!(c.get_json(&app_path("app")).await, before);
}

#[tokio::test]
async fn typed_spec_sections_are_validated() {
    let t = TestServer::start().await;
    let c = t.admin();
    c.create_app("app").await;
    c.create_device("app", json!({"metadata": {"name": "dev"}}))
        .await;
    let before = c.get_json(&device_path("app", "dev")).await;

    let cases: &[(Value, &str)] = &[
        (json!({"core": {"disabled": "yes"}}), "spec.core.disabled"),
        (
            json!({"authentication": {"credentials": [{"pass": {"md5": "x"}}]}}),
            "spec.authentication",
        ),
        (
            json!({"credentials": {"credentials": [{"pass": {"md5": "x"}}]}}),
            "spec.credentials",
        ),
        (json!({"alias": "notalist"}), "spec.alias"),
        (json!({"alias": [""]}), "spec.alias"),
        (json!({"mqtt": {"dialect": {"type": "nope"}}}), "spec.mqtt"),
        (
            json!({"authentication": {"credentials": [{"pass": {"sha512": "notahash"}}]}}),
            "sha512",
        ),
        (
            json!({"authentication": {"credentials": [{"pass": {"bcrypt": "notahash"}}]}}),
            "bcrypt",
        ),
        (
            json!({"authentication": {"credentials": [{"pass": ""}]}}),
            "spec.authentication",
        ),
        (
            json!({"authentication": {"credentials": [{"user": {"username": "", "password": "p"}}]}}),
            "username",
        ),
        (
            json!({"gatewaySelector": {"matchNames": "gw"}}),
            "spec.gatewaySelector",
        ),
    ];
    for (i, (spec, needle)) in cases.iter().enumerate() {
        let r = c
            .post(
                &devices("app"),
                &json!({"metadata": {"name": format!("bad-{i}")}, "spec": spec}),
            )
            .await;
        let msg = expect_error(r, StatusCode::BAD_REQUEST, "BadRequest").await;
        assert!(
            msg.contains(needle),
            "create with spec {spec}: message should mention {needle:?}: {msg}"
        );
        let r = c
            .put(
                &device_path("app", "dev"),
                &json!({"metadata": {"name": "dev"}, "spec": spec}),
            )
            .await;
        let msg = expect_error(r, StatusCode::BAD_REQUEST, "BadRequest").await;
        assert!(
            msg.contains(needle),
            "update with spec {spec}: message should mention {needle:?}: {msg}"
        );
    }
    assert_eq!(names(&c, &devices("app"), &[]).await, ["dev"]);
    assert_eq!(c.get_json(&device_path("app", "dev")).await, before);

    // Apps: the sections they share with devices.
    for (spec, needle) in [
        (json!({"core": {"disabled": "yes"}}), "spec.core.disabled"),
        (json!({"mqtt": {"dialect": {"type": "nope"}}}), "spec.mqtt"),
        (
            json!({"trustAnchors": {"anchors": "x"}}),
            "spec.trustAnchors",
        ),
    ] {
        let r = c
            .post(
                &apps(),
                &json!({"metadata": {"name": "bad-app"}, "spec": spec}),
            )
            .await;
        let msg = expect_error(r, StatusCode::BAD_REQUEST, "BadRequest").await;
        assert!(msg.contains(needle), "app spec {spec}: {msg}");
        let r = c
            .put(
                &app_path("app"),
                &json!({"metadata": {"name": "app"}, "spec": spec}),
            )
            .await;
        let msg = expect_error(r, StatusCode::BAD_REQUEST, "BadRequest").await;
        assert!(msg.contains(needle), "app update spec {spec}: {msg}");
    }
    assert_gone(&c, &app_path("bad-app")).await;

    // Valid typed sections are accepted as sent.
    let good = json!({
        "core": {"disabled": true},
        "mqtt": {"dialect": {"type": "plainTopic", "devicePrefix": true}},
        "alias": ["a1", "CN=Device 1,O=Example"],
        "gatewaySelector": {"matchNames": ["gw1"]},
        "commands": {"commands": [{"external": {"type": null, "url": "http://lns.example.com:1/cmd", "method": "POST", "headers": {}}}]},
    });
    let d = c
        .create_device("app", json!({"metadata": {"name": "good"}, "spec": good}))
        .await;
    assert_eq!(d["spec"], good);
    let r = c.post(&apps(), &json!({"metadata": {"name": "good-app"}, "spec": {"mqtt": {"dialect": {"type": "drogue/v1"}}, "core": {"disabled": false}}})).await;
    assert_eq!(r.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn unknown_spec_sections_round_trip() {
    let t = TestServer::start().await;
    let c = t.admin();
    let spec = json!({
        "custom": {"nested": [1, 2.5, {"b": null, "s": "text"}], "flag": true},
        "x-vendor": "plain string",
        "empty": {},
    });
    let r = c
        .post(
            &apps(),
            &json!({"metadata": {"name": "app"}, "spec": spec, "status": {"custom": {"a": [1]}}}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let app = c.get_json(&app_path("app")).await;
    assert_eq!(app["spec"], spec);
    assert_eq!(app["status"], json!({"custom": {"a": [1]}}));

    let d = c
        .create_device("app", json!({"metadata": {"name": "dev"}, "spec": spec}))
        .await;
    assert_eq!(d["spec"], spec);
    assert_eq!(c.get_json(&device_path("app", "dev")).await["spec"], spec);

    // Alongside known sections (an unknown key in a known section's neighbour stays too).
    let mut spec2 = spec.clone();
    spec2["gatewaySelector"] = json!({"matchNames": ["gw"]});
    put_ok(
        &c,
        &device_path("app", "dev"),
        &json!({"metadata": {"name": "dev"}, "spec": spec2}),
    )
    .await;
    assert_eq!(c.get_json(&device_path("app", "dev")).await["spec"], spec2);
}

// ---------------------------------------------------------------------------------------------
// aliases and unique usernames
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn aliases_are_unique_within_an_app() {
    let t = TestServer::start().await;
    let c = t.admin();
    c.create_app("al").await;
    c.create_app("al2").await;
    c.create_device(
        "al",
        json!({"metadata": {"name": "d1"}, "spec": {"alias": ["alias-1", "alias-2"]}}),
    )
    .await;

    // Same alias on another device.
    let r = c
        .post(
            &devices("al"),
            &json!({"metadata": {"name": "d2"}, "spec": {"alias": ["alias-1"]}}),
        )
        .await;
    let msg = expect_error(r, StatusCode::CONFLICT, "Conflict").await;
    assert!(msg.contains("alias-1"), "{msg}");
    // Alias equal to another device's name.
    let r = c
        .post(
            &devices("al"),
            &json!({"metadata": {"name": "d3"}, "spec": {"alias": ["d1"]}}),
        )
        .await;
    let msg = expect_error(r, StatusCode::CONFLICT, "Conflict").await;
    assert!(msg.contains("d1"), "{msg}");
    // Name equal to another device's alias.
    let r = c
        .post(&devices("al"), &json!({"metadata": {"name": "alias-2"}}))
        .await;
    let msg = expect_error(r, StatusCode::CONFLICT, "Conflict").await;
    assert!(msg.contains("alias-2"), "{msg}");
    assert_eq!(names(&c, &devices("al"), &[]).await, ["d1"]);

    // Adding a taken alias by update.
    let d4 = c
        .create_device("al", json!({"metadata": {"name": "d4"}}))
        .await;
    let r = c
        .put(
            &device_path("al", "d4"),
            &json!({"metadata": {"name": "d4"}, "spec": {"alias": ["alias-2"]}}),
        )
        .await;
    expect_error(r, StatusCode::CONFLICT, "Conflict").await;
    assert_eq!(c.get_json(&device_path("al", "d4")).await, d4);

    // Another app is another namespace.
    c.create_device(
        "al2",
        json!({"metadata": {"name": "x"}, "spec": {"alias": ["alias-1", "d1"]}}),
    )
    .await;
    c.create_device("al2", json!({"metadata": {"name": "alias-2"}}))
        .await;

    // A device keeps its own aliases across updates.
    let mut d1 = c.get_json(&device_path("al", "d1")).await;
    d1["metadata"]["labels"] = json!({"k": "v"});
    put_ok(&c, &device_path("al", "d1"), &d1).await;
    // Dropping an alias frees it.
    put_ok(
        &c,
        &device_path("al", "d1"),
        &json!({"metadata": {"name": "d1"}, "spec": {"alias": ["alias-1"]}}),
    )
    .await;
    put_ok(
        &c,
        &device_path("al", "d4"),
        &json!({"metadata": {"name": "d4"}, "spec": {"alias": ["alias-2"]}}),
    )
    .await;

    // Deleting the device frees its aliases.
    delete_ok(&c, &device_path("al", "d1")).await;
    c.create_device(
        "al",
        json!({"metadata": {"name": "d2"}, "spec": {"alias": ["alias-1"]}}),
    )
    .await;
    c.create_device("al", json!({"metadata": {"name": "d1"}}))
        .await;
}

#[tokio::test]
async fn unique_usernames_are_unique_within_an_app() {
    let t = TestServer::start().await;
    let c = t.admin();
    c.create_app("app").await;
    c.create_app("app2").await;
    let user = |unique: bool| json!({"authentication": {"credentials": [{"user": {"username": "shared", "password": "p", "unique": unique}}]}});

    c.create_device(
        "app",
        json!({"metadata": {"name": "u1"}, "spec": user(true)}),
    )
    .await;
    let r = c
        .post(
            &devices("app"),
            &json!({"metadata": {"name": "u2"}, "spec": user(true)}),
        )
        .await;
    let msg = expect_error(r, StatusCode::CONFLICT, "Conflict").await;
    assert!(msg.contains("shared"), "{msg}");
    assert_gone(&c, &device_path("app", "u2")).await;

    // The legacy credentials section counts too (when it is the only one).
    let legacy = json!({"credentials": {"credentials": [{"user": {"username": "shared", "password": "p", "unique": true}}]}});
    let r = c
        .post(
            &devices("app"),
            &json!({"metadata": {"name": "u2"}, "spec": legacy}),
        )
        .await;
    expect_error(r, StatusCode::CONFLICT, "Conflict").await;

    // A non-unique username of the same name is not an app-wide lookup name.
    c.create_device(
        "app",
        json!({"metadata": {"name": "u3"}, "spec": user(false)}),
    )
    .await;
    // Other app: fine.
    c.create_device(
        "app2",
        json!({"metadata": {"name": "u1"}, "spec": user(true)}),
    )
    .await;

    // Deleting the holder frees the name.
    delete_ok(&c, &device_path("app", "u1")).await;
    c.create_device(
        "app",
        json!({"metadata": {"name": "u2"}, "spec": user(true)}),
    )
    .await;
}

// ---------------------------------------------------------------------------------------------
// passwords
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn plain_passwords_are_hashed_on_write() {
    let t = TestServer::start().await;
    let c = t.admin();
    c.create_app("app").await;
    let spec = json!({
        "authentication": {"credentials": [
            {"pass": "PlainSecretOne"},
            {"pass": {"plain": "PlainSecretTwo"}},
            {"user": {"username": "u1", "password": "PlainSecretThree", "unique": true}},
            {"user": {"username": "u2", "password": {"plain": "PlainSecretFour"}}},
        ]},
        "credentials": {"credentials": [
            {"pass": "PlainSecretOne"},
            {"pass": {"plain": "PlainSecretFive"}},
        ]},
    });
    let r = c
        .post(
            &devices("app"),
            &json!({"metadata": {"name": "dev"}, "spec": spec}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let created = r.text().await.unwrap();
    assert!(
        !created.contains("PlainSecret"),
        "plain text in the create response: {created}"
    );

    let r = c.get(&device_path("app", "dev")).await;
    assert_eq!(r.status(), StatusCode::OK);
    let text = r.text().await.unwrap();
    assert!(
        !text.contains("PlainSecret"),
        "plain text in the GET body: {text}"
    );
    let (items, _) = list(&c, &devices("app"), &[]).await;
    assert!(!serde_json::to_string(&items)
        .unwrap()
        .contains("PlainSecret"));

    let d: Value = serde_json::from_str(&text).unwrap();
    let sha = |v: &Value| -> String {
        let obj = v
            .as_object()
            .unwrap_or_else(|| panic!("password is not an object: {v}"));
        assert_eq!(obj.len(), 1, "{v}");
        let h = obj["sha512"]
            .as_str()
            .unwrap_or_else(|| panic!("not a sha512 hash: {v}"))
            .to_string();
        assert!(h.starts_with("$6$"), "{h}");
        h
    };
    let auth = d["spec"]["authentication"]["credentials"]
        .as_array()
        .unwrap();
    assert_eq!(auth.len(), 4);
    let h1 = sha(&auth[0]["pass"]);
    let h2 = sha(&auth[1]["pass"]);
    sha(&auth[2]["user"]["password"]);
    assert_eq!(auth[2]["user"]["username"], "u1");
    assert_eq!(auth[2]["user"]["unique"], true);
    sha(&auth[3]["user"]["password"]);
    assert_eq!(auth[3]["user"]["username"], "u2");
    assert_ne!(h1, h2);
    let legacy = d["spec"]["credentials"]["credentials"].as_array().unwrap();
    assert_eq!(legacy.len(), 2);
    sha(&legacy[0]["pass"]);
    let h5 = sha(&legacy[1]["pass"]);
    assert_ne!(h5, h1);

    // On update too.
    let mut body = d.clone();
    body["spec"]["authentication"] =
        password_spec(json!({"plain": "PlainSecretSix"}))["authentication"].clone();
    put_ok(&c, &device_path("app", "dev"), &body).await;
    let text = c
        .get(&device_path("app", "dev"))
        .await
        .text()
        .await
        .unwrap();
    assert!(
        !text.contains("PlainSecret"),
        "plain text after update: {text}"
    );
    let d: Value = serde_json::from_str(&text).unwrap();
    sha(&d["spec"]["authentication"]["credentials"][0]["pass"]);
}

#[tokio::test]
async fn client_hashes_are_kept_and_resending_a_password_is_a_no_op() {
    let t = TestServer::start().await;
    let c = t.admin();
    c.create_app("app").await;

    // bcrypt and sha512-crypt from the client are stored as they are.
    let bcrypt = "$2b$10$N9qo8uLOickgx2ZMRZoMyeIjZAgcfl7p92ldGxad68LJZdL17lhWy";
    let sha512 = "$6$saltsalt$qFmFH.bQmmtXzyBY0s9v7Oicd2z4XSIecDzlB5KiA2/jctKu9YterLp8wwnSq.qc.eoxqOmSuNp2xS0ktL3nh/";
    let spec = json!({
        "authentication": {"credentials": [{"pass": {"bcrypt": bcrypt}}, {"pass": {"sha512": sha512}}]},
        "credentials": {"credentials": [{"pass": {"sha512": sha512}}]},
    });
    let d = c
        .create_device("app", json!({"metadata": {"name": "hashed"}, "spec": spec}))
        .await;
    assert_eq!(d["spec"], spec);
    assert_eq!(
        c.get_json(&device_path("app", "hashed")).await["spec"],
        spec
    );

    // A plain password, then the same one again.
    let p = device_path("app", "dev");
    c.create_device(
        "app",
        json!({"metadata": {"name": "dev"}, "spec": password_spec(json!("pw-one"))}),
    )
    .await;
    let v1 = c.get_json(&p).await;
    let h1 = v1["spec"]["authentication"]["credentials"][0]["pass"]["sha512"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(h1.starts_with("$6$"));

    for form in [json!("pw-one"), json!({"plain": "pw-one"})] {
        let mut body = v1.clone();
        body["spec"] = password_spec(form.clone());
        put_ok(&c, &p, &body).await;
        let v = c.get_json(&p).await;
        assert_eq!(
            v["spec"]["authentication"]["credentials"][0]["pass"]["sha512"],
            h1.as_str(),
            "{form}"
        );
        assert_eq!(
            generation(&v),
            1,
            "re-sending {form} changed the generation"
        );
        assert_eq!(
            rv(&v),
            rv(&v1),
            "re-sending {form} changed the resourceVersion"
        );
    }

    // A different password is a change.
    let mut body = v1.clone();
    body["spec"] = password_spec(json!("pw-two"));
    put_ok(&c, &p, &body).await;
    let v2 = c.get_json(&p).await;
    let h2 = v2["spec"]["authentication"]["credentials"][0]["pass"]["sha512"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(h2.starts_with("$6$"));
    assert_ne!(h2, h1);
    assert_eq!(generation(&v2), 2);
    assert_ne!(rv(&v2), rv(&v1));

    // And back to the first one: a new hash again (the old one is gone), another change.
    let mut body = v2.clone();
    body["spec"] = password_spec(json!("pw-one"));
    put_ok(&c, &p, &body).await;
    let v3 = c.get_json(&p).await;
    assert_eq!(generation(&v3), 3);
    assert_ne!(
        v3["spec"]["authentication"]["credentials"][0]["pass"]["sha512"],
        h2.as_str()
    );
}

// ---------------------------------------------------------------------------------------------
// trust anchors
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn trust_anchor_status_is_computed() {
    let t = TestServer::start().await;
    let c = t.admin();
    let cert = ca_certificate_b64();
    let forged = json!({"anchors": [{"valid": {"subject": "CN=Forged", "certificate": "x", "notBefore": "2000-01-01T00:00:00Z", "notAfter": "2001-01-01T00:00:00Z"}}]});

    let r = c
        .post(
            &apps(),
            &json!({"metadata": {"name": "ta"},
                "spec": {"trustAnchors": {"anchors": [{"certificate": cert}, {"certificate": "!!! not a certificate !!!"}]}},
                "status": {"trustAnchors": forged}}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let created: Value = r.json().await.unwrap();
    let app = c.get_json(&app_path("ta")).await;
    assert_eq!(created, app);

    let anchors = app["status"]["trustAnchors"]["anchors"]
        .as_array()
        .unwrap_or_else(|| panic!("no status.trustAnchors: {app}"));
    assert_eq!(anchors.len(), 2, "{app}");
    let valid = &anchors[0]["valid"];
    let subject = valid["subject"].as_str().unwrap_or_else(|| panic!("{app}"));
    assert!(
        subject.contains("CN=Registry Test CA") && subject.contains("O=Drover"),
        "{subject}"
    );
    assert_eq!(valid["certificate"], cert.as_str());
    assert_eq!(valid["notBefore"], "2024-01-01T00:00:00Z");
    assert_eq!(valid["notAfter"], "2034-01-01T00:00:00Z");
    let invalid = &anchors[1]["invalid"];
    assert!(
        !invalid["error"].as_str().unwrap_or_default().is_empty(),
        "{app}"
    );
    assert!(
        !invalid["message"].as_str().unwrap_or_default().is_empty(),
        "{app}"
    );
    assert!(anchors[1].get("valid").is_none());

    // A client-sent status is overwritten on update too.
    let mut body = app.clone();
    body["status"]["trustAnchors"] = forged.clone();
    put_ok(&c, &app_path("ta"), &body).await;
    assert_eq!(c.get_json(&app_path("ta")).await["status"], app["status"]);

    // Only the good anchor: one valid entry.
    let mut body = c.get_json(&app_path("ta")).await;
    body["spec"]["trustAnchors"] = json!({"anchors": [{"certificate": cert}]});
    put_ok(&c, &app_path("ta"), &body).await;
    let v = c.get_json(&app_path("ta")).await;
    assert_eq!(
        v["status"]["trustAnchors"]["anchors"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        v["status"]["trustAnchors"]["anchors"][0]["valid"]["certificate"],
        cert.as_str()
    );

    // Removing the spec section removes the status (even if the client sends it back).
    let mut body = v.clone();
    body["spec"].as_object_mut().unwrap().remove("trustAnchors");
    put_ok(&c, &app_path("ta"), &body).await;
    let v = c.get_json(&app_path("ta")).await;
    assert!(v["status"].get("trustAnchors").is_none(), "{v}");
    assert!(v["spec"].get("trustAnchors").is_none(), "{v}");

    // An app without trust anchors cannot claim any.
    let r = c
        .post(
            &apps(),
            &json!({"metadata": {"name": "ta2"}, "status": {"trustAnchors": forged}}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let v = c.get_json(&app_path("ta2")).await;
    assert!(v["status"].get("trustAnchors").is_none(), "{v}");
}

// ---------------------------------------------------------------------------------------------
// bad input, robustness
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn oversized_bodies_and_unknown_routes() {
    let dir = tempfile::tempdir().unwrap();
    let t = TestServer::start_with(drover::Config {
        api_body_limit: 1024,
        ..common::config(dir.path())
    })
    .await;
    let c = t.admin();

    let big = json!({"metadata": {"name": "big", "annotations": {"k": "x".repeat(2048)}}});
    let r = c.post(&apps(), &big).await;
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "PayloadTooLarge", "{body}");
    assert!(!body["message"].as_str().unwrap().is_empty());
    assert_gone(&c, &app_path("big")).await;

    // Small bodies still pass under the limit.
    c.create_app("small").await;
    let r = c
        .put(
            &app_path("small"),
            &json!({"metadata": {"name": "small", "annotations": {"k": "x".repeat(2048)}}}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let r = c
        .post(
            &devices("small"),
            &json!({"metadata": {"name": "d", "annotations": {"k": "x".repeat(2048)}}}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        names(&c, &devices("small"), &[]).await,
        Vec::<String>::new()
    );
    // Command payloads too, with the same JSON error.
    let r = c
        .request(
            Method::POST,
            "/api/command/v1alpha1/apps/small/devices/d?command=set",
        )
        .body(vec![b'x'; 2048])
        .send()
        .await
        .unwrap();
    let body: Value = r.json().await.unwrap_or(Value::Null);
    assert_eq!(body["error"], "PayloadTooLarge", "command payload: {body}");

    // Unknown routes: JSON 404.
    for path in [
        format!("{API}/nope"),
        "/no/such/thing".to_string(),
        format!("{API}/apps/small/devices/d/extra"),
    ] {
        let msg = expect_error(c.get(&path).await, StatusCode::NOT_FOUND, "NotFound").await;
        assert!(!msg.is_empty(), "{path}");
    }

    // Still serving.
    let app = c.get_json(&app_path("small")).await;
    assert_eq!(app["metadata"]["name"], "small");
    assert_eq!(generation(&app), 1);
}

#[tokio::test]
async fn server_survives_bad_input() {
    let t = TestServer::start().await;
    let c = t.admin();
    c.create_app("app").await;
    let garbage: &[&str] = &[
        "\u{0}\u{1}\u{2}",
        "null",
        "\"string\"",
        "{\"metadata\": null}",
        "[[[[[[[[[[[[[[[[[[[[",
        "{\"metadata\": {\"name\": \"\\ud800\"}}",
    ];
    for body in garbage {
        for (method, path) in [
            (Method::POST, apps()),
            (Method::POST, devices("app")),
            (Method::PUT, device_path("app", "x")),
        ] {
            let r = send_raw(&c, method.clone(), &path, body).await;
            let status = r.status();
            assert_eq!(status, StatusCode::BAD_REQUEST, "{method} {path} {body:?}");
        }
    }
    let r = c.get(&format!("{}?labels=%FF%FE", devices("app"))).await;
    assert!(r.status().is_client_error(), "{}", r.status());
    assert_eq!(
        c.get_json(&app_path("app")).await["metadata"]["name"],
        "app"
    );
}

// ---------------------------------------------------------------------------------------------
// persistence
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn resources_survive_a_restart() {
    let mut t = TestServer::start().await;
    let c = t.admin();
    c.create_app("app").await;
    let mut app = c.get_json(&app_path("app")).await;
    app["metadata"]["labels"] = json!({"k": "v"});
    app["spec"] = json!({"custom": {"x": 1}});
    put_ok(&c, &app_path("app"), &app).await;
    c.create_device(
        "app",
        json!({"metadata": {"name": "dev", "finalizers": ["example.com/f"]}, "spec": {"alias": ["a1"], "authentication": {"credentials": [{"pass": "pw"}]}}}),
    )
    .await;
    let app = c.get_json(&app_path("app")).await;
    let dev = c.get_json(&device_path("app", "dev")).await;
    let (_, rev_before) = list(&c, &apps(), &[]).await;

    t.restart().await;
    let c = t.admin();

    assert_eq!(c.get_json(&app_path("app")).await, app);
    assert_eq!(c.get_json(&device_path("app", "dev")).await, dev);
    assert_eq!(names(&c, &devices("app"), &[]).await, ["dev"]);
    let (_, rev_after) = list(&c, &apps(), &[]).await;
    assert!(
        rev_after >= rev_before,
        "revision went back: {rev_before} -> {rev_after}"
    );

    // Uniqueness and writes still work against the persisted state.
    let r = c
        .post(
            &devices("app"),
            &json!({"metadata": {"name": "other"}, "spec": {"alias": ["a1"]}}),
        )
        .await;
    expect_error(r, StatusCode::CONFLICT, "Conflict").await;
    let mut body = dev.clone();
    body["metadata"]["labels"] = json!({"after": "restart"});
    put_ok(&c, &device_path("app", "dev"), &body).await;
    let d2 = c.get_json(&device_path("app", "dev")).await;
    assert_ne!(rv(&d2), rv(&dev));
    assert_eq!(d2["metadata"]["uid"], dev["metadata"]["uid"]);
    // Stale versions from before the restart are still refused.
    let r = c.put(&device_path("app", "dev"), &dev).await;
    expect_error(r, StatusCode::CONFLICT, "OptimisticLockFailed").await;
    assert_eq!(status_of(&c, &app_path("app")).await, StatusCode::OK);
}
