//! Who may use an application: its members, and the transfer of its ownership.

use drover_model::{Permission, Principal};

use super::access::{not_found_app, readable_app};
use super::tables::AppRow;
use super::{tables, Backend, SqlRegistry};
use crate::sql::Fallible;
use crate::{MembersDoc, RegistryError, Result};

pub(super) async fn get<B: Backend>(
    reg: &SqlRegistry<B>,
    who: &Principal,
    app: &str,
) -> Result<MembersDoc> {
    let row = readable_app(&mut reg.backend.pool(), who, app).await?;
    row.authorize(who, Permission::Admin)?;
    Ok(MembersDoc {
        resource_version: Some(row.members_version),
        members: row.members,
    })
}

pub(super) async fn set<B: Backend>(
    reg: &SqlRegistry<B>,
    who: &Principal,
    app: &str,
    doc: MembersDoc,
) -> Result<()> {
    for name in doc.members.keys() {
        if !name.is_empty() {
            drover_model::names::validate_user_name(name)?;
        }
    }
    change_app(reg, who, app, Permission::Admin, |row| {
        if let Some(rv) = &doc.resource_version {
            if *rv != row.members_version {
                return Err(RegistryError::OptimisticLockFailed(format!(
                    "members resourceVersion '{rv}' is outdated (now '{}'); read the members again and retry",
                    row.members_version
                ))
                .into());
            }
        }
        if row.members == doc.members {
            return Ok(Edit::Unchanged);
        }
        row.members = doc.members.clone();
        row.members_version = uuid::Uuid::new_v4().to_string();
        Ok(Edit::TakesAccess)
    })
    .await
}

pub(super) async fn transfer<B: Backend>(
    reg: &SqlRegistry<B>,
    who: &Principal,
    app: &str,
    new_owner: &str,
) -> Result<()> {
    drover_model::names::validate_user_name(new_owner)?;
    change_app(reg, who, app, Permission::Owner, |row| {
        row.transfer_to = Some(new_owner.to_string());
        Ok(Edit::Changed)
    })
    .await
}

pub(super) async fn cancel_transfer<B: Backend>(
    reg: &SqlRegistry<B>,
    who: &Principal,
    app: &str,
) -> Result<()> {
    change_app(reg, who, app, Permission::Owner, |row| {
        Ok(match row.transfer_to.take() {
            Some(_) => Edit::Changed,
            None => Edit::Unchanged,
        })
    })
    .await
}

/// What an edit of an application row did.
enum Edit {
    /// Nothing: no write.
    Unchanged,
    Changed,
    /// A change that may take access away (members, owner): sessions are checked again.
    TakesAccess,
}

/// Edits application `app` as `who`, who needs `what` on it, in a write transaction retried on
/// conflicts; the row is saved unless `edit` left it unchanged.
async fn change_app<B: Backend>(
    reg: &SqlRegistry<B>,
    who: &Principal,
    app: &str,
    what: Permission,
    edit: impl Fn(&mut AppRow) -> Fallible<Edit> + Send + Sync,
) -> Result<()> {
    let edit = &edit;
    reg.retry(move || async move {
        let mut w = reg.begin_write().await?;
        let mut row = w.app(who, app, what).await?;
        match edit(&mut row)? {
            Edit::Unchanged => return Ok(()),
            Edit::Changed => {}
            Edit::TakesAccess => w.revokes = true,
        }
        w.save_app(&row).await?;
        w.commit().await
    })
    .await
}

pub(super) async fn accept<B: Backend>(
    reg: &SqlRegistry<B>,
    who: &Principal,
    app: &str,
) -> Result<()> {
    reg.retry(move || async move {
        let mut w = reg.begin_write().await?;
        let mut row = tables::load_app(&mut w.tx, app)
            .await?
            .ok_or_else(|| not_found_app(app))?;
        if row.transfer_to.as_deref() != Some(who.name()) {
            row.authorize(who, Permission::Read)?;
            return Err(RegistryError::BadRequest(format!(
                "there is no pending transfer of application '{app}' to user '{}'",
                who.name()
            ))
            .into());
        }
        row.owner = row.transfer_to.take();
        w.revokes = true;
        w.save_app(&row).await?;
        w.commit().await
    })
    .await
}

pub(super) async fn pending_transfer<B: Backend>(
    reg: &SqlRegistry<B>,
    who: &Principal,
    app: &str,
) -> Result<Option<String>> {
    // The user an application is offered to sees the offer (as they may accept it) before
    // they may read the application.
    let row = tables::load_app(&mut reg.backend.pool(), app)
        .await?
        .ok_or_else(|| not_found_app(app))?;
    if row.transfer_to.as_deref() == Some(who.name()) {
        return Ok(row.transfer_to);
    }
    row.authorize(who, Permission::Owner)?;
    Ok(row.transfer_to)
}
