//! Updates: optimistic locking, generation and resource version rules, concurrent writers.

use crate::common::{expect_error, TestServer};
use crate::helpers::{app_path, assert_gone, device_path, devices, generation, names, put_ok, rv};
use reqwest::StatusCode;
use serde_json::json;
use std::collections::HashSet;

#[tokio::test]
async fn app_update_optimistic_locking() {
    let t = TestServer::start().await;
    let c = t.admin();
    c.create_app("app").await;
    let v1 = c.get_json(&app_path("app")).await;

    // PUT with the current version.
    let mut body = v1.clone();
    body["metadata"]["labels"] = json!({"step": "one"});
    put_ok(&c, &app_path("app"), &body).await;
    let v2 = c.get_json(&app_path("app")).await;
    assert_eq!(v2["metadata"]["labels"], json!({"step": "one"}));
    assert_ne!(rv(&v2), rv(&v1));

    // Stale resourceVersion: refused, nothing changes.
    let mut stale = v1.clone();
    stale["metadata"]["labels"] = json!({"step": "stale"});
    let msg = expect_error(
        c.put(&app_path("app"), &stale).await,
        StatusCode::CONFLICT,
        "OptimisticLockFailed",
    )
    .await;
    assert!(msg.contains("resourceVersion"), "{msg}");
    assert_eq!(c.get_json(&app_path("app")).await, v2);

    // Wrong uid (resourceVersion current): refused.
    let mut wrong_uid = v2.clone();
    wrong_uid["metadata"]["uid"] = json!("00000000-0000-4000-8000-000000000000");
    wrong_uid["metadata"]["labels"] = json!({"step": "wrong-uid"});
    let msg = expect_error(
        c.put(&app_path("app"), &wrong_uid).await,
        StatusCode::CONFLICT,
        "OptimisticLockFailed",
    )
    .await;
    assert!(msg.contains("uid"), "{msg}");
    assert_eq!(c.get_json(&app_path("app")).await, v2);

    // Wrong uid alone (no resourceVersion): refused too.
    let msg = expect_error(
        c.put(
            &app_path("app"),
            &json!({"metadata": {"name": "app", "uid": "00000000-0000-4000-8000-000000000000"}}),
        )
        .await,
        StatusCode::CONFLICT,
        "OptimisticLockFailed",
    )
    .await;
    assert!(msg.contains("uid"), "{msg}");

    // Matching uid without resourceVersion: accepted.
    put_ok(&c, &app_path("app"), &json!({"metadata": {"name": "app", "uid": v1["metadata"]["uid"], "labels": {"step": "uid-only"}}})).await;
    assert_eq!(
        c.get_json(&app_path("app")).await["metadata"]["labels"],
        json!({"step": "uid-only"})
    );

    // Neither: unconditional write.
    put_ok(
        &c,
        &app_path("app"),
        &json!({"metadata": {"name": "app", "labels": {"step": "two"}}}),
    )
    .await;
    let v3 = c.get_json(&app_path("app")).await;
    assert_eq!(v3["metadata"]["labels"], json!({"step": "two"}));
    assert_eq!(v3["metadata"]["uid"], v1["metadata"]["uid"]);

    // Body name differs from the path.
    let r = c
        .put(
            &app_path("app"),
            &json!({"metadata": {"name": "other", "labels": {"step": "x"}}}),
        )
        .await;
    let msg = expect_error(r, StatusCode::BAD_REQUEST, "BadRequest").await;
    assert!(msg.contains("other") && msg.contains("app"), "{msg}");
    assert_eq!(c.get_json(&app_path("app")).await, v3);
    assert_gone(&c, &app_path("other")).await;
}

#[tokio::test]
async fn device_update_optimistic_locking() {
    let t = TestServer::start().await;
    let c = t.admin();
    c.create_app("app").await;
    c.create_app("app2").await;
    c.create_device("app", json!({"metadata": {"name": "dev"}}))
        .await;
    let p = device_path("app", "dev");
    let v1 = c.get_json(&p).await;

    let mut body = v1.clone();
    body["spec"] = json!({"custom": {"a": 1}});
    put_ok(&c, &p, &body).await;
    let v2 = c.get_json(&p).await;
    assert_eq!(v2["spec"], json!({"custom": {"a": 1}}));
    assert_ne!(rv(&v2), rv(&v1));

    let mut stale = v1.clone();
    stale["spec"] = json!({"custom": {"a": 2}});
    let msg = expect_error(
        c.put(&p, &stale).await,
        StatusCode::CONFLICT,
        "OptimisticLockFailed",
    )
    .await;
    assert!(msg.contains("resourceVersion"), "{msg}");
    assert_eq!(c.get_json(&p).await, v2);

    let mut wrong_uid = v2.clone();
    wrong_uid["metadata"]["uid"] = json!("00000000-0000-4000-8000-000000000000");
    wrong_uid["spec"] = json!({"custom": {"a": 3}});
    let msg = expect_error(
        c.put(&p, &wrong_uid).await,
        StatusCode::CONFLICT,
        "OptimisticLockFailed",
    )
    .await;
    assert!(msg.contains("uid"), "{msg}");
    assert_eq!(c.get_json(&p).await, v2);

    put_ok(
        &c,
        &p,
        &json!({"metadata": {"name": "dev"}, "spec": {"custom": {"a": 4}}}),
    )
    .await;
    let v3 = c.get_json(&p).await;
    assert_eq!(v3["spec"], json!({"custom": {"a": 4}}));
    assert_eq!(v3["metadata"]["uid"], v1["metadata"]["uid"]);
    assert_eq!(v3["metadata"]["application"], "app");

    // Name mismatch.
    let msg = expect_error(
        c.put(
            &p,
            &json!({"metadata": {"name": "other"}, "spec": {"custom": {"a": 5}}}),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "BadRequest",
    )
    .await;
    assert!(msg.contains("other"), "{msg}");
    // metadata.application naming another app.
    let msg = expect_error(
        c.put(&p, &json!({"metadata": {"name": "dev", "application": "app2"}, "spec": {"custom": {"a": 6}}})).await,
        StatusCode::BAD_REQUEST,
        "BadRequest",
    )
    .await;
    assert!(msg.contains("app2"), "{msg}");
    assert_eq!(c.get_json(&p).await, v3);
    assert_gone(&c, &device_path("app", "other")).await;
    assert_eq!(names(&c, &devices("app2"), &[]).await, Vec::<String>::new());
}

#[tokio::test]
async fn generation_and_resource_version_rules() {
    let t = TestServer::start().await;
    let c = t.admin();
    let created = c.create_app("app").await;
    let p = app_path("app");
    let mut versions = HashSet::new();
    versions.insert(rv(&created));

    // Labels only: new resourceVersion, same generation.
    let mut body = c.get_json(&p).await;
    body["metadata"]["labels"] = json!({"a": "1"});
    put_ok(&c, &p, &body).await;
    let v = c.get_json(&p).await;
    assert_eq!(generation(&v), 1);
    assert!(versions.insert(rv(&v)), "resourceVersion reused: {v}");

    // Annotations only.
    let mut body = v.clone();
    body["metadata"]["annotations"] = json!({"note": "anything goes here"});
    put_ok(&c, &p, &body).await;
    let v = c.get_json(&p).await;
    assert_eq!(
        v["metadata"]["annotations"],
        json!({"note": "anything goes here"})
    );
    assert_eq!(generation(&v), 1);
    assert!(versions.insert(rv(&v)), "resourceVersion reused: {v}");

    // Spec: generation 2.
    let mut body = v.clone();
    body["spec"] = json!({"core": {"disabled": true}});
    put_ok(&c, &p, &body).await;
    let v = c.get_json(&p).await;
    assert_eq!(generation(&v), 2);
    assert!(versions.insert(rv(&v)), "resourceVersion reused: {v}");

    // Status only: new version, same generation.
    let mut body = v.clone();
    body["status"] = json!({"custom": {"phase": "ready"}});
    put_ok(&c, &p, &body).await;
    let v = c.get_json(&p).await;
    assert_eq!(v["status"]["custom"], json!({"phase": "ready"}));
    assert_eq!(generation(&v), 2);
    assert!(versions.insert(rv(&v)), "resourceVersion reused: {v}");

    // Spec again: generation 3.
    let mut body = v.clone();
    body["spec"] = json!({"core": {"disabled": false}});
    put_ok(&c, &p, &body).await;
    let v = c.get_json(&p).await;
    assert_eq!(generation(&v), 3);
    assert!(versions.insert(rv(&v)), "resourceVersion reused: {v}");

    // No-op PUT of the GET body: nothing changes (even though the registry moved on meanwhile).
    c.create_app("unrelated").await;
    put_ok(&c, &p, &v).await;
    assert_eq!(c.get_json(&p).await, v);
    // No-op without preconditions, with forged server fields (ignored): nothing changes.
    let mut forged = v.clone();
    forged["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("resourceVersion");
    forged["metadata"]["generation"] = json!(42);
    forged["metadata"]["creationTimestamp"] = json!("2000-01-01T00:00:00Z");
    put_ok(&c, &p, &forged).await;
    assert_eq!(c.get_json(&p).await, v);
    // A client-sent deletionTimestamp does not delete anything.
    let mut forged = v.clone();
    forged["metadata"]["deletionTimestamp"] = json!("2000-01-01T00:00:00Z");
    put_ok(&c, &p, &forged).await;
    assert_eq!(c.get_json(&p).await, v);

    // Devices follow the same rules.
    c.create_device("app", json!({"metadata": {"name": "dev"}}))
        .await;
    let dp = device_path("app", "dev");
    let d1 = c.get_json(&dp).await;
    let mut body = d1.clone();
    body["metadata"]["labels"] = json!({"x": "y"});
    put_ok(&c, &dp, &body).await;
    let d2 = c.get_json(&dp).await;
    assert_eq!(generation(&d2), 1);
    assert_ne!(rv(&d2), rv(&d1));
    let mut body = d2.clone();
    body["spec"] = json!({"gatewaySelector": {"matchNames": ["gw"]}});
    put_ok(&c, &dp, &body).await;
    let d3 = c.get_json(&dp).await;
    assert_eq!(generation(&d3), 2);
    assert_ne!(rv(&d3), rv(&d2));
    assert_ne!(rv(&d3), rv(&d1));
    c.create_device("unrelated", json!({"metadata": {"name": "other"}}))
        .await;
    put_ok(&c, &dp, &d3).await;
    assert_eq!(c.get_json(&dp).await, d3);
}

#[tokio::test]
async fn concurrent_writes_with_the_same_version_have_one_winner() {
    let t = TestServer::start().await;
    let c = t.admin();
    c.create_app("app").await;
    c.create_device("app", json!({"metadata": {"name": "dev"}}))
        .await;
    let p = device_path("app", "dev");
    let base = c.get_json(&p).await;

    // Eight writers read the same version; exactly one may write.
    let puts = (0..8).map(|i| {
        let mut body = base.clone();
        body["metadata"]["labels"] = json!({"writer": i.to_string()});
        let c = c.clone();
        let p = p.clone();
        async move { c.put(&p, &body).await.status() }
    });
    let statuses = futures::future::join_all(puts).await;
    let won: Vec<usize> = statuses
        .iter()
        .enumerate()
        .filter(|(_, s)| **s == StatusCode::NO_CONTENT)
        .map(|(i, _)| i)
        .collect();
    assert_eq!(won.len(), 1, "{statuses:?}");
    assert!(
        statuses
            .iter()
            .all(|s| *s == StatusCode::NO_CONTENT || *s == StatusCode::CONFLICT),
        "{statuses:?}"
    );
    let after = c.get_json(&p).await;
    assert_eq!(
        after["metadata"]["labels"],
        json!({"writer": won[0].to_string()})
    );

    // Concurrent creates of one name: one 201, the rest 409.
    let creates = (0..6).map(|i| {
        let c = c.clone();
        async move {
            c.post(
                &devices("app"),
                &json!({"metadata": {"name": "race"}, "spec": {"n": i}}),
            )
            .await
            .status()
        }
    });
    let statuses = futures::future::join_all(creates).await;
    assert_eq!(
        statuses
            .iter()
            .filter(|s| **s == StatusCode::CREATED)
            .count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses
            .iter()
            .filter(|s| **s == StatusCode::CONFLICT)
            .count(),
        5,
        "{statuses:?}"
    );

    // Concurrent creates claiming one alias: one wins.
    let creates = (0..6).map(|i| {
        let c = c.clone();
        async move { c.post(&devices("app"), &json!({"metadata": {"name": format!("al-{i}")}, "spec": {"alias": ["shared-alias"]}})).await.status() }
    });
    let statuses = futures::future::join_all(creates).await;
    assert_eq!(
        statuses
            .iter()
            .filter(|s| **s == StatusCode::CREATED)
            .count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses
            .iter()
            .filter(|s| **s == StatusCode::CONFLICT)
            .count(),
        5,
        "{statuses:?}"
    );
}
