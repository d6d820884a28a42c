//! `copy_registry`: an embedded SQLite registry copied into an empty store (SQLite and, when
//! configured, PostgreSQL) is the same registry: same resources, versions, names, index,
//! users, token hashes, revision and change feed.

use std::sync::Arc;

use chrono::Utc;
use drover_model::role::{MemberEntry, Role};
use drover_model::Kind;
use drover_registry::{
    copy_registry, CopyOptions, DeviceTwins, ListOptions, MembersDoc, Registry, SqliteRegistry,
    TwinStore, WebhookStore,
};
use serde_json::json;

use crate::{admin, input, new_app, user, Postgres, Subject};

/// What a populated source holds that only its creator knows.
struct Source {
    reg: Arc<SqliteRegistry>,
    alice_token: String,
    admin_token: String,
    anchor_subject: String,
    _dir: tempfile::TempDir,
}

async fn populated() -> Source {
    let dir = tempfile::tempdir().unwrap();
    let reg = Arc::new(
        SqliteRegistry::open(&dir.path().join("r.db"))
            .await
            .unwrap(),
    );
    let subject: Subject = reg.clone();
    let admin_token = match reg.bootstrap_admin(None).await.unwrap() {
        drover_registry::AdminBootstrap::Generated(t) => t,
        other => panic!("unexpected bootstrap {other:?}"),
    };
    // Changes before `cut` are pruned: the copy must say so too.
    new_app(&subject, "early").await;
    reg.delete_app(&admin(), "early", Default::default())
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let cut = Utc::now();
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;

    let (_, alice) = reg.create_user(&admin(), "alice", false).await.unwrap();
    reg.create_user(&admin(), "bob", false).await.unwrap();
    let ca = crate::directory::ca_certificate("Migrate Test CA");
    let app = reg
        .create_app(
            &user("alice"),
            input(json!({
                "metadata": {"name": "a1", "labels": {"tier": "gold"}, "finalizers": ["keep"]},
                "spec": {"trustAnchors": {"anchors": [{"certificate": ca}]}}
            })),
        )
        .await
        .unwrap();
    let anchor_subject = app.status["trustAnchors"]["anchors"][0]["valid"]["subject"]
        .as_str()
        .unwrap()
        .to_string();
    let members = [("bob".to_string(), MemberEntry { role: Role::Reader })]
        .into_iter()
        .collect();
    reg.set_members(
        &user("alice"),
        "a1",
        MembersDoc {
            resource_version: None,
            members,
        },
    )
    .await
    .unwrap();
    reg.transfer_ownership(&user("alice"), "a1", "bob")
        .await
        .unwrap();
    reg.create_device(
        &admin(),
        "a1",
        input(json!({"metadata": {"name": "d1"}, "spec": {
            "alias": ["serial-1"],
            "authentication": {"credentials": [
                {"user": {"username": "login", "password": "p", "unique": true}},
                {"pass": "secret"}
            ]}
        }})),
    )
    .await
    .unwrap();
    reg.create_device(
        &admin(),
        "a1",
        input(json!({"metadata": {"name": "d2", "finalizers": ["f"]}})),
    )
    .await
    .unwrap();
    reg.delete_device(&admin(), "a1", "d2", Default::default())
        .await
        .unwrap();
    // A twin with a change still in the outbox, and one already appended (forgotten).
    let desired = serde_json::from_value(json!({"mode": "eco"})).unwrap();
    reg.patch_desired(&admin(), "a1", "d1", &desired, None)
        .await
        .unwrap();
    let appended = reg
        .claim_twin_changes(10, std::time::Duration::from_secs(60))
        .await
        .unwrap();
    reg.forget_twin_changes(&[appended[0].seq]).await.unwrap();
    let reported = serde_json::from_value(json!({"mode": "eco", "temp": 21})).unwrap();
    reg.patch_reported("a1", "d1", &reported).await.unwrap();
    // A webhook subscription with its secret, progress and a dead letter.
    let hook = reg
        .create_webhook(
            &admin(),
            "a1",
            serde_json::from_value(json!({"metadata": {"name": "h"},
                "spec": {"url": "https://example.com/", "secret": "0123456789abcdef"}}))
            .unwrap(),
        )
        .await
        .unwrap();
    let progress = drover_registry::WebhookProgress {
        delivered: 7,
        ..Default::default()
    };
    reg.record_webhook_progress(&hook.metadata.uid, &progress)
        .await
        .unwrap();
    let letter = drover_model::webhook::DeadLetter {
        seq: 0,
        offset: 4,
        event_id: "e4".into(),
        event_type: "io.drogue.event.v1".into(),
        device: "d1".into(),
        event: json!({"id": "e4"}),
        error: "sink answered 500".into(),
        attempts: 8,
        time: Utc::now(),
    };
    reg.add_dead_letter(&hook.metadata.uid, "a1", &letter)
        .await
        .unwrap();
    new_app(&subject, "a2").await;
    reg.prune_changes(cut).await.unwrap();
    Source {
        reg,
        alice_token: alice.token,
        admin_token,
        anchor_subject,
        _dir: dir,
    }
}

fn value<T: serde::Serialize>(v: T) -> serde_json::Value {
    serde_json::to_value(v).unwrap()
}

/// The target shows everything the source shows.
async fn same_registry(src: &Source, dst: Subject) {
    let from: Subject = src.reg.clone();
    let all = ListOptions::default();
    let (apps, copied) = (
        from.list_apps(&admin(), &all).await.unwrap(),
        dst.list_apps(&admin(), &all).await.unwrap(),
    );
    assert_eq!(value(&apps.items), value(&copied.items));
    assert_eq!(apps.revision, copied.revision);
    assert_eq!(*dst.subscribe().borrow(), apps.revision);
    for app in ["a1", "a2"] {
        let (a, b) = (
            from.list_devices(&admin(), app, &all).await.unwrap(),
            dst.list_devices(&admin(), app, &all).await.unwrap(),
        );
        assert_eq!(value(&a.items), value(&b.items));
        assert_eq!(
            from.get_members(&admin(), app).await.unwrap(),
            dst.get_members(&admin(), app).await.unwrap()
        );
    }
    assert_eq!(
        dst.pending_transfer(&admin(), "a1").await.unwrap(),
        Some("bob".into())
    );
    let d2 = dst.get_device(&admin(), "a1", "d2").await.unwrap();
    assert!(d2.metadata.deletion_timestamp.is_some());
    // Tokens keep working.
    assert_eq!(
        dst.authenticate_token("alice", &src.alice_token)
            .await
            .unwrap()
            .name(),
        "alice"
    );
    assert!(dst
        .authenticate_token("admin", &src.admin_token)
        .await
        .unwrap()
        .is_admin());
    let names = |users: Vec<drover_registry::User>| {
        users
            .into_iter()
            .map(|u| (u.name, u.admin))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        names(from.list_users(&admin()).await.unwrap()),
        names(dst.list_users(&admin()).await.unwrap())
    );
    // Device lookups: alias, unique username, trust anchor.
    assert_eq!(
        dst.device("a1", "serial-1")
            .await
            .unwrap()
            .unwrap()
            .metadata
            .name,
        "d1"
    );
    assert!(dst
        .device_by_username("a1", "login")
        .await
        .unwrap()
        .is_some());
    let found = dst
        .applications_by_trust_anchor(&src.anchor_subject)
        .await
        .unwrap();
    assert_eq!(found.len(), 1);
    // The change feed, and where it was compacted.
    let compacted = from.compacted_revision().await.unwrap();
    assert!(compacted > 0);
    assert_eq!(dst.compacted_revision().await.unwrap(), compacted);
    let feed = |changes: Vec<drover_registry::Change>| {
        changes
            .into_iter()
            .map(|c| (c.revision, c.kind, c.uid, c.path, c.resource_version))
            .collect::<Vec<_>>()
    };
    let a = feed(from.changes_since(0, 10_000).await.unwrap());
    assert!(!a.is_empty());
    assert_eq!(a, feed(dst.changes_since(0, 10_000).await.unwrap()));
    // Names stay reserved, and the next write continues the revisions.
    let taken = dst
        .create_device(
            &admin(),
            "a1",
            input(json!({"metadata": {"name": "serial-1"}})),
        )
        .await;
    assert_err!(taken, Conflict);
    let next = new_app(&dst, "a3").await;
    assert_eq!(
        next.metadata.resource_version,
        (apps.revision + 1).to_string()
    );
    let last = dst.changes_since(apps.revision, 10).await.unwrap();
    assert_eq!(last.len(), 1);
    assert_eq!(last[0].kind, Kind::Application);
    // Webhook subscriptions (with their secrets and state) and dead letters.
    assert_eq!(
        from.all_webhooks().await.unwrap(),
        dst.all_webhooks().await.unwrap()
    );
    assert_eq!(
        from.webhook_status(&admin(), "a1", "h").await.unwrap(),
        dst.webhook_status(&admin(), "a1", "h").await.unwrap()
    );
    let (a, b) = (
        from.dead_letters(&admin(), "a1", "h", 0, 10).await.unwrap(),
        dst.dead_letters(&admin(), "a1", "h", 0, 10).await.unwrap(),
    );
    assert_eq!(a.len(), 1);
    assert_eq!(
        (&a[0].event_id, &a[0].error, a[0].offset),
        (&b[0].event_id, &b[0].error, b[0].offset)
    );
    // The twin, and the change not yet appended to the event stream.
    assert_eq!(
        from.device_twin("a1", "d1").await.unwrap(),
        dst.device_twin("a1", "d1").await.unwrap()
    );
    let pending = dst
        .claim_twin_changes(10, std::time::Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(
        (pending[0].section, pending[0].version),
        (drover_model::twin::Section::Reported, 2)
    );
}

#[tokio::test]
async fn copies_everything_into_sqlite() {
    let src = populated().await;
    let dir = tempfile::tempdir().unwrap();
    let dst = Arc::new(
        SqliteRegistry::open(&dir.path().join("t.db"))
            .await
            .unwrap(),
    );
    // A target that a node already started on: only its `admin`, replaced by the source's.
    dst.bootstrap_admin(None).await.unwrap();
    let report = copy_registry(&src.reg, &dst, CopyOptions::default())
        .await
        .unwrap();
    assert_eq!(report.applications.len(), 2);
    assert_eq!(report.rows.devices, 2);
    assert_eq!(report.rows.users, 3);
    assert_eq!(report.rows.tokens, 3);
    assert_eq!(report.replaced_admin_tokens, 1);
    same_registry(&src, dst).await;
}

#[tokio::test]
#[ignore = "needs PostgreSQL: set DROVER_TEST_DATABASE_URL and run with --include-ignored (CI does)"]
async fn copies_everything_into_postgres() {
    let pg = Postgres::start().await;
    let src = populated().await;
    let dst = pg.nodes[0].clone();
    dst.bootstrap_admin(None).await.unwrap();
    let report = copy_registry(&src.reg, &dst, CopyOptions::default())
        .await
        .unwrap();
    assert_eq!(report.rows.devices, 2);
    same_registry(&src, dst).await;
    pg.finish().await;
}

#[tokio::test]
async fn a_dry_run_writes_nothing_and_a_used_target_is_refused() {
    let src = populated().await;
    let dir = tempfile::tempdir().unwrap();
    let dst = Arc::new(
        SqliteRegistry::open(&dir.path().join("t.db"))
            .await
            .unwrap(),
    );
    let target: Subject = dst.clone();
    let report = copy_registry(&src.reg, &dst, CopyOptions { dry_run: true })
        .await
        .unwrap();
    assert!(report.dry_run);
    assert_eq!(report.rows.devices, 2);
    assert!(target
        .list_apps(&admin(), &ListOptions::default())
        .await
        .unwrap()
        .items
        .is_empty());
    assert_eq!(*target.subscribe().borrow(), 0);

    new_app(&target, "other").await;
    let refused = copy_registry(&src.reg, &dst, CopyOptions::default()).await;
    assert_err!(refused, Conflict);
    let apps = target
        .list_apps(&admin(), &ListOptions::default())
        .await
        .unwrap();
    assert_eq!(apps.items.len(), 1);
}

#[tokio::test]
async fn a_database_in_use_is_not_opened_exclusively() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.db");
    assert_err!(SqliteRegistry::open_exclusive(&path).await, NotFound);
    let server = SqliteRegistry::open(&path).await.unwrap();
    let s: Subject = Arc::new(server);
    new_app(&s, "kept").await;
    let refused = SqliteRegistry::open_exclusive(&path).await;
    assert_err!(refused, Unavailable);
    let Err(e) = refused else { unreachable!() };
    assert!(e.to_string().contains("stop it first"), "{e}");
    s.close().await;

    let alone = SqliteRegistry::open_exclusive(&path).await.unwrap();
    assert_eq!(app_count(&alone).await, 1);
    alone.close().await;
    let again = SqliteRegistry::open(&path).await.unwrap();
    assert_eq!(app_count(&again).await, 1);
}

async fn app_count(reg: &SqliteRegistry) -> usize {
    let all = ListOptions::default();
    reg.list_apps(&admin(), &all).await.unwrap().items.len()
}
