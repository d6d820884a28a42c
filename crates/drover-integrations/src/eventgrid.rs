//! Azure Event Grid's event schema, as IoT Hub delivers device events through it: a JSON array of
//! `{"id", "topic", "subject", "eventType", "eventTime", "data", "dataVersion",
//! "metadataVersion"}` with `Microsoft.Devices.*` types, and the subscription validation
//! handshake. Drover's events map to it here, once ([`event_type`], [`to_json`]).
//!
//! | Drover event (`type`) | `eventType` | `data` |
//! |---|---|---|
//! | `io.drogue.event.v1` (telemetry) | `Microsoft.Devices.DeviceTelemetry` | `{"body", "properties", "systemProperties"}` |
//! | `io.drogue.connection.v1`, connected | `Microsoft.Devices.DeviceConnected` | `{"deviceConnectionStateEventInfo": {"sequenceNumber"}, "hubName", "deviceId", "moduleId"}` |
//! | `io.drogue.connection.v1`, disconnected | `Microsoft.Devices.DeviceDisconnected` | as connected |
//! | any other | the Drover type, unchanged | the event's data (JSON, text, or base64) |
//!
//! `sequenceNumber` is the event's offset in the application's stream as 32 hexadecimal digits:
//! it increases strictly, also compared as a string, as Event Grid's does.

use drover_model::event::{CONNECTION_TYPE, EVENT_TYPE};
use drover_model::Event;
use serde_json::{json, Map, Value};

use crate::cloudevent;

/// Telemetry from a device.
pub const DEVICE_TELEMETRY: &str = "Microsoft.Devices.DeviceTelemetry";
/// A device connected.
pub const DEVICE_CONNECTED: &str = "Microsoft.Devices.DeviceConnected";
/// A device disconnected.
pub const DEVICE_DISCONNECTED: &str = "Microsoft.Devices.DeviceDisconnected";
/// The event of the validation handshake.
pub const SUBSCRIPTION_VALIDATION: &str = "Microsoft.EventGrid.SubscriptionValidationEvent";
/// The header naming what a request carries: [`NOTIFICATION`] or [`VALIDATION`].
pub const EVENT_TYPE_HEADER: &str = "aeg-event-type";
pub const NOTIFICATION: &str = "Notification";
pub const VALIDATION: &str = "SubscriptionValidation";
/// The content type of every request.
pub const CONTENT_TYPE: &str = "application/json; charset=utf-8";

/// The `topic` of an application's events.
pub fn topic(app: &str) -> String {
    format!(
        "/drover/applications/{}",
        drover_model::names::encode_segment(app)
    )
}

/// Whether a connection event says the device connected (`{"connected": true}`).
fn connected(event: &Event) -> Option<bool> {
    let v: Value = serde_json::from_slice(&event.data).ok()?;
    v.get("connected")?.as_bool()
}

/// The `eventType` of an event.
pub fn event_type(event: &Event) -> &str {
    match event.ty.as_str() {
        EVENT_TYPE => DEVICE_TELEMETRY,
        CONNECTION_TYPE => match connected(event) {
            Some(true) => DEVICE_CONNECTED,
            Some(false) => DEVICE_DISCONNECTED,
            None => CONNECTION_TYPE,
        },
        other => other,
    }
}

/// The event (at `offset` in its stream) in Event Grid's schema.
pub fn to_json(event: &Event, offset: u64) -> Value {
    let ty = event_type(event);
    let time = event
        .time
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let data = match ty {
        DEVICE_TELEMETRY => telemetry(event, &time),
        DEVICE_CONNECTED | DEVICE_DISCONNECTED => json!({
            "deviceConnectionStateEventInfo": {"sequenceNumber": format!("{offset:032X}")},
            "hubName": event.application,
            "deviceId": event.device,
            "moduleId": "",
        }),
        _ => cloudevent::data_member(event)
            .map(|(_, v)| v)
            .unwrap_or(Value::Null),
    };
    json!({
        "id": event.id,
        "topic": topic(&event.application),
        "subject": format!("devices/{}", event.device),
        "eventType": ty,
        "eventTime": time,
        "data": data,
        "dataVersion": "1",
        "metadataVersion": "1",
    })
}

/// Telemetry's data: the body (JSON embedded, text as a string, else base64), the device's
/// properties (the event's extensions) and IoT Hub's system properties.
fn telemetry(event: &Event, time: &str) -> Value {
    let (body, utf8) = match cloudevent::data_member(event) {
        Some(("data", v)) => (v, true),
        Some((_, v)) => (v, false),
        None => (Value::Null, false),
    };
    let properties: Map<String, Value> = event
        .extensions
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    let mut system = Map::new();
    if let Some(ct) = &event.content_type {
        system.insert("iothub-content-type".into(), ct.clone().into());
    }
    if utf8 {
        system.insert("iothub-content-encoding".into(), "utf-8".into());
    }
    system.insert(
        "iothub-connection-device-id".into(),
        event.device.clone().into(),
    );
    system.insert("iothub-enqueuedtime".into(), time.into());
    system.insert("iothub-message-source".into(), "Telemetry".into());
    json!({"body": body, "properties": properties, "systemProperties": system})
}

/// The body of a request: the events as a JSON array.
pub fn batch<'e>(events: impl IntoIterator<Item = (&'e Event, u64)>) -> Vec<u8> {
    let array: Vec<Value> = events
        .into_iter()
        .map(|(e, offset)| to_json(e, offset))
        .collect();
    serde_json::to_vec(&array).unwrap_or_default()
}

/// The body of the validation handshake for an application's subscription, with the code the
/// sink must answer (`{"validationResponse": "<code>"}`).
pub fn validation_request(app: &str, code: &str) -> Vec<u8> {
    let event = json!([{
        "id": uuid::Uuid::new_v4().to_string(),
        "topic": topic(app),
        "subject": "",
        "eventType": SUBSCRIPTION_VALIDATION,
        "eventTime": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        "data": {"validationCode": code, "validationUrl": null},
        "dataVersion": "2",
        "metadataVersion": "1",
    }]);
    serde_json::to_vec(&event).unwrap_or_default()
}

/// Whether a sink's answer to the handshake returns `code`.
pub fn validation_answered(body: &[u8], code: &str) -> bool {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.get("validationResponse")?.as_str().map(|c| c == code))
        .unwrap_or(false)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn event(ty: &str, data: &str) -> Event {
        Event {
            id: "id-1".into(),
            ty: ty.into(),
            channel: "telemetry".into(),
            time: chrono::DateTime::parse_from_rfc3339("2026-01-02T03:04:05Z")
                .unwrap()
                .into(),
            content_type: Some("application/json".into()),
            data_schema: None,
            application: "my-app".into(),
            application_uid: "au".into(),
            device: "dev1".into(),
            device_uid: "du".into(),
            sender: "dev1".into(),
            sender_uid: "du".into(),
            instance: "drover".into(),
            extensions: vec![("unit".into(), "C".into())],
            data: Bytes::from(data.to_string()),
        }
    }

    #[test]
    fn telemetry_and_connections() {
        let t = to_json(&event(EVENT_TYPE, r#"{"temp":21}"#), 7);
        assert_eq!(t["eventType"], DEVICE_TELEMETRY);
        assert_eq!(t["subject"], "devices/dev1");
        assert_eq!(t["topic"], "/drover/applications/my-app");
        assert_eq!(t["data"]["body"]["temp"], 21);
        assert_eq!(t["data"]["properties"]["unit"], "C");
        assert_eq!(
            t["data"]["systemProperties"]["iothub-message-source"],
            "Telemetry"
        );
        let c = to_json(&event(CONNECTION_TYPE, r#"{"connected":true}"#), 10);
        assert_eq!(c["eventType"], DEVICE_CONNECTED);
        let d = to_json(&event(CONNECTION_TYPE, r#"{"connected":false}"#), 11);
        assert_eq!(d["eventType"], DEVICE_DISCONNECTED);
        let (a, b) = (
            c["data"]["deviceConnectionStateEventInfo"]["sequenceNumber"]
                .as_str()
                .unwrap(),
            d["data"]["deviceConnectionStateEventInfo"]["sequenceNumber"]
                .as_str()
                .unwrap(),
        );
        assert!(a < b, "{a} {b}");
        assert_eq!(d["data"]["deviceId"], "dev1");
    }

    #[test]
    fn handshake() {
        let body = validation_request("app", "code-1");
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v[0]["eventType"], SUBSCRIPTION_VALIDATION);
        assert_eq!(v[0]["data"]["validationCode"], "code-1");
        assert!(validation_answered(
            br#"{"validationResponse":"code-1"}"#,
            "code-1"
        ));
        assert!(!validation_answered(
            br#"{"validationResponse":"x"}"#,
            "code-1"
        ));
        assert!(!validation_answered(b"nope", "code-1"));
    }
}
