//! The write path: a [`Write`] holds the process's writer lock and one transaction, allocates a
//! revision per change event, collects the events and appends them to the outbox at the commit.

use chrono::{DateTime, Utc};
use drover_model::{Kind, Permission, Principal, Resource};
use tokio::sync::MutexGuard;

use super::access::{not_found_app, not_found_device};
use super::{advance, tables, Announcement, Backend, SqlRegistry};
use crate::logic;
use crate::sql::{Fallible, Tx};
use crate::{Change, RegistryError, FINALIZER_HAS_DEVICES};
use tables::AppRow;

/// A write transaction: holds the writer lock, allocates revisions and collects change events.
pub(super) struct Write<'r, B: Backend> {
    pub(super) tx: B::Tx,
    registry: &'r SqlRegistry<B>,
    pub(super) base: u64,
    pub(super) revision: u64,
    changes: Vec<Change>,
    /// Whether this write may take access away from someone (moves the access counter).
    pub(super) revokes: bool,
    pub(super) now: DateTime<Utc>,
    _writer: MutexGuard<'r, ()>,
}

impl<B: Backend> Write<'_, B> {
    /// Emits one change per path for `res`, and sets its resourceVersion to the last revision.
    pub(super) fn emit(&mut self, kind: Kind, res: &mut Resource, paths: &[String]) {
        let first = self.revision + 1;
        self.revision += paths.len() as u64;
        let rv = self.revision;
        res.metadata.resource_version = rv.to_string();
        for (i, path) in paths.iter().enumerate() {
            self.changes.push(Change {
                revision: first + i as u64,
                kind,
                application: res
                    .metadata
                    .application
                    .clone()
                    .unwrap_or_else(|| res.metadata.name.clone()),
                device: match kind {
                    Kind::Device => Some(res.metadata.name.clone()),
                    Kind::Application => None,
                },
                uid: res.metadata.uid.clone(),
                path: path.clone(),
                resource_version: rv,
                time: self.now,
            });
        }
    }

    pub(super) async fn commit(mut self) -> Fallible<()> {
        for c in &self.changes {
            tables::insert_change(&mut self.tx, c).await?;
        }
        let moved = self.revision != self.base;
        if moved {
            tables::set_revision(&mut self.tx, self.revision).await?;
        }
        let access = match self.revokes {
            true => Some(tables::bump_access(&mut self.tx).await?),
            false => None,
        };
        if moved || access.is_some() {
            let announcement = Announcement {
                revision: self.revision,
                access,
            };
            self.registry
                .backend
                .announce(&mut self.tx, announcement)
                .await?;
        }
        self.tx.commit().await?;
        if moved {
            advance(&self.registry.revision, self.revision);
        }
        if let Some(access) = access {
            advance(&self.registry.access, access);
        }
        Ok(())
    }

    pub(super) async fn save_app(&mut self, row: &AppRow) -> Fallible<()> {
        tables::save_app(&mut self.tx, row, &logic::trust_anchor_subjects(&row.doc)).await
    }

    /// Stores a device after checking that its names and aliases, and its unique usernames, are
    /// not another device's.
    pub(super) async fn save_device(&mut self, app: &str, dev: &Resource) -> Fallible<()> {
        let names = logic::device_names(dev);
        for (kind, value) in &names {
            let other =
                tables::name_holder(&mut self.tx, app, (kind, value), &dev.metadata.name).await?;
            if let Some(other) = other {
                let what = if *kind == "username" {
                    "unique username"
                } else if *value == dev.metadata.name {
                    "device name"
                } else {
                    "alias"
                };
                return Err(RegistryError::Conflict(format!(
                    "{what} '{value}' is already used by device '{other}' in application '{app}' (names and aliases are unique within an application)"
                ))
                .into());
            }
        }
        tables::save_device(&mut self.tx, app, dev, &names).await
    }

    /// Removes a device for good and, when it was the last one holding a deleting app, releases
    /// the app.
    pub(super) async fn remove_device(&mut self, app: &str, mut dev: Resource) -> Fallible<()> {
        tables::delete_device(&mut self.tx, app, &dev.metadata.name).await?;
        self.emit(Kind::Device, &mut dev, &[".".to_string()]);
        let Some(mut row) = tables::load_app(&mut self.tx, app).await? else {
            return Ok(());
        };
        if row.doc.is_deleting() && tables::count_devices(&mut self.tx, app).await? == 0 {
            row.doc
                .metadata
                .finalizers
                .retain(|f| f != FINALIZER_HAS_DEVICES);
            self.settle_app(row).await?;
        }
        Ok(())
    }

    /// Deletes a device as its finalizers allow: without any it goes at once
    /// ([`remove_device`](Self::remove_device)); else it is marked deleting (once) and stays
    /// until they are gone. True when it stays.
    pub(super) async fn delete_device(&mut self, app: &str, mut dev: Resource) -> Fallible<bool> {
        if dev.metadata.finalizers.is_empty() {
            self.remove_device(app, dev).await?;
            return Ok(false);
        }
        if !dev.is_deleting() {
            dev.metadata.deletion_timestamp = Some(self.now);
            self.emit(Kind::Device, &mut dev, &[".metadata".to_string()]);
            self.save_device(app, &dev).await?;
        }
        Ok(true)
    }

    /// Saves a changed app, or removes it when it is deleting and has no finalizers left.
    pub(super) async fn settle_app(&mut self, mut row: AppRow) -> Fallible<()> {
        if row.doc.is_deleting() && row.doc.metadata.finalizers.is_empty() {
            tables::delete_app(&mut self.tx, &row.doc.metadata.name).await?;
            self.emit(Kind::Application, &mut row.doc, &[".".to_string()]);
        } else {
            self.emit(Kind::Application, &mut row.doc, &[".metadata".to_string()]);
            self.save_app(&row).await?;
        }
        Ok(())
    }

    /// The application, which must exist, if `who` may do `what` with it.
    pub(super) async fn app(
        &mut self,
        who: &Principal,
        app: &str,
        what: Permission,
    ) -> Fallible<AppRow> {
        let row = tables::load_app(&mut self.tx, app)
            .await?
            .ok_or_else(|| not_found_app(app))?;
        row.authorize(who, what)?;
        Ok(row)
    }

    pub(super) async fn device(&mut self, app: &str, device: &str) -> Fallible<Resource> {
        Ok(tables::load_device(&mut self.tx, app, device)
            .await?
            .ok_or_else(|| not_found_device(app, device))?)
    }
}

impl<B: Backend> SqlRegistry<B> {
    /// Takes the writer lock and begins a write transaction at the current revision.
    pub(super) async fn begin_write(&self) -> Fallible<Write<'_, B>> {
        let writer = self.writer.lock().await;
        let mut tx = self.backend.begin_write().await?;
        let revision = tables::meta(&mut tx, B::LOCK_REVISION).await?;
        Ok(Write {
            tx,
            registry: self,
            base: revision,
            revision,
            changes: Vec::new(),
            revokes: false,
            now: Utc::now(),
            _writer: writer,
        })
    }
}
