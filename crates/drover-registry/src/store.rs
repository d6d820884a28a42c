//! The registry's rules over any SQL store: [`SqlRegistry`] implements [`Registry`] and
//! [`DeviceDirectory`](drover_auth::device::DeviceDirectory) once, for every [`Backend`]. A
//! backend only says how to open transactions, how writers are serialized and how other nodes
//! learn of a commit; the statements are in [`tables`], the rules that need no store in
//! [`crate::logic`].
//!
//! Every write takes the process's writer lock, then runs in one transaction that starts by
//! reading the revision counter (on PostgreSQL also locking its row until the commit, which
//! orders the writers of all nodes), allocates one revision per change event, appends the events
//! to the outbox and moves the counter at the end (`write`). Writers are thus serialized, and
//! revisions become visible strictly in commit order. A write the database aborts (serialization
//! failure, deadlock) runs again, a few times. Reads that report the revision they saw (lists)
//! run in one snapshot; other reads run on the pool.
//!
//! The operations live by idea: `apps`, `devices`, `members` (members and ownership),
//! `accounts` (users and access tokens), `changes` (the change feed), `access` (who may do what
//! with an application), `directories` (the lookups of device and user authentication); this
//! module holds the registry itself and hands each [`Registry`] operation to its module.

mod access;
mod accounts;
mod apps;
mod certificates;
mod changes;
mod devices;
mod directories;
mod members;
pub(crate) mod migrate;
mod provisioning;
mod tables;
mod twins;
mod webhooks;
mod write;

use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use drover_model::{Permission, Principal, Resource, ResourceInput};
use tokio::sync::{watch, Mutex};

use crate::sql::{Failure, Fallible, Sql, Tx};
use crate::{
    AccessReader, AdminBootstrap, Change, CreatedToken, ListOptions, Listing, MembersDoc,
    Preconditions, Registry, Result, TokenInfo, User,
};

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
    /// Moves when this process created or deleted a webhook subscription.
    webhooks: watch::Sender<u64>,
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
            webhooks: watch::Sender::new(0),
        }
    }

    /// Stops background work and closes the database connections (SQLite: flushes the WAL).
    /// The same as [`Registry::close`], callable without the trait.
    pub async fn close(&self) {
        self.backend.close().await;
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
        access::get_app(self, who, app).await
    }

    async fn get_device(&self, who: &Principal, app: &str, device: &str) -> Result<Resource> {
        devices::get(self, who, app, device).await
    }

    async fn authorize(&self, who: &Principal, app: &str, what: Permission) -> Result<Resource> {
        access::authorize(self, who, app, what).await
    }
}

#[async_trait]
impl<B: Backend> Registry for SqlRegistry<B> {
    async fn create_app(&self, who: &Principal, input: ResourceInput) -> Result<Resource> {
        apps::create(self, who, input).await
    }

    async fn list_apps(&self, who: &Principal, opts: &ListOptions) -> Result<Listing<Resource>> {
        apps::list(self, who, opts).await
    }

    async fn update_app(
        &self,
        who: &Principal,
        app: &str,
        input: ResourceInput,
    ) -> Result<Resource> {
        apps::update(self, who, app, input).await
    }

    async fn delete_app(&self, who: &Principal, app: &str, pre: Preconditions) -> Result<()> {
        apps::delete(self, who, app, pre).await
    }

    async fn create_device(
        &self,
        who: &Principal,
        app: &str,
        input: ResourceInput,
    ) -> Result<Resource> {
        devices::create(self, who, app, input).await
    }

    async fn list_devices(
        &self,
        who: &Principal,
        app: &str,
        opts: &ListOptions,
    ) -> Result<Listing<Resource>> {
        devices::list(self, who, app, opts).await
    }

    async fn update_device(
        &self,
        who: &Principal,
        app: &str,
        device: &str,
        input: ResourceInput,
    ) -> Result<Resource> {
        devices::update(self, who, app, device, input).await
    }

    async fn delete_device(
        &self,
        who: &Principal,
        app: &str,
        device: &str,
        pre: Preconditions,
    ) -> Result<()> {
        devices::delete(self, who, app, device, pre).await
    }

    async fn get_members(&self, who: &Principal, app: &str) -> Result<MembersDoc> {
        members::get(self, who, app).await
    }

    async fn set_members(&self, who: &Principal, app: &str, doc: MembersDoc) -> Result<()> {
        members::set(self, who, app, doc).await
    }

    async fn transfer_ownership(&self, who: &Principal, app: &str, new_owner: &str) -> Result<()> {
        members::transfer(self, who, app, new_owner).await
    }

    async fn cancel_transfer(&self, who: &Principal, app: &str) -> Result<()> {
        members::cancel_transfer(self, who, app).await
    }

    async fn accept_ownership(&self, who: &Principal, app: &str) -> Result<()> {
        members::accept(self, who, app).await
    }

    async fn pending_transfer(&self, who: &Principal, app: &str) -> Result<Option<String>> {
        members::pending_transfer(self, who, app).await
    }

    async fn bootstrap_admin(&self, configured: Option<&str>) -> Result<AdminBootstrap> {
        accounts::bootstrap_admin(self, configured).await
    }

    async fn create_user(
        &self,
        who: &Principal,
        name: &str,
        admin: bool,
    ) -> Result<(User, CreatedToken)> {
        accounts::create_user(self, who, name, admin).await
    }

    async fn list_users(&self, who: &Principal) -> Result<Vec<User>> {
        accounts::list_users(self, who).await
    }

    async fn delete_user(&self, who: &Principal, name: &str) -> Result<()> {
        accounts::delete_user(self, who, name).await
    }

    async fn create_token(
        &self,
        who: &Principal,
        description: Option<&str>,
    ) -> Result<CreatedToken> {
        accounts::create_token(self, who, description).await
    }

    async fn list_tokens(&self, who: &Principal) -> Result<Vec<TokenInfo>> {
        accounts::list_tokens(self, who).await
    }

    async fn delete_token(&self, who: &Principal, prefix: &str) -> Result<()> {
        accounts::delete_token(self, who, prefix).await
    }

    async fn authenticate_token(&self, user: &str, token: &str) -> Result<Principal> {
        accounts::authenticate_token(self, user, token).await
    }

    async fn principal_for(&self, user: &str) -> Result<Principal> {
        accounts::principal_for(self, user).await
    }

    async fn changes_since(&self, since: u64, limit: usize) -> Result<Vec<Change>> {
        changes::since(self, since, limit).await
    }

    async fn compacted_revision(&self) -> Result<u64> {
        changes::compacted(self).await
    }

    async fn prune_changes(&self, before: DateTime<Utc>) -> Result<u64> {
        changes::prune(self, before).await
    }

    async fn readable_apps(&self, who: &Principal) -> Result<Option<Vec<String>>> {
        access::readable_apps(self, who).await
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
