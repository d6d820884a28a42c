//! Device twins in the registry: the narrow trait their clients use ([`TwinStore`]) and the
//! changes waiting to be appended to an application's event stream ([`TwinChange`]).
//!
//! A twin lives beside its device (same application, same name) and goes with it. Its changes
//! do not move the registry's revision nor the device's `resourceVersion`: devices report
//! often, and a twin patch must not turn an operator's device edit into a conflict. Each change
//! of `desired` or `reported` writes one row of the twin outbox in its transaction; whoever
//! appends the outbox to the event log ([`TwinStore::claim_twin_changes`],
//! [`TwinStore::forget_twin_changes`]) therefore loses nothing between commit and append.
//!
//! Writes on one device's twin are serialized (on PostgreSQL by a lock on the device's row, on
//! SQLite by its single writer); twin writes of different devices do not wait for each other
//! nor for the registry's writer lock.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use drover_model::twin::{Section, Twin};
use drover_model::Principal;
use serde_json::{Map, Value};

use crate::Result;

/// One change of a twin's `desired` or `reported` document, waiting in the outbox.
#[derive(Debug, Clone, PartialEq)]
pub struct TwinChange {
    /// Position in the outbox (increasing in commit order on one node).
    pub seq: u64,
    pub application: String,
    /// The application's uid (the event stream's key).
    pub application_uid: String,
    pub device: String,
    pub device_uid: String,
    /// `Desired` or `Reported` (tags are service-side and make no event).
    pub section: Section,
    /// The section's version after the change.
    pub version: u64,
    /// The merge patch that was applied, as sent (with its `null`s).
    pub patch: Map<String, Value>,
    pub time: DateTime<Utc>,
}

/// What a twin write did.
#[derive(Debug, Clone, PartialEq)]
pub struct TwinUpdate {
    /// The twin after the write.
    pub twin: Twin,
    /// Whether anything changed (a patch that changes nothing moves no version and writes no
    /// event).
    pub changed: bool,
}

/// What device endpoints need of twins: a device reads its twin and reports its state.
#[async_trait]
pub trait DeviceTwins: Send + Sync + 'static {
    /// The twin of an authenticated device (the endpoint vouches for it).
    async fn device_twin(&self, app: &str, device: &str) -> Result<Twin>;

    /// Applies a device's merge patch to `reported`.
    async fn patch_reported(
        &self,
        app: &str,
        device: &str,
        patch: &Map<String, Value>,
    ) -> Result<TwinUpdate>;
}

/// Device twins: what the management API and the outbox relay need (and, through
/// [`DeviceTwins`], the device endpoints).
#[async_trait]
pub trait TwinStore: DeviceTwins {
    /// The twin of a device `who` may read.
    async fn twin(&self, who: &Principal, app: &str, device: &str) -> Result<Twin>;

    /// Applies a merge patch to `desired` for `who` (who must be allowed to write to the
    /// application). With `if_version`, refuses (`OptimisticLockFailed`) unless `desired` is at
    /// that version.
    async fn patch_desired(
        &self,
        who: &Principal,
        app: &str,
        device: &str,
        patch: &Map<String, Value>,
        if_version: Option<u64>,
    ) -> Result<TwinUpdate>;

    /// Replaces the tags (write permission).
    async fn replace_tags(
        &self,
        who: &Principal,
        app: &str,
        device: &str,
        tags: Map<String, Value>,
    ) -> Result<TwinUpdate>;

    /// Takes up to `limit` outbox rows nobody holds (or whose hold ran out) for `hold`, oldest
    /// first. Append them, then [`TwinStore::forget_twin_changes`]; rows not forgotten in time
    /// are taken again (events carry a stable id, so a consumer can tell a repeat).
    async fn claim_twin_changes(&self, limit: usize, hold: Duration) -> Result<Vec<TwinChange>>;

    /// Removes appended rows from the outbox.
    async fn forget_twin_changes(&self, seqs: &[u64]) -> Result<()>;

    /// Moves whenever this process wrote outbox rows (other nodes' rows are found by claiming
    /// from time to time).
    fn subscribe_twins(&self) -> tokio::sync::watch::Receiver<u64>;
}

/// The section a patch row names in the outbox.
pub(crate) fn section_name(section: Section) -> &'static str {
    section.as_str()
}

/// The section an outbox row names.
pub(crate) fn parse_section(name: &str) -> Option<Section> {
    match name {
        "desired" => Some(Section::Desired),
        "reported" => Some(Section::Reported),
        _ => None,
    }
}
