//! Who may do what with an application: owner, members and roles, ownership transfer.

use drover_model::role::{MemberEntry, Role};
use drover_model::{Members, Permission, Principal};
use drover_registry::{ListOptions, MembersDoc, Preconditions, RegistryError};
use serde_json::json;

use crate::{admin, input, new_app, user, Subject};

conformance!(
    strangers_see_nothing_readers_are_forbidden,
    members_have_their_own_version,
    ownership_is_transferred_on_acceptance,
    deleted_users_leave_their_apps,
);

fn members(entries: &[(&str, Role)]) -> Members {
    entries
        .iter()
        .map(|(name, role)| (name.to_string(), MemberEntry { role: *role }))
        .collect()
}

/// Sets the members, whatever they were.
async fn set_members(reg: &Subject, who: &Principal, app: &str, entries: &[(&str, Role)]) {
    let doc = MembersDoc {
        resource_version: None,
        members: members(entries),
    };
    reg.set_members(who, app, doc).await.unwrap();
}

fn is_not_found<T: std::fmt::Debug>(res: Result<T, RegistryError>) {
    assert_err!(res, NotFound);
}

fn is_forbidden<T: std::fmt::Debug>(res: Result<T, RegistryError>) {
    assert_err!(res, Forbidden);
}

async fn strangers_see_nothing_readers_are_forbidden(reg: Subject) {
    let (alice, bob, carol) = (user("alice"), user("bob"), user("carol"));
    reg.create_app(&alice, input(json!({"metadata": {"name": "ac"}})))
        .await
        .unwrap();
    reg.create_device(&alice, "ac", input(json!({"metadata": {"name": "d"}})))
        .await
        .unwrap();
    set_members(&reg, &alice, "ac", &[("bob", Role::Reader)]).await;

    // A stranger: not found, for the app and everything in it.
    is_not_found(reg.get_app(&carol, "ac").await);
    is_not_found(reg.get_device(&carol, "ac", "d").await);
    is_not_found(
        reg.update_app(&carol, "ac", input(json!({"metadata": {"name": "ac"}})))
            .await,
    );
    is_not_found(
        reg.delete_device(&carol, "ac", "d", Preconditions::default())
            .await,
    );
    is_not_found(reg.get_members(&carol, "ac").await);
    is_not_found(reg.authorize(&carol, "ac", Permission::Read).await);
    let res = reg
        .create_device(&carol, "ac", input(json!({"metadata": {"name": "e"}})))
        .await;
    assert_err!(res, ReferenceNotFound);
    let listed = reg
        .list_apps(&carol, &ListOptions::default())
        .await
        .unwrap();
    assert!(listed.items.is_empty());
    assert_eq!(reg.readable_apps(&carol).await.unwrap(), Some(vec![]));

    // A reader: reads, is forbidden the rest.
    reg.get_app(&bob, "ac").await.unwrap();
    reg.get_device(&bob, "ac", "d").await.unwrap();
    is_forbidden(
        reg.update_device(&bob, "ac", "d", input(json!({"metadata": {"name": "d"}})))
            .await,
    );
    is_forbidden(
        reg.create_device(&bob, "ac", input(json!({"metadata": {"name": "e"}})))
            .await,
    );
    is_forbidden(reg.delete_app(&bob, "ac", Preconditions::default()).await);
    is_forbidden(reg.get_members(&bob, "ac").await);
    is_forbidden(reg.authorize(&bob, "ac", Permission::Write).await);
    is_forbidden(reg.transfer_ownership(&bob, "ac", "bob").await);
    assert_eq!(
        reg.readable_apps(&bob).await.unwrap(),
        Some(vec!["ac".to_string()])
    );
    assert_eq!(
        reg.list_apps(&bob, &ListOptions::default())
            .await
            .unwrap()
            .items
            .len(),
        1
    );

    // A manager writes; an admin also manages members; "" is everybody.
    set_members(
        &reg,
        &alice,
        "ac",
        &[("bob", Role::Manager), ("", Role::Reader)],
    )
    .await;
    reg.create_device(&bob, "ac", input(json!({"metadata": {"name": "e"}})))
        .await
        .unwrap();
    is_forbidden(reg.get_members(&bob, "ac").await);
    reg.get_app(&carol, "ac").await.unwrap();
    is_forbidden(
        reg.delete_device(&carol, "ac", "e", Preconditions::default())
            .await,
    );
    assert_eq!(reg.readable_apps(&admin()).await.unwrap(), None);
    reg.authorize(&admin(), "ac", Permission::Owner)
        .await
        .unwrap();
}

async fn members_have_their_own_version(reg: Subject) {
    let alice = user("alice");
    let app = reg
        .create_app(&alice, input(json!({"metadata": {"name": "mv"}})))
        .await
        .unwrap();
    let doc = reg.get_members(&alice, "mv").await.unwrap();
    assert!(doc.members.is_empty());
    let v1 = doc.resource_version.clone();
    reg.set_members(
        &alice,
        "mv",
        MembersDoc {
            resource_version: v1.clone(),
            members: members(&[("bob", Role::Admin)]),
        },
    )
    .await
    .unwrap();
    let doc = reg.get_members(&alice, "mv").await.unwrap();
    assert_ne!(doc.resource_version, v1);
    assert_eq!(doc.members, members(&[("bob", Role::Admin)]));
    let stale = reg
        .set_members(
            &alice,
            "mv",
            MembersDoc {
                resource_version: v1,
                members: Members::new(),
            },
        )
        .await;
    assert_err!(stale, OptimisticLockFailed);
    // The same members again change nothing, not even the version.
    reg.set_members(&alice, "mv", doc.clone()).await.unwrap();
    assert_eq!(reg.get_members(&alice, "mv").await.unwrap(), doc);
    // Members live outside the document: its resourceVersion stays.
    assert_eq!(reg.get_app(&alice, "mv").await.unwrap(), app);
    // An admin member manages members too, and may delete the application.
    reg.get_members(&user("bob"), "mv").await.unwrap();
    let res = reg
        .set_members(
            &alice,
            "mv",
            MembersDoc {
                resource_version: None,
                members: members(&[("Not A Name", Role::Reader)]),
            },
        )
        .await;
    assert_err!(res, BadRequest);
    reg.delete_app(&user("bob"), "mv", Preconditions::default())
        .await
        .unwrap();
}

async fn ownership_is_transferred_on_acceptance(reg: Subject) {
    let (alice, bob, carol) = (user("alice"), user("bob"), user("carol"));
    reg.create_app(&alice, input(json!({"metadata": {"name": "tr"}})))
        .await
        .unwrap();
    assert_eq!(reg.pending_transfer(&alice, "tr").await.unwrap(), None);
    reg.transfer_ownership(&alice, "tr", "bob").await.unwrap();
    assert_eq!(
        reg.pending_transfer(&alice, "tr").await.unwrap(),
        Some("bob".to_string())
    );
    // The recipient sees the offer, and nothing else of the application, before accepting.
    assert_eq!(
        reg.pending_transfer(&bob, "tr").await.unwrap(),
        Some("bob".to_string())
    );
    is_not_found(reg.get_app(&bob, "tr").await);
    is_not_found(reg.pending_transfer(&carol, "tr").await);
    let res = reg.accept_ownership(&carol, "tr").await;
    assert_err!(res, NotFound);
    reg.cancel_transfer(&alice, "tr").await.unwrap();
    let res = reg.accept_ownership(&bob, "tr").await;
    assert_err!(res, NotFound);

    reg.transfer_ownership(&alice, "tr", "bob").await.unwrap();
    reg.accept_ownership(&bob, "tr").await.unwrap();
    reg.authorize(&bob, "tr", Permission::Owner).await.unwrap();
    is_not_found(reg.get_app(&alice, "tr").await);
    assert_eq!(reg.pending_transfer(&bob, "tr").await.unwrap(), None);
    // The owner was offered nothing: a bad request, not a secret.
    let res = reg.accept_ownership(&bob, "tr").await;
    assert_err!(res, BadRequest);
}

async fn deleted_users_leave_their_apps(reg: Subject) {
    let (_, token) = reg.create_user(&admin(), "dave", false).await.unwrap();
    let dave = reg.authenticate_token("dave", &token.token).await.unwrap();
    reg.create_app(&dave, input(json!({"metadata": {"name": "owned"}})))
        .await
        .unwrap();
    new_app(&reg, "member").await;
    reg.set_members(
        &admin(),
        "member",
        MembersDoc {
            resource_version: None,
            members: members(&[("dave", Role::Reader), ("erin", Role::Reader)]),
        },
    )
    .await
    .unwrap();
    new_app(&reg, "offered").await;
    reg.transfer_ownership(&admin(), "offered", "dave")
        .await
        .unwrap();

    reg.delete_user(&admin(), "dave").await.unwrap();
    // A new dave inherits nothing.
    let dave = user("dave");
    is_not_found(reg.get_app(&dave, "owned").await);
    is_not_found(reg.get_app(&dave, "member").await);
    assert_eq!(
        reg.pending_transfer(&admin(), "offered").await.unwrap(),
        None
    );
    assert_eq!(
        reg.get_members(&admin(), "member").await.unwrap().members,
        members(&[("erin", Role::Reader)])
    );
    // The apps stay, for system administrators.
    reg.get_app(&admin(), "owned").await.unwrap();
    let res = reg.authenticate_token("dave", &token.token).await;
    assert_err!(res, Unauthorized);
}
