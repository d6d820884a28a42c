//! Device certificates over the SQL stores (what they are: [`crate::certificates`]).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use drover_model::{Kind, Permission, Principal};

use super::access::{not_found_device, readable_app};
use super::{Backend, SqlRegistry};
use crate::certificates::{CertificateRecord, CertificateStore, Revocation, RevokedBy};
use crate::sql::{Fallible, Fields, Sql};
use crate::{RegistryError, Result};

use crate::REVOCATION_PATH;

fn record(r: &impl Fields) -> Fallible<CertificateRecord> {
    Ok(CertificateRecord {
        fingerprint: r.text(0)?,
        serial: r.text(1)?,
        application: r.text(2)?,
        device: r.text(3)?,
        subject: r.text(4)?,
        not_before: r.time(5)?,
        not_after: r.time(6)?,
        issued: r.time(7)?,
        revoked: if r.flag(8)? { Some(r.time(9)?) } else { None },
        certificate: r.text(10)?,
    })
}

/// A revocation from `kind, value, device, revoked`.
fn revocation(r: &impl Fields) -> Fallible<Revocation> {
    Ok(Revocation {
        kind: if r.text(0)? == "serial" {
            RevokedBy::Serial
        } else {
            RevokedBy::Fingerprint
        },
        value: r.text(1)?,
        device: r.opt_text(2)?,
        revoked: r.time(3)?,
    })
}

fn not_found_certificate(app: &str, fingerprint: &str) -> RegistryError {
    RegistryError::NotFound(format!(
        "certificate '{fingerprint}' not found in application '{app}'"
    ))
}

async fn load(
    db: &mut impl Sql,
    app: &str,
    fingerprint: &str,
) -> Fallible<Option<CertificateRecord>> {
    // The statement text must be 'static: the columns are spelled out.
    let row = db
        .row(
            "SELECT fingerprint, serial, app, device, subject, not_before, not_after, issued,
                    revoked IS NOT NULL, COALESCE(revoked, issued), pem
             FROM certificates WHERE app = $1 AND fingerprint = $2",
            &[app.into(), fingerprint.into()],
        )
        .await?;
    row.as_ref().map(record).transpose()
}

/// An issued certificate by fingerprint, whatever its application (authentication).
pub(super) async fn issued(
    db: &mut impl Sql,
    fingerprint: &str,
) -> Fallible<Option<(String, String, bool)>> {
    let row = db
        .row(
            "SELECT app, device, revoked IS NOT NULL FROM certificates WHERE fingerprint = $1",
            &[fingerprint.into()],
        )
        .await?;
    row.map(|r| Ok((r.text(0)?, r.text(1)?, r.flag(2)?)))
        .transpose()
}

/// Whether a certificate of an application's own trust anchors is revoked.
pub(super) async fn revoked_external(
    db: &mut impl Sql,
    app_uid: &str,
    fingerprint: &str,
    serial: &str,
) -> Fallible<bool> {
    let row = db
        .row(
            "SELECT 1 FROM revocations WHERE app_uid = $1
             AND ((kind = 'fingerprint' AND value = $2) OR (kind = 'serial' AND value = $3))",
            &[app_uid.into(), fingerprint.into(), serial.into()],
        )
        .await?;
    Ok(row.is_some())
}

impl<B: Backend> SqlRegistry<B> {
    /// Emits the device change on which every node ends the device's sessions.
    async fn revoked_for(
        &self,
        w: &mut super::write::Write<'_, B>,
        app: &str,
        device: &str,
    ) -> Fallible<()> {
        let mut dev = w.device(app, device).await?;
        w.emit(Kind::Device, &mut dev, &[REVOCATION_PATH.to_string()]);
        w.save_device(app, &dev).await
    }
}

#[async_trait]
impl<B: Backend> CertificateStore for SqlRegistry<B> {
    async fn device_ca(&self) -> Result<Option<(String, String)>> {
        let row = self
            .backend
            .pool()
            .row("SELECT cert, key FROM device_ca WHERE id = 1", &[])
            .await?;
        Ok(row
            .map(|r| Ok::<_, crate::sql::Failure>((r.text(0)?, r.text(1)?)))
            .transpose()?)
    }

    async fn init_device_ca(&self, cert: &str, key: &str) -> Result<(String, String)> {
        self.backend
            .pool()
            .exec(
                "INSERT INTO device_ca (id, cert, key, created) VALUES (1, $1, $2, $3)
                 ON CONFLICT (id) DO NOTHING",
                &[cert.into(), key.into(), Utc::now().into()],
            )
            .await?;
        self.device_ca()
            .await?
            .ok_or_else(|| RegistryError::NotFound("the device CA was not stored".into()))
    }

    async fn record_certificate(
        &self,
        who: &Principal,
        app: &str,
        rec: CertificateRecord,
    ) -> Result<CertificateRecord> {
        let rec = &rec;
        self.retry(move || async move {
            let mut w = self.begin_write().await?;
            let row = w.app(who, app, Permission::Write).await?;
            let dev = w.device(app, &rec.device).await?;
            if dev.is_deleting() {
                return Err(RegistryError::Conflict(format!(
                    "device '{}' is being deleted",
                    rec.device
                ))
                .into());
            }
            w.tx.exec(
                "INSERT INTO certificates (fingerprint, serial, app, app_uid, device, subject,
                   not_before, not_after, issued, pem)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                &[
                    (&rec.fingerprint).into(),
                    (&rec.serial).into(),
                    app.into(),
                    (&row.doc.metadata.uid).into(),
                    (&rec.device).into(),
                    (&rec.subject).into(),
                    rec.not_before.into(),
                    rec.not_after.into(),
                    rec.issued.into(),
                    (&rec.certificate).into(),
                ],
            )
            .await?;
            w.commit().await?;
            Ok(rec.clone())
        })
        .await
    }

    async fn certificates(
        &self,
        who: &Principal,
        app: &str,
        device: Option<&str>,
        limit: Option<usize>,
        offset: usize,
    ) -> Result<Vec<CertificateRecord>> {
        let mut db = self.backend.pool();
        readable_app(&mut db, who, app).await?;
        let rows = db
            .rows(
                "SELECT fingerprint, serial, app, device, subject, not_before, not_after, issued,
                        revoked IS NOT NULL, COALESCE(revoked, issued), pem
                 FROM certificates WHERE app = $1 AND ($2 IS NULL OR device = $2)
                 ORDER BY issued, fingerprint LIMIT $3 OFFSET $4",
                &[
                    app.into(),
                    device.into(),
                    (limit.map_or(i64::MAX, |l| l as i64)).into(),
                    (offset as i64).into(),
                ],
            )
            .await?;
        Ok(rows.iter().map(record).collect::<Fallible<_>>()?)
    }

    async fn certificate(
        &self,
        who: &Principal,
        app: &str,
        fingerprint: &str,
    ) -> Result<CertificateRecord> {
        let mut db = self.backend.pool();
        readable_app(&mut db, who, app).await?;
        Ok(load(&mut db, app, fingerprint)
            .await?
            .ok_or_else(|| not_found_certificate(app, fingerprint))?)
    }

    async fn revoke_certificate(
        &self,
        who: &Principal,
        app: &str,
        fingerprint: &str,
    ) -> Result<CertificateRecord> {
        self.retry(move || async move {
            let mut w = self.begin_write().await?;
            w.app(who, app, Permission::Write).await?;
            let mut rec = load(&mut w.tx, app, fingerprint)
                .await?
                .ok_or_else(|| not_found_certificate(app, fingerprint))?;
            if rec.revoked.is_some() {
                return Ok(rec);
            }
            let now = w.now;
            w.tx.exec(
                "UPDATE certificates SET revoked = $2 WHERE fingerprint = $1",
                &[fingerprint.into(), now.into()],
            )
            .await?;
            self.revoked_for(&mut w, app, &rec.device).await?;
            w.commit().await?;
            rec.revoked = Some(now);
            Ok(rec)
        })
        .await
    }

    async fn revoke_external(
        &self,
        who: &Principal,
        app: &str,
        kind: RevokedBy,
        value: &str,
        device: &str,
    ) -> Result<Revocation> {
        self.retry(move || async move {
            let mut w = self.begin_write().await?;
            let row = w.app(who, app, Permission::Write).await?;
            if super::tables::load_device(&mut w.tx, app, device)
                .await?
                .is_none()
            {
                return Err(not_found_device(app, device).into());
            }
            let now = w.now;
            w.tx.exec(
                "INSERT INTO revocations (app, app_uid, kind, value, device, revoked)
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (app_uid, kind, value) DO NOTHING",
                &[
                    app.into(),
                    (&row.doc.metadata.uid).into(),
                    kind.as_str().into(),
                    value.into(),
                    device.into(),
                    now.into(),
                ],
            )
            .await?;
            self.revoked_for(&mut w, app, device).await?;
            w.commit().await?;
            Ok(Revocation {
                kind,
                value: value.to_string(),
                device: Some(device.to_string()),
                revoked: now,
            })
        })
        .await
    }

    async fn revocations(&self, who: &Principal, app: &str) -> Result<Vec<Revocation>> {
        let mut db = self.backend.pool();
        let row = readable_app(&mut db, who, app).await?;
        let rows = db
            .rows(
                "SELECT kind, value, device, revoked FROM revocations WHERE app_uid = $1
                 ORDER BY revoked DESC, value",
                &[(&row.doc.metadata.uid).into()],
            )
            .await?;
        Ok(rows.iter().map(revocation).collect::<Fallible<_>>()?)
    }

    async fn revoked_serials(&self) -> Result<Vec<(String, DateTime<Utc>)>> {
        let rows = self
            .backend
            .pool()
            .rows(
                "SELECT serial, revoked FROM certificates
                 WHERE revoked IS NOT NULL AND not_after > $1 ORDER BY revoked",
                &[Utc::now().into()],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| Ok((r.text(0)?, r.time(1)?)))
            .collect::<Fallible<_>>()?)
    }
}

/// Every row of the certificate tables, for `drover migrate` (`copy_registry`).
pub(super) struct AllRows {
    ca: Option<(String, String, DateTime<Utc>)>,
    /// Each certificate with its application's uid.
    certificates: Vec<(CertificateRecord, String)>,
    /// Each revocation with its application and its uid.
    revocations: Vec<(Revocation, String, String)>,
}

impl AllRows {
    pub(super) async fn read(db: &mut impl Sql) -> Fallible<AllRows> {
        let ca = db
            .row("SELECT cert, key, created FROM device_ca WHERE id = 1", &[])
            .await?
            .map(|r| Ok::<_, crate::sql::Failure>((r.text(0)?, r.text(1)?, r.time(2)?)))
            .transpose()?;
        let rows = db
            .rows(
                "SELECT fingerprint, serial, app, device, subject, not_before, not_after, issued,
                        revoked IS NOT NULL, COALESCE(revoked, issued), pem, app_uid
                 FROM certificates ORDER BY fingerprint",
                &[],
            )
            .await?;
        let certificates = rows
            .iter()
            .map(|r| Ok((record(r)?, r.text(11)?)))
            .collect::<Fallible<_>>()?;
        let rows = db
            .rows(
                "SELECT kind, value, device, revoked, app, app_uid FROM revocations
                 ORDER BY app_uid, kind, value",
                &[],
            )
            .await?;
        let revocations = rows
            .iter()
            .map(|r| Ok((revocation(r)?, r.text(4)?, r.text(5)?)))
            .collect::<Fallible<_>>()?;
        Ok(AllRows {
            ca,
            certificates,
            revocations,
        })
    }

    /// Writes the rows; the target's own device CA (its first node's) is replaced.
    pub(super) async fn write(&self, db: &mut impl Sql) -> Fallible<()> {
        if let Some((cert, key, created)) = &self.ca {
            db.exec("DELETE FROM device_ca", &[]).await?;
            db.exec(
                "INSERT INTO device_ca (id, cert, key, created) VALUES (1, $1, $2, $3)",
                &[cert.into(), key.into(), (*created).into()],
            )
            .await?;
        }
        for (c, app_uid) in &self.certificates {
            db.exec(
                "INSERT INTO certificates (fingerprint, serial, app, app_uid, device, subject,
                   not_before, not_after, issued, revoked, pem)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                &[
                    (&c.fingerprint).into(),
                    (&c.serial).into(),
                    (&c.application).into(),
                    app_uid.into(),
                    (&c.device).into(),
                    (&c.subject).into(),
                    c.not_before.into(),
                    c.not_after.into(),
                    c.issued.into(),
                    c.revoked.into(),
                    (&c.certificate).into(),
                ],
            )
            .await?;
        }
        for (r, app, app_uid) in &self.revocations {
            db.exec(
                "INSERT INTO revocations (app, app_uid, kind, value, device, revoked)
                 VALUES ($1, $2, $3, $4, $5, $6)",
                &[
                    app.into(),
                    app_uid.into(),
                    r.kind.as_str().into(),
                    (&r.value).into(),
                    r.device.as_deref().into(),
                    r.revoked.into(),
                ],
            )
            .await?;
        }
        Ok(())
    }
}
