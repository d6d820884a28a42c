//! Twin changes leaving the registry. The relay takes the twin outbox's rows (written in the
//! transaction of each change, see `drover_registry::twin`), appends one CloudEvent per change to
//! the application's stream, and hands each desired change to the device's connection
//! wherever in the cluster it is (through the command router, as a command named
//! [`DESIRED_PUSH`]; the endpoint turns it into its protocol's message). A device that is not
//! connected gets nothing pushed: it reads its twin when it connects.
//!
//! Every node runs a relay. Rows are claimed for [`HOLD`]; a node that dies with claimed rows
//! leaves them to another after the hold, so a change can be appended twice but never lost. The
//! event's id is stable (`twin-<device uid>-<section>-<version>`): consumers tell a repeat by it.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use drover_bus::commands::{Command, CommandRouter};
use drover_bus::{BusError, EventLog, StreamKey};
use drover_model::event::{TWIN_DESIRED_TYPE, TWIN_REPORTED_TYPE};
use drover_model::twin::Section;
use drover_model::Event;
use drover_registry::{RegistryError, TwinChange, TwinStore};
use tokio::sync::watch;

/// Name of the command that carries a desired-properties patch to a device (the topic the
/// device endpoint sends it on). Commands from applications cannot have it (their names may
/// not contain `/`).
pub const DESIRED_PUSH: &str = drover_model::twin::DESIRED_TOPIC;
/// How long a claimed batch is this node's.
pub const HOLD: Duration = Duration::from_secs(30);
/// How often a relay looks for rows other nodes left (or wrote: only the writer's own relay is
/// woken at once).
pub const SWEEP: Duration = Duration::from_secs(2);
/// Rows claimed at once.
const BATCH: usize = 100;

/// Why a relay round stopped.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("cannot read the twin outbox")]
    Registry(#[source] RegistryError),
    #[error("cannot append twin changes to the event log")]
    Log(#[source] BusError),
}

/// The CloudEvent of a twin change: type by section, channel `twin/<section>`, data
/// `{"patch": <the merge patch as sent>, "version": <the section's new version>}`.
pub fn twin_event(change: &TwinChange, instance: &str) -> Event {
    let ty = match change.section {
        Section::Desired => TWIN_DESIRED_TYPE,
        _ => TWIN_REPORTED_TYPE,
    };
    let section = change.section.as_str();
    let data = serde_json::json!({"patch": change.patch, "version": change.version});
    Event {
        id: format!("twin-{}-{section}-{}", change.device_uid, change.version),
        ty: ty.to_string(),
        channel: format!("twin/{section}"),
        time: change.time,
        content_type: Some("application/json".to_string()),
        data_schema: None,
        application: change.application.clone(),
        application_uid: change.application_uid.clone(),
        device: change.device.clone(),
        device_uid: change.device_uid.clone(),
        sender: change.device.clone(),
        sender_uid: change.device_uid.clone(),
        instance: instance.to_string(),
        extensions: Vec::new(),
        data: Bytes::from(data.to_string()),
    }
}

/// The command that pushes a desired change: the patch with `"$version"` in it (the shape
/// Azure's devices expect; the Drogue dialect sends it as is).
pub fn desired_push(change: &TwinChange) -> Command {
    let mut patch = change.patch.clone();
    patch.insert("$version".into(), change.version.into());
    Command {
        id: uuid::Uuid::new_v4().to_string(),
        app: change.application.clone(),
        app_uid: change.application_uid.clone(),
        device: change.device.clone(),
        name: DESIRED_PUSH.to_string(),
        payload: Bytes::from(serde_json::Value::Object(patch).to_string()),
        content_type: Some("application/json".to_string()),
        expects_reply: false,
    }
}

/// Appends the twin outbox to the event log and pushes desired changes.
pub struct TwinRelay {
    twins: Arc<dyn TwinStore>,
    log: Arc<dyn EventLog>,
    router: Option<Arc<CommandRouter>>,
    instance: String,
}

impl TwinRelay {
    pub fn new(
        twins: Arc<dyn TwinStore>,
        log: Arc<dyn EventLog>,
        router: Option<Arc<CommandRouter>>,
        instance: impl Into<String>,
    ) -> Self {
        Self {
            twins,
            log,
            router,
            instance: instance.into(),
        }
    }

    /// Relays until `shutdown` turns true: at once when this node wrote a change, and every
    /// [`SWEEP`] for the rest.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut written = self.twins.subscribe_twins();
        loop {
            match self.relay_batch().await {
                Ok(n) if n == BATCH => continue,
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %drover_model::error::chain(&e), "twin changes not relayed yet; will retry")
                }
            }
            tokio::select! {
                _ = written.changed() => {}
                _ = tokio::time::sleep(SWEEP) => {}
                _ = shutdown.changed() => return,
            }
            if *shutdown.borrow() {
                return;
            }
        }
    }

    /// One round: claims a batch, appends each change in order, pushes desired ones, forgets
    /// what was appended. Returns how many rows it took.
    pub async fn relay_batch(&self) -> Result<usize, RelayError> {
        let batch = self
            .twins
            .claim_twin_changes(BATCH, HOLD)
            .await
            .map_err(RelayError::Registry)?;
        let mut done = Vec::with_capacity(batch.len());
        let mut failed = None;
        for change in &batch {
            match self.relay(change).await {
                Ok(()) => done.push(change.seq),
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        if !done.is_empty() {
            self.twins
                .forget_twin_changes(&done)
                .await
                .map_err(RelayError::Registry)?;
        }
        match failed {
            Some(e) => Err(RelayError::Log(e)),
            None => Ok(batch.len()),
        }
    }

    /// Appends one change (a stream that is gone or refuses it for good drops it, with a
    /// warning) and pushes it when it is a desired change.
    async fn relay(&self, change: &TwinChange) -> Result<(), BusError> {
        let key = StreamKey::new(&change.application, &change.application_uid);
        match self
            .log
            .append(&key, twin_event(change, &self.instance))
            .await
        {
            Ok(_) => {}
            Err(e @ (BusError::Invalid(_) | BusError::TooLarge(_))) => {
                tracing::warn!(app = %change.application, device = %change.device,
                    section = change.section.as_str(), version = change.version,
                    error = %drover_model::error::chain(&e), "twin change dropped: its stream does not take it");
            }
            Err(e) => return Err(e),
        }
        if change.section == Section::Desired {
            self.push(change).await;
        }
        Ok(())
    }

    async fn push(&self, change: &TwinChange) {
        let Some(router) = &self.router else { return };
        let target = (change.application_uid.clone(), change.device.clone());
        // Not connected: nothing to do (the device reads its twin when it connects).
        if let Err(e) = router.route(desired_push(change), &[target], None).await {
            tracing::debug!(app = %change.application, device = %change.device, error = %e,
                "desired change not pushed");
        }
    }
}
