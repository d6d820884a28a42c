//! Long-running output: `drover stream` (live telemetry) and `drover watch` (registry changes).

use std::path::Path;
use std::time::Duration;

use crate::common::TestServer;
use crate::helpers::{command, fails, login_admin, ok, Out};
use reqwest::StatusCode;
use serde_json::Value;

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

pub(crate) async fn publish(t: &TestServer, device: &str, channel: &str, body: &str) {
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
