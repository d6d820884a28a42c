//! Deletes: soft delete with finalizers, preconditions, and the application cascade.

use crate::common::{expect_error, Client, TestServer};
use crate::helpers::{
    app_path, apps, assert_gone, assert_server_timestamp, delete_ok, device_path, devices,
    finalizers, names, put_ok, rv,
};
use reqwest::{Method, Response, StatusCode};
use serde_json::{json, Value};

/// DELETE with a JSON body (preconditions).
async fn delete_with(c: &Client, path: &str, body: &Value) -> Response {
    c.request(Method::DELETE, path)
        .json(body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn device_soft_delete_with_finalizers() {
    let t = TestServer::start().await;
    let c = t.admin();
    c.create_app("app").await;
    c.create_device(
        "app",
        json!({"metadata": {"name": "held", "finalizers": ["example.com/cleanup"]}}),
    )
    .await;
    c.create_device("app", json!({"metadata": {"name": "free"}}))
        .await;
    let p = device_path("app", "held");

    // Without finalizers: gone at once.
    delete_ok(&c, &device_path("app", "free")).await;
    assert_gone(&c, &device_path("app", "free")).await;

    // With finalizers: marked.
    delete_ok(&c, &p).await;
    let d = c.get_json(&p).await;
    assert_server_timestamp(&d["metadata"]["deletionTimestamp"], "deletionTimestamp");
    assert_eq!(finalizers(&d), ["example.com/cleanup"]);
    assert_eq!(names(&c, &devices("app"), &[]).await, ["held"]);

    // No new finalizer on a deleting resource.
    let mut add = d.clone();
    add["metadata"]["finalizers"] = json!(["example.com/cleanup", "example.com/other"]);
    let msg = expect_error(c.put(&p, &add).await, StatusCode::BAD_REQUEST, "BadRequest").await;
    assert!(msg.contains("example.com/other"), "{msg}");
    assert_eq!(c.get_json(&p).await, d);

    // Removing the last finalizer removes the device.
    let mut done = d.clone();
    done["metadata"]["finalizers"] = json!([]);
    put_ok(&c, &p, &done).await;
    assert_gone(&c, &p).await;
    assert_eq!(names(&c, &devices("app"), &[]).await, Vec::<String>::new());

    // The name is free again.
    let again = c
        .create_device("app", json!({"metadata": {"name": "held"}}))
        .await;
    assert_ne!(again["metadata"]["uid"], d["metadata"]["uid"]);
    assert!(again["metadata"].get("deletionTimestamp").is_none());
}

#[tokio::test]
async fn delete_preconditions() {
    let t = TestServer::start().await;
    let c = t.admin();
    c.create_app("app").await;
    let old = c
        .create_device("app", json!({"metadata": {"name": "dev"}}))
        .await;
    let p = device_path("app", "dev");
    let mut body = old.clone();
    body["metadata"]["labels"] = json!({"v": "2"});
    put_ok(&c, &p, &body).await;
    let cur = c.get_json(&p).await;

    let r = delete_with(
        &c,
        &p,
        &json!({"preconditions": {"resourceVersion": rv(&old)}}),
    )
    .await;
    let msg = expect_error(r, StatusCode::CONFLICT, "OptimisticLockFailed").await;
    assert!(msg.contains("resourceVersion"), "{msg}");
    assert_eq!(c.get_json(&p).await, cur);

    let r = delete_with(
        &c,
        &p,
        &json!({"preconditions": {"uid": "00000000-0000-4000-8000-000000000000"}}),
    )
    .await;
    expect_error(r, StatusCode::CONFLICT, "OptimisticLockFailed").await;
    assert_eq!(c.get_json(&p).await, cur);

    let r = delete_with(
        &c,
        &p,
        &json!({"preconditions": {"uid": cur["metadata"]["uid"]}}),
    )
    .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_gone(&c, &p).await;

    // A `null` body is no preconditions (the document allows it).
    c.create_device("app", json!({"metadata": {"name": "dev"}}))
        .await;
    let r = delete_with(&c, &p, &Value::Null).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_gone(&c, &p).await;

    // Applications too.
    let app_old = c.get_json(&app_path("app")).await;
    let mut body = app_old.clone();
    body["metadata"]["labels"] = json!({"v": "2"});
    put_ok(&c, &app_path("app"), &body).await;
    let app_cur = c.get_json(&app_path("app")).await;
    let r = delete_with(
        &c,
        &app_path("app"),
        &json!({"preconditions": {"resourceVersion": rv(&app_old)}}),
    )
    .await;
    expect_error(r, StatusCode::CONFLICT, "OptimisticLockFailed").await;
    let r = delete_with(
        &c,
        &app_path("app"),
        &json!({"preconditions": {"uid": "00000000-0000-4000-8000-000000000000"}}),
    )
    .await;
    expect_error(r, StatusCode::CONFLICT, "OptimisticLockFailed").await;
    assert_eq!(c.get_json(&app_path("app")).await, app_cur);
    let r = delete_with(
        &c,
        &app_path("app"),
        &json!({"preconditions": {"uid": app_cur["metadata"]["uid"], "resourceVersion": rv(&app_cur)}}),
    )
    .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_gone(&c, &app_path("app")).await;
}

#[tokio::test]
async fn app_delete_cascades_to_devices() {
    let t = TestServer::start().await;
    let c = t.admin();
    let old_app = c.create_app("casc").await;
    for name in ["free1", "free2"] {
        c.create_device(
            "casc",
            json!({"metadata": {"name": name}, "spec": {"alias": [format!("{name}-alias")]}}),
        )
        .await;
    }
    for name in ["held1", "held2"] {
        c.create_device(
            "casc",
            json!({"metadata": {"name": name, "finalizers": ["example.com/f"]}}),
        )
        .await;
    }

    delete_ok(&c, &app_path("casc")).await;

    // Finalizer-free devices are gone at once; the others are marked.
    assert_gone(&c, &device_path("casc", "free1")).await;
    assert_gone(&c, &device_path("casc", "free2")).await;
    for name in ["held1", "held2"] {
        let d = c.get_json(&device_path("casc", name)).await;
        assert_server_timestamp(
            &d["metadata"]["deletionTimestamp"],
            "device deletionTimestamp",
        );
        assert_eq!(finalizers(&d), ["example.com/f"]);
    }
    assert_eq!(names(&c, &devices("casc"), &[]).await, ["held1", "held2"]);

    // The app is held by its devices.
    let app = c.get_json(&app_path("casc")).await;
    assert_server_timestamp(
        &app["metadata"]["deletionTimestamp"],
        "app deletionTimestamp",
    );
    assert!(
        finalizers(&app).contains(&"has-devices".to_string()),
        "{app}"
    );
    assert_eq!(app["metadata"]["uid"], old_app["metadata"]["uid"]);

    // No new device in a deleting app, and the name is still taken.
    let r = c
        .post(&devices("casc"), &json!({"metadata": {"name": "late"}}))
        .await;
    let msg = expect_error(r, StatusCode::NOT_FOUND, "ReferenceNotFound").await;
    assert!(msg.contains("casc"), "{msg}");
    expect_error(
        c.post(&apps(), &json!({"metadata": {"name": "casc"}}))
            .await,
        StatusCode::CONFLICT,
        "Conflict",
    )
    .await;

    // A client cannot take `has-devices` away while devices remain.
    let mut strip = app.clone();
    strip["metadata"]["finalizers"] = json!([]);
    let status = c.put(&app_path("casc"), &strip).await.status();
    assert!(
        status.is_client_error() || status == StatusCode::NO_CONTENT,
        "{status}"
    );
    let app = c.get_json(&app_path("casc")).await;
    assert!(
        finalizers(&app).contains(&"has-devices".to_string()),
        "{app}"
    );

    // A device marked by the cascade takes no new finalizer either.
    let mut d = c.get_json(&device_path("casc", "held1")).await;
    d["metadata"]["finalizers"] = json!(["example.com/f", "example.com/g"]);
    let msg = expect_error(
        c.put(&device_path("casc", "held1"), &d).await,
        StatusCode::BAD_REQUEST,
        "BadRequest",
    )
    .await;
    assert!(msg.contains("example.com/g"), "{msg}");

    // First held device released: the app still waits for the second.
    let mut d = c.get_json(&device_path("casc", "held1")).await;
    d["metadata"]["finalizers"] = json!([]);
    put_ok(&c, &device_path("casc", "held1"), &d).await;
    assert_gone(&c, &device_path("casc", "held1")).await;
    let app = c.get_json(&app_path("casc")).await;
    assert!(
        finalizers(&app).contains(&"has-devices".to_string()),
        "{app}"
    );

    // Last one released: device, then app, gone.
    let mut d = c.get_json(&device_path("casc", "held2")).await;
    d["metadata"]["finalizers"] = json!([]);
    put_ok(&c, &device_path("casc", "held2"), &d).await;
    assert_gone(&c, &device_path("casc", "held2")).await;
    assert_gone(&c, &app_path("casc")).await;
    assert_eq!(names(&c, &apps(), &[]).await, Vec::<String>::new());

    // A new app of the same name is a new resource, with none of the old devices.
    let new_app = c.create_app("casc").await;
    assert_ne!(new_app["metadata"]["uid"], old_app["metadata"]["uid"]);
    assert!(new_app["metadata"].get("deletionTimestamp").is_none());
    assert!(finalizers(&new_app).is_empty(), "{new_app}");
    assert_eq!(names(&c, &devices("casc"), &[]).await, Vec::<String>::new());
    assert_gone(&c, &device_path("casc", "held2")).await;
    // Old names and aliases are free.
    c.create_device("casc", json!({"metadata": {"name": "held1"}}))
        .await;
    c.create_device(
        "casc",
        json!({"metadata": {"name": "x"}, "spec": {"alias": ["free1-alias"]}}),
    )
    .await;
    c.create_device("casc", json!({"metadata": {"name": "free1"}}))
        .await;
}

#[tokio::test]
async fn app_with_own_finalizer_waits_for_it() {
    let t = TestServer::start().await;
    let c = t.admin();
    let r = c
        .post(
            &apps(),
            &json!({"metadata": {"name": "own", "finalizers": ["example.com/app"]}}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    c.create_device(
        "own",
        json!({"metadata": {"name": "dev", "finalizers": ["example.com/dev"]}}),
    )
    .await;

    delete_ok(&c, &app_path("own")).await;
    let app = c.get_json(&app_path("own")).await;
    let f = finalizers(&app);
    assert!(
        f.contains(&"example.com/app".to_string()) && f.contains(&"has-devices".to_string()),
        "{app}"
    );

    // The device goes; the app keeps waiting for its own finalizer.
    let mut d = c.get_json(&device_path("own", "dev")).await;
    d["metadata"]["finalizers"] = json!([]);
    put_ok(&c, &device_path("own", "dev"), &d).await;
    assert_gone(&c, &device_path("own", "dev")).await;
    let app = c.get_json(&app_path("own")).await;
    assert_eq!(finalizers(&app), ["example.com/app"]);
    assert_server_timestamp(&app["metadata"]["deletionTimestamp"], "deletionTimestamp");
    expect_error(
        c.post(&devices("own"), &json!({"metadata": {"name": "late"}}))
            .await,
        StatusCode::NOT_FOUND,
        "ReferenceNotFound",
    )
    .await;

    // Adding a finalizer to the deleting app is refused.
    let mut add = app.clone();
    add["metadata"]["finalizers"] = json!(["example.com/app", "example.com/more"]);
    let msg = expect_error(
        c.put(&app_path("own"), &add).await,
        StatusCode::BAD_REQUEST,
        "BadRequest",
    )
    .await;
    assert!(msg.contains("example.com/more"), "{msg}");

    let mut done = app.clone();
    done["metadata"]["finalizers"] = json!([]);
    put_ok(&c, &app_path("own"), &done).await;
    assert_gone(&c, &app_path("own")).await;

    // An app with neither finalizers nor held devices goes at once.
    c.create_app("plain").await;
    c.create_device("plain", json!({"metadata": {"name": "d"}}))
        .await;
    delete_ok(&c, &app_path("plain")).await;
    assert_gone(&c, &app_path("plain")).await;
}
