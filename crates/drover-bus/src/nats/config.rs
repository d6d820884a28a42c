//! The JetStream event log's settings.

use std::time::Duration;

use drover_model::redact_url;

use super::names::check_prefix;
use crate::embedded::codec;
use crate::{BusError, Result};

/// Settings of the JetStream event log.
#[derive(Clone, PartialEq, Eq)]
pub struct JetStreamConfig {
    /// The NATS server(s): `nats://host:4222`, several separated by commas; user and password
    /// may be given in the URL (`nats://user:password@host:4222`; redacted in `Debug`).
    pub url: String,
    /// Subjects start with it, and names of streams and buckets with it in upper case (as the
    /// cluster's command routing does), so that several Drover installations can share one NATS
    /// account — with prefixes that differ in more than case. 1 to 32 ASCII letters, digits,
    /// `-` and `_`. Default: `drover`.
    pub prefix: String,
    /// Events older than this are removed (JetStream `max_age`); zero keeps them forever.
    /// Default: 7 days.
    pub max_age: Duration,
    /// Oldest events are removed while a stream holds more bytes than this (JetStream
    /// `max_bytes`); zero means no limit. Default: 1 GiB.
    pub max_bytes_per_stream: u64,
    /// Copies of every stream and bucket in a JetStream cluster (1 to 5). Default: 1.
    pub replicas: usize,
    /// The largest message payload (an event's encoding plus one byte) an append accepts;
    /// larger ones fail with [`BusError::TooLarge`] (so do ones beyond the server's
    /// `max_payload`). Default: 1 MiB.
    pub max_event_bytes: usize,
    /// How long any one operation (an append, opening a consumer, a commit, a deletion) may
    /// take before it fails with [`BusError::Unavailable`]; also the connection timeout.
    /// Default: 5 s.
    pub op_timeout: Duration,
    /// How many messages a consumer asks for at once. Default: 256.
    pub read_batch: usize,
    /// How many appends may wait for their acknowledgement at once. Default: 16384.
    pub max_appends_in_flight: usize,
    /// The connection's name as the server shows it (e.g. the node's instance name).
    pub connection_name: Option<String>,
}

impl Default for JetStreamConfig {
    fn default() -> Self {
        Self {
            url: "nats://127.0.0.1:4222".into(),
            prefix: "drover".into(),
            max_age: Duration::from_secs(7 * 24 * 3600),
            max_bytes_per_stream: 1 << 30,
            replicas: 1,
            max_event_bytes: 1 << 20,
            op_timeout: Duration::from_secs(5),
            read_batch: 256,
            max_appends_in_flight: 16_384,
            connection_name: None,
        }
    }
}

impl std::fmt::Debug for JetStreamConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JetStreamConfig")
            .field("url", &redact_url(&self.url))
            .field("prefix", &self.prefix)
            .field("max_age", &self.max_age)
            .field("max_bytes_per_stream", &self.max_bytes_per_stream)
            .field("replicas", &self.replicas)
            .field("max_event_bytes", &self.max_event_bytes)
            .field("op_timeout", &self.op_timeout)
            .field("read_batch", &self.read_batch)
            .field("max_appends_in_flight", &self.max_appends_in_flight)
            .field("connection_name", &self.connection_name)
            .finish()
    }
}

impl JetStreamConfig {
    pub(super) fn validate(&self) -> Result<()> {
        let bad = |what: &str| {
            Err(BusError::Invalid(
                format!("JetStream event log configuration: {what}").into(),
            ))
        };
        check_prefix(&self.prefix)?;
        if self.url.trim().is_empty() {
            return bad("url must not be empty");
        }
        if !(1..=5).contains(&self.replicas) {
            return bad("replicas must be between 1 and 5");
        }
        if self.max_event_bytes < 64 || self.max_event_bytes > codec::MAX_BODY {
            return bad("max_event_bytes must be between 64 bytes and 64 MiB");
        }
        if i64::try_from(self.max_bytes_per_stream).is_err() {
            return bad("max_bytes_per_stream is too large");
        }
        if self.op_timeout.is_zero() {
            return bad("op_timeout must not be zero");
        }
        if self.read_batch == 0 || self.max_appends_in_flight == 0 {
            return bad("read_batch and max_appends_in_flight must be at least 1");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_redacted() {
        let config = JetStreamConfig {
            url: "nats://drover:s3cret@nats:4222".into(),
            ..JetStreamConfig::default()
        };
        assert!(!format!("{config:?}").contains("s3cret"));
        let config = JetStreamConfig {
            url: "nats://t0ken@nats:4222".into(),
            ..JetStreamConfig::default()
        };
        assert!(!format!("{config:?}").contains("t0ken"));
    }

    #[test]
    fn bad_configurations_are_refused() {
        assert!(JetStreamConfig::default().validate().is_ok());
        for bad in [
            JetStreamConfig {
                prefix: "a.b".into(),
                ..JetStreamConfig::default()
            },
            JetStreamConfig {
                replicas: 0,
                ..JetStreamConfig::default()
            },
            JetStreamConfig {
                op_timeout: Duration::ZERO,
                ..JetStreamConfig::default()
            },
            JetStreamConfig {
                url: " ".into(),
                ..JetStreamConfig::default()
            },
        ] {
            assert!(
                matches!(bad.validate(), Err(BusError::Invalid(_))),
                "{bad:?}"
            );
        }
    }
}
