//! Whole tables, row for row, for copying a registry to another store (`super::super::migrate`):
//! documents as JSON values and token hashes as stored, so that they are copied verbatim.

use chrono::{DateTime, Utc};

use super::{insert_device_name, map_rows, number};
use crate::sql::{Arg, Fallible, Fields, Sql};
use crate::store::migrate::RowCounts;

/// An access token's row (the hash, never the secret).
pub struct TokenRow {
    pub hash: String,
    pub prefix: String,
    pub user: String,
    pub created: DateTime<Utc>,
    pub description: Option<String>,
    pub configured: bool,
}

/// An application's row as stored: documents as JSON values, so they are copied verbatim.
pub struct StoredApp {
    pub name: String,
    pub uid: String,
    pub owner: Option<String>,
    pub transfer_to: Option<String>,
    pub members: serde_json::Value,
    pub members_version: String,
    pub doc: serde_json::Value,
}

/// A device's row as stored.
pub struct StoredDevice {
    pub app: String,
    pub name: String,
    pub uid: String,
    pub doc: serde_json::Value,
}

/// A name a device is found by (`device_names`).
pub struct NameRow {
    pub app: String,
    pub kind: String,
    pub value: String,
    pub device: String,
}

/// How many rows each table holds.
pub async fn counts(db: &mut impl Sql) -> Fallible<RowCounts> {
    Ok(RowCounts {
        apps: number(db, "SELECT COUNT(*) FROM apps", &[]).await?,
        devices: number(db, "SELECT COUNT(*) FROM devices", &[]).await?,
        device_names: number(db, "SELECT COUNT(*) FROM device_names", &[]).await?,
        trust_anchor_subjects: number(db, "SELECT COUNT(*) FROM trust_anchor_subjects", &[])
            .await?,
        users: number(db, "SELECT COUNT(*) FROM users", &[]).await?,
        tokens: number(db, "SELECT COUNT(*) FROM tokens", &[]).await?,
        changes: number(db, "SELECT COUNT(*) FROM changes", &[]).await?,
        twins: number(db, "SELECT COUNT(*) FROM twins", &[]).await?,
        twin_outbox: number(db, "SELECT COUNT(*) FROM twin_outbox", &[]).await?,
        certificates: number(db, "SELECT COUNT(*) FROM certificates", &[]).await?,
        revocations: number(db, "SELECT COUNT(*) FROM revocations", &[]).await?,
        enrollments: number(db, "SELECT COUNT(*) FROM enrollments", &[]).await?,
        registrations: number(db, "SELECT COUNT(*) FROM registrations", &[]).await?,
        webhooks: number(db, "SELECT COUNT(*) FROM webhooks", &[]).await?,
        webhook_dead_letters: number(db, "SELECT COUNT(*) FROM webhook_dead_letters", &[]).await?,
    })
}

pub async fn all_tokens(db: &mut impl Sql) -> Fallible<Vec<TokenRow>> {
    let sql = "SELECT hash, prefix, user_name, created, description, configured FROM tokens ORDER BY user_name, created, prefix";
    map_rows(db, sql, &[], |r| {
        Ok(TokenRow {
            hash: r.text(0)?,
            prefix: r.text(1)?,
            user: r.text(2)?,
            created: r.time(3)?,
            description: r.opt_text(4)?,
            configured: r.flag(5)?,
        })
    })
    .await
}

pub async fn insert_token_row(db: &mut impl Sql, t: &TokenRow) -> Fallible<()> {
    db.exec(
        "INSERT INTO tokens (hash, prefix, user_name, created, description, configured) VALUES ($1, $2, $3, $4, $5, $6)",
        &[
            (&t.hash).into(),
            (&t.prefix).into(),
            (&t.user).into(),
            t.created.into(),
            t.description.as_deref().into(),
            t.configured.into(),
        ],
    )
    .await?;
    Ok(())
}

pub async fn stored_apps(db: &mut impl Sql) -> Fallible<Vec<StoredApp>> {
    let sql = "SELECT name, uid, owner, transfer_to, members, members_version, doc FROM apps ORDER BY name";
    map_rows(db, sql, &[], |r| {
        Ok(StoredApp {
            name: r.text(0)?,
            uid: r.text(1)?,
            owner: r.opt_text(2)?,
            transfer_to: r.opt_text(3)?,
            members: r.json(4)?,
            members_version: r.text(5)?,
            doc: r.json(6)?,
        })
    })
    .await
}

pub async fn insert_stored_app(db: &mut impl Sql, a: &StoredApp) -> Fallible<()> {
    db.exec(
        "INSERT INTO apps (name, uid, owner, transfer_to, members, members_version, doc) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        &[
            (&a.name).into(),
            (&a.uid).into(),
            a.owner.as_deref().into(),
            a.transfer_to.as_deref().into(),
            Arg::json(&a.members)?,
            (&a.members_version).into(),
            Arg::json(&a.doc)?,
        ],
    )
    .await?;
    Ok(())
}

pub async fn stored_devices(db: &mut impl Sql) -> Fallible<Vec<StoredDevice>> {
    let sql = "SELECT app, name, uid, doc FROM devices ORDER BY app, name";
    map_rows(db, sql, &[], |r| {
        Ok(StoredDevice {
            app: r.text(0)?,
            name: r.text(1)?,
            uid: r.text(2)?,
            doc: r.json(3)?,
        })
    })
    .await
}

pub async fn insert_stored_device(db: &mut impl Sql, d: &StoredDevice) -> Fallible<()> {
    db.exec(
        "INSERT INTO devices (app, name, uid, doc) VALUES ($1, $2, $3, $4)",
        &[
            (&d.app).into(),
            (&d.name).into(),
            (&d.uid).into(),
            Arg::json(&d.doc)?,
        ],
    )
    .await?;
    Ok(())
}

pub async fn all_device_names(db: &mut impl Sql) -> Fallible<Vec<NameRow>> {
    let sql = "SELECT app, kind, value, device FROM device_names ORDER BY app, kind, value";
    map_rows(db, sql, &[], |r| {
        Ok(NameRow {
            app: r.text(0)?,
            kind: r.text(1)?,
            value: r.text(2)?,
            device: r.text(3)?,
        })
    })
    .await
}

pub async fn insert_name_row(db: &mut impl Sql, n: &NameRow) -> Fallible<()> {
    insert_device_name(db, &n.app, &n.kind, &n.value, &n.device).await
}

/// Every (application, subject) of the trust-anchor index.
pub async fn all_trust_anchor_subjects(db: &mut impl Sql) -> Fallible<Vec<(String, String)>> {
    let sql = "SELECT app, subject FROM trust_anchor_subjects ORDER BY app, subject";
    map_rows(db, sql, &[], |r| Ok((r.text(0)?, r.text(1)?))).await
}
