//! `drover webhook`: subscriptions created (from options), listed, shown, their status and dead
//! letters, refused input, deleted.

use crate::common::TestServer;
use crate::helpers::{fails, login_admin, ok};

#[tokio::test]
async fn webhooks_created_shown_and_deleted() {
    let t = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    login_admin(&t, d).await;
    ok(d, &["app", "create", "app"]).await;
    let secret = "0123456789abcdef-secret";
    let create = [
        "webhook",
        "create",
        "fn1",
        "--app",
        "app",
        "--url",
        "https://example.com/hook",
        "--type",
        "io.drogue.event.v1",
        "--subject",
        "temp*",
        "--header",
        "X-Key=abc",
        "--secret",
        secret,
        "--max-attempts",
        "3",
    ];
    let o = ok(d, &[&create[..], &["-o", "json"]].concat()).await;
    assert_eq!(o.json()["signed"], true);
    assert_eq!(o.json()["spec"]["headers"]["X-Key"], "abc");
    assert_eq!(o.json()["spec"]["retry"]["maxAttempts"], 3);
    assert!(!o.stdout.contains(secret));
    fails(d, &create, 4).await;

    let o = ok(d, &["webhook", "list", "--app", "app"]).await;
    assert!(o.stdout.starts_with("NAME"), "{}", o.stdout);
    assert!(o.stdout.contains("fn1") && o.stdout.contains("https://example.com/hook"));
    let o = ok(d, &["webhook", "show", "fn1", "--app", "app", "-o", "json"]).await;
    assert_eq!(o.json()["spec"]["subjects"][0], "temp*");
    let o = ok(
        d,
        &["webhook", "status", "fn1", "--app", "app", "-o", "json"],
    )
    .await;
    assert_eq!(o.json()["delivered"], 0);
    let o = ok(d, &["webhook", "status", "fn1", "--app", "app"]).await;
    assert!(o.stdout.starts_with("DELIVERED"), "{}", o.stdout);
    let o = ok(
        d,
        &[
            "webhook",
            "dead-letters",
            "fn1",
            "--app",
            "app",
            "-o",
            "json",
        ],
    )
    .await;
    assert_eq!(o.json(), serde_json::json!([]));

    // Bad input: a usage error before any request, the server's 400 in one line.
    let bad = ["webhook", "create", "fn2", "--app", "app", "--url"];
    fails(
        d,
        &[&bad[..], &["https://example.com/", "--header", "nope"]].concat(),
        2,
    )
    .await;
    let o = fails(
        d,
        &[&bad[..], &["https://example.com/", "--schema", "kafka"]].concat(),
        1,
    )
    .await;
    assert!(o.stderr.contains("schema"), "{}", o.stderr);
    let o = fails(d, &[&bad[..], &["http://127.0.0.1:9/"]].concat(), 1).await;
    assert!(o.stderr.contains("outbound address policy"), "{}", o.stderr);
    fails(d, &["webhook", "list"], 2).await;

    let o = ok(d, &["webhook", "delete", "fn1", "--app", "app"]).await;
    assert_eq!(o.stdout.trim(), "webhook fn1 deleted");
    fails(d, &["webhook", "show", "fn1", "--app", "app"], 3).await;
}
