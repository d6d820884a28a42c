//! Devices: read (with secrets hidden from those who may not see them), create, list, update,
//! delete.

use drover_model::{Kind, Permission, Principal, Resource, ResourceInput};

use super::access::{not_found_device, readable_app};
use super::{tables, Backend, SqlRegistry};
use crate::logic::{self, apply_update, check_delete_preconditions, new_resource};
use crate::sql::Failure;
use crate::{ListOptions, Listing, Preconditions, RegistryError, Result};
use tables::AppRow;

/// What `who` may not see of the application's devices is hidden: every secret from those who
/// may only read it, the SAS keys from those who may write but not administer it.
fn redaction(row: &AppRow, who: &Principal) -> Option<fn(&mut Resource)> {
    if !row.permits(who, Permission::Write) {
        Some(logic::redact_secrets)
    } else if !row.permits(who, Permission::Admin) {
        Some(logic::redact_keys)
    } else {
        None
    }
}

/// The device, its secrets hidden as [`redaction`] says.
pub(super) async fn get<B: Backend>(
    reg: &SqlRegistry<B>,
    who: &Principal,
    app: &str,
    device: &str,
) -> Result<Resource> {
    let mut db = reg.backend.pool();
    let row = readable_app(&mut db, who, app).await?;
    let mut dev = tables::load_device(&mut db, app, device)
        .await?
        .ok_or_else(|| not_found_device(app, device))?;
    if let Some(redact) = redaction(&row, who) {
        redact(&mut dev);
    }
    Ok(dev)
}

pub(super) async fn create<B: Backend>(
    reg: &SqlRegistry<B>,
    who: &Principal,
    app: &str,
    input: ResourceInput,
) -> Result<Resource> {
    logic::validate_input(Kind::Device, &input, None, Some(app))?;
    let mut input = input;
    input.spec = logic::hash_passwords(std::mem::take(&mut input.spec), None).await?;
    let input = &input;
    reg.retry(move || async move {
        let mut w = reg.begin_write().await?;
        let missing = || RegistryError::ReferenceNotFound(format!("application '{app}' not found"));
        let row = w
            .app(who, app, Permission::Write)
            .await
            .map_err(|f| match f {
                Failure::Final(RegistryError::NotFound(_)) => missing().into(),
                f => f,
            })?;
        if row.doc.is_deleting() {
            return Err(RegistryError::ReferenceNotFound(format!(
                "application '{app}' is being deleted"
            ))
            .into());
        }
        let name = input.name()?;
        if tables::load_device(&mut w.tx, app, name).await?.is_some() {
            return Err(RegistryError::Conflict(format!(
                "device '{name}' already exists in application '{app}'"
            ))
            .into());
        }
        let mut dev = new_resource(input.clone(), Some(app), w.now);
        w.emit(Kind::Device, &mut dev, &[".".to_string()]);
        w.save_device(app, &dev).await?;
        w.commit().await?;
        Ok(dev)
    })
    .await
}

pub(super) async fn list<B: Backend>(
    reg: &SqlRegistry<B>,
    who: &Principal,
    app: &str,
    opts: &ListOptions,
) -> Result<Listing<Resource>> {
    let (mut tx, revision) = reg.read().await?;
    let row = readable_app(&mut tx, who, app).await?;
    let mut items = tables::all_devices(&mut tx, app).await?;
    items.retain(|d| opts.selector.matches(&d.metadata.labels));
    if let Some(redact) = redaction(&row, who) {
        items.iter_mut().for_each(redact);
    }
    Ok(Listing {
        items: logic::page(items, opts.limit, opts.offset),
        revision,
    })
}

pub(super) async fn update<B: Backend>(
    reg: &SqlRegistry<B>,
    who: &Principal,
    app: &str,
    device: &str,
    input: ResourceInput,
) -> Result<Resource> {
    logic::validate_input(Kind::Device, &input, Some(device), Some(app))?;
    // Hash outside the write lock; the previous spec only serves to reuse matching hashes.
    let old = tables::load_device(&mut reg.backend.pool(), app, device).await?;
    let old_spec = old.map(|d| d.spec);
    let mut input = input;
    input.spec = logic::hash_passwords(std::mem::take(&mut input.spec), old_spec).await?;
    let input = &input;
    reg.retry(move || async move {
        let mut w = reg.begin_write().await?;
        w.app(who, app, Permission::Write).await?;
        let old = w.device(app, device).await?;
        let (mut dev, paths) = apply_update(&old, input.clone())?;
        if paths.is_empty() {
            return Ok(old);
        }
        if dev.is_deleting() && dev.metadata.finalizers.is_empty() {
            w.remove_device(app, dev.clone()).await?;
            w.commit().await?;
            return Ok(dev);
        }
        w.emit(Kind::Device, &mut dev, &paths);
        w.save_device(app, &dev).await?;
        w.commit().await?;
        Ok(dev)
    })
    .await
}

pub(super) async fn delete<B: Backend>(
    reg: &SqlRegistry<B>,
    who: &Principal,
    app: &str,
    device: &str,
    pre: Preconditions,
) -> Result<()> {
    let pre = &pre;
    reg.retry(move || async move {
        let mut w = reg.begin_write().await?;
        w.app(who, app, Permission::Write).await?;
        let dev = w.device(app, device).await?;
        check_delete_preconditions(&dev, pre)?;
        if dev.is_deleting() {
            return Ok(());
        }
        w.delete_device(app, dev).await?;
        w.commit().await
    })
    .await
}
