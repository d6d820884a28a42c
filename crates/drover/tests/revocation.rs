//! Live application sessions end when their user loses access: a WebSocket stream closes with
//! 1008 "access revoked: ...", an MQTT integration connection gets DISCONNECT 0x87 (MQTT 5; 3.1.1:
//! closed) and its session is discarded, when the user is removed as a member, deletes the token
//! the session was opened with, or is deleted by an administrator — on one node, and on two
//! nodes sharing a PostgreSQL registry (the change made through one node, the session on the
//! other).
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{Client, TestServer};
use futures::StreamExt;
use rumqttc::v5::mqttbytes::v5::Packet;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::Event;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

const WAIT: Duration = Duration::from_secs(15);

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// `app`, owned by the administrator, with alice as a reader; alice's client and token.
async fn setup(t: &TestServer) -> (Client, String) {
    let admin = t.admin();
    admin.create_app("app").await;
    let alice = t.user("alice").await;
    let r = admin
        .put(
            "/api/admin/v1alpha1/apps/app/members",
            &json!({"members": {"alice": {"role": "reader"}}}),
        )
        .await;
    assert_eq!(r.status(), 204);
    let token = alice.user.clone().unwrap().1;
    (alice, token)
}

async fn ws(t: &TestServer, user: &str, token: &str) -> Ws {
    let url = format!("{}?username={user}&api_key={token}", t.ws_url("app"));
    tokio_tungstenite::connect_async(url).await.unwrap().0
}

/// Waits for the stream's close frame; returns its code and reason.
async fn closed(ws: &mut Ws) -> (u16, String) {
    tokio::time::timeout(WAIT, async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(Some(f)))) => {
                    return (u16::from(f.code), f.reason.to_string())
                }
                Some(Ok(Message::Close(None))) | None => panic!("closed without a close frame"),
                Some(Ok(_)) => {}
                Some(Err(e)) => panic!("websocket error before the close frame: {e}"),
            }
        }
    })
    .await
    .expect("the stream was not closed in time")
}

/// The stream is still open: a ping is answered.
async fn still_open(ws: &mut Ws) {
    use futures::SinkExt;
    ws.send(Message::Ping(b"?".to_vec().into())).await.unwrap();
    tokio::time::timeout(WAIT, async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Pong(_))) => return,
                Some(Ok(Message::Close(f))) => panic!("closed: {f:?}"),
                Some(Ok(_)) => {}
                other => panic!("{other:?}"),
            }
        }
    })
    .await
    .expect("pong");
}

async fn remove_member(admin: &Client) {
    let r = admin
        .put(
            "/api/admin/v1alpha1/apps/app/members",
            &json!({"members": {}}),
        )
        .await;
    assert_eq!(r.status(), 204);
}

async fn delete_own_tokens(alice: &Client) {
    let tokens: Value = alice.get_json("/api/tokens/v1alpha1").await;
    for t in tokens.as_array().unwrap() {
        let prefix = t["prefix"].as_str().unwrap();
        let r = alice
            .delete(&format!("/api/tokens/v1alpha1/{prefix}"))
            .await;
        assert_eq!(r.status(), 204);
    }
}

async fn delete_user(admin: &Client, name: &str) {
    let r = admin
        .delete(&format!("/api/admin/v1alpha1/users/{name}"))
        .await;
    assert_eq!(r.status(), 204);
}

#[tokio::test]
async fn websocket_streams_end_when_access_is_revoked() {
    let t = TestServer::start().await;
    let admin = t.admin();

    // 1. Removed as a member. An administrator's stream on the same app stays.
    let (_, token) = setup(&t).await;
    let mut stream = ws(&t, "alice", &token).await;
    let mut admins = ws(&t, "admin", common::ADMIN_TOKEN).await;
    still_open(&mut stream).await;
    remove_member(&admin).await;
    let (code, reason) = closed(&mut stream).await;
    assert_eq!(code, 1008);
    assert!(
        reason.contains("access revoked") && reason.contains("'app'"),
        "{reason}"
    );
    still_open(&mut admins).await;

    // 2. The token the stream was opened with is deleted (by its owner).
    let r = admin
        .put(
            "/api/admin/v1alpha1/apps/app/members",
            &json!({"members": {"alice": {"role": "reader"}}}),
        )
        .await;
    assert_eq!(r.status(), 204);
    let alice = t.client("alice", &token);
    let mut stream = ws(&t, "alice", &token).await;
    still_open(&mut stream).await;
    delete_own_tokens(&alice).await;
    let (code, reason) = closed(&mut stream).await;
    assert_eq!(code, 1008);
    assert!(reason.contains("token"), "{reason}");
    assert_eq!(alice.get("/api/tokens/v1alpha1").await.status(), 401);

    // 3. The user is deleted by an administrator.
    let bob = t.user("bob").await;
    let bob_token = bob.user.clone().unwrap().1;
    let r = admin
        .put(
            "/api/admin/v1alpha1/apps/app/members",
            &json!({"members": {"bob": {"role": "reader"}}}),
        )
        .await;
    assert_eq!(r.status(), 204);
    let mut stream = ws(&t, "bob", &bob_token).await;
    still_open(&mut stream).await;
    delete_user(&admin, "bob").await;
    let (code, _) = closed(&mut stream).await;
    assert_eq!(code, 1008);
    still_open(&mut admins).await;
}

fn v5_consumer(
    t: &TestServer,
    user: &str,
    token: &str,
    id: &str,
) -> (rumqttc::v5::AsyncClient, rumqttc::v5::EventLoop) {
    let port = t
        .server
        .as_ref()
        .unwrap()
        .integration_mqtt_addr
        .unwrap()
        .port();
    let mut o = rumqttc::v5::MqttOptions::new(id, "127.0.0.1", port);
    o.set_credentials(user, token);
    o.set_clean_start(false);
    o.set_session_expiry_interval(Some(3600));
    rumqttc::v5::AsyncClient::new(o, 10)
}

async fn subscribed(c: &rumqttc::v5::AsyncClient, el: &mut rumqttc::v5::EventLoop) {
    c.subscribe("app/app", QoS::AtLeastOnce).await.unwrap();
    tokio::time::timeout(WAIT, async {
        loop {
            if let Event::Incoming(Packet::SubAck(a)) = el.poll().await.unwrap() {
                assert!(
                    matches!(
                        a.return_codes[0],
                        rumqttc::v5::mqttbytes::v5::SubscribeReasonCode::Success(_)
                    ),
                    "{a:?}"
                );
                return;
            }
        }
    })
    .await
    .expect("SUBACK");
}

/// Polls until the connection ends; returns what rumqttc says of it.
async fn disconnected(el: &mut rumqttc::v5::EventLoop) -> String {
    tokio::time::timeout(WAIT, async {
        loop {
            if let Err(e) = el.poll().await {
                return e.to_string();
            }
        }
    })
    .await
    .expect("the connection was not closed in time")
}

#[tokio::test]
async fn mqtt_integration_sessions_end_when_access_is_revoked() {
    let t = TestServer::start().await;
    let admin = t.admin();
    let (alice, token) = setup(&t).await;

    // 1. Removed as a member: DISCONNECT 0x87, and the persistent session is gone.
    let (c, mut el) = v5_consumer(&t, "alice", &token, "alice-1");
    subscribed(&c, &mut el).await;
    remove_member(&admin).await;
    let why = disconnected(&mut el).await;
    assert!(why.contains("NotAuthorized"), "{why}");
    // Coming back: no session present, and the application is refused.
    let (c, mut el) = v5_consumer(&t, "alice", &token, "alice-1");
    let present = tokio::time::timeout(WAIT, async {
        loop {
            if let Event::Incoming(Packet::ConnAck(a)) = el.poll().await.unwrap() {
                return a.session_present;
            }
        }
    })
    .await
    .unwrap();
    assert!(!present, "the session was discarded");
    c.subscribe("app/app", QoS::AtLeastOnce).await.unwrap();
    let code = tokio::time::timeout(WAIT, async {
        loop {
            if let Event::Incoming(Packet::SubAck(a)) = el.poll().await.unwrap() {
                return a.return_codes[0];
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(
        code,
        rumqttc::v5::mqttbytes::v5::SubscribeReasonCode::NotAuthorized
    );
    drop(el);

    // 2. The token is deleted.
    let r = admin
        .put(
            "/api/admin/v1alpha1/apps/app/members",
            &json!({"members": {"alice": {"role": "reader"}}}),
        )
        .await;
    assert_eq!(r.status(), 204);
    let (c, mut el) = v5_consumer(&t, "alice", &token, "alice-2");
    subscribed(&c, &mut el).await;
    delete_own_tokens(&alice).await;
    let why = disconnected(&mut el).await;
    assert!(why.contains("NotAuthorized"), "{why}");

    // 3. The user is deleted; an unaffected user's session stays.
    let bob = t.user("bob").await;
    let bob_token = bob.user.clone().unwrap().1;
    let carol = t.user("carol").await;
    let carol_token = carol.user.clone().unwrap().1;
    let r = admin
        .put(
            "/api/admin/v1alpha1/apps/app/members",
            &json!({"members": {"bob": {"role": "reader"}, "carol": {"role": "reader"}}}),
        )
        .await;
    assert_eq!(r.status(), 204);
    let (c, mut el) = v5_consumer(&t, "bob", &bob_token, "bob-1");
    subscribed(&c, &mut el).await;
    let (cc, mut cel) = v5_consumer(&t, "carol", &carol_token, "carol-1");
    subscribed(&cc, &mut cel).await;
    delete_user(&admin, "bob").await;
    let why = disconnected(&mut el).await;
    assert!(why.contains("NotAuthorized"), "{why}");
    // Carol still receives what a device sends.
    admin
        .create_device(
            "app",
            json!({"metadata": {"name": "d"}, "spec": {"authentication": {"credentials": [{"pass": "pw"}]}}}),
        )
        .await;
    let r = reqwest::Client::new()
        .post(format!("{}/v1/telemetry", t.http_base))
        .basic_auth("d@app", Some("pw"))
        .json(&json!({"t": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    tokio::time::timeout(WAIT, async {
        loop {
            if let Event::Incoming(Packet::Publish(_)) = cel.poll().await.unwrap() {
                return;
            }
        }
    })
    .await
    .expect("carol's session still delivers");
}

/// Two nodes on one PostgreSQL registry: the membership is removed through node A, the stream
/// and the MQTT session on node B end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL and NATS: set DROVER_TEST_DATABASE_URL and DROVER_TEST_NATS_URL and run with --include-ignored (CI does)"]
async fn revocation_reaches_sessions_on_another_node() {
    let (db, _) = common::backends::backends();
    let schema = common::backends::unique("drover_revoke");
    let _cleanup = common::backends::Cleanup {
        db: db.clone(),
        schema: schema.clone(),
        nats: std::env::var("DROVER_TEST_NATS_URL").unwrap(),
        prefix: schema.clone(),
    };
    let node = |dir: &std::path::Path| {
        let mut c = common::config(dir);
        c.database_url = Some(db.clone());
        c.database_schema = Some(schema.clone());
        c
    };
    let dir_a = tempfile::tempdir().unwrap();
    let dir_b = tempfile::tempdir().unwrap();
    let a = TestServer::start_with(node(dir_a.path())).await;
    let b = TestServer::start_with(node(dir_b.path())).await;
    let (_, token) = setup(&a).await;
    let mut stream = ws(&b, "alice", &token).await;
    still_open(&mut stream).await;
    let (c, mut el) = v5_consumer(&b, "alice", &token, "alice-b");
    subscribed(&c, &mut el).await;
    remove_member(&a.admin()).await;
    let (code, reason) = closed(&mut stream).await;
    assert_eq!(code, 1008, "{reason}");
    let why = disconnected(&mut el).await;
    assert!(why.contains("NotAuthorized"), "{why}");
}
