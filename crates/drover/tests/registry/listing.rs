//! Lists: label selectors, paging, ordering and the revision header.

use crate::common::{expect_error, Client, TestServer};
use crate::helpers::{apps, devices, get_query, list, names};
use reqwest::StatusCode;
use serde_json::{json, Value};

/// The four items s1..s4 under `path` carry: s1 env=prod,tier=web; s2 env=dev; s3 env=test,tier=db;
/// s4 no labels.
async fn check_selectors(c: &Client, path: &str) {
    let cases: &[(&str, &[&str])] = &[
        ("env=prod", &["s1"]),
        ("env!=prod", &["s2", "s3", "s4"]),
        ("env in (prod,dev)", &["s1", "s2"]),
        ("env in (prod, dev)", &["s1", "s2"]),
        ("env notin (prod,dev)", &["s3", "s4"]),
        ("env notin (prod, dev)", &["s3", "s4"]),
        ("tier", &["s1", "s3"]),
        ("!tier", &["s2", "s4"]),
        ("env=prod,tier=web", &["s1"]),
        ("env,tier=db", &["s3"]),
        ("env=prod,tier=db", &[]),
        ("env,!tier", &["s2"]),
        ("env in (prod,dev,test),tier notin (web)", &["s2", "s3"]),
        ("", &["s1", "s2", "s3", "s4"]),
    ];
    for (sel, want) in cases {
        assert_eq!(
            names(c, path, &[("labels", *sel)]).await,
            *want,
            "selector {sel:?} on {path}"
        );
    }
    assert_eq!(names(c, path, &[]).await, ["s1", "s2", "s3", "s4"]);

    for bad in ["a in b", "env in (prod", "env=prod,"] {
        let r = get_query(c, path, &[("labels", bad)]).await;
        let msg = expect_error(r, StatusCode::BAD_REQUEST, "BadRequest").await;
        assert!(
            msg.contains(bad),
            "message names the selector {bad:?}: {msg}"
        );
    }
}

fn selector_labels() -> [(&'static str, Value); 4] {
    [
        ("s3", json!({"env": "test", "tier": "db"})),
        ("s1", json!({"env": "prod", "tier": "web"})),
        ("s4", json!({})),
        ("s2", json!({"env": "dev"})),
    ]
}

#[tokio::test]
async fn label_selectors_on_apps() {
    let t = TestServer::start().await;
    let c = t.admin();
    for (name, labels) in selector_labels() {
        let r = c
            .post(
                &apps(),
                &json!({"metadata": {"name": name, "labels": labels}}),
            )
            .await;
        assert_eq!(r.status(), StatusCode::CREATED);
    }
    check_selectors(&c, &apps()).await;
}

#[tokio::test]
async fn label_selectors_on_devices() {
    let t = TestServer::start().await;
    let c = t.admin();
    c.create_app("app").await;
    // A device in another app with matching labels must never show up.
    c.create_app("other").await;
    c.create_device(
        "other",
        json!({"metadata": {"name": "s0", "labels": {"env": "prod", "tier": "web"}}}),
    )
    .await;
    for (name, labels) in selector_labels() {
        c.create_device("app", json!({"metadata": {"name": name, "labels": labels}}))
            .await;
    }
    check_selectors(&c, &devices("app")).await;
}

#[tokio::test]
async fn paging_ordering_and_revision_header() {
    let t = TestServer::start().await;
    let c = t.admin();
    let (_, rev0) = list(&c, &apps(), &[]).await;
    for name in ["p-c", "p-a", "p-e", "p-b", "p-d"] {
        let even = if matches!(name, "p-b" | "p-d") {
            json!({"even": "yes"})
        } else {
            json!({})
        };
        let r = c
            .post(
                &apps(),
                &json!({"metadata": {"name": name, "labels": even}}),
            )
            .await;
        assert_eq!(r.status(), StatusCode::CREATED);
    }
    let (items, rev1) = list(&c, &apps(), &[]).await;
    assert!(rev1 > rev0, "revision grows with writes: {rev0} -> {rev1}");
    let all: Vec<&str> = items
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(all, ["p-a", "p-b", "p-c", "p-d", "p-e"]);

    assert_eq!(names(&c, &apps(), &[("limit", "2")]).await, ["p-a", "p-b"]);
    assert_eq!(
        names(&c, &apps(), &[("limit", "2"), ("offset", "2")]).await,
        ["p-c", "p-d"]
    );
    assert_eq!(names(&c, &apps(), &[("offset", "4")]).await, ["p-e"]);
    assert_eq!(
        names(&c, &apps(), &[("limit", "10"), ("offset", "3")]).await,
        ["p-d", "p-e"]
    );
    assert_eq!(
        names(&c, &apps(), &[("offset", "10")]).await,
        Vec::<String>::new()
    );
    // Paging applies after filtering.
    assert_eq!(
        names(
            &c,
            &apps(),
            &[("labels", "even"), ("limit", "1"), ("offset", "1")]
        )
        .await,
        ["p-d"]
    );
    assert_eq!(
        names(&c, &apps(), &[("labels", "!even"), ("limit", "2")]).await,
        ["p-a", "p-c"]
    );

    let msg = expect_error(
        get_query(&c, &apps(), &[("limit", "many")]).await,
        StatusCode::BAD_REQUEST,
        "BadRequest",
    )
    .await;
    assert!(msg.contains("limit"), "{msg}");

    // Devices.
    for name in ["d3", "d1", "d2"] {
        c.create_device("p-a", json!({"metadata": {"name": name}}))
            .await;
    }
    let (_, drev) = list(&c, &devices("p-a"), &[]).await;
    assert!(
        drev > rev1,
        "device writes advance the revision: {rev1} -> {drev}"
    );
    assert_eq!(names(&c, &devices("p-a"), &[]).await, ["d1", "d2", "d3"]);
    assert_eq!(names(&c, &devices("p-a"), &[("limit", "1")]).await, ["d1"]);
    assert_eq!(
        names(&c, &devices("p-a"), &[("limit", "1"), ("offset", "1")]).await,
        ["d2"]
    );
    assert_eq!(names(&c, &devices("p-a"), &[("offset", "2")]).await, ["d3"]);

    // A read does not move the revision.
    let (_, again) = list(&c, &devices("p-a"), &[]).await;
    assert_eq!(again, drev);
}
