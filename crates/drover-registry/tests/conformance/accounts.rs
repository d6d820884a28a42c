//! Users of the management API and their access tokens.

use drover_model::Principal;
use drover_registry::{AdminBootstrap, RegistryError};

use crate::{admin, user, Subject};

conformance!(
    access_changes_move_with_every_revocation,
    tokens_authenticate_until_deleted,
    the_administrator_is_bootstrapped_once,
    only_administrators_manage_users,
);

/// Every commit that may take access away moves `subscribe_access` (and the user directory's
/// `access_changes`), and nothing else does.
async fn access_changes_move_with_every_revocation(reg: Subject) {
    let access = reg.subscribe_access();
    let seen = || *access.borrow();
    let directory_seen = reg.access_changes();
    let start = seen();
    crate::new_app(&reg, "acc").await;
    let app = "acc";
    assert_eq!(seen(), start, "creating an application revokes nothing");
    let (_, t1) = reg.create_user(&admin(), "alice", false).await.unwrap();
    let alice = user("alice");
    let t2 = reg.create_token(&alice, None).await.unwrap();
    assert_eq!(seen(), start, "creating users and tokens revokes nothing");
    let members = drover_registry::MembersDoc {
        resource_version: None,
        members: serde_json::from_value(serde_json::json!({"alice": {"role": "reader"}})).unwrap(),
    };
    reg.set_members(&admin(), app, members.clone())
        .await
        .unwrap();
    let after_members = seen();
    assert!(after_members > start, "changing members moves it");
    reg.set_members(&admin(), app, members).await.unwrap();
    assert_eq!(
        seen(),
        after_members,
        "an unchanged member list writes nothing"
    );
    reg.delete_token(&alice, &t1.prefix).await.unwrap();
    let after_token = seen();
    assert!(after_token > after_members, "deleting a token moves it");
    reg.delete_user(&admin(), "alice").await.unwrap();
    assert!(seen() > after_token, "deleting a user moves it");
    assert_eq!(*directory_seen.borrow(), seen());
    // The token hash directory answers by hash, and forgets deleted users' tokens.
    let hash = drover_auth::token::hash(&t2.token);
    assert_eq!(reg.token_owner(&hash).await.unwrap(), None);
}

fn is_unauthorized<T: std::fmt::Debug>(res: Result<T, RegistryError>) {
    assert_err!(res, Unauthorized);
}

async fn tokens_authenticate_until_deleted(reg: Subject) {
    let (created, first) = reg.create_user(&admin(), "alice", false).await.unwrap();
    assert_eq!(created.name, "alice");
    assert!(!created.admin);
    let alice = reg.authenticate_token("alice", &first.token).await.unwrap();
    assert_eq!(alice, user("alice"));
    is_unauthorized(reg.authenticate_token("bob", &first.token).await);
    is_unauthorized(reg.authenticate_token("alice", "drg_nope").await);

    let second = reg.create_token(&alice, Some("laptop")).await.unwrap();
    let listed = reg.list_tokens(&alice).await.unwrap();
    let prefixes: Vec<_> = listed.iter().map(|t| t.prefix.as_str()).collect();
    assert_eq!(prefixes, [first.prefix.as_str(), second.prefix.as_str()]);
    assert_eq!(listed[1].description.as_deref(), Some("laptop"));
    assert!(listed[0].created <= listed[1].created);
    assert!(!format!("{listed:?}").contains(&second.token));

    reg.delete_token(&alice, &first.prefix).await.unwrap();
    is_unauthorized(reg.authenticate_token("alice", &first.token).await);
    reg.authenticate_token("alice", &second.token)
        .await
        .unwrap();
    let res = reg.delete_token(&alice, &first.prefix).await;
    assert_err!(res, NotFound);
    // Nobody deletes another user's token.
    let res = reg.delete_token(&user("bob"), &second.prefix).await;
    assert_err!(res, NotFound);

    // A user known only by single sign-on gets a user record with the first token.
    let sso = user("sso-user");
    let t = reg.create_token(&sso, None).await.unwrap();
    assert_eq!(
        reg.authenticate_token("sso-user", &t.token).await.unwrap(),
        sso
    );
    let long = "x".repeat(257);
    let res = reg.create_token(&sso, Some(&long)).await;
    assert_err!(res, BadRequest);
}

async fn the_administrator_is_bootstrapped_once(reg: Subject) {
    let AdminBootstrap::Generated(token) = reg.bootstrap_admin(None).await.unwrap() else {
        panic!("the first start generates a token");
    };
    assert_eq!(
        reg.authenticate_token("admin", &token).await.unwrap(),
        Principal::SystemAdmin("admin".into())
    );
    assert_eq!(
        reg.bootstrap_admin(None).await.unwrap(),
        AdminBootstrap::Existing
    );
    let configured = drover_auth::token::generate().token;
    assert_eq!(
        reg.bootstrap_admin(Some(&configured)).await.unwrap(),
        AdminBootstrap::Configured
    );
    reg.authenticate_token("admin", &configured).await.unwrap();
    reg.authenticate_token("admin", &token).await.unwrap();
    // A new configured token replaces the previous one, not the generated one.
    let replacement = drover_auth::token::generate().token;
    reg.bootstrap_admin(Some(&replacement)).await.unwrap();
    is_unauthorized(reg.authenticate_token("admin", &configured).await);
    reg.authenticate_token("admin", &replacement).await.unwrap();
    reg.bootstrap_admin(Some(&replacement)).await.unwrap();
    reg.authenticate_token("admin", &replacement).await.unwrap();
    assert_eq!(
        reg.principal_for("admin").await.unwrap(),
        Principal::SystemAdmin("admin".into())
    );
    assert_eq!(reg.principal_for("nobody").await.unwrap(), user("nobody"));
}

async fn only_administrators_manage_users(reg: Subject) {
    let (_, t) = reg.create_user(&admin(), "root2", true).await.unwrap();
    let root2 = reg.authenticate_token("root2", &t.token).await.unwrap();
    assert!(root2.is_admin());
    reg.create_user(&root2, "bob", false).await.unwrap();
    let res = reg.create_user(&admin(), "bob", false).await;
    assert_err!(res, Conflict);
    let res = reg.create_user(&user("bob"), "eve", false).await;
    assert_err!(res, Forbidden);
    let res = reg.create_user(&admin(), "Bad Name", false).await;
    assert_err!(res, BadRequest);
    let res = reg.list_users(&user("bob")).await;
    assert_err!(res, Forbidden);
    let users = reg.list_users(&admin()).await.unwrap();
    let names: Vec<_> = users.iter().map(|u| (u.name.as_str(), u.admin)).collect();
    assert_eq!(names, [("bob", false), ("root2", true)]);
    assert_eq!(reg.principal_for("root2").await.unwrap(), root2);

    let res = reg.delete_user(&user("bob"), "root2").await;
    assert_err!(res, Forbidden);
    let res = reg.delete_user(&admin(), "admin").await;
    assert_err!(res, BadRequest);
    let res = reg.delete_user(&admin(), "nobody").await;
    assert_err!(res, NotFound);
    reg.delete_user(&admin(), "root2").await.unwrap();
    is_unauthorized(reg.authenticate_token("root2", &t.token).await);
    assert_eq!(reg.list_users(&admin()).await.unwrap().len(), 1);
}
