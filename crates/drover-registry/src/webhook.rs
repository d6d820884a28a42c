//! Webhook subscriptions in the registry ([`WebhookStore`]): what the management API needs
//! (create, read, delete, status, dead letters — each an access decision made here) and what the
//! delivery needs (every subscription with its secret, a hold per subscription so that one node
//! delivers it, progress and dead letters).
//!
//! Subscriptions are no resources of the change feed: writing one moves no revision (as twin
//! writes do not). Nodes find new and deleted subscriptions by listing them
//! ([`WebhookStore::all_webhooks`], every few seconds, and at once on this node through
//! [`WebhookStore::subscribe_webhooks`]).

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use drover_model::webhook::{DeadLetter, Webhook, WebhookInput, WebhookStatus};
use drover_model::Principal;

use crate::Result;

/// Dead letters kept per subscription (the oldest go first).
pub const MAX_DEAD_LETTERS: u64 = 1000;
/// Most dead letters one listing returns.
pub const MAX_DEAD_LETTER_PAGE: usize = 1000;

/// A subscription as the delivery needs it: with its secret and its application's uid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredWebhook {
    /// `spec.secret` is set when the subscription has one.
    pub webhook: Webhook,
    /// The application's uid (the event stream's key).
    pub app_uid: String,
    /// Whether the Event Grid handshake was done.
    pub validated: bool,
    /// Who holds the subscription, while the hold runs.
    pub held_by: Option<String>,
}

/// What a delivery reports about its subscription (counters are added).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WebhookProgress {
    /// Events delivered since the last report.
    pub delivered: u64,
    /// Events given up since the last report.
    pub failed: u64,
    /// Attempts at the request being retried now (0: none).
    pub retrying: u32,
    /// A new last error.
    pub error: Option<(String, DateTime<Utc>)>,
    /// When the last delivery succeeded, if since the last report.
    pub delivered_at: Option<DateTime<Utc>>,
    /// The Event Grid handshake succeeded.
    pub validated: bool,
}

/// Webhook subscriptions and their delivery state.
#[async_trait]
pub trait WebhookStore: Send + Sync + 'static {
    /// Creates a subscription (write permission on the application; at most
    /// `MAX_WEBHOOKS_PER_APP`; the name unique in the application).
    async fn create_webhook(
        &self,
        who: &Principal,
        app: &str,
        input: WebhookInput,
    ) -> Result<Webhook>;
    async fn list_webhooks(&self, who: &Principal, app: &str) -> Result<Vec<Webhook>>;
    async fn get_webhook(&self, who: &Principal, app: &str, name: &str) -> Result<Webhook>;
    /// Deletes a subscription and its dead letters (write permission).
    async fn delete_webhook(&self, who: &Principal, app: &str, name: &str) -> Result<()>;
    /// The subscription, its application's uid and the state of its delivery (`lag` and
    /// `committed` are the event log's to fill in).
    async fn webhook_status(
        &self,
        who: &Principal,
        app: &str,
        name: &str,
    ) -> Result<(Webhook, String, WebhookStatus)>;
    /// Dead letters after `after` (a `seq`), oldest first, at most `limit`.
    async fn dead_letters(
        &self,
        who: &Principal,
        app: &str,
        name: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<DeadLetter>>;

    /// Every subscription, for the delivery.
    async fn all_webhooks(&self) -> Result<Vec<StoredWebhook>>;
    /// Takes (or keeps) the subscription for `holder` for `hold`, unless another holder's hold
    /// still runs. Returns whether `holder` has it (false also when it is gone).
    async fn hold_webhook(&self, uid: &str, holder: &str, hold: Duration) -> Result<bool>;
    /// Gives the subscription up (another node may take it at once).
    async fn release_webhook(&self, uid: &str, holder: &str) -> Result<()>;
    /// Records progress; returns false when the subscription is gone.
    async fn record_webhook_progress(&self, uid: &str, progress: &WebhookProgress) -> Result<bool>;
    /// Stores a dead letter (and drops the subscription's oldest beyond [`MAX_DEAD_LETTERS`]).
    async fn add_dead_letter(&self, uid: &str, app: &str, letter: &DeadLetter) -> Result<()>;
    /// Moves whenever this process created or deleted a subscription.
    fn subscribe_webhooks(&self) -> tokio::sync::watch::Receiver<u64>;
}
