//! Creating apps and devices: server-assigned fields, the Location header, conflicts, names,
//! and what is not found.

use crate::common::{expect_error, TestServer};
use crate::helpers::{
    app_path, apps, assert_server_timestamp, device_path, devices, follow, location_of, names, rv,
};
use reqwest::StatusCode;
use serde_json::{json, Value};

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
