//! The requests of a subscription: body and headers for its schema and mode (CloudEvents'
//! HTTP binding, structured, batched or binary; Event Grid's array), and the signature.

use drover_bus::Record;
use drover_model::webhook::{Mode, Schema, WebhookSpec};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::{cloudevent, eventgrid};

/// Content type of one structured-mode CloudEvent.
pub const STRUCTURED: &str = "application/cloudevents+json; charset=utf-8";
/// Content type of a batch of CloudEvents.
pub const BATCH: &str = "application/cloudevents-batch+json; charset=utf-8";

/// A request's body and the headers that describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Body {
    pub bytes: Vec<u8>,
    pub content_type: Option<String>,
    /// Further headers (`ce-*` of binary mode, Event Grid's `aeg-event-type`).
    pub headers: Vec<(String, String)>,
}

/// The request carrying `records` (one, or up to `maxEvents`) for `spec`.
pub fn body(spec: &WebhookSpec, records: &[Record]) -> Body {
    match (spec.schema, spec.mode) {
        (Schema::Eventgrid, _) => Body {
            bytes: eventgrid::batch(records.iter().map(|r| (&r.event, r.offset))),
            content_type: Some(eventgrid::CONTENT_TYPE.into()),
            headers: vec![(
                eventgrid::EVENT_TYPE_HEADER.into(),
                eventgrid::NOTIFICATION.into(),
            )],
        },
        (Schema::Cloudevents, Mode::Binary) => {
            // Binary mode carries one event (the spec's rules see to it).
            let event = &records[0].event;
            Body {
                bytes: event.data.to_vec(),
                content_type: event.content_type.clone(),
                headers: cloudevent::binary_attributes(event)
                    .into_iter()
                    .map(|(k, v)| (format!("ce-{k}"), header_value(&v)))
                    .collect(),
            }
        }
        (Schema::Cloudevents, Mode::Structured) if spec.max_events == 1 => Body {
            bytes: cloudevent::to_json_bytes(&records[0].event),
            content_type: Some(STRUCTURED.into()),
            headers: Vec::new(),
        },
        (Schema::Cloudevents, Mode::Structured) => {
            let mut bytes = vec![b'['];
            for (i, r) in records.iter().enumerate() {
                if i > 0 {
                    bytes.push(b',');
                }
                cloudevent::write_json(&r.event, &mut bytes);
            }
            bytes.push(b']');
            Body {
                bytes,
                content_type: Some(BATCH.into()),
                headers: Vec::new(),
            }
        }
    }
}

/// A `ce-` header value as CloudEvents' HTTP binding writes it: printable ASCII but space, `"`
/// and `%` as is, everything else percent-encoded (UTF-8).
pub fn header_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for b in v.bytes() {
        if (0x21..=0x7e).contains(&b) && b != b'"' && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `sha256=<hex of HMAC-SHA256(secret, body)>`, the value of the signature header.
pub fn signature(secret: &str, body: &[u8]) -> String {
    // HMAC takes keys of any length.
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret.as_bytes()) {
        Ok(m) => m,
        Err(_) => return String::new(),
    };
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256=");
    for b in digest {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use drover_model::Event;

    fn record(offset: u64) -> Record {
        Record {
            offset,
            event: Event {
                id: format!("id-{offset}"),
                ty: "io.drogue.event.v1".into(),
                channel: "temp".into(),
                time: chrono::Utc::now(),
                content_type: Some("text/plain".into()),
                data_schema: None,
                application: "app".into(),
                application_uid: "au".into(),
                device: "dév 1".into(),
                device_uid: "du".into(),
                sender: "dév 1".into(),
                sender_uid: "du".into(),
                instance: "i".into(),
                extensions: vec![],
                data: Bytes::from_static(b"21"),
            },
        }
    }

    fn spec(v: serde_json::Value) -> WebhookSpec {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn modes() {
        let s = spec(serde_json::json!({"url": "https://x/"}));
        let b = body(&s, &[record(1)]);
        assert_eq!(b.content_type.as_deref(), Some(STRUCTURED));
        let v: serde_json::Value = serde_json::from_slice(&b.bytes).unwrap();
        assert_eq!(v["id"], "id-1");

        let s = spec(serde_json::json!({"url": "https://x/", "maxEvents": 5}));
        let b = body(&s, &[record(1), record(2)]);
        let v: serde_json::Value = serde_json::from_slice(&b.bytes).unwrap();
        assert_eq!(v[1]["id"], "id-2");

        let s = spec(serde_json::json!({"url": "https://x/", "mode": "binary"}));
        let b = body(&s, &[record(3)]);
        assert_eq!(b.bytes, b"21");
        assert_eq!(b.content_type.as_deref(), Some("text/plain"));
        assert_eq!(b.headers[0], ("ce-specversion".into(), "1.0".into()));
        let device = b.headers.iter().find(|(k, _)| k == "ce-device").unwrap();
        assert_eq!(device.1, "d%C3%A9v%201");

        let s = spec(serde_json::json!({"url": "https://x/", "schema": "eventgrid"}));
        let b = body(&s, &[record(4)]);
        let v: serde_json::Value = serde_json::from_slice(&b.bytes).unwrap();
        assert_eq!(v[0]["eventType"], eventgrid::DEVICE_TELEMETRY);
    }

    #[test]
    fn signature_is_hmac_sha256() {
        // RFC 4231, test case 2.
        assert_eq!(
            signature("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
