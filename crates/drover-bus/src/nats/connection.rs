//! The connection to NATS: options (timeouts, reconnection with backoff, events counted and
//! logged) and the key-value buckets the log keeps its groups and tombstones in.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, kv, stream};
use tokio::sync::watch;

use super::streams::DUPLICATE_WINDOW;
use super::{unavailable, JetStreamConfig};
use crate::{BusError, Reason, Result};

/// Longest pause between reconnection attempts.
const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(2);

/// Connects within `op_timeout`; `connections` counts (re)connections from then on. `url` is
/// the configuration's URL as it may be shown (redacted).
pub(super) async fn connect(
    config: &JetStreamConfig,
    url: &str,
    connections: Arc<watch::Sender<u64>>,
) -> Result<async_nats::Client> {
    let timeout = config.op_timeout;
    let mut options = async_nats::ConnectOptions::new()
        .connection_timeout(timeout)
        .request_timeout(Some(timeout))
        .reconnect_delay_callback(|attempts| {
            let exp = u32::try_from(attempts.min(16)).unwrap_or(16);
            Duration::from_millis(2u64.saturating_pow(exp)).min(MAX_RECONNECT_DELAY)
        })
        .event_callback({
            let connections = connections.clone();
            move |event| {
                let connections = connections.clone();
                async move {
                    match event {
                        async_nats::Event::Connected => {
                            tracing::info!("NATS connection established");
                            connections.send_modify(|n| *n += 1);
                        }
                        async_nats::Event::Disconnected => {
                            tracing::warn!("NATS connection lost");
                        }
                        e @ (async_nats::Event::SlowConsumer(_)
                        | async_nats::Event::ServerError(_)
                        | async_nats::Event::ClientError(_)) => {
                            tracing::warn!("NATS: {e}");
                        }
                        other => tracing::debug!("NATS connection event: {other}"),
                    }
                }
            }
        });
    if let Some(name) = &config.connection_name {
        options = options.name(name);
    }
    tokio::time::timeout(timeout, options.connect(config.url.as_str()))
        .await
        .map_err(|_| {
            BusError::Unavailable(
                format!("cannot connect to NATS at {url}: no answer within {timeout:?}").into(),
            )
        })?
        .map_err(|e| match e.kind() {
            async_nats::ConnectErrorKind::ServerParse => {
                BusError::Invalid(Reason::caused_by(format!("invalid NATS URL {url}"), e))
            }
            _ => unavailable(format_args!("cannot connect to NATS at {url}"), e),
        })
}

/// Opens a key-value bucket, creating it if needed. The bucket's stream is created here with
/// the settings async-nats gives a bucket of history 1 (`Context::create_key_value` asks for
/// the account's details first, in a form servers before 2.10 do not answer).
pub(super) async fn open_bucket(
    js: &jetstream::Context,
    bucket: String,
    description: &str,
    replicas: usize,
) -> Result<kv::Store> {
    if let Ok(store) = js.get_key_value(bucket.as_str()).await {
        return Ok(store);
    }
    let config = stream::Config {
        name: format!("KV_{bucket}"),
        description: Some(description.into()),
        subjects: vec![format!("$KV.{bucket}.>")],
        max_messages_per_subject: 1,
        max_bytes: -1,
        max_messages: -1,
        storage: stream::StorageType::File,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        num_replicas: replicas,
        discard: stream::DiscardPolicy::New,
        duplicate_window: DUPLICATE_WINDOW,
        ..Default::default()
    };
    // Another node may create it at the same time: the same settings, so that is fine.
    js.create_stream(config)
        .await
        .map_err(|e| unavailable(format_args!("creating the key-value bucket {bucket}"), e))?;
    js.get_key_value(bucket.as_str())
        .await
        .map_err(|e| unavailable(format_args!("opening the key-value bucket {bucket}"), e))
}
