//! What a node knows of each application's stream, and its life in JetStream: created on
//! first use (or updated to this node's settings), never again once a tombstone says it was
//! deleted, and the appends' publish with its acknowledgement.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::context::{
    CreateStreamErrorKind, DeleteStreamErrorKind, GetStreamErrorKind,
};
use async_nats::jetstream::{self, stream};
use bytes::Bytes;
use tokio::sync::watch;

use super::{unavailable, Inner};
use crate::embedded::deleted_error;
use crate::{BusError, Offset, Result, StreamKey};

/// JetStream's default duplicate window (shortened to `max_age` when that is shorter).
pub(super) const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

/// What this node knows of one application's stream.
pub(crate) struct StreamState {
    pub(crate) key: StreamKey,
    /// The JetStream stream's name.
    pub(crate) name: String,
    subject: String,
    /// Held while an append makes sure the stream exists and hands its message to the
    /// connection (so appends leave in call order); `true` once the stream is known to exist.
    pub(super) gate: tokio::sync::Mutex<bool>,
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

    pub(super) fn mark_deleted(&self) {
        self.deleted.send_replace(true);
    }
}

/// Whether a JetStream API error says the stream does not exist.
pub(crate) fn is_stream_not_found(e: &async_nats::jetstream::Error) -> bool {
    e.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND
}

impl Inner {
    pub(super) fn state(&self, key: &StreamKey) -> Arc<StreamState> {
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

    pub(super) fn stream_config(&self, state: &StreamState) -> stream::Config {
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
    pub(super) async fn check_tombstone(&self, state: &StreamState) -> Result<bool> {
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
    pub(super) async fn create_stream(&self, state: &StreamState) -> Result<Option<stream::Info>> {
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
    pub(super) async fn open_stream(&self, state: &StreamState) -> Result<Option<Offset>> {
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
    pub(super) async fn fresh_end(&self, state: &StreamState) -> Result<Option<Offset>> {
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

    pub(super) async fn delete_jetstream_stream(&self, state: &StreamState) -> Result<()> {
        match self.js.delete_stream(&state.name).await {
            Ok(_) => Ok(()),
            Err(e) => match e.kind() {
                DeleteStreamErrorKind::JetStream(err) if is_stream_not_found(&err) => Ok(()),
                _ => Err(unavailable(format_args!("deleting {}", state.name), e)),
            },
        }
    }

    /// Publishes a message and waits for JetStream's acknowledgement.
    pub(super) async fn publish(
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
