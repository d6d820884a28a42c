//! Device twins through the management API: reading, desired merge patches with versions and
//! If-Match, tags, limits and roles; every desired change lands in the application's stream as
//! one CloudEvent.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{expect_error, TestServer, ADMIN_TOKEN};
use futures::StreamExt;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

const TWIN: &str = "/api/registry/v1alpha1/apps/tw/devices/d1/twin";

async fn patch(c: &common::Client, body: &str, if_match: Option<&str>) -> reqwest::Response {
    let mut r = c
        .request(Method::PATCH, &format!("{TWIN}/desired"))
        .header("content-type", "application/merge-patch+json")
        .body(body.to_string());
    if let Some(v) = if_match {
        r = r.header("if-match", v);
    }
    r.send().await.unwrap()
}

#[tokio::test]
async fn desired_patches_tags_and_stream_events() {
    let t = TestServer::start().await;
    let admin = t.admin();
    admin.create_app("tw").await;
    admin
        .create_device("tw", json!({"metadata": {"name": "d1"}}))
        .await;

    let r = admin.get(TWIN).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["etag"], "\"1\"");
    let twin: Value = r.json().await.unwrap();
    assert_eq!(
        twin,
        json!({"desired": {}, "desiredVersion": 1, "reported": {}, "reportedVersion": 1, "tags": {}})
    );

    let r = patch(
        &admin,
        r#"{"mode": "eco", "fan": {"speed": 3}}"#,
        Some("\"1\""),
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["etag"], "\"2\"");
    let r = patch(&admin, r#"{"fan": null}"#, None).await;
    let twin: Value = r.json().await.unwrap();
    assert_eq!(twin["desired"], json!({"mode": "eco"}));
    assert_eq!(twin["desiredVersion"], 3);

    // If-Match on an older version, keys the twin refuses, no object: refused, nothing changes.
    expect_error(
        patch(&admin, r#"{"mode": "max"}"#, Some("\"2\"")).await,
        StatusCode::CONFLICT,
        "OptimisticLockFailed",
    )
    .await;
    let msg = expect_error(
        patch(&admin, r#"{"$version": 9}"#, None).await,
        StatusCode::BAD_REQUEST,
        "BadRequest",
    )
    .await;
    assert!(msg.contains("desired"), "{msg}");
    expect_error(
        patch(&admin, "[1]", None).await,
        StatusCode::BAD_REQUEST,
        "BadRequest",
    )
    .await;
    expect_error(
        patch(&admin, r#"{"a": 1}"#, Some("x")).await,
        StatusCode::BAD_REQUEST,
        "BadRequest",
    )
    .await;
    assert_eq!(admin.get_json(TWIN).await["desiredVersion"], 3);

    let r = admin
        .put(&format!("{TWIN}/tags"), &json!({"floor": 3}))
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let twin: Value = r.json().await.unwrap();
    assert_eq!(twin["tags"], json!({"floor": 3}));
    assert_eq!(
        twin["desiredVersion"], 3,
        "tags have no version of their own"
    );

    // Every desired change is one event in the app's stream, in order.
    let url = format!(
        "{}?username=admin&api_key={ADMIN_TOKEN}&from=earliest",
        t.ws_url("tw")
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let msg = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("twin events within 10 s")
            .unwrap()
            .unwrap();
        let Message::Text(text) = msg else { continue };
        let ev: Value = serde_json::from_str(text.as_str()).unwrap();
        if ev["type"] == "io.drover.twin.desired.v1" {
            seen.push(ev);
        }
    }
    assert_eq!(seen[0]["subject"], "twin/desired");
    assert_eq!(seen[0]["device"], "d1");
    assert_eq!(
        seen[0]["data"],
        json!({"patch": {"mode": "eco", "fan": {"speed": 3}}, "version": 2})
    );
    assert_eq!(
        seen[1]["data"],
        json!({"patch": {"fan": null}, "version": 3})
    );
}

#[tokio::test]
async fn roles_and_tenancy() {
    let t = TestServer::start().await;
    let alice = t.user("alice").await;
    let bob = t.user("bob").await;
    let carol = t.user("carol").await;
    alice.create_app("tw").await;
    alice
        .create_device("tw", json!({"metadata": {"name": "d1"}}))
        .await;
    let r = alice
        .put(
            "/api/admin/v1alpha1/apps/tw/members",
            &json!({"members": {"bob": {"role": "reader"}}}),
        )
        .await;
    assert!(r.status().is_success(), "{}", r.status());

    assert_eq!(bob.get_json(TWIN).await["desiredVersion"], 1);
    expect_error(
        patch(&bob, r#"{"a": 1}"#, None).await,
        StatusCode::FORBIDDEN,
        "AuthenticationError",
    )
    .await;
    for r in [
        carol.get(TWIN).await,
        patch(&carol, r#"{"a": 1}"#, None).await,
    ] {
        expect_error(r, StatusCode::NOT_FOUND, "NotFound").await;
    }
    expect_error(
        alice
            .get("/api/registry/v1alpha1/apps/tw/devices/nope/twin")
            .await,
        StatusCode::NOT_FOUND,
        "NotFound",
    )
    .await;
}
