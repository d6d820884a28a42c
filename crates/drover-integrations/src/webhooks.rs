//! The webhook integration: each subscription of an application (a registry resource,
//! `drover_model::webhook`) gets its application's events pushed to its URL, at least once and
//! in stream order, from a committed offset.
//!
//! - **One task per subscription** (`delivery`): it reads the application's durable stream as
//!   the consumer group `webhook:<uid>` from its committed offset, sends one request at a time
//!   (so events arrive in stream order, per device too), and commits an offset once its event
//!   was delivered (2xx) or given up. A slow or dead sink makes only its own subscription lag on
//!   the durable log; it never slows ingestion or other subscriptions, and a task holds at most
//!   one read batch in memory.
//! - **Retries**: 5xx, 408, 429, time-outs and connection errors are retried with exponential
//!   back-off and jitter (`Retry-After` of a 429/503 honoured); statuses no retry can fix (400,
//!   413, …), redirects (never followed) and addresses the outbound policy refuses are not.
//!   After the budget (`retry.maxAttempts`) each event of the request becomes a **dead letter**
//!   in the registry, listable through the API, and delivery goes on.
//! - **One node per subscription** ([`WebhookDelivery`], on every node): a subscription is
//!   delivered by the node that holds it in the registry ([`HOLD`], renewed every
//!   [`RENEW`]); a node that stops releases its holds, a node that dies leaves them to run
//!   out, and whoever takes the subscription next resumes from the committed offset. An event
//!   is thus delivered once per subscription, not once per node; repeats happen only around a
//!   change of holder (or a crash), as the committed offset trails the last delivery by at
//!   most one request.
//! - Every request goes through [`OutboundClient`] (the outbound address policy; redirects not
//!   followed); a subscription with `caPem` gets a client trusting those certificates.

mod delivery;
pub mod format;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use drover_bus::{BusError, EventLog, Offset, StartFrom, StreamKey};
use drover_model::webhook::{StartAt, Webhook, WebhookSpec, WebhookStatus};
use drover_model::ValidationError;
use drover_registry::{RegistryError, StoredWebhook, WebhookStore};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::outbound::{parse_roots, OutboundClient, OutboundPolicy};

/// How long a node holds a subscription without renewing.
pub const HOLD: Duration = Duration::from_secs(15);
/// How often a node renews its holds.
pub const RENEW: Duration = Duration::from_secs(5);
/// How often a node looks for subscriptions nobody delivers (new ones made on this node are
/// seen at once).
pub const SWEEP: Duration = Duration::from_secs(2);

/// The consumer group of a subscription in its application's stream.
pub fn group(uid: &str) -> String {
    format!("webhook:{uid}")
}

/// Why a subscription's task stopped (it starts again at the next sweep).
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error("event log")]
    Log(#[source] BusError),
    #[error("registry")]
    Registry(#[source] RegistryError),
    #[error("the subscription was deleted")]
    Gone,
}

/// The checks of a spec that need the network stack, before it is stored: the URL (an http(s)
/// URL without user info that the outbound address policy does not refuse outright) and the
/// CA certificates.
pub fn check_spec(policy: &OutboundPolicy, spec: &WebhookSpec) -> Result<(), ValidationError> {
    let url = url::Url::parse(&spec.url)
        .map_err(|e| ValidationError(format!("spec.url: not a URL ({e})")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(ValidationError("spec.url: only http and https URLs".into()));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(ValidationError(
            "spec.url: no user info in the URL (use spec.headers or spec.secret)".into(),
        ));
    }
    if url.host().is_none() {
        return Err(ValidationError("spec.url: no host".into()));
    }
    policy
        .check_url(&url)
        .map_err(|e| ValidationError(format!("spec.url: {e}")))?;
    if let Some(pem) = &spec.ca_pem {
        parse_roots(pem).map_err(|e| ValidationError(format!("spec.caPem: {e}")))?;
        if url.scheme() != "https" {
            return Err(ValidationError("spec.caPem: only for https URLs".into()));
        }
    }
    Ok(())
}

/// Puts a new subscription's group where its spec says it starts: `now` commits the stream's
/// end, so that a restart, or another node, starts there too (nothing to do for `earliest`).
pub async fn start_position(
    log: &dyn EventLog,
    app_uid: &str,
    webhook: &Webhook,
) -> Result<(), BusError> {
    if webhook.spec.start_at != StartAt::Now {
        return Ok(());
    }
    let key = StreamKey::new(webhook.metadata.application.clone(), app_uid.to_string());
    let end = log.consume(&key, StartFrom::Latest).await?.end();
    log.commit(&key, &group(&webhook.metadata.uid), end).await
}

/// Fills in `committed` and `lag` of a status from the event log.
pub async fn position(
    log: &dyn EventLog,
    app_uid: &str,
    webhook: &Webhook,
    status: &mut WebhookStatus,
) -> Result<(), BusError> {
    let key = StreamKey::new(webhook.metadata.application.clone(), app_uid.to_string());
    let committed: Option<Offset> = log.committed(&key, &group(&webhook.metadata.uid)).await?;
    let end = log.consume(&key, StartFrom::Latest).await?.end();
    status.committed = committed;
    status.lag = Some(end.saturating_sub(committed.unwrap_or(0)));
    Ok(())
}

/// A running subscription task.
struct Running {
    task: JoinHandle<Result<(), DeliveryError>>,
    cancel: CancellationToken,
    /// When the hold was last taken or renewed.
    held: tokio::time::Instant,
}

/// Runs the subscriptions this node holds (on every node).
pub struct WebhookDelivery {
    store: Arc<dyn WebhookStore>,
    log: Arc<dyn EventLog>,
    client: OutboundClient,
    /// This process, as a holder (unique per start).
    holder: String,
}

impl WebhookDelivery {
    pub fn new(
        store: Arc<dyn WebhookStore>,
        log: Arc<dyn EventLog>,
        client: OutboundClient,
        instance: &str,
    ) -> Self {
        Self {
            store,
            log,
            client,
            holder: format!("{instance}/{}", uuid::Uuid::new_v4()),
        }
    }

    /// Runs until `shutdown` turns true; then stops every task and releases the holds.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut changed = self.store.subscribe_webhooks();
        let mut running: HashMap<String, Running> = HashMap::new();
        let mut renewed = tokio::time::Instant::now();
        loop {
            let renew = renewed.elapsed() >= RENEW;
            if renew {
                renewed = tokio::time::Instant::now();
            }
            if let Err(e) = self.round(&mut running, renew).await {
                tracing::warn!(error = %drover_model::error::chain(&e), "webhooks: cannot list subscriptions; will retry");
            }
            tokio::select! {
                _ = changed.changed() => {}
                _ = tokio::time::sleep(SWEEP) => {}
                _ = shutdown.changed() => {}
            }
            if *shutdown.borrow() {
                break;
            }
        }
        for (uid, r) in running {
            r.cancel.cancel();
            let _ = r.task.await;
            let _ = self.store.release_webhook(&uid, &self.holder).await;
        }
    }

    /// One sweep: stops tasks of deleted or lost subscriptions, renews holds (when `renew`),
    /// takes free subscriptions and starts their tasks.
    async fn round(
        &self,
        running: &mut HashMap<String, Running>,
        renew: bool,
    ) -> Result<(), RegistryError> {
        // A hold that could not be renewed for a while may be another node's by now: stop
        // before it runs out (while the registry cannot be reached, nothing is delivered).
        let stale: Vec<String> = running
            .iter()
            .filter(|(_, r)| r.held.elapsed() >= HOLD - RENEW)
            .map(|(uid, _)| uid.clone())
            .collect();
        for uid in stale {
            if let Some(r) = running.remove(&uid) {
                tracing::warn!(webhook = %uid, "webhook: hold not renewed in time; stopping its delivery");
                r.cancel.cancel();
                let _ = r.task.await;
            }
        }
        let subs = self.store.all_webhooks().await?;
        let live: HashMap<&str, &StoredWebhook> = subs
            .iter()
            .map(|s| (s.webhook.metadata.uid.as_str(), s))
            .collect();
        let mut gone = Vec::new();
        for (uid, r) in running.iter_mut() {
            let mut lost = !live.contains_key(uid.as_str());
            if !lost && renew {
                if self.store.hold_webhook(uid, &self.holder, HOLD).await? {
                    r.held = tokio::time::Instant::now();
                } else {
                    lost = true;
                }
            }
            if lost || r.task.is_finished() {
                gone.push(uid.clone());
            }
        }
        for uid in gone {
            if let Some(r) = running.remove(&uid) {
                r.cancel.cancel();
                match r.task.await {
                    Ok(Err(e)) => {
                        tracing::debug!(webhook = %uid, error = %drover_model::error::chain(&e), "webhook task stopped")
                    }
                    Err(e) if e.is_panic() => {
                        tracing::error!(webhook = %uid, "webhook task panicked")
                    }
                    _ => {}
                }
                let _ = self.store.release_webhook(&uid, &self.holder).await;
            }
        }
        for sub in subs {
            let uid = sub.webhook.metadata.uid.clone();
            let other = sub.held_by.as_ref().is_some_and(|h| *h != self.holder);
            if running.contains_key(&uid) || other {
                continue;
            }
            if !self.store.hold_webhook(&uid, &self.holder, HOLD).await? {
                continue;
            }
            let client = match &sub.webhook.spec.ca_pem {
                Some(pem) => match self.client.with_roots(pem) {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!(webhook = %sub.webhook.metadata.name, error = %e, "webhook: cannot use its CA certificates");
                        let _ = self.store.release_webhook(&uid, &self.holder).await;
                        continue;
                    }
                },
                None => self.client.clone(),
            };
            tracing::debug!(webhook = %sub.webhook.metadata.name, app = %sub.webhook.metadata.application, "webhook: delivering");
            let cancel = CancellationToken::new();
            let d = delivery::Delivery {
                store: self.store.clone(),
                log: self.log.clone(),
                client,
                sub,
                cancel: cancel.clone(),
            };
            running.insert(
                uid,
                Running {
                    task: tokio::spawn(d.run()),
                    cancel,
                    held: tokio::time::Instant::now(),
                },
            );
        }
        Ok(())
    }
}
