//! Behaviour every `Registry` backend must show. Runs against the embedded SQLite store; the
//! PostgreSQL store (issue 6) runs the same functions.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::sync::Arc;

use drover_model::{Principal, ResourceInput};
use drover_registry::{ListOptions, Preconditions, Registry, SqliteRegistry};
use serde_json::json;

fn input(v: serde_json::Value) -> ResourceInput {
    serde_json::from_value(v).unwrap()
}

fn admin() -> Principal {
    Principal::SystemAdmin("admin".into())
}

async fn sqlite() -> (Arc<dyn Registry>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let reg = SqliteRegistry::open(&dir.path().join("r.db"))
        .await
        .unwrap();
    (Arc::new(reg), dir)
}

/// Concurrent writers: revisions are contiguous and strictly increasing in the feed, and each
/// resource's resourceVersion is the revision of its last change.
async fn revisions_are_ordered_under_concurrency(reg: Arc<dyn Registry>) {
    reg.create_app(&admin(), input(json!({"metadata": {"name": "app"}})))
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for i in 0..20 {
        let reg = reg.clone();
        tasks.push(tokio::spawn(async move {
            let d = reg
                .create_device(&admin(), "app", input(json!({"metadata": {"name": format!("d{i}")}})))
                .await
                .unwrap();
            let mut upd = json!({"metadata": {"name": format!("d{i}"), "labels": {"n": i.to_string()}}, "spec": {"core": {"disabled": true}}});
            upd["metadata"]["resourceVersion"] = json!(d.metadata.resource_version);
            reg.update_device(&admin(), "app", &format!("d{i}"), input(upd)).await.unwrap()
        }));
    }
    let mut versions = HashMap::new();
    for t in tasks {
        let d = t.await.unwrap();
        versions.insert(
            d.metadata.name.clone(),
            d.metadata.resource_version.parse::<u64>().unwrap(),
        );
    }
    let feed = reg.changes_since(0, 10_000).await.unwrap();
    // 1 app create + 20 device creates + 20 updates x 2 paths
    assert_eq!(feed.len(), 61);
    for (i, c) in feed.iter().enumerate() {
        assert_eq!(c.revision, i as u64 + 1, "contiguous revisions");
    }
    for (name, rv) in versions {
        let last = feed
            .iter()
            .rfind(|c| c.device.as_deref() == Some(&name))
            .unwrap();
        assert_eq!(
            last.revision, rv,
            "resourceVersion of {name} is its last change"
        );
    }
    assert_eq!(*reg.subscribe().borrow(), 61);
    // Resuming from the middle gives exactly the rest.
    let rest = reg.changes_since(30, 10_000).await.unwrap();
    assert_eq!(rest.first().unwrap().revision, 31);
    assert_eq!(rest.len(), 31);
}

/// Pruning removes old events and records how far the history is incomplete.
async fn pruning_marks_compaction(reg: Arc<dyn Registry>) {
    reg.create_app(&admin(), input(json!({"metadata": {"name": "p"}})))
        .await
        .unwrap();
    reg.create_device(&admin(), "p", input(json!({"metadata": {"name": "d"}})))
        .await
        .unwrap();
    assert_eq!(reg.compacted_revision().await.unwrap(), 0);
    let none = reg
        .prune_changes(chrono::Utc::now() - chrono::Duration::days(1))
        .await
        .unwrap();
    assert_eq!(none, 0);
    let n = reg
        .prune_changes(chrono::Utc::now() + chrono::Duration::seconds(1))
        .await
        .unwrap();
    assert_eq!(n, 2);
    assert_eq!(reg.compacted_revision().await.unwrap(), 2);
    assert!(reg.changes_since(0, 100).await.unwrap().is_empty());
    reg.delete_device(&admin(), "p", "d", Preconditions::default())
        .await
        .unwrap();
    let feed = reg.changes_since(2, 100).await.unwrap();
    assert_eq!(feed.len(), 1);
    assert_eq!(feed[0].revision, 3);
    assert_eq!(feed[0].path, ".");
}

/// The list revision is the feed position the list saw.
async fn list_revision_matches_feed(reg: Arc<dyn Registry>) {
    reg.create_app(&admin(), input(json!({"metadata": {"name": "l"}})))
        .await
        .unwrap();
    let l = reg
        .list_apps(&admin(), &ListOptions::default())
        .await
        .unwrap();
    assert_eq!(l.revision, 1);
    reg.create_app(&admin(), input(json!({"metadata": {"name": "m"}})))
        .await
        .unwrap();
    let feed = reg.changes_since(l.revision, 100).await.unwrap();
    assert_eq!(feed.len(), 1);
    assert_eq!(feed[0].application, "m");
}

#[tokio::test]
async fn sqlite_revisions_are_ordered_under_concurrency() {
    let (reg, _dir) = sqlite().await;
    revisions_are_ordered_under_concurrency(reg).await;
}

#[tokio::test]
async fn sqlite_pruning_marks_compaction() {
    let (reg, _dir) = sqlite().await;
    pruning_marks_compaction(reg).await;
}

#[tokio::test]
async fn sqlite_list_revision_matches_feed() {
    let (reg, _dir) = sqlite().await;
    list_revision_matches_feed(reg).await;
}
