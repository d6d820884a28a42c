//! Aliases and unique usernames: unique within an application.

use crate::common::{expect_error, TestServer};
use crate::helpers::{assert_gone, delete_ok, device_path, devices, names, put_ok};
use reqwest::StatusCode;
use serde_json::json;

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
