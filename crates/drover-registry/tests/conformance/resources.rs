//! Applications and devices: optimistic locking, generation, no-op updates, lists, deletion with
//! finalizers, the cascade from an application to its devices, names and aliases.

use drover_registry::{ListOptions, Preconditions, FINALIZER_HAS_DEVICES};
use serde_json::json;

use crate::{admin, input, new_app, Subject};

conformance!(
    stale_versions_are_refused,
    no_op_updates_write_nothing,
    generation_moves_with_the_spec_only,
    lists_filter_by_labels_and_page,
    finalizers_hold_deleted_devices,
    deleting_an_app_cascades_to_its_devices,
    names_and_aliases_are_unique_in_an_app,
    unique_usernames_are_unique_in_an_app,
    plain_passwords_are_hashed_once,
);

fn pre(uid: Option<&str>, rv: Option<&str>) -> Preconditions {
    Preconditions {
        uid: uid.map(str::to_string),
        resource_version: rv.map(str::to_string),
    }
}

async fn stale_versions_are_refused(reg: Subject) {
    let app = reg
        .create_app(&admin(), input(json!({"metadata": {"name": "o"}})))
        .await
        .unwrap();
    let rv1 = app.metadata.resource_version.clone();
    let upd = |labels: serde_json::Value, rv: &str| {
        input(json!({"metadata": {"name": "o", "labels": labels, "resourceVersion": rv}}))
    };
    let app2 = reg
        .update_app(&admin(), "o", upd(json!({"a": "1"}), &rv1))
        .await
        .unwrap();
    assert_ne!(app2.metadata.resource_version, rv1);
    // Two writers read version 1: the second loses.
    let stale = reg
        .update_app(&admin(), "o", upd(json!({"a": "2"}), &rv1))
        .await;
    assert_err!(stale, OptimisticLockFailed);
    let wrong_uid = reg
        .update_app(
            &admin(),
            "o",
            input(json!({"metadata": {"name": "o", "uid": "nope"}})),
        )
        .await;
    assert_err!(wrong_uid, OptimisticLockFailed);
    assert_eq!(
        reg.get_app(&admin(), "o").await.unwrap().metadata.labels["a"],
        "1"
    );
    // Deletes check the same preconditions.
    let dev = reg
        .create_device(&admin(), "o", input(json!({"metadata": {"name": "d"}})))
        .await
        .unwrap();
    let res = reg
        .delete_device(&admin(), "o", "d", pre(None, Some("1")))
        .await;
    assert_err!(res, OptimisticLockFailed);
    let res = reg
        .delete_device(&admin(), "o", "d", pre(Some("other"), None))
        .await;
    assert_err!(res, OptimisticLockFailed);
    reg.delete_device(
        &admin(),
        "o",
        "d",
        pre(
            Some(&dev.metadata.uid),
            Some(&dev.metadata.resource_version),
        ),
    )
    .await
    .unwrap();
    let res = reg.delete_app(&admin(), "o", pre(None, Some(&rv1))).await;
    assert_err!(res, OptimisticLockFailed);
    let res = reg.get_device(&admin(), "o", "d").await;
    assert_err!(res, NotFound);
}

async fn no_op_updates_write_nothing(reg: Subject) {
    let doc = json!({"metadata": {"name": "n", "labels": {"a": "b"}, "annotations": {"x": "y"}}, "spec": {"core": {"disabled": false}}});
    let app = reg.create_app(&admin(), input(doc.clone())).await.unwrap();
    let dev_doc =
        json!({"metadata": {"name": "d", "labels": {"a": "b"}}, "spec": {"alias": ["x"]}});
    let dev = reg
        .create_device(&admin(), "n", input(dev_doc.clone()))
        .await
        .unwrap();
    let revision = *reg.subscribe().borrow();
    let same = reg.update_app(&admin(), "n", input(doc)).await.unwrap();
    assert_eq!(same, app);
    let same = reg
        .update_device(&admin(), "n", "d", input(dev_doc))
        .await
        .unwrap();
    assert_eq!(same, dev);
    assert_eq!(*reg.subscribe().borrow(), revision);
    assert_eq!(reg.changes_since(0, 100).await.unwrap().len(), 2);
    assert_eq!(
        reg.get_device(&admin(), "n", "d").await.unwrap(),
        dev,
        "stored as it was"
    );
}

async fn generation_moves_with_the_spec_only(reg: Subject) {
    new_app(&reg, "g").await;
    let created = reg
        .create_device(
            &admin(),
            "g",
            input(json!({"metadata": {"name": "d"}, "spec": {"core": {"disabled": false}}})),
        )
        .await
        .unwrap();
    assert_eq!(created.metadata.generation, 1);
    let labels = json!({"name": "d", "labels": {"a": "b"}});
    let (enabled, disabled) = (
        json!({"core": {"disabled": false}}),
        json!({"core": {"disabled": true}}),
    );
    let steps = [
        ("labels", json!({"metadata": labels, "spec": enabled}), 1),
        (
            "status",
            json!({"metadata": labels, "spec": enabled, "status": {"seen": {"at": 1}}}),
            1,
        ),
        (
            "spec",
            json!({"metadata": labels, "spec": disabled, "status": {"seen": {"at": 1}}}),
            2,
        ),
    ];
    let mut last = created.clone();
    for (what, doc, generation) in steps {
        let now = reg
            .update_device(&admin(), "g", "d", input(doc))
            .await
            .unwrap();
        assert_eq!(now.metadata.generation, generation, "after changing {what}");
        assert_ne!(
            now.metadata.resource_version, last.metadata.resource_version,
            "after changing {what}"
        );
        last = now;
    }
    assert_eq!(last.metadata.uid, created.metadata.uid);
    assert_eq!(
        last.metadata.creation_timestamp,
        created.metadata.creation_timestamp
    );
    assert_eq!(reg.get_device(&admin(), "g", "d").await.unwrap(), last);
}

async fn lists_filter_by_labels_and_page(reg: Subject) {
    for (name, env) in [("b", "prod"), ("a", "dev"), ("c", "prod"), ("a-b", "test")] {
        reg.create_app(
            &admin(),
            input(json!({"metadata": {"name": name, "labels": {"env": env}}})),
        )
        .await
        .unwrap();
    }
    let names = |l: drover_registry::Listing<drover_model::Resource>| {
        l.items
            .into_iter()
            .map(|r| r.metadata.name)
            .collect::<Vec<_>>()
    };
    let opts = |selector: &str, limit: Option<usize>, offset: usize| ListOptions {
        selector: selector.parse().unwrap(),
        limit,
        offset,
    };
    let all = reg.list_apps(&admin(), &opts("", None, 0)).await.unwrap();
    assert_eq!(
        names(all),
        ["a", "a-b", "b", "c"],
        "ordered by name, bytewise"
    );
    let prod = reg
        .list_apps(&admin(), &opts("env=prod", None, 0))
        .await
        .unwrap();
    assert_eq!(names(prod), ["b", "c"]);
    let not_prod = reg
        .list_apps(&admin(), &opts("env notin (prod),env", None, 0))
        .await
        .unwrap();
    assert_eq!(names(not_prod), ["a", "a-b"]);
    let page = reg
        .list_apps(&admin(), &opts("", Some(2), 1))
        .await
        .unwrap();
    assert_eq!(names(page), ["a-b", "b"]);
    let past = reg
        .list_apps(&admin(), &opts("", Some(2), 10))
        .await
        .unwrap();
    assert!(past.items.is_empty());

    for (name, n) in [("d2", "2"), ("d1", "1"), ("d3", "3")] {
        reg.create_device(
            &admin(),
            "a",
            input(json!({"metadata": {"name": name, "labels": {"n": n}}})),
        )
        .await
        .unwrap();
    }
    let devices = reg
        .list_devices(&admin(), "a", &opts("n!=2", None, 0))
        .await
        .unwrap();
    assert_eq!(names(devices), ["d1", "d3"]);
    let devices = reg
        .list_devices(&admin(), "a", &opts("", Some(1), 1))
        .await
        .unwrap();
    assert_eq!(names(devices), ["d2"]);
    let res = reg
        .list_devices(&admin(), "nope", &ListOptions::default())
        .await;
    assert_err!(res, NotFound);
}

async fn finalizers_hold_deleted_devices(reg: Subject) {
    new_app(&reg, "fin").await;
    reg.create_device(
        &admin(),
        "fin",
        input(json!({"metadata": {"name": "d", "finalizers": ["keep"]}})),
    )
    .await
    .unwrap();
    reg.delete_device(&admin(), "fin", "d", Preconditions::default())
        .await
        .unwrap();
    let held = reg.get_device(&admin(), "fin", "d").await.unwrap();
    assert!(held.metadata.deletion_timestamp.is_some());
    assert_eq!(held.metadata.finalizers, ["keep"]);
    // Deleting again changes nothing.
    reg.delete_device(&admin(), "fin", "d", Preconditions::default())
        .await
        .unwrap();
    assert_eq!(reg.get_device(&admin(), "fin", "d").await.unwrap(), held);
    // No finalizer may be added meanwhile.
    let res = reg
        .update_device(
            &admin(),
            "fin",
            "d",
            input(json!({"metadata": {"name": "d", "finalizers": ["keep", "more"]}})),
        )
        .await;
    assert_err!(res, BadRequest);
    // Removing the last finalizer removes the device.
    reg.update_device(
        &admin(),
        "fin",
        "d",
        input(json!({"metadata": {"name": "d", "finalizers": []}})),
    )
    .await
    .unwrap();
    let res = reg.get_device(&admin(), "fin", "d").await;
    assert_err!(res, NotFound);
    let paths: Vec<_> = reg
        .changes_since(0, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.path)
        .collect();
    assert_eq!(paths, [".", ".", ".metadata", "."]);
    // The name is free again.
    reg.create_device(&admin(), "fin", input(json!({"metadata": {"name": "d"}})))
        .await
        .unwrap();
}

async fn deleting_an_app_cascades_to_its_devices(reg: Subject) {
    new_app(&reg, "cas").await;
    reg.create_device(
        &admin(),
        "cas",
        input(json!({"metadata": {"name": "free"}})),
    )
    .await
    .unwrap();
    reg.create_device(
        &admin(),
        "cas",
        input(json!({"metadata": {"name": "held", "finalizers": ["f"]}})),
    )
    .await
    .unwrap();
    reg.delete_app(&admin(), "cas", Preconditions::default())
        .await
        .unwrap();
    let app = reg.get_app(&admin(), "cas").await.unwrap();
    assert!(app.metadata.deletion_timestamp.is_some());
    assert_eq!(app.metadata.finalizers, [FINALIZER_HAS_DEVICES]);
    let res = reg.get_device(&admin(), "cas", "free").await;
    assert_err!(res, NotFound);
    let held = reg.get_device(&admin(), "cas", "held").await.unwrap();
    assert!(held.metadata.deletion_timestamp.is_some());
    // No device can be created in a deleting application (nor in a missing one).
    for app in ["cas", "none"] {
        let res = reg
            .create_device(&admin(), app, input(json!({"metadata": {"name": "new"}})))
            .await;
        assert_err!(res, ReferenceNotFound);
    }
    // The server-managed finalizer cannot be removed by a client.
    let app = reg
        .update_app(
            &admin(),
            "cas",
            input(json!({"metadata": {"name": "cas", "finalizers": []}})),
        )
        .await
        .unwrap();
    assert_eq!(app.metadata.finalizers, [FINALIZER_HAS_DEVICES]);
    // The last device going releases the application.
    reg.update_device(
        &admin(),
        "cas",
        "held",
        input(json!({"metadata": {"name": "held"}})),
    )
    .await
    .unwrap();
    let res = reg.get_app(&admin(), "cas").await;
    assert_err!(res, NotFound);
    let feed = reg.changes_since(0, 100).await.unwrap();
    let last = feed.last().unwrap();
    assert_eq!((last.device.as_deref(), last.path.as_str()), (None, "."));
    // An application without devices goes at once; its name is free again.
    new_app(&reg, "cas").await;
    reg.delete_app(&admin(), "cas", Preconditions::default())
        .await
        .unwrap();
    let res = reg.get_app(&admin(), "cas").await;
    assert_err!(res, NotFound);
}

async fn names_and_aliases_are_unique_in_an_app(reg: Subject) {
    for app in ["al", "other"] {
        new_app(&reg, app).await;
    }
    let dev = |name: &str, aliases: &[&str]| {
        input(json!({"metadata": {"name": name}, "spec": {"alias": aliases}}))
    };
    reg.create_device(&admin(), "al", dev("a", &["x", "y"]))
        .await
        .unwrap();
    for (name, aliases) in [("b", &["x"][..]), ("b", &["a"]), ("x", &[])] {
        let res = reg.create_device(&admin(), "al", dev(name, aliases)).await;
        assert_err!(res, Conflict);
    }
    // Another application has names of its own.
    reg.create_device(&admin(), "other", dev("b", &["x"]))
        .await
        .unwrap();
    reg.create_device(&admin(), "al", dev("b", &["z"]))
        .await
        .unwrap();
    let res = reg
        .update_device(&admin(), "al", "b", dev("b", &["z", "y"]))
        .await;
    assert_err!(res, Conflict);
    // Dropping an alias frees it.
    reg.update_device(&admin(), "al", "a", dev("a", &["x"]))
        .await
        .unwrap();
    reg.update_device(&admin(), "al", "b", dev("b", &["z", "y"]))
        .await
        .unwrap();
    // A device may list its own name as an alias.
    reg.update_device(&admin(), "al", "a", dev("a", &["a", "x"]))
        .await
        .unwrap();
    reg.delete_device(&admin(), "al", "a", Preconditions::default())
        .await
        .unwrap();
    reg.create_device(&admin(), "al", dev("x", &["a"]))
        .await
        .unwrap();
}

async fn unique_usernames_are_unique_in_an_app(reg: Subject) {
    new_app(&reg, "u").await;
    let hash = drover_auth::password::hash_sha512_crypt("p");
    let dev = |name: &str, unique: bool| {
        input(
            json!({"metadata": {"name": name}, "spec": {"authentication": {"credentials": [{"user": {"username": "shared", "password": {"sha512": hash}, "unique": unique}}]}}}),
        )
    };
    reg.create_device(&admin(), "u", dev("a", true))
        .await
        .unwrap();
    let res = reg.create_device(&admin(), "u", dev("b", true)).await;
    assert_err!(res, Conflict);
    // A username that is not unique is no app-wide name.
    reg.create_device(&admin(), "u", dev("b", false))
        .await
        .unwrap();
    // Usernames and device names are different namespaces.
    reg.create_device(&admin(), "u", dev("shared", false))
        .await
        .unwrap();
    reg.update_device(&admin(), "u", "a", dev("a", false))
        .await
        .unwrap();
    reg.update_device(&admin(), "u", "b", dev("b", true))
        .await
        .unwrap();
}

async fn plain_passwords_are_hashed_once(reg: Subject) {
    new_app(&reg, "pw").await;
    let dev = input(
        json!({"metadata": {"name": "d"}, "spec": {"authentication": {"credentials": [{"pass": "secret"}]}}}),
    );
    let created = reg
        .create_device(&admin(), "pw", dev.clone())
        .await
        .unwrap();
    let stored = &created.spec["authentication"]["credentials"][0]["pass"];
    let hash = stored["sha512"].as_str().unwrap();
    assert!(hash.starts_with("$6$"), "{stored}");
    assert!(!serde_json::to_string(&created.spec)
        .unwrap()
        .contains("secret"));
    // The same plain password again: the stored hash verifies it, nothing changes.
    let again = reg.update_device(&admin(), "pw", "d", dev).await.unwrap();
    assert_eq!(again, created);
    let other = reg
        .update_device(
            &admin(),
            "pw",
            "d",
            input(json!({"metadata": {"name": "d"}, "spec": {"authentication": {"credentials": [{"pass": "other"}]}}})),
        )
        .await
        .unwrap();
    assert_ne!(
        other.spec["authentication"]["credentials"][0]["pass"]["sha512"],
        hash
    );
    assert_eq!(other.metadata.generation, 2);
}
