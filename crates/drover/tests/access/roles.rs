//! Member roles (reader, manager, admin, anonymous) and the members document.

use crate::common::{expect_error, TestServer};
use crate::helpers::{
    admin_path, app_path, device, device_path, devices_path, expect_status, expect_unauthorized,
    put_members, APPS,
};
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test]
async fn reader_may_only_read() {
    let t = TestServer::start().await;
    let alice = t.user("alice").await;
    let bob = t.user("bob").await;
    alice.create_app("shared").await;
    alice.create_device("shared", device("d1")).await;
    let r = put_members(&alice, "shared", json!({"bob": {"role": "reader"}})).await;
    expect_status(r, StatusCode::NO_CONTENT, "set members").await;

    let app = bob.get_json(&app_path("shared")).await;
    assert_eq!(app["metadata"]["name"], "shared");
    let apps = bob.get_json(APPS).await;
    assert_eq!(apps.as_array().unwrap().len(), 1, "{apps}");
    let devs = bob.get_json(&devices_path("shared")).await;
    assert_eq!(devs.as_array().unwrap().len(), 1);
    bob.get_json(&device_path("shared", "d1")).await;

    let r = bob
        .put(
            &device_path("shared", "d1"),
            &json!({"metadata": {"name": "d1", "labels": {"a": "b"}}}),
        )
        .await;
    expect_error(r, StatusCode::FORBIDDEN, "AuthenticationError").await;
    let r = bob.post(&devices_path("shared"), &device("d2")).await;
    expect_error(r, StatusCode::FORBIDDEN, "AuthenticationError").await;
    let r = bob.delete(&device_path("shared", "d1")).await;
    expect_error(r, StatusCode::FORBIDDEN, "AuthenticationError").await;
    let r = bob
        .put(
            &app_path("shared"),
            &json!({"metadata": {"name": "shared", "labels": {"a": "b"}}}),
        )
        .await;
    expect_error(r, StatusCode::FORBIDDEN, "AuthenticationError").await;
    let r = bob.delete(&app_path("shared")).await;
    expect_error(r, StatusCode::FORBIDDEN, "AuthenticationError").await;
    let r = bob.get(&admin_path("shared", "members")).await;
    expect_error(r, StatusCode::FORBIDDEN, "AuthenticationError").await;
    let r = put_members(&bob, "shared", json!({"bob": {"role": "admin"}})).await;
    expect_error(r, StatusCode::FORBIDDEN, "AuthenticationError").await;

    // Nothing changed.
    let devs = alice.get_json(&devices_path("shared")).await;
    assert_eq!(devs.as_array().unwrap().len(), 1);
    assert!(devs[0]["metadata"].get("labels").is_none());
    let members = alice.get_json(&admin_path("shared", "members")).await;
    assert_eq!(members["members"], json!({"bob": {"role": "reader"}}));
}

#[tokio::test]
async fn manager_may_write_but_not_administer() {
    let t = TestServer::start().await;
    let alice = t.user("alice").await;
    let bob = t.user("bob").await;
    alice.create_app("shared").await;
    let r = put_members(&alice, "shared", json!({"bob": {"role": "manager"}})).await;
    expect_status(r, StatusCode::NO_CONTENT, "set members").await;

    bob.create_device("shared", device("d1")).await;
    let r = bob
        .put(
            &device_path("shared", "d1"),
            &json!({"metadata": {"name": "d1", "labels": {"a": "b"}}}),
        )
        .await;
    expect_status(r, StatusCode::NO_CONTENT, "manager updates a device").await;
    let d = alice.get_json(&device_path("shared", "d1")).await;
    assert_eq!(d["metadata"]["labels"], json!({"a": "b"}));
    let r = bob
        .put(
            &app_path("shared"),
            &json!({"metadata": {"name": "shared", "labels": {"env": "prod"}}}),
        )
        .await;
    expect_status(r, StatusCode::NO_CONTENT, "manager updates the app").await;
    let app = alice.get_json(&app_path("shared")).await;
    assert_eq!(app["metadata"]["labels"], json!({"env": "prod"}));
    bob.create_device("shared", device("d2")).await;
    let r = bob.delete(&device_path("shared", "d2")).await;
    expect_status(r, StatusCode::NO_CONTENT, "manager deletes a device").await;

    let r = bob.delete(&app_path("shared")).await;
    expect_error(r, StatusCode::FORBIDDEN, "AuthenticationError").await;
    let r = bob.get(&admin_path("shared", "members")).await;
    expect_error(r, StatusCode::FORBIDDEN, "AuthenticationError").await;
    let r = put_members(&bob, "shared", json!({"bob": {"role": "admin"}})).await;
    expect_error(r, StatusCode::FORBIDDEN, "AuthenticationError").await;
    let r = bob
        .put(
            &admin_path("shared", "transfer-ownership"),
            &json!({"newUser": "bob"}),
        )
        .await;
    expect_error(r, StatusCode::FORBIDDEN, "AuthenticationError").await;

    let app = alice.get_json(&app_path("shared")).await;
    assert!(app["metadata"].get("deletionTimestamp").is_none());
    let members = alice.get_json(&admin_path("shared", "members")).await;
    assert_eq!(members["members"], json!({"bob": {"role": "manager"}}));
}

#[tokio::test]
async fn admin_member_manages_members_and_deletes() {
    let t = TestServer::start().await;
    let alice = t.user("alice").await;
    let bob = t.user("bob").await;
    let carol = t.user("carol").await;
    alice.create_app("shared").await;
    let r = put_members(&alice, "shared", json!({"bob": {"role": "admin"}})).await;
    expect_status(r, StatusCode::NO_CONTENT, "set members").await;

    let members = bob.get_json(&admin_path("shared", "members")).await;
    assert_eq!(members["members"], json!({"bob": {"role": "admin"}}));
    assert!(members["resourceVersion"].is_string(), "{members}");
    let r = put_members(
        &bob,
        "shared",
        json!({"bob": {"role": "admin"}, "carol": {"role": "reader"}}),
    )
    .await;
    expect_status(r, StatusCode::NO_CONTENT, "admin member sets members").await;
    carol.get_json(&app_path("shared")).await;

    // Only the owner transfers.
    let r = bob
        .put(
            &admin_path("shared", "transfer-ownership"),
            &json!({"newUser": "bob"}),
        )
        .await;
    expect_error(r, StatusCode::FORBIDDEN, "AuthenticationError").await;
    let r = bob
        .put(
            &admin_path("shared", "transfer-ownership"),
            &json!({"newUser": "carol"}),
        )
        .await;
    expect_error(r, StatusCode::FORBIDDEN, "AuthenticationError").await;

    let r = bob.delete(&app_path("shared")).await;
    expect_status(r, StatusCode::NO_CONTENT, "admin member deletes the app").await;
    let r = alice.get(&app_path("shared")).await;
    expect_error(r, StatusCode::NOT_FOUND, "NotFound").await;
}

#[tokio::test]
async fn members_optimistic_locking() {
    let t = TestServer::start().await;
    let alice = t.user("alice").await;
    t.user("bob").await;
    alice.create_app("shared").await;

    let m0 = alice.get_json(&admin_path("shared", "members")).await;
    let rv0 = m0["resourceVersion"].as_str().unwrap().to_string();
    assert_eq!(m0["members"], json!({}));

    let r = alice
        .put(
            &admin_path("shared", "members"),
            &json!({"resourceVersion": rv0, "members": {"bob": {"role": "reader"}}}),
        )
        .await;
    expect_status(r, StatusCode::NO_CONTENT, "put with the current version").await;
    let m1 = alice.get_json(&admin_path("shared", "members")).await;
    let rv1 = m1["resourceVersion"].as_str().unwrap().to_string();
    assert_ne!(rv1, rv0, "a change gets a new resourceVersion");
    assert_eq!(m1["members"], json!({"bob": {"role": "reader"}}));

    let r = alice
        .put(
            &admin_path("shared", "members"),
            &json!({"resourceVersion": rv0, "members": {"bob": {"role": "admin"}}}),
        )
        .await;
    expect_error(r, StatusCode::CONFLICT, "OptimisticLockFailed").await;
    let m = alice.get_json(&admin_path("shared", "members")).await;
    assert_eq!(m, m1, "a stale write changes nothing");

    let r = alice
        .put(
            &admin_path("shared", "members"),
            &json!({"resourceVersion": rv1, "members": {"bob": {"role": "manager"}}}),
        )
        .await;
    expect_status(r, StatusCode::NO_CONTENT, "put with the new version").await;
    // Without a resourceVersion the write is unconditional.
    let r = put_members(&alice, "shared", json!({})).await;
    expect_status(r, StatusCode::NO_CONTENT, "unconditional put").await;
    assert_eq!(
        alice.get_json(&admin_path("shared", "members")).await["members"],
        json!({})
    );
}

#[tokio::test]
async fn anonymous_member_makes_app_public() {
    let t = TestServer::start().await;
    let alice = t.user("alice").await;
    let bob = t.user("bob").await;
    alice.create_app("public").await;
    alice.create_device("public", device("d1")).await;
    alice.create_app("private").await;
    let r = bob.get(&app_path("public")).await;
    expect_error(r, StatusCode::NOT_FOUND, "NotFound").await;

    let r = put_members(&alice, "public", json!({"": {"role": "reader"}})).await;
    expect_status(r, StatusCode::NO_CONTENT, "set anonymous reader").await;
    bob.get_json(&app_path("public")).await;
    bob.get_json(&device_path("public", "d1")).await;
    let apps = bob.get_json(APPS).await;
    let names: Vec<&str> = apps
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["public"]);
    // Read only.
    let r = bob.post(&devices_path("public"), &device("d2")).await;
    expect_error(r, StatusCode::FORBIDDEN, "AuthenticationError").await;
    // Still authenticated users only.
    expect_unauthorized(
        t.anonymous().get(&app_path("public")).await,
        "anonymous request",
    )
    .await;
}

#[tokio::test]
async fn invalid_members_are_rejected() {
    let t = TestServer::start().await;
    let alice = t.user("alice").await;
    alice.create_app("shared").await;
    let r = put_members(&alice, "shared", json!({"bob": {"role": "superuser"}})).await;
    expect_error(r, StatusCode::BAD_REQUEST, "BadRequest").await;
    let r = put_members(&alice, "shared", json!({"bob": {"role": "Reader"}})).await;
    expect_error(r, StatusCode::BAD_REQUEST, "BadRequest").await;
    let r = put_members(&alice, "shared", json!({"bob": {}})).await;
    expect_error(r, StatusCode::BAD_REQUEST, "BadRequest").await;
    let r = put_members(&alice, "shared", json!({"a:b": {"role": "reader"}})).await;
    expect_error(r, StatusCode::BAD_REQUEST, "BadRequest").await;
    assert_eq!(
        alice.get_json(&admin_path("shared", "members")).await["members"],
        json!({})
    );
}
