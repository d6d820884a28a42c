//! Drover's device registry: applications, devices, users and access tokens, behind the
//! [`Registry`] trait (and the device-authentication lookups of
//! [`drover_auth::device::DeviceDirectory`]), with two stores:
//!
//! - [`SqliteRegistry`]: one SQLite file, embedded, for one process
//!   (`SqliteRegistry::open(path)`);
//! - [`PostgresRegistry`]: PostgreSQL, shared by any number of `drover` nodes
//!   (`PostgresRegistry::connect(url, PgOptions { .. })`).
//!
//! Every write runs in one transaction that also appends its change events (the outbox), so
//! controllers can follow the [change feed](Registry::changes_since) from any revision without gaps
//! or duplicates. Writers are serialized (within a process by a lock, across PostgreSQL nodes by the
//! lock on the revision counter row), so revisions become visible strictly in commit order;
//! [`Registry::subscribe`] sees every commit, on PostgreSQL also those of other nodes (by
//! `LISTEN`/`NOTIFY`, with polling as a fallback). Authorization of application access (owner,
//! members, roles) is decided here, inside the same transaction as the read or write it guards.
//!
//! Both stores are one [`SqlRegistry`]: the rules live once, in `store` (transactions, revisions,
//! change events, authorization, deletion with finalizers, name reservations) and `logic` (what
//! needs no store: validation, updates, computed status, password hashing); every statement is in
//! `store::tables`, written once for both databases; a store only says how to open transactions,
//! how writers are serialized and how other nodes hear of a commit. The same conformance suite
//! (`tests/conformance`) runs against both.
//!
//! This crate knows nothing of protocols: no HTTP, no MQTT; and it reads no configuration: the
//! binary hands in the database path or URL.

pub mod certificates;
mod logic;
mod postgres;
pub mod provisioning;
mod sql;
mod sqlite;
mod store;
pub mod twin;
pub mod webhook;

use std::collections::BTreeMap;
use std::error::Error;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use drover_model::{Kind, Members, Principal, Reason, Resource, ResourceInput, Selector};
use serde::{Deserialize, Serialize};

pub use certificates::{CertificateRecord, CertificateStore, Revocation, RevokedBy};
pub use postgres::{PgOptions, PostgresRegistry};
pub use provisioning::ProvisioningStore;
pub use sqlite::SqliteRegistry;
pub use store::migrate::{copy_registry, CopiedApp, CopyOptions, MigrationReport, RowCounts};
pub use store::SqlRegistry;
/// The path of the device change a certificate revocation emits (every node ends the device's
/// sessions on it).
pub const REVOCATION_PATH: &str = ".status.certificates";
pub use twin::{DeviceTwins, TwinChange, TwinStore, TwinUpdate};
pub use webhook::{StoredWebhook, WebhookProgress, WebhookStore};

/// The finalizer the registry puts on an application while devices it deletes still exist.
pub const FINALIZER_HAS_DEVICES: &str = "has-devices";

/// Everything that can go wrong in the registry. Each maps to one API error kind.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RegistryError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    OptimisticLockFailed(String),
    #[error("{0}")]
    ReferenceNotFound(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    Unauthorized(String),
    /// The store cannot answer now (retry later); the reason holds the database or I/O error.
    #[error("{0}")]
    Unavailable(#[source] Reason),
    /// A failure no caller can fix; the reason holds the error behind it, if any.
    #[error("{0}")]
    Internal(#[source] Reason),
}

impl RegistryError {
    /// [`RegistryError::Unavailable`]: `what` failed because of `source`.
    pub fn unavailable(
        what: impl Into<String>,
        source: impl Error + Send + Sync + 'static,
    ) -> Self {
        Self::Unavailable(Reason::caused_by(what, source))
    }

    /// [`RegistryError::Internal`]: `what` failed because of `source`.
    pub fn internal(what: impl Into<String>, source: impl Error + Send + Sync + 'static) -> Self {
        Self::Internal(Reason::caused_by(what, source))
    }

    /// Why, as a [`Reason`] with the same message: the reason (and cause) of `Unavailable` and
    /// `Internal`, the message of the others.
    pub fn into_reason(self) -> Reason {
        match self {
            Self::Unavailable(r) | Self::Internal(r) => r,
            other => Reason::new(other.to_string()),
        }
    }
}

impl From<drover_model::ValidationError> for RegistryError {
    fn from(e: drover_model::ValidationError) -> Self {
        RegistryError::BadRequest(e.0)
    }
}

pub type Result<T> = std::result::Result<T, RegistryError>;

/// A page of a list, with the registry revision it was read at (to start a watch from).
#[derive(Debug, Clone)]
pub struct Listing<T> {
    pub items: Vec<T>,
    pub revision: u64,
}

/// Paging and filtering of a list.
#[derive(Debug, Clone, Default)]
pub struct ListOptions {
    pub selector: Selector,
    pub limit: Option<usize>,
    pub offset: usize,
}

/// Optional conditions on a delete.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Preconditions {
    #[serde(default)]
    pub uid: Option<String>,
    #[serde(default)]
    pub resource_version: Option<String>,
}

/// The members of an application, with their own version for optimistic locking.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MembersDoc {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_version: Option<String>,
    #[serde(default)]
    pub members: Members,
}

/// One change event of the outbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
    /// Position in the change feed; strictly increasing, one per event.
    pub revision: u64,
    pub kind: Kind,
    pub application: String,
    pub device: Option<String>,
    /// uid of the changed resource.
    pub uid: String,
    /// `.`, `.metadata`, `.spec.<section>`, `.status.<section>`.
    pub path: String,
    /// The resource's resourceVersion after the change (as a number).
    pub resource_version: u64,
    pub time: DateTime<Utc>,
}

/// A user of the management API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct User {
    pub name: String,
    pub admin: bool,
    pub created: DateTime<Utc>,
}

/// An access token as listed (the secret itself is never stored).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TokenInfo {
    pub prefix: String,
    pub created: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// A freshly created access token: the only time the secret is available.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CreatedToken {
    pub prefix: String,
    pub token: String,
}

/// What bootstrapping the administrator did.
#[derive(Debug, Clone, PartialEq)]
pub enum AdminBootstrap {
    /// A token was generated and must be shown once.
    Generated(String),
    /// The configured token is in place.
    Configured,
    /// The administrator already had tokens.
    Existing,
}

/// What application-facing services need of the registry (the integrations: sessions'
/// subscriptions and access checks, commands): reading applications and devices as a principal,
/// and asking what the principal may do. Every read is an access decision made here.
#[async_trait]
pub trait AccessReader: Send + Sync + 'static {
    async fn get_app(&self, who: &Principal, app: &str) -> Result<Resource>;
    async fn get_device(&self, who: &Principal, app: &str, device: &str) -> Result<Resource>;
    /// The application, if `who` may do `what` with it (NotFound when `who` may not read it,
    /// Forbidden when reading is all `who` may do).
    async fn authorize(
        &self,
        who: &Principal,
        app: &str,
        what: drover_model::Permission,
    ) -> Result<Resource>;
}

/// The registry of applications and devices, users and tokens: everything, for the management
/// API and the server itself. Narrower clients use narrower traits: [`AccessReader`] (the
/// integrations), `drover_auth::device::DeviceDirectory` (device endpoints) and
/// `drover_auth::user::UserDirectory` (user authentication), which the stores implement too.
#[async_trait]
pub trait Registry:
    AccessReader + TwinStore + CertificateStore + ProvisioningStore + WebhookStore
{
    async fn create_app(&self, who: &Principal, input: ResourceInput) -> Result<Resource>;
    async fn list_apps(&self, who: &Principal, opts: &ListOptions) -> Result<Listing<Resource>>;
    /// Returns the stored resource after the update (unchanged for a no-op update).
    async fn update_app(
        &self,
        who: &Principal,
        app: &str,
        input: ResourceInput,
    ) -> Result<Resource>;
    async fn delete_app(&self, who: &Principal, app: &str, pre: Preconditions) -> Result<()>;

    async fn create_device(
        &self,
        who: &Principal,
        app: &str,
        input: ResourceInput,
    ) -> Result<Resource>;
    async fn list_devices(
        &self,
        who: &Principal,
        app: &str,
        opts: &ListOptions,
    ) -> Result<Listing<Resource>>;
    async fn update_device(
        &self,
        who: &Principal,
        app: &str,
        device: &str,
        input: ResourceInput,
    ) -> Result<Resource>;
    async fn delete_device(
        &self,
        who: &Principal,
        app: &str,
        device: &str,
        pre: Preconditions,
    ) -> Result<()>;

    async fn get_members(&self, who: &Principal, app: &str) -> Result<MembersDoc>;
    async fn set_members(&self, who: &Principal, app: &str, doc: MembersDoc) -> Result<()>;
    async fn transfer_ownership(&self, who: &Principal, app: &str, new_owner: &str) -> Result<()>;
    async fn cancel_transfer(&self, who: &Principal, app: &str) -> Result<()>;
    async fn accept_ownership(&self, who: &Principal, app: &str) -> Result<()>;
    /// The pending transfer's new owner, if any (owner or system admin only).
    async fn pending_transfer(&self, who: &Principal, app: &str) -> Result<Option<String>>;

    /// Ensures the system administrator `admin` exists, with `configured` as a token when given.
    async fn bootstrap_admin(&self, configured: Option<&str>) -> Result<AdminBootstrap>;
    async fn create_user(
        &self,
        who: &Principal,
        name: &str,
        admin: bool,
    ) -> Result<(User, CreatedToken)>;
    async fn list_users(&self, who: &Principal) -> Result<Vec<User>>;
    async fn delete_user(&self, who: &Principal, name: &str) -> Result<()>;
    async fn create_token(
        &self,
        who: &Principal,
        description: Option<&str>,
    ) -> Result<CreatedToken>;
    async fn list_tokens(&self, who: &Principal) -> Result<Vec<TokenInfo>>;
    async fn delete_token(&self, who: &Principal, prefix: &str) -> Result<()>;
    /// Checks an access token presented by `user`.
    async fn authenticate_token(&self, user: &str, token: &str) -> Result<Principal>;
    /// The principal of a user authenticated elsewhere (OIDC): a system admin if so registered.
    async fn principal_for(&self, user: &str) -> Result<Principal>;

    /// Change events after `since`, in order, at most `limit`.
    async fn changes_since(&self, since: u64, limit: usize) -> Result<Vec<Change>>;
    /// Change events up to this revision have been pruned; a feed from before it is incomplete.
    async fn compacted_revision(&self) -> Result<u64>;
    /// Prunes change events older than `before` (retention); returns how many went.
    async fn prune_changes(&self, before: DateTime<Utc>) -> Result<u64>;
    /// Names of the applications `who` may read (None: all, for system admins).
    async fn readable_apps(&self, who: &Principal) -> Result<Option<Vec<String>>>;
    /// A receiver that sees the latest committed revision.
    fn subscribe(&self) -> tokio::sync::watch::Receiver<u64>;
    /// A receiver that moves whenever a commit (on any node) may have taken access away from
    /// someone: a token or user deleted, an application's members changed, its ownership moved,
    /// the configured administrator token replaced. Long-lived sessions check their access
    /// again when it moves (see `drover_auth::user`).
    fn subscribe_access(&self) -> tokio::sync::watch::Receiver<u64>;
    /// Checks the store answers.
    async fn ping(&self) -> Result<()>;
    /// Stops background work and closes the store's connections; calls after it fail.
    async fn close(&self) {}
}

/// Labels as stored, for helpers.
pub type Labels = BTreeMap<String, String>;
