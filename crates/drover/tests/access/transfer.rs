//! Ownership transfer: accept and cancel.

use crate::common::{expect_error, TestServer};
use crate::helpers::{admin_path, app_path, expect_status, put_members};
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test]
async fn ownership_transfer_and_accept() {
    let t = TestServer::start().await;
    let alice = t.user("alice").await;
    let bob = t.user("bob").await;
    let carol = t.user("carol").await;
    alice.create_app("moving").await;
    let r = put_members(&alice, "moving", json!({"carol": {"role": "admin"}})).await;
    expect_status(r, StatusCode::NO_CONTENT, "set members").await;

    // No transfer pending yet: nothing to accept.
    let r = bob
        .put(&admin_path("moving", "accept-ownership"), &json!({}))
        .await;
    expect_error(r, StatusCode::NOT_FOUND, "NotFound").await;
    // A member that is not the owner may not transfer.
    let r = carol
        .put(
            &admin_path("moving", "transfer-ownership"),
            &json!({"newUser": "carol"}),
        )
        .await;
    expect_error(r, StatusCode::FORBIDDEN, "AuthenticationError").await;

    let r = alice
        .put(
            &admin_path("moving", "transfer-ownership"),
            &json!({"newUser": "bob"}),
        )
        .await;
    expect_status(r, StatusCode::NO_CONTENT, "owner offers the app").await;
    let pending = alice
        .get_json(&admin_path("moving", "transfer-ownership"))
        .await;
    assert_eq!(pending, json!({"newUser": "bob"}));
    // A member with no pending transfer cannot accept.
    let r = carol
        .put(&admin_path("moving", "accept-ownership"), &json!({}))
        .await;
    assert!(
        r.status().is_client_error(),
        "carol accepts bob's transfer: {}",
        r.status()
    );
    // An offer does not let bob administer yet.
    let r = bob
        .put(
            &app_path("moving"),
            &json!({"metadata": {"name": "moving", "labels": {"a": "b"}}}),
        )
        .await;
    expect_error(r, StatusCode::NOT_FOUND, "NotFound").await;

    let r = bob
        .put(&admin_path("moving", "accept-ownership"), &json!({}))
        .await;
    expect_status(r, StatusCode::NO_CONTENT, "bob accepts").await;

    // bob owns the app now.
    bob.get_json(&app_path("moving")).await;
    let members = bob.get_json(&admin_path("moving", "members")).await;
    assert_eq!(
        members["members"],
        json!({"carol": {"role": "admin"}}),
        "members stay"
    );
    let r = alice.get(&app_path("moving")).await;
    expect_error(r, StatusCode::NOT_FOUND, "NotFound").await;
    let r = alice
        .put(
            &admin_path("moving", "transfer-ownership"),
            &json!({"newUser": "alice"}),
        )
        .await;
    expect_error(r, StatusCode::NOT_FOUND, "NotFound").await;
    let r = bob.get(&admin_path("moving", "transfer-ownership")).await;
    assert_eq!(
        r.status(),
        StatusCode::NO_CONTENT,
        "no transfer pending after the accept"
    );
    let r = bob
        .put(&admin_path("moving", "accept-ownership"), &json!({}))
        .await;
    assert!(
        r.status().is_client_error(),
        "accepting twice: {}",
        r.status()
    );

    // ... and can transfer it in turn.
    let r = bob
        .put(
            &admin_path("moving", "transfer-ownership"),
            &json!({"newUser": "carol"}),
        )
        .await;
    expect_status(r, StatusCode::NO_CONTENT, "new owner transfers").await;
    assert_eq!(
        bob.get_json(&admin_path("moving", "transfer-ownership"))
            .await,
        json!({"newUser": "carol"})
    );
    let r = carol
        .put(&admin_path("moving", "accept-ownership"), &json!({}))
        .await;
    expect_status(r, StatusCode::NO_CONTENT, "carol accepts").await;
    let r = carol
        .put(
            &admin_path("moving", "transfer-ownership"),
            &json!({"newUser": "alice"}),
        )
        .await;
    expect_status(r, StatusCode::NO_CONTENT, "carol is the owner").await;
}

#[tokio::test]
async fn ownership_transfer_cancel() {
    let t = TestServer::start().await;
    let alice = t.user("alice").await;
    let bob = t.user("bob").await;
    alice.create_app("staying").await;

    let r = alice
        .put(
            &admin_path("staying", "transfer-ownership"),
            &json!({"newUser": "bob"}),
        )
        .await;
    expect_status(r, StatusCode::NO_CONTENT, "offer").await;
    let r = alice
        .delete(&admin_path("staying", "transfer-ownership"))
        .await;
    expect_status(r, StatusCode::NO_CONTENT, "cancel").await;
    let r = alice
        .get(&admin_path("staying", "transfer-ownership"))
        .await;
    expect_status(r, StatusCode::NO_CONTENT, "nothing pending").await;

    let r = bob
        .put(&admin_path("staying", "accept-ownership"), &json!({}))
        .await;
    expect_error(r, StatusCode::NOT_FOUND, "NotFound").await;
    let r = bob.get(&app_path("staying")).await;
    expect_error(r, StatusCode::NOT_FOUND, "NotFound").await;
    // alice is still the owner.
    let r = alice
        .put(
            &admin_path("staying", "transfer-ownership"),
            &json!({"newUser": "bob"}),
        )
        .await;
    expect_status(r, StatusCode::NO_CONTENT, "alice still owns it").await;
    // A transfer to an invalid user name is refused.
    let r = alice
        .put(
            &admin_path("staying", "transfer-ownership"),
            &json!({"newUser": "a:b"}),
        )
        .await;
    expect_error(r, StatusCode::BAD_REQUEST, "BadRequest").await;
}
