//! `drover migrate` (the binary) from an embedded installation to PostgreSQL and NATS JetStream
//! (`DROVER_TEST_DATABASE_URL`, `DROVER_TEST_NATS_URL`; CI sets both): a node started on the
//! cluster settings serves the same resources (uids, resourceVersions, revision), accepts the old
//! access token and device password, replays the old events in order, and resumes the old group.
//! Each test has its own PostgreSQL schema and NATS prefix, removed at the end even on failure.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::{Command, Output};
use std::time::Duration;

use base64::Engine as _;
use common::backends::{backends, unique, Cleanup};
use common::{Client, TestServer};
use drover_bus::{EmbeddedLog, EventLog, LogConfig, StreamKey};
use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

const APPS: &str = "/api/registry/v1alpha1/apps";

fn basic(user: &str, pass: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
    )
}

async fn publish(t: &TestServer, user: &str, pass: &str, path: &str, body: &str) -> StatusCode {
    reqwest::Client::new()
        .post(format!("{}{path}", t.http_base))
        .header("authorization", basic(user, pass))
        .body(body.to_string())
        .send()
        .await
        .unwrap()
        .status()
}

async fn ws_connect(t: &TestServer, app_and_query: &str) -> Ws {
    let mut req = t.ws_url(app_and_query).into_client_request().unwrap();
    req.headers_mut().insert(
        "authorization",
        basic("admin", common::ADMIN_TOKEN).parse().unwrap(),
    );
    let (ws, resp) = tokio_tungstenite::connect_async(req).await.unwrap();
    assert_eq!(resp.status(), 101);
    ws
}

/// The `n` of the next event's data.
async fn next_n(ws: &mut Ws) -> i64 {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("no event within 10 s")
            .expect("stream ended")
            .unwrap();
        match msg {
            Message::Text(t) => {
                let event: Value = serde_json::from_str(t.as_str()).unwrap();
                return event["data"]["n"].as_i64().unwrap();
            }
            Message::Close(c) => panic!("closed: {c:?}"),
            _ => continue,
        }
    }
}

fn ca_pem() -> String {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name
        .push(rcgen::DnType::CommonName, "Migration Test CA");
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    p.self_signed(&key).unwrap().pem()
}

/// Runs `drover migrate` with `args`.
fn migrate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_drover"))
        .arg("migrate")
        .args(args)
        .env_remove("DROVER_CONFIG")
        .env_remove("DROVER_DATABASE_URL")
        .env_remove("DROVER_NATS_URL")
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// What the embedded installation showed before it stopped.
struct Before {
    apps: Value,
    devices: Value,
    members: Value,
    alice_token: String,
}

/// Applications, devices (password, alias, gateway), a trust anchor, a user with a token who is
/// a member, and telemetry events 1 to 5.
async fn populate(t: &TestServer) -> String {
    let admin = t.admin();
    let r = admin
        .post(
            APPS,
            &json!({"metadata": {"name": "app1", "labels": {"env": "prod"}},
                    "spec": {"trustAnchors": {"anchors": [{"certificate": ca_pem()}]}}}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    admin.create_app("app2").await;
    admin
        .create_device(
            "app1",
            json!({"metadata": {"name": "dev1"}, "spec": {"alias": ["serial-1"],
                   "authentication": {"credentials": [{"pass": "pw1"}]}}}),
        )
        .await;
    admin
        .create_device(
            "app1",
            json!({"metadata": {"name": "gw"}, "spec": {
                   "authentication": {"credentials": [{"pass": "gwpass"}]}}}),
        )
        .await;
    admin
        .create_device(
            "app1",
            json!({"metadata": {"name": "behind"}, "spec": {"gatewaySelector": {"matchNames": ["gw"]}}}),
        )
        .await;
    let alice = t.user("alice").await;
    let r = admin
        .put(
            "/api/admin/v1alpha1/apps/app1/members",
            &json!({"members": {"alice": {"role": "reader"}}}),
        )
        .await;
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    alice.user.unwrap().1
}

async fn send(t: &TestServer, n: i64) {
    let body = format!("{{\"n\":{n}}}");
    assert_eq!(
        publish(t, "dev1@app1", "pw1", "/v1/telemetry", &body).await,
        StatusCode::ACCEPTED
    );
}

/// The applications (with the list's revision), app1's devices and members.
async fn snapshot(admin: &Client) -> (Value, Value, Value) {
    let r = admin.get(APPS).await;
    assert_eq!(r.status(), StatusCode::OK);
    let revision = r.headers()["drover-revision"].to_str().unwrap().to_string();
    let apps: Value = r.json().await.unwrap();
    (
        json!({"revision": revision, "items": apps}),
        admin.get_json(&format!("{APPS}/app1/devices")).await,
        admin
            .get_json("/api/admin/v1alpha1/apps/app1/members")
            .await,
    )
}

#[tokio::test]
#[ignore = "needs PostgreSQL and NATS: set DROVER_TEST_DATABASE_URL and DROVER_TEST_NATS_URL and run with --include-ignored (CI does)"]
async fn an_embedded_installation_moves_to_a_cluster() {
    let (db, nats) = backends();
    let (schema, prefix) = (unique("drover_migrate"), unique("migrate"));
    let _cleanup = Cleanup {
        db: db.clone(),
        schema: schema.clone(),
        nats: nats.clone(),
        prefix: prefix.clone(),
    };

    // The embedded installation: resources, events 1..=5, group g1 committed in the middle.
    // Embedded whatever DROVER_TEST_REGISTRY says.
    let dir = tempfile::tempdir().unwrap();
    let mut t = TestServer::start_with(drover::Config {
        database_url: None,
        database_schema: None,
        ..common::config(dir.path())
    })
    .await;
    t.dir = Some(dir);
    let alice_token = populate(&t).await;
    send(&t, 1).await;
    let mut group = ws_connect(&t, "app1?group_id=g1").await;
    send(&t, 2).await;
    send(&t, 3).await;
    assert_eq!(next_n(&mut group).await, 2);
    assert_eq!(next_n(&mut group).await, 3);
    drop(group);
    send(&t, 4).await;
    send(&t, 5).await;
    let (apps, devices, members) = snapshot(&t.admin()).await;
    let before = Before {
        apps,
        devices,
        members,
        alice_token,
    };
    let data_dir = t.data_dir.clone();
    let dir = data_dir.to_str().unwrap().to_string();
    let cluster = [
        "--data-dir",
        &dir,
        "--database-url",
        &db,
        "--database-schema",
        &schema,
        "--nats-url",
        &nats,
        "--nats-prefix",
        &prefix,
    ];

    // While the server runs, its registry is in use: refused, nothing written.
    let out = migrate(&cluster);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("stop it first"), "{}", text(&out));
    t.server.take().unwrap().shutdown().await.unwrap();

    // Where the group stands on the embedded log (offsets 1..=5 hold n = 1..=5).
    let log = EmbeddedLog::open(&data_dir.join("events"), LogConfig::default())
        .await
        .unwrap();
    let uid = before.apps["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["metadata"]["name"] == "app1")
        .unwrap()["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_string();
    let committed = log
        .committed(&StreamKey::new("app1", &uid), "g1")
        .await
        .unwrap()
        .expect("group g1 committed");
    assert!((2..=3).contains(&committed), "committed {committed}");
    log.close().await.unwrap();

    // A dry run writes nothing; bad usage is 64.
    let mut dry = cluster.to_vec();
    dry.push("--dry-run");
    let out = migrate(&dry);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("Dry run"), "{}", text(&out));
    let out = migrate(&["--data-dir", &dir]);
    assert_eq!(out.status.code(), Some(64), "{}", text(&out));

    let out = migrate(&cluster);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let report = text(&out);
    println!("{report}");
    assert!(report.contains("streams 1, events 5, groups 1"), "{report}");
    assert!(
        report.contains(&format!("group \"g1\": offset {committed} -> {committed}")),
        "{report}"
    );
    // Once is enough: the target is no longer empty.
    let out = migrate(&cluster);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("not empty"), "{}", text(&out));

    // A node on the cluster settings.
    let node_dir = tempfile::tempdir().unwrap();
    let config = drover::Config {
        database_url: Some(db.clone()),
        database_schema: Some(schema.clone()),
        nats_url: Some(nats.clone()),
        nats_prefix: prefix.clone(),
        ..common::config(node_dir.path())
    };
    let mut node = TestServer::start_with(config).await;
    let (apps, devices, members) = snapshot(&node.admin()).await;
    assert_eq!(apps, before.apps);
    assert_eq!(devices, before.devices);
    assert_eq!(members, before.members);
    let alice = node.client("alice", &before.alice_token);
    let app1 = alice.get_json(&format!("{APPS}/app1")).await;
    assert_eq!(app1["metadata"]["uid"], uid.as_str());
    // The old password, the alias and the gateway still authenticate.
    send(&node, 6).await;
    assert_eq!(
        publish(&node, "serial-1@app1", "pw1", "/v1/telemetry", "{\"n\":7}").await,
        StatusCode::ACCEPTED
    );
    assert_eq!(
        publish(
            &node,
            "gw@app1",
            "gwpass",
            "/v1/telemetry?as=behind",
            "{\"n\":8}"
        )
        .await,
        StatusCode::ACCEPTED
    );
    // The old events come first, in order; the group resumes after its commit.
    let mut all = ws_connect(&node, "app1?from=earliest").await;
    for n in 1..=8 {
        assert_eq!(next_n(&mut all).await, n);
    }
    let mut group = ws_connect(&node, "app1?group_id=g1").await;
    for n in committed + 1..=8 {
        assert_eq!(next_n(&mut group).await, i64::try_from(n).unwrap());
    }
    drop((all, group));
    node.server.take().unwrap().shutdown().await.unwrap();
}
