//! Configuration layering (file, then environment, then flags), defaults and redaction, as
//! `--print-config` shows it.

use crate::helpers::{drover, print_config, run, EXIT_CONFIG};

#[test]
fn print_config_shows_defaults() {
    let (r, c) = print_config(|_| {});
    assert!(
        r.stdout.contains("api_addr = \"0.0.0.0:8011\""),
        "{}",
        r.stdout
    );
    assert_eq!(c["api_addr"].as_str(), Some("0.0.0.0:8011"));
    assert_eq!(c["data_dir"].as_str(), Some("./drover-data"));
    assert!(
        c.get("admin_token")
            .is_none_or(|v| v.as_str() != Some("<redacted>")),
        "{}",
        r.stdout
    );
}

#[test]
fn print_config_redacts_the_admin_token() {
    let secret = "s3cr3t-s3cr3t-s3cr3t";
    let (r, c) = print_config(|cmd| {
        cmd.args(["--admin-token", secret]);
    });
    assert_eq!(
        c["admin_token"].as_str(),
        Some("<redacted>"),
        "{}",
        r.stdout
    );
    assert!(!r.stdout.contains("s3cr3t"), "{}", r.stdout);
    assert!(!r.stderr.contains("s3cr3t"), "{}", r.stderr);

    let (r, c) = print_config(|cmd| {
        cmd.env("DROVER_ADMIN_TOKEN", secret);
    });
    assert_eq!(
        c["admin_token"].as_str(),
        Some("<redacted>"),
        "{}",
        r.stdout
    );
    assert!(!r.stdout.contains("s3cr3t"), "{}", r.stdout);
}

#[test]
fn file_then_environment_then_flags() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("drover.toml");
    std::fs::write(
        &file,
        "api_addr = \"127.0.0.1:9001\"\ndata_dir = \"/srv/drover\"\n",
    )
    .unwrap();

    let (_, c) = print_config(|cmd| {
        cmd.arg("--config").arg(&file);
    });
    assert_eq!(c["api_addr"].as_str(), Some("127.0.0.1:9001"));
    assert_eq!(c["data_dir"].as_str(), Some("/srv/drover"));

    let (_, c) = print_config(|cmd| {
        cmd.arg("--config")
            .arg(&file)
            .env("DROVER_API_ADDR", "127.0.0.1:9002");
    });
    assert_eq!(
        c["api_addr"].as_str(),
        Some("127.0.0.1:9002"),
        "environment overrides the file"
    );
    assert_eq!(
        c["data_dir"].as_str(),
        Some("/srv/drover"),
        "the rest of the file stays"
    );

    let (_, c) = print_config(|cmd| {
        cmd.arg("--config")
            .arg(&file)
            .env("DROVER_API_ADDR", "127.0.0.1:9002")
            .args(["--api-addr", "127.0.0.1:9003"]);
    });
    assert_eq!(
        c["api_addr"].as_str(),
        Some("127.0.0.1:9003"),
        "the flag overrides the environment"
    );

    // The configuration file can also come from the environment.
    let (_, c) = print_config(|cmd| {
        cmd.env("DROVER_CONFIG", &file);
    });
    assert_eq!(c["api_addr"].as_str(), Some("127.0.0.1:9001"));
}

#[test]
fn outbound_allow_list_is_printed_and_checked() {
    let (r, c) = print_config(|cmd| {
        cmd.env(
            "DROVER_OUTBOUND_ALLOW",
            "10.20.0.0/16, lns.internal,127.0.0.1",
        );
    });
    let list: Vec<&str> = c["outbound_allow"]
        .as_array()
        .unwrap_or_else(|| panic!("{}", r.stdout))
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(list, ["10.20.0.0/16", "lns.internal", "127.0.0.1/32"]);
    // The flag replaces the environment's list; empty is none.
    let (_, c) = print_config(|cmd| {
        cmd.env("DROVER_OUTBOUND_ALLOW", "10.20.0.0/16")
            .args(["--outbound-allow", ""]);
    });
    assert_eq!(c["outbound_allow"].as_array().map(Vec::len), Some(0));

    let dir = tempfile::tempdir().unwrap();
    let mut cmd = drover();
    cmd.args([
        "serve",
        "--outbound-allow",
        "10.0.0.0/8,10.0.0.0/33",
        "--data-dir",
    ])
    .arg(dir.path());
    let r = run(cmd);
    assert_eq!(r.code, Some(EXIT_CONFIG), "stderr: {}", r.stderr);
    let lines = r.stderr_lines();
    assert_eq!(lines.len(), 1, "one line on stderr: {lines:?}");
    assert!(lines[0].contains("'10.0.0.0/33'"), "{}", lines[0]);
    assert!(lines[0].contains("--outbound-allow"), "{}", lines[0]);
}

#[test]
fn listener_limits_have_defaults_layers_and_bounds() {
    let (r, c) = print_config(|_| {});
    for (key, default) in [
        ("http_header_timeout", "10s"),
        ("http_body_timeout", "30s"),
        ("http_idle_timeout", "1m"),
        ("mqtt_packet_timeout", "30s"),
    ] {
        assert_eq!(c[key].as_str(), Some(default), "{key}: {}", r.stdout);
    }
    for (key, default) in [
        ("http_max_connections", 10_000),
        ("api_max_connections", 1_000),
        ("mqtt_max_connections", 100_000),
        ("integration_max_connections", 1_000),
    ] {
        assert_eq!(c[key].as_integer(), Some(default), "{key}: {}", r.stdout);
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("drover.toml");
    std::fs::write(&file, "http_idle_timeout = 90\nhttp_body_timeout = 20\n").unwrap();
    let (_, c) = print_config(|cmd| {
        cmd.arg("--config")
            .arg(&file)
            .env("DROVER_HTTP_IDLE_TIMEOUT", "120")
            .args(["--api-max-connections", "50"]);
    });
    assert_eq!(c["http_idle_timeout"].as_str(), Some("2m"));
    assert_eq!(c["http_body_timeout"].as_str(), Some("20s"));
    assert_eq!(c["api_max_connections"].as_integer(), Some(50));

    for (flag, value, key) in [
        ("--http-header-timeout", "0", "http_header_timeout"),
        ("--http-idle-timeout", "100000", "http_idle_timeout"),
        ("--http-max-connections", "0", "http_max_connections"),
        ("--mqtt-packet-timeout", "0", "mqtt_packet_timeout"),
    ] {
        let mut cmd = drover();
        cmd.args(["serve", flag, value, "--data-dir"])
            .arg(dir.path().join("data"));
        let r = run(cmd);
        assert_eq!(r.code, Some(EXIT_CONFIG), "{flag} {value}: {}", r.stderr);
        let lines = r.stderr_lines();
        assert_eq!(lines.len(), 1, "one line on stderr: {lines:?}");
        assert!(
            lines[0].contains(key) && lines[0].contains(flag),
            "{}",
            lines[0]
        );
    }
}
