//! Change-event retention: a watch from a pruned revision is refused with 410 Gone.
#![allow(clippy::unwrap_used)]

mod common;

use common::{expect_error, TestServer};
use drover_registry::{Registry, SqliteRegistry};
use reqwest::StatusCode;

#[tokio::test]
async fn watch_from_pruned_history_is_gone() {
    let mut t = TestServer::start().await;
    let admin = t.admin();
    admin.create_app("old").await;
    admin.create_app("older").await;

    // Prune everything while the server is down, as the hourly pruner would after 7 days.
    t.server.take().unwrap().shutdown().await.unwrap();
    {
        let reg = SqliteRegistry::open(&t.data_dir.join("registry.db"))
            .await
            .unwrap();
        let n = reg
            .prune_changes(chrono::Utc::now() + chrono::Duration::seconds(1))
            .await
            .unwrap();
        assert_eq!(n, 2);
        reg.close().await;
    }
    t.restart_stopped().await;
    let admin = t.admin();

    let r = admin.get("/api/registry/v1alpha1/watch?since=0").await;
    let msg = expect_error(r, StatusCode::GONE, "Gone").await;
    assert!(msg.contains("list again"), "{msg}");

    // From the compacted revision on, the watch is fine.
    let r = admin
        .request(reqwest::Method::GET, "/api/registry/v1alpha1/watch?since=2")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        r.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    // Lists still work, with the revision to start from.
    let r = admin.get("/api/registry/v1alpha1/apps").await;
    assert_eq!(r.headers()["drover-revision"], "2");
}
