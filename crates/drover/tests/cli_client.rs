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

/// The binary with `DROVER_CONFIG_DIR=dir` and no other `DROVER_*` settings.
fn command(dir: &Path, args: &[&str]) -> tokio::process::Command {
    let mut c = tokio::process::Command::new(env!("CARGO_BIN_EXE_drover"));
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy();
        if k.starts_with("DROVER_") || k == "EDITOR" || k == "VISUAL" {
            c.env_remove(&*k);
        }
    }
    c.env("DROVER_CONFIG_DIR", dir)
        .env("HOME", dir)
        .args(args)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    c
}

/// Runs the binary with `DROVER_CONFIG_DIR=dir` and no other `DROVER_*` settings.
async fn drover(dir: &Path, args: &[&str]) -> Out {
    drover_env(dir, args, &[]).await
}

/// Runs the binary with extra environment variables.
async fn drover_env(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Out {
    let mut c = command(dir, args);
    for (k, v) in env {
        c.env(k, v);
    }
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

/// Writes an editor script into `dir` and returns the `EDITOR` value that runs it.
fn editor(dir: &Path, name: &str, script: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, script).unwrap();
    format!("sh {}", path.display())
}

fn version(v: &Value) -> u64 {
    v["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// The temporary file an error message says the edits are kept in.
fn kept_file(stderr: &str) -> std::path::PathBuf {
    let (_, rest) = stderr
        .split_once("your edits are kept in ")
        .unwrap_or_else(|| panic!("no kept file in: {stderr}"));
    let path = rest
        .split(|c: char| c == ';' || c.is_whitespace())
        .next()
        .unwrap();
    std::path::PathBuf::from(path)
}

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

#[tokio::test]
async fn edit_apps_and_devices() {
    let t = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    login_admin(&t, d).await;
    ok(d, &["app", "create", "app1", "--label", "env=dev"]).await;
    let before = ok(d, &["app", "get", "app1", "-o", "json"]).await.json();

    // A real edit: the label changes, the resourceVersion moves.
    let ed = editor(d, "prod.sh", "sed -i 's/env: dev/env: prod/' \"$1\"\n");
    let o = drover_env(d, &["app", "edit", "app1"], &[("EDITOR", &ed)]).await;
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
    assert_eq!(o.stdout.trim(), "app app1 edited");
    let after = ok(d, &["app", "get", "app1", "-o", "json"]).await.json();
    assert_eq!(after["metadata"]["labels"]["env"], "prod");
    assert!(version(&after) > version(&before));

    // $VISUAL when $EDITOR is not set; an unchanged file sends nothing.
    let o = drover_env(d, &["app", "edit", "app1"], &[("VISUAL", "true")]).await;
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
    assert_eq!(o.stdout.trim(), "app app1: no changes");
    let same = ok(d, &["app", "get", "app1", "-o", "json"]).await.json();
    assert_eq!(version(&same), version(&after));
    // A change that only touches a comment is no change either.
    let ed = editor(d, "comment.sh", "sed -i 's/^# Edit/# edit/' \"$1\"\n");
    let o = drover_env(d, &["app", "edit", "app1"], &[("EDITOR", &ed)]).await;
    assert_eq!(o.stdout.trim(), "app app1: no changes", "{}", o.stderr);

    // Someone else changes the app while the editor is open: exit 4, nothing of ours applied,
    // their change kept, our edits kept in the file.
    let ed = editor(
        d,
        "race.sh",
        "\"$DROVER_BIN\" app label app1 touched=yes >/dev/null || exit 9\n\
         sed -i 's/env: prod/env: lost/' \"$1\"\n",
    );
    let o = drover_env(
        d,
        &["app", "edit", "app1"],
        &[
            ("EDITOR", &ed),
            ("DROVER_BIN", env!("CARGO_BIN_EXE_drover")),
        ],
    )
    .await;
    assert_eq!(o.code, 4, "{}{}", o.stdout, o.stderr);
    assert!(
        o.stderr
            .starts_with("error: app app1 was changed by someone else"),
        "{}",
        o.stderr
    );
    assert!(
        o.stderr.contains("409") && o.stderr.contains("drover app edit app1"),
        "{}",
        o.stderr
    );
    assert_eq!(o.stderr.trim_end().lines().count(), 1, "{}", o.stderr);
    let kept = kept_file(&o.stderr);
    assert!(std::fs::read_to_string(&kept)
        .unwrap()
        .contains("env: lost"));
    std::fs::remove_file(kept).unwrap();
    let now = ok(d, &["app", "get", "app1", "-o", "json"]).await.json();
    assert_eq!(now["metadata"]["labels"]["env"], "prod");
    assert_eq!(now["metadata"]["labels"]["touched"], "yes");

    // Invalid YAML: exit 1, nothing sent.
    let ed = editor(d, "broken.sh", "printf 'metadata: [\\n' > \"$1\"\n");
    let o = fails_env(d, &["app", "edit", "app1"], &[("EDITOR", &ed)], 1).await;
    assert!(o.stderr.contains("not valid YAML"), "{}", o.stderr);
    std::fs::remove_file(kept_file(&o.stderr)).unwrap();
    // The editor fails: nothing sent.
    let o = fails_env(d, &["app", "edit", "app1"], &[("EDITOR", "false")], 1).await;
    assert!(o.stderr.contains("editor"), "{}", o.stderr);
    std::fs::remove_file(kept_file(&o.stderr)).unwrap();
    assert_eq!(
        version(&ok(d, &["app", "get", "app1", "-o", "json"]).await.json()),
        version(&now)
    );
    fails_env(d, &["app", "edit", "nope"], &[("EDITOR", "true")], 3).await;

    // Devices: an edit with -o json prints the stored device.
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
    let ed = editor(
        d,
        "kind.sh",
        "sed -i 's/kind: sensor/kind: probe/' \"$1\"\n",
    );
    let o = drover_env(
        d,
        &["device", "edit", "dev1", "--app", "app1", "-o", "json"],
        &[("EDITOR", &ed)],
    )
    .await;
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
    assert_eq!(o.json()["metadata"]["labels"]["kind"], "probe");
    // A document the server refuses (400): its message, exit 1.
    let ed = editor(
        d,
        "invalid.sh",
        "printf 'metadata:\\n  name: dev1\\nspec:\\n  core:\\n    disabled: maybe\\n' > \"$1\"\n",
    );
    let o = fails_env(
        d,
        &["device", "edit", "dev1", "--app", "app1"],
        &[("EDITOR", &ed)],
        1,
    )
    .await;
    assert!(
        o.stderr.contains("refused") && o.stderr.contains("spec.core") && o.stderr.contains("400"),
        "{}",
        o.stderr
    );
    std::fs::remove_file(kept_file(&o.stderr)).unwrap();
    let dev = ok(d, &["device", "get", "dev1", "--app", "app1", "-o", "json"])
        .await
        .json();
    assert_eq!(dev["metadata"]["labels"]["kind"], "probe");
    fails_env(
        d,
        &["device", "edit", "nope", "--app", "app1"],
        &[("EDITOR", "true")],
        3,
    )
    .await;
}

async fn fails_env(dir: &Path, args: &[&str], env: &[(&str, &str)], code: i32) -> Out {
    let o = drover_env(dir, args, env).await;
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

struct Ca {
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
}

fn ca(name: &str) -> Ca {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name.push(DnType::CommonName, name);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ca {
        cert: p.self_signed(&key).unwrap(),
        key,
    }
}

/// A client certificate `CN=<cn>, O=Devices` by `ca`, as PEM: certificate, then key.
fn client_pem(ca: &Ca, cn: &str) -> String {
    use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyPair};
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name.push(DnType::CommonName, cn);
    p.distinguished_name
        .push(DnType::OrganizationName, "Devices");
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let cert = p.signed_by(&key, &ca.cert, &ca.key).unwrap();
    format!("{}{}", cert.pem(), key.serialize_pem())
}

/// Publishes over HTTPS with a client certificate; the status.
async fn publish_with_cert(t: &TestServer, identity_pem: &str) -> StatusCode {
    let dev_ca = std::fs::read(t.data_dir.join("tls/ca.pem")).unwrap();
    let client = reqwest::Client::builder()
        .use_rustls_tls()
        .add_root_certificate(reqwest::Certificate::from_pem(&dev_ca).unwrap())
        .identity(reqwest::Identity::from_pem(identity_pem.as_bytes()).unwrap())
        .build()
        .unwrap();
    let port = t.server.as_ref().unwrap().https_addr.unwrap().port();
    client
        .post(format!("https://localhost:{port}/v1/telemetry"))
        .body("{}")
        .send()
        .await
        .unwrap()
        .status()
}

#[tokio::test]
async fn trust_anchors_and_device_certificates() {
    let t = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    login_admin(&t, d).await;
    let device_ca = ca("Device CA");
    let ca_pem = d.join("ca.pem");
    std::fs::write(&ca_pem, device_ca.cert.pem()).unwrap();
    let ca_file = ca_pem.to_str().unwrap();
    // The device's certificate names another CN than the device: only its subject DN finds it.
    let identity = client_pem(&device_ca, "sensor-x");
    let dev_pem = d.join("dev1.pem");
    std::fs::write(&dev_pem, &identity).unwrap();
    let dev_file = dev_pem.to_str().unwrap();

    ok(d, &["app", "create", "certs"]).await;
    ok(d, &["device", "create", "dev1", "--app", "certs"]).await;
    ok(
        d,
        &[
            "device", "set", "alias", "dev1", "serial-1", "--app", "certs",
        ],
    )
    .await;

    // A CA file with a private key is refused; a file without a certificate too.
    let with_key = d.join("ca-and-key.pem");
    std::fs::write(
        &with_key,
        format!("{}{}", device_ca.cert.pem(), device_ca.key.serialize_pem()),
    )
    .unwrap();
    let o = fails(
        d,
        &[
            "app",
            "set",
            "trust-anchor",
            "certs",
            "--file",
            with_key.to_str().unwrap(),
        ],
        1,
    )
    .await;
    assert!(o.stderr.contains("private key"), "{}", o.stderr);
    let empty = d.join("empty.pem");
    std::fs::write(&empty, "nothing here\n").unwrap();
    fails(
        d,
        &[
            "app",
            "set",
            "trust-anchor",
            "certs",
            "-f",
            empty.to_str().unwrap(),
        ],
        1,
    )
    .await;
    assert_eq!(
        drover(d, &["app", "set", "trust-anchor", "certs"])
            .await
            .code,
        2
    );

    let o = ok(
        d,
        &["app", "set", "trust-anchor", "certs", "--file", ca_file],
    )
    .await;
    assert!(
        o.stdout
            .starts_with("app certs: trust anchors set\nSUBJECT"),
        "{}",
        o.stdout
    );
    assert!(
        o.stdout
            .lines()
            .any(|l| l.starts_with("CN=Device CA") && l.ends_with("valid")),
        "{}",
        o.stdout
    );
    // --add keeps the existing anchor, the same one twice is kept once.
    let other_ca = ca("Other CA");
    let other_pem = d.join("other.pem");
    std::fs::write(&other_pem, other_ca.cert.pem()).unwrap();
    let app = ok(
        d,
        &[
            "app",
            "set",
            "trust-anchor",
            "certs",
            "--file",
            other_pem.to_str().unwrap(),
            "-f",
            ca_file,
            "--add",
            "-o",
            "json",
        ],
    )
    .await
    .json();
    let anchors = app["status"]["trustAnchors"]["anchors"].as_array().unwrap();
    let subjects: Vec<&str> = anchors
        .iter()
        .map(|a| a["valid"]["subject"].as_str().unwrap())
        .collect();
    assert_eq!(subjects, ["CN=Device CA", "CN=Other CA"]);

    // Before: the device cannot authenticate with its certificate (CN sensor-x is no device).
    assert_eq!(
        publish_with_cert(&t, &identity).await,
        StatusCode::FORBIDDEN
    );
    let o = ok(
        d,
        &[
            "device", "set", "cert", "dev1", "--app", "certs", "--file", dev_file,
        ],
    )
    .await;
    assert_eq!(
        o.stdout,
        "device dev1: known by certificate subject\n  CN=sensor-x, O=Devices\n"
    );
    assert!(o.stderr.is_empty(), "{}", o.stderr);
    assert_eq!(publish_with_cert(&t, &identity).await, StatusCode::ACCEPTED);
    let dev = ok(
        d,
        &["device", "get", "dev1", "--app", "certs", "-o", "json"],
    )
    .await
    .json();
    assert_eq!(
        dev["spec"]["alias"],
        serde_json::json!(["serial-1", "CN=sensor-x, O=Devices"])
    );

    // Setting another subject replaces the old one, other aliases stay.
    let dev = ok(
        d,
        &[
            "device",
            "set",
            "cert",
            "dev1",
            "--app",
            "certs",
            "--subject",
            "CN=next, O=Devices",
            "-o",
            "json",
        ],
    )
    .await
    .json();
    assert_eq!(
        dev["spec"]["alias"],
        serde_json::json!(["serial-1", "CN=next, O=Devices"])
    );
    assert_eq!(
        publish_with_cert(&t, &identity).await,
        StatusCode::FORBIDDEN
    );

    // A certificate from a CA the app does not trust: set, with a note saying why it will fail.
    let stranger = ca("Stranger CA");
    let foreign = d.join("foreign.pem");
    std::fs::write(&foreign, client_pem(&stranger, "dev1")).unwrap();
    let o = ok(
        d,
        &[
            "device",
            "set",
            "cert",
            "dev1",
            "--app",
            "certs",
            "-f",
            foreign.to_str().unwrap(),
        ],
    )
    .await;
    assert!(
        o.stderr
            .starts_with("note: app certs has no trust anchor with subject \"CN=Stranger CA\""),
        "{}",
        o.stderr
    );

    // Usage and not found.
    fails(
        d,
        &[
            "device",
            "set",
            "cert",
            "dev1",
            "--app",
            "certs",
            "--subject",
            "dev1",
        ],
        2,
    )
    .await;
    assert_eq!(
        drover(d, &["device", "set", "cert", "dev1", "--app", "certs"])
            .await
            .code,
        2
    );
    fails(
        d,
        &[
            "device", "set", "cert", "nope", "--app", "certs", "-f", dev_file,
        ],
        3,
    )
    .await;
    fails(d, &["app", "set", "trust-anchor", "nope", "-f", ca_file], 3).await;

    // Clearing.
    let o = ok(
        d,
        &["device", "set", "cert", "dev1", "--app", "certs", "--clear"],
    )
    .await;
    assert_eq!(o.stdout.trim(), "device dev1: certificate subjects cleared");
    let dev = ok(
        d,
        &["device", "get", "dev1", "--app", "certs", "-o", "json"],
    )
    .await
    .json();
    assert_eq!(dev["spec"]["alias"], serde_json::json!(["serial-1"]));
    let o = ok(d, &["app", "set", "trust-anchor", "certs", "--clear"]).await;
    assert_eq!(o.stdout.trim(), "app certs: no trust anchors");
    let app = ok(d, &["app", "get", "certs", "-o", "json"]).await.json();
    assert!(app["spec"].get("trustAnchors").is_none(), "{app}");
}

/// A running `drover stream`: started, and connected once it said so on stderr.
struct Streaming {
    child: tokio::process::Child,
    stderr: tokio::task::JoinHandle<String>,
}

async fn start_stream(dir: &Path, args: &[&str]) -> Streaming {
    use tokio::io::AsyncBufReadExt as _;
    let mut c = command(dir, args);
    c.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = c.spawn().unwrap();
    let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let first = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .unwrap_or_else(|_| panic!("drover {args:?} did not connect in time"))
        .unwrap()
        .unwrap_or_default();
    assert!(
        first.starts_with("Streaming events of app"),
        "drover {args:?}: {first}"
    );
    let stderr = tokio::spawn(async move {
        let mut rest = first;
        while let Ok(Some(l)) = lines.next_line().await {
            rest.push('\n');
            rest.push_str(&l);
        }
        rest
    });
    Streaming { child, stderr }
}

impl Streaming {
    /// Waits (with a deadline) for the command to exit by itself.
    async fn finish(self) -> Out {
        let out = tokio::time::timeout(Duration::from_secs(30), self.child.wait_with_output())
            .await
            .expect("drover stream did not exit")
            .unwrap();
        Out {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: self.stderr.await.unwrap(),
        }
    }
}

async fn publish(t: &TestServer, device: &str, channel: &str, body: &str) {
    let r = t
        .http
        .post(format!("{}/v1/{channel}", t.http_base))
        .basic_auth(format!("{device}@app"), Some("pw"))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
}

#[tokio::test]
async fn stream_prints_live_telemetry() {
    let t = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    login_admin(&t, d).await;
    ok(d, &["app", "create", "app"]).await;
    for dev in ["dev1", "dev2"] {
        ok(
            d,
            &["device", "create", dev, "--app", "app", "--password", "pw"],
        )
        .await;
    }

    // Pretty, one device, one event: the other device's event is skipped, then it exits 0.
    let s = start_stream(d, &["stream", "app", "--device", "dev1", "--count", "1"]).await;
    publish(&t, "dev2", "telemetry", r#"{"temp": 1}"#).await;
    publish(&t, "dev1", "telemetry", r#"{"temp": 20}"#).await;
    let o = s.finish().await;
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
    let lines: Vec<&str> = o.stdout.lines().collect();
    assert_eq!(lines.len(), 1, "{}", o.stdout);
    let cols: Vec<&str> = lines[0].split("  ").collect();
    assert_eq!(
        cols[1..],
        ["dev1", "telemetry", r#"{"temp":20}"#],
        "{}",
        lines[0]
    );
    assert!(
        chrono::DateTime::parse_from_rfc3339(cols[0]).is_ok(),
        "{}",
        lines[0]
    );

    // Raw JSON lines of one channel.
    let s = start_stream(
        d,
        &[
            "stream",
            "app",
            "--channel",
            "telemetry",
            "-n",
            "2",
            "--raw",
        ],
    )
    .await;
    publish(&t, "dev1", "status", r#"{"ok": true}"#).await;
    publish(&t, "dev1", "telemetry", r#"{"temp": 21}"#).await;
    publish(&t, "dev2", "telemetry", r#"{"temp": 22}"#).await;
    let o = s.finish().await;
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
    let events: Vec<Value> = o
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events.len(), 2, "{}", o.stdout);
    assert_eq!(events[0]["device"], "dev1");
    assert_eq!(events[0]["subject"], "telemetry");
    assert_eq!(events[0]["data"]["temp"], 21);
    assert_eq!(events[1]["device"], "dev2");
    assert_eq!(events[0]["type"], "io.drogue.event.v1");

    // A consumer group resumes where it stopped: what came while it was away, from the start.
    let s = start_stream(
        d,
        &[
            "stream", "app", "--group", "g1", "--count", "1", "-o", "json",
        ],
    )
    .await;
    publish(&t, "dev1", "telemetry", r#"{"n": 1}"#).await;
    assert_eq!(s.finish().await.code, 0);
    publish(&t, "dev1", "telemetry", r#"{"n": 2}"#).await;
    let o = ok(
        d,
        &[
            "stream", "app", "--group", "g1", "--count", "1", "-o", "json",
        ],
    )
    .await;
    let ev: Value = serde_json::from_str(o.stdout.trim()).unwrap();
    assert_eq!(ev["data"]["n"], 2);

    // Unknown app: 3. A user who cannot authenticate: 1, with the server's 401.
    let o = fails(d, &["stream", "nope", "--count", "1"], 3).await;
    assert!(o.stderr.contains("404"), "{}", o.stderr);
    let bob = t.user("bob").await;
    let (_, token) = bob.user.clone().unwrap();
    let creds = format!("bob:{token}");
    ok(d, &["login", &t.base, "--token", &creds, "--name", "bob"]).await;
    fails(d, &["stream", "app", "--count", "1"], 3).await; // bob may not read it
    ok(d, &["user", "delete", "bob", "--context", "local"]).await;
    let o = fails(d, &["stream", "app", "--count", "1"], 1).await;
    assert!(o.stderr.contains("401"), "{}", o.stderr);
}

#[tokio::test]
async fn completions_and_examples_in_every_help() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for shell in ["bash", "zsh", "fish"] {
        let o = ok(d, &["completions", shell]).await;
        assert!(o.stdout.len() > 1000, "{shell}: {}", o.stdout);
        for word in ["stream", "member", "transfer", "trust-anchor"] {
            assert!(o.stdout.contains(word), "{shell} completions lack {word}");
        }
    }
    assert_eq!(drover(d, &["completions", "tcsh"]).await.code, 2);

    // Walk every command from the top: each one's --help shows examples.
    let mut todo: Vec<Vec<String>> = vec![vec![]];
    let mut seen = 0;
    while let Some(path) = todo.pop() {
        let mut args: Vec<&str> = path.iter().map(String::as_str).collect();
        args.push("--help");
        let o = ok(d, &args).await;
        assert!(
            o.stdout.contains("Example"),
            "drover {args:?} has no examples:\n{}",
            o.stdout
        );
        seen += 1;
        let mut in_commands = false;
        for line in o.stdout.lines() {
            if line == "Commands:" {
                in_commands = true;
            } else if in_commands {
                let Some(name) = line
                    .strip_prefix("  ")
                    .and_then(|l| l.split_whitespace().next())
                else {
                    break;
                };
                if name != "help" {
                    let mut sub = path.clone();
                    sub.push(name.to_string());
                    todo.push(sub);
                }
            }
        }
    }
    assert!(seen > 40, "only {seen} commands");
}

#[tokio::test]
async fn watch_prints_registry_changes() {
    let t = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    login_admin(&t, dir.path()).await;
    ok(dir.path(), &["app", "create", "w1"]).await;
    ok(dir.path(), &["app", "create", "w2"]).await;
    ok(
        dir.path(),
        &["device", "create", "d1", "--app", "w1", "--password", "pw"],
    )
    .await;
    // From the start of the feed, only w1's changes: its creation, then the device's.
    let o = ok(
        dir.path(),
        &[
            "watch", "--since", "0", "--app", "w1", "--count", "2", "-o", "json",
        ],
    )
    .await;
    let events: Vec<Value> = o
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events.len(), 2, "{}", o.stdout);
    assert_eq!(events[0]["type"], "io.drogue.registry.change.application");
    assert_eq!(events[0]["application"], "w1");
    assert_eq!(events[1]["type"], "io.drogue.registry.change.device");
    assert_eq!(events[1]["device"], "d1");
    let o = ok(dir.path(), &["watch", "--since", "0", "--count", "1"]).await;
    assert!(
        o.stdout.contains("app") && o.stdout.contains("w1"),
        "{}",
        o.stdout
    );
    fails(dir.path(), &["watch", "--app", "nope", "--count", "1"], 3).await;
}
