//! Provisioning's documents over the SQL stores (what they are: [`crate::provisioning`]).

use async_trait::async_trait;
use chrono::Utc;
use drover_model::{Permission, Principal};

use super::access::readable_app;
use super::{Backend, SqlRegistry};
use crate::provisioning::{Enrollment, EnrollmentKind, ProvisioningStore, RegistrationRecord};
use crate::sql::{Arg, Fallible, Fields, Sql};
use crate::{RegistryError, Result};

fn not_found(kind: EnrollmentKind, app: &str, id: &str) -> RegistryError {
    RegistryError::NotFound(format!(
        "{} enrollment '{id}' not found in application '{app}'",
        kind.as_str()
    ))
}

async fn load(db: &mut impl Sql, kind: EnrollmentKind, id: &str) -> Fallible<Option<Enrollment>> {
    let row = db
        .row(
            "SELECT doc FROM enrollments WHERE kind = $1 AND id = $2",
            &[kind.as_str().into(), id.into()],
        )
        .await?;
    row.map(|r| r.json(0)).transpose()
}

/// Whether `who` sees keys: administrators of the application.
async fn sees_keys<B: Backend>(reg: &SqlRegistry<B>, who: &Principal, app: &str) -> bool {
    let mut db = reg.backend.pool();
    match readable_app(&mut db, who, app).await {
        Ok(row) => row.permits(who, Permission::Admin),
        Err(_) => false,
    }
}

#[async_trait]
impl<B: Backend> ProvisioningStore for SqlRegistry<B> {
    async fn put_enrollment(
        &self,
        who: &Principal,
        app: &str,
        e: Enrollment,
    ) -> Result<Enrollment> {
        e.validate()?;
        let e = &e;
        self.retry(move || async move {
            let mut w = self.begin_write().await?;
            w.app(who, app, Permission::Write).await?;
            let old = load(&mut w.tx, e.kind, &e.id).await?;
            if let Some(o) = &old {
                if o.application != app {
                    return Err(RegistryError::Conflict(format!(
                        "{} enrollment '{}' exists in another application",
                        e.kind.as_str(),
                        e.id
                    ))
                    .into());
                }
            }
            let now = Utc::now();
            let mut doc = e.clone();
            doc.application = app.to_string();
            doc.etag = uuid::Uuid::new_v4().to_string();
            doc.created = old.and_then(|o| o.created).or(Some(now));
            doc.updated = Some(now);
            w.tx.exec(
                "INSERT INTO enrollments (kind, id, app, doc) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (kind, id) DO UPDATE SET doc = excluded.doc",
                &[
                    doc.kind.as_str().into(),
                    (&doc.id).into(),
                    app.into(),
                    Arg::json(&doc)?,
                ],
            )
            .await?;
            w.commit().await?;
            Ok(doc)
        })
        .await
    }

    async fn enrollment(
        &self,
        who: &Principal,
        app: &str,
        kind: EnrollmentKind,
        id: &str,
    ) -> Result<Enrollment> {
        let mut db = self.backend.pool();
        readable_app(&mut db, who, app).await?;
        let e = load(&mut db, kind, id)
            .await?
            .filter(|e| e.application == app)
            .ok_or_else(|| not_found(kind, app, id))?;
        Ok(match sees_keys(self, who, app).await {
            true => e,
            false => e.redacted(),
        })
    }

    async fn enrollments(&self, who: &Principal, app: &str) -> Result<Vec<Enrollment>> {
        let mut db = self.backend.pool();
        readable_app(&mut db, who, app).await?;
        let rows = db
            .rows(
                "SELECT doc FROM enrollments WHERE app = $1 ORDER BY kind, id",
                &[app.into()],
            )
            .await?;
        let all: Vec<Enrollment> = rows.iter().map(|r| r.json(0)).collect::<Fallible<_>>()?;
        let keys = sees_keys(self, who, app).await;
        Ok(all
            .into_iter()
            .map(|e| if keys { e } else { e.redacted() })
            .collect())
    }

    async fn delete_enrollment(
        &self,
        who: &Principal,
        app: &str,
        kind: EnrollmentKind,
        id: &str,
    ) -> Result<()> {
        self.retry(move || async move {
            let mut w = self.begin_write().await?;
            w.app(who, app, Permission::Write).await?;
            let n =
                w.tx.exec(
                    "DELETE FROM enrollments WHERE kind = $1 AND id = $2 AND app = $3",
                    &[kind.as_str().into(), id.into(), app.into()],
                )
                .await?;
            if n == 0 {
                return Err(not_found(kind, app, id).into());
            }
            w.commit().await
        })
        .await
    }

    async fn registrations(&self, who: &Principal, app: &str) -> Result<Vec<RegistrationRecord>> {
        let mut db = self.backend.pool();
        readable_app(&mut db, who, app).await?;
        let rows = db
            .rows(
                "SELECT doc FROM registrations WHERE app = $1 ORDER BY registration_id",
                &[app.into()],
            )
            .await?;
        Ok(rows.iter().map(|r| r.json(0)).collect::<Fallible<_>>()?)
    }

    async fn delete_registration(&self, who: &Principal, app: &str, id: &str) -> Result<()> {
        self.retry(move || async move {
            let mut w = self.begin_write().await?;
            w.app(who, app, Permission::Write).await?;
            let n =
                w.tx.exec(
                    "DELETE FROM registrations WHERE registration_id = $1 AND app = $2",
                    &[id.into(), app.into()],
                )
                .await?;
            if n == 0 {
                return Err(RegistryError::NotFound(format!(
                    "registration '{id}' not found in application '{app}'"
                ))
                .into());
            }
            w.commit().await
        })
        .await
    }

    async fn find_enrollment(&self, kind: EnrollmentKind, id: &str) -> Result<Option<Enrollment>> {
        Ok(load(&mut self.backend.pool(), kind, id).await?)
    }

    async fn enrollment_groups(&self) -> Result<Vec<Enrollment>> {
        let rows = self
            .backend
            .pool()
            .rows(
                "SELECT doc FROM enrollments WHERE kind = 'group' ORDER BY id",
                &[],
            )
            .await?;
        Ok(rows.iter().map(|r| r.json(0)).collect::<Fallible<_>>()?)
    }

    async fn find_registration(&self, registration_id: &str) -> Result<Option<RegistrationRecord>> {
        let row = self
            .backend
            .pool()
            .row(
                "SELECT doc FROM registrations WHERE registration_id = $1",
                &[registration_id.into()],
            )
            .await?;
        Ok(row.map(|r| r.json(0)).transpose()?)
    }

    async fn record_registration(&self, r: &RegistrationRecord) -> Result<()> {
        self.backend
            .pool()
            .exec(
                "INSERT INTO registrations (registration_id, app, operation_id, doc)
                 VALUES ($1, $2, $3, $4)
                 ON CONFLICT (registration_id) DO UPDATE SET app = excluded.app,
                   operation_id = excluded.operation_id, doc = excluded.doc",
                &[
                    (&r.registration_id).into(),
                    (&r.application).into(),
                    (&r.operation_id).into(),
                    Arg::json(r)?,
                ],
            )
            .await?;
        Ok(())
    }
}

/// Every row of the provisioning tables, for `drover migrate` (`copy_registry`), as stored.
pub(super) struct AllRows {
    enrollments: Vec<(String, String, String, serde_json::Value)>,
    registrations: Vec<(String, String, String, serde_json::Value)>,
}

impl AllRows {
    pub(super) async fn read(db: &mut impl Sql) -> Fallible<AllRows> {
        let rows = db
            .rows(
                "SELECT kind, id, app, doc FROM enrollments ORDER BY kind, id",
                &[],
            )
            .await?;
        let enrollments = rows
            .iter()
            .map(|r| Ok((r.text(0)?, r.text(1)?, r.text(2)?, r.json(3)?)))
            .collect::<Fallible<_>>()?;
        let rows = db
            .rows(
                "SELECT registration_id, app, operation_id, doc FROM registrations
                 ORDER BY registration_id",
                &[],
            )
            .await?;
        let registrations = rows
            .iter()
            .map(|r| Ok((r.text(0)?, r.text(1)?, r.text(2)?, r.json(3)?)))
            .collect::<Fallible<_>>()?;
        Ok(AllRows {
            enrollments,
            registrations,
        })
    }

    pub(super) async fn write(&self, db: &mut impl Sql) -> Fallible<()> {
        for (kind, id, app, doc) in &self.enrollments {
            db.exec(
                "INSERT INTO enrollments (kind, id, app, doc) VALUES ($1, $2, $3, $4)",
                &[kind.into(), id.into(), app.into(), Arg::json(doc)?],
            )
            .await?;
        }
        for (id, app, op, doc) in &self.registrations {
            db.exec(
                "INSERT INTO registrations (registration_id, app, operation_id, doc)
                 VALUES ($1, $2, $3, $4)",
                &[id.into(), app.into(), op.into(), Arg::json(doc)?],
            )
            .await?;
        }
        Ok(())
    }
}
