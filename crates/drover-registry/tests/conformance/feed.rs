//! The change feed: revisions, change events, pruning, subscriptions.

use std::collections::HashMap;
use std::time::Duration;

use drover_registry::{ListOptions, Preconditions};
use serde_json::json;

use crate::{admin, input, new_app, Subject};

conformance!(
    revisions_are_ordered_under_concurrency,
    pruning_marks_compaction,
    list_revision_matches_feed,
    changes_name_the_changed_paths,
    failed_writes_leave_no_trace,
    refused_writes_do_not_hold_up_the_next,
    subscribers_see_commits,
);

/// Concurrent writers: revisions are contiguous and strictly increasing in the feed, and each
/// resource's resourceVersion is the revision of its last change.
async fn revisions_are_ordered_under_concurrency(reg: Subject) {
    new_app(&reg, "app").await;
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
    // A limit cuts the batch, in order.
    let first = reg.changes_since(0, 5).await.unwrap();
    assert_eq!(
        first.iter().map(|c| c.revision).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5]
    );
}

/// Pruning removes old events and records how far the history is incomplete; the feed goes on
/// from there.
async fn pruning_marks_compaction(reg: Subject) {
    new_app(&reg, "p").await;
    reg.create_device(&admin(), "p", input(json!({"metadata": {"name": "d"}})))
        .await
        .unwrap();
    assert_eq!(reg.compacted_revision().await.unwrap(), 0);
    let none = reg
        .prune_changes(chrono::Utc::now() - chrono::Duration::days(1))
        .await
        .unwrap();
    assert_eq!(none, 0);
    assert_eq!(reg.compacted_revision().await.unwrap(), 0);
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
    // Pruning the rest keeps the counter: new events go on from it.
    reg.prune_changes(chrono::Utc::now() + chrono::Duration::seconds(1))
        .await
        .unwrap();
    assert_eq!(reg.compacted_revision().await.unwrap(), 3);
    new_app(&reg, "q").await;
    let feed = reg.changes_since(0, 100).await.unwrap();
    assert_eq!(feed.len(), 1);
    assert_eq!(feed[0].revision, 4);
}

/// The list revision is the feed position the list saw.
async fn list_revision_matches_feed(reg: Subject) {
    new_app(&reg, "l").await;
    let l = reg
        .list_apps(&admin(), &ListOptions::default())
        .await
        .unwrap();
    assert_eq!(l.revision, 1);
    new_app(&reg, "m").await;
    let feed = reg.changes_since(l.revision, 100).await.unwrap();
    assert_eq!(feed.len(), 1);
    assert_eq!(feed[0].application, "m");
    let devices = reg
        .list_devices(&admin(), "m", &ListOptions::default())
        .await
        .unwrap();
    assert_eq!(devices.revision, 2);
}

/// One event per changed path, carrying the resource's new resourceVersion.
async fn changes_name_the_changed_paths(reg: Subject) {
    let app = reg
        .create_app(&admin(), input(json!({"metadata": {"name": "c"}})))
        .await
        .unwrap();
    let dev = reg
        .create_device(&admin(), "c", input(json!({"metadata": {"name": "d"}})))
        .await
        .unwrap();
    reg.update_device(
        &admin(),
        "c",
        "d",
        input(json!({"metadata": {"name": "d", "labels": {"a": "b"}}, "spec": {"core": {"disabled": true}}, "status": {"x": {"y": 1}}})),
    )
    .await
    .unwrap();
    reg.delete_device(&admin(), "c", "d", Preconditions::default())
        .await
        .unwrap();
    let feed = reg.changes_since(0, 100).await.unwrap();
    let seen: Vec<_> = feed
        .iter()
        .map(|c| {
            (
                c.revision,
                c.kind.as_str(),
                c.application.as_str(),
                c.device.as_deref(),
                c.path.as_str(),
                c.resource_version,
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            (1, "application", "c", None, ".", 1),
            (2, "device", "c", Some("d"), ".", 2),
            (3, "device", "c", Some("d"), ".metadata", 5),
            (4, "device", "c", Some("d"), ".spec.core", 5),
            (5, "device", "c", Some("d"), ".status.x", 5),
            (6, "device", "c", Some("d"), ".", 6),
        ]
    );
    assert_eq!(feed[0].uid, app.metadata.uid);
    assert!(feed[1..].iter().all(|c| c.uid == dev.metadata.uid));
    let now = chrono::Utc::now();
    assert!(feed.iter().all(|c| (now - c.time).num_seconds().abs() < 60));
}

/// A refused write changes nothing: no events, no revision.
async fn failed_writes_leave_no_trace(reg: Subject) {
    new_app(&reg, "f").await;
    let again = reg
        .create_app(&admin(), input(json!({"metadata": {"name": "f"}})))
        .await;
    assert_err!(again, Conflict);
    reg.create_device(
        &admin(),
        "f",
        input(json!({"metadata": {"name": "a"}, "spec": {"alias": ["x"]}})),
    )
    .await
    .unwrap();
    let clash = reg
        .create_device(
            &admin(),
            "f",
            input(json!({"metadata": {"name": "b"}, "spec": {"alias": ["x"]}})),
        )
        .await;
    assert_err!(clash, Conflict);
    assert_eq!(reg.changes_since(0, 100).await.unwrap().len(), 2);
    assert_eq!(*reg.subscribe().borrow(), 2);
    // The refused device left no name behind.
    reg.create_device(&admin(), "f", input(json!({"metadata": {"name": "b"}})))
        .await
        .unwrap();
}

/// A refused write's transaction ends before the next write needs the database (it is not left
/// to roll back some time later).
async fn refused_writes_do_not_hold_up_the_next(reg: Subject) {
    new_app(&reg, "r").await;
    for i in 0..300 {
        let res = reg.delete_user(&admin(), "nobody").await;
        assert_err!(res, NotFound);
        let labelled = input(json!({"metadata": {"name": "r", "labels": {"i": i.to_string()}}}));
        reg.update_app(&admin(), "r", labelled).await.unwrap();
    }
}

/// The next revision `rx` sees.
async fn next(rx: &mut tokio::sync::watch::Receiver<u64>) -> u64 {
    tokio::time::timeout(Duration::from_secs(5), rx.changed())
        .await
        .expect("a revision in time")
        .unwrap();
    *rx.borrow_and_update()
}

/// A subscriber sees each commit's revision.
async fn subscribers_see_commits(reg: Subject) {
    let mut rx = reg.subscribe();
    assert_eq!(*rx.borrow_and_update(), 0);
    new_app(&reg, "s").await;
    assert_eq!(next(&mut rx).await, 1);
    // Writes without change events (tokens, members) move nothing.
    reg.create_token(&admin(), None).await.unwrap();
    assert!(!rx.has_changed().unwrap());
    let labelled = input(json!({"metadata": {"name": "s", "labels": {"a": "b"}}}));
    reg.update_app(&admin(), "s", labelled).await.unwrap();
    assert_eq!(next(&mut rx).await, 2);
    reg.ping().await.unwrap();
}
