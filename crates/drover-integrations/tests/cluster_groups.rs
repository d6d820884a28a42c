//! A shared group whose members connect to two nodes: two MQTT-integration servers ("nodes" a
//! and b) over one registry and one event log, each coordinating its groups with the other over
//! a real NATS server (`DROVER_TEST_NATS_URL`, set by CI). The nodes split the devices; when a
//! node's last member goes, the other takes everything over; nothing is lost. The test is
//! `#[ignore]`d; `--include-ignored` runs it (and fails it without the URL).
#![allow(clippy::unwrap_used)]

#[path = "mqtt_integration/common.rs"]
mod common;

use std::collections::{BTreeMap, HashSet};

use std::net::SocketAddr;
use std::sync::Arc;

use common::{admin, ce_id, eventually, stream, user, V4};
use drover_bus::cluster::NatsGroups;
use drover_bus::{EmbeddedLog, EventLog, LogConfig};
use drover_integrations::mqtt::IntegrationPolicy;
use drover_model::{MetadataInput, ResourceInput};
use drover_mqtt::MqttConfig;
use drover_registry::{Registry, SqliteRegistry};

/// Starts an integration server ("node") on `log` whose groups span nodes through NATS.
async fn node(
    registry: Arc<SqliteRegistry>,
    log: Arc<EmbeddedLog>,
    url: &str,
    prefix: &str,
    name: &str,
) -> SocketAddr {
    let client = async_nats::connect(url).await.unwrap();
    let users = common::users(registry.clone());
    let policy = IntegrationPolicy::new(registry, users, log.clone(), common::settings())
        .with_group_peers(NatsGroups::new(client, prefix, name, log));
    let server = policy.into_server(MqttConfig::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(drover_mqtt::serve_tcp(
        listener,
        server,
        std::future::pending::<()>(),
    ));
    addr
}

fn options(addr: SocketAddr, client_id: &str, token: &str) -> rumqttc::MqttOptions {
    let mut o = rumqttc::MqttOptions::new(client_id, "127.0.0.1", addr.port());
    o.set_keep_alive(std::time::Duration::from_secs(30));
    o.set_credentials("alice", token);
    o
}

/// Event ids received by a member, in arrival order.
async fn receive(member: &mut V4, into: &mut Vec<String>) {
    let p = member.publish().await;
    into.push(ce_id(&p.payload));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs NATS with JetStream: set DROVER_TEST_NATS_URL and run with --include-ignored (CI does)"]
async fn a_shared_group_spans_nodes() {
    let Some(url) = common::nats_url() else {
        return;
    };
    common::init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let registry = Arc::new(
        SqliteRegistry::open(&dir.path().join("registry.db"))
            .await
            .unwrap(),
    );
    let log = Arc::new(
        EmbeddedLog::open(&dir.path().join("events"), LogConfig::default())
            .await
            .unwrap(),
    );
    registry.bootstrap_admin(None).await.unwrap();
    let (_, token) = registry
        .create_user(&admin(), "alice", false)
        .await
        .unwrap();
    let app = registry
        .create_app(
            &user("alice"),
            ResourceInput {
                metadata: MetadataInput {
                    name: Some("app1".into()),
                    ..MetadataInput::default()
                },
                ..ResourceInput::default()
            },
        )
        .await
        .unwrap();
    let prefix = format!(
        "g{}_{}",
        std::process::id(),
        chrono::Utc::now().timestamp_millis() % 1_000_000
    );
    let a = node(registry.clone(), log.clone(), &url, &prefix, "a").await;
    let b = node(registry.clone(), log.clone(), &url, &prefix, "b").await;

    let filter = "$share/g/app/app1";
    let (mut m1, _) = V4::ok(options(a, "m1", &token.token)).await;
    m1.subscribe(filter, rumqttc::QoS::AtLeastOnce).await;
    let (mut m2, _) = V4::ok(options(b, "m2", &token.token)).await;
    m2.subscribe(filter, rumqttc::QoS::AtLeastOnce).await;

    let devices: Vec<String> = (0..16).map(|d| format!("d{d}")).collect();
    let group = "mqtt-share:app1:g";
    let append = |round: usize| {
        let (log, app, devices) = (log.clone(), app.clone(), devices.clone());
        async move {
            let mut last = 0;
            for n in round * 5..round * 5 + 5 {
                for d in &devices {
                    last = log
                        .append(&stream(&app), common::event(&app, d, "t", n))
                        .await
                        .unwrap();
                }
            }
            last
        }
    };
    let ids = |round: usize| -> HashSet<String> {
        (round * 5..round * 5 + 5)
            .flat_map(|n| devices.iter().map(move |d| format!("{d}-{n}")))
            .collect()
    };

    // Round 0: while the nodes find each other, events may arrive twice; none is lost.
    let end0 = append(0).await;
    let (mut got1, mut got2) = (Vec::new(), Vec::new());
    let want = ids(0);
    while !want.iter().all(|id| got1.contains(id) || got2.contains(id)) {
        tokio::select! {
            _ = receive(&mut m1, &mut got1) => {}
            _ = receive(&mut m2, &mut got2) => {}
        }
    }
    // The group commits only once both nodes work under the same view and acknowledged it.
    eventually("the group to commit round 0", || {
        let log = log.clone();
        let app = app.clone();
        async move {
            (log.committed(&stream(&app), group).await.unwrap() >= Some(end0)).then_some(())
        }
    })
    .await;

    // Once the nodes see each other (within a few rounds), each device's events go to one
    // node's member, in order, and both members get some devices. Every round arrives whole.
    let mut round = 1;
    loop {
        got1.clear();
        got2.clear();
        append(round).await;
        let want = ids(round);
        while !want.iter().all(|id| got1.contains(id) || got2.contains(id)) {
            tokio::select! {
                _ = receive(&mut m1, &mut got1) => {}
                _ = receive(&mut m2, &mut got2) => {}
            }
        }
        // (Earlier rounds' duplicates may still arrive: only this round counts.)
        let per_member = |got: &[String]| -> BTreeMap<String, Vec<usize>> {
            let mut m: BTreeMap<String, Vec<usize>> = BTreeMap::new();
            for id in got.iter().filter(|id| want.contains(*id)) {
                let (d, n) = id.rsplit_once('-').unwrap();
                m.entry(d.to_string()).or_default().push(n.parse().unwrap());
            }
            m
        };
        let (p1, p2) = (per_member(&got1), per_member(&got2));
        let split = !p1.is_empty()
            && !p2.is_empty()
            && p1.keys().all(|d| !p2.contains_key(d))
            && p1
                .values()
                .chain(p2.values())
                .all(|ns| *ns == (round * 5..round * 5 + 5).collect::<Vec<_>>());
        if split {
            break;
        }
        assert!(round < 20, "the nodes never split the group: {p1:?} {p2:?}");
        round += 1;
    }
    eprintln!("the nodes split the devices from round {round} on");
    round += 1;

    // Node b's member goes: node a takes every device over.
    m2.kill();
    got1.clear();
    let end = append(round).await;
    let want = ids(round);
    while !want.iter().all(|id| got1.contains(id)) {
        receive(&mut m1, &mut got1).await;
    }
    // Alone again, node a commits everything its member acknowledged.
    eventually("the group to commit the last round", || {
        let log = log.clone();
        let app = app.clone();
        async move { (log.committed(&stream(&app), group).await.unwrap() >= Some(end)).then_some(()) }
    })
    .await;
    drop(dir);
}
