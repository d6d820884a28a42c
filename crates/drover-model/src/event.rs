//! Events: what devices send, as the platform carries it from endpoints to integrations. One
//! event is one CloudEvent (1.0) in Drogue's dialect; its wire forms (JSON structured mode,
//! binary mode) belong to the crates that speak them.

use bytes::Bytes;
use chrono::{DateTime, Utc};

/// CloudEvent type of device telemetry.
pub const EVENT_TYPE: &str = "io.drogue.event.v1";
/// CloudEvent type of connection changes (`{"connected": bool}`).
pub const CONNECTION_TYPE: &str = "io.drogue.connection.v1";

/// CloudEvent type of a command sent to a device (recorded for audit).
pub const COMMAND_TYPE: &str = "io.drogue.command.v1";
/// CloudEvent type of a device's reply to a command.
pub const COMMAND_REPLY_TYPE: &str = "io.drogue.command.response.v1";
/// CloudEvent type of a queued command whose time to live ended undelivered.
pub const COMMAND_EXPIRED_TYPE: &str = "io.drogue.command.expired.v1";

/// CloudEvent type of a device created by auto-registration on its first connection
/// (`spec.trustAnchors.autoRegister`; data: `{"subject", "issuer", "fingerprint"}`).
pub const DEVICE_REGISTERED_TYPE: &str = "io.drover.device.registered.v1";
/// CloudEvent type of a change of a device twin's desired properties (data: `{"patch", "version"}`).
pub const TWIN_DESIRED_TYPE: &str = "io.drover.twin.desired.v1";
/// CloudEvent type of a change of a device twin's reported properties (data as for desired).
pub const TWIN_REPORTED_TYPE: &str = "io.drover.twin.reported.v1";

/// One event of an application's stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Unique id (a UUID).
    pub id: String,
    /// CloudEvent `type`.
    pub ty: String,
    /// The channel (CloudEvent `subject`).
    pub channel: String,
    pub time: DateTime<Utc>,
    pub content_type: Option<String>,
    pub data_schema: Option<String>,
    pub application: String,
    pub application_uid: String,
    /// The device the event is about.
    pub device: String,
    pub device_uid: String,
    /// Who sent it: the device itself, or the gateway acting for it.
    pub sender: String,
    pub sender_uid: String,
    /// The Drover instance (node) that accepted it.
    pub instance: String,
    /// Further attributes (e.g. MQTT 5 user properties), in order.
    pub extensions: Vec<(String, String)>,
    pub data: Bytes,
}

impl Event {
    /// CloudEvent `source`: `drogue://<app>/<url-encoded device>`.
    pub fn source(&self) -> String {
        format!(
            "drogue://{}/{}",
            crate::names::encode_segment(&self.application),
            crate::names::encode_segment(&self.device)
        )
    }

    /// CloudEvent extension `partitionkey`: `<app>/<sender>`.
    pub fn partition_key(&self) -> String {
        format!("{}/{}", self.application, self.sender)
    }
}

/// Whether a content type is JSON (`application/json`, `text/json`, `*/*+json`), ignoring
/// parameters and ASCII case.
pub fn is_json(content_type: &str) -> bool {
    let e = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .as_bytes();
    e.eq_ignore_ascii_case(b"application/json")
        || e.eq_ignore_ascii_case(b"text/json")
        || e.len() >= 5 && e[e.len() - 5..].eq_ignore_ascii_case(b"+json")
}
