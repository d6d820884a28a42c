//! The NATS JetStream event log: every node of a cluster appends to and reads from the same
//! JetStream streams, so an event that a device sent to one node is consumed through any other.
//!
//! # Layout
//!
//! ```text
//! stream  <PREFIX>_EV_<uid>    subject <prefix>.ev.<uid>   one per application, created lazily
//! bucket  <PREFIX>_groups      key <uid>.<group>           committed offsets, shared by all nodes
//! bucket  <PREFIX>_deleted     key <uid>                   tombstones of deleted streams
//! ```
//!
//! (`<PREFIX>` is the prefix in upper case; uids and group names are escaped, see the `names`
//! module.) A stream's offsets are its JetStream sequence numbers, which start at 1 like the
//! embedded log's. A message's payload is a format byte (1) followed by the event encoded
//! exactly as the embedded log encodes it in its records (`embedded::codec::encode_event`): one
//! encoding of an event, in one place. Its `Nats-Msg-Id` header is the event's id, so that
//! JetStream drops a duplicate of a retried publish within its duplicate window (2 minutes, or
//! `max_age` if shorter) and acknowledges it with the original's offset. A message that cannot
//! be decoded is a [`BusError::Unavailable`] for the reader, which moves on past it.
//!
//! # Appends
//!
//! [`EventLog::append`] resolves once JetStream acknowledged the message (stored it, on
//! `replicas` servers; how JetStream itself syncs to disk is the server's configuration). An
//! append holds a per-stream lock only while it makes sure the stream exists and hands its
//! message to the connection, not while it waits for the acknowledgement: appends to one stream
//! leave in the order they were called (first polled), and many are in flight at once on the
//! one connection. Everything an append does is bounded by [`JetStreamConfig::op_timeout`];
//! without an answer in time it fails with [`BusError::Unavailable`] (the event may or may
//! not have been stored; a retry with the same event id is deduplicated). Events whose payload
//! exceeds [`JetStreamConfig::max_event_bytes`] or the server's `max_payload` fail with
//! [`BusError::TooLarge`]. At most [`JetStreamConfig::max_appends_in_flight`] acknowledgements
//! are awaited at once; further appends wait for room (within their timeout).
//!
//! # Streams
//!
//! A stream is created on its first append or consume (retention from the configuration:
//! `max_age`, `max_bytes`, discard old, file storage, `replicas`); a node remembers which
//! streams it knows to exist. Nodes racing to create one stream are fine (creating with the same
//! configuration is idempotent); a stream found with another configuration (the settings were
//! changed) is updated to this node's, so all nodes of a cluster should share their settings.
//!
//! # Deletion
//!
//! [`EventLog::delete_stream`] writes a tombstone, deletes the JetStream stream and purges the
//! stream's group offsets; it is idempotent, and several nodes may run it at once. A stream
//! with a tombstone is never created again, by any node: creation checks for a tombstone before
//! and after creating (and deletes what it created if one appeared meanwhile, so a deletion
//! racing a creation on another node always wins). Appends then fail with
//! [`BusError::Invalid`], consumers end (`Ok(None)`): at once on the node that deleted, on the
//! others when JetStream tells them their consumer is gone.
//!
//! # Consumers
//!
//! A [`Consumer`] reads through an ephemeral pull consumer (no acks, state in memory) that it
//! creates on its first read at its next offset, pulling batches of
//! [`JetStreamConfig::read_batch`] messages with idle heartbeats. Whenever the connection was
//! re-established, or anything else goes wrong (a missed heartbeat, a gap in the consumer's
//! sequence, a server that lost the consumer), it creates a new one from the offset after the
//! last record it received, with growing pauses while that fails: a consumer survives outages
//! and server restarts, and never skips or repeats a record. It ends (`Ok(None)`) when the
//! stream is gone or the log closed; it never fails because NATS is unreachable, it waits.
//! `next_batch` returns what was received and what is known to follow (up to
//! [`Consumer::end`]), waiting briefly for the latter. [`Consumer::end`] is the largest offset
//! this node knows of: from its appends' acknowledgements, from the sequence and pending count
//! of every message its consumers receive, and from the stream's state whenever a consumer is
//! opened. Records received but not handed out are kept in the consumer, so reads are
//! cancel-safe; a read returns at most about 1 MiB of data; a consumer that is never read from
//! costs nothing on the server.
//!
//! # Groups
//!
//! Committed offsets live in the `<PREFIX>_groups` key-value bucket, so a group's position is
//! the same on every node. A commit overwrites (it may move a group backwards), and is refused
//! beyond the end of the stream — as in the embedded log.
//!
//! # Code
//!
//! This file holds the log and its [`EventLog`] operations; `config` its settings,
//! `connection` the NATS connection and buckets, `streams` each stream's state and life in
//! JetStream (creation, tombstones, publishing), `consumer` the readers, `names` the naming.

mod config;
mod connection;
mod consumer;
mod names;
mod streams;

pub use self::config::JetStreamConfig;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_nats::jetstream::{self, kv};
use async_trait::async_trait;
use bytes::Bytes;
use drover_model::{redact_url, Event};
use tokio::sync::watch;

use self::connection::open_bucket;
use self::consumer::JetStreamConsumer;
use self::names::Names;
pub(crate) use self::streams::{is_stream_not_found, StreamState};
use crate::embedded::{codec, deleted_error};
use crate::{key, BusError, Consumer, EventLog, Offset, Result, StartFrom, StreamKey};

/// The first byte of every message's payload: the format of what follows.
const PAYLOAD_FORMAT: u8 = 1;

pub(crate) struct Inner {
    pub(crate) config: JetStreamConfig,
    names: Names,
    client: async_nats::Client,
    pub(crate) js: jetstream::Context,
    groups: kv::Store,
    tombstones: kv::Store,
    streams: Mutex<HashMap<String, Arc<StreamState>>>,
    closed: watch::Sender<bool>,
    /// Counts (re)connections: consumers recreate their server-side consumer on a change.
    connections: Arc<watch::Sender<u64>>,
}

/// The NATS JetStream backend of [`EventLog`] (see the [module docs](self)).
pub struct JetStreamLog {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for JetStreamLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JetStreamLog")
            .field("url", &redact_url(&self.inner.config.url))
            .field("prefix", &self.inner.config.prefix)
            .finish_non_exhaustive()
    }
}

fn unavailable(
    what: impl std::fmt::Display,
    e: impl std::error::Error + Send + Sync + 'static,
) -> BusError {
    BusError::unavailable(what.to_string(), e)
}

impl JetStreamLog {
    /// Connects to NATS, checks that JetStream is enabled and opens (creating them if needed)
    /// the key-value buckets of groups and tombstones. Fails with [`BusError::Invalid`] for a
    /// bad configuration and [`BusError::Unavailable`] if the server cannot be reached within
    /// `op_timeout` or has no JetStream. Once connected, the connection is re-established by
    /// itself whenever it drops.
    pub async fn connect(config: JetStreamConfig) -> Result<Self> {
        config.validate()?;
        let url = redact_url(&config.url);
        let timeout = config.op_timeout;
        let connections = Arc::new(watch::Sender::new(0u64));
        let client = connection::connect(&config, &url, connections.clone()).await?;
        let js = jetstream::context::ContextBuilder::new()
            .timeout(timeout)
            .ack_timeout(timeout)
            .max_ack_inflight(config.max_appends_in_flight)
            .backpressure_on_inflight(true)
            .build(client.clone());
        let names = Names::new(&config.prefix);
        let groups = open_bucket(
            &js,
            names.groups_bucket(),
            "Drover: committed offsets of consumer groups",
            config.replicas,
        )
        .await
        .map_err(|e| match e {
            BusError::Unavailable(why) => BusError::Unavailable(why.reworded(|w| {
                format!("NATS at {url}: {w} (is JetStream enabled, nats-server -js?)")
            })),
            other => other,
        })?;
        let tombstones = open_bucket(
            &js,
            names.tombstones_bucket(),
            "Drover: uids of deleted applications' streams",
            config.replicas,
        )
        .await?;
        tracing::info!(url = %url, prefix = %config.prefix, "JetStream event log connected");
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                names,
                client,
                js,
                groups,
                tombstones,
                streams: Mutex::new(HashMap::new()),
                closed: watch::Sender::new(false),
                connections,
            }),
        })
    }

    pub fn config(&self) -> &JetStreamConfig {
        &self.inner.config
    }

    /// Whether the connection to NATS is up (for a readiness endpoint). Appends and reads fail
    /// or wait while it is down; it comes back by itself.
    pub fn is_connected(&self) -> bool {
        !self.inner.is_closed() && self.inner.is_connected()
    }

    /// The name of the JetStream stream holding an application's events.
    pub fn stream_name(&self, stream: &StreamKey) -> String {
        self.inner.names.stream(&stream.app_uid)
    }

    /// The names of the key-value buckets of groups and tombstones.
    pub fn bucket_names(&self) -> [String; 2] {
        [
            self.inner.names.groups_bucket(),
            self.inner.names.tombstones_bucket(),
        ]
    }
}

impl Inner {
    fn check_open(&self) -> Result<()> {
        if *self.closed.borrow() {
            Err(BusError::Closed)
        } else {
            Ok(())
        }
    }

    pub(crate) fn is_closed(&self) -> bool {
        *self.closed.borrow()
    }

    pub(crate) fn watch_closed(&self) -> watch::Receiver<bool> {
        self.closed.subscribe()
    }

    pub(crate) fn watch_connections(&self) -> watch::Receiver<u64> {
        self.connections.subscribe()
    }

    fn is_connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    /// Runs one operation within `op_timeout`.
    async fn bounded<T>(
        &self,
        what: impl FnOnce() -> String,
        op: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        let timeout = self.config.op_timeout;
        match tokio::time::timeout(timeout, op).await {
            Ok(result) => result,
            Err(_) if self.is_connected() => Err(BusError::Unavailable(
                format!(
                    "{}: no answer from NATS JetStream within {timeout:?}",
                    what()
                )
                .into(),
            )),
            Err(_) => Err(BusError::Unavailable(
                format!("{}: not connected to NATS (waited {timeout:?})", what()).into(),
            )),
        }
    }
}

#[async_trait]
impl EventLog for JetStreamLog {
    async fn append(&self, key: &StreamKey, event: Event) -> Result<Offset> {
        let inner = &*self.inner;
        inner.check_open()?;
        key.check()?;
        let state = inner.state(key);
        if state.is_deleted() {
            return Err(deleted_error(key));
        }
        // Encoded against the stream's own key: readers decode with it.
        let len = 1 + codec::event_len(&event, &state.key);
        if len > inner.config.max_event_bytes {
            return Err(BusError::TooLarge(format!(
                "the event takes {len} bytes, at most {} are accepted",
                inner.config.max_event_bytes
            )));
        }
        let mut payload = Vec::with_capacity(len);
        payload.push(PAYLOAD_FORMAT);
        codec::encode_event(&event, &state.key, &mut payload);
        let mut headers = async_nats::HeaderMap::new();
        if !event.id.is_empty() {
            headers.insert(async_nats::header::NATS_MESSAGE_ID, event.id.as_str());
        }
        drop(event);
        inner
            .bounded(
                || format!("appending to the stream of {}", key.app),
                inner.publish(&state, headers, Bytes::from(payload)),
            )
            .await
    }

    async fn consume(&self, key: &StreamKey, from: StartFrom) -> Result<Box<dyn Consumer>> {
        let inner = &self.inner;
        inner.check_open()?;
        key.check()?;
        let state = inner.state(key);
        let last = inner
            .bounded(
                || format!("opening the stream of {}", key.app),
                inner.open_stream(&state),
            )
            .await?;
        let Some(last) = last else {
            return Ok(Box::new(JetStreamConsumer::gone()));
        };
        state.note_end(last);
        let next = match from {
            StartFrom::Earliest => 1,
            StartFrom::Latest => last + 1,
            StartFrom::After(o) => o.saturating_add(1),
        };
        Ok(Box::new(JetStreamConsumer::new(inner.clone(), state, next)))
    }

    async fn committed(&self, key: &StreamKey, group: &str) -> Result<Option<Offset>> {
        let inner = &*self.inner;
        inner.check_open()?;
        if key.check().is_err() || key::check_group(group).is_err() {
            return Ok(None);
        }
        if inner.state(key).is_deleted() {
            return Ok(None);
        }
        let k = inner.names.group_key(&key.app_uid, group);
        let value = inner
            .bounded(
                || format!("reading group {group:?} of {}", key.app),
                async {
                    inner
                        .groups
                        .get(k)
                        .await
                        .map_err(|e| unavailable("reading a group offset", e))
                },
            )
            .await?;
        match value {
            None => Ok(None),
            Some(v) => std::str::from_utf8(&v)
                .ok()
                .and_then(|s| s.parse().ok())
                .map(Some)
                .ok_or_else(|| {
                    BusError::Unavailable(
                        format!(
                            "the committed offset of group {group:?} of {} is damaged",
                            key.app
                        )
                        .into(),
                    )
                }),
        }
    }

    async fn commit(&self, key: &StreamKey, group: &str, offset: Offset) -> Result<()> {
        let inner = &*self.inner;
        inner.check_open()?;
        key.check()?;
        key::check_group(group)?;
        let state = inner.state(key);
        if state.is_deleted() {
            return Err(deleted_error(key));
        }
        let k = inner.names.group_key(&key.app_uid, group);
        inner
            .bounded(
                || format!("committing group {group:?} of {}", key.app),
                async {
                    if offset > state.end() {
                        match inner.fresh_end(&state).await? {
                            Some(end) => state.note_end(end),
                            None => return Err(deleted_error(key)),
                        }
                    }
                    let end = state.end();
                    if offset > end {
                        return Err(BusError::Invalid(
                            format!("offset {offset} is beyond the end of the stream ({end})")
                                .into(),
                        ));
                    }
                    inner
                        .groups
                        .put(k, Bytes::from(offset.to_string()))
                        .await
                        .map_err(|e| unavailable("writing a group offset", e))?;
                    Ok(())
                },
            )
            .await
    }

    async fn delete_stream(&self, key: &StreamKey) -> Result<()> {
        let inner = &*self.inner;
        inner.check_open()?;
        key.check()?;
        let state = inner.state(key);
        // Local appends fail and local consumers end from now on.
        state.mark_deleted();
        inner
            .bounded(|| format!("deleting the stream of {}", key.app), async {
                // The tombstone first: see `create_stream`.
                inner
                    .tombstones
                    .put(
                        inner.names.tombstone_key(&key.app_uid),
                        Bytes::from(key.app.clone()),
                    )
                    .await
                    .map_err(|e| unavailable("writing a tombstone", e))?;
                inner.delete_jetstream_stream(&state).await?;
                inner
                    .groups
                    .stream
                    .purge()
                    .filter(inner.names.groups_filter(&key.app_uid))
                    .await
                    .map_err(|e| unavailable("removing the stream's groups", e))?;
                *state.gate.lock().await = false;
                Ok(())
            })
            .await
    }

    async fn close(&self) -> Result<()> {
        let inner = &*self.inner;
        if inner.closed.send_replace(true) {
            return Ok(());
        }
        // Sends what is buffered, stops the subscriptions and closes the connection.
        match tokio::time::timeout(inner.config.op_timeout, inner.client.drain()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(unavailable("closing the NATS connection", e)),
            Err(_) => Err(BusError::Unavailable(
                "closing the NATS connection: timed out".into(),
            )),
        }
    }
}
