//! Access tokens: create, list, delete, and private to their user.

use crate::common::{expect_error, TestServer};
use crate::helpers::{expect_status, expect_unauthorized, token_of, whoami, TOKENS, WHOAMI};
use reqwest::{Method, StatusCode};
use serde_json::Value;

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
