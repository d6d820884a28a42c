//! Authorization of application access: who may do what with an application (owner, members,
//! roles), decided inside the transaction that reads it. A caller who may not read an
//! application gets `NotFound`, never `Forbidden`.

use drover_model::role::permits;
use drover_model::{Permission, Principal, Resource};

use super::{tables, Backend, SqlRegistry};
use crate::sql::{Fallible, Sql};
use crate::{RegistryError, Result};
use tables::AppRow;

pub(super) fn not_found_app(app: &str) -> RegistryError {
    RegistryError::NotFound(format!("application '{app}' not found"))
}

pub(super) fn not_found_device(app: &str, dev: &str) -> RegistryError {
    RegistryError::NotFound(format!("device '{dev}' not found in application '{app}'"))
}

pub(super) fn require_admin(who: &Principal) -> Result<()> {
    if who.is_admin() {
        Ok(())
    } else {
        Err(RegistryError::Forbidden(format!(
            "user '{}' is not a system administrator",
            who.name()
        )))
    }
}

impl AppRow {
    /// Whether `who` may do `what` with the application.
    pub(super) fn permits(&self, who: &Principal, what: Permission) -> bool {
        permits(who, self.owner.as_deref(), &self.members, what)
    }

    pub(super) fn authorize(&self, who: &Principal, what: Permission) -> Result<()> {
        let name = &self.doc.metadata.name;
        if !permits(who, self.owner.as_deref(), &self.members, Permission::Read) {
            return Err(not_found_app(name));
        }
        if !permits(who, self.owner.as_deref(), &self.members, what) {
            let need = match what {
                Permission::Read => "read",
                Permission::Write => "write to",
                Permission::Admin => "administer",
                Permission::Owner => "transfer",
            };
            return Err(RegistryError::Forbidden(format!(
                "user '{}' may not {need} application '{name}'",
                who.name()
            )));
        }
        Ok(())
    }
}

/// The application, if `who` may read it.
pub(super) async fn readable_app(
    db: &mut impl Sql,
    who: &Principal,
    app: &str,
) -> Fallible<AppRow> {
    let row = tables::load_app(db, app)
        .await?
        .ok_or_else(|| not_found_app(app))?;
    row.authorize(who, Permission::Read)?;
    Ok(row)
}

pub(super) async fn get_app<B: Backend>(
    reg: &SqlRegistry<B>,
    who: &Principal,
    app: &str,
) -> Result<Resource> {
    Ok(readable_app(&mut reg.backend.pool(), who, app).await?.doc)
}

pub(super) async fn authorize<B: Backend>(
    reg: &SqlRegistry<B>,
    who: &Principal,
    app: &str,
    what: Permission,
) -> Result<Resource> {
    let row = readable_app(&mut reg.backend.pool(), who, app).await?;
    row.authorize(who, what)?;
    Ok(row.doc)
}

pub(super) async fn readable_apps<B: Backend>(
    reg: &SqlRegistry<B>,
    who: &Principal,
) -> Result<Option<Vec<String>>> {
    if who.is_admin() {
        return Ok(None);
    }
    let apps = tables::app_access(&mut reg.backend.pool()).await?;
    Ok(Some(
        apps.into_iter()
            .filter(|(_, owner, members)| permits(who, owner.as_deref(), members, Permission::Read))
            .map(|(name, _, _)| name)
            .collect(),
    ))
}
