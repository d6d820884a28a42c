//! What reaches devices: commands and twins.

use crate::common::TestServer;
use crate::helpers::{fails, login_admin, ok};
use reqwest::StatusCode;

#[tokio::test]
async fn commands_reach_devices() {
    let t = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    login_admin(&t, d).await;
    ok(d, &["app", "create", "app"]).await;
    ok(
        d,
        &[
            "device",
            "create",
            "dev1",
            "--app",
            "app",
            "--password",
            "pw",
        ],
    )
    .await;

    // Nobody listens and no ttl: the server's 503, exit 1, one line.
    let o = fails(
        d,
        &["cmd", "dev1", "blink", "--app", "app", "--payload", "3"],
        1,
    )
    .await;
    assert!(o.stderr.contains("503"), "{}", o.stderr);
    fails(d, &["cmd", "nope", "blink", "--app", "app"], 3).await;

    // Queued with a ttl, then picked up by the device's long poll.
    let o = ok(
        d,
        &[
            "cmd",
            "dev1",
            "blink",
            "--app",
            "app",
            "--payload",
            "3",
            "--ttl",
            "60",
        ],
    )
    .await;
    assert!(o.stdout.contains("blink"), "{}", o.stdout);
    let r = t
        .http
        .post(format!("{}/v1/telemetry?ct=10", t.http_base))
        .basic_auth("dev1@app", Some("pw"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["command"], "blink");
    assert_eq!(r.text().await.unwrap(), "3");
}

#[tokio::test]
async fn twins_shown_and_changed() {
    let t = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    login_admin(&t, d).await;
    ok(d, &["app", "create", "app"]).await;
    ok(d, &["device", "create", "dev1", "--app", "app"]).await;

    let o = ok(d, &["twin", "show", "dev1", "--app", "app", "-o", "json"]).await;
    assert_eq!(o.json()["desiredVersion"], 1);
    let patch = r#"{"mode": "eco", "fan": {"speed": 2}}"#;
    let twin = ["twin", "desired", "dev1", "--app", "app"];
    let o = ok(d, &[&twin[..], &["--patch", patch, "-o", "json"]].concat()).await;
    assert_eq!(o.json()["desiredVersion"], 2);
    assert_eq!(o.json()["desired"]["fan"]["speed"], 2);

    // The version precondition: exit 4 (conflict), nothing changed.
    let stale = [
        &twin[..],
        &["--patch", r#"{"fan": null}"#, "--if-version", "1"],
    ]
    .concat();
    fails(d, &stale, 4).await;
    // Not JSON, not an object: usage errors before any request.
    let o = fails(d, &[&twin[..], &["--patch", "{mode"]].concat(), 2).await;
    assert!(o.stderr.contains("not valid JSON"), "{}", o.stderr);
    fails(d, &[&twin[..], &["--patch", "[1]"]].concat(), 2).await;
    fails(d, &["twin", "show", "nope", "--app", "app"], 3).await;

    let tags = [
        "twin",
        "tags",
        "dev1",
        "--app",
        "app",
        "--set",
        r#"{"floor": 3}"#,
    ];
    ok(d, &tags).await;
    // The table form is the twin as YAML.
    let o = ok(d, &["twin", "show", "dev1", "--app", "app"]).await;
    assert!(o.stdout.contains("desiredVersion: 2"), "{}", o.stdout);
    assert!(o.stdout.contains("floor: 3"), "{}", o.stdout);
    assert!(o.stdout.contains("mode: eco"), "{}", o.stdout);
}
