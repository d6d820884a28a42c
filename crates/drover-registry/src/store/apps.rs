//! Applications: create, list, update, delete (with the finalizer that waits for devices
//! still held by theirs).

use drover_model::role::permits;
use drover_model::{Kind, Members, Permission, Principal, Resource, ResourceInput};

use super::{tables, Backend, SqlRegistry};
use crate::logic::{
    self, apply_update, check_delete_preconditions, compute_app_status, new_resource,
};
use crate::{ListOptions, Listing, Preconditions, RegistryError, Result, FINALIZER_HAS_DEVICES};
use tables::AppRow;

pub(super) async fn create<B: Backend>(
    reg: &SqlRegistry<B>,
    who: &Principal,
    input: ResourceInput,
) -> Result<Resource> {
    logic::validate_input(Kind::Application, &input, None, None)?;
    let input = &input;
    reg.retry(move || async move {
        let mut w = reg.begin_write().await?;
        let name = input.name()?;
        if tables::load_app(&mut w.tx, name).await?.is_some() {
            return Err(
                RegistryError::Conflict(format!("application '{name}' already exists")).into(),
            );
        }
        let mut doc = new_resource(input.clone(), None, w.now);
        compute_app_status(&mut doc);
        w.emit(Kind::Application, &mut doc, &[".".to_string()]);
        let row = AppRow {
            doc,
            owner: Some(who.name().to_string()),
            transfer_to: None,
            members: Members::new(),
            members_version: uuid::Uuid::new_v4().to_string(),
        };
        w.save_app(&row).await?;
        w.commit().await?;
        Ok(row.doc)
    })
    .await
}

pub(super) async fn list<B: Backend>(
    reg: &SqlRegistry<B>,
    who: &Principal,
    opts: &ListOptions,
) -> Result<Listing<Resource>> {
    let (mut tx, revision) = reg.read().await?;
    let items = tables::all_apps(&mut tx)
        .await?
        .into_iter()
        .filter(|(doc, owner, members)| {
            permits(who, owner.as_deref(), members, Permission::Read)
                && opts.selector.matches(&doc.metadata.labels)
        })
        .map(|(doc, _, _)| doc)
        .collect();
    Ok(Listing {
        items: logic::page(items, opts.limit, opts.offset),
        revision,
    })
}

pub(super) async fn update<B: Backend>(
    reg: &SqlRegistry<B>,
    who: &Principal,
    app: &str,
    input: ResourceInput,
) -> Result<Resource> {
    logic::validate_input(Kind::Application, &input, Some(app), None)?;
    let input = &input;
    reg.retry(move || async move {
        let mut w = reg.begin_write().await?;
        let mut row = w.app(who, app, Permission::Write).await?;
        let (mut doc, _) = apply_update(&row.doc, input.clone())?;
        compute_app_status(&mut doc);
        let paths = drover_model::resource::changed_paths(&row.doc, &doc);
        if paths.is_empty() {
            return Ok(row.doc);
        }
        row.doc = doc;
        if row.doc.is_deleting() && row.doc.metadata.finalizers.is_empty() {
            // The last finalizer is gone: the application goes for good.
            let doc = row.doc.clone();
            w.settle_app(row).await?;
            w.commit().await?;
            return Ok(doc);
        }
        w.emit(Kind::Application, &mut row.doc, &paths);
        w.save_app(&row).await?;
        w.commit().await?;
        Ok(row.doc)
    })
    .await
}

pub(super) async fn delete<B: Backend>(
    reg: &SqlRegistry<B>,
    who: &Principal,
    app: &str,
    pre: Preconditions,
) -> Result<()> {
    let pre = &pre;
    reg.retry(move || async move {
        let mut w = reg.begin_write().await?;
        let mut row = w.app(who, app, Permission::Admin).await?;
        check_delete_preconditions(&row.doc, pre)?;
        if row.doc.is_deleting() {
            return Ok(());
        }
        let mut held = 0usize;
        for dev in tables::all_devices(&mut w.tx, app).await? {
            if w.delete_device(app, dev).await? {
                held += 1;
            }
        }
        row.doc.metadata.deletion_timestamp = Some(w.now);
        if held > 0 {
            row.doc
                .metadata
                .finalizers
                .push(FINALIZER_HAS_DEVICES.to_string());
        }
        w.settle_app(row).await?;
        w.commit().await
    })
    .await
}
