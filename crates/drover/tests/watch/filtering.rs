//! What a watcher sees: only applications it may read, and the application filter.

use crate::common::{expect_error, TestServer};
use crate::helpers::{list_revision, put_ok, APPS};
use crate::sse::{assert_increasing, ev, whats, Sse, WATCH};
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test]
async fn users_see_only_changes_of_apps_they_may_read() {
    let t = TestServer::start().await;
    let alice = t.user("alice").await;
    let bob = t.user("bob").await;
    let start = list_revision(&bob).await;
    let mut bw = Sse::open(&bob, &format!("?since={start}"), None).await;
    let mut aw = Sse::open(&alice, &format!("?since={start}"), None).await;

    alice.create_app("alice-app").await;
    alice
        .create_device("alice-app", json!({"metadata": {"name": "d1"}}))
        .await;
    bob.create_app("bob-app").await;
    alice.create_app("alice-2").await;

    let c = bw.next_change().await;
    assert_eq!(
        c.what(),
        ev("application", "bob-app", None, "."),
        "bob sees alice's changes"
    );
    let cs = aw.changes(3).await;
    assert_eq!(
        whats(&cs),
        [
            ev("application", "alice-app", None, "."),
            ev("device", "alice-app", Some("d1"), "."),
            ev("application", "alice-2", None, "."),
        ],
        "alice sees bob's changes"
    );

    // Once bob may read alice-app, he sees its changes.
    let r = alice
        .put(
            "/api/admin/v1alpha1/apps/alice-app/members",
            &json!({"members": {"bob": {"role": "reader"}}}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    put_ok(
        &alice,
        &format!("{APPS}/alice-app"),
        json!({"metadata": {"name": "alice-app", "labels": {"a": "b"}}}),
    )
    .await;
    let c = bw.next_change().await;
    assert_eq!(c.what(), ev("application", "alice-app", None, ".metadata"));

    // The administrator sees everything.
    let mut all = Sse::open(&t.admin(), &format!("?since={start}"), None).await;
    let cs = all.changes(5).await;
    let apps: Vec<&str> = cs.iter().map(|c| c.app.as_str()).collect();
    assert_eq!(
        apps,
        ["alice-app", "alice-app", "bob-app", "alice-2", "alice-app"]
    );
}

#[tokio::test]
async fn app_filter() {
    let t = TestServer::start().await;
    let admin = t.admin();
    let start = list_revision(&admin).await;
    admin.create_app("f1").await;
    // The watch of an application starts once it exists, from any earlier revision.
    let mut w = Sse::open(&admin, &format!("?since={start}&app=f1"), None).await;

    admin.create_app("f2").await;
    admin
        .create_device("f2", json!({"metadata": {"name": "d1"}}))
        .await;
    admin
        .create_device("f1", json!({"metadata": {"name": "d1"}}))
        .await;
    put_ok(
        &admin,
        &format!("{APPS}/f2"),
        json!({"metadata": {"name": "f2", "labels": {"a": "b"}}}),
    )
    .await;
    put_ok(
        &admin,
        &format!("{APPS}/f1"),
        json!({"metadata": {"name": "f1", "labels": {"a": "b"}}}),
    )
    .await;

    let cs = w.changes(3).await;
    assert_eq!(
        whats(&cs),
        [
            ev("application", "f1", None, "."),
            ev("device", "f1", Some("d1"), "."),
            ev("application", "f1", None, ".metadata"),
        ]
    );
    assert_increasing(&cs);
}

/// A watch of an application that does not exist, or that the caller may not read, is a 404 like
/// every other call naming it (and the same 404 for both: no existence leak).
#[tokio::test]
async fn app_filter_of_an_unknown_or_unreadable_app_is_404() {
    let t = TestServer::start().await;
    let alice = t.user("alice").await;
    let bob = t.user("bob").await;
    alice.create_app("private").await;

    let r = alice.get(&format!("{WATCH}?app=nope")).await;
    let unknown = expect_error(r, StatusCode::NOT_FOUND, "NotFound").await;
    let r = bob.get(&format!("{WATCH}?app=private&since=0")).await;
    let unreadable = expect_error(r, StatusCode::NOT_FOUND, "NotFound").await;
    assert_eq!(
        unknown.replace("nope", "X"),
        unreadable.replace("private", "X"),
        "the same answer for unknown and unreadable"
    );
    let mut w = Sse::open(&alice, "?app=private&since=0", None).await;
    assert_eq!(
        w.next_change().await.what(),
        ev("application", "private", None, ".")
    );
}
