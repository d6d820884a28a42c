//! The settings table, layering, checks and what `--print-config` shows.
#![allow(clippy::unwrap_used)]
use super::*;

#[test]
fn defaults_read_and_names_follow_the_keys() {
    let c = Config::default();
    assert_eq!(c.api_addr.to_string(), "0.0.0.0:8011");
    assert_eq!(c.mqtt_max_subscriptions, 100);
    let s = SETTINGS
        .iter()
        .find(|s| s.key == "oidc.issuer_url")
        .unwrap();
    assert_eq!(s.flag(), "--oidc-issuer-url");
    assert_eq!(s.env(), "DROVER_OIDC_ISSUER_URL");
    assert!(SETTINGS.iter().any(|s| s.key == "admin_token" && s.secret));
    assert!(!SETTINGS.iter().any(|s| s.key == "data_dir" && s.secret));
    let mut keys: Vec<_> = SETTINGS.iter().map(|s| s.key).collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), SETTINGS.len(), "keys are unique");
}

#[test]
fn layering_and_validation() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("c.toml");
    std::fs::write(&f, "api_addr = \"127.0.0.1:9000\"\ndata_dir = \"/x\"\nhttp_addr = \"off\"\n[oidc]\nissuer_url = \"https://sso.example.com/realms/r/\"\n").unwrap();
    let mut args = ServeArgs::from_pairs([("data_dir", "/y")]);
    args.config = Some(f.clone());
    let c = Config::load(args).unwrap();
    assert_eq!(c.api_addr.to_string(), "127.0.0.1:9000");
    assert_eq!(c.data_dir, PathBuf::from("/y"));
    assert_eq!(c.http_addr, None);
    assert_eq!(
        c.oidc().unwrap().issuer_url,
        "https://sso.example.com/realms/r"
    );

    let e = Config::load(ServeArgs::from_pairs([("api_addr", "nope")])).unwrap_err();
    assert!(e.0.contains("--api-addr / DROVER_API_ADDR"), "{e}");
    let e = Config::load(ServeArgs::from_pairs([("http_body_limit", "abc")])).unwrap_err();
    assert!(
        e.0.starts_with("invalid http_body_limit 'abc': expected a whole number"),
        "{e}"
    );
    std::fs::write(&f, "api_adr = \"x\"\n").unwrap();
    let args = ServeArgs {
        config: Some(f.clone()),
        ..Default::default()
    };
    let e = Config::load(args).unwrap_err();
    assert!(e.0.contains("unknown setting 'api_adr'"), "{e}");
    std::fs::write(&f, "http_body_limit = 0\n").unwrap();
    let args = ServeArgs {
        config: Some(f),
        ..Default::default()
    };
    let e = Config::load(args).unwrap_err();
    assert!(
        e.0.contains("http_body_limit '0': must be at least 1"),
        "{e}"
    );
    let e = Config::load(ServeArgs::from_pairs([("admin_token", "short")])).unwrap_err();
    assert!(e.0.contains("admin_token '<redacted>'"), "{e}");
    assert!(!e.0.contains("short"), "{e}");
    let e = Config::load(ServeArgs::from_pairs([("tls_cert", "/c.pem")])).unwrap_err();
    assert!(e.0.contains("tls_cert and tls_key go together"), "{e}");
}

#[test]
fn print_config_redacts() {
    let c = Config {
        admin_token: Some("supersecretsupersecret".into()),
        ..Default::default()
    };
    let t = c.to_toml();
    assert!(t.contains("admin_token = \"<redacted>\""), "{t}");
    assert!(t.contains("http_addr = \"0.0.0.0:8088\""), "{t}");
    assert!(!t.contains("supersecret"));
    assert!(!format!("{c:?}").contains("supersecret"));
    let c = Config {
        database_url: Some("postgres://drover:hunter2hunter2@db:5432/drover".into()),
        nats_url: Some("nats://user:natspassword@nats:4222".into()),
        oidc_issuer_url: Some("https://sso.example.com".into()),
        ..Default::default()
    };
    let t = c.to_toml();
    assert!(t.contains("postgres://drover:***@db:5432/drover"), "{t}");
    assert!(
        t.contains("[oidc]\nissuer_url = \"https://sso.example.com\""),
        "{t}"
    );
    assert!(!t.contains("hunter2") && !t.contains("natspassword"), "{t}");
    assert!(!format!("{c:?}").contains("hunter2"));
    // What --print-config prints reads back as the same configuration.
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("printed.toml");
    let c = Config {
        http_addr: None,
        ..Default::default()
    };
    std::fs::write(&f, c.to_toml()).unwrap();
    let args = ServeArgs {
        config: Some(f),
        ..Default::default()
    };
    assert_eq!(Config::load(args).unwrap(), c);
}

#[test]
fn outbound_allow_list() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("c.toml");
    std::fs::write(&f, "outbound_allow = [\"10.0.0.0/8\", \"lns.internal\"]\n").unwrap();
    let load = |flag: Option<&str>| {
        let mut args = ServeArgs::from_pairs(flag.map(|v| ("outbound_allow", v)));
        args.config = Some(f.clone());
        Config::load(args)
    };
    let shown = |c: &Config| {
        c.outbound_allow
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
    };
    assert_eq!(shown(&load(None).unwrap()), ["10.0.0.0/8", "lns.internal"]);
    assert!(load(None)
        .unwrap()
        .to_toml()
        .contains("outbound_allow = [\"10.0.0.0/8\", \"lns.internal\"]"));
    // The flag replaces the file's list; empty means none.
    assert_eq!(
        shown(&load(Some("127.0.0.1, ::1")).unwrap()),
        ["127.0.0.1/32", "::1/128"]
    );
    assert!(load(Some("")).unwrap().outbound_allow.is_empty());
    let e = load(Some("127.0.0.1,10.0.0.0/33")).unwrap_err();
    assert!(e.0.contains("'10.0.0.0/33'"), "{e}");
    assert!(
        e.0.contains("--outbound-allow / DROVER_OUTBOUND_ALLOW"),
        "{e}"
    );
    // One string in the file, like the flag.
    std::fs::write(&f, "outbound_allow = \"192.168.0.0/16,bad host\"\n").unwrap();
    let e = load(None).unwrap_err();
    assert!(e.0.contains("'bad host'"), "{e}");
    assert!(Config::default().outbound_allow.is_empty());
}

#[test]
fn cluster_settings_are_checked() {
    let e = Config::load(ServeArgs::from_pairs([("database_url", "mysql://x@y/z")])).unwrap_err();
    assert!(e.0.contains("--database-url / DROVER_DATABASE_URL"), "{e}");
    let e = Config::load(ServeArgs::from_pairs([("nats_url", "http://nats:4222")])).unwrap_err();
    assert!(e.0.contains("--nats-url / DROVER_NATS_URL"), "{e}");
    let e = Config::load(ServeArgs::from_pairs([("nats_prefix", "Bad.Prefix")])).unwrap_err();
    assert!(e.0.contains("nats_prefix"), "{e}");
    let c = Config::load(ServeArgs::from_pairs([
        ("database_url", "postgres://postgres@127.0.0.1/test"),
        ("database_schema", "drover_a"),
        ("nats_url", "nats://127.0.0.1:4222"),
    ]))
    .unwrap();
    assert_eq!(c.nats_prefix, "drover");
    assert_eq!(c.database_schema.as_deref(), Some("drover_a"));
}

#[test]
fn host_names_for_the_development_certificate() {
    let c = Config::load(ServeArgs::from_pairs([
        ("public_hosts", "drover.example.com, 10.0.0.5"),
        ("hub_domain", "iot.example.com"),
    ]))
    .unwrap();
    assert_eq!(c.public_hosts.0, ["drover.example.com", "10.0.0.5"]);
    assert_eq!(c.hub_domain.as_deref(), Some("iot.example.com"));
    let e = Config::load(ServeArgs::from_pairs([(
        "public_hosts",
        "ok.example.com,bad host",
    )]))
    .unwrap_err();
    assert!(
        e.0.contains("'bad host' is neither a DNS host name nor an IP address"),
        "{e}"
    );
    let e = Config::load(ServeArgs::from_pairs([("hub_domain", "*.iot.example.com")])).unwrap_err();
    assert!(e.0.contains("--hub-domain / DROVER_HUB_DOMAIN"), "{e}");
}

/// `DROVER_BLESS=1 cargo test -p drover --lib the_deployment` rewrites the table.
#[test]
fn the_deployment_guide_lists_every_setting() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/deployment.md");
    let doc = std::fs::read_to_string(path).unwrap();
    let begin = "<!-- settings:begin (generated from crates/drover/src/config.rs) -->\n";
    let end = "<!-- settings:end -->";
    let (Some(start), Some(stop)) = (doc.find(begin).map(|i| i + begin.len()), doc.find(end))
    else {
        panic!("docs/deployment.md lacks the settings markers {begin:?} … {end:?}");
    };
    let table = Config::markdown();
    if doc[start..stop] != table {
        if std::env::var_os("DROVER_BLESS").is_some() {
            let fixed = format!("{}{table}{}", &doc[..start], &doc[stop..]);
            std::fs::write(path, fixed).unwrap();
            return;
        }
        panic!("docs/deployment.md's settings table is out of date: run DROVER_BLESS=1 cargo test -p drover --lib the_deployment");
    }
}
