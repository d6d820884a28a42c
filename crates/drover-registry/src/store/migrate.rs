//! Copying a whole registry into another, empty store, row for row: what `drover migrate` does
//! to move the embedded SQLite registry to PostgreSQL.
//!
//! Everything is copied as stored: applications and devices (their JSON documents as they are,
//! so uids, resourceVersions, generations, labels, finalizers and deletion timestamps stay),
//! owners, pending transfers, members and their version, the names devices are found by
//! (names, aliases, unique usernames), the trust-anchor index, users, access tokens (their
//! hashes: tokens keep working), the revision counter, the change feed and how far it was
//! compacted (so a watcher resumes with `since=<revision>` on the new store as on the old), device
//! twins and the twin changes still waiting in the twin outbox, the device CA (replacing the one
//! the target's first node generated), the certificates it issued and applications'
//! revocations, provisioning enrollments and registration records, webhook subscriptions (with
//! their secrets and delivery state; a node's hold on one is copied too and runs out) and their
//! dead letters.
//! Timestamps outside the documents (when users and tokens were created, change times) keep
//! the target's precision (PostgreSQL: microseconds).
//!
//! The source is read in one snapshot; the target is written in one write transaction (on
//! PostgreSQL holding the lock on the revision counter, so no node writes meanwhile), which
//! checks first that the target is empty and last that it holds as many rows of each table as
//! the source. Any failure leaves the target as it was.

use drover_model::Reason;

use super::certificates;
use super::provisioning;
use super::tables::{self, NameRow, StoredApp, StoredDevice, TokenRow};
use super::twins::{self, StoredTwin};
use super::webhooks::{self, DeadLetterRow, WebhookRow};
use super::write::Write;
use super::{Backend, SqlRegistry, ADMIN_USER};
use crate::sql::{Fallible, Sql};
use crate::{RegistryError, Result, TwinChange, User};

/// How many change events are read from the source at once.
const CHANGE_PAGE: usize = 1000;

/// How to copy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CopyOptions {
    /// Do everything, then roll the target's transaction back: checks that the copy would
    /// succeed, changes nothing.
    pub dry_run: bool,
}

/// An application that was copied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopiedApp {
    pub name: String,
    pub uid: String,
}

/// How many rows a registry's tables hold.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RowCounts {
    /// Applications (also those being deleted).
    pub apps: u64,
    pub devices: u64,
    /// Names, aliases and unique usernames devices are found by.
    pub device_names: u64,
    /// Subjects of valid trust anchors, by application.
    pub trust_anchor_subjects: u64,
    pub users: u64,
    pub tokens: u64,
    /// Change events (those after the compacted revision).
    pub changes: u64,
    /// Device twins that were ever changed.
    pub twins: u64,
    /// Twin changes not yet appended to their event streams.
    pub twin_outbox: u64,
    /// Certificates the device CA issued.
    pub certificates: u64,
    /// Revoked certificates of applications' own trust anchors.
    pub revocations: u64,
    /// Provisioning enrollments (individual and groups).
    pub enrollments: u64,
    /// Provisioning registration records.
    pub registrations: u64,
    /// Webhook subscriptions (with their delivery state).
    pub webhooks: u64,
    /// Events webhook subscriptions gave up on.
    pub webhook_dead_letters: u64,
}

/// What [`copy_registry`] copied (or, in a dry run, would have).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MigrationReport {
    /// Every application, by name.
    pub applications: Vec<CopiedApp>,
    /// The rows copied, table by table.
    pub rows: RowCounts,
    /// The revision counter, as on the source.
    pub revision: u64,
    /// Change events up to this revision had been pruned on the source, and count as pruned on
    /// the target too.
    pub compacted: u64,
    /// Tokens of the target's bootstrapped `admin` that the source's `admin` replaced.
    pub replaced_admin_tokens: u64,
    /// Nothing was written.
    pub dry_run: bool,
}

/// Copies everything in `from` to `to`, which must be empty: no applications, devices or change
/// events, the revision counter at 0, and no user but `admin` (which a node creates at its
/// first start, with a token of its own). That `admin` and its tokens are replaced by the
/// source's; any other content makes the copy fail with [`RegistryError::Conflict`] before it
/// writes anything.
///
/// `from` is read in one snapshot, `to` written in one transaction: a failure leaves it as it
/// was. Neither store may be written by anyone else meanwhile (stop the servers); on
/// PostgreSQL, other nodes' writes wait for the copy (the revision counter's lock) and then find
/// the revision moved.
pub async fn copy_registry<A: Backend, B: Backend>(
    from: &SqlRegistry<A>,
    to: &SqlRegistry<B>,
    options: CopyOptions,
) -> Result<MigrationReport> {
    let (mut src, revision) = from.read().await?;
    let source = Source::read(&mut src).await?;
    let mut w = to.begin_write().await?;
    let replaced_admin_tokens = check_empty(&mut w).await?;
    tables::delete_user(&mut w.tx, ADMIN_USER).await?;
    source.write(&mut w).await?;
    copy_changes(&mut src, &mut w, source.compacted).await?;
    drop(src);
    if source.compacted != 0 {
        tables::set_compacted(&mut w.tx, source.compacted).await?;
    }

    let copied = tables::counts(&mut w.tx).await?;
    if copied != source.counts {
        return Err(RegistryError::Internal(Reason::new(format!(
            "the copy does not match the source (source {:?}, copy {copied:?}); nothing was written",
            source.counts
        ))));
    }
    let report = MigrationReport {
        applications: source
            .apps
            .into_iter()
            .map(|a| CopiedApp {
                name: a.name,
                uid: a.uid,
            })
            .collect(),
        rows: copied,
        revision,
        compacted: source.compacted,
        replaced_admin_tokens,
        dry_run: options.dry_run,
    };
    if options.dry_run {
        // Dropped without a commit: rolled back.
        return Ok(report);
    }
    // The commit moves the counter to the source's revision and tells other nodes.
    w.revision = revision;
    w.commit().await?;
    Ok(report)
}

/// Every row of the source but its change events, read in one snapshot.
struct Source {
    counts: RowCounts,
    compacted: u64,
    users: Vec<User>,
    tokens: Vec<TokenRow>,
    apps: Vec<StoredApp>,
    devices: Vec<StoredDevice>,
    names: Vec<NameRow>,
    anchors: Vec<(String, String)>,
    twins: Vec<StoredTwin>,
    twin_outbox: Vec<TwinChange>,
    certificates: certificates::AllRows,
    provisioning: provisioning::AllRows,
    webhooks: Vec<WebhookRow>,
    dead_letters: Vec<DeadLetterRow>,
}

impl Source {
    async fn read(src: &mut impl Sql) -> Fallible<Self> {
        Ok(Self {
            compacted: tables::compacted(src).await?,
            counts: tables::counts(src).await?,
            users: tables::users(src).await?,
            tokens: tables::all_tokens(src).await?,
            apps: tables::stored_apps(src).await?,
            devices: tables::stored_devices(src).await?,
            names: tables::all_device_names(src).await?,
            anchors: tables::all_trust_anchor_subjects(src).await?,
            twins: twins::all(src).await?,
            twin_outbox: twins::all_outbox(src).await?,
            certificates: certificates::AllRows::read(src).await?,
            provisioning: provisioning::AllRows::read(src).await?,
            webhooks: webhooks::all(src).await?,
            dead_letters: webhooks::all_dead_letters(src).await?,
        })
    }

    async fn write<B: Backend>(&self, w: &mut Write<'_, B>) -> Fallible<()> {
        for u in &self.users {
            tables::insert_user(&mut w.tx, &u.name, u.admin, false, u.created).await?;
        }
        for t in &self.tokens {
            tables::insert_token_row(&mut w.tx, t).await?;
        }
        for a in &self.apps {
            tables::insert_stored_app(&mut w.tx, a).await?;
        }
        for (app, subject) in &self.anchors {
            tables::insert_trust_anchor_subject(&mut w.tx, app, subject).await?;
        }
        for d in &self.devices {
            tables::insert_stored_device(&mut w.tx, d).await?;
        }
        for n in &self.names {
            tables::insert_name_row(&mut w.tx, n).await?;
        }
        for t in &self.twins {
            twins::save(&mut w.tx, &t.app, &t.device, &t.twin).await?;
        }
        for c in &self.twin_outbox {
            twins::enqueue(&mut w.tx, c).await?;
        }
        for h in &self.webhooks {
            webhooks::insert(&mut w.tx, h).await?;
        }
        for l in &self.dead_letters {
            webhooks::insert_dead_letter(&mut w.tx, l).await?;
        }
        self.certificates.write(&mut w.tx).await?;
        self.provisioning.write(&mut w.tx).await
    }
}

/// Fails with [`RegistryError::Conflict`] unless the target is empty but for its bootstrapped
/// `admin`; returns how many tokens that `admin` has.
async fn check_empty<B: Backend>(w: &mut Write<'_, B>) -> Result<u64> {
    let target = tables::counts(&mut w.tx).await?;
    let target_users = tables::users(&mut w.tx).await?;
    let target_compacted = tables::compacted(&mut w.tx).await?;
    let others: Vec<&str> = target_users
        .iter()
        .map(|u| u.name.as_str())
        .filter(|n| *n != ADMIN_USER)
        .collect();
    if w.base != 0
        || target_compacted != 0
        || target.apps + target.devices + target.changes != 0
        || target.device_names + target.trust_anchor_subjects != 0
        || target.twins + target.twin_outbox != 0
        || target.certificates + target.revocations != 0
        || target.enrollments + target.registrations != 0
        || target.webhooks + target.webhook_dead_letters != 0
        || !others.is_empty()
    {
        return Err(RegistryError::Conflict(format!(
            "the target registry is not empty (revision {}, {} applications, {} devices, {} change events, users other than '{ADMIN_USER}': {}); migrate into a new database or schema",
            w.base,
            target.apps,
            target.devices,
            target.changes,
            if others.is_empty() { "none".to_string() } else { others.join(", ") },
        )));
    }
    Ok(target.tokens)
}

/// Copies the change events after `since`, page by page.
async fn copy_changes<B: Backend>(
    src: &mut impl Sql,
    w: &mut Write<'_, B>,
    mut since: u64,
) -> Fallible<()> {
    loop {
        let page = tables::changes_since(src, since, CHANGE_PAGE).await?;
        for c in &page {
            tables::insert_change(&mut w.tx, c).await?;
        }
        match page.last() {
            Some(last) if page.len() == CHANGE_PAGE => since = last.revision,
            _ => return Ok(()),
        }
    }
}
