//! End-to-end tests of who may do what: users, access tokens, authentication errors, tenant
//! isolation, member roles, ownership transfer and discovery documents (the OpenAPI document:
//! tests/openapi.rs).
#![allow(clippy::unwrap_used)]

mod common;

use base64::Engine as _;
use common::{expect_error, Client, TestServer, ADMIN_TOKEN};
use reqwest::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use reqwest::{Method, Response, StatusCode};
use serde_json::{json, Value};

const USERS: &str = "/api/admin/v1alpha1/users";
const WHOAMI: &str = "/api/admin/v1alpha1/user/whoami";
const TOKENS: &str = "/api/tokens/v1alpha1";
const APPS: &str = "/api/registry/v1alpha1/apps";

fn app_path(app: &str) -> String {
    format!("{APPS}/{app}")
}

fn devices_path(app: &str) -> String {
    format!("{APPS}/{app}/devices")
}

fn device_path(app: &str, dev: &str) -> String {
    format!("{APPS}/{app}/devices/{dev}")
}

fn admin_path(app: &str, what: &str) -> String {
    format!("/api/admin/v1alpha1/apps/{app}/{what}")
}

fn token_of(c: &Client) -> String {
    c.user.as_ref().unwrap().1.clone()
}

/// Status and JSON body (Null when the body is empty or not JSON).
async fn status_body(r: Response) -> (StatusCode, Value) {
    let status = r.status();
    let text = r.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn expect_status(r: Response, status: StatusCode, what: &str) {
    let (s, body) = status_body(r).await;
    assert_eq!(s, status, "{what}: body {body}");
}

/// Asserts a 401 AuthenticationError with a WWW-Authenticate challenge; returns the message.
async fn expect_unauthorized(r: Response, what: &str) -> String {
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

async fn whoami(c: &Client) -> Value {
    c.get_json(WHOAMI).await
}

async fn put_members(c: &Client, app: &str, members: Value) -> Response {
    c.put(&admin_path(app, "members"), &json!({ "members": members }))
        .await
}

fn device(name: &str) -> Value {
    json!({"metadata": {"name": name}})
}

// ---------------------------------------------------------------------------------------------
// Users

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

// ---------------------------------------------------------------------------------------------
// Access tokens

#[tokio::test]
async fn tokens_create_list_delete() {
    let t = TestServer::start().await;
    let alice = t.user("alice").await;
    let initial = token_of(&alice);

    let r = alice
        .request(Method::POST, &format!("{TOKENS}?description=ci"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::OK,
        "creating a token answers 200 as drg expects"
    );
    let created: Value = r.json().await.unwrap();
    let prefix = created["prefix"].as_str().unwrap().to_string();
    let token = created["token"].as_str().unwrap().to_string();
    assert!(prefix.starts_with("drg_"), "prefix {prefix}");
    assert_eq!(prefix.len(), 10, "prefix is drg_ + 6 characters: {prefix}");
    assert!(
        prefix[4..].chars().all(|c| c.is_ascii_alphanumeric()),
        "prefix {prefix}"
    );
    assert!(
        token.starts_with(&format!("{prefix}_")),
        "token {token} starts with {prefix}_"
    );

    // The new token works, and so does the first one.
    let ci = t.client("alice", &token);
    assert_eq!(whoami(&ci).await["name"], "alice");
    assert_eq!(whoami(&alice).await["name"], "alice");

    // The list shows prefixes, never secrets.
    let r = alice.get(TOKENS).await;
    assert_eq!(r.status(), StatusCode::OK);
    let text = r.text().await.unwrap();
    assert!(
        !text.contains(&token),
        "token list reveals the token: {text}"
    );
    assert!(
        !text.contains(&initial),
        "token list reveals the initial token: {text}"
    );
    let list: Value = serde_json::from_str(&text).unwrap();
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 2, "initial token and ci: {list:?}");
    let entry = list
        .iter()
        .find(|e| e["prefix"] == prefix.as_str())
        .unwrap();
    assert_eq!(entry["description"], "ci");
    assert!(entry["created"].is_string(), "{entry}");
    for e in list {
        let keys: Vec<&String> = e.as_object().unwrap().keys().collect();
        assert!(
            keys.iter()
                .all(|k| ["prefix", "created", "description"].contains(&k.as_str())),
            "unexpected fields in {e}"
        );
    }

    // Deleting.
    let r = alice.delete(&format!("{TOKENS}/{prefix}")).await;
    expect_status(r, StatusCode::NO_CONTENT, "delete token").await;
    expect_unauthorized(ci.get(WHOAMI).await, "deleted token").await;
    assert_eq!(
        whoami(&alice).await["name"],
        "alice",
        "the other token still works"
    );
    let list = alice.get_json(TOKENS).await;
    assert!(!list.to_string().contains(&prefix), "{list}");
    let r = alice.delete(&format!("{TOKENS}/{prefix}")).await;
    expect_error(r, StatusCode::NOT_FOUND, "NotFound").await;
    let r = alice.delete(&format!("{TOKENS}/drg_nosuch")).await;
    expect_error(r, StatusCode::NOT_FOUND, "NotFound").await;
}

#[tokio::test]
async fn tokens_are_private_to_their_user() {
    let t = TestServer::start().await;
    let alice = t.user("alice").await;
    let bob = t.user("bob").await;
    let r = alice
        .request(Method::POST, &format!("{TOKENS}?description=alice-ci"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let created: Value = r.json().await.unwrap();
    let prefix = created["prefix"].as_str().unwrap().to_string();
    let token = created["token"].as_str().unwrap().to_string();

    let list = bob.get_json(TOKENS).await;
    assert!(
        !list.to_string().contains(&prefix),
        "bob sees alice's token: {list}"
    );
    assert!(
        !list.to_string().contains("alice-ci"),
        "bob sees alice's token: {list}"
    );
    assert_eq!(
        list.as_array().unwrap().len(),
        1,
        "bob has only his initial token: {list}"
    );

    let r = bob.delete(&format!("{TOKENS}/{prefix}")).await;
    expect_error(r, StatusCode::NOT_FOUND, "NotFound").await;
    // Not even the administrator deletes another user's token through this API.
    let r = t.admin().delete(&format!("{TOKENS}/{prefix}")).await;
    expect_error(r, StatusCode::NOT_FOUND, "NotFound").await;
    assert_eq!(whoami(&t.client("alice", &token)).await["name"], "alice");
    assert!(alice.get_json(TOKENS).await.to_string().contains(&prefix));
}

// ---------------------------------------------------------------------------------------------
// Authentication errors

#[tokio::test]
async fn authentication_errors() {
    let t = TestServer::start().await;
    let alice = t.user("alice").await;
    let bob = t.user("bob").await;
    let alice_token = token_of(&alice);
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let raw = |value: String| {
        t.http
            .get(t.url(WHOAMI))
            .header(AUTHORIZATION, value)
            .send()
    };

    // No credentials.
    let msg = expect_unauthorized(t.anonymous().get(WHOAMI).await, "no credentials").await;
    assert!(!msg.is_empty());
    expect_unauthorized(
        t.anonymous().get(APPS).await,
        "no credentials on the registry",
    )
    .await;
    expect_unauthorized(t.anonymous().get(TOKENS).await, "no credentials on tokens").await;

    // Wrong token, or a token of another user.
    let wrong = "drg_abcdef_abcdefghijabcdefghijabcdefghij1234";
    expect_unauthorized(t.client("alice", wrong).get(WHOAMI).await, "wrong token").await;
    expect_unauthorized(t.client("alice", "x").get(WHOAMI).await, "garbage token").await;
    expect_unauthorized(
        t.client("bob", &alice_token).get(WHOAMI).await,
        "alice's token as bob",
    )
    .await;
    expect_unauthorized(
        t.client("nobody", &alice_token).get(WHOAMI).await,
        "alice's token as unknown user",
    )
    .await;
    expect_unauthorized(
        t.client("alice", &token_of(&bob)).get(APPS).await,
        "bob's token as alice",
    )
    .await;

    // Malformed Basic credentials.
    let r = raw("Basic !!!not-base64!!!".into()).await.unwrap();
    expect_unauthorized(r, "Basic, not base64").await;
    let r = raw(format!("Basic {}", b64("no-colon-here")))
        .await
        .unwrap();
    expect_unauthorized(r, "Basic without colon").await;
    let r = raw(format!("Basic {}", b64(&format!(":{alice_token}"))))
        .await
        .unwrap();
    expect_unauthorized(r, "Basic without user").await;
    let r = raw(format!("Basic {}", b64("alice:"))).await.unwrap();
    expect_unauthorized(r, "Basic without token").await;
    let r = raw("Basic".into()).await.unwrap();
    expect_unauthorized(r, "Basic without anything").await;
    let r = raw("Digest username=\"alice\"".into()).await.unwrap();
    expect_unauthorized(r, "unsupported scheme").await;

    // Two credentials at once.
    let r = t
        .http
        .get(t.url(WHOAMI))
        .header(
            AUTHORIZATION,
            format!("Basic {}", b64(&format!("alice:{alice_token}"))),
        )
        .header(
            AUTHORIZATION,
            format!("Basic {}", b64(&format!("bob:{}", token_of(&bob)))),
        )
        .send()
        .await
        .unwrap();
    expect_error(r, StatusCode::BAD_REQUEST, "BadRequest").await;
    let r = t
        .http
        .get(t.url(APPS))
        .header(
            AUTHORIZATION,
            format!("Basic {}", b64(&format!("alice:{alice_token}"))),
        )
        .header(AUTHORIZATION, "Bearer abc.def.ghi")
        .send()
        .await
        .unwrap();
    expect_error(r, StatusCode::BAD_REQUEST, "BadRequest").await;

    // Bearer without single sign-on configured.
    let r = raw("Bearer eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln".into())
        .await
        .unwrap();
    let msg = expect_unauthorized(r, "Bearer without OIDC").await;
    let lower = msg.to_lowercase();
    assert!(
        lower.contains("oidc") || lower.contains("single sign-on"),
        "message: {msg}"
    );
    let r = raw("Bearer ".into()).await.unwrap();
    expect_unauthorized(r, "empty Bearer").await;

    // The good credentials still work.
    assert_eq!(whoami(&alice).await["name"], "alice");
}

// ---------------------------------------------------------------------------------------------
// Isolation

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

// ---------------------------------------------------------------------------------------------
// Roles

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

// ---------------------------------------------------------------------------------------------
// Ownership transfer

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

// ---------------------------------------------------------------------------------------------
// Discovery

#[tokio::test]
async fn discovery_documents() {
    let t = TestServer::start().await;
    let anon = t.anonymous();

    let doc = anon.get_json("/.well-known/drogue-endpoints").await;
    assert_eq!(doc["registry"]["url"], t.base.as_str(), "{doc}");
    assert!(t.base.starts_with("http://127.0.0.1:"));
    let issuer = doc["issuer_url"].as_str().unwrap().to_string();
    assert!(!issuer.ends_with('/'), "issuer_url {issuer}");
    assert!(issuer.starts_with("http"), "issuer_url {issuer}");

    let r = t
        .http
        .get(format!("{issuer}/.well-known/openid-configuration"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let oidc: Value = r.json().await.unwrap();
    assert!(
        oidc["authorization_endpoint"]
            .as_str()
            .is_some_and(|s| s.starts_with("http")),
        "{oidc}"
    );
    assert!(
        oidc["token_endpoint"]
            .as_str()
            .is_some_and(|s| s.starts_with("http")),
        "{oidc}"
    );

    let v = anon.get_json("/.well-known/drogue-version").await;
    assert!(v["version"].as_str().is_some_and(|s| !s.is_empty()), "{v}");

    let r = anon.get("/api/console/v1alpha1/info").await;
    expect_unauthorized(r, "info without credentials").await;
    let alice = t.user("alice").await;
    let info = alice.get_json("/api/console/v1alpha1/info").await;
    assert_eq!(info["registry"]["url"], t.base.as_str(), "{info}");
    assert_eq!(
        info["endpoints"]["registry"]["url"],
        t.base.as_str(),
        "{info}"
    );
    assert_eq!(info["issuer_url"], issuer.as_str(), "{info}");
    assert_eq!(info["endpoints"]["issuer_url"], issuer.as_str(), "{info}");
}

#[tokio::test]
async fn discovery_follows_the_host_the_client_used() {
    let t = TestServer::start().await;
    let port = t.base.rsplit(':').next().unwrap().to_string();
    let base = format!("http://localhost:{port}");
    let r = t
        .http
        .get(format!("{base}/.well-known/drogue-endpoints"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let doc: Value = r.json().await.unwrap();
    assert_eq!(doc["registry"]["url"], base.as_str(), "{doc}");
}
