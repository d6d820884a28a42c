//! Users, access tokens, members and ownership transfer through the command line.

use crate::common::TestServer;
use crate::helpers::{drover, fails, login_admin, ok};
use serde_json::Value;

#[tokio::test]
async fn users_and_tokens() {
    let t = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    login_admin(&t, d).await;

    let created = ok(d, &["user", "create", "bob", "-o", "json"]).await.json();
    let token = created["token"].as_str().unwrap().to_string();
    fails(d, &["user", "create", "bob"], 4).await;
    let o = ok(d, &["user", "list"]).await;
    assert!(
        o.stdout.lines().any(|l| l.starts_with("bob")),
        "{}",
        o.stdout
    );

    // Bob logs in with his token, creates a second one, lists and deletes it.
    let creds = format!("bob:{token}");
    ok(d, &["login", &t.base, "--token", &creds, "--name", "bob"]).await;
    let tok = ok(d, &["token", "create", "--description", "ci", "-o", "json"])
        .await
        .json();
    let prefix = tok["prefix"].as_str().unwrap().to_string();
    let o = ok(d, &["token", "list"]).await;
    assert!(
        o.stdout
            .lines()
            .any(|l| l.starts_with(&prefix) && l.contains("ci")),
        "{}",
        o.stdout
    );
    ok(d, &["token", "delete", &prefix]).await;
    fails(d, &["token", "delete", &prefix], 3).await;
    // Bob is no administrator.
    fails(d, &["user", "list"], 1).await;

    ok(d, &["user", "delete", "bob", "--context", "local"]).await;
    fails(d, &["user", "delete", "bob", "--context", "local"], 3).await;
}

#[tokio::test]
async fn members_and_transfer() {
    let t = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    login_admin(&t, d).await;
    let bob = ok(d, &["user", "create", "bob", "-o", "json"]).await.json();
    let creds = format!("bob:{}", bob["token"].as_str().unwrap());
    ok(d, &["login", &t.base, "--token", &creds, "--name", "bob"]).await;
    ok(d, &["context", "use", "local"]).await;
    let as_bob = |args: &[&str]| {
        let mut v: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        v.extend(["--context".to_string(), "bob".to_string()]);
        v
    };
    let bob_run = |args: &'static [&'static str], code: i32| {
        let args = as_bob(args);
        async move {
            let a: Vec<&str> = args.iter().map(String::as_str).collect();
            let o = drover(d, &a).await;
            assert_eq!(o.code, code, "drover {a:?}: {}{}", o.stdout, o.stderr);
            o
        }
    };

    ok(d, &["app", "create", "shared"]).await;
    let o = ok(d, &["member", "list", "shared"]).await;
    assert_eq!(o.stdout.trim(), "USER   ROLE");
    bob_run(&["app", "get", "shared"], 3).await;

    // Reader: bob sees the app but cannot change it.
    let o = ok(
        d,
        &[
            "member", "add", "shared", "--user", "bob", "--role", "reader",
        ],
    )
    .await;
    assert_eq!(o.stdout.trim(), "bob is now a reader of app shared");
    let o = ok(d, &["member", "list", "shared"]).await;
    assert!(
        o.stdout.lines().any(|l| l == "bob    reader"),
        "{}",
        o.stdout
    );
    let doc = ok(d, &["member", "list", "shared", "-o", "json"])
        .await
        .json();
    assert_eq!(doc["members"]["bob"]["role"], "reader");
    assert!(doc["resourceVersion"].is_string(), "{doc}");
    bob_run(&["app", "get", "shared"], 0).await;
    bob_run(&["app", "label", "shared", "x=y"], 1).await;

    // Manager: bob may write; everyone may read.
    ok(
        d,
        &["member", "add", "shared", "-u", "bob", "-r", "manager"],
    )
    .await;
    ok(
        d,
        &["member", "add", "shared", "--user", "*", "--role", "reader"],
    )
    .await;
    bob_run(&["app", "label", "shared", "x=y"], 0).await;
    let doc = ok(d, &["member", "list", "shared", "-o", "json"])
        .await
        .json();
    assert_eq!(doc["members"]["bob"]["role"], "manager");
    assert_eq!(doc["members"][""]["role"], "reader");
    assert!(ok(d, &["member", "list", "shared"])
        .await
        .stdout
        .contains("*      reader"));
    // Managers cannot manage members.
    bob_run(
        &[
            "member", "add", "shared", "--user", "bob", "--role", "admin",
        ],
        1,
    )
    .await;

    ok(d, &["member", "remove", "shared", "--user", "*"]).await;
    let o = ok(d, &["member", "remove", "shared", "--user", "bob"]).await;
    assert_eq!(o.stdout.trim(), "bob is no longer a member of app shared");
    bob_run(&["app", "get", "shared"], 3).await;
    let o = fails(d, &["member", "remove", "shared", "--user", "bob"], 3).await;
    assert!(o.stderr.contains("not a member"), "{}", o.stderr);
    fails(d, &["member", "list", "nope"], 3).await;
    assert_eq!(
        drover(
            d,
            &["member", "add", "shared", "--user", "bob", "--role", "owner"]
        )
        .await
        .code,
        2
    );

    // Transfer: offered, shown to the owner, accepted; bob owns the app.
    let o = ok(d, &["transfer", "show", "shared"]).await;
    assert_eq!(o.stdout.trim(), "no transfer of app shared is pending");
    ok(d, &["transfer", "start", "shared", "--to", "bob"]).await;
    let o = ok(d, &["transfer", "show", "shared", "-o", "json"])
        .await
        .json();
    assert_eq!(o["newUser"], "bob");
    let o = ok(d, &["transfer", "show", "shared"]).await;
    assert_eq!(o.stdout.trim(), "app shared is offered to bob");
    // bob cannot read the app yet, but sees the offer made to him.
    bob_run(&["app", "get", "shared"], 3).await;
    let o = bob_run(&["transfer", "show", "shared"], 0).await;
    assert_eq!(o.stdout.trim(), "app shared is offered to bob");
    let o = bob_run(&["transfer", "accept", "shared"], 0).await;
    assert_eq!(o.stdout.trim(), "you now own app shared");
    bob_run(&["member", "list", "shared"], 0).await;
    bob_run(&["app", "get", "shared"], 0).await;
    // Nothing pending any more.
    bob_run(&["transfer", "accept", "shared"], 1).await;

    // bob offers it on and withdraws the offer.
    ok(d, &["user", "create", "carol"]).await;
    bob_run(&["transfer", "start", "shared", "--to", "carol"], 0).await;
    bob_run(&["transfer", "cancel", "shared"], 0).await;
    let o = bob_run(&["transfer", "show", "shared", "-o", "json"], 0).await;
    assert_eq!(o.json()["newUser"], Value::Null);
    fails(d, &["transfer", "start", "nope", "--to", "bob"], 3).await;
}
