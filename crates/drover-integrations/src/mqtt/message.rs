//! Events as MQTT messages: CloudEvents' MQTT protocol binding (structured and binary modes).

use drover_model::Event;
use drover_mqtt::{ByteString, Bytes, MessageProperties, OutboundMessage, QoS, UserProperty};

use crate::cloudevent;

/// MQTT 5 content type of a structured-mode message.
pub const STRUCTURED_CONTENT_TYPE: &str = "application/cloudevents+json";

/// How events are put into MQTT messages, chosen per SUBSCRIBE.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ContentMode {
    /// The payload is the JSON CloudEvent (attributes and data); MQTT 5 content type
    /// `application/cloudevents+json`. The default, and the only mode for MQTT 3.1.1.
    #[default]
    Structured,
    /// The payload is the event's data; its content type is the MQTT 5 content type, every
    /// other attribute (and extension) an MQTT 5 user property named like the attribute.
    Binary,
}

impl ContentMode {
    /// The mode a SUBSCRIBE asks for with its `content-mode` user property (`binary` or
    /// `structured`, case-insensitive; the last one counts). `Err` carries an unknown value.
    pub fn from_user_properties(props: &[UserProperty]) -> Result<Self, String> {
        let mut mode = ContentMode::Structured;
        for (k, v) in props {
            if k.eq_ignore_ascii_case("content-mode") {
                mode = if v.eq_ignore_ascii_case("binary") {
                    ContentMode::Binary
                } else if v.eq_ignore_ascii_case("structured") {
                    ContentMode::Structured
                } else {
                    return Err(v.to_string());
                };
            }
        }
        Ok(mode)
    }
}

/// The event as an MQTT message on `topic`.
pub(crate) fn encode(
    event: &Event,
    topic: &ByteString,
    qos: QoS,
    mode: ContentMode,
) -> OutboundMessage {
    match mode {
        ContentMode::Structured => {
            let payload = cloudevent::to_json_bytes(event);
            OutboundMessage::new(topic.clone(), Bytes::from(payload), qos).with_properties(
                MessageProperties {
                    payload_format_utf8: true,
                    content_type: Some(ByteString::from_static(STRUCTURED_CONTENT_TYPE)),
                    ..MessageProperties::default()
                },
            )
        }
        ContentMode::Binary => {
            let user_properties = cloudevent::binary_attributes(event)
                .into_iter()
                .map(|(k, v)| (ByteString::from(k), ByteString::from(v)))
                .collect();
            OutboundMessage::new(topic.clone(), event.data.clone(), qos).with_properties(
                MessageProperties {
                    content_type: event.content_type.as_deref().map(ByteString::from),
                    user_properties,
                    ..MessageProperties::default()
                },
            )
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::Value;

    fn event() -> Event {
        Event {
            id: "id-1".into(),
            ty: "io.drogue.event.v1".into(),
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
            extensions: vec![("Foo".into(), "bar".into())],
            data: Bytes::from_static(b"{\"temp\":21}"),
        }
    }

    #[test]
    fn structured() {
        let m = encode(
            &event(),
            &"app/my-app".into(),
            QoS::AtLeastOnce,
            ContentMode::Structured,
        );
        let v: Value = serde_json::from_slice(&m.payload).unwrap();
        assert_eq!(v["data"]["temp"], 21);
        assert_eq!(v["id"], "id-1");
        assert_eq!(
            m.properties.content_type.as_deref(),
            Some(STRUCTURED_CONTENT_TYPE)
        );
        assert!(m.properties.user_properties.is_empty());
    }

    #[test]
    fn binary() {
        let m = encode(
            &event(),
            &"app/my-app".into(),
            QoS::AtMostOnce,
            ContentMode::Binary,
        );
        assert_eq!(&m.payload[..], b"{\"temp\":21}");
        assert_eq!(
            m.properties.content_type.as_deref(),
            Some("application/json")
        );
        let props: Vec<(String, String)> = m
            .properties
            .user_properties
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let get = |k: &str| props.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(props[0], ("specversion".into(), "1.0".into()));
        assert_eq!(get("id"), Some("id-1"));
        assert_eq!(get("source"), Some("drogue://my-app/dev1"));
        assert_eq!(get("subject"), Some("telemetry"));
        assert_eq!(get("time"), Some("2026-01-02T03:04:05.000000Z"));
        assert_eq!(get("device"), Some("dev1"));
        assert_eq!(get("foo"), Some("bar"));
        assert_eq!(get("datacontenttype"), None);
        assert_eq!(get("data"), None);
    }

    #[test]
    fn content_mode() {
        let p = |v: &str| vec![(ByteString::from("content-mode"), ByteString::from(v))];
        assert_eq!(
            ContentMode::from_user_properties(&[]),
            Ok(ContentMode::Structured)
        );
        assert_eq!(
            ContentMode::from_user_properties(&p("binary")),
            Ok(ContentMode::Binary)
        );
        assert_eq!(
            ContentMode::from_user_properties(&p("Structured")),
            Ok(ContentMode::Structured)
        );
        assert!(ContentMode::from_user_properties(&p("binray")).is_err());
    }
}
