//! A minimal server-sent events reader for the watch, and the changes it delivers.

use std::time::Duration;

use crate::common::Client;
use futures::stream::BoxStream;
use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::Value;

pub(crate) const WATCH: &str = "/api/registry/v1alpha1/watch";

/// How long to wait for an event that must come.
pub(crate) const DEADLINE: Duration = Duration::from_secs(10);

/// One server-sent event.
#[derive(Debug, Default, Clone)]
pub(crate) struct Message {
    pub(crate) id: Option<String>,
    pub(crate) event: Option<String>,
    pub(crate) data: String,
}

/// A minimal `text/event-stream` reader over a response body.
pub(crate) struct Sse {
    pub(crate) body: BoxStream<'static, reqwest::Result<Vec<u8>>>,
    pub(crate) buf: Vec<u8>,
}

/// A registry change as delivered by the watch.
#[derive(Debug, Clone)]
pub(crate) struct Change {
    /// The SSE id.
    pub(crate) id: u64,
    /// `application` or `device`.
    pub(crate) kind: String,
    pub(crate) app: String,
    pub(crate) device: Option<String>,
    pub(crate) subject: String,
    /// `data.revision`.
    pub(crate) revision: u64,
    pub(crate) uid: String,
    pub(crate) event: Value,
}

impl Change {
    pub(crate) fn what(&self) -> (String, Option<String>, String) {
        (
            format!("{}/{}", self.kind, self.app),
            self.device.clone(),
            self.subject.clone(),
        )
    }
}

/// `(kind/app, device, subject)` of an expected change.
pub(crate) fn ev(
    kind: &str,
    app: &str,
    device: Option<&str>,
    subject: &str,
) -> (String, Option<String>, String) {
    (
        format!("{kind}/{app}"),
        device.map(str::to_string),
        subject.to_string(),
    )
}

impl Sse {
    /// Opens the watch with a query string (e.g. `?since=3`) and an optional `Last-Event-ID`.
    pub(crate) async fn open(c: &Client, query: &str, last_event_id: Option<&str>) -> Sse {
        let mut req = c.request(reqwest::Method::GET, &format!("{WATCH}{query}"));
        if let Some(id) = last_event_id {
            req = req.header("last-event-id", id);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "opening the watch{query}");
        let ct = r
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();
        assert!(ct.starts_with("text/event-stream"), "content type {ct}");
        Sse {
            body: r.bytes_stream().map(|b| b.map(|b| b.to_vec())).boxed(),
            buf: Vec::new(),
        }
    }

    /// The next message; `None` when the stream ends.
    pub(crate) async fn next_message(&mut self) -> Option<Message> {
        let mut msg = Message::default();
        let mut has_fields = false;
        loop {
            while let Some(pos) = self.buf.iter().position(|b| *b == b'\n') {
                let mut line: Vec<u8> = self.buf.drain(..=pos).collect();
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                let line = String::from_utf8(line).unwrap();
                if line.is_empty() {
                    if has_fields {
                        return Some(msg);
                    }
                    continue;
                }
                if line.starts_with(':') {
                    continue; // comment (keep-alive)
                }
                let (field, value) = line.split_once(':').unwrap_or((line.as_str(), ""));
                let value = value.strip_prefix(' ').unwrap_or(value);
                has_fields = true;
                match field {
                    "id" => msg.id = Some(value.to_string()),
                    "event" => msg.event = Some(value.to_string()),
                    "data" => {
                        if !msg.data.is_empty() {
                            msg.data.push('\n');
                        }
                        msg.data.push_str(value);
                    }
                    _ => {}
                }
            }
            match self.body.next().await {
                Some(chunk) => self.buf.extend(chunk.unwrap()),
                None => return None,
            }
        }
    }

    /// The next change, which must arrive within the deadline.
    pub(crate) async fn next_change(&mut self) -> Change {
        let msg = tokio::time::timeout(DEADLINE, self.next_message())
            .await
            .expect("no change event within the deadline")
            .expect("the watch ended");
        assert_eq!(msg.event.as_deref(), Some("change"), "{msg:?}");
        let id: u64 = msg.id.as_deref().unwrap().parse().unwrap();
        let event: Value = serde_json::from_str(&msg.data).unwrap();
        assert_eq!(event["specversion"], "1.0", "{event}");
        assert_eq!(
            event["id"],
            id.to_string(),
            "CloudEvent id is the SSE id: {event}"
        );
        let ty = event["type"].as_str().unwrap();
        let kind = ty
            .strip_prefix("io.drogue.registry.change.")
            .unwrap_or_else(|| panic!("type {ty}"));
        assert!(kind == "application" || kind == "device", "type {ty}");
        let app = event["application"].as_str().unwrap().to_string();
        let device = event
            .get("device")
            .and_then(Value::as_str)
            .map(str::to_string);
        assert_eq!(kind == "device", device.is_some(), "{event}");
        let source = match &device {
            Some(d) => format!("drogue://{app}/{d}"),
            None => format!("drogue://{app}"),
        };
        let raw_source = event["source"].as_str().unwrap();
        assert_eq!(percent_decode(raw_source), source, "{event}");
        Change {
            id,
            kind: kind.to_string(),
            app,
            device,
            subject: event["subject"].as_str().unwrap().to_string(),
            revision: event["data"]["revision"].as_u64().unwrap(),
            uid: event["data"]["uid"].as_str().unwrap().to_string(),
            event,
        }
    }

    pub(crate) async fn changes(&mut self, n: usize) -> Vec<Change> {
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(self.next_change().await);
        }
        out
    }
}

/// Decodes `%XX` escapes.
pub(crate) fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap();
            out.push(u8::from_str_radix(hex, 16).unwrap_or_else(|_| panic!("bad escape in {s}")));
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

pub(crate) fn assert_increasing(changes: &[Change]) {
    for w in changes.windows(2) {
        assert!(
            w[0].id < w[1].id,
            "ids not strictly increasing: {} then {}",
            w[0].id,
            w[1].id
        );
    }
}

pub(crate) fn whats(changes: &[Change]) -> Vec<(String, Option<String>, String)> {
    changes.iter().map(Change::what).collect()
}
