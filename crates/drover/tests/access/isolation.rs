//! Tenant isolation: other tenants' applications are invisible.

use crate::common::{expect_error, TestServer};
use crate::helpers::{admin_path, app_path, device, device_path, devices_path, put_members, APPS};
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test]
async fn other_tenants_apps_are_invisible() {
    let t = TestServer::start().await;
    let alice = t.user("alice").await;
    let bob = t.user("bob").await;
    alice.create_app("alice-app").await;
    alice.create_device("alice-app", device("d1")).await;
    bob.create_app("bob-app").await;

    // Reading: the same answer as for an application that does not exist.
    let r = bob.get(&app_path("alice-app")).await;
    let hidden = expect_error(r, StatusCode::NOT_FOUND, "NotFound").await;
    let r = bob.get(&app_path("no-such-app")).await;
    let missing = expect_error(r, StatusCode::NOT_FOUND, "NotFound").await;
    assert_eq!(
        hidden.replace("alice-app", "X"),
        missing.replace("no-such-app", "X"),
        "a hidden app must look exactly like a missing one"
    );
    let apps = bob.get_json(APPS).await;
    let names: Vec<&str> = apps
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["bob-app"]);
    let r = bob.get(&devices_path("alice-app")).await;
    expect_error(r, StatusCode::NOT_FOUND, "NotFound").await;
    let r = bob.get(&device_path("alice-app", "d1")).await;
    expect_error(r, StatusCode::NOT_FOUND, "NotFound").await;

    // Writing.
    let r = bob
        .put(
            &app_path("alice-app"),
            &json!({"metadata": {"name": "alice-app", "labels": {"x": "y"}}}),
        )
        .await;
    expect_error(r, StatusCode::NOT_FOUND, "NotFound").await;
    let r = bob.delete(&app_path("alice-app")).await;
    expect_error(r, StatusCode::NOT_FOUND, "NotFound").await;
    let r = bob
        .put(
            &device_path("alice-app", "d1"),
            &json!({"metadata": {"name": "d1", "labels": {"x": "y"}}}),
        )
        .await;
    expect_error(r, StatusCode::NOT_FOUND, "NotFound").await;
    let r = bob.delete(&device_path("alice-app", "d1")).await;
    expect_error(r, StatusCode::NOT_FOUND, "NotFound").await;
    let r = bob.post(&devices_path("alice-app"), &device("d2")).await;
    let hidden = expect_error(r, StatusCode::NOT_FOUND, "ReferenceNotFound").await;
    let r = bob.post(&devices_path("no-such-app"), &device("d2")).await;
    let missing = expect_error(r, StatusCode::NOT_FOUND, "ReferenceNotFound").await;
    assert_eq!(
        hidden.replace("alice-app", "X"),
        missing.replace("no-such-app", "X")
    );

    // Members and ownership.
    let r = bob.get(&admin_path("alice-app", "members")).await;
    expect_error(r, StatusCode::NOT_FOUND, "NotFound").await;
    let r = put_members(&bob, "alice-app", json!({"bob": {"role": "admin"}})).await;
    expect_error(r, StatusCode::NOT_FOUND, "NotFound").await;
    let r = bob
        .put(
            &admin_path("alice-app", "transfer-ownership"),
            &json!({"newUser": "bob"}),
        )
        .await;
    expect_error(r, StatusCode::NOT_FOUND, "NotFound").await;
    let r = bob
        .get(&admin_path("alice-app", "transfer-ownership"))
        .await;
    expect_error(r, StatusCode::NOT_FOUND, "NotFound").await;
    let r = bob
        .delete(&admin_path("alice-app", "transfer-ownership"))
        .await;
    expect_error(r, StatusCode::NOT_FOUND, "NotFound").await;
    let r = bob
        .put(&admin_path("alice-app", "accept-ownership"), &json!({}))
        .await;
    expect_error(r, StatusCode::NOT_FOUND, "NotFound").await;

    // Nothing changed.
    let app = alice.get_json(&app_path("alice-app")).await;
    assert!(app["metadata"].get("labels").is_none(), "{app}");
    assert!(app["metadata"].get("deletionTimestamp").is_none(), "{app}");
    let devs = alice.get_json(&devices_path("alice-app")).await;
    let names: Vec<&str> = devs
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["d1"]);
    let members = alice.get_json(&admin_path("alice-app", "members")).await;
    assert_eq!(members["members"], json!({}), "{members}");
    // And alice cannot see bob's app either.
    let r = alice.get(&app_path("bob-app")).await;
    expect_error(r, StatusCode::NOT_FOUND, "NotFound").await;
}
