//! The embedded registry store: one SQLite file (WAL, synchronous=FULL). Writes are serialized by
//! an in-process lock, which also makes change revisions visible strictly in commit order.

use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use drover_auth::device::{DeviceDirectory, DirectoryError};
use drover_model::role::permits;
use drover_model::{Kind, Members, Permission, Principal, Resource, ResourceInput};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, Sqlite, SqlitePool, Transaction};
use tokio::sync::{watch, Mutex, MutexGuard};

use crate::logic::{
    self, apply_update, check_delete_preconditions, compute_app_status, new_resource,
};
use crate::{
    AdminBootstrap, Change, CreatedToken, ListOptions, Listing, MembersDoc, Preconditions,
    Registry, RegistryError, Result, TokenInfo, User, FINALIZER_HAS_DEVICES,
};

/// The name of the built-in system administrator.
pub const ADMIN_USER: &str = "admin";

fn db_err(e: sqlx::Error) -> RegistryError {
    match e {
        sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed => {
            RegistryError::Unavailable(format!("registry database unavailable: {e}"))
        }
        e => RegistryError::Internal(format!("registry database error: {e}")),
    }
}

fn json_err(e: serde_json::Error) -> RegistryError {
    RegistryError::Internal(format!("stored document is corrupt: {e}"))
}

fn not_found_app(app: &str) -> RegistryError {
    RegistryError::NotFound(format!("application '{app}' not found"))
}

fn not_found_device(app: &str, dev: &str) -> RegistryError {
    RegistryError::NotFound(format!("device '{dev}' not found in application '{app}'"))
}

/// The embedded SQLite registry.
pub struct SqliteRegistry {
    pool: SqlitePool,
    write: Mutex<()>,
    revision: watch::Sender<u64>,
}

struct AppRow {
    doc: Resource,
    owner: Option<String>,
    transfer_to: Option<String>,
    members: Members,
    members_version: String,
}

impl AppRow {
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

/// A write transaction: holds the writer lock, allocates revisions and collects change events.
struct WriteTx<'a> {
    tx: Transaction<'static, Sqlite>,
    base: u64,
    revision: u64,
    changes: Vec<Change>,
    now: DateTime<Utc>,
    _guard: MutexGuard<'a, ()>,
}

impl WriteTx<'_> {
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

    async fn commit(mut self, reg: &SqliteRegistry) -> Result<()> {
        for c in &self.changes {
            sqlx::query("INSERT INTO changes (revision, kind, app, device, uid, path, resource_version, time) VALUES (?, ?, ?, ?, ?, ?, ?, ?)")
                .bind(c.revision as i64)
                .bind(c.kind.as_str())
                .bind(&c.application)
                .bind(&c.device)
                .bind(&c.uid)
                .bind(&c.path)
                .bind(c.resource_version as i64)
                .bind(c.time.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true))
                .execute(&mut *self.tx)
                .await
                .map_err(db_err)?;
        }
        if self.revision != self.base {
            sqlx::query("UPDATE meta SET revision = ? WHERE id = 1")
                .bind(self.revision as i64)
                .execute(&mut *self.tx)
                .await
                .map_err(db_err)?;
        }
        self.tx.commit().await.map_err(db_err)?;
        if self.revision != self.base {
            reg.revision.send_replace(self.revision);
        }
        Ok(())
    }
}

impl SqliteRegistry {
    /// Opens (creating if needed) the registry database at `path` and migrates it.
    pub async fn open(path: &Path) -> Result<Self> {
        let opts = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(opts)
            .await
            .map_err(|e| {
                RegistryError::Unavailable(format!(
                    "cannot open registry database {}: {e}",
                    path.display()
                ))
            })?;
        sqlx::migrate!("./migrations/sqlite")
            .run(&pool)
            .await
            .map_err(|e| {
                RegistryError::Internal(format!(
                    "cannot migrate registry database {}: {e}",
                    path.display()
                ))
            })?;
        let rev: i64 = sqlx::query_scalar("SELECT revision FROM meta WHERE id = 1")
            .fetch_one(&pool)
            .await
            .map_err(db_err)?;
        let (revision, _) = watch::channel(rev as u64);
        Ok(Self {
            pool,
            write: Mutex::new(()),
            revision,
        })
    }

    /// Closes the pool (flushes the WAL).
    pub async fn close(&self) {
        self.pool.close().await;
    }

    async fn begin_write(&self) -> Result<WriteTx<'_>> {
        let guard = self.write.lock().await;
        let mut tx = self.pool.begin().await.map_err(db_err)?;
        let rev: i64 = sqlx::query_scalar("SELECT revision FROM meta WHERE id = 1")
            .fetch_one(&mut *tx)
            .await
            .map_err(db_err)?;
        Ok(WriteTx {
            tx,
            base: rev as u64,
            revision: rev as u64,
            changes: Vec::new(),
            now: Utc::now(),
            _guard: guard,
        })
    }

    async fn load_app(tx: &mut Transaction<'static, Sqlite>, name: &str) -> Result<Option<AppRow>> {
        let row = sqlx::query(
            "SELECT doc, owner, transfer_to, members, members_version FROM apps WHERE name = ?",
        )
        .bind(name)
        .fetch_optional(&mut **tx)
        .await
        .map_err(db_err)?;
        row.map(|r| {
            Ok(AppRow {
                doc: serde_json::from_str(r.get::<&str, _>("doc")).map_err(json_err)?,
                owner: r.get("owner"),
                transfer_to: r.get("transfer_to"),
                members: serde_json::from_str(r.get::<&str, _>("members")).map_err(json_err)?,
                members_version: r.get("members_version"),
            })
        })
        .transpose()
    }

    async fn save_app(tx: &mut Transaction<'static, Sqlite>, row: &AppRow) -> Result<()> {
        sqlx::query(
            "INSERT INTO apps (name, uid, owner, transfer_to, members, members_version, doc) VALUES (?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT(name) DO UPDATE SET uid = excluded.uid, owner = excluded.owner, transfer_to = excluded.transfer_to,
             members = excluded.members, members_version = excluded.members_version, doc = excluded.doc",
        )
        .bind(&row.doc.metadata.name)
        .bind(&row.doc.metadata.uid)
        .bind(&row.owner)
        .bind(&row.transfer_to)
        .bind(serde_json::to_string(&row.members).map_err(json_err)?)
        .bind(&row.members_version)
        .bind(serde_json::to_string(&row.doc).map_err(json_err)?)
        .execute(&mut **tx)
        .await
        .map_err(db_err)?;
        Self::index_trust_anchors(
            tx,
            &row.doc.metadata.name,
            &logic::trust_anchor_subjects(&row.doc),
        )
        .await
    }

    /// Replaces the app's entries in the trust-anchor index.
    async fn index_trust_anchors(
        tx: &mut Transaction<'static, Sqlite>,
        app: &str,
        subjects: &[String],
    ) -> Result<()> {
        sqlx::query("DELETE FROM trust_anchor_subjects WHERE app = ?")
            .bind(app)
            .execute(&mut **tx)
            .await
            .map_err(db_err)?;
        for subject in subjects {
            sqlx::query("INSERT OR IGNORE INTO trust_anchor_subjects (app, subject) VALUES (?, ?)")
                .bind(app)
                .bind(subject)
                .execute(&mut **tx)
                .await
                .map_err(db_err)?;
        }
        Ok(())
    }

    async fn load_device(
        tx: &mut Transaction<'static, Sqlite>,
        app: &str,
        name: &str,
    ) -> Result<Option<Resource>> {
        let doc: Option<String> =
            sqlx::query_scalar("SELECT doc FROM devices WHERE app = ? AND name = ?")
                .bind(app)
                .bind(name)
                .fetch_optional(&mut **tx)
                .await
                .map_err(db_err)?;
        doc.map(|d| serde_json::from_str(&d).map_err(json_err))
            .transpose()
    }

    async fn save_device(
        tx: &mut Transaction<'static, Sqlite>,
        app: &str,
        dev: &Resource,
    ) -> Result<()> {
        let names = logic::device_names(dev);
        for (kind, value) in &names {
            let other: Option<String> = sqlx::query_scalar(
                "SELECT device FROM device_names WHERE app = ? AND kind = ? AND value = ? AND device != ?",
            )
            .bind(app)
            .bind(kind)
            .bind(value)
            .bind(&dev.metadata.name)
            .fetch_optional(&mut **tx)
            .await
            .map_err(db_err)?;
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
                )));
            }
        }
        sqlx::query("DELETE FROM device_names WHERE app = ? AND device = ?")
            .bind(app)
            .bind(&dev.metadata.name)
            .execute(&mut **tx)
            .await
            .map_err(db_err)?;
        for (kind, value) in &names {
            sqlx::query("INSERT INTO device_names (app, kind, value, device) VALUES (?, ?, ?, ?)")
                .bind(app)
                .bind(kind)
                .bind(value)
                .bind(&dev.metadata.name)
                .execute(&mut **tx)
                .await
                .map_err(db_err)?;
        }
        sqlx::query(
            "INSERT INTO devices (app, name, uid, doc) VALUES (?, ?, ?, ?)
             ON CONFLICT(app, name) DO UPDATE SET uid = excluded.uid, doc = excluded.doc",
        )
        .bind(app)
        .bind(&dev.metadata.name)
        .bind(&dev.metadata.uid)
        .bind(serde_json::to_string(dev).map_err(json_err)?)
        .execute(&mut **tx)
        .await
        .map_err(db_err)?;
        Ok(())
    }

    async fn all_devices(
        tx: &mut Transaction<'static, Sqlite>,
        app: &str,
    ) -> Result<Vec<Resource>> {
        let docs: Vec<String> =
            sqlx::query_scalar("SELECT doc FROM devices WHERE app = ? ORDER BY name")
                .bind(app)
                .fetch_all(&mut **tx)
                .await
                .map_err(db_err)?;
        docs.iter()
            .map(|d| serde_json::from_str(d).map_err(json_err))
            .collect()
    }

    /// Removes a device for good and, when it was the last one holding a deleting app, releases
    /// the app.
    async fn remove_device(w: &mut WriteTx<'_>, app: &str, mut dev: Resource) -> Result<()> {
        for table in [
            "DELETE FROM devices WHERE app = ? AND name = ?",
            "DELETE FROM device_names WHERE app = ? AND device = ?",
        ] {
            sqlx::query(table)
                .bind(app)
                .bind(&dev.metadata.name)
                .execute(&mut *w.tx)
                .await
                .map_err(db_err)?;
        }
        w.emit(Kind::Device, &mut dev, &[".".to_string()]);
        let Some(mut row) = Self::load_app(&mut w.tx, app).await? else {
            return Ok(());
        };
        if !row.doc.is_deleting() {
            return Ok(());
        }
        let left: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM devices WHERE app = ?")
            .bind(app)
            .fetch_one(&mut *w.tx)
            .await
            .map_err(db_err)?;
        if left == 0 {
            row.doc
                .metadata
                .finalizers
                .retain(|f| f != FINALIZER_HAS_DEVICES);
            Self::settle_app(w, row).await?;
        }
        Ok(())
    }

    /// Saves a changed app, or removes it when it is deleting and has no finalizers left.
    async fn settle_app(w: &mut WriteTx<'_>, mut row: AppRow) -> Result<()> {
        if row.doc.is_deleting() && row.doc.metadata.finalizers.is_empty() {
            sqlx::query("DELETE FROM apps WHERE name = ?")
                .bind(&row.doc.metadata.name)
                .execute(&mut *w.tx)
                .await
                .map_err(db_err)?;
            Self::index_trust_anchors(&mut w.tx, &row.doc.metadata.name, &[]).await?;
            w.emit(Kind::Application, &mut row.doc, &[".".to_string()]);
        } else {
            w.emit(Kind::Application, &mut row.doc, &[".metadata".to_string()]);
            Self::save_app(&mut w.tx, &row).await?;
        }
        Ok(())
    }

    async fn read_tx(&self) -> Result<(Transaction<'static, Sqlite>, u64)> {
        let mut tx = self.pool.begin().await.map_err(db_err)?;
        let rev: i64 = sqlx::query_scalar("SELECT revision FROM meta WHERE id = 1")
            .fetch_one(&mut *tx)
            .await
            .map_err(db_err)?;
        Ok((tx, rev as u64))
    }

    async fn readable_app(
        &self,
        who: &Principal,
        app: &str,
    ) -> Result<(AppRow, Transaction<'static, Sqlite>, u64)> {
        let (mut tx, rev) = self.read_tx().await?;
        let row = Self::load_app(&mut tx, app)
            .await?
            .ok_or_else(|| not_found_app(app))?;
        row.authorize(who, Permission::Read)?;
        Ok((row, tx, rev))
    }

    async fn insert_token(
        tx: &mut Transaction<'static, Sqlite>,
        user: &str,
        token: &str,
        prefix: &str,
        description: Option<&str>,
        configured: bool,
    ) -> Result<()> {
        sqlx::query("INSERT INTO tokens (hash, prefix, user_name, created, description, configured) VALUES (?, ?, ?, ?, ?, ?)")
            .bind(drover_auth::token::hash(token))
            .bind(prefix)
            .bind(user)
            .bind(Utc::now().to_rfc3339())
            .bind(description)
            .bind(configured)
            .execute(&mut **tx)
            .await
            .map_err(db_err)?;
        Ok(())
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
}

fn parse_time(s: &str) -> Result<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| RegistryError::Internal(format!("stored timestamp '{s}' is corrupt: {e}")))
}

#[async_trait]
impl Registry for SqliteRegistry {
    async fn create_app(&self, who: &Principal, input: ResourceInput) -> Result<Resource> {
        logic::validate_input(Kind::Application, &input, None, None)?;
        let mut w = self.begin_write().await?;
        let name = input.name()?.to_string();
        if Self::load_app(&mut w.tx, &name).await?.is_some() {
            return Err(RegistryError::Conflict(format!(
                "application '{name}' already exists"
            )));
        }
        let mut doc = new_resource(input, None, w.now);
        compute_app_status(&mut doc);
        w.emit(Kind::Application, &mut doc, &[".".to_string()]);
        let row = AppRow {
            doc,
            owner: Some(who.name().to_string()),
            transfer_to: None,
            members: Members::new(),
            members_version: uuid::Uuid::new_v4().to_string(),
        };
        Self::save_app(&mut w.tx, &row).await?;
        w.commit(self).await?;
        Ok(row.doc)
    }

    async fn get_app(&self, who: &Principal, app: &str) -> Result<Resource> {
        Ok(self.readable_app(who, app).await?.0.doc)
    }

    async fn list_apps(&self, who: &Principal, opts: &ListOptions) -> Result<Listing<Resource>> {
        let (mut tx, revision) = self.read_tx().await?;
        let rows = sqlx::query("SELECT doc, owner, members FROM apps ORDER BY name")
            .fetch_all(&mut *tx)
            .await
            .map_err(db_err)?;
        let mut items = Vec::new();
        for r in rows {
            let owner: Option<String> = r.get("owner");
            let members: Members =
                serde_json::from_str(r.get::<&str, _>("members")).map_err(json_err)?;
            if !permits(who, owner.as_deref(), &members, Permission::Read) {
                continue;
            }
            let doc: Resource = serde_json::from_str(r.get::<&str, _>("doc")).map_err(json_err)?;
            if opts.selector.matches(&doc.metadata.labels) {
                items.push(doc);
            }
        }
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
        let mut w = self.begin_write().await?;
        let mut row = Self::load_app(&mut w.tx, app)
            .await?
            .ok_or_else(|| not_found_app(app))?;
        row.authorize(who, Permission::Write)?;
        let (mut doc, _) = apply_update(&row.doc, input)?;
        compute_app_status(&mut doc);
        let paths = drover_model::resource::changed_paths(&row.doc, &doc);
        if paths.is_empty() {
            return Ok(row.doc);
        }
        row.doc = doc;
        if row.doc.is_deleting() && row.doc.metadata.finalizers.is_empty() {
            // The last finalizer is gone: the application goes for good.
            let doc = row.doc.clone();
            Self::settle_app(&mut w, row).await?;
            w.commit(self).await?;
            return Ok(doc);
        }
        w.emit(Kind::Application, &mut row.doc, &paths);
        Self::save_app(&mut w.tx, &row).await?;
        w.commit(self).await?;
        Ok(row.doc)
    }

    async fn delete_app(&self, who: &Principal, app: &str, pre: Preconditions) -> Result<()> {
        let mut w = self.begin_write().await?;
        let mut row = Self::load_app(&mut w.tx, app)
            .await?
            .ok_or_else(|| not_found_app(app))?;
        row.authorize(who, Permission::Admin)?;
        check_delete_preconditions(&row.doc, &pre)?;
        if row.doc.is_deleting() {
            return Ok(());
        }
        let mut held = 0usize;
        for mut dev in Self::all_devices(&mut w.tx, app).await? {
            if dev.metadata.finalizers.is_empty() {
                for q in [
                    "DELETE FROM devices WHERE app = ? AND name = ?",
                    "DELETE FROM device_names WHERE app = ? AND device = ?",
                ] {
                    sqlx::query(q)
                        .bind(app)
                        .bind(&dev.metadata.name)
                        .execute(&mut *w.tx)
                        .await
                        .map_err(db_err)?;
                }
                w.emit(Kind::Device, &mut dev, &[".".to_string()]);
            } else {
                held += 1;
                if !dev.is_deleting() {
                    dev.metadata.deletion_timestamp = Some(w.now);
                    w.emit(Kind::Device, &mut dev, &[".metadata".to_string()]);
                    Self::save_device(&mut w.tx, app, &dev).await?;
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
        Self::settle_app(&mut w, row).await?;
        w.commit(self).await
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
        let mut w = self.begin_write().await?;
        let row = Self::load_app(&mut w.tx, app).await?;
        let missing = || RegistryError::ReferenceNotFound(format!("application '{app}' not found"));
        let row = row.ok_or_else(missing)?;
        row.authorize(who, Permission::Write).map_err(|e| match e {
            RegistryError::NotFound(_) => missing(),
            e => e,
        })?;
        if row.doc.is_deleting() {
            return Err(RegistryError::ReferenceNotFound(format!(
                "application '{app}' is being deleted"
            )));
        }
        let name = input.name()?.to_string();
        if Self::load_device(&mut w.tx, app, &name).await?.is_some() {
            return Err(RegistryError::Conflict(format!(
                "device '{name}' already exists in application '{app}'"
            )));
        }
        let mut dev = new_resource(input, Some(app), w.now);
        w.emit(Kind::Device, &mut dev, &[".".to_string()]);
        Self::save_device(&mut w.tx, app, &dev).await?;
        w.commit(self).await?;
        Ok(dev)
    }

    async fn get_device(&self, who: &Principal, app: &str, device: &str) -> Result<Resource> {
        let (_, mut tx, _) = self.readable_app(who, app).await?;
        Self::load_device(&mut tx, app, device)
            .await?
            .ok_or_else(|| not_found_device(app, device))
    }

    async fn list_devices(
        &self,
        who: &Principal,
        app: &str,
        opts: &ListOptions,
    ) -> Result<Listing<Resource>> {
        let (_, mut tx, revision) = self.readable_app(who, app).await?;
        let mut items = Self::all_devices(&mut tx, app).await?;
        items.retain(|d| opts.selector.matches(&d.metadata.labels));
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
        let old_spec = {
            let (mut tx, _) = self.read_tx().await?;
            Self::load_device(&mut tx, app, device)
                .await?
                .map(|d| d.spec)
        };
        let mut input = input;
        input.spec = logic::hash_passwords(std::mem::take(&mut input.spec), old_spec).await?;
        let mut w = self.begin_write().await?;
        let row = Self::load_app(&mut w.tx, app)
            .await?
            .ok_or_else(|| not_found_app(app))?;
        row.authorize(who, Permission::Write)?;
        let old = Self::load_device(&mut w.tx, app, device)
            .await?
            .ok_or_else(|| not_found_device(app, device))?;
        let (mut dev, paths) = apply_update(&old, input)?;
        if paths.is_empty() {
            return Ok(old);
        }
        if dev.is_deleting() && dev.metadata.finalizers.is_empty() {
            Self::remove_device(&mut w, app, dev.clone()).await?;
            w.commit(self).await?;
            return Ok(dev);
        }
        w.emit(Kind::Device, &mut dev, &paths);
        Self::save_device(&mut w.tx, app, &dev).await?;
        w.commit(self).await?;
        Ok(dev)
    }

    async fn delete_device(
        &self,
        who: &Principal,
        app: &str,
        device: &str,
        pre: Preconditions,
    ) -> Result<()> {
        let mut w = self.begin_write().await?;
        let row = Self::load_app(&mut w.tx, app)
            .await?
            .ok_or_else(|| not_found_app(app))?;
        row.authorize(who, Permission::Write)?;
        let mut dev = Self::load_device(&mut w.tx, app, device)
            .await?
            .ok_or_else(|| not_found_device(app, device))?;
        check_delete_preconditions(&dev, &pre)?;
        if dev.is_deleting() {
            return Ok(());
        }
        if dev.metadata.finalizers.is_empty() {
            Self::remove_device(&mut w, app, dev).await?;
        } else {
            dev.metadata.deletion_timestamp = Some(w.now);
            w.emit(Kind::Device, &mut dev, &[".metadata".to_string()]);
            Self::save_device(&mut w.tx, app, &dev).await?;
        }
        w.commit(self).await
    }

    async fn authorize(&self, who: &Principal, app: &str, what: Permission) -> Result<Resource> {
        let (row, _, _) = self.readable_app(who, app).await?;
        row.authorize(who, what)?;
        Ok(row.doc)
    }

    async fn get_members(&self, who: &Principal, app: &str) -> Result<MembersDoc> {
        let (row, _, _) = self.readable_app(who, app).await?;
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
        let mut w = self.begin_write().await?;
        let mut row = Self::load_app(&mut w.tx, app)
            .await?
            .ok_or_else(|| not_found_app(app))?;
        row.authorize(who, Permission::Admin)?;
        if let Some(rv) = &doc.resource_version {
            if *rv != row.members_version {
                return Err(RegistryError::OptimisticLockFailed(format!(
                    "members resourceVersion '{rv}' is outdated (now '{}'); read the members again and retry",
                    row.members_version
                )));
            }
        }
        if row.members == doc.members {
            return Ok(());
        }
        row.members = doc.members;
        row.members_version = uuid::Uuid::new_v4().to_string();
        Self::save_app(&mut w.tx, &row).await?;
        w.commit(self).await
    }

    async fn transfer_ownership(&self, who: &Principal, app: &str, new_owner: &str) -> Result<()> {
        drover_model::names::validate_user_name(new_owner)?;
        let mut w = self.begin_write().await?;
        let mut row = Self::load_app(&mut w.tx, app)
            .await?
            .ok_or_else(|| not_found_app(app))?;
        row.authorize(who, Permission::Owner)?;
        row.transfer_to = Some(new_owner.to_string());
        Self::save_app(&mut w.tx, &row).await?;
        w.commit(self).await
    }

    async fn cancel_transfer(&self, who: &Principal, app: &str) -> Result<()> {
        let mut w = self.begin_write().await?;
        let mut row = Self::load_app(&mut w.tx, app)
            .await?
            .ok_or_else(|| not_found_app(app))?;
        row.authorize(who, Permission::Owner)?;
        if row.transfer_to.take().is_some() {
            Self::save_app(&mut w.tx, &row).await?;
            w.commit(self).await?;
        }
        Ok(())
    }

    async fn accept_ownership(&self, who: &Principal, app: &str) -> Result<()> {
        let mut w = self.begin_write().await?;
        let mut row = Self::load_app(&mut w.tx, app)
            .await?
            .ok_or_else(|| not_found_app(app))?;
        if row.transfer_to.as_deref() != Some(who.name()) {
            row.authorize(who, Permission::Read)?;
            return Err(RegistryError::BadRequest(format!(
                "there is no pending transfer of application '{app}' to user '{}'",
                who.name()
            )));
        }
        row.owner = row.transfer_to.take();
        Self::save_app(&mut w.tx, &row).await?;
        w.commit(self).await
    }

    async fn pending_transfer(&self, who: &Principal, app: &str) -> Result<Option<String>> {
        let (row, _, _) = self.readable_app(who, app).await?;
        if row.transfer_to.as_deref() == Some(who.name()) {
            return Ok(row.transfer_to);
        }
        row.authorize(who, Permission::Owner)?;
        Ok(row.transfer_to)
    }

    async fn bootstrap_admin(&self, configured: Option<&str>) -> Result<AdminBootstrap> {
        let mut w = self.begin_write().await?;
        sqlx::query("INSERT INTO users (name, admin, created) VALUES (?, 1, ?) ON CONFLICT(name) DO UPDATE SET admin = 1")
            .bind(ADMIN_USER)
            .bind(Utc::now().to_rfc3339())
            .execute(&mut *w.tx)
            .await
            .map_err(db_err)?;
        let result = if let Some(token) = configured {
            sqlx::query("DELETE FROM tokens WHERE user_name = ? AND configured = 1")
                .bind(ADMIN_USER)
                .execute(&mut *w.tx)
                .await
                .map_err(db_err)?;
            sqlx::query("DELETE FROM tokens WHERE hash = ?")
                .bind(drover_auth::token::hash(token))
                .execute(&mut *w.tx)
                .await
                .map_err(db_err)?;
            let prefix = drover_auth::token::parse(token)
                .map(str::to_string)
                .unwrap_or_else(|_| "configured".to_string());
            Self::insert_token(
                &mut w.tx,
                ADMIN_USER,
                token,
                &prefix,
                Some("configured (DROVER_ADMIN_TOKEN)"),
                true,
            )
            .await?;
            AdminBootstrap::Configured
        } else {
            let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM tokens WHERE user_name = ?")
                .bind(ADMIN_USER)
                .fetch_one(&mut *w.tx)
                .await
                .map_err(db_err)?;
            if n == 0 {
                let t = drover_auth::token::generate();
                Self::insert_token(
                    &mut w.tx,
                    ADMIN_USER,
                    &t.token,
                    &t.prefix,
                    Some("generated at first start"),
                    false,
                )
                .await?;
                AdminBootstrap::Generated(t.token)
            } else {
                AdminBootstrap::Existing
            }
        };
        w.commit(self).await?;
        Ok(result)
    }

    async fn create_user(
        &self,
        who: &Principal,
        name: &str,
        admin: bool,
    ) -> Result<(User, CreatedToken)> {
        Self::require_admin(who)?;
        drover_model::names::validate_user_name(name)?;
        let mut w = self.begin_write().await?;
        let exists: Option<String> = sqlx::query_scalar("SELECT name FROM users WHERE name = ?")
            .bind(name)
            .fetch_optional(&mut *w.tx)
            .await
            .map_err(db_err)?;
        if exists.is_some() {
            return Err(RegistryError::Conflict(format!(
                "user '{name}' already exists"
            )));
        }
        let created = Utc::now();
        sqlx::query("INSERT INTO users (name, admin, created) VALUES (?, ?, ?)")
            .bind(name)
            .bind(admin)
            .bind(created.to_rfc3339())
            .execute(&mut *w.tx)
            .await
            .map_err(db_err)?;
        let t = drover_auth::token::generate();
        Self::insert_token(
            &mut w.tx,
            name,
            &t.token,
            &t.prefix,
            Some("initial token"),
            false,
        )
        .await?;
        w.commit(self).await?;
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
    }

    async fn list_users(&self, who: &Principal) -> Result<Vec<User>> {
        Self::require_admin(who)?;
        let rows = sqlx::query("SELECT name, admin, created FROM users ORDER BY name")
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?;
        rows.iter()
            .map(|r| {
                Ok(User {
                    name: r.get("name"),
                    admin: r.get::<bool, _>("admin"),
                    created: parse_time(r.get::<&str, _>("created"))?,
                })
            })
            .collect()
    }

    async fn delete_user(&self, who: &Principal, name: &str) -> Result<()> {
        Self::require_admin(who)?;
        if name == ADMIN_USER {
            return Err(RegistryError::BadRequest(format!(
                "the system administrator '{ADMIN_USER}' cannot be deleted"
            )));
        }
        let mut w = self.begin_write().await?;
        let deleted = sqlx::query("DELETE FROM users WHERE name = ?")
            .bind(name)
            .execute(&mut *w.tx)
            .await
            .map_err(db_err)?;
        if deleted.rows_affected() == 0 {
            return Err(RegistryError::NotFound(format!("user '{name}' not found")));
        }
        sqlx::query("DELETE FROM tokens WHERE user_name = ?")
            .bind(name)
            .execute(&mut *w.tx)
            .await
            .map_err(db_err)?;
        // Apps the user owned stay, owned by nobody (only system administrators reach them);
        // memberships and pending transfers to the user end, so a new user of the same name
        // inherits nothing.
        let apps: Vec<String> = sqlx::query_scalar(
            "SELECT name FROM apps WHERE owner = ? OR transfer_to = ? OR members LIKE ?",
        )
        .bind(name)
        .bind(name)
        .bind(format!(
            "%{}%",
            serde_json::to_string(name).map_err(json_err)?
        ))
        .fetch_all(&mut *w.tx)
        .await
        .map_err(db_err)?;
        for app in apps {
            if let Some(mut row) = Self::load_app(&mut w.tx, &app).await? {
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
                    Self::save_app(&mut w.tx, &row).await?;
                }
            }
        }
        w.commit(self).await
    }

    async fn create_token(
        &self,
        who: &Principal,
        description: Option<&str>,
    ) -> Result<CreatedToken> {
        if let Some(d) = description {
            if d.len() > 256 {
                return Err(RegistryError::BadRequest(
                    "token description is longer than 256 bytes".into(),
                ));
            }
        }
        let mut w = self.begin_write().await?;
        // Users known only through single sign-on get their user record with their first token.
        sqlx::query("INSERT INTO users (name, admin, created) VALUES (?, 0, ?) ON CONFLICT(name) DO NOTHING")
            .bind(who.name())
            .bind(Utc::now().to_rfc3339())
            .execute(&mut *w.tx)
            .await
            .map_err(db_err)?;
        let t = drover_auth::token::generate();
        Self::insert_token(
            &mut w.tx,
            who.name(),
            &t.token,
            &t.prefix,
            description,
            false,
        )
        .await?;
        w.commit(self).await?;
        Ok(CreatedToken {
            prefix: t.prefix,
            token: t.token,
        })
    }

    async fn list_tokens(&self, who: &Principal) -> Result<Vec<TokenInfo>> {
        let rows = sqlx::query("SELECT prefix, created, description FROM tokens WHERE user_name = ? ORDER BY created, prefix")
            .bind(who.name())
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?;
        rows.iter()
            .map(|r| {
                Ok(TokenInfo {
                    prefix: r.get("prefix"),
                    created: parse_time(r.get::<&str, _>("created"))?,
                    description: r.get("description"),
                })
            })
            .collect()
    }

    async fn delete_token(&self, who: &Principal, prefix: &str) -> Result<()> {
        let w = self.begin_write().await?;
        let mut w = w;
        let res = sqlx::query("DELETE FROM tokens WHERE user_name = ? AND prefix = ?")
            .bind(who.name())
            .bind(prefix)
            .execute(&mut *w.tx)
            .await
            .map_err(db_err)?;
        if res.rows_affected() == 0 {
            return Err(RegistryError::NotFound(format!(
                "token '{prefix}' not found"
            )));
        }
        w.commit(self).await
    }

    async fn authenticate_token(&self, user: &str, token: &str) -> Result<Principal> {
        let row = sqlx::query("SELECT t.user_name AS user_name, u.admin AS admin FROM tokens t JOIN users u ON u.name = t.user_name WHERE t.hash = ?")
            .bind(drover_auth::token::hash(token))
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?;
        match row {
            Some(r) if r.get::<&str, _>("user_name") == user => {
                if r.get::<bool, _>("admin") {
                    Ok(Principal::SystemAdmin(user.to_string()))
                } else {
                    Ok(Principal::User(user.to_string()))
                }
            }
            _ => Err(RegistryError::Unauthorized(format!(
                "invalid access token for user '{user}'"
            ))),
        }
    }

    async fn principal_for(&self, user: &str) -> Result<Principal> {
        let admin: Option<bool> = sqlx::query_scalar("SELECT admin FROM users WHERE name = ?")
            .bind(user)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(if admin == Some(true) {
            Principal::SystemAdmin(user.to_string())
        } else {
            Principal::User(user.to_string())
        })
    }

    async fn changes_since(&self, since: u64, limit: usize) -> Result<Vec<Change>> {
        let rows = sqlx::query("SELECT revision, kind, app, device, uid, path, resource_version, time FROM changes WHERE revision > ? ORDER BY revision LIMIT ?")
            .bind(since as i64)
            .bind(limit as i64)
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?;
        rows.iter()
            .map(|r| {
                let kind: &str = r.get("kind");
                Ok(Change {
                    revision: r.get::<i64, _>("revision") as u64,
                    kind: Kind::from_str_opt(kind).ok_or_else(|| {
                        RegistryError::Internal(format!("unknown change kind '{kind}'"))
                    })?,
                    application: r.get("app"),
                    device: r.get("device"),
                    uid: r.get("uid"),
                    path: r.get("path"),
                    resource_version: r.get::<i64, _>("resource_version") as u64,
                    time: parse_time(r.get::<&str, _>("time"))?,
                })
            })
            .collect()
    }

    async fn compacted_revision(&self) -> Result<u64> {
        let c: i64 = sqlx::query_scalar("SELECT compacted FROM meta WHERE id = 1")
            .fetch_one(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(c as u64)
    }

    async fn prune_changes(&self, before: DateTime<Utc>) -> Result<u64> {
        // Under the writer lock, so `compacted` and the deletion are one step for readers.
        let mut w = self.begin_write().await?;
        // Timestamps are RFC 3339 in UTC with the same format, so they sort as text.
        let last: Option<i64> =
            sqlx::query_scalar("SELECT MAX(revision) FROM changes WHERE time < ?")
                .bind(before.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true))
                .fetch_one(&mut *w.tx)
                .await
                .map_err(db_err)?;
        let Some(last) = last else {
            return Ok(0);
        };
        let n = sqlx::query("DELETE FROM changes WHERE revision <= ?")
            .bind(last)
            .execute(&mut *w.tx)
            .await
            .map_err(db_err)?
            .rows_affected();
        sqlx::query("UPDATE meta SET compacted = ? WHERE id = 1")
            .bind(last)
            .execute(&mut *w.tx)
            .await
            .map_err(db_err)?;
        w.commit(self).await?;
        Ok(n)
    }

    async fn readable_apps(&self, who: &Principal) -> Result<Option<Vec<String>>> {
        if who.is_admin() {
            return Ok(None);
        }
        let rows = sqlx::query("SELECT name, owner, members FROM apps")
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?;
        let mut names = Vec::new();
        for r in rows {
            let owner: Option<String> = r.get("owner");
            let members: Members =
                serde_json::from_str(r.get::<&str, _>("members")).map_err(json_err)?;
            if permits(who, owner.as_deref(), &members, Permission::Read) {
                names.push(r.get("name"));
            }
        }
        Ok(Some(names))
    }

    fn subscribe(&self) -> watch::Receiver<u64> {
        self.revision.subscribe()
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(())
    }
}

impl SqliteRegistry {
    async fn doc_query(
        &self,
        sql: &str,
        binds: &[&str],
    ) -> std::result::Result<Option<Resource>, DirectoryError> {
        let mut q = sqlx::query_scalar::<_, String>(sql);
        for b in binds {
            q = q.bind(*b);
        }
        let doc = q
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| DirectoryError(format!("registry database: {e}")))?;
        doc.map(|d| {
            serde_json::from_str(&d)
                .map_err(|e| DirectoryError(format!("stored document is corrupt: {e}")))
        })
        .transpose()
    }
}

#[async_trait]
impl DeviceDirectory for SqliteRegistry {
    async fn application(
        &self,
        app: &str,
    ) -> std::result::Result<Option<Resource>, DirectoryError> {
        self.doc_query("SELECT doc FROM apps WHERE name = ?", &[app])
            .await
    }

    async fn device(
        &self,
        app: &str,
        name_or_alias: &str,
    ) -> std::result::Result<Option<Resource>, DirectoryError> {
        self.doc_query(
            "SELECT d.doc FROM device_names n JOIN devices d ON d.app = n.app AND d.name = n.device
             WHERE n.app = ? AND n.kind = 'id' AND n.value = ?",
            &[app, name_or_alias],
        )
        .await
    }

    async fn applications_by_trust_anchor(
        &self,
        subject: &str,
    ) -> std::result::Result<Vec<Resource>, DirectoryError> {
        let docs: Vec<String> = sqlx::query_scalar(
            "SELECT a.doc FROM trust_anchor_subjects t JOIN apps a ON a.name = t.app WHERE t.subject = ? ORDER BY a.name",
        )
        .bind(subject)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| DirectoryError(format!("registry database: {e}")))?;
        docs.iter()
            .map(|d| {
                serde_json::from_str(d)
                    .map_err(|e| DirectoryError(format!("stored document is corrupt: {e}")))
            })
            .collect()
    }

    async fn device_by_username(
        &self,
        app: &str,
        username: &str,
    ) -> std::result::Result<Option<Resource>, DirectoryError> {
        self.doc_query(
            "SELECT d.doc FROM device_names n JOIN devices d ON d.app = n.app AND d.name = n.device
             WHERE n.app = ? AND n.kind = 'username' AND n.value = ?",
            &[app, username],
        )
        .await
    }
}
