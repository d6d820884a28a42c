//! Smaller holes an adversarial test found: readers saw password hashes, the administrator could
//! delete their only token, HTTP channel names took any byte.
#![allow(clippy::unwrap_used)]

mod common;

use common::TestServer;
use reqwest::StatusCode;
use serde_json::{json, Value};

#[tokio::test]
async fn readers_do_not_see_secrets_managers_do() {
    let t = TestServer::start().await;
    let admin = t.admin();
    admin.create_app("app").await;
    admin
        .create_device(
            "app",
            json!({"metadata": {"name": "d"}, "spec": {
                "authentication": {"credentials": [
                    {"pass": "s3cret-password"},
                    {"user": {"username": "alice", "password": "other-secret"}}
                ]},
                "commands": {"commands": [{"external": {"url": "https://lns.example.com/x", "headers": {"Authorization": "Bearer lns-token"}}}]}
            }}),
        )
        .await;
    let reader = t.user("reader").await;
    let manager = t.user("manager").await;
    let r = admin
        .put(
            "/api/admin/v1alpha1/apps/app/members",
            &json!({"members": {"reader": {"role": "reader"}, "manager": {"role": "manager"}}}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);

    for (what, doc) in [
        (
            "get",
            reader
                .get_json("/api/registry/v1alpha1/apps/app/devices/d")
                .await,
        ),
        (
            "list",
            reader
                .get_json("/api/registry/v1alpha1/apps/app/devices")
                .await[0]
                .clone(),
        ),
    ] {
        let text = doc.to_string();
        assert!(
            !text.contains("$6$") && !text.contains("lns-token") && !text.contains("s3cret"),
            "{what}: {text}"
        );
        let creds = &doc["spec"]["authentication"]["credentials"];
        assert_eq!(creds[0]["pass"]["sha512"], "<redacted>", "{what}: {creds}");
        assert_eq!(creds[1]["user"]["username"], "alice", "{what}: {creds}");
        assert_eq!(
            doc["spec"]["commands"]["commands"][0]["external"]["headers"]["Authorization"],
            "<redacted>"
        );
    }
    let doc: Value = manager
        .get_json("/api/registry/v1alpha1/apps/app/devices/d")
        .await;
    let hash = doc["spec"]["authentication"]["credentials"][0]["pass"]["sha512"]
        .as_str()
        .unwrap();
    assert!(hash.starts_with("$6$"), "managers see the hash: {hash}");
}

#[tokio::test]
async fn the_administrators_last_token_cannot_be_deleted() {
    let t = TestServer::start().await;
    let admin = t.admin();
    let alice = t.user("alice").await;
    let tokens: Value = admin.get_json("/api/tokens/v1alpha1").await;
    assert_eq!(tokens.as_array().unwrap().len(), 1);
    let prefix = tokens[0]["prefix"].as_str().unwrap().to_string();
    let r = admin
        .delete(&format!("/api/tokens/v1alpha1/{prefix}"))
        .await;
    let msg = common::expect_error(r, StatusCode::CONFLICT, "Conflict").await;
    assert!(msg.contains("last access token"), "{msg}");
    // With a second token, the first may go; then the second is the last.
    let r = admin
        .post("/api/tokens/v1alpha1?description=spare", &json!({}))
        .await;
    assert!(r.status().is_success(), "{}", r.status());
    let spare: Value = r.json().await.unwrap();
    let r = admin
        .delete(&format!("/api/tokens/v1alpha1/{prefix}"))
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let spare_client = t.client("admin", spare["token"].as_str().unwrap());
    let r = spare_client
        .delete(&format!(
            "/api/tokens/v1alpha1/{}",
            spare["prefix"].as_str().unwrap()
        ))
        .await;
    assert_eq!(r.status(), StatusCode::CONFLICT);
    // Other users may delete all of theirs.
    let tokens: Value = alice.get_json("/api/tokens/v1alpha1").await;
    let r = alice
        .delete(&format!(
            "/api/tokens/v1alpha1/{}",
            tokens[0]["prefix"].as_str().unwrap()
        ))
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn http_channel_names_are_checked_like_mqtt_topics() {
    let t = TestServer::start().await;
    let admin = t.admin();
    admin.create_app("app").await;
    admin
        .create_device(
            "app",
            json!({"metadata": {"name": "d"}, "spec": {"authentication": {"credentials": [{"pass": "pw"}]}}}),
        )
        .await;
    let post = |path: &str| {
        t.http
            .post(format!("{}{path}", t.http_base))
            .basic_auth("d@app", Some("pw"))
            .body("{}")
            .send()
    };
    for bad in ["/v1/tele%00metry", "/v1/a%2Bb", "/v1/a/%23", "/v1/%0Aline"] {
        let r = post(bad).await.unwrap();
        let msg = common::expect_error(r, StatusCode::BAD_REQUEST, "BadRequest").await;
        assert!(msg.contains("invalid channel"), "{bad}: {msg}");
    }
    let long = format!("/v1/{}", "x".repeat(1025));
    let r = post(&long).await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    for ok in ["/v1/telemetry", "/v1/state/room/kitchen", "/v1/%C3%A9tat"] {
        assert_eq!(
            post(ok).await.unwrap().status(),
            StatusCode::ACCEPTED,
            "{ok}"
        );
    }
}

/// One user held 5,000 integration connections: now a user may hold
/// `integration_max_connections_per_user`, WebSocket and MQTT together.
#[tokio::test]
async fn integration_connections_per_user_are_capped() {
    use futures::StreamExt;
    let dir = tempfile::tempdir().unwrap();
    let config = drover::Config {
        integration_max_connections_per_user: 2,
        ..common::config(dir.path())
    };
    let t = TestServer::start_with(config).await;
    t.admin().create_app("app").await;
    let url = format!(
        "{}?username=admin&api_key={}",
        t.ws_url("app"),
        common::ADMIN_TOKEN
    );
    let (mut first, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    let port = t
        .server
        .as_ref()
        .unwrap()
        .integration_mqtt_addr
        .unwrap()
        .port();
    let mut o = rumqttc::v5::MqttOptions::new("admin-1", "127.0.0.1", port);
    o.set_credentials("admin", common::ADMIN_TOKEN);
    let (_c, mut el) = rumqttc::v5::AsyncClient::new(o, 10);
    let ack = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        loop {
            if let rumqttc::v5::Event::Incoming(rumqttc::v5::mqttbytes::v5::Packet::ConnAck(a)) =
                el.poll().await.unwrap()
            {
                return a.code;
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(ack, rumqttc::v5::mqttbytes::v5::ConnectReturnCode::Success);

    // The third connection of the user: a WebSocket gets 429, MQTT CONNACK 0x97.
    match tokio_tungstenite::connect_async(&url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 429),
        other => panic!("expected 429, got {other:?}"),
    }
    let mut o = rumqttc::v5::MqttOptions::new("admin-2", "127.0.0.1", port);
    o.set_credentials("admin", common::ADMIN_TOKEN);
    let (_c2, mut el2) = rumqttc::v5::AsyncClient::new(o, 10);
    let refused = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        loop {
            if let Err(e) = el2.poll().await {
                return e.to_string();
            }
        }
    })
    .await
    .unwrap();
    assert!(refused.contains("QuotaExceeded"), "{refused}");

    // Another user is not affected; and a closed connection frees its slot.
    let bob = t.user("bob").await;
    let bob_token = bob.user.clone().unwrap().1;
    let r = t
        .admin()
        .put(
            "/api/admin/v1alpha1/apps/app/members",
            &json!({"members": {"bob": {"role": "reader"}}}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let bob_url = format!("{}?username=bob&api_key={bob_token}", t.ws_url("app"));
    tokio_tungstenite::connect_async(&bob_url).await.unwrap();
    first.close(None).await.unwrap();
    while first.next().await.is_some() {}
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match tokio_tungstenite::connect_async(&url).await {
            Ok(_) => break,
            Err(_) if tokio::time::Instant::now() < deadline => tokio::task::yield_now().await,
            Err(e) => panic!("the slot was not freed: {e}"),
        }
    }
}
