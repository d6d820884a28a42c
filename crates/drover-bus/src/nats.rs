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

mod consumer;
mod names;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::context::{
    CreateStreamErrorKind, DeleteStreamErrorKind, GetStreamErrorKind,
};
use async_nats::jetstream::{self, kv, stream};
use async_trait::async_trait;
use bytes::Bytes;
use drover_model::{redact_url, Event};
use tokio::sync::watch;

use self::consumer::JetStreamConsumer;
use self::names::{check_prefix, Names};
use crate::embedded::{codec, deleted_error};
use crate::{key, BusError, Consumer, EventLog, Offset, Reason, Result, StartFrom, StreamKey};

/// The first byte of every message's payload: the format of what follows.
const PAYLOAD_FORMAT: u8 = 1;
/// JetStream's default duplicate window (shortened to `max_age` when that is shorter).
const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);
/// Longest pause between reconnection attempts.
const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(2);

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
    fn validate(&self) -> Result<()> {
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

/// What this node knows of one application's stream.
pub(crate) struct StreamState {
    pub(crate) key: StreamKey,
    /// The JetStream stream's name.
    pub(crate) name: String,
    subject: String,
    /// Held while an append makes sure the stream exists and hands its message to the
    /// connection (so appends leave in call order); `true` once the stream is known to exist.
    gate: tokio::sync::Mutex<bool>,
    /// The largest offset known to exist.
    end: AtomicU64,
    /// Becomes `true` when the stream is known to be deleted.
    deleted: watch::Sender<bool>,
}

impl StreamState {
    pub(crate) fn end(&self) -> Offset {
        self.end.load(Ordering::Acquire)
    }

    pub(crate) fn note_end(&self, offset: Offset) {
        self.end.fetch_max(offset, Ordering::AcqRel);
    }

    pub(crate) fn is_deleted(&self) -> bool {
        *self.deleted.borrow()
    }

    pub(crate) fn watch_deleted(&self) -> watch::Receiver<bool> {
        self.deleted.subscribe()
    }

    fn mark_deleted(&self) {
        self.deleted.send_replace(true);
    }
}

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

/// Whether a JetStream API error says the stream does not exist.
pub(crate) fn is_stream_not_found(e: &async_nats::jetstream::Error) -> bool {
    e.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND
}

/// Opens a key-value bucket, creating it if needed. The bucket's stream is created here with
/// the settings async-nats gives a bucket of history 1 (`Context::create_key_value` asks for
/// the account's details first, in a form servers before 2.10 do not answer).
async fn open_bucket(
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
        let client = tokio::time::timeout(timeout, options.connect(config.url.as_str()))
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
            })?;
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

    fn state(&self, key: &StreamKey) -> Arc<StreamState> {
        let mut streams = self
            .streams
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        streams
            .entry(key.app_uid.clone())
            .or_insert_with(|| {
                Arc::new(StreamState {
                    key: key.clone(),
                    name: self.names.stream(&key.app_uid),
                    subject: self.names.subject(&key.app_uid),
                    gate: tokio::sync::Mutex::new(false),
                    end: AtomicU64::new(0),
                    deleted: watch::Sender::new(false),
                })
            })
            .clone()
    }

    fn stream_config(&self, state: &StreamState) -> stream::Config {
        let config = &self.config;
        let max_bytes = match i64::try_from(config.max_bytes_per_stream) {
            Ok(0) | Err(_) => -1,
            Ok(n) => n,
        };
        let duplicate_window = if config.max_age.is_zero() {
            DUPLICATE_WINDOW
        } else {
            DUPLICATE_WINDOW.min(config.max_age)
        };
        stream::Config {
            name: state.name.clone(),
            description: Some(format!(
                "Drover: events of application {} ({})",
                state.key.app, state.key.app_uid
            )),
            subjects: vec![state.subject.clone()],
            retention: stream::RetentionPolicy::Limits,
            discard: stream::DiscardPolicy::Old,
            max_age: config.max_age,
            max_bytes,
            max_messages: -1,
            max_consumers: -1,
            storage: stream::StorageType::File,
            num_replicas: config.replicas,
            duplicate_window,
            ..Default::default()
        }
    }

    /// Whether a stream was deleted (by any node). Remembered once seen.
    async fn check_tombstone(&self, state: &StreamState) -> Result<bool> {
        if state.is_deleted() {
            return Ok(true);
        }
        let key = self.names.tombstone_key(&state.key.app_uid);
        let found = self
            .tombstones
            .get(key)
            .await
            .map_err(|e| unavailable("reading the tombstones", e))?;
        if found.is_some() {
            state.mark_deleted();
        }
        Ok(found.is_some())
    }

    /// Creates a stream (or finds it created by another node); `None` if it was deleted.
    async fn create_stream(&self, state: &StreamState) -> Result<Option<stream::Info>> {
        if self.check_tombstone(state).await? {
            return Ok(None);
        }
        let config = self.stream_config(state);
        let info = match self.js.create_stream(config.clone()).await {
            Ok(stream) => stream.cached_info().clone(),
            Err(e) => match e.kind() {
                CreateStreamErrorKind::JetStream(err)
                    if err.error_code() == jetstream::ErrorCode::STREAM_NAME_EXIST =>
                {
                    // It exists with other settings: apply ours (retention was reconfigured).
                    tracing::info!(stream = %state.name, "updating the stream's settings");
                    self.js
                        .update_stream(&config)
                        .await
                        .map_err(|e| unavailable(format_args!("updating {}", state.name), e))?
                }
                _ => return Err(unavailable(format_args!("creating {}", state.name), e)),
            },
        };
        // A deletion that raced the creation wins: its tombstone was written before it
        // deleted, so either it deleted what was just created, or the tombstone is seen here.
        if self.check_tombstone(state).await? {
            self.delete_jetstream_stream(state).await?;
            return Ok(None);
        }
        tracing::debug!(stream = %state.name, app = %state.key.app, "stream ready");
        Ok(Some(info))
    }

    /// The last offset of a stream, creating it first if needed; `None` if it was deleted.
    async fn open_stream(&self, state: &StreamState) -> Result<Option<Offset>> {
        let mut exists = state.gate.lock().await;
        if state.is_deleted() {
            return Ok(None);
        }
        if *exists {
            match self.js.get_stream(&state.name).await {
                Ok(stream) => return Ok(Some(stream.cached_info().state.last_sequence)),
                Err(e) => match e.kind() {
                    GetStreamErrorKind::JetStream(err) if is_stream_not_found(&err) => {
                        *exists = false;
                    }
                    _ => return Err(unavailable(format_args!("reading {}", state.name), e)),
                },
            }
        }
        match self.create_stream(state).await? {
            Some(info) => {
                *exists = true;
                Ok(Some(info.state.last_sequence))
            }
            None => Ok(None),
        }
    }

    /// The stream's last offset as JetStream says, without creating it (0 if there is none,
    /// `None` if it was deleted).
    async fn fresh_end(&self, state: &StreamState) -> Result<Option<Offset>> {
        match self.js.get_stream(&state.name).await {
            Ok(stream) => Ok(Some(stream.cached_info().state.last_sequence)),
            Err(e) => match e.kind() {
                GetStreamErrorKind::JetStream(err) if is_stream_not_found(&err) => {
                    if self.check_tombstone(state).await? {
                        Ok(None)
                    } else {
                        Ok(Some(0))
                    }
                }
                _ => Err(unavailable(format_args!("reading {}", state.name), e)),
            },
        }
    }

    async fn delete_jetstream_stream(&self, state: &StreamState) -> Result<()> {
        match self.js.delete_stream(&state.name).await {
            Ok(_) => Ok(()),
            Err(e) => match e.kind() {
                DeleteStreamErrorKind::JetStream(err) if is_stream_not_found(&err) => Ok(()),
                _ => Err(unavailable(format_args!("deleting {}", state.name), e)),
            },
        }
    }

    /// Publishes a message and waits for JetStream's acknowledgement.
    async fn publish(
        &self,
        state: &StreamState,
        headers: async_nats::HeaderMap,
        payload: Bytes,
    ) -> Result<Offset> {
        // A second round only if the stream vanished without a tombstone (deleted behind
        // Drover's back): it is created again and the message (same id) published again.
        for round in 0..2 {
            let ack = {
                let mut exists = state.gate.lock().await;
                if state.is_deleted() {
                    return Err(deleted_error(&state.key));
                }
                if !*exists {
                    if self.create_stream(state).await?.is_none() {
                        return Err(deleted_error(&state.key));
                    }
                    *exists = true;
                }
                self.js
                    .publish_with_headers(state.subject.clone(), headers.clone(), payload.clone())
                    .await
                    .map_err(|e| publish_error(state, e))?
            };
            match ack.await {
                Ok(ack) => {
                    state.note_end(ack.sequence);
                    return Ok(ack.sequence);
                }
                Err(e) if e.kind() == jetstream::context::PublishErrorKind::StreamNotFound => {
                    *state.gate.lock().await = false;
                    if self.check_tombstone(state).await? {
                        return Err(deleted_error(&state.key));
                    }
                    tracing::warn!(stream = %state.name, round, "the stream vanished; creating it again");
                }
                Err(e) => return Err(publish_error(state, e)),
            }
        }
        Err(BusError::Unavailable(
            format!("the stream {} keeps vanishing", state.name).into(),
        ))
    }
}

fn publish_error(state: &StreamState, e: jetstream::context::PublishError) -> BusError {
    use jetstream::context::PublishErrorKind as Kind;
    match e.kind() {
        Kind::MaxPayloadExceeded => {
            BusError::TooLarge("the event exceeds the NATS server's max_payload".into())
        }
        Kind::TimedOut => BusError::Unavailable(
            format!(
                "appending to {}: no acknowledgement from JetStream in time",
                state.name
            )
            .into(),
        ),
        _ => unavailable(format_args!("appending to {}", state.name), e),
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
