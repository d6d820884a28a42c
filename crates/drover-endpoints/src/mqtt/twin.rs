//! Twins over MQTT, in every dialect (`$`-topics are no channel anywhere):
//! - publish `$twin/get` (any payload): the twin comes back on `$twin/current` as
//!   `{"desired": {…, "$version": n}, "reported": {…, "$version": m}}`;
//! - publish `$twin/reported` with a JSON merge patch: applied to the reported properties
//!   (QoS 1: the PUBACK follows the commit; a patch that is not a JSON object, or breaks the
//!   twin's limits, is refused with 0x99 Payload format invalid and a log line naming why);
//! - subscribe `$twin/desired`: desired changes arrive as they happen, each the merge patch
//!   with `"$version"`; right after subscribing (`$twin/#` or `$twin/current` too) the whole
//!   twin arrives on `$twin/current`, so a device that was offline catches up.
//!
//! Messages to the device travel as commands named after their topic (the relay of twin
//! changes sends `$twin/desired` through the command router, wherever the device is connected).

use bytes::Bytes;
use drover_bus::commands::Command;
use drover_model::twin::{Section, CURRENT_TOPIC, DESIRED_TOPIC, GET_TOPIC, REPORTED_TOPIC};
use drover_mqtt::{Inbound, PublishRefusal, QoS};
use drover_registry::RegistryError;
use serde_json::{Map, Value};

use super::{DeviceConnection, DevicePolicy};

/// Whether a topic is one of the twin topics a device publishes to.
pub(super) fn is_twin_topic(topic: &str) -> bool {
    topic.starts_with("$twin/")
}

/// Filters a device may subscribe to for its twin.
pub(super) fn is_twin_filter(filter: &str) -> bool {
    filter == "$twin/#" || filter == DESIRED_TOPIC || filter == CURRENT_TOPIC
}

impl DevicePolicy {
    /// A PUBLISH on a twin topic.
    pub(super) async fn twin_publish(
        &self,
        conn: &DeviceConnection,
        msg: Inbound,
    ) -> Result<(), PublishRefusal> {
        let (app, device) = (conn.device.app_name(), conn.device.device_name());
        if msg.topic == GET_TOPIC {
            return self.send_current_twin(conn).await;
        }
        if msg.topic != REPORTED_TOPIC {
            tracing::info!(app, device, topic = %msg.topic,
                "publish refused: the twin topics are $twin/get and $twin/reported");
            return Err(PublishRefusal::TopicNameInvalid);
        }
        let patch: Map<String, Value> = serde_json::from_slice(&msg.payload).map_err(|e| {
            tracing::info!(app, device, "twin report refused: not a JSON object: {e}");
            PublishRefusal::PayloadFormatInvalid
        })?;
        self.twins
            .patch_reported(app, device, &patch)
            .await
            .map(|_| ())
            .map_err(|e| twin_refusal(app, device, "twin report", e))
    }

    /// Sends the whole twin on `$twin/current`, if the device subscribes to it.
    pub(super) async fn send_current_twin(
        &self,
        conn: &DeviceConnection,
    ) -> Result<(), PublishRefusal> {
        let (app, device) = (conn.device.app_name(), conn.device.device_name());
        let twin = self
            .twins
            .device_twin(app, device)
            .await
            .map_err(|e| twin_refusal(app, device, "twin read", e))?;
        let body = serde_json::json!({
            "desired": twin.versioned(Section::Desired),
            "reported": twin.versioned(Section::Reported),
        });
        let command = Command {
            id: uuid::Uuid::new_v4().to_string(),
            app: app.to_string(),
            app_uid: conn.device.app_uid().to_string(),
            device: device.to_string(),
            name: CURRENT_TOPIC.to_string(),
            payload: Bytes::from(body.to_string()),
            content_type: Some("application/json".into()),
            expects_reply: false,
        };
        let key = (conn.device.app_uid().to_string(), device.to_string());
        // Only this node's session: a device that does not subscribe gets nothing.
        if let Err(e) = self.commands.send(command, &[key], None) {
            tracing::debug!(app, device, "twin not sent: {e}");
        }
        Ok(())
    }
}

/// The QoS a twin subscription is granted.
pub(super) fn twin_qos(requested: QoS) -> QoS {
    requested.min(QoS::AtLeastOnce)
}

fn twin_refusal(app: &str, device: &str, what: &str, e: RegistryError) -> PublishRefusal {
    match e {
        RegistryError::BadRequest(why) => {
            tracing::info!(app, device, "{what} refused: {why}");
            PublishRefusal::PayloadFormatInvalid
        }
        RegistryError::NotFound(why) => {
            tracing::info!(app, device, "{what} refused: {why}");
            PublishRefusal::NotAuthorized
        }
        other => {
            tracing::warn!(app, device, error = %drover_model::error::chain(&other), "{what} failed");
            PublishRefusal::ImplementationSpecific
        }
    }
}
