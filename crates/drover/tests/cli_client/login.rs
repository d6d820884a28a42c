//! `drover login`: contexts and `whoami`.

use crate::common::{TestServer, ADMIN_TOKEN};
use crate::helpers::{fails, login_admin, ok};

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
