//! Telemetry end to end: devices publish over HTTP, the event lands durably in the application's
//! stream, applications watch it over the WebSocket integration.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use base64::Engine as _;
use common::{Client, TestServer};
use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

fn basic(user: &str, pass: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
    )
}

/// POSTs telemetry as `user:pass` to `path` (e.g. `/v1/telemetry?as=x`).
async fn publish(
    t: &TestServer,
    user: &str,
    pass: &str,
    path: &str,
    body: &str,
    ct: Option<&str>,
) -> reqwest::Response {
    let mut r = reqwest::Client::new()
        .post(format!("{}{path}", t.http_base))
        .header("authorization", basic(user, pass))
        .body(body.to_string());
    if let Some(ct) = ct {
        r = r.header("content-type", ct);
    }
    r.send().await.unwrap()
}

async fn ws_connect(t: &TestServer, app_and_query: &str, user: &str, token: &str) -> Ws {
    let mut req = t.ws_url(app_and_query).into_client_request().unwrap();
    req.headers_mut()
        .insert("authorization", basic(user, token).parse().unwrap());
    let (ws, resp) = tokio_tungstenite::connect_async(req).await.unwrap();
    assert_eq!(resp.status(), 101);
    ws
}

async fn next_event(ws: &mut Ws) -> Value {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("no event within 10 s")
            .expect("stream ended")
            .unwrap();
        match msg {
            Message::Text(t) => return serde_json::from_str(t.as_str()).unwrap(),
            Message::Close(c) => panic!("closed: {c:?}"),
            _ => continue,
        }
    }
}

/// Asserts no event arrives within a short time (used only after a later event proved delivery
/// is working, so it does not synchronize anything).
async fn no_event(ws: &mut Ws) {
    if let Ok(Some(Ok(Message::Text(t)))) =
        tokio::time::timeout(Duration::from_millis(300), ws.next()).await
    {
        panic!("unexpected event: {t}");
    }
}

async fn send(t: &TestServer, n: i32) {
    let r = publish(
        t,
        "dev1@app",
        "secret",
        "/v1/telemetry",
        &format!("{{\"n\":{n}}}"),
        None,
    )
    .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
}

async fn setup(t: &TestServer) -> Client {
    let admin = t.admin();
    admin.create_app("app").await;
    admin
        .create_device(
            "app",
            json!({"metadata": {"name": "dev1"}, "spec": {"authentication": {"credentials": [{"pass": "secret"}]}}}),
        )
        .await;
    admin
}

#[tokio::test]
async fn http_telemetry_reaches_the_websocket_integration() {
    let t = TestServer::start().await;
    setup(&t).await;
    let mut ws = ws_connect(&t, "app", "admin", common::ADMIN_TOKEN).await;
    let r = publish(
        &t,
        "dev1@app",
        "secret",
        "/v1/telemetry?data_schema=urn:temp",
        r#"{"temp": 21.5}"#,
        Some("application/json"),
    )
    .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let ev = next_event(&mut ws).await;
    assert_eq!(ev["specversion"], "1.0");
    assert_eq!(ev["type"], "io.drogue.event.v1");
    assert_eq!(ev["source"], "drogue://app/dev1");
    assert_eq!(ev["subject"], "telemetry");
    assert_eq!(ev["datacontenttype"], "application/json");
    assert_eq!(ev["dataschema"], "urn:temp");
    assert_eq!(ev["application"], "app");
    assert_eq!(ev["device"], "dev1");
    assert_eq!(ev["sender"], "dev1");
    assert_eq!(ev["partitionkey"], "app/dev1");
    assert_eq!(ev["instance"], "drover");
    assert_eq!(ev["data"], json!({"temp": 21.5}));
    assert!(ev["id"].as_str().unwrap().len() >= 32);
    let app = t.admin().get_json("/api/registry/v1alpha1/apps/app").await;
    assert_eq!(ev["applicationuid"], app["metadata"]["uid"]);

    // Channel with a suffix, auto-detected JSON, binary payloads, and the other credential forms.
    let r = publish(
        &t,
        "dev1",
        "secret",
        "/v1/state/room/1?application=app",
        "[1,2]",
        None,
    )
    .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let ev = next_event(&mut ws).await;
    assert_eq!(ev["subject"], "state/room/1");
    assert_eq!(ev["datacontenttype"], "application/json");
    assert_eq!(ev["data"], json!([1, 2]));
    let r = publish(
        &t,
        "dev1@app",
        "secret",
        "/v1/raw",
        "\u{1}\u{2}not json",
        None,
    )
    .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let ev = next_event(&mut ws).await;
    assert_eq!(ev["datacontenttype"], "application/octet-stream");
    assert!(ev["data_base64"].is_string());
}

#[tokio::test]
async fn device_authentication_is_enforced() {
    let t = TestServer::start().await;
    let admin = setup(&t).await;
    admin
        .create_device(
            "app",
            json!({"metadata": {"name": "dev2"}, "spec": {"authentication": {"credentials": [
                {"user": {"username": "alice", "password": "pw2", "unique": true}}]}}}),
        )
        .await;
    let cases = [
        ("dev1@app", "wrong", StatusCode::FORBIDDEN),
        ("dev1@nope", "secret", StatusCode::FORBIDDEN),
        ("nobody@app", "secret", StatusCode::FORBIDDEN),
        ("dev1", "secret", StatusCode::FORBIDDEN), // no application
        ("alice@app", "pw2", StatusCode::ACCEPTED), // unique username
        ("alice@app", "secret", StatusCode::FORBIDDEN),
        ("dev2@app", "pw2", StatusCode::FORBIDDEN), // user entries need the user name
    ];
    for (user, pass, status) in cases {
        let r = publish(&t, user, pass, "/v1/telemetry", "{}", None).await;
        assert_eq!(r.status(), status, "{user}:{pass}");
        if status == StatusCode::FORBIDDEN {
            let body: Value = r.json().await.unwrap();
            assert_eq!(body["error"], "AuthenticationError");
        }
    }
    // `user` + application + device.
    let r = publish(
        &t,
        "alice",
        "pw2",
        "/v1/telemetry?application=app&device=dev2",
        "{}",
        None,
    )
    .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    // No credentials at all.
    let r = reqwest::Client::new()
        .post(format!("{}/v1/telemetry", t.http_base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    // A credential change takes effect at once (the verification cache is version-checked).
    let mut dev = admin
        .get_json("/api/registry/v1alpha1/apps/app/devices/dev1")
        .await;
    dev["spec"]["authentication"] = json!({"credentials": [{"pass": "new"}]});
    assert_eq!(
        admin
            .put("/api/registry/v1alpha1/apps/app/devices/dev1", &dev)
            .await
            .status(),
        204
    );
    assert_eq!(
        publish(&t, "dev1@app", "secret", "/v1/t", "{}", None)
            .await
            .status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        publish(&t, "dev1@app", "new", "/v1/t", "{}", None)
            .await
            .status(),
        StatusCode::ACCEPTED
    );

    // Disabled device, disabled app.
    let mut dev = admin
        .get_json("/api/registry/v1alpha1/apps/app/devices/dev1")
        .await;
    dev["spec"]["core"] = json!({"disabled": true});
    admin
        .put("/api/registry/v1alpha1/apps/app/devices/dev1", &dev)
        .await;
    assert_eq!(
        publish(&t, "dev1@app", "new", "/v1/t", "{}", None)
            .await
            .status(),
        StatusCode::FORBIDDEN
    );
    let mut app = admin.get_json("/api/registry/v1alpha1/apps/app").await;
    app["spec"]["core"] = json!({"disabled": true});
    admin.put("/api/registry/v1alpha1/apps/app", &app).await;
    assert_eq!(
        publish(&t, "alice@app", "pw2", "/v1/t", "{}", None)
            .await
            .status(),
        StatusCode::FORBIDDEN
    );
}

#[tokio::test]
async fn gateways_publish_for_their_devices() {
    let t = TestServer::start().await;
    let admin = setup(&t).await;
    admin
        .create_device("app", json!({"metadata": {"name": "gw"}, "spec": {"authentication": {"credentials": [{"pass": "gwpass"}]}}}))
        .await;
    admin
        .create_device("app", json!({"metadata": {"name": "behind"}, "spec": {"gatewaySelector": {"matchNames": ["gw"]}}}))
        .await;
    let mut ws = ws_connect(&t, "app", "admin", common::ADMIN_TOKEN).await;
    let r = publish(
        &t,
        "gw@app",
        "gwpass",
        "/v1/telemetry?as=behind",
        r#"{"x":1}"#,
        None,
    )
    .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let ev = next_event(&mut ws).await;
    assert_eq!(ev["device"], "behind");
    assert_eq!(ev["sender"], "gw");
    assert_eq!(ev["partitionkey"], "app/gw");
    assert_eq!(ev["source"], "drogue://app/behind");
    // dev1 does not name gw as its gateway; unknown devices are refused too.
    assert_eq!(
        publish(&t, "gw@app", "gwpass", "/v1/t?as=dev1", "{}", None)
            .await
            .status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        publish(&t, "gw@app", "gwpass", "/v1/t?as=ghost", "{}", None)
            .await
            .status(),
        StatusCode::FORBIDDEN
    );
}

#[tokio::test]
async fn bad_payloads_are_refused() {
    let t = TestServer::start().await;
    setup(&t).await;
    let r = publish(
        &t,
        "dev1@app",
        "secret",
        "/v1/telemetry",
        "{not json",
        Some("application/json"),
    )
    .await;
    assert_eq!(r.status(), StatusCode::NOT_ACCEPTABLE);
    let big = "x".repeat(256 * 1024 + 1);
    let r = publish(
        &t,
        "dev1@app",
        "secret",
        "/v1/telemetry",
        &big,
        Some("text/plain"),
    )
    .await;
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "PayloadTooLarge");
    let ok = "x".repeat(256 * 1024);
    let r = publish(
        &t,
        "dev1@app",
        "secret",
        "/v1/telemetry",
        &ok,
        Some("text/plain"),
    )
    .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let r = reqwest::Client::new()
        .get(format!("{}/v1/telemetry", t.http_base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn websocket_groups_resume_and_live_consumers_start_now() {
    let mut t = TestServer::start().await;
    setup(&t).await;
    send(&t, 1).await;
    // A live consumer does not see what came before it.
    let mut live = ws_connect(&t, "app", "admin", common::ADMIN_TOKEN).await;
    // `from=earliest` replays everything retained.
    let mut all = ws_connect(&t, "app?from=earliest", "admin", common::ADMIN_TOKEN).await;
    assert_eq!(next_event(&mut all).await["data"]["n"], 1);
    // A new group starts live, then resumes where it left off.
    let mut g = ws_connect(&t, "app?group_id=g1", "admin", common::ADMIN_TOKEN).await;
    send(&t, 2).await;
    assert_eq!(next_event(&mut live).await["data"]["n"], 2);
    assert_eq!(next_event(&mut all).await["data"]["n"], 2);
    assert_eq!(next_event(&mut g).await["data"]["n"], 2);
    drop(g);
    send(&t, 3).await;
    send(&t, 4).await;
    assert_eq!(next_event(&mut live).await["data"]["n"], 3);
    assert_eq!(next_event(&mut live).await["data"]["n"], 4);
    drop((live, all));
    // ... also across a restart of the server.
    t.restart().await;
    send(&t, 5).await;
    let mut g = ws_connect(&t, "app?group_id=g1", "admin", common::ADMIN_TOKEN).await;
    for n in 3..=5 {
        assert_eq!(next_event(&mut g).await["data"]["n"], n);
    }
    // Channel filter.
    let mut ch = ws_connect(&t, "app/alerts?from=earliest", "admin", common::ADMIN_TOKEN).await;
    let r = publish(&t, "dev1@app", "secret", "/v1/alerts", r#"{"n":6}"#, None).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(next_event(&mut ch).await["data"]["n"], 6);
    no_event(&mut ch).await;
}

#[tokio::test]
async fn websocket_access_is_checked() {
    let t = TestServer::start().await;
    setup(&t).await;
    let bob = t.user("bob").await;
    let (_, bob_token) = bob.user.clone().unwrap();
    // bob may not read app: the upgrade is refused with 404, like a missing app.
    for app in ["app", "missing"] {
        let mut req = t.ws_url(app).into_client_request().unwrap();
        req.headers_mut()
            .insert("authorization", basic("bob", &bob_token).parse().unwrap());
        match tokio_tungstenite::connect_async(req).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
                assert_eq!(resp.status(), 404)
            }
            other => panic!("expected 404, got {other:?}"),
        }
    }
    // No credentials: 401. Query credentials work for browsers.
    match tokio_tungstenite::connect_async(t.ws_url("app")).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 401),
        other => panic!("expected 401, got {other:?}"),
    }
    let url = format!(
        "{}?username=admin&api_key={}",
        t.ws_url("app"),
        common::ADMIN_TOKEN
    );
    let (_ws, resp) = tokio_tungstenite::connect_async(url).await.unwrap();
    assert_eq!(resp.status(), 101);
    // The discovery document advertises the integration so `drg stream` finds it.
    let doc = t
        .anonymous()
        .get_json("/.well-known/drogue-endpoints")
        .await;
    let ws_url = doc["websocket_integration"]["url"].as_str().unwrap();
    assert!(
        ws_url.starts_with("ws://") && ws_url.ends_with('/'),
        "{ws_url}"
    );
    // HTTPS is preferred when both listeners are on.
    assert!(doc["http"]["url"].as_str().unwrap().starts_with("https://"));
}

#[tokio::test]
async fn a_recreated_app_has_a_new_stream() {
    let t = TestServer::start().await;
    let admin = setup(&t).await;
    let r = publish(
        &t,
        "dev1@app",
        "secret",
        "/v1/telemetry",
        r#"{"old":true}"#,
        None,
    )
    .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(
        admin
            .delete("/api/registry/v1alpha1/apps/app")
            .await
            .status(),
        204
    );
    setup(&t).await;
    let mut ws = ws_connect(&t, "app?from=earliest", "admin", common::ADMIN_TOKEN).await;
    let r = publish(
        &t,
        "dev1@app",
        "secret",
        "/v1/telemetry",
        r#"{"new":true}"#,
        None,
    )
    .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(next_event(&mut ws).await["data"], json!({"new": true}));
}
