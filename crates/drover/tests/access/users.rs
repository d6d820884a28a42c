//! Users: the configured administrator, the user lifecycle, and what happens to a deleted
//! user's applications.

use crate::common::{expect_error, TestServer, ADMIN_TOKEN};
use crate::helpers::{
    app_path, device, device_path, expect_status, expect_unauthorized, whoami, APPS, USERS, WHOAMI,
};
use reqwest::StatusCode;
use serde_json::{json, Value};

#[tokio::test]
async fn admin_exists_with_configured_token() {
    let t = TestServer::start().await;
    assert_eq!(
        whoami(&t.admin()).await,
        json!({"name": "admin", "admin": true})
    );
    // The token belongs to `admin` only.
    let r = t.client("root", ADMIN_TOKEN).get(WHOAMI).await;
    expect_unauthorized(r, "admin token presented as another user").await;
}

#[tokio::test]
async fn users_lifecycle() {
    let t = TestServer::start().await;
    let admin = t.admin();

    let r = admin.post(USERS, &json!({"name": "alice"})).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let created: Value = r.json().await.unwrap();
    assert_eq!(created["name"], "alice");
    let token = created["token"].as_str().unwrap().to_string();
    assert!(token.starts_with("drg_"), "token {token}");
    let alice = t.client("alice", &token);
    assert_eq!(
        whoami(&alice).await,
        json!({"name": "alice", "admin": false})
    );

    // Duplicate and invalid names.
    let r = admin.post(USERS, &json!({"name": "alice"})).await;
    expect_error(r, StatusCode::CONFLICT, "Conflict").await;
    let r = admin.post(USERS, &json!({"name": "a:b"})).await;
    expect_error(r, StatusCode::BAD_REQUEST, "BadRequest").await;
    let r = admin.post(USERS, &json!({"name": ""})).await;
    expect_error(r, StatusCode::BAD_REQUEST, "BadRequest").await;

    // Listing.
    let bob = t.user("bob").await;
    let users = admin.get_json(USERS).await;
    let names: Vec<&str> = users
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["admin", "alice", "bob"], "{users}");
    assert!(
        !users.to_string().contains(&token),
        "user list shows a token: {users}"
    );

    // Non-administrators may not manage users.
    let r = alice.post(USERS, &json!({"name": "mallory"})).await;
    expect_error(r, StatusCode::FORBIDDEN, "AuthenticationError").await;
    let r = alice.get(USERS).await;
    expect_error(r, StatusCode::FORBIDDEN, "AuthenticationError").await;
    let r = alice.delete(&format!("{USERS}/bob")).await;
    expect_error(r, StatusCode::FORBIDDEN, "AuthenticationError").await;
    let r = alice.delete(&format!("{USERS}/alice")).await;
    expect_error(r, StatusCode::FORBIDDEN, "AuthenticationError").await;
    assert_eq!(
        whoami(&bob).await["name"],
        "bob",
        "bob survives alice's attempt"
    );

    // Deleting.
    let r = admin.delete(&format!("{USERS}/alice")).await;
    expect_status(r, StatusCode::NO_CONTENT, "delete alice").await;
    expect_unauthorized(alice.get(WHOAMI).await, "deleted user's token").await;
    let r = admin.delete(&format!("{USERS}/alice")).await;
    expect_error(r, StatusCode::NOT_FOUND, "NotFound").await;
    let users = admin.get_json(USERS).await;
    let names: Vec<&str> = users
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["admin", "bob"]);

    // The administrator stays.
    let r = admin.delete(&format!("{USERS}/admin")).await;
    expect_error(r, StatusCode::BAD_REQUEST, "BadRequest").await;
    assert_eq!(
        whoami(&admin).await,
        json!({"name": "admin", "admin": true})
    );
}

#[tokio::test]
async fn deleted_users_apps_stay_but_are_not_inherited() {
    let t = TestServer::start().await;
    let admin = t.admin();
    let alice = t.user("alice").await;
    alice.create_app("alice-app").await;
    alice.create_device("alice-app", device("d1")).await;

    let r = admin.delete(&format!("{USERS}/alice")).await;
    expect_status(r, StatusCode::NO_CONTENT, "delete alice").await;

    // The application and its devices stay, for the administrator.
    let app = admin.get_json(&app_path("alice-app")).await;
    assert_eq!(app["metadata"]["name"], "alice-app");
    admin.get_json(&device_path("alice-app", "d1")).await;
    let apps = admin.get_json(APPS).await;
    assert!(apps
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a["metadata"]["name"] == "alice-app"));

    // A new user of the same name inherits nothing.
    let alice2 = t.user("alice").await;
    let r = alice2.get(&app_path("alice-app")).await;
    expect_error(r, StatusCode::NOT_FOUND, "NotFound").await;
    let apps = alice2.get_json(APPS).await;
    assert_eq!(apps, json!([]), "re-created alice lists {apps}");
    let r = alice2.delete(&app_path("alice-app")).await;
    expect_error(r, StatusCode::NOT_FOUND, "NotFound").await;
    admin.get_json(&app_path("alice-app")).await;
}
