//! The server's background tasks: following the registry's change feed (what registry changes
//! mean for live traffic), reporting expired commands, pruning old change events.

use std::sync::Arc;
use std::time::Duration;

use drover_auth::device::DeviceDirectory;
use drover_bus::commands::CommandRouter;
use drover_bus::{EventLog, StreamKey};
use drover_endpoints::mqtt::DevicePolicy;
use drover_model::Kind;
use drover_mqtt::MqttServer;
use drover_registry::Registry;

/// Follows the registry's change feed and applies what it means for live traffic:
/// - an application deleted for good loses its event stream;
/// - a device that is deleted, disabled or whose credentials changed is disconnected (it must
///   authenticate again, with what the registry says now);
/// - every device of an application that is disabled or being deleted is disconnected.
pub(super) async fn follow_registry_changes(
    registry: Arc<dyn Registry>,
    directory: Arc<dyn DeviceDirectory>,
    log: Arc<dyn EventLog>,
    mqtt: Arc<MqttServer<DevicePolicy>>,
) {
    let mut rx = registry.subscribe();
    let mut since = *rx.borrow_and_update();
    loop {
        let batch = match registry.changes_since(since, 500).await {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!("cannot read registry changes: {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if batch.is_empty() {
            if rx.changed().await.is_err() {
                return;
            }
            continue;
        }
        for c in batch {
            since = c.revision;
            match (c.kind, &c.device) {
                (Kind::Application, _) => {
                    application_changed(&registry, &directory, &log, &mqtt, &c).await
                }
                (Kind::Device, Some(device)) => {
                    let relevant = matches!(
                        c.path.as_str(),
                        "." | ".metadata"
                            | ".spec.core"
                            | ".spec.authentication"
                            | ".spec.credentials"
                            | drover_registry::REVOCATION_PATH
                    );
                    if !relevant {
                        continue;
                    }
                    let live = match directory.device(&c.application, device).await {
                        Ok(Some(d)) => {
                            d.metadata.uid == c.uid
                                && !d.is_deleting()
                                && !drover_model::spec::disabled(&d.spec)
                        }
                        Ok(None) => false,
                        Err(_) => continue,
                    };
                    let revoked = c.path == drover_registry::REVOCATION_PATH;
                    let credentials = revoked
                        || c.path.starts_with(".spec.authentication")
                        || c.path == ".spec.credentials";
                    if !live || credentials {
                        let why = match (live, revoked) {
                            (false, _) => "it was deleted or disabled",
                            (true, true) => "a certificate of it was revoked",
                            (true, false) => "its credentials changed",
                        };
                        kick(&mqtt, &c.application, device, why);
                    }
                }
                (Kind::Device, None) => {}
            }
        }
    }
}

async fn application_changed(
    registry: &Arc<dyn Registry>,
    directory: &Arc<dyn DeviceDirectory>,
    log: &Arc<dyn EventLog>,
    mqtt: &Arc<MqttServer<DevicePolicy>>,
    c: &drover_registry::Change,
) {
    let app = match directory.application(&c.application).await {
        Ok(app) => app.filter(|a| a.metadata.uid == c.uid),
        Err(_) => return,
    };
    match app {
        None if c.path == "." => {
            let key = StreamKey::new(c.application.clone(), c.uid.clone());
            match log.delete_stream(&key).await {
                Ok(()) => {
                    tracing::info!(app = %c.application, "deleted the event stream of a deleted application")
                }
                Err(e) => tracing::warn!(app = %c.application, "cannot delete event stream: {e}"),
            }
        }
        Some(app) if app.is_deleting() || drover_model::spec::disabled(&app.spec) => {
            let system = drover_model::Principal::SystemAdmin("drover".into());
            if let Ok(devices) = registry
                .list_devices(&system, &c.application, &Default::default())
                .await
            {
                for d in devices.items {
                    kick(
                        mqtt,
                        &c.application,
                        &d.metadata.name,
                        "its application was disabled or is being deleted",
                    );
                }
            }
        }
        _ => {}
    }
}

/// Disconnects a device's MQTT connection, if it has one.
fn kick(mqtt: &MqttServer<DevicePolicy>, app: &str, device: &str, why: &str) {
    if let Some(session) = mqtt.session(&format!("{app}/{device}")) {
        if session.disconnect(drover_mqtt::ReasonCode::NOT_AUTHORIZED) {
            tracing::info!(app, device, "disconnected the device: {why}");
        }
    }
}

/// Reports queued commands whose time to live ended, as events in their application's stream.
pub(super) async fn expire_commands(
    commands: Arc<CommandRouter>,
    log: Arc<dyn EventLog>,
    instance: String,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        for c in commands.expire(std::time::Instant::now()) {
            tracing::info!(app = %c.app, device = %c.device, command = %c.name, "queued command expired undelivered");
            let event = drover_model::Event {
                id: uuid::Uuid::new_v4().to_string(),
                ty: drover_model::event::COMMAND_EXPIRED_TYPE.to_string(),
                channel: c.name.clone(),
                time: chrono::Utc::now(),
                content_type: c.content_type.clone(),
                data_schema: None,
                application: c.app.clone(),
                application_uid: c.app_uid.clone(),
                device: c.device.clone(),
                device_uid: String::new(),
                sender: c.device.clone(),
                sender_uid: String::new(),
                instance: instance.clone(),
                extensions: vec![("commandid".into(), c.id.clone())],
                data: c.payload.clone(),
            };
            if let Err(e) = log
                .append(&StreamKey::new(c.app.clone(), c.app_uid.clone()), event)
                .await
            {
                tracing::warn!("cannot record an expired command: {e}");
            }
        }
    }
}

/// Prunes registry change events past their retention, at start and then hourly.
pub(super) async fn prune_changes(registry: Arc<dyn Registry>, days: u32) {
    let mut tick = tokio::time::interval(Duration::from_secs(3600));
    loop {
        tick.tick().await;
        let before = chrono::Utc::now() - chrono::Duration::days(i64::from(days));
        match registry.prune_changes(before).await {
            Ok(0) => {}
            Ok(n) => tracing::info!("pruned {n} registry change events older than {days} days"),
            Err(e) => tracing::warn!("cannot prune registry change events: {e}"),
        }
    }
}
