//! Webhook subscriptions: an application's events pushed to an HTTP endpoint. What a
//! subscription says ([`WebhookSpec`]), the resource as the API shows it ([`Webhook`]), the
//! state of its delivery ([`WebhookStatus`]) and what could not be delivered ([`DeadLetter`]),
//! with the rules a spec must follow ([`WebhookSpec::validate`]) and which events it selects
//! ([`WebhookSpec::matches`]).
//!
//! The checks that need the network stack (the URL under the outbound address policy, the CA
//! certificates) are `drover-integrations'` (`webhooks::check_spec`).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::names::MAX_APP_NAME;
use crate::{Event, ValidationError};

/// Most subscriptions an application may have.
pub const MAX_WEBHOOKS_PER_APP: u64 = 20;
/// Longest target URL, in bytes.
pub const MAX_URL: usize = 2048;
/// Most custom headers.
pub const MAX_HEADERS: usize = 16;
/// Longest custom header name.
pub const MAX_HEADER_NAME: usize = 64;
/// Longest custom header value, in bytes.
pub const MAX_HEADER_VALUE: usize = 1024;
/// Most entries of each filter (`types`, `subjects`).
pub const MAX_FILTERS: usize = 25;
/// Longest filter entry.
pub const MAX_FILTER: usize = 256;
/// Shortest and longest signing secret, in bytes.
pub const MIN_SECRET: usize = 16;
pub const MAX_SECRET: usize = 256;
/// Largest CA bundle, in bytes.
pub const MAX_CA_PEM: usize = 64 * 1024;
/// Most events of one request (`maxEvents`).
pub const MAX_BATCH: u32 = 100;
/// Bounds of the request timeout, in seconds.
pub const MAX_TIMEOUT_SECONDS: u64 = 120;
/// Most delivery attempts of one request.
pub const MAX_ATTEMPTS: u32 = 100;
/// Bounds of the retry delays, in milliseconds.
pub const MIN_DELAY_MS: u64 = 10;
pub const MAX_DELAY_MS: u64 = 3_600_000;

/// The header of the HMAC-SHA256 signature of a request's body:
/// `sha256=<lowercase hex of HMAC-SHA256(secret, body)>`.
pub const SIGNATURE_HEADER: &str = "x-drover-signature-256";

/// Headers Drover writes itself; a subscription may not set them.
const RESERVED_HEADERS: &[&str] = &[
    "content-type",
    "content-length",
    "content-encoding",
    "transfer-encoding",
    "host",
    "connection",
    "upgrade",
    "te",
    "trailer",
    "keep-alive",
    "expect",
    SIGNATURE_HEADER,
];
/// Header prefixes Drover writes itself (CloudEvents' binary mode, Event Grid's headers).
const RESERVED_PREFIXES: &[&str] = &["ce-", "aeg-"];

/// How events are written into requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Schema {
    /// CloudEvents 1.0 over HTTP (Drover's events as they are), structured or binary mode.
    #[default]
    Cloudevents,
    /// Azure Event Grid's schema: a JSON array of events with `Microsoft.Devices.*` types.
    Eventgrid,
}

/// CloudEvents' HTTP content modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// The body is the JSON CloudEvent (`application/cloudevents+json`), or with `maxEvents` > 1
    /// a JSON array of them (`application/cloudevents-batch+json`).
    #[default]
    Structured,
    /// The body is the event's data, the attributes are `ce-*` headers (one event per request).
    Binary,
}

/// Where a new subscription starts in the application's stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum StartAt {
    /// With the events appended after it was created.
    #[default]
    Now,
    /// With the oldest retained event.
    Earliest,
}

/// When a request is tried again, and when an event is given up (dead-lettered).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetryPolicy {
    /// Attempts per request before its events become dead letters (1 to 100; default 8).
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
    /// Delay before the second attempt, doubled for each further one (10 ms to 1 h; default
    /// 1000); each delay is shortened by a random part of up to half (jitter).
    #[serde(default = "default_initial_delay")]
    pub initial_delay_ms: u64,
    /// Longest delay between attempts (default 60000). A `Retry-After` of a 429 or 503 answer
    /// is honoured up to one hour.
    #[serde(default = "default_max_delay")]
    pub max_delay_ms: u64,
}

fn default_attempts() -> u32 {
    8
}
fn default_initial_delay() -> u64 {
    1000
}
fn default_max_delay() -> u64 {
    60_000
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: default_attempts(),
            initial_delay_ms: default_initial_delay(),
            max_delay_ms: default_max_delay(),
        }
    }
}

/// What a subscription delivers, where and how.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WebhookSpec {
    /// The target: an `http` or `https` URL (at most 2048 bytes, no user info).
    pub url: String,
    #[serde(default)]
    pub schema: Schema,
    /// CloudEvents only.
    #[serde(default)]
    pub mode: Mode,
    /// Events per request (1 to 100; default 1). Structured CloudEvents and Event Grid only.
    #[serde(default = "one")]
    pub max_events: u32,
    /// Event types to deliver (CloudEvent `type`, e.g. `io.drogue.event.v1`); an entry ending in
    /// `*` matches by prefix. Empty: every type.
    #[serde(default)]
    pub types: Vec<String>,
    /// Subjects to deliver (the channel, e.g. `temperature`); `*` at the end matches by prefix.
    /// Empty: every subject.
    #[serde(default)]
    pub subjects: Vec<String>,
    /// Headers sent with every request (at most 16; no `Content-*`, `ce-*`, `aeg-*`, hop-by-hop
    /// or signature headers).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// The key of the `X-Drover-Signature-256` header (16 to 256 bytes). Write-only: never
    /// shown (a subscription shows `signed`).
    #[serde(default, skip_serializing)]
    pub secret: Option<String>,
    /// PEM certificates to trust for an `https` target, instead of the system's roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_pem: Option<String>,
    /// Event Grid only: ask the sink to prove it wants the events first (a
    /// `Microsoft.EventGrid.SubscriptionValidationEvent` answered with `validationResponse`).
    #[serde(default)]
    pub validation_handshake: bool,
    /// Seconds a request may take (1 to 120; default 30).
    #[serde(default = "default_timeout")]
    pub timeout_seconds: u64,
    #[serde(default)]
    pub retry: RetryPolicy,
    #[serde(default)]
    pub start_at: StartAt,
}

fn one() -> u32 {
    1
}
fn default_timeout() -> u64 {
    30
}

/// Creating a subscription: its name and spec.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WebhookInput {
    pub metadata: WebhookInputMetadata,
    pub spec: WebhookSpec,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookInputMetadata {
    /// A lowercase DNS label, unique within the application.
    pub name: String,
}

/// A subscription as stored and shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Webhook {
    pub metadata: WebhookMetadata,
    pub spec: WebhookSpec,
    /// Requests carry an `X-Drover-Signature-256` header (the spec has a secret).
    pub signed: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookMetadata {
    pub name: String,
    pub application: String,
    pub uid: String,
    pub creation_timestamp: DateTime<Utc>,
}

/// How a subscription's delivery goes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookStatus {
    /// Events delivered (answered 2xx).
    pub delivered: u64,
    /// Events given up (dead letters).
    pub failed: u64,
    /// Attempts made at the request being retried now (0: none is).
    pub retrying: u32,
    /// Events of the stream not yet delivered or given up (when the event log can tell).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag: Option<u64>,
    /// The offset up to which the stream was handled (committed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub committed: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error_time: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_delivery_time: Option<DateTime<Utc>>,
    /// Event Grid handshake done (or not asked for).
    pub validated: bool,
    /// The node delivering, while one holds the subscription.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

/// An event a subscription gave up on, with why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetter {
    /// Position among the subscription's dead letters (increasing).
    pub seq: u64,
    /// The event's offset in the application's stream.
    pub offset: u64,
    pub event_id: String,
    pub event_type: String,
    pub device: String,
    /// The event as a structured-mode CloudEvent.
    pub event: serde_json::Value,
    /// The last failure.
    pub error: String,
    pub attempts: u32,
    pub time: DateTime<Utc>,
}

impl WebhookSpec {
    /// The rules a spec must follow; the message names the field.
    pub fn validate(&self) -> Result<(), ValidationError> {
        let bad = |m: String| Err(ValidationError(m));
        if self.url.is_empty() {
            return bad("spec.url: must not be empty".into());
        }
        if self.url.len() > MAX_URL {
            return bad(format!("spec.url: longer than {MAX_URL} bytes"));
        }
        if self.mode == Mode::Binary && self.schema != Schema::Cloudevents {
            return bad("spec.mode: binary is a CloudEvents mode (schema cloudevents)".into());
        }
        if !(1..=MAX_BATCH).contains(&self.max_events) {
            return bad(format!("spec.maxEvents: must be 1 to {MAX_BATCH}"));
        }
        if self.max_events > 1 && self.mode == Mode::Binary {
            return bad("spec.maxEvents: binary mode sends one event per request".into());
        }
        if self.validation_handshake && self.schema != Schema::Eventgrid {
            return bad("spec.validationHandshake: only for schema eventgrid".into());
        }
        for (field, list) in [("types", &self.types), ("subjects", &self.subjects)] {
            if list.len() > MAX_FILTERS {
                return bad(format!("spec.{field}: more than {MAX_FILTERS} entries"));
            }
            for f in list {
                if f.is_empty() || f.len() > MAX_FILTER || f.chars().any(char::is_control) {
                    return bad(format!(
                        "spec.{field}: entries must be 1 to {MAX_FILTER} bytes without control characters"
                    ));
                }
                if f.find('*').is_some_and(|i| i != f.len() - 1) {
                    return bad(format!(
                        "spec.{field}: '{f}': '*' may only end an entry (a prefix match)"
                    ));
                }
            }
        }
        self.validate_headers()?;
        if let Some(s) = &self.secret {
            if !(MIN_SECRET..=MAX_SECRET).contains(&s.len()) {
                return bad(format!(
                    "spec.secret: must be {MIN_SECRET} to {MAX_SECRET} bytes"
                ));
            }
        }
        if let Some(pem) = &self.ca_pem {
            if pem.len() > MAX_CA_PEM {
                return bad(format!("spec.caPem: larger than {MAX_CA_PEM} bytes"));
            }
            if !pem.contains("-----BEGIN CERTIFICATE-----") {
                return bad("spec.caPem: no PEM certificate (-----BEGIN CERTIFICATE-----)".into());
            }
        }
        if !(1..=MAX_TIMEOUT_SECONDS).contains(&self.timeout_seconds) {
            return bad(format!(
                "spec.timeoutSeconds: must be 1 to {MAX_TIMEOUT_SECONDS}"
            ));
        }
        let r = &self.retry;
        if !(1..=MAX_ATTEMPTS).contains(&r.max_attempts) {
            return bad(format!(
                "spec.retry.maxAttempts: must be 1 to {MAX_ATTEMPTS}"
            ));
        }
        for (field, v) in [
            ("initialDelayMs", r.initial_delay_ms),
            ("maxDelayMs", r.max_delay_ms),
        ] {
            if !(MIN_DELAY_MS..=MAX_DELAY_MS).contains(&v) {
                return bad(format!(
                    "spec.retry.{field}: must be {MIN_DELAY_MS} to {MAX_DELAY_MS}"
                ));
            }
        }
        if r.max_delay_ms < r.initial_delay_ms {
            return bad("spec.retry.maxDelayMs: must not be below initialDelayMs".into());
        }
        Ok(())
    }

    fn validate_headers(&self) -> Result<(), ValidationError> {
        if self.headers.len() > MAX_HEADERS {
            return Err(ValidationError(format!(
                "spec.headers: more than {MAX_HEADERS} headers"
            )));
        }
        for (name, value) in &self.headers {
            let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
            if name.is_empty() || name.len() > MAX_HEADER_NAME || !name.bytes().all(token) {
                return Err(ValidationError(format!(
                    "spec.headers: invalid header name '{}' (1 to {MAX_HEADER_NAME} token characters)",
                    name.chars().take(MAX_HEADER_NAME).collect::<String>()
                )));
            }
            let lower = name.to_ascii_lowercase();
            if RESERVED_HEADERS.contains(&lower.as_str())
                || RESERVED_PREFIXES.iter().any(|p| lower.starts_with(p))
            {
                return Err(ValidationError(format!(
                    "spec.headers: '{name}' is set by Drover"
                )));
            }
            let visible = |b: u8| b == b'\t' || (b' '..=b'~').contains(&b);
            if value.len() > MAX_HEADER_VALUE || !value.bytes().all(visible) {
                return Err(ValidationError(format!(
                    "spec.headers: the value of '{name}' must be at most {MAX_HEADER_VALUE} visible ASCII characters"
                )));
            }
        }
        Ok(())
    }

    /// Whether the subscription delivers `event`.
    pub fn matches(&self, event: &Event) -> bool {
        let hit = |filters: &[String], v: &str| {
            filters.is_empty()
                || filters.iter().any(|f| match f.strip_suffix('*') {
                    Some(prefix) => v.starts_with(prefix),
                    None => v == f,
                })
        };
        hit(&self.types, &event.ty) && hit(&self.subjects, &event.channel)
    }
}

impl WebhookInput {
    /// The name and the spec follow the rules.
    pub fn validate(&self) -> Result<(), ValidationError> {
        validate_name(&self.metadata.name)?;
        self.spec.validate()
    }
}

/// Subscription names: lowercase DNS labels, as application names.
pub fn validate_name(name: &str) -> Result<(), ValidationError> {
    crate::names::validate_app_name(name).map_err(|_| {
        ValidationError(format!(
            "invalid webhook name '{}': must be a lowercase DNS label (a-z, 0-9 and '-', starting and ending with a letter or digit, at most {MAX_APP_NAME} characters)",
            name.chars().take(MAX_APP_NAME + 1).collect::<String>()
        ))
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(v: serde_json::Value) -> Result<WebhookSpec, String> {
        let s: WebhookSpec = serde_json::from_value(v).map_err(|e| e.to_string())?;
        s.validate().map_err(|e| e.0)?;
        Ok(s)
    }

    #[test]
    fn defaults_and_secret_never_shown() {
        let s =
            spec(json!({"url": "https://example.com/hook", "secret": "0123456789abcdef"})).unwrap();
        assert_eq!(s.schema, Schema::Cloudevents);
        assert_eq!(s.max_events, 1);
        assert_eq!(s.retry, RetryPolicy::default());
        let shown = serde_json::to_string(&s).unwrap();
        assert!(!shown.contains("0123456789abcdef"), "{shown}");
    }

    #[test]
    fn bad_specs_name_their_field() {
        let u = "https://example.com/";
        for (v, msg) in [
            (json!({"url": ""}), "spec.url"),
            (
                json!({"url": u, "mode": "binary", "schema": "eventgrid"}),
                "spec.mode",
            ),
            (json!({"url": u, "maxEvents": 0}), "spec.maxEvents"),
            (
                json!({"url": u, "validationHandshake": true}),
                "spec.validationHandshake",
            ),
            (json!({"url": u, "types": ["a*b"]}), "spec.types"),
            (
                json!({"url": u, "headers": {"Content-Type": "x"}}),
                "spec.headers",
            ),
            (json!({"url": u, "headers": {"ce-id": "x"}}), "spec.headers"),
            (json!({"url": u, "headers": {"a b": "x"}}), "spec.headers"),
            (json!({"url": u, "headers": {"x": "a\nb"}}), "spec.headers"),
            (json!({"url": u, "secret": "short"}), "spec.secret"),
            (json!({"url": u, "caPem": "nope"}), "spec.caPem"),
            (
                json!({"url": u, "timeoutSeconds": 0}),
                "spec.timeoutSeconds",
            ),
            (
                json!({"url": u, "retry": {"maxAttempts": 0}}),
                "spec.retry.maxAttempts",
            ),
            (
                json!({"url": u, "retry": {"initialDelayMs": 5000, "maxDelayMs": 100}}),
                "spec.retry.maxDelayMs",
            ),
        ] {
            let e = spec(v.clone()).unwrap_err();
            assert!(e.starts_with(msg), "{v}: {e}");
        }
        assert!(spec(json!({"url": u, "bogus": 1}))
            .unwrap_err()
            .contains("bogus"));
    }

    #[test]
    fn filters() {
        let s = spec(
            json!({"url": "https://x/", "types": ["io.drogue.event.v1"], "subjects": ["temp*"]}),
        )
        .unwrap();
        let mut e = crate::Event {
            id: "1".into(),
            ty: "io.drogue.event.v1".into(),
            channel: "temperature".into(),
            time: Utc::now(),
            content_type: None,
            data_schema: None,
            application: "a".into(),
            application_uid: "u".into(),
            device: "d".into(),
            device_uid: "du".into(),
            sender: "d".into(),
            sender_uid: "du".into(),
            instance: "i".into(),
            extensions: vec![],
            data: bytes::Bytes::new(),
        };
        assert!(s.matches(&e));
        e.channel = "humidity".into();
        assert!(!s.matches(&e));
        e.channel = "temp".into();
        e.ty = "io.drogue.connection.v1".into();
        assert!(!s.matches(&e));
    }
}
