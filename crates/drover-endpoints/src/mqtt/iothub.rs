//! Devices on Azure's IoT Hub SDKs (the dialect is parsed in [`crate::azure`]): a CONNECT whose
//! user name is `{hub}/{deviceId}/?api-version=…` authenticates with a SAS token (or a client
//! certificate) as device `deviceId` of the application the hub's first DNS label names; then
//! - telemetry on `devices/{id}/messages/events/{bag}` becomes one event (channel `telemetry`;
//!   `$.ct` its content type, the other system properties extensions such as `messageid`, each
//!   application property an extension);
//! - `$iothub/twin/GET` and `$iothub/twin/PATCH/properties/reported` are answered on
//!   `$iothub/twin/res/{status}/?$rid=…`, desired changes arrive on
//!   `$iothub/twin/PATCH/properties/desired/?$version=…`;
//! - commands become direct methods when the caller waits for a reply (`$iothub/methods/POST/…`,
//!   the device's `$iothub/methods/res/{status}` is the reply) and cloud-to-device messages
//!   otherwise (`devices/{id}/messages/devicebound/{bag}`).

use bytes::Bytes;
use drover_bus::commands::{Command, Reply};
use drover_model::twin::{Section, DESIRED_TOPIC};
use drover_mqtt::{Inbound, PublishRefusal, QoS, SubscribeRefusal, SubscribeRequest};
use drover_registry::RegistryError;
use serde_json::{Map, Value};

use super::{DeviceConnection, DevicePolicy};
use crate::azure::{self, Publish};
use crate::event::{detect_content_type, telemetry, Message};

/// Largest telemetry payload (IoT Hub's limit).
pub const MAX_TELEMETRY: usize = 256 * 1024;

/// An Azure device's SUBSCRIBE: the dialect's four filters only (so IoT Hub's limit of 5
/// subscriptions holds by itself); QoS 2 is granted 1, as IoT Hub does.
pub(super) fn subscribe(
    conn: &DeviceConnection,
    req: &SubscribeRequest,
) -> Vec<Result<QoS, SubscribeRefusal>> {
    let (app, device) = (conn.device.app_name(), conn.device.device_name());
    req.filters
        .iter()
        .map(|f| match azure::parse_subscription(&f.filter, device) {
            Ok(_) => Ok(f.options.qos.min(QoS::AtLeastOnce)),
            Err(e) => {
                tracing::info!(app, device, "subscription refused: {e}");
                Err(SubscribeRefusal::TopicFilterInvalid)
            }
        })
        .collect()
}

/// What an Azure device's PUBLISH asks for: an event, or something answered on its own.
pub(super) fn is_request(topic: &str) -> bool {
    topic.starts_with("$iothub/")
}

/// The topic and QoS a command takes to an Azure device (`None`: nothing it can receive).
/// IoT Hub's largest cloud-to-device message.
pub(super) const MAX_CLOUD_TO_DEVICE: usize = 64 * 1024;
/// IoT Hub's largest direct method request.
pub(super) const MAX_METHOD: usize = 128 * 1024;

/// The payload limit of a command to an Azure device: methods and cloud-to-device messages
/// have IoT Hub's; twin messages are bounded by the twin's own limits.
pub(super) fn payload_limit(c: &Command) -> Option<usize> {
    if c.name.starts_with('$') {
        None
    } else if c.expects_reply {
        Some(MAX_METHOD)
    } else {
        Some(MAX_CLOUD_TO_DEVICE)
    }
}

pub(super) fn command_topic(device: &str, c: &Command) -> Option<(String, QoS)> {
    if c.name.starts_with("$iothub/") {
        return Some((c.name.clone(), QoS::AtLeastOnce));
    }
    if c.name == DESIRED_TOPIC {
        let patch: Value = serde_json::from_slice(&c.payload).ok()?;
        let version = patch.get("$version")?.as_u64()?;
        return Some((azure::desired_patch_topic(version), QoS::AtLeastOnce));
    }
    if c.name.starts_with('$') {
        return None;
    }
    if c.expects_reply {
        // IoT Hub sends methods at QoS 0.
        return Some((azure::method_topic(&c.name, &c.id), QoS::AtMostOnce));
    }
    let mut bag = vec![("$.mid".to_string(), c.id.clone())];
    if let Some(ct) = &c.content_type {
        bag.push(("$.ct".to_string(), ct.clone()));
    }
    bag.push(("command".to_string(), c.name.clone()));
    Some((azure::cloud_to_device_topic(device, &bag), QoS::AtLeastOnce))
}

impl DevicePolicy {
    /// The event of an Azure device's telemetry.
    pub(super) fn iothub_event(
        &self,
        conn: &DeviceConnection,
        msg: Inbound,
    ) -> Result<drover_model::Event, PublishRefusal> {
        let (app, device) = (conn.device.app_name(), conn.device.device_name());
        let properties = match azure::parse_publish(&msg.topic, device) {
            Ok(Publish::Telemetry { properties }) => properties,
            Ok(_) => return Err(PublishRefusal::TopicNameInvalid),
            Err(e) => {
                tracing::info!(app, device, "publish refused: {e}");
                return Err(PublishRefusal::TopicNameInvalid);
            }
        };
        if msg.payload.len() > MAX_TELEMETRY {
            tracing::info!(
                app,
                device,
                size = msg.payload.len(),
                "publish refused: IoT Hub telemetry is at most {MAX_TELEMETRY} bytes"
            );
            return Err(PublishRefusal::QuotaExceeded);
        }
        let mut content_type = None;
        let mut extensions = Vec::with_capacity(properties.len());
        for (k, v) in properties {
            if k == "$.ct" {
                content_type = Some(v);
            } else if let Some(name) = azure::system_property_extension(&k) {
                extensions.push((name.to_string(), v));
            } else if !k.starts_with("$.") {
                extensions.push((k, v));
            }
        }
        let message = Message {
            channel: "telemetry".to_string(),
            content_type: detect_content_type(content_type.as_deref(), &msg.payload),
            data_schema: None,
            extensions,
            data: msg.payload,
        };
        Ok(telemetry(
            &conn.device,
            &conn.device.device,
            message,
            &self.instance,
        ))
    }

    /// `$iothub/...` from an Azure device: twin requests and method replies.
    pub(super) async fn iothub_request(
        &self,
        conn: &DeviceConnection,
        msg: Inbound,
    ) -> Result<(), PublishRefusal> {
        let (app, device) = (conn.device.app_name(), conn.device.device_name());
        let request = azure::parse_publish(&msg.topic, device).map_err(|e| {
            tracing::info!(app, device, "publish refused: {e}");
            PublishRefusal::TopicNameInvalid
        })?;
        match request {
            Publish::TwinGet { rid } => {
                let (status, body) = match self.twins.device_twin(app, device).await {
                    Ok(twin) => (
                        200,
                        serde_json::json!({
                            "desired": twin.versioned(Section::Desired),
                            "reported": twin.versioned(Section::Reported),
                        }),
                    ),
                    Err(e) => error_answer(app, device, "twin read", e),
                };
                self.answer(conn, azure::twin_response_topic(status, &rid, None), body);
                Ok(())
            }
            Publish::ReportedPatch { rid } => {
                let (status, version, body) = match report(&msg.payload) {
                    Err(why) => (400, None, serde_json::json!({"message": why})),
                    Ok(patch) => match self.twins.patch_reported(app, device, &patch).await {
                        Ok(up) => (204, Some(up.twin.reported_version), Value::Null),
                        Err(e) => {
                            let (status, body) = error_answer(app, device, "twin report", e);
                            (status, None, body)
                        }
                    },
                };
                let topic = azure::twin_response_topic(status, &rid, version);
                self.answer(conn, topic, body);
                Ok(())
            }
            Publish::MethodResponse { status, rid } => {
                let reply = Reply {
                    status,
                    payload: msg.payload,
                    content_type: Some("application/json".into()),
                };
                self.commands
                    .reply(conn.device.app_uid(), device, &rid, reply)
                    .map_err(|e| {
                        tracing::info!(app, device, "method reply refused: {e}");
                        PublishRefusal::NotAuthorized
                    })
            }
            Publish::Telemetry { .. } => Err(PublishRefusal::TopicNameInvalid),
        }
    }

    /// Sends an answer on `topic` to this device's session, if it subscribes.
    fn answer(&self, conn: &DeviceConnection, topic: String, body: Value) {
        let payload = match body {
            Value::Null => Bytes::new(),
            v => Bytes::from(v.to_string()),
        };
        let command = Command {
            id: uuid::Uuid::new_v4().to_string(),
            app: conn.device.app_name().to_string(),
            app_uid: conn.device.app_uid().to_string(),
            device: conn.device.device_name().to_string(),
            name: topic,
            payload,
            content_type: Some("application/json".into()),
            expects_reply: false,
        };
        let key = (
            conn.device.app_uid().to_string(),
            conn.device.device_name().to_string(),
        );
        if let Err(e) = self.commands.send(command, &[key], None) {
            tracing::debug!(
                app = conn.device.app_name(),
                device = conn.device.device_name(),
                "twin answer not sent (the device does not subscribe to $iothub/twin/res/#): {e}"
            );
        }
    }
}

/// A reported patch: a JSON object, or why not.
fn report(payload: &[u8]) -> Result<Map<String, Value>, String> {
    serde_json::from_slice(payload).map_err(|e| format!("the patch is not a JSON object: {e}"))
}

/// The status and body IoT Hub answers a failed twin request with.
fn error_answer(app: &str, device: &str, what: &str, e: RegistryError) -> (u16, Value) {
    let status = match &e {
        RegistryError::BadRequest(_) => 400,
        RegistryError::NotFound(_) => 404,
        _ => 500,
    };
    if status == 500 {
        tracing::warn!(app, device, error = %drover_model::error::chain(&e), "{what} failed");
    } else {
        tracing::info!(app, device, "{what} refused: {e}");
    }
    (status, serde_json::json!({"message": e.to_string()}))
}
