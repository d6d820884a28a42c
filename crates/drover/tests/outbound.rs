//! The outbound address policy end to end: external command endpoints that point inside
//! (a listener on 127.0.0.1) are refused when the device is written (literal addresses,
//! `localhost`) or when a command is sent (names, judged on what they resolve to), are reached
//! only when allow-listed, and redirects are not followed.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use common::{expect_error, TestServer};
use drover_integrations::outbound::OutboundPolicy;
use reqwest::StatusCode;
use serde_json::{json, Value};

const DEVICES: &str = "/api/registry/v1alpha1/apps/app/devices";

/// A server whose outbound allow-list is `allow`.
async fn start_allowing(allow: &str) -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::config(dir.path());
    config.outbound_allow = OutboundPolicy::parse_list(allow).unwrap();
    let mut t = TestServer::start_with(config).await;
    t.dir = Some(dir);
    t
}

/// A listener nobody serves: whatever connects waits in its accept queue, to be counted.
fn untouched(ip: &str) -> (std::net::TcpListener, u16) {
    let l = std::net::TcpListener::bind((ip, 0)).unwrap();
    l.set_nonblocking(true).unwrap();
    let port = l.local_addr().unwrap().port();
    (l, port)
}

fn connections(l: &std::net::TcpListener) -> usize {
    std::iter::from_fn(|| l.accept().ok()).count()
}

/// A gateway whose commands go to `url`.
fn gateway(url: &str) -> Value {
    json!({"metadata": {"name": "lns"}, "spec": {"commands": {"commands": [
        {"external": {"type": null, "url": url, "method": "POST", "headers": {}}}]}}})
}

/// The gateway `lns` with the endpoint `url` and the device `lora-1` behind it.
async fn devices(t: &TestServer, url: &str) {
    let admin = t.admin();
    admin.create_app("app").await;
    admin.create_device("app", gateway(url)).await;
    admin
        .create_device(
            "app",
            json!({"metadata": {"name": "lora-1"}, "spec": {"gatewaySelector": {"matchNames": ["lns"]}}}),
        )
        .await;
}

async fn send_command(t: &TestServer) -> reqwest::Response {
    t.admin()
        .request(
            reqwest::Method::POST,
            "/api/command/v1alpha1/apps/app/devices/lora-1?command=open",
        )
        .body("x")
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn inside_addresses_are_refused_when_the_device_is_written() {
    let (l, port) = untouched("127.0.0.1");
    let t = TestServer::start().await;
    let admin = t.admin();
    admin.create_app("app").await;
    for url in [
        format!("http://127.0.0.1:{port}/cmd"),
        format!("http://[::ffff:127.0.0.1]:{port}/cmd"),
        format!("http://2130706433:{port}/cmd"),
        format!("http://[::1]:{port}/cmd"),
        format!("http://localhost:{port}/cmd"),
        "http://169.254.169.254/latest/meta-data".to_string(),
        "https://10.0.0.1/".to_string(),
    ] {
        let r = admin.post(DEVICES, &gateway(&url)).await;
        let msg = expect_error(r, StatusCode::BAD_REQUEST, "BadRequest").await;
        assert!(msg.contains(&format!("'{url}'")), "{url}: {msg}");
        assert!(
            msg.contains("refused by the outbound address policy"),
            "{url}: {msg}"
        );
        assert!(
            msg.contains("allow it with --outbound-allow"),
            "{url}: {msg}"
        );
    }
    let r = admin
        .post(DEVICES, &gateway(&format!("http://127.0.0.1:{port}/cmd")))
        .await;
    let msg = expect_error(r, StatusCode::BAD_REQUEST, "BadRequest").await;
    assert!(msg.contains("127.0.0.1 is a loopback address"), "{msg}");

    // An update is checked the same way; the stored device stays as it was.
    admin
        .create_device("app", gateway("http://lns.example.com/downlink"))
        .await;
    let r = admin
        .put(
            &format!("{DEVICES}/lns"),
            &gateway(&format!("http://127.0.0.1:{port}/cmd")),
        )
        .await;
    expect_error(r, StatusCode::BAD_REQUEST, "BadRequest").await;
    let stored = admin.get_json(&format!("{DEVICES}/lns")).await;
    assert_eq!(
        stored["spec"]["commands"]["commands"][0]["external"]["url"],
        "http://lns.example.com/downlink"
    );
    assert_eq!(connections(&l), 0);

    // Allow-listed, the same URL is accepted.
    let t = start_allowing("127.0.0.1").await;
    t.admin().create_app("app").await;
    t.admin()
        .create_device("app", gateway(&format!("http://127.0.0.1:{port}/cmd")))
        .await;
}

#[tokio::test]
async fn names_that_resolve_inside_are_refused_when_sending() {
    let (l, port) = untouched("127.0.0.1");
    // Written while `localhost` was allowed; the operator has since removed the exception (the
    // same as a name that resolves inside only by the time a command is sent).
    let mut t = start_allowing("localhost").await;
    devices(&t, &format!("http://localhost:{port}/downlink")).await;
    t.restart().await;

    let r = send_command(&t).await;
    let msg = expect_error(r, StatusCode::BAD_GATEWAY, "ExternalEndpointError").await;
    assert!(
        msg.starts_with(
            "the external command endpoint failed: refused by the outbound address policy: localhost resolves to "
        ),
        "{msg}"
    );
    assert!(msg.contains("(loopback)"), "{msg}");
    assert!(msg.contains("allow it with --outbound-allow"), "{msg}");
    assert_eq!(connections(&l), 0, "the listener was reached");
}

#[tokio::test]
async fn allow_listed_endpoints_are_reached_and_redirects_are_not_followed() {
    // Inside, not on the allow-list: the target of the redirect.
    let (inner, inner_port) = untouched("127.0.0.2");
    let target = format!("http://127.0.0.2:{inner_port}/secret");
    let delivered = Arc::new(AtomicUsize::new(0));
    let d2 = delivered.clone();
    let app = axum::Router::new()
        .route(
            "/downlink",
            axum::routing::post(move || {
                d2.fetch_add(1, Ordering::SeqCst);
                async { StatusCode::ACCEPTED }
            }),
        )
        .route(
            "/bounce",
            axum::routing::post(move || {
                let target = target.clone();
                async move {
                    (
                        StatusCode::TEMPORARY_REDIRECT,
                        [(reqwest::header::LOCATION, target)],
                    )
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let t = start_allowing("127.0.0.1").await;
    devices(&t, &format!("http://{addr}/downlink")).await;
    assert_eq!(send_command(&t).await.status(), StatusCode::ACCEPTED);
    assert_eq!(delivered.load(Ordering::SeqCst), 1);

    let r = t
        .admin()
        .put(
            &format!("{DEVICES}/lns"),
            &gateway(&format!("http://{addr}/bounce")),
        )
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = send_command(&t).await;
    let msg = expect_error(r, StatusCode::BAD_GATEWAY, "ExternalEndpointError").await;
    assert!(
        msg.contains(&format!(
            "answered 307 Temporary Redirect (to http://127.0.0.2:{inner_port}/secret); redirects are not followed"
        )),
        "{msg}"
    );
    assert_eq!(connections(&inner), 0, "the redirect was followed");

    // The redirect's target is not on the allow-list (127.0.0.1/32) either.
    let r = t
        .admin()
        .put(
            &format!("{DEVICES}/lns"),
            &gateway(&format!("http://127.0.0.2:{inner_port}/secret")),
        )
        .await;
    let msg = expect_error(r, StatusCode::BAD_REQUEST, "BadRequest").await;
    assert!(msg.contains("127.0.0.2 is a loopback address"), "{msg}");
}
