//! The registry's rules over any SQL store: [`SqlRegistry`] implements [`Registry`] and
//! [`DeviceDirectory`] once, for every [`Backend`]. A backend only says how to open transactions,
//! how writers are serialized and how other nodes learn of a commit; the statements are in
//! [`tables`], the rules that need no store in [`crate::logic`].
//!
//! Every write takes the process's writer lock, then runs in one transaction that starts by
//! reading the revision counter (on PostgreSQL also locking its row until the commit, which
//! orders the writers of all nodes), allocates one revision per change event, appends the events
//! to the outbox and moves the counter at the end. Writers are thus serialized, and revisions
//! become visible strictly in commit order. A write the database aborts (serialization failure,
//! deadlock) runs again, a few times. Reads that report the revision they saw (lists) run in one
//! snapshot; other reads run on the pool.

pub(crate) mod migrate;
mod tables;
mod twins;

use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use drover_auth::device::{DeviceDirectory, DirectoryError};
use drover_auth::user::UserDirectory;
use drover_model::role::permits;
use drover_model::{Kind, Members, Permission, Principal, Resource, ResourceInput};
use tokio::sync::{watch, Mutex, MutexGuard};

use crate::logic::{
    self, apply_update, check_delete_preconditions, compute_app_status, new_resource,
};
use crate::sql::{Failure, Fallible, Sql, Tx};
use crate::{
    AccessReader, AdminBootstrap, Change, CreatedToken, ListOptions, Listing, MembersDoc,
    Preconditions, Registry, RegistryError, Result, TokenInfo, User, FINALIZER_HAS_DEVICES,
};
use tables::{AppRow, NewToken};

/// The name of the built-in system administrator.
pub const ADMIN_USER: &str = "admin";

/// How often an operation runs when the database keeps aborting its transaction.
const ATTEMPTS: u32 = 4;

/// What a store provides to [`SqlRegistry`].
#[async_trait]
pub trait Backend: Send + Sync + 'static {
    type Tx: Tx;
    type Pool: Sql + Clone + Sync;
    /// Reads the revision counter first thing in a write transaction; where several processes
    /// share the database, it also locks the counter until the transaction ends.
    const LOCK_REVISION: &'static str;
    /// Reads a device's uid (`$1` app, `$2` name) in a write transaction; where several
    /// processes share the database, it also locks the row until the transaction ends (twin
    /// writes of one device take turns on it).
    const LOCK_DEVICE: &'static str;

    /// Begins a write transaction (the caller holds this process's writer lock).
    async fn begin_write(&self) -> Fallible<Self::Tx>;
    /// Begins a transaction that sees one consistent snapshot.
    async fn begin_read(&self) -> Fallible<Self::Tx>;
    /// Runs in a write transaction that moved the revision or access counter, just before the
    /// commit.
    async fn announce(&self, tx: &mut Self::Tx, what: Announcement) -> Fallible<()>;
    /// The pool, for statements that need no transaction.
    fn pool(&self) -> Self::Pool;
    async fn close(&self);
}

/// What a commit tells the other nodes.
#[derive(Debug, Clone, Copy)]
pub struct Announcement {
    /// The revision after the commit.
    pub revision: u64,
    /// The access counter, when the commit moved it.
    pub access: Option<u64>,
}

type Directory<T> = std::result::Result<T, DirectoryError>;

/// A directory answer: every failure is the store's (the directory refuses nothing).
fn directory<T>(answer: Fallible<T>) -> Directory<T> {
    answer.map_err(|f| DirectoryError(RegistryError::from(f).to_string()))
}

/// The revision of the last commit.
pub async fn committed_revision(db: &mut impl Sql) -> Fallible<u64> {
    tables::meta(db, tables::REVISION).await
}

/// The access counter of the last commit.
pub async fn committed_access(db: &mut impl Sql) -> Fallible<u64> {
    tables::meta(db, tables::ACCESS).await
}

/// Moves the watched revision forward (never back: notifications and local commits race).
pub fn advance(revision: &watch::Sender<u64>, to: u64) {
    revision.send_if_modified(|r| {
        if to > *r {
            *r = to;
            true
        } else {
            false
        }
    });
}

/// The registry over one SQL backend. Use [`crate::SqliteRegistry`] or
/// [`crate::PostgresRegistry`].
pub struct SqlRegistry<B> {
    backend: B,
    /// Serializes this process's writers before they take a connection.
    writer: Mutex<()>,
    /// The latest committed revision this process knows of.
    revision: watch::Sender<u64>,
    /// The latest access counter this process knows of.
    access: watch::Sender<u64>,
    /// Moves when this process wrote a row of the twin outbox.
    twins: watch::Sender<u64>,
}

fn not_found_app(app: &str) -> RegistryError {
    RegistryError::NotFound(format!("application '{app}' not found"))
}

fn not_found_device(app: &str, dev: &str) -> RegistryError {
    RegistryError::NotFound(format!("device '{dev}' not found in application '{app}'"))
}

fn require_admin(who: &Principal) -> Result<()> {
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
    fn permits(&self, who: &Principal, what: Permission) -> bool {
        permits(who, self.owner.as_deref(), &self.members, what)
    }

    fn authorize(&self, who: &Principal, what: Permission) -> Result<()> {
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
async fn readable_app(db: &mut impl Sql, who: &Principal, app: &str) -> Fallible<AppRow> {
    let row = tables::load_app(db, app)
        .await?
        .ok_or_else(|| not_found_app(app))?;
    row.authorize(who, Permission::Read)?;
    Ok(row)
}

/// A write transaction: holds the writer lock, allocates revisions and collects change events.
struct Write<'r, B: Backend> {
    tx: B::Tx,
    registry: &'r SqlRegistry<B>,
    base: u64,
    revision: u64,
    changes: Vec<Change>,
    /// Whether this write may take access away from someone (moves the access counter).
    revokes: bool,
    now: DateTime<Utc>,
    _writer: MutexGuard<'r, ()>,
}

impl<B: Backend> Write<'_, B> {
    /// Emits one change per path for `res`, and sets its resourceVersion to the last revision.
    fn emit(&mut self, kind: Kind, res: &mut Resource, paths: &[String]) {
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

    async fn commit(mut self) -> Fallible<()> {
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

    async fn save_app(&mut self, row: &AppRow) -> Fallible<()> {
        tables::save_app(&mut self.tx, row, &logic::trust_anchor_subjects(&row.doc)).await
    }

    /// Stores a device after checking that its names and aliases, and its unique usernames, are
    /// not another device's.
    async fn save_device(&mut self, app: &str, dev: &Resource) -> Fallible<()> {
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
    async fn remove_device(&mut self, app: &str, mut dev: Resource) -> Fallible<()> {
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

    /// Saves a changed app, or removes it when it is deleting and has no finalizers left.
    async fn settle_app(&mut self, mut row: AppRow) -> Fallible<()> {
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
    async fn app(&mut self, who: &Principal, app: &str, what: Permission) -> Fallible<AppRow> {
        let row = tables::load_app(&mut self.tx, app)
            .await?
            .ok_or_else(|| not_found_app(app))?;
        row.authorize(who, what)?;
        Ok(row)
    }

    async fn device(&mut self, app: &str, device: &str) -> Fallible<Resource> {
        Ok(tables::load_device(&mut self.tx, app, device)
            .await?
            .ok_or_else(|| not_found_device(app, device))?)
    }
}

impl<B: Backend> SqlRegistry<B> {
    /// The registry over `backend`, whose last commit is `revision` with the access counter at
    /// `access` (the backend may move both watches on other nodes' commits).
    pub(crate) fn new(
        backend: B,
        revision: watch::Sender<u64>,
        access: watch::Sender<u64>,
    ) -> Self {
        Self {
            backend,
            writer: Mutex::new(()),
            revision,
            access,
            twins: watch::Sender::new(0),
        }
    }

    /// Stops background work and closes the database connections (SQLite: flushes the WAL).
    /// The same as [`Registry::close`], callable without the trait.
    pub async fn close(&self) {
        self.backend.close().await;
    }

    async fn begin_write(&self) -> Fallible<Write<'_, B>> {
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

    /// A read transaction and the revision it sees.
    async fn read(&self) -> Fallible<(B::Tx, u64)> {
        let mut tx = self.backend.begin_read().await?;
        let revision = tables::meta(&mut tx, tables::REVISION).await?;
        Ok((tx, revision))
    }

    /// Runs a write operation, again when the database aborted its transaction.
    async fn retry<T, F, Fut>(&self, mut op: F) -> Result<T>
    where
        F: FnMut() -> Fut + Send,
        Fut: Future<Output = Fallible<T>> + Send,
        T: Send,
    {
        let mut attempt = 1;
        loop {
            match op().await {
                Ok(v) => return Ok(v),
                Err(Failure::Retry(e)) if attempt < ATTEMPTS => {
                    tracing::debug!(attempt, error = %e, "registry transaction aborted; retrying");
                    tokio::time::sleep(Duration::from_millis(5 << attempt)).await;
                    attempt += 1;
                }
                Err(f) => return Err(f.into()),
            }
        }
    }
}

#[async_trait]
impl<B: Backend> AccessReader for SqlRegistry<B> {
    async fn get_app(&self, who: &Principal, app: &str) -> Result<Resource> {
        Ok(readable_app(&mut self.backend.pool(), who, app).await?.doc)
    }

    async fn get_device(&self, who: &Principal, app: &str, device: &str) -> Result<Resource> {
        let mut db = self.backend.pool();
        let row = readable_app(&mut db, who, app).await?;
        let mut dev = tables::load_device(&mut db, app, device)
            .await?
            .ok_or_else(|| not_found_device(app, device))?;
        if !row.permits(who, Permission::Write) {
            logic::redact_secrets(&mut dev);
        } else if !row.permits(who, Permission::Admin) {
            logic::redact_keys(&mut dev);
        }
        Ok(dev)
    }

    async fn authorize(&self, who: &Principal, app: &str, what: Permission) -> Result<Resource> {
        let row = readable_app(&mut self.backend.pool(), who, app).await?;
        row.authorize(who, what)?;
        Ok(row.doc)
    }
}

#[async_trait]
impl<B: Backend> Registry for SqlRegistry<B> {
    async fn create_app(&self, who: &Principal, input: ResourceInput) -> Result<Resource> {
        logic::validate_input(Kind::Application, &input, None, None)?;
        let input = &input;
        self.retry(move || async move {
            let mut w = self.begin_write().await?;
            let name = input.name()?;
            if tables::load_app(&mut w.tx, name).await?.is_some() {
                return Err(RegistryError::Conflict(format!(
                    "application '{name}' already exists"
                ))
                .into());
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

    async fn list_apps(&self, who: &Principal, opts: &ListOptions) -> Result<Listing<Resource>> {
        let (mut tx, revision) = self.read().await?;
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

    async fn update_app(
        &self,
        who: &Principal,
        app: &str,
        input: ResourceInput,
    ) -> Result<Resource> {
        logic::validate_input(Kind::Application, &input, Some(app), None)?;
        let input = &input;
        self.retry(move || async move {
            let mut w = self.begin_write().await?;
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

    async fn delete_app(&self, who: &Principal, app: &str, pre: Preconditions) -> Result<()> {
        let pre = &pre;
        self.retry(move || async move {
            let mut w = self.begin_write().await?;
            let mut row = w.app(who, app, Permission::Admin).await?;
            check_delete_preconditions(&row.doc, pre)?;
            if row.doc.is_deleting() {
                return Ok(());
            }
            let mut held = 0usize;
            for mut dev in tables::all_devices(&mut w.tx, app).await? {
                if dev.metadata.finalizers.is_empty() {
                    tables::delete_device(&mut w.tx, app, &dev.metadata.name).await?;
                    w.emit(Kind::Device, &mut dev, &[".".to_string()]);
                } else {
                    held += 1;
                    if !dev.is_deleting() {
                        dev.metadata.deletion_timestamp = Some(w.now);
                        w.emit(Kind::Device, &mut dev, &[".metadata".to_string()]);
                        w.save_device(app, &dev).await?;
                    }
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

    async fn create_device(
        &self,
        who: &Principal,
        app: &str,
        input: ResourceInput,
    ) -> Result<Resource> {
        logic::validate_input(Kind::Device, &input, None, Some(app))?;
        let mut input = input;
        input.spec = logic::hash_passwords(std::mem::take(&mut input.spec), None).await?;
        let input = &input;
        self.retry(move || async move {
            let mut w = self.begin_write().await?;
            let missing =
                || RegistryError::ReferenceNotFound(format!("application '{app}' not found"));
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

    async fn list_devices(
        &self,
        who: &Principal,
        app: &str,
        opts: &ListOptions,
    ) -> Result<Listing<Resource>> {
        let (mut tx, revision) = self.read().await?;
        let row = readable_app(&mut tx, who, app).await?;
        let mut items = tables::all_devices(&mut tx, app).await?;
        items.retain(|d| opts.selector.matches(&d.metadata.labels));
        if !row.permits(who, Permission::Write) {
            items.iter_mut().for_each(logic::redact_secrets);
        } else if !row.permits(who, Permission::Admin) {
            items.iter_mut().for_each(logic::redact_keys);
        }
        Ok(Listing {
            items: logic::page(items, opts.limit, opts.offset),
            revision,
        })
    }

    async fn update_device(
        &self,
        who: &Principal,
        app: &str,
        device: &str,
        input: ResourceInput,
    ) -> Result<Resource> {
        logic::validate_input(Kind::Device, &input, Some(device), Some(app))?;
        // Hash outside the write lock; the previous spec only serves to reuse matching hashes.
        let old = tables::load_device(&mut self.backend.pool(), app, device).await?;
        let old_spec = old.map(|d| d.spec);
        let mut input = input;
        input.spec = logic::hash_passwords(std::mem::take(&mut input.spec), old_spec).await?;
        let input = &input;
        self.retry(move || async move {
            let mut w = self.begin_write().await?;
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

    async fn delete_device(
        &self,
        who: &Principal,
        app: &str,
        device: &str,
        pre: Preconditions,
    ) -> Result<()> {
        let pre = &pre;
        self.retry(move || async move {
            let mut w = self.begin_write().await?;
            w.app(who, app, Permission::Write).await?;
            let mut dev = w.device(app, device).await?;
            check_delete_preconditions(&dev, pre)?;
            if dev.is_deleting() {
                return Ok(());
            }
            if dev.metadata.finalizers.is_empty() {
                w.remove_device(app, dev).await?;
            } else {
                dev.metadata.deletion_timestamp = Some(w.now);
                w.emit(Kind::Device, &mut dev, &[".metadata".to_string()]);
                w.save_device(app, &dev).await?;
            }
            w.commit().await
        })
        .await
    }

    async fn get_members(&self, who: &Principal, app: &str) -> Result<MembersDoc> {
        let row = readable_app(&mut self.backend.pool(), who, app).await?;
        row.authorize(who, Permission::Admin)?;
        Ok(MembersDoc {
            resource_version: Some(row.members_version),
            members: row.members,
        })
    }

    async fn set_members(&self, who: &Principal, app: &str, doc: MembersDoc) -> Result<()> {
        for name in doc.members.keys() {
            if !name.is_empty() {
                drover_model::names::validate_user_name(name)?;
            }
        }
        let doc = &doc;
        self.retry(move || async move {
            let mut w = self.begin_write().await?;
            let mut row = w.app(who, app, Permission::Admin).await?;
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
                return Ok(());
            }
            row.members = doc.members.clone();
            row.members_version = uuid::Uuid::new_v4().to_string();
            w.revokes = true;
            w.save_app(&row).await?;
            w.commit().await
        })
        .await
    }

    async fn transfer_ownership(&self, who: &Principal, app: &str, new_owner: &str) -> Result<()> {
        drover_model::names::validate_user_name(new_owner)?;
        self.retry(move || async move {
            let mut w = self.begin_write().await?;
            let mut row = w.app(who, app, Permission::Owner).await?;
            row.transfer_to = Some(new_owner.to_string());
            w.save_app(&row).await?;
            w.commit().await
        })
        .await
    }

    async fn cancel_transfer(&self, who: &Principal, app: &str) -> Result<()> {
        self.retry(move || async move {
            let mut w = self.begin_write().await?;
            let mut row = w.app(who, app, Permission::Owner).await?;
            if row.transfer_to.take().is_some() {
                w.save_app(&row).await?;
                w.commit().await?;
            }
            Ok(())
        })
        .await
    }

    async fn accept_ownership(&self, who: &Principal, app: &str) -> Result<()> {
        self.retry(move || async move {
            let mut w = self.begin_write().await?;
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

    async fn pending_transfer(&self, who: &Principal, app: &str) -> Result<Option<String>> {
        // The user an application is offered to sees the offer (as they may accept it) before
        // they may read the application.
        let row = tables::load_app(&mut self.backend.pool(), app)
            .await?
            .ok_or_else(|| not_found_app(app))?;
        if row.transfer_to.as_deref() == Some(who.name()) {
            return Ok(row.transfer_to);
        }
        row.authorize(who, Permission::Owner)?;
        Ok(row.transfer_to)
    }

    async fn bootstrap_admin(&self, configured: Option<&str>) -> Result<AdminBootstrap> {
        self.retry(move || async move {
            let mut w = self.begin_write().await?;
            tables::insert_user(&mut w.tx, ADMIN_USER, true, true, w.now).await?;
            let result = if let Some(token) = configured {
                tables::delete_configured_tokens(&mut w.tx, ADMIN_USER, token).await?;
                let prefix = drover_auth::token::parse(token).unwrap_or("configured");
                tables::insert_token(
                    &mut w.tx,
                    NewToken {
                        user: ADMIN_USER,
                        token,
                        prefix,
                        description: Some("configured (DROVER_ADMIN_TOKEN)"),
                        configured: true,
                    },
                )
                .await?;
                AdminBootstrap::Configured
            } else if tables::count_tokens(&mut w.tx, ADMIN_USER).await? == 0 {
                let t = drover_auth::token::generate();
                tables::insert_token(
                    &mut w.tx,
                    NewToken {
                        user: ADMIN_USER,
                        token: &t.token,
                        prefix: &t.prefix,
                        description: Some("generated at first start"),
                        configured: false,
                    },
                )
                .await?;
                AdminBootstrap::Generated(t.token)
            } else {
                AdminBootstrap::Existing
            };
            w.commit().await?;
            Ok(result)
        })
        .await
    }

    async fn create_user(
        &self,
        who: &Principal,
        name: &str,
        admin: bool,
    ) -> Result<(User, CreatedToken)> {
        require_admin(who)?;
        drover_model::names::validate_user_name(name)?;
        self.retry(move || async move {
            let mut w = self.begin_write().await?;
            if tables::user_exists(&mut w.tx, name).await? {
                return Err(
                    RegistryError::Conflict(format!("user '{name}' already exists")).into(),
                );
            }
            let created = w.now;
            tables::insert_user(&mut w.tx, name, admin, false, created).await?;
            let t = drover_auth::token::generate();
            tables::insert_token(
                &mut w.tx,
                NewToken {
                    user: name,
                    token: &t.token,
                    prefix: &t.prefix,
                    description: Some("initial token"),
                    configured: false,
                },
            )
            .await?;
            w.commit().await?;
            Ok((
                User {
                    name: name.to_string(),
                    admin,
                    created,
                },
                CreatedToken {
                    prefix: t.prefix,
                    token: t.token,
                },
            ))
        })
        .await
    }

    async fn list_users(&self, who: &Principal) -> Result<Vec<User>> {
        require_admin(who)?;
        Ok(tables::users(&mut self.backend.pool()).await?)
    }

    async fn delete_user(&self, who: &Principal, name: &str) -> Result<()> {
        require_admin(who)?;
        if name == ADMIN_USER {
            return Err(RegistryError::BadRequest(format!(
                "the system administrator '{ADMIN_USER}' cannot be deleted"
            )));
        }
        self.retry(move || async move {
            let mut w = self.begin_write().await?;
            if !tables::delete_user(&mut w.tx, name).await? {
                return Err(RegistryError::NotFound(format!("user '{name}' not found")).into());
            }
            w.revokes = true;
            // Apps the user owned stay, owned by nobody (only system administrators reach them);
            // memberships and pending transfers to the user end, so a new user of the same name
            // inherits nothing.
            for app in tables::apps_of_user(&mut w.tx, name).await? {
                let Some(mut row) = tables::load_app(&mut w.tx, &app).await? else {
                    continue;
                };
                let mut changed = false;
                if row.owner.as_deref() == Some(name) {
                    row.owner = None;
                    changed = true;
                }
                if row.transfer_to.as_deref() == Some(name) {
                    row.transfer_to = None;
                    changed = true;
                }
                if row.members.remove(name).is_some() {
                    row.members_version = uuid::Uuid::new_v4().to_string();
                    changed = true;
                }
                if changed {
                    w.save_app(&row).await?;
                }
            }
            w.commit().await
        })
        .await
    }

    async fn create_token(
        &self,
        who: &Principal,
        description: Option<&str>,
    ) -> Result<CreatedToken> {
        if description.is_some_and(|d| d.len() > 256) {
            return Err(RegistryError::BadRequest(
                "token description is longer than 256 bytes".into(),
            ));
        }
        self.retry(move || async move {
            let mut w = self.begin_write().await?;
            // Users known only through single sign-on get their user record with their first
            // token.
            tables::insert_user(&mut w.tx, who.name(), false, false, w.now).await?;
            let t = drover_auth::token::generate();
            tables::insert_token(
                &mut w.tx,
                NewToken {
                    user: who.name(),
                    token: &t.token,
                    prefix: &t.prefix,
                    description,
                    configured: false,
                },
            )
            .await?;
            w.commit().await?;
            Ok(CreatedToken {
                prefix: t.prefix,
                token: t.token,
            })
        })
        .await
    }

    async fn list_tokens(&self, who: &Principal) -> Result<Vec<TokenInfo>> {
        Ok(tables::tokens(&mut self.backend.pool(), who.name()).await?)
    }

    async fn delete_token(&self, who: &Principal, prefix: &str) -> Result<()> {
        self.retry(move || async move {
            let mut w = self.begin_write().await?;
            if who.name() == ADMIN_USER
                && tables::count_tokens(&mut w.tx, ADMIN_USER).await? == 1
                && tables::tokens(&mut w.tx, ADMIN_USER)
                    .await?
                    .iter()
                    .any(|t| t.prefix == prefix)
            {
                return Err(RegistryError::Conflict(format!(
                    "token '{prefix}' is the last access token of the system administrator '{ADMIN_USER}': create another one first (POST /api/tokens/v1alpha1), or the installation can only be recovered by restarting with DROVER_ADMIN_TOKEN"
                ))
                .into());
            }
            if !tables::delete_token(&mut w.tx, who.name(), prefix).await? {
                return Err(RegistryError::NotFound(format!("token '{prefix}' not found")).into());
            }
            w.revokes = true;
            w.commit().await
        })
        .await
    }

    async fn authenticate_token(&self, user: &str, token: &str) -> Result<Principal> {
        match tables::token_owner(&mut self.backend.pool(), token).await? {
            Some((owner, admin)) if owner == user => Ok(if admin {
                Principal::SystemAdmin(owner)
            } else {
                Principal::User(owner)
            }),
            _ => Err(RegistryError::Unauthorized(format!(
                "invalid access token for user '{user}'"
            ))),
        }
    }

    async fn principal_for(&self, user: &str) -> Result<Principal> {
        let admin = tables::user_admin(&mut self.backend.pool(), user).await?;
        Ok(if admin == Some(true) {
            Principal::SystemAdmin(user.to_string())
        } else {
            Principal::User(user.to_string())
        })
    }

    async fn changes_since(&self, since: u64, limit: usize) -> Result<Vec<Change>> {
        Ok(tables::changes_since(&mut self.backend.pool(), since, limit).await?)
    }

    async fn compacted_revision(&self) -> Result<u64> {
        Ok(tables::compacted(&mut self.backend.pool()).await?)
    }

    async fn prune_changes(&self, before: DateTime<Utc>) -> Result<u64> {
        // Under the writer lock, so `compacted` and the deletion are one step for readers.
        self.retry(move || async move {
            let mut w = self.begin_write().await?;
            let Some(last) = tables::last_change_before(&mut w.tx, before).await? else {
                return Ok(0);
            };
            let n = tables::delete_changes(&mut w.tx, last).await?;
            tables::set_compacted(&mut w.tx, last).await?;
            w.commit().await?;
            Ok(n)
        })
        .await
    }

    async fn readable_apps(&self, who: &Principal) -> Result<Option<Vec<String>>> {
        if who.is_admin() {
            return Ok(None);
        }
        let apps = tables::app_access(&mut self.backend.pool()).await?;
        Ok(Some(
            apps.into_iter()
                .filter(|(_, owner, members)| {
                    permits(who, owner.as_deref(), members, Permission::Read)
                })
                .map(|(name, _, _)| name)
                .collect(),
        ))
    }

    fn subscribe(&self) -> watch::Receiver<u64> {
        self.revision.subscribe()
    }

    fn subscribe_access(&self) -> watch::Receiver<u64> {
        self.access.subscribe()
    }

    async fn ping(&self) -> Result<()> {
        committed_revision(&mut self.backend.pool()).await?;
        Ok(())
    }

    async fn close(&self) {
        self.backend.close().await;
    }
}

#[async_trait]
impl<B: Backend> DeviceDirectory for SqlRegistry<B> {
    async fn application(&self, app: &str) -> Directory<Option<Resource>> {
        let app = tables::load_app(&mut self.backend.pool(), app).await;
        directory(app.map(|row| row.map(|r| r.doc)))
    }

    async fn device(&self, app: &str, name_or_alias: &str) -> Directory<Option<Resource>> {
        directory(tables::device_by_name(&mut self.backend.pool(), app, "id", name_or_alias).await)
    }

    async fn device_by_username(&self, app: &str, username: &str) -> Directory<Option<Resource>> {
        directory(tables::device_by_name(&mut self.backend.pool(), app, "username", username).await)
    }

    async fn applications_by_trust_anchor(&self, subject: &str) -> Directory<Vec<Resource>> {
        directory(tables::apps_by_trust_anchor(&mut self.backend.pool(), subject).await)
    }
}

#[async_trait]
impl<B: Backend> UserDirectory for SqlRegistry<B> {
    async fn token_owner(&self, token_hash: &str) -> Directory<Option<(String, bool)>> {
        directory(tables::token_owner_by_hash(&mut self.backend.pool(), token_hash).await)
    }

    async fn user_admin(&self, user: &str) -> Directory<Option<bool>> {
        directory(tables::user_admin(&mut self.backend.pool(), user).await)
    }

    fn access_changes(&self) -> watch::Receiver<u64> {
        self.access.subscribe()
    }
}
