//! Changes arrive in order, from now or from any revision, also across a restart.

use crate::common::{expect_error, TestServer};
use crate::helpers::{four_changes, list_revision, put_ok, rv, uid, APPS};
use crate::sse::{assert_increasing, ev, whats, Sse, DEADLINE, WATCH};
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test]
async fn changes_arrive_in_order() {
    let t = TestServer::start().await;
    let admin = t.admin();
    let start = list_revision(&admin).await;
    let mut w = Sse::open(&admin, &format!("?since={start}"), None).await;

    let (app, created, updated) = four_changes(&admin, "w1").await;
    let cs = w.changes(4).await;
    assert_eq!(
        whats(&cs),
        [
            ev("application", "w1", None, "."),
            ev("device", "w1", Some("d1"), "."),
            ev("device", "w1", Some("d1"), ".metadata"),
            ev("device", "w1", Some("d1"), ".spec.core"),
        ]
    );
    assert!(
        cs[0].id > start,
        "first id {} after the list's revision {start}",
        cs[0].id
    );
    assert_increasing(&cs);
    for c in &cs {
        assert_eq!(
            c.event["datacontenttype"], "application/json",
            "{}",
            c.event
        );
        assert!(c.event["time"].is_string(), "{}", c.event);
    }
    assert_eq!(cs[0].uid, uid(&app));
    assert_eq!(cs[0].revision, rv(&app));
    assert_eq!(cs[1].uid, uid(&created));
    assert_eq!(cs[1].revision, rv(&created));
    assert_eq!(cs[2].uid, uid(&created));
    assert_eq!(
        cs[2].revision,
        rv(&updated),
        "data.revision is the resourceVersion after the change"
    );
    assert_eq!(cs[3].revision, rv(&updated));

    // Nothing else came in between: the next change is the next write.
    admin.create_app("w2").await;
    let next = w.next_change().await;
    assert_eq!(next.what(), ev("application", "w2", None, "."));
    assert!(next.id > cs[3].id);
    // A list taken now is at the revision of the last change.
    assert_eq!(list_revision(&admin).await, next.id);

    // A no-op update changes nothing and emits nothing.
    put_ok(
        &admin,
        &format!("{APPS}/w2"),
        json!({"metadata": {"name": "w2"}}),
    )
    .await;
    put_ok(
        &admin,
        &format!("{APPS}/w2"),
        json!({"metadata": {"name": "w2", "labels": {"a": "b"}}}),
    )
    .await;
    let c = w.next_change().await;
    assert_eq!(c.what(), ev("application", "w2", None, ".metadata"));
    assert_eq!(c.id, next.id + 1, "no event in between");
}

#[tokio::test]
async fn without_since_the_watch_starts_now() {
    let t = TestServer::start().await;
    let admin = t.admin();
    admin.create_app("before").await;
    let mut w = Sse::open(&admin, "", None).await;
    admin.create_app("after").await;
    let c = w.next_change().await;
    assert_eq!(c.what(), ev("application", "after", None, "."));

    // And from 0, everything.
    let mut all = Sse::open(&admin, "?since=0", None).await;
    let cs = all.changes(2).await;
    assert_eq!(
        whats(&cs),
        [
            ev("application", "before", None, "."),
            ev("application", "after", None, ".")
        ]
    );
    assert_eq!(cs[1].id, c.id);
}

#[tokio::test]
async fn resume_from_an_event_in_the_middle() {
    let t = TestServer::start().await;
    let admin = t.admin();
    let start = list_revision(&admin).await;
    let mut w = Sse::open(&admin, &format!("?since={start}"), None).await;
    four_changes(&admin, "r1").await;
    let cs = w.changes(4).await;
    let mid = cs[1].id.to_string();

    let mut by_query = Sse::open(&admin, &format!("?since={mid}"), None).await;
    let mut by_header = Sse::open(&admin, "", Some(&mid)).await;
    // A reconnecting browser repeats the original URL: Last-Event-ID wins over it.
    let mut both = Sse::open(&admin, &format!("?since={start}"), Some(&mid)).await;
    admin.create_app("sentinel").await;
    let sentinel = w.next_change().await;

    for (name, s) in [
        ("since", &mut by_query),
        ("Last-Event-ID", &mut by_header),
        ("both", &mut both),
    ] {
        let got = s.changes(3).await;
        let ids: Vec<u64> = got.iter().map(|c| c.id).collect();
        assert_eq!(ids, [cs[2].id, cs[3].id, sentinel.id], "resume with {name}");
        assert_eq!(whats(&got[..2]), whats(&cs[2..]), "resume with {name}");
    }

    // Invalid positions are refused.
    let r = admin.get(&format!("{WATCH}?since=abc")).await;
    expect_error(r, StatusCode::BAD_REQUEST, "BadRequest").await;
    let r = admin
        .request(reqwest::Method::GET, WATCH)
        .header("last-event-id", "x")
        .send()
        .await
        .unwrap();
    expect_error(r, StatusCode::BAD_REQUEST, "BadRequest").await;
    let r = t.anonymous().get(WATCH).await;
    expect_error(r, StatusCode::UNAUTHORIZED, "AuthenticationError").await;
}

#[tokio::test]
async fn resume_across_a_restart() {
    let mut t = TestServer::start().await;
    let admin = t.admin();
    let start = list_revision(&admin).await;
    let mut w = Sse::open(&admin, &format!("?since={start}"), None).await;
    admin.create_app("r1").await;
    admin
        .create_device("r1", json!({"metadata": {"name": "d1"}}))
        .await;
    put_ok(
        &admin,
        &format!("{APPS}/r1"),
        json!({"metadata": {"name": "r1", "labels": {"a": "b"}}}),
    )
    .await;
    let first = w.next_change().await;
    assert_eq!(first.what(), ev("application", "r1", None, "."));

    t.restart().await;
    // The old stream ends with the server (it may still deliver what it had read).
    let mut rest = Vec::new();
    while let Some(m) = tokio::time::timeout(DEADLINE, w.next_message())
        .await
        .expect("the watch did not end on shutdown")
    {
        rest.push(m);
    }
    assert!(rest.len() <= 2, "{rest:?}");

    let admin = t.admin();
    admin.create_app("r2").await;
    let mut w = Sse::open(&admin, &format!("?since={}", first.id), None).await;
    let cs = w.changes(3).await;
    assert_eq!(
        whats(&cs),
        [
            ev("device", "r1", Some("d1"), "."),
            ev("application", "r1", None, ".metadata"),
            ev("application", "r2", None, "."),
        ]
    );
    assert!(cs[0].id > first.id);
    assert_increasing(&cs);
    for (m, c) in rest.iter().zip(&cs) {
        assert_eq!(
            m.id.as_deref(),
            Some(c.id.to_string().as_str()),
            "same ids before and after the restart"
        );
    }
    admin.create_app("r3").await;
    assert_eq!(
        w.next_change().await.what(),
        ev("application", "r3", None, ".")
    );
}
