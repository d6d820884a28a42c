//! Deletes in the watch: the cascade's order, and finalizers holding deletes.

use crate::common::{expect_error, TestServer};
use crate::helpers::{delete_ok, list_revision, put_ok, uid, APPS};
use crate::sse::{assert_increasing, ev, whats, Sse};
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test]
async fn cascading_delete_emits_device_then_app_events() {
    let t = TestServer::start().await;
    let admin = t.admin();
    let app = admin.create_app("c1").await;
    let d2 = admin
        .create_device("c1", json!({"metadata": {"name": "d2"}}))
        .await;
    let d1 = admin
        .create_device("c1", json!({"metadata": {"name": "d1"}}))
        .await;
    let start = list_revision(&admin).await;
    let mut w = Sse::open(&admin, &format!("?since={start}"), None).await;

    delete_ok(&admin, &format!("{APPS}/c1")).await;
    let cs = w.changes(3).await;
    assert_increasing(&cs);
    let mut devices: Vec<(String, Option<String>, String)> = whats(&cs[..2]);
    devices.sort();
    assert_eq!(
        devices,
        [
            ev("device", "c1", Some("d1"), "."),
            ev("device", "c1", Some("d2"), ".")
        ]
    );
    for c in &cs[..2] {
        let expected = if c.device.as_deref() == Some("d1") {
            uid(&d1)
        } else {
            uid(&d2)
        };
        assert_eq!(c.uid, expected);
    }
    assert_eq!(cs[2].what(), ev("application", "c1", None, "."));
    assert_eq!(cs[2].uid, uid(&app));

    let r = admin.get(&format!("{APPS}/c1")).await;
    expect_error(r, StatusCode::NOT_FOUND, "NotFound").await;
    admin.create_app("sentinel").await;
    assert_eq!(
        w.next_change().await.what(),
        ev("application", "sentinel", None, ".")
    );
}

#[tokio::test]
async fn finalizers_hold_deletes() {
    let t = TestServer::start().await;
    let admin = t.admin();
    let app = admin
        .post(
            APPS,
            &json!({"metadata": {"name": "held", "finalizers": ["example.com/cleanup"]}}),
        )
        .await;
    assert_eq!(app.status(), StatusCode::CREATED);
    let start = list_revision(&admin).await;
    let mut w = Sse::open(&admin, &format!("?since={start}"), None).await;

    delete_ok(&admin, &format!("{APPS}/held")).await;
    let c = w.next_change().await;
    assert_eq!(c.what(), ev("application", "held", None, ".metadata"));
    let doc = admin.get_json(&format!("{APPS}/held")).await;
    assert!(doc["metadata"]["deletionTimestamp"].is_string(), "{doc}");

    // The controller removes its finalizer: the app goes.
    put_ok(
        &admin,
        &format!("{APPS}/held"),
        json!({"metadata": {"name": "held", "finalizers": []}}),
    )
    .await;
    let c = w.next_change().await;
    assert_eq!(c.what(), ev("application", "held", None, "."));
    let r = admin.get(&format!("{APPS}/held")).await;
    expect_error(r, StatusCode::NOT_FOUND, "NotFound").await;

    // A device with a finalizer holds its app.
    admin.create_app("parent").await;
    admin
        .create_device(
            "parent",
            json!({"metadata": {"name": "d1", "finalizers": ["ctl"]}}),
        )
        .await;
    admin
        .create_device("parent", json!({"metadata": {"name": "d2"}}))
        .await;
    let cs = w.changes(3).await;
    assert_eq!(cs[0].what(), ev("application", "parent", None, "."));
    delete_ok(&admin, &format!("{APPS}/parent")).await;
    let cs = w.changes(3).await;
    assert_increasing(&cs);
    let mut devices = whats(&cs[..2]);
    devices.sort();
    assert_eq!(
        devices,
        [
            ev("device", "parent", Some("d1"), ".metadata"),
            ev("device", "parent", Some("d2"), ".")
        ]
    );
    assert_eq!(cs[2].what(), ev("application", "parent", None, ".metadata"));
    let doc = admin.get_json(&format!("{APPS}/parent")).await;
    assert!(doc["metadata"]["deletionTimestamp"].is_string(), "{doc}");

    put_ok(
        &admin,
        &format!("{APPS}/parent/devices/d1"),
        json!({"metadata": {"name": "d1", "finalizers": []}}),
    )
    .await;
    let cs = w.changes(2).await;
    assert_eq!(
        whats(&cs),
        [
            ev("device", "parent", Some("d1"), "."),
            ev("application", "parent", None, ".")
        ]
    );
    let r = admin.get(&format!("{APPS}/parent")).await;
    expect_error(r, StatusCode::NOT_FOUND, "NotFound").await;
}
