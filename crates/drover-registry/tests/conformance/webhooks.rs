//! Webhook subscriptions: create, read and delete with access decided per application, the
//! limits, the secret kept but never shown, holds (one holder at a time, running out), progress
//! counters, and dead letters (paging, pruning, going with the application).

use std::time::Duration;

use drover_model::role::{MemberEntry, Role};
use drover_model::webhook::{DeadLetter, WebhookInput, MAX_WEBHOOKS_PER_APP};
use drover_registry::{MembersDoc, WebhookProgress};
use serde_json::json;

use crate::{admin, new_app, user, Subject};

conformance!(
    subscriptions_are_the_applications,
    holds_are_exclusive_and_run_out,
    dead_letters_page_and_go_with_the_application,
);

fn hook(name: &str) -> WebhookInput {
    serde_json::from_value(json!({"metadata": {"name": name},
        "spec": {"url": "https://example.com/hook", "secret": "0123456789abcdef0123"}}))
    .unwrap()
}

async fn subscriptions_are_the_applications(reg: Subject) {
    new_app(&reg, "wa").await;
    let mut members = MembersDoc {
        resource_version: None,
        members: Default::default(),
    };
    members
        .members
        .insert("rita".into(), MemberEntry { role: Role::Reader });
    reg.set_members(&admin(), "wa", members).await.unwrap();

    let created = reg
        .create_webhook(&admin(), "wa", hook("h1"))
        .await
        .unwrap();
    assert!(created.signed);
    assert_eq!(created.spec.secret, None, "never shown");
    assert_err!(
        reg.create_webhook(&admin(), "wa", hook("h1")).await,
        Conflict
    );
    assert_err!(
        reg.create_webhook(&user("rita"), "wa", hook("h2")).await,
        Forbidden
    );
    assert_err!(
        reg.create_webhook(&user("stranger"), "wa", hook("h2"))
            .await,
        NotFound
    );
    assert_err!(
        reg.create_webhook(&admin(), "nope", hook("h2")).await,
        NotFound
    );
    let mut bad = hook("h2");
    bad.spec.max_events = 0;
    assert_err!(reg.create_webhook(&admin(), "wa", bad).await, BadRequest);

    // Readers read; strangers see nothing.
    let got = reg.get_webhook(&user("rita"), "wa", "h1").await.unwrap();
    assert_eq!(got, created);
    assert_eq!(
        reg.list_webhooks(&user("rita"), "wa").await.unwrap(),
        vec![created.clone()]
    );
    assert_err!(reg.list_webhooks(&user("stranger"), "wa").await, NotFound);
    assert_err!(
        reg.get_webhook(&user("stranger"), "wa", "h1").await,
        NotFound
    );
    assert_err!(
        reg.webhook_status(&user("stranger"), "wa", "h1").await,
        NotFound
    );
    assert_err!(reg.get_webhook(&admin(), "wa", "h9").await, NotFound);

    // The delivery sees the secret.
    let all = reg.all_webhooks().await.unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(
        all[0].webhook.spec.secret.as_deref(),
        Some("0123456789abcdef0123")
    );
    let app = reg.get_app(&admin(), "wa").await.unwrap();
    assert_eq!(all[0].app_uid, app.metadata.uid);

    // The limit per application.
    for i in 2..=MAX_WEBHOOKS_PER_APP {
        reg.create_webhook(&admin(), "wa", hook(&format!("h{i}")))
            .await
            .unwrap();
    }
    assert_err!(
        reg.create_webhook(&admin(), "wa", hook("one-more")).await,
        BadRequest
    );
    assert_err!(
        reg.delete_webhook(&user("rita"), "wa", "h1").await,
        Forbidden
    );
    assert_err!(
        reg.delete_webhook(&user("stranger"), "wa", "h1").await,
        NotFound
    );
    reg.delete_webhook(&admin(), "wa", "h1").await.unwrap();
    assert_err!(reg.get_webhook(&admin(), "wa", "h1").await, NotFound);
    reg.create_webhook(&admin(), "wa", hook("one-more"))
        .await
        .unwrap();
}

async fn holds_are_exclusive_and_run_out(reg: Subject) {
    new_app(&reg, "wh").await;
    let w = reg.create_webhook(&admin(), "wh", hook("h")).await.unwrap();
    let uid = &w.metadata.uid;
    let hold = Duration::from_millis(300);
    assert!(reg.hold_webhook(uid, "node-a", hold).await.unwrap());
    assert!(
        reg.hold_webhook(uid, "node-a", hold).await.unwrap(),
        "renewed"
    );
    assert!(!reg.hold_webhook(uid, "node-b", hold).await.unwrap());
    let (_, _, status) = reg.webhook_status(&admin(), "wh", "h").await.unwrap();
    assert_eq!(status.node.as_deref(), Some("node-a"));
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(
        reg.hold_webhook(uid, "node-b", hold).await.unwrap(),
        "ran out"
    );
    assert!(!reg.hold_webhook(uid, "node-a", hold).await.unwrap());
    reg.release_webhook(uid, "node-a").await.unwrap(); // not node-a's: no effect
    assert!(!reg.hold_webhook(uid, "node-a", hold).await.unwrap());
    reg.release_webhook(uid, "node-b").await.unwrap();
    assert!(
        reg.hold_webhook(uid, "node-a", hold).await.unwrap(),
        "given up"
    );
    assert!(!reg
        .hold_webhook("no-such-uid", "node-a", hold)
        .await
        .unwrap());

    // Progress adds up; the last error stays until another.
    let now = chrono::Utc::now();
    let p = WebhookProgress {
        delivered: 3,
        failed: 1,
        retrying: 2,
        error: Some(("sink answered 503".into(), now)),
        delivered_at: Some(now),
        validated: false,
    };
    assert!(reg.record_webhook_progress(uid, &p).await.unwrap());
    let p = WebhookProgress {
        delivered: 2,
        ..WebhookProgress::default()
    };
    assert!(reg.record_webhook_progress(uid, &p).await.unwrap());
    let (_, _, s) = reg.webhook_status(&admin(), "wh", "h").await.unwrap();
    assert_eq!((s.delivered, s.failed, s.retrying), (5, 1, 0));
    assert_eq!(s.last_error.as_deref(), Some("sink answered 503"));
    assert!(s.last_error_time.is_some() && s.last_delivery_time.is_some());
    assert!(s.validated, "no handshake asked for");
    reg.delete_webhook(&admin(), "wh", "h").await.unwrap();
    assert!(!reg.record_webhook_progress(uid, &p).await.unwrap(), "gone");
}

fn letter(offset: u64) -> DeadLetter {
    DeadLetter {
        seq: 0,
        offset,
        event_id: format!("e{offset}"),
        event_type: "io.drogue.event.v1".into(),
        device: "d".into(),
        event: json!({"id": format!("e{offset}")}),
        error: "sink answered 500".into(),
        attempts: 3,
        time: chrono::Utc::now(),
    }
}

async fn dead_letters_page_and_go_with_the_application(reg: Subject) {
    new_app(&reg, "wd").await;
    let w = reg.create_webhook(&admin(), "wd", hook("h")).await.unwrap();
    let uid = &w.metadata.uid;
    for o in 1..=3 {
        reg.add_dead_letter(uid, "wd", &letter(o)).await.unwrap();
    }
    let all = reg.dead_letters(&admin(), "wd", "h", 0, 100).await.unwrap();
    assert_eq!(all.iter().map(|l| l.offset).collect::<Vec<_>>(), [1, 2, 3]);
    assert_eq!(all[1].event, json!({"id": "e2"}));
    let page = reg
        .dead_letters(&admin(), "wd", "h", all[0].seq, 1)
        .await
        .unwrap();
    assert_eq!(page.len(), 1);
    assert_eq!(page[0].offset, 2);
    assert_err!(
        reg.dead_letters(&user("stranger"), "wd", "h", 0, 10).await,
        NotFound
    );
    reg.delete_app(&admin(), "wd", Default::default())
        .await
        .unwrap();
    assert!(reg.all_webhooks().await.unwrap().is_empty());
    new_app(&reg, "wd").await;
    reg.create_webhook(&admin(), "wd", hook("h")).await.unwrap();
    assert!(reg
        .dead_letters(&admin(), "wd", "h", 0, 100)
        .await
        .unwrap()
        .is_empty());
}
