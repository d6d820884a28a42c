//! Applications and devices through the command line.

use crate::common::TestServer;
use crate::helpers::{drover, fails, login_admin, ok};
use reqwest::StatusCode;

#[tokio::test]
async fn apps_and_devices() {
    let t = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    login_admin(&t, d).await;

    // Apps: create, conflict, list, get, label.
    let o = ok(d, &["app", "create", "app1", "--label", "env=prod"]).await;
    assert!(o.stdout.contains("app1 created"), "{}", o.stdout);
    let o = fails(d, &["app", "create", "app1"], 4).await;
    assert!(o.stderr.contains("409"), "{}", o.stderr);
    ok(d, &["app", "create", "app2"]).await;

    let o = ok(d, &["app", "list"]).await;
    let lines: Vec<&str> = o.stdout.lines().collect();
    assert!(
        lines[0].starts_with("NAME") && lines[0].contains("AGE") && lines[0].contains("LABELS"),
        "{}",
        o.stdout
    );
    assert_eq!(lines.len(), 3, "{}", o.stdout);
    assert!(
        lines[1].starts_with("app1") && lines[1].ends_with("env=prod"),
        "{}",
        o.stdout
    );
    let list = ok(d, &["app", "list", "-o", "json"]).await.json();
    assert_eq!(list.as_array().unwrap().len(), 2);
    let list = ok(d, &["app", "list", "-l", "env=prod", "-o", "json"])
        .await
        .json();
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["metadata"]["name"], "app1");

    let app = ok(d, &["app", "get", "app1", "-o", "json"]).await.json();
    assert_eq!(app["metadata"]["labels"]["env"], "prod");
    let y = ok(d, &["app", "get", "app1", "-o", "yaml"]).await.stdout;
    assert!(
        y.contains("metadata:\n") && y.contains("  name: app1\n"),
        "{y}"
    );
    fails(d, &["app", "get", "nope"], 3).await;

    ok(d, &["app", "label", "app1", "tier=edge", "env-"]).await;
    let app = ok(d, &["app", "get", "app1", "-o", "json"]).await.json();
    assert_eq!(app["metadata"]["labels"]["tier"], "edge");
    assert!(app["metadata"]["labels"].get("env").is_none(), "{app}");

    // Devices.
    fails(d, &["device", "list"], 2).await; // no --app
    ok(
        d,
        &[
            "device",
            "create",
            "dev1",
            "--app",
            "app1",
            "-l",
            "kind=sensor",
        ],
    )
    .await;
    ok(d, &["device", "create", "gw", "--app", "app1"]).await;
    fails(d, &["device", "create", "dev1", "--app", "app1"], 4).await;
    fails(d, &["device", "create", "x", "--app", "nope"], 3).await;
    let o = ok(d, &["device", "list", "--app", "app1"]).await;
    assert!(o.stdout.starts_with("NAME"), "{}", o.stdout);
    assert!(
        o.stdout
            .lines()
            .any(|l| l.starts_with("dev1") && l.contains("kind=sensor")),
        "{}",
        o.stdout
    );
    let devs = ok(d, &["device", "list", "--app", "app1", "-o", "json"])
        .await
        .json();
    assert_eq!(devs.as_array().unwrap().len(), 2);
    fails(d, &["device", "get", "nope", "--app", "app1"], 3).await;

    // Without credentials the device cannot publish; with a password set it can.
    let publish = || async {
        t.http
            .post(format!("{}/v1/telemetry", t.http_base))
            .basic_auth("dev1@app1", Some("s3cret"))
            .body(r#"{"temp": 20}"#)
            .send()
            .await
            .unwrap()
            .status()
    };
    assert_ne!(publish().await, StatusCode::ACCEPTED);
    ok(
        d,
        &[
            "device", "set", "password", "dev1", "s3cret", "--app", "app1",
        ],
    )
    .await;
    assert_eq!(publish().await, StatusCode::ACCEPTED);

    ok(
        d,
        &["device", "set", "alias", "dev1", "dev-one", "--app", "app1"],
    )
    .await;
    ok(
        d,
        &["device", "set", "gateway", "dev1", "gw", "--app", "app1"],
    )
    .await;
    ok(d, &["device", "label", "dev1", "floor=2", "--app", "app1"]).await;
    let dev = ok(d, &["device", "get", "dev1", "--app", "app1", "-o", "json"])
        .await
        .json();
    assert_eq!(dev["spec"]["alias"], serde_json::json!(["dev-one"]));
    assert_eq!(
        dev["spec"]["gatewaySelector"]["matchNames"],
        serde_json::json!(["gw"])
    );
    assert_eq!(dev["metadata"]["labels"]["floor"], "2");
    assert_eq!(dev["metadata"]["labels"]["kind"], "sensor");
    let o = ok(d, &["device", "get", "dev1", "--app", "app1"]).await;
    assert!(o.stdout.contains("dev-one"), "{}", o.stdout);

    // Disabled: publishing stops; enabled again: it works.
    ok(d, &["device", "set", "disabled", "dev1", "--app", "app1"]).await;
    assert_ne!(publish().await, StatusCode::ACCEPTED);
    ok(
        d,
        &[
            "device", "set", "disabled", "dev1", "false", "--app", "app1",
        ],
    )
    .await;
    assert_eq!(publish().await, StatusCode::ACCEPTED);

    // Not found when setting on a missing device.
    fails(
        d,
        &["device", "set", "alias", "nope", "a", "--app", "app1"],
        3,
    )
    .await;

    // Delete.
    ok(d, &["device", "delete", "dev1", "--app", "app1"]).await;
    fails(d, &["device", "delete", "dev1", "--app", "app1"], 3).await;
    ok(d, &["app", "delete", "app2"]).await;
    fails(d, &["app", "get", "app2"], 3).await;

    // Usage errors exit 2.
    assert_eq!(drover(d, &["app", "frobnicate"]).await.code, 2);
    fails(d, &["app", "label", "app1", "bad"], 2).await;
}
