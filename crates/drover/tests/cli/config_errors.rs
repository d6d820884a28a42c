//! Configuration problems exit 64 with one line saying what is wrong.

use std::net::TcpListener;

use crate::helpers::{drover, run, EXIT_CONFIG};

#[test]
fn invalid_api_addr_exits_64() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = drover();
    cmd.args(["serve", "--api-addr", "nope", "--data-dir"])
        .arg(dir.path());
    let r = run(cmd);
    assert_eq!(r.code, Some(EXIT_CONFIG), "stderr: {}", r.stderr);
    let lines = r.stderr_lines();
    assert_eq!(lines.len(), 1, "one line on stderr: {lines:?}");
    assert!(lines[0].contains("--api-addr"), "{}", lines[0]);
    assert!(lines[0].contains("nope"), "{}", lines[0]);
    assert!(r.stdout.is_empty(), "{}", r.stdout);

    // The same from the environment.
    let mut cmd = drover();
    cmd.args(["serve", "--data-dir"])
        .arg(dir.path())
        .env("DROVER_API_ADDR", "nope");
    let r = run(cmd);
    assert_eq!(r.code, Some(EXIT_CONFIG), "stderr: {}", r.stderr);
    assert_eq!(r.stderr_lines().len(), 1, "{}", r.stderr);
    assert!(r.stderr.contains("DROVER_API_ADDR"), "{}", r.stderr);
}

/// A value of the wrong type is a configuration problem like any other (exit 64, one line),
/// whether it comes from a flag, the environment or the file.
#[test]
fn numbers_that_are_not_numbers_exit_64() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("drover.toml");
    std::fs::write(&file, "http_body_limit = \"abc\"\n").unwrap();
    type Set<'a> = Box<dyn Fn(&mut std::process::Command) + 'a>;
    let variants: [(&str, Set<'_>); 3] = [
        (
            "flag",
            Box::new(|c| {
                c.args(["--http-body-limit", "abc"]);
            }),
        ),
        (
            "environment",
            Box::new(|c| {
                c.env("DROVER_HTTP_BODY_LIMIT", "abc");
            }),
        ),
        (
            "file",
            Box::new(|c| {
                c.arg("--config").arg(&file);
            }),
        ),
    ];
    for (source, set) in variants {
        let mut cmd = drover();
        cmd.args(["serve", "--data-dir"])
            .arg(dir.path().join("data"));
        set(&mut cmd);
        let r = run(cmd);
        assert_eq!(r.code, Some(EXIT_CONFIG), "{source}: {}", r.stderr);
        let lines = r.stderr_lines();
        assert_eq!(lines.len(), 1, "{source}: one line on stderr: {lines:?}");
        assert!(
            lines[0].contains("invalid http_body_limit 'abc'")
                && lines[0].contains("--http-body-limit / DROVER_HTTP_BODY_LIMIT"),
            "{source}: {}",
            lines[0]
        );
    }
}

#[test]
fn unknown_config_key_exits_64() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("drover.toml");
    std::fs::write(&file, "api_adr = \"127.0.0.1:9001\"\n").unwrap();
    let mut cmd = drover();
    cmd.arg("serve")
        .arg("--config")
        .arg(&file)
        .arg("--data-dir")
        .arg(dir.path().join("data"));
    let r = run(cmd);
    assert_eq!(r.code, Some(EXIT_CONFIG), "stderr: {}", r.stderr);
    let lines = r.stderr_lines();
    assert_eq!(lines.len(), 1, "one line on stderr: {lines:?}");
    assert!(lines[0].contains("api_adr"), "{}", lines[0]);
}

#[test]
fn weak_admin_token_exits_64() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = drover();
    cmd.args(["serve", "--admin-token", "short", "--data-dir"])
        .arg(dir.path());
    let r = run(cmd);
    assert_eq!(r.code, Some(EXIT_CONFIG), "stderr: {}", r.stderr);
    assert_eq!(r.stderr_lines().len(), 1, "{}", r.stderr);
    assert!(r.stderr.contains("--admin-token"), "{}", r.stderr);
    assert!(
        !r.stderr.contains("short"),
        "the rejected token is echoed: {}",
        r.stderr
    );
}

#[test]
fn port_in_use_exits_64() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = drover();
    cmd.args(["serve", "--api-addr", &addr, "--data-dir"])
        .arg(dir.path());
    let r = run(cmd);
    assert_eq!(
        r.code,
        Some(EXIT_CONFIG),
        "stdout: {}\nstderr: {}",
        r.stdout,
        r.stderr
    );
    let error = r
        .stderr_lines()
        .into_iter()
        .find(|l| l.contains("error"))
        .unwrap_or_else(|| panic!("{}", r.stderr));
    assert!(error.contains("--api-addr"), "{error}");
    assert!(error.contains(&addr), "{error}");
    drop(taken);
}
