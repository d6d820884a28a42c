//! Building the one event a device message becomes.

use bytes::Bytes;
use drover_auth::device::AuthenticatedDevice;
use drover_model::event::EVENT_TYPE;
use drover_model::{Event, Resource};

/// What a device sent, protocol-independent.
#[derive(Debug, Clone, Default)]
pub struct Message {
    pub channel: String,
    pub content_type: Option<String>,
    pub data_schema: Option<String>,
    pub extensions: Vec<(String, String)>,
    pub data: Bytes,
}

/// The telemetry event for `message`, sent by `sender` about `device` (the same unless `sender`
/// is a gateway acting for `device`).
pub fn telemetry(
    sender: &AuthenticatedDevice,
    device: &Resource,
    message: Message,
    instance: &str,
) -> Event {
    Event {
        id: uuid::Uuid::new_v4().to_string(),
        ty: EVENT_TYPE.to_string(),
        channel: message.channel,
        time: chrono::Utc::now(),
        content_type: message.content_type,
        data_schema: message.data_schema,
        application: sender.app_name().to_string(),
        application_uid: sender.app_uid().to_string(),
        device: device.metadata.name.clone(),
        device_uid: device.metadata.uid.clone(),
        sender: sender.device_name().to_string(),
        sender_uid: sender.device_uid().to_string(),
        instance: instance.to_string(),
        extensions: message.extensions,
        data: message.data,
    }
}

/// The content type of a payload: as given; else JSON when it parses as JSON; else
/// `application/octet-stream`. Empty payloads get none.
pub fn detect_content_type(given: Option<&str>, data: &[u8]) -> Option<String> {
    if let Some(ct) = given.filter(|c| !c.trim().is_empty()) {
        return Some(ct.to_string());
    }
    if data.is_empty() {
        return None;
    }
    if serde_json::from_slice::<serde::de::IgnoredAny>(data).is_ok() {
        Some("application/json".to_string())
    } else {
        Some("application/octet-stream".to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use drover_model::event::is_json;

    #[test]
    fn content_types() {
        assert!(is_json("application/json; charset=utf-8"));
        assert!(is_json("application/cloudevents+json"));
        assert!(!is_json("text/plain"));
        assert_eq!(
            detect_content_type(None, b"{\"a\":1}").as_deref(),
            Some("application/json")
        );
        assert_eq!(
            detect_content_type(None, b"\x01\x02").as_deref(),
            Some("application/octet-stream")
        );
        assert_eq!(
            detect_content_type(Some("text/plain"), b"{}").as_deref(),
            Some("text/plain")
        );
        assert_eq!(detect_content_type(None, b""), None);
    }
}

/// Longest channel name, in bytes (as MQTT topics: `mqtt_max_topic_length`'s default).
pub const MAX_CHANNEL_LEN: usize = 1024;

/// Checks a channel name as MQTT topic names are checked (the same channel reaches
/// applications as an MQTT topic level): not empty, at most [`MAX_CHANNEL_LEN`] bytes, no
/// wildcard (`+`, `#`) and no control character (U+0000 to U+001F, U+007F).
pub fn validate_channel(channel: &str) -> Result<(), String> {
    if channel.is_empty() {
        return Err("the channel must not be empty".into());
    }
    if channel.len() > MAX_CHANNEL_LEN {
        return Err(format!(
            "the channel is {} bytes long, the most is {MAX_CHANNEL_LEN}",
            channel.len()
        ));
    }
    if let Some(c) = channel
        .chars()
        .find(|c| matches!(c, '+' | '#') || c.is_control())
    {
        return Err(format!(
            "the channel contains {c:?}: wildcards (+, #) and control characters are not allowed"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod channel_tests {
    use super::*;

    #[test]
    fn channels_are_checked_like_topic_names() {
        for ok in ["telemetry", "a/b/c", "état", "a b"] {
            assert!(validate_channel(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a+b", "a/#", "nul\0", "tab\t", "del\u{7f}"] {
            assert!(validate_channel(bad).is_err(), "{bad:?}");
        }
        assert!(validate_channel(&"x".repeat(MAX_CHANNEL_LEN)).is_ok());
        assert!(validate_channel(&"x".repeat(MAX_CHANNEL_LEN + 1)).is_err());
    }
}
