//! Every output path of the `drover` binary ends quietly when its reader goes away
//! (`drover … | head`): exit 0, nothing on stderr but the command's own status line, no panic.
//! Rust ignores SIGPIPE, so a write to a closed pipe fails with EPIPE; the CLI must treat that
//! as the end of the command, as ripgrep does.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use common::{TestServer, ADMIN_TOKEN};
use reqwest::StatusCode;
use serde_json::json;
use tokio::io::AsyncReadExt as _;

/// The binary with its configuration in `dir` and no other `DROVER_*` settings.
fn command(dir: &Path, args: &[&str]) -> tokio::process::Command {
    let mut c = tokio::process::Command::new(env!("CARGO_BIN_EXE_drover"));
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy();
        if k.starts_with("DROVER_") {
            c.env_remove(&*k);
        }
    }
    c.env("DROVER_CONFIG_DIR", dir)
        .env("HOME", dir)
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    c
}

/// Waits (with a deadline) for the child to exit; its status and stderr.
async fn finish(child: tokio::process::Child, args: &[&str]) -> (ExitStatus, String) {
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("drover {args:?} did not end on a closed stdout"))
        .unwrap();
    (
        out.status,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs the command with a stdout whose reader closed before the command started, so its first
/// write fails with EPIPE whatever the output's size. Returns its stderr.
async fn into_closed_pipe(dir: &Path, args: &[&str]) -> String {
    let (writer, reader) = tokio::net::unix::pipe::pipe().unwrap();
    drop(reader);
    let child = command(dir, args)
        .stdout(writer.into_blocking_fd().unwrap())
        .spawn()
        .unwrap();
    let (status, stderr) = finish(child, args).await;
    assert!(
        !stderr.contains("panicked") && !stderr.contains("Broken pipe"),
        "drover {args:?}: {stderr}"
    );
    assert_eq!(status.code(), Some(0), "drover {args:?}: {stderr}");
    stderr
}

/// Runs the command to completion with stdout read; asserts it succeeds.
async fn ok(dir: &Path, args: &[&str]) -> String {
    let out = command(dir, args).output().await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "drover {args:?}: {stderr}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn completions_into_head() {
    // `drover completions bash | head -c 16`: the script (well over a pipe's 64 KiB) is cut off
    // after 16 bytes have been read.
    let dir = tempfile::tempdir().unwrap();
    let args = ["completions", "bash"];
    let mut child = command(dir.path(), &args)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut head = [0u8; 16];
    stdout.read_exact(&mut head).await.unwrap();
    drop(stdout);
    let (status, stderr) = finish(child, &args).await;
    assert_eq!(
        &head[..8],
        b"_drover(",
        "{}",
        String::from_utf8_lossy(&head)
    );
    assert_eq!(stderr, "");
    assert_eq!(status.code(), Some(0));

    // The same, and `serve --print-config`, when the reader is gone before anything is written.
    assert_eq!(into_closed_pipe(dir.path(), &args).await, "");
    let print_config = ["serve", "--print-config"];
    assert_eq!(into_closed_pipe(dir.path(), &print_config).await, "");
}

#[tokio::test]
async fn client_output_into_a_closed_pipe() {
    let t = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let token = format!("admin:{ADMIN_TOKEN}");
    ok(d, &["login", &t.base, "--token", &token, "--name", "local"]).await;
    // The fixture through the API; the CLI is what is under test below.
    let admin = t.admin();
    admin.create_app("app").await;
    let dev1 = json!({"metadata": {"name": "dev1"},
        "spec": {"authentication": {"credentials": [{"pass": "pw"}]}}});
    admin.create_device("app", dev1).await;
    let r = t
        .http
        .post(format!("{}/v1/telemetry", t.http_base))
        .basic_auth("dev1@app", Some("pw"))
        .body(r#"{"temp": 21}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);

    // Tables, JSON, YAML and one-line answers: nothing at all on stderr.
    for args in [
        &["context", "list"][..],
        &["whoami"],
        &["app", "list"],
        &["app", "list", "-o", "json"],
        &["app", "get", "app", "-o", "yaml"],
        &["device", "list", "--app", "app"],
        &["token", "list"],
        &["app", "label", "app", "tier=1"],
    ] {
        assert_eq!(into_closed_pipe(d, args).await, "", "drover {args:?}");
    }

    // Followers end at their first event instead of running on (no --count here): only their
    // status line is on stderr.
    for (args, status) in [
        (
            &["stream", "app", "--earliest"][..],
            "Streaming events of app app",
        ),
        (
            &["stream", "app", "--earliest", "-o", "yaml"],
            "Streaming events of app app",
        ),
        (&["watch", "--since", "0"], "Watching registry changes"),
    ] {
        let stderr = into_closed_pipe(d, args).await;
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "drover {args:?}: {stderr}");
        assert!(lines[0].starts_with(status), "drover {args:?}: {stderr}");
    }
}
