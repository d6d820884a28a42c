//! CloudEvents 1.0, JSON structured mode: the form every integration delivers by default.

use base64::Engine as _;
use drover_model::Event;
use serde_json::{Map, Value};

/// Context attributes and extensions that extensions from devices may not override.
const RESERVED: &[&str] = &[
    "specversion",
    "id",
    "type",
    "source",
    "subject",
    "time",
    "datacontenttype",
    "dataschema",
    "data",
    "data_base64",
    "application",
    "applicationuid",
    "device",
    "deviceuid",
    "sender",
    "senderuid",
    "instance",
    "partitionkey",
];

/// A CloudEvents extension name: lowercase ASCII letters and digits only.
pub fn extension_name(name: &str) -> Option<String> {
    let n: String = name
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect();
    (!n.is_empty() && !RESERVED.contains(&n.as_str())).then_some(n)
}

fn is_json(ct: &str) -> bool {
    let e = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    e == "application/json" || e == "text/json" || e.ends_with("+json")
}

/// The event as a structured-mode JSON object. JSON payloads are embedded as `data`, text as a
/// `data` string, anything else as `data_base64`.
pub fn to_json(event: &Event) -> Value {
    let mut m = Map::new();
    let s = |v: &str| Value::String(v.to_string());
    m.insert("specversion".into(), s("1.0"));
    m.insert("id".into(), s(&event.id));
    m.insert("type".into(), s(&event.ty));
    m.insert("source".into(), Value::String(event.source()));
    m.insert("subject".into(), s(&event.channel));
    m.insert(
        "time".into(),
        Value::String(
            event
                .time
                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        ),
    );
    if let Some(ct) = &event.content_type {
        m.insert("datacontenttype".into(), s(ct));
    }
    if let Some(ds) = &event.data_schema {
        m.insert("dataschema".into(), s(ds));
    }
    m.insert("application".into(), s(&event.application));
    m.insert("applicationuid".into(), s(&event.application_uid));
    m.insert("device".into(), s(&event.device));
    m.insert("deviceuid".into(), s(&event.device_uid));
    m.insert("sender".into(), s(&event.sender));
    m.insert("senderuid".into(), s(&event.sender_uid));
    m.insert("instance".into(), s(&event.instance));
    m.insert("partitionkey".into(), Value::String(event.partition_key()));
    for (k, v) in &event.extensions {
        if let Some(k) = extension_name(k) {
            m.entry(k).or_insert_with(|| s(v));
        }
    }
    if !event.data.is_empty() {
        let ct = event.content_type.as_deref().unwrap_or("");
        let json = is_json(ct)
            .then(|| serde_json::from_slice::<Value>(&event.data).ok())
            .flatten();
        match json {
            Some(v) => {
                m.insert("data".into(), v);
            }
            None => match std::str::from_utf8(&event.data) {
                Ok(text) if ct.starts_with("text/") => {
                    m.insert("data".into(), s(text));
                }
                _ => {
                    m.insert(
                        "data_base64".into(),
                        Value::String(
                            base64::engine::general_purpose::STANDARD.encode(&event.data),
                        ),
                    );
                }
            },
        }
    }
    Value::Object(m)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn event(ct: Option<&str>, data: &'static [u8]) -> Event {
        Event {
            id: "1".into(),
            ty: "io.drogue.event.v1".into(),
            channel: "telemetry".into(),
            time: chrono::DateTime::parse_from_rfc3339("2026-01-02T03:04:05Z")
                .unwrap()
                .into(),
            content_type: ct.map(str::to_string),
            data_schema: None,
            application: "my-app".into(),
            application_uid: "au".into(),
            device: "dev 1".into(),
            device_uid: "du".into(),
            sender: "gw".into(),
            sender_uid: "gu".into(),
            instance: "drover".into(),
            extensions: vec![
                ("Content-Mode".into(), "x".into()),
                ("device".into(), "evil".into()),
            ],
            data: bytes::Bytes::from_static(data),
        }
    }

    #[test]
    fn structured_mode() {
        let v = to_json(&event(Some("application/json"), b"{\"temp\":21}"));
        assert_eq!(v["data"], json!({"temp": 21}));
        assert_eq!(v["source"], "drogue://my-app/dev%201");
        assert_eq!(v["partitionkey"], "my-app/gw");
        assert_eq!(v["contentmode"], "x");
        assert_eq!(v["device"], "dev 1");
        assert_eq!(v["time"], "2026-01-02T03:04:05.000000Z");
        let v = to_json(&event(Some("application/octet-stream"), b"\x00\x01"));
        assert_eq!(v["data_base64"], "AAE=");
        let v = to_json(&event(Some("text/plain"), b"hi"));
        assert_eq!(v["data"], "hi");
        let v = to_json(&event(None, b""));
        assert!(v.get("data").is_none() && v.get("data_base64").is_none());
    }
}
