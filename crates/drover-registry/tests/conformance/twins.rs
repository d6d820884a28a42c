//! Device twins: versions, merge patches, preconditions, access, limits, the outbox, and a
//! twin's life with its device.

use std::sync::Arc;
use std::time::Duration;

use drover_model::role::{MemberEntry, Role};
use drover_model::twin::Section;
use drover_registry::{MembersDoc, Preconditions, RegistryError};
use serde_json::{json, Map, Value};

use crate::{admin, input, new_app, user, Subject};

conformance!(
    patches_move_versions_and_nulls_delete,
    version_preconditions_are_checked,
    readers_read_strangers_see_nothing,
    limits_refuse_and_leave_the_twin_unchanged,
    changes_wait_in_the_outbox_until_forgotten,
    a_twin_goes_with_its_device,
    one_devices_writes_take_turns,
);

fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        other => panic!("not an object: {other}"),
    }
}

async fn app_with_device(reg: &Subject, app: &str) {
    new_app(reg, app).await;
    reg.create_device(&admin(), app, input(json!({"metadata": {"name": "d"}})))
        .await
        .unwrap();
}

async fn patches_move_versions_and_nulls_delete(reg: Subject) {
    app_with_device(&reg, "tw").await;
    let twin = reg.twin(&admin(), "tw", "d").await.unwrap();
    assert_eq!((twin.desired_version, twin.reported_version), (1, 1));
    assert!(twin.desired.is_empty() && twin.reported.is_empty() && twin.tags.is_empty());

    let patch = obj(json!({"a": 1, "b": {"c": 2, "e": "x"}}));
    let up = reg
        .patch_desired(&admin(), "tw", "d", &patch, None)
        .await
        .unwrap();
    assert!(up.changed);
    assert_eq!(up.twin.desired_version, 2);
    let up = reg
        .patch_desired(&admin(), "tw", "d", &obj(json!({"b": {"c": null}})), None)
        .await
        .unwrap();
    assert_eq!(up.twin.desired_version, 3);
    assert_eq!(
        Value::Object(up.twin.desired),
        json!({"a": 1, "b": {"e": "x"}})
    );

    // A patch that changes nothing moves nothing.
    let up = reg
        .patch_desired(&admin(), "tw", "d", &obj(json!({"a": 1})), None)
        .await
        .unwrap();
    assert!(!up.changed);
    assert_eq!(up.twin.desired_version, 3);

    let up = reg
        .patch_reported("tw", "d", &obj(json!({"temp": 21.5})))
        .await
        .unwrap();
    assert_eq!((up.twin.desired_version, up.twin.reported_version), (3, 2));
    let twin = reg.device_twin("tw", "d").await.unwrap();
    assert_eq!(twin, up.twin);
    assert_eq!(reg.twin(&admin(), "tw", "d").await.unwrap(), twin);

    assert_err!(reg.twin(&admin(), "tw", "nope").await, NotFound);
    assert_err!(reg.twin(&admin(), "nope", "d").await, NotFound);
    assert_err!(reg.device_twin("tw", "nope").await, NotFound);
    assert_err!(
        reg.patch_reported("nope", "d", &obj(json!({"a": 1}))).await,
        NotFound
    );
}

async fn version_preconditions_are_checked(reg: Subject) {
    app_with_device(&reg, "tv").await;
    let patch = obj(json!({"mode": "eco"}));
    let res = reg
        .patch_desired(&admin(), "tv", "d", &patch, Some(7))
        .await;
    assert_err!(res, OptimisticLockFailed);
    let up = reg
        .patch_desired(&admin(), "tv", "d", &patch, Some(1))
        .await
        .unwrap();
    assert_eq!(up.twin.desired_version, 2);
    let max = obj(json!({"mode": "max"}));
    let again = reg.patch_desired(&admin(), "tv", "d", &max, Some(1)).await;
    assert_err!(again, OptimisticLockFailed);
    let twin = reg.device_twin("tv", "d").await.unwrap();
    assert_eq!(Value::Object(twin.desired), json!({"mode": "eco"}));
}

async fn readers_read_strangers_see_nothing(reg: Subject) {
    let (alice, bob, carol) = (user("alice"), user("bob"), user("carol"));
    reg.create_app(&alice, input(json!({"metadata": {"name": "ta"}})))
        .await
        .unwrap();
    reg.create_device(&alice, "ta", input(json!({"metadata": {"name": "d"}})))
        .await
        .unwrap();
    let members = [("bob".to_string(), MemberEntry { role: Role::Reader })]
        .into_iter()
        .collect();
    let doc = MembersDoc {
        resource_version: None,
        members,
    };
    reg.set_members(&alice, "ta", doc).await.unwrap();
    let patch = obj(json!({"x": true}));

    reg.patch_desired(&alice, "ta", "d", &patch, None)
        .await
        .unwrap();
    assert_eq!(reg.twin(&bob, "ta", "d").await.unwrap().desired_version, 2);
    assert_err!(
        reg.patch_desired(&bob, "ta", "d", &patch, None).await,
        Forbidden
    );
    assert_err!(
        reg.replace_tags(&bob, "ta", "d", obj(json!({"t": 1})))
            .await,
        Forbidden
    );
    assert_err!(reg.twin(&carol, "ta", "d").await, NotFound);
    assert_err!(
        reg.patch_desired(&carol, "ta", "d", &patch, None).await,
        NotFound
    );
}

async fn limits_refuse_and_leave_the_twin_unchanged(reg: Subject) {
    app_with_device(&reg, "tl").await;
    let bad = [
        json!({"$version": 4}),
        json!({"a.b": 1}),
        json!({"s": "x".repeat(5000)}),
        json!({"n": 4_503_599_627_370_496_i64}),
        json!({"a":{"b":{"c":{"d":{"e":{"f":{"g":{"h":{"i":{"j":{"k": 1}}}}}}}}}}}),
    ];
    for patch in bad {
        let res = reg
            .patch_desired(&admin(), "tl", "d", &obj(patch.clone()), None)
            .await;
        assert_err!(res, BadRequest);
        assert_err!(reg.patch_reported("tl", "d", &obj(patch)).await, BadRequest);
    }
    // 32 KiB in total, in pieces each within the string limit.
    let big: Map<String, Value> = (0..9)
        .map(|i| (format!("k{i}"), Value::from("y".repeat(4000))))
        .collect();
    assert_err!(
        reg.patch_desired(&admin(), "tl", "d", &big, None).await,
        BadRequest
    );
    let twin = reg.device_twin("tl", "d").await.unwrap();
    assert_eq!((twin.desired_version, twin.reported_version), (1, 1));
    assert!(twin.desired.is_empty() && twin.reported.is_empty());
    let claimed = reg
        .claim_twin_changes(100, Duration::from_secs(60))
        .await
        .unwrap();
    assert!(claimed.is_empty(), "refused patches wrote {claimed:?}");
}

async fn changes_wait_in_the_outbox_until_forgotten(reg: Subject) {
    let app = new_app(&reg, "to").await;
    reg.create_device(&admin(), "to", input(json!({"metadata": {"name": "d"}})))
        .await
        .unwrap();
    let desired = obj(json!({"fan": null, "mode": "eco"}));
    reg.patch_desired(&admin(), "to", "d", &desired, None)
        .await
        .unwrap();
    reg.replace_tags(&admin(), "to", "d", obj(json!({"floor": 3})))
        .await
        .unwrap();
    reg.patch_reported("to", "d", &obj(json!({"mode": "eco"})))
        .await
        .unwrap();

    let hold = Duration::from_secs(60);
    let claimed = reg.claim_twin_changes(100, hold).await.unwrap();
    assert_eq!(claimed.len(), 2, "tags make no change event: {claimed:?}");
    let (d, r) = (&claimed[0], &claimed[1]);
    assert!(d.seq < r.seq);
    assert_eq!((d.section, d.version), (Section::Desired, 2));
    assert_eq!(d.patch, desired, "the patch as sent, nulls included");
    assert_eq!((r.section, r.version), (Section::Reported, 2));
    for c in &claimed {
        assert_eq!((c.application.as_str(), c.device.as_str()), ("to", "d"));
        assert_eq!(c.application_uid, app.metadata.uid);
    }
    // Held: nobody else takes them; the limit is kept.
    assert!(reg.claim_twin_changes(100, hold).await.unwrap().is_empty());
    reg.patch_reported("to", "d", &obj(json!({"mode": "max"})))
        .await
        .unwrap();
    // Held for no time: the hold runs out at once, and the row is taken again.
    let next = reg.claim_twin_changes(100, Duration::ZERO).await.unwrap();
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].version, 3);
    reg.forget_twin_changes(&[d.seq, r.seq]).await.unwrap();
    let mut again = Vec::new();
    crate::eventually("an expired hold is taken again", async || {
        again = reg.claim_twin_changes(1, Duration::ZERO).await.unwrap();
        !again.is_empty()
    })
    .await;
    assert_eq!(again[0].seq, next[0].seq);
    reg.forget_twin_changes(&[next[0].seq]).await.unwrap();
    assert!(reg.claim_twin_changes(100, hold).await.unwrap().is_empty());
}

async fn a_twin_goes_with_its_device(reg: Subject) {
    app_with_device(&reg, "tg").await;
    reg.patch_desired(&admin(), "tg", "d", &obj(json!({"a": 1})), None)
        .await
        .unwrap();
    reg.delete_device(&admin(), "tg", "d", Preconditions::default())
        .await
        .unwrap();
    assert_err!(reg.twin(&admin(), "tg", "d").await, NotFound);
    assert_err!(
        reg.patch_reported("tg", "d", &obj(json!({"a": 1}))).await,
        NotFound
    );
    reg.create_device(&admin(), "tg", input(json!({"metadata": {"name": "d"}})))
        .await
        .unwrap();
    let twin = reg.twin(&admin(), "tg", "d").await.unwrap();
    assert_eq!(twin.desired_version, 1);
    assert!(twin.desired.is_empty());
}

async fn one_devices_writes_take_turns(reg: Subject) {
    app_with_device(&reg, "tt").await;
    let mut tasks = Vec::new();
    for i in 0..16 {
        let reg = Arc::clone(&reg);
        tasks.push(tokio::spawn(async move {
            let patch = obj(json!({ format!("k{i}"): i }));
            reg.patch_reported("tt", "d", &patch).await
        }));
    }
    for t in tasks {
        let res: Result<_, RegistryError> = t.await.unwrap();
        res.unwrap();
    }
    let twin = reg.device_twin("tt", "d").await.unwrap();
    assert_eq!(twin.reported_version, 17);
    assert_eq!(
        twin.reported.len(),
        16,
        "no write lost: {:?}",
        twin.reported
    );
}
