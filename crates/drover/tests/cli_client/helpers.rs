//! Running the `drover` binary with its own configuration directory, and logging in.

use std::path::Path;
use std::time::Duration;

use crate::common::{TestServer, ADMIN_TOKEN};
use serde_json::Value;

pub(crate) struct Out {
    pub(crate) code: i32,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

impl Out {
    pub(crate) fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.stdout))
    }
}

/// The binary with `DROVER_CONFIG_DIR=dir` and no other `DROVER_*` settings.
pub(crate) fn command(dir: &Path, args: &[&str]) -> tokio::process::Command {
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
pub(crate) async fn drover(dir: &Path, args: &[&str]) -> Out {
    drover_env(dir, args, &[]).await
}

/// Runs the binary with extra environment variables.
pub(crate) async fn drover_env(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Out {
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
pub(crate) async fn ok(dir: &Path, args: &[&str]) -> Out {
    let o = drover(dir, args).await;
    assert_eq!(o.code, 0, "drover {args:?}: {}{}", o.stdout, o.stderr);
    o
}

pub(crate) async fn fails(dir: &Path, args: &[&str], code: i32) -> Out {
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

pub(crate) async fn login_admin(t: &TestServer, dir: &Path) {
    let token = format!("admin:{ADMIN_TOKEN}");
    ok(
        dir,
        &["login", &t.base, "--token", &token, "--name", "local"],
    )
    .await;
}
