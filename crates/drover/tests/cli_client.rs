//! End-to-end tests of the `drover` command-line client: the built binary against an in-process
//! server, with its configuration in a temporary `DROVER_CONFIG_DIR`.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::time::Duration;

use common::{TestServer, ADMIN_TOKEN};
use reqwest::StatusCode;
use serde_json::Value;

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Out {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.stdout))
    }
}

/// Runs the binary with `DROVER_CONFIG_DIR=dir` and no other `DROVER_*` settings.
async fn drover(dir: &Path, args: &[&str]) -> Out {
    let mut c = tokio::process::Command::new(env!("CARGO_BIN_EXE_drover"));
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("DROVER_") {
            c.env_remove(k);
        }
    }
    c.env("DROVER_CONFIG_DIR", dir)
        .env("HOME", dir)
        .args(args)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(30), c.output())
        .await
        .unwrap_or_else(|_| panic!("drover {args:?} timed out"))
        .unwrap();
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs and asserts the exit code.
async fn ok(dir: &Path, args: &[&str]) -> Out {
    let o = drover(dir, args).await;
    assert_eq!(o.code, 0, "drover {args:?}: {}{}", o.stdout, o.stderr);
    o
}

async fn fails(dir: &Path, args: &[&str], code: i32) -> Out {
    let o = drover(dir, args).await;
    assert_eq!(o.code, code, "drover {args:?}: {}{}", o.stdout, o.stderr);
    assert!(o.stderr.starts_with("error: "), "{}", o.stderr);
    assert_eq!(
        o.stderr.trim_end().lines().count(),
        1,
        "one line: {}",
        o.stderr
    );
    o
}

async fn login_admin(t: &TestServer, dir: &Path) {
    let token = format!("admin:{ADMIN_TOKEN}");
    ok(
        dir,
        &["login", &t.base, "--token", &token, "--name", "local"],
    )
    .await;
}

#[tokio::test]
async fn login_contexts_and_whoami() {
    let t = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();

    // Not logged in yet.
    fails(d, &["whoami"], 1).await;

    // A wrong token is refused and nothing is stored.
    let o = fails(d, &["login", &t.base, "--token", "admin:wrong"], 1).await;
    assert!(o.stderr.contains("401"), "{}", o.stderr);
    assert!(!d.join("config.toml").exists());
    // Malformed token: usage.
    fails(d, &["login", &t.base, "--token", "nocolon"], 2).await;

    login_admin(&t, d).await;
    let file = d.join("config.toml");
    assert!(file.exists());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    let o = ok(d, &["whoami"]).await;
    assert!(
        o.stdout.starts_with("admin (system administrator)"),
        "{}",
        o.stdout
    );
    let me = ok(d, &["whoami", "-o", "json"]).await.json();
    assert_eq!(me["name"], "admin");
    assert_eq!(me["admin"], true);

    // A second context as alice; switch between them.
    let alice = t.user("alice").await;
    let (_, alice_token) = alice.user.clone().unwrap();
    let token = format!("alice:{alice_token}");
    let o = ok(d, &["login", &t.base, "--token", &token, "--name", "alice"]).await;
    assert!(o.stdout.contains("as alice"), "{}", o.stdout);
    assert_eq!(
        ok(d, &["whoami", "-o", "json"]).await.json()["name"],
        "alice"
    );
    assert_eq!(
        ok(d, &["whoami", "-o", "json", "--context", "local"])
            .await
            .json()["name"],
        "admin"
    );
    let o = ok(d, &["context", "list"]).await;
    assert!(o.stdout.starts_with("CURRENT"), "{}", o.stdout);
    assert!(
        o.stdout
            .lines()
            .any(|l| l.starts_with('*') && l.contains("alice")),
        "{}",
        o.stdout
    );
    let list = ok(d, &["context", "list", "-o", "json"]).await.json();
    assert_eq!(list.as_array().unwrap().len(), 2);
    // Tokens are not printed.
    assert!(!ok(d, &["context", "list", "-o", "json"])
        .await
        .stdout
        .contains(ADMIN_TOKEN));

    ok(d, &["context", "use", "local"]).await;
    assert_eq!(
        ok(d, &["whoami", "-o", "json"]).await.json()["name"],
        "admin"
    );
    fails(d, &["context", "use", "nope"], 3).await;
    ok(d, &["context", "delete", "alice"]).await;
    fails(d, &["whoami", "--context", "alice"], 3).await;
    fails(d, &["context", "delete", "alice"], 3).await;
}

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
