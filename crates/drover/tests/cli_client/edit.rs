//! `drover edit` of applications and devices through `EDITOR`.

use std::path::Path;

use crate::common::TestServer;
use crate::helpers::{drover_env, login_admin, ok, Out};
use serde_json::Value;

/// Writes an editor script into `dir` and returns the `EDITOR` value that runs it.
fn editor(dir: &Path, name: &str, script: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, script).unwrap();
    format!("sh {}", path.display())
}

pub(crate) fn version(v: &Value) -> u64 {
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
