//! Webhook subscriptions over the SQL stores (what they are: [`crate::webhook`]). Creating and
//! deleting one is a registry write (the writer lock, and on PostgreSQL the revision counter's
//! row, so the per-application limit holds across nodes) that moves no revision; the delivery's
//! state is written by single statements.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, SubsecRound, Utc};
use drover_model::webhook::{
    DeadLetter, Webhook, WebhookInput, WebhookMetadata, WebhookSpec, WebhookStatus,
    MAX_WEBHOOKS_PER_APP,
};
use drover_model::{Permission, Principal};

use super::access::readable_app;
use super::{Backend, SqlRegistry};
use crate::sql::{Arg, Fallible, Fields, Sql};
use crate::webhook::{StoredWebhook, WebhookProgress, WebhookStore, MAX_DEAD_LETTER_PAGE};
use crate::{RegistryError, Result};

/// A subscription's row: the spec and its secret, and the delivery's state.
#[derive(Debug, Clone)]
pub(super) struct WebhookRow {
    pub stored: StoredWebhook,
    pub status: WebhookStatus,
    pub held_until: Option<DateTime<Utc>>,
}

fn read_row(r: &impl Fields) -> Fallible<WebhookRow> {
    let mut spec: WebhookSpec = r.json(4)?;
    spec.secret = r.opt_text(5)?;
    let validated = r.flag(13)?;
    let webhook = Webhook {
        metadata: WebhookMetadata {
            application: r.text(0)?,
            name: r.text(1)?,
            uid: r.text(2)?,
            creation_timestamp: r.time(6)?,
        },
        signed: spec.secret.is_some(),
        spec,
    };
    Ok(WebhookRow {
        stored: StoredWebhook {
            webhook,
            app_uid: r.text(3)?,
            validated,
            held_by: None,
        },
        status: WebhookStatus {
            delivered: r.uint(7)?,
            failed: r.uint(8)?,
            retrying: u32::try_from(r.uint(9)?).unwrap_or(u32::MAX),
            lag: None,
            committed: None,
            last_error: r.opt_text(10)?,
            last_error_time: r.opt_time(11)?,
            last_delivery_time: r.opt_time(12)?,
            validated,
            node: r.opt_text(14)?,
        },
        held_until: r.opt_time(15)?,
    })
}

/// The subscription as shown: without its secret.
fn shown(mut w: Webhook) -> Webhook {
    w.spec.secret = None;
    w
}

fn not_found(app: &str, name: &str) -> RegistryError {
    RegistryError::NotFound(format!("webhook '{name}' not found in application '{app}'"))
}

async fn load(db: &mut impl Sql, app: &str, name: &str) -> Fallible<WebhookRow> {
    let row = db
        .row(
            "SELECT app, name, uid, app_uid, spec, secret, created, delivered, failed, retrying, last_error, last_error_time, last_delivery_time, validated, holder, held_until
             FROM webhooks WHERE app = $1 AND name = $2",
            &[app.into(), name.into()],
        )
        .await?;
    match row {
        Some(r) => read_row(&r),
        None => Err(not_found(app, name).into()),
    }
}

/// Every subscription row (for the delivery and `copy_registry`).
pub(super) async fn all(db: &mut impl Sql) -> Fallible<Vec<WebhookRow>> {
    let rows = db
        .rows(
            "SELECT app, name, uid, app_uid, spec, secret, created, delivered, failed, retrying, last_error, last_error_time, last_delivery_time, validated, holder, held_until
             FROM webhooks ORDER BY app, name",
            &[],
        )
        .await?;
    rows.iter().map(read_row).collect()
}

/// Writes a whole row (a new subscription, or a copied one).
pub(super) async fn insert(db: &mut impl Sql, row: &WebhookRow) -> Fallible<()> {
    let w = &row.stored.webhook;
    let s = &row.status;
    db.exec(
        "INSERT INTO webhooks (app, name, uid, app_uid, spec, secret, created, delivered, failed, retrying, last_error, last_error_time, last_delivery_time, validated, holder, held_until)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)",
        &[
            (&w.metadata.application).into(),
            (&w.metadata.name).into(),
            (&w.metadata.uid).into(),
            (&row.stored.app_uid).into(),
            // The spec's JSON form leaves the secret out.
            Arg::json(&w.spec)?,
            w.spec.secret.as_deref().into(),
            w.metadata.creation_timestamp.into(),
            s.delivered.into(),
            s.failed.into(),
            u64::from(s.retrying).into(),
            s.last_error.as_deref().into(),
            s.last_error_time.into(),
            s.last_delivery_time.into(),
            row.stored.validated.into(),
            s.node.as_deref().into(),
            row.held_until.into(),
        ],
    )
    .await?;
    Ok(())
}

/// A dead letter's row, with whose it is.
pub(super) struct DeadLetterRow {
    pub webhook_uid: String,
    pub app: String,
    pub letter: DeadLetter,
}

fn read_letter(r: &impl Fields) -> Fallible<DeadLetterRow> {
    Ok(DeadLetterRow {
        webhook_uid: r.text(0)?,
        app: r.text(1)?,
        letter: DeadLetter {
            seq: r.uint(2)?,
            offset: r.uint(3)?,
            event_id: r.text(4)?,
            event_type: r.text(5)?,
            device: r.text(6)?,
            event: r.json(7)?,
            error: r.text(8)?,
            attempts: u32::try_from(r.uint(9)?).unwrap_or(u32::MAX),
            time: r.time(10)?,
        },
    })
}

/// Every dead letter, oldest first (for `copy_registry`).
pub(super) async fn all_dead_letters(db: &mut impl Sql) -> Fallible<Vec<DeadLetterRow>> {
    let rows = db
        .rows(
            "SELECT webhook_uid, app, seq, stream_offset, event_id, event_type, device, event, error, attempts, time
             FROM webhook_dead_letters ORDER BY seq",
            &[],
        )
        .await?;
    rows.iter().map(read_letter).collect()
}

pub(super) async fn insert_dead_letter(db: &mut impl Sql, row: &DeadLetterRow) -> Fallible<()> {
    let l = &row.letter;
    db.exec(
        "INSERT INTO webhook_dead_letters (webhook_uid, app, stream_offset, event_id, event_type, device, event, error, attempts, time)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        &[
            (&row.webhook_uid).into(),
            (&row.app).into(),
            l.offset.into(),
            (&l.event_id).into(),
            (&l.event_type).into(),
            (&l.device).into(),
            Arg::json(&l.event)?,
            (&l.error).into(),
            u64::from(l.attempts).into(),
            l.time.into(),
        ],
    )
    .await?;
    Ok(())
}

/// Removes an application's subscriptions and dead letters (with the application).
pub(super) async fn delete_of_app(db: &mut impl Sql, app: &str) -> Fallible<()> {
    for sql in [
        "DELETE FROM webhooks WHERE app = $1",
        "DELETE FROM webhook_dead_letters WHERE app = $1",
    ] {
        db.exec(sql, &[app.into()]).await?;
    }
    Ok(())
}

#[async_trait]
impl<B: Backend> WebhookStore for SqlRegistry<B> {
    async fn create_webhook(
        &self,
        who: &Principal,
        app: &str,
        input: WebhookInput,
    ) -> Result<Webhook> {
        input.validate()?;
        let created = self
            .retry(|| {
                let input = input.clone();
                async move {
                    let mut w = self.begin_write().await?;
                    let row = w.app(who, app, Permission::Write).await?;
                    if row.doc.is_deleting() {
                        return Err(RegistryError::ReferenceNotFound(format!(
                            "application '{app}' is being deleted"
                        ))
                        .into());
                    }
                    let name = &input.metadata.name;
                    let count = w
                        .tx
                        .row(
                            "SELECT COUNT(*), SUM(CASE WHEN name = $2 THEN 1 ELSE 0 END) FROM webhooks WHERE app = $1",
                            &[app.into(), name.into()],
                        )
                        .await?;
                    let (count, taken) = match count {
                        Some(r) => (r.uint(0)?, r.opt_int(1)?.unwrap_or(0) > 0),
                        None => (0, false),
                    };
                    if taken {
                        return Err(RegistryError::Conflict(format!(
                            "webhook '{name}' already exists in application '{app}'"
                        ))
                        .into());
                    }
                    if count >= MAX_WEBHOOKS_PER_APP {
                        return Err(RegistryError::BadRequest(format!(
                            "application '{app}' has {count} webhooks, the most it may have ({MAX_WEBHOOKS_PER_APP})"
                        ))
                        .into());
                    }
                    let webhook = Webhook {
                        metadata: WebhookMetadata {
                            name: name.clone(),
                            application: app.to_string(),
                            uid: uuid::Uuid::new_v4().to_string(),
                            // Microseconds: what every store keeps.
                            creation_timestamp: w.now.trunc_subsecs(6),
                        },
                        signed: input.spec.secret.is_some(),
                        spec: input.spec,
                    };
                    let row = WebhookRow {
                        stored: StoredWebhook {
                            webhook,
                            app_uid: row.doc.metadata.uid.clone(),
                            // Nothing to validate unless the spec asks for the handshake.
                            validated: false,
                            held_by: None,
                        },
                        status: WebhookStatus::default(),
                        held_until: None,
                    };
                    insert(&mut w.tx, &row).await?;
                    w.commit().await?;
                    Ok(row.stored.webhook)
                }
            })
            .await?;
        self.webhooks.send_modify(|n| *n += 1);
        Ok(shown(created))
    }

    async fn list_webhooks(&self, who: &Principal, app: &str) -> Result<Vec<Webhook>> {
        let (mut tx, _) = self.read().await?;
        readable_app(&mut tx, who, app).await?;
        let rows = tx
            .rows(
                "SELECT app, name, uid, app_uid, spec, secret, created, delivered, failed, retrying, last_error, last_error_time, last_delivery_time, validated, holder, held_until
                 FROM webhooks WHERE app = $1 ORDER BY name",
                &[app.into()],
            )
            .await?;
        rows.iter()
            .map(|r| Ok(shown(read_row(r)?.stored.webhook)))
            .collect::<Fallible<Vec<_>>>()
            .map_err(Into::into)
    }

    async fn get_webhook(&self, who: &Principal, app: &str, name: &str) -> Result<Webhook> {
        let (mut tx, _) = self.read().await?;
        readable_app(&mut tx, who, app).await?;
        Ok(shown(load(&mut tx, app, name).await?.stored.webhook))
    }

    async fn delete_webhook(&self, who: &Principal, app: &str, name: &str) -> Result<()> {
        self.retry(|| async move {
            let mut w = self.begin_write().await?;
            w.app(who, app, Permission::Write).await?;
            let row = load(&mut w.tx, app, name).await?;
            let uid = &row.stored.webhook.metadata.uid;
            w.tx.exec("DELETE FROM webhooks WHERE uid = $1", &[uid.into()])
                .await?;
            w.tx.exec(
                "DELETE FROM webhook_dead_letters WHERE webhook_uid = $1",
                &[uid.into()],
            )
            .await?;
            w.commit().await
        })
        .await?;
        self.webhooks.send_modify(|n| *n += 1);
        Ok(())
    }

    async fn webhook_status(
        &self,
        who: &Principal,
        app: &str,
        name: &str,
    ) -> Result<(Webhook, String, WebhookStatus)> {
        let (mut tx, _) = self.read().await?;
        readable_app(&mut tx, who, app).await?;
        let mut row = load(&mut tx, app, name).await?;
        // A hold that ran out holds nothing.
        if row.held_until.is_none_or(|t| t < Utc::now()) {
            row.status.node = None;
        }
        let validated = row.stored.validated || !row.stored.webhook.spec.validation_handshake;
        row.status.validated = validated;
        Ok((shown(row.stored.webhook), row.stored.app_uid, row.status))
    }

    async fn dead_letters(
        &self,
        who: &Principal,
        app: &str,
        name: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<DeadLetter>> {
        let (mut tx, _) = self.read().await?;
        readable_app(&mut tx, who, app).await?;
        let row = load(&mut tx, app, name).await?;
        let limit = limit.min(MAX_DEAD_LETTER_PAGE) as u64;
        let rows = tx
            .rows(
                "SELECT webhook_uid, app, seq, stream_offset, event_id, event_type, device, event, error, attempts, time
                 FROM webhook_dead_letters WHERE webhook_uid = $1 AND seq > $2 ORDER BY seq LIMIT $3",
                &[(&row.stored.webhook.metadata.uid).into(), after.into(), limit.into()],
            )
            .await?;
        rows.iter()
            .map(|r| Ok(read_letter(r)?.letter))
            .collect::<Fallible<Vec<_>>>()
            .map_err(Into::into)
    }

    async fn all_webhooks(&self) -> Result<Vec<StoredWebhook>> {
        let rows = all(&mut self.backend.pool()).await?;
        let now = Utc::now();
        Ok(rows
            .into_iter()
            .map(|r| {
                let mut stored = r.stored;
                if r.held_until.is_some_and(|t| t >= now) {
                    stored.held_by = r.status.node;
                }
                stored
            })
            .collect())
    }

    async fn hold_webhook(&self, uid: &str, holder: &str, hold: Duration) -> Result<bool> {
        let now = Utc::now();
        let until = now + chrono::Duration::from_std(hold).unwrap_or(chrono::Duration::days(1));
        let n = self
            .backend
            .pool()
            .exec(
                "UPDATE webhooks SET holder = $1, held_until = $2
                 WHERE uid = $3 AND (holder IS NULL OR holder = $1 OR held_until IS NULL OR held_until < $4)",
                &[holder.into(), until.into(), uid.into(), now.into()],
            )
            .await?;
        Ok(n > 0)
    }

    async fn release_webhook(&self, uid: &str, holder: &str) -> Result<()> {
        self.backend
            .pool()
            .exec(
                "UPDATE webhooks SET holder = NULL, held_until = NULL, retrying = 0
                 WHERE uid = $1 AND holder = $2",
                &[uid.into(), holder.into()],
            )
            .await?;
        Ok(())
    }

    async fn record_webhook_progress(&self, uid: &str, p: &WebhookProgress) -> Result<bool> {
        let (error, error_time) = match &p.error {
            Some((e, t)) => (Some(e.as_str()), Some(*t)),
            None => (None, None),
        };
        let n = self
            .backend
            .pool()
            .exec(
                "UPDATE webhooks SET delivered = delivered + $1, failed = failed + $2, retrying = $3,
                   last_error = COALESCE($4, last_error),
                   last_error_time = COALESCE($5, last_error_time),
                   last_delivery_time = COALESCE($6, last_delivery_time),
                   validated = CASE WHEN $7 THEN $7 ELSE validated END
                 WHERE uid = $8",
                &[
                    p.delivered.into(),
                    p.failed.into(),
                    u64::from(p.retrying).into(),
                    error.into(),
                    error_time.into(),
                    p.delivered_at.into(),
                    p.validated.into(),
                    uid.into(),
                ],
            )
            .await?;
        Ok(n > 0)
    }

    async fn add_dead_letter(&self, uid: &str, app: &str, letter: &DeadLetter) -> Result<()> {
        let mut db = self.backend.pool();
        let row = DeadLetterRow {
            webhook_uid: uid.to_string(),
            app: app.to_string(),
            letter: letter.clone(),
        };
        insert_dead_letter(&mut db, &row).await?;
        // Keeps the newest MAX_DEAD_LETTERS (1000) of the subscription.
        db.exec(
            "DELETE FROM webhook_dead_letters WHERE webhook_uid = $1 AND seq <
               (SELECT seq FROM webhook_dead_letters WHERE webhook_uid = $1 ORDER BY seq DESC LIMIT 1 OFFSET 999)",
            &[uid.into()],
        )
        .await?;
        Ok(())
    }

    fn subscribe_webhooks(&self) -> tokio::sync::watch::Receiver<u64> {
        self.webhooks.subscribe()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_pruning_statement_keeps_max_dead_letters() {
        assert_eq!(
            crate::webhook::MAX_DEAD_LETTERS,
            1000,
            "OFFSET 999 in add_dead_letter"
        );
    }
}
