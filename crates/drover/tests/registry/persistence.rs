//! Resources survive a server restart.

use crate::common::{expect_error, Client, TestServer};
use crate::helpers::{app_path, apps, device_path, devices, list, names, put_ok, rv};
use reqwest::StatusCode;
use serde_json::json;

async fn status_of(c: &Client, path: &str) -> StatusCode {
    c.get(path).await.status()
}

#[tokio::test]
async fn resources_survive_a_restart() {
    let mut t = TestServer::start().await;
    let c = t.admin();
    c.create_app("app").await;
    let mut app = c.get_json(&app_path("app")).await;
    app["metadata"]["labels"] = json!({"k": "v"});
    app["spec"] = json!({"custom": {"x": 1}});
    put_ok(&c, &app_path("app"), &app).await;
    c.create_device(
        "app",
        json!({"metadata": {"name": "dev", "finalizers": ["example.com/f"]}, "spec": {"alias": ["a1"], "authentication": {"credentials": [{"pass": "pw"}]}}}),
    )
    .await;
    let app = c.get_json(&app_path("app")).await;
    let dev = c.get_json(&device_path("app", "dev")).await;
    let (_, rev_before) = list(&c, &apps(), &[]).await;

    t.restart().await;
    let c = t.admin();

    assert_eq!(c.get_json(&app_path("app")).await, app);
    assert_eq!(c.get_json(&device_path("app", "dev")).await, dev);
    assert_eq!(names(&c, &devices("app"), &[]).await, ["dev"]);
    let (_, rev_after) = list(&c, &apps(), &[]).await;
    assert!(
        rev_after >= rev_before,
        "revision went back: {rev_before} -> {rev_after}"
    );

    // Uniqueness and writes still work against the persisted state.
    let r = c
        .post(
            &devices("app"),
            &json!({"metadata": {"name": "other"}, "spec": {"alias": ["a1"]}}),
        )
        .await;
    expect_error(r, StatusCode::CONFLICT, "Conflict").await;
    let mut body = dev.clone();
    body["metadata"]["labels"] = json!({"after": "restart"});
    put_ok(&c, &device_path("app", "dev"), &body).await;
    let d2 = c.get_json(&device_path("app", "dev")).await;
    assert_ne!(rv(&d2), rv(&dev));
    assert_eq!(d2["metadata"]["uid"], dev["metadata"]["uid"]);
    // Stale versions from before the restart are still refused.
    let r = c.put(&device_path("app", "dev"), &dev).await;
    expect_error(r, StatusCode::CONFLICT, "OptimisticLockFailed").await;
    assert_eq!(status_of(&c, &app_path("app")).await, StatusCode::OK);
}
