//! Device twins over the SQL stores (what they are: [`crate::twin`]). A twin write is its own
//! short transaction: it locks the device's row (so one device's writes take turns and a
//! deleted device gets no twin back), applies the change, and writes the outbox row.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use drover_model::twin::{Section, Twin};
use drover_model::{Permission, Principal};
use serde_json::{Map, Value};

use super::access::{not_found_app, not_found_device, readable_app};
use super::{tables, Backend, SqlRegistry};
use crate::sql::{Arg, Fallible, Fields, Sql, Tx};
use crate::twin::{parse_section, section_name, DeviceTwins, TwinChange, TwinStore, TwinUpdate};
use crate::{RegistryError, Result};

/// What a twin write does.
#[derive(Clone, Copy)]
enum Edit<'a> {
    /// A merge patch on `desired` or `reported`, optionally only at a given version.
    Patch(Section, &'a Map<String, Value>, Option<u64>),
    /// New tags.
    Tags(&'a Map<String, Value>),
}

async fn load(db: &mut impl Sql, app: &str, device: &str) -> Fallible<Option<Twin>> {
    let row = db
        .row(
            "SELECT desired, desired_version, reported, reported_version, tags FROM twins
             WHERE app = $1 AND device = $2",
            &[app.into(), device.into()],
        )
        .await?;
    let Some(r) = row else { return Ok(None) };
    Ok(Some(Twin {
        desired: r.json(0)?,
        desired_version: r.uint(1)?,
        reported: r.json(2)?,
        reported_version: r.uint(3)?,
        tags: r.json(4)?,
    }))
}

pub(super) async fn save(db: &mut impl Sql, app: &str, device: &str, twin: &Twin) -> Fallible<()> {
    db.exec(
        "INSERT INTO twins (app, device, desired, desired_version, reported, reported_version, tags)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT(app, device) DO UPDATE SET desired = excluded.desired,
           desired_version = excluded.desired_version, reported = excluded.reported,
           reported_version = excluded.reported_version, tags = excluded.tags",
        &[
            app.into(),
            device.into(),
            Arg::json(&twin.desired)?,
            twin.desired_version.into(),
            Arg::json(&twin.reported)?,
            twin.reported_version.into(),
            Arg::json(&twin.tags)?,
        ],
    )
    .await?;
    Ok(())
}

pub(super) async fn enqueue(db: &mut impl Sql, change: &TwinChange) -> Fallible<()> {
    db.exec(
        "INSERT INTO twin_outbox (app, app_uid, device, device_uid, section, version, patch, time)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        &[
            (&change.application).into(),
            (&change.application_uid).into(),
            (&change.device).into(),
            (&change.device_uid).into(),
            section_name(change.section).into(),
            change.version.into(),
            Arg::json(&change.patch)?,
            change.time.into(),
        ],
    )
    .await?;
    Ok(())
}

/// A twin row as stored (for `copy_registry`).
pub(super) struct StoredTwin {
    pub app: String,
    pub device: String,
    pub twin: Twin,
}

/// Every twin row.
pub(super) async fn all(db: &mut impl Sql) -> Fallible<Vec<StoredTwin>> {
    let rows = db
        .rows(
            "SELECT app, device, desired, desired_version, reported, reported_version, tags
             FROM twins ORDER BY app, device",
            &[],
        )
        .await?;
    rows.iter()
        .map(|r| {
            Ok(StoredTwin {
                app: r.text(0)?,
                device: r.text(1)?,
                twin: Twin {
                    desired: r.json(2)?,
                    desired_version: r.uint(3)?,
                    reported: r.json(4)?,
                    reported_version: r.uint(5)?,
                    tags: r.json(6)?,
                },
            })
        })
        .collect()
}

/// Every outbox row, oldest first.
pub(super) async fn all_outbox(db: &mut impl Sql) -> Fallible<Vec<TwinChange>> {
    let rows = db
        .rows(
            "SELECT seq, app, app_uid, device, device_uid, section, version, patch, time
             FROM twin_outbox ORDER BY seq",
            &[],
        )
        .await?;
    rows.iter().map(outbox_row).collect()
}

fn outbox_row(r: &impl Fields) -> Fallible<TwinChange> {
    let section = r.text(5)?;
    let section = parse_section(&section).ok_or_else(|| {
        RegistryError::Internal(drover_model::error::Reason::new(format!(
            "stored data is corrupt: twin outbox row names section '{section}'"
        )))
    })?;
    Ok(TwinChange {
        seq: r.uint(0)?,
        application: r.text(1)?,
        application_uid: r.text(2)?,
        device: r.text(3)?,
        device_uid: r.text(4)?,
        section,
        version: r.uint(6)?,
        patch: r.json(7)?,
        time: r.time(8)?,
    })
}

/// Applies `edit` to `twin`; returns whether it changed. A version precondition that does not
/// hold is refused.
fn apply(twin: &mut Twin, edit: Edit<'_>, app: &str, device: &str) -> Fallible<bool> {
    match edit {
        Edit::Patch(section, patch, expected) => {
            let current = match section {
                Section::Desired => twin.desired_version,
                Section::Reported => twin.reported_version,
                Section::Tags => 0,
            };
            if let Some(expected) = expected.filter(|v| *v != current) {
                return Err(RegistryError::OptimisticLockFailed(format!(
                    "the {} properties of device '{device}' in application '{app}' are at version {current}, not {expected}",
                    section.as_str()
                ))
                .into());
            }
            Ok(twin.patch(section, patch)?)
        }
        Edit::Tags(tags) => Ok(twin.set_tags(tags.clone())?),
    }
}

impl<B: Backend> SqlRegistry<B> {
    /// One twin write: `who` (none: the device itself) must be allowed to write to the app.
    async fn write_twin(
        &self,
        who: Option<&Principal>,
        app: &str,
        device: &str,
        edit: Edit<'_>,
    ) -> Result<TwinUpdate> {
        self.retry(move || async move {
            let mut tx = self.backend.begin_write().await?;
            let row = tables::load_app(&mut tx, app)
                .await?
                .ok_or_else(|| not_found_app(app))?;
            if let Some(who) = who {
                row.authorize(who, Permission::Write)?;
            }
            let device_uid = match tx.row(B::LOCK_DEVICE, &[app.into(), device.into()]).await? {
                Some(r) => r.text(0)?,
                None => return Err(not_found_device(app, device).into()),
            };
            let mut twin = load(&mut tx, app, device).await?.unwrap_or_else(Twin::new);
            let changed = apply(&mut twin, edit, app, device)?;
            if !changed {
                return Ok(TwinUpdate { twin, changed });
            }
            save(&mut tx, app, device, &twin).await?;
            if let Edit::Patch(section @ (Section::Desired | Section::Reported), patch, _) = edit {
                let version = match section {
                    Section::Desired => twin.desired_version,
                    _ => twin.reported_version,
                };
                let change = TwinChange {
                    seq: 0,
                    application: app.to_string(),
                    application_uid: row.doc.metadata.uid.clone(),
                    device: device.to_string(),
                    device_uid,
                    section,
                    version,
                    patch: patch.clone(),
                    time: Utc::now(),
                };
                enqueue(&mut tx, &change).await?;
                tx.commit().await?;
                self.twins.send_modify(|n| *n += 1);
            } else {
                tx.commit().await?;
            }
            Ok(TwinUpdate { twin, changed })
        })
        .await
    }

    /// The twin of a device that exists (read through `db`).
    async fn stored_twin(db: &mut impl Sql, app: &str, device: &str) -> Fallible<Twin> {
        if tables::load_device(db, app, device).await?.is_none() {
            return Err(not_found_device(app, device).into());
        }
        Ok(load(db, app, device).await?.unwrap_or_else(Twin::new))
    }
}

#[async_trait]
impl<B: Backend> DeviceTwins for SqlRegistry<B> {
    async fn device_twin(&self, app: &str, device: &str) -> Result<Twin> {
        let (mut tx, _) = self.read().await?;
        if tables::load_app(&mut tx, app).await?.is_none() {
            return Err(not_found_app(app));
        }
        Ok(Self::stored_twin(&mut tx, app, device).await?)
    }

    async fn patch_reported(
        &self,
        app: &str,
        device: &str,
        patch: &Map<String, Value>,
    ) -> Result<TwinUpdate> {
        let edit = Edit::Patch(Section::Reported, patch, None);
        self.write_twin(None, app, device, edit).await
    }
}

#[async_trait]
impl<B: Backend> TwinStore for SqlRegistry<B> {
    async fn twin(&self, who: &Principal, app: &str, device: &str) -> Result<Twin> {
        let (mut tx, _) = self.read().await?;
        readable_app(&mut tx, who, app).await?;
        Ok(Self::stored_twin(&mut tx, app, device).await?)
    }

    async fn patch_desired(
        &self,
        who: &Principal,
        app: &str,
        device: &str,
        patch: &Map<String, Value>,
        if_version: Option<u64>,
    ) -> Result<TwinUpdate> {
        let edit = Edit::Patch(Section::Desired, patch, if_version);
        self.write_twin(Some(who), app, device, edit).await
    }

    async fn replace_tags(
        &self,
        who: &Principal,
        app: &str,
        device: &str,
        tags: Map<String, Value>,
    ) -> Result<TwinUpdate> {
        self.write_twin(Some(who), app, device, Edit::Tags(&tags))
            .await
    }

    async fn claim_twin_changes(&self, limit: usize, hold: Duration) -> Result<Vec<TwinChange>> {
        let now = Utc::now();
        let until: DateTime<Utc> =
            now + chrono::Duration::from_std(hold).unwrap_or_else(|_| chrono::Duration::days(1));
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut db = self.backend.pool();
        let rows = db
            .rows(
                "UPDATE twin_outbox SET claimed_until = $1
                 WHERE seq IN (SELECT seq FROM twin_outbox
                               WHERE claimed_until IS NULL OR claimed_until < $2
                               ORDER BY seq LIMIT $3)
                   AND (claimed_until IS NULL OR claimed_until < $2)
                 RETURNING seq, app, app_uid, device, device_uid, section, version, patch, time",
                &[until.into(), now.into(), limit.into()],
            )
            .await?;
        let mut changes = rows.iter().map(outbox_row).collect::<Fallible<Vec<_>>>()?;
        changes.sort_by_key(|c| c.seq);
        Ok(changes)
    }

    fn subscribe_twins(&self) -> tokio::sync::watch::Receiver<u64> {
        self.twins.subscribe()
    }

    async fn forget_twin_changes(&self, seqs: &[u64]) -> Result<()> {
        let mut db = self.backend.pool();
        for seq in seqs {
            db.exec("DELETE FROM twin_outbox WHERE seq = $1", &[(*seq).into()])
                .await?;
        }
        Ok(())
    }
}
