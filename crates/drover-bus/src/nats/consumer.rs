//! Consumers: read a stream through an ephemeral pull consumer, recreated from the next offset
//! whenever something goes wrong (see the module docs of `nats`).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy};
use async_nats::jetstream::stream::ConsumerErrorKind;
use async_trait::async_trait;
use futures::{FutureExt, StreamExt};
use tokio::sync::watch;
use tokio::time::Instant;

use super::{is_stream_not_found, Inner, StreamState, PAYLOAD_FORMAT};
use crate::embedded::codec;
use crate::{BusError, Consumer, Offset, Record, Result};

/// How long a pull request waits on the server.
const PULL_EXPIRES: Duration = Duration::from_secs(30);
/// How often the server reports an idle pull request is alive; two missed ones mean the
/// consumer is recreated.
const HEARTBEAT: Duration = Duration::from_secs(5);
/// The server removes a consumer nobody pulled from for this long (one dropped without
/// being deleted, or left behind by an outage).
const INACTIVE_THRESHOLD: Duration = Duration::from_secs(120);
/// Pauses between attempts to recreate the consumer while that fails.
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How long a read that has records waits for more that are known to follow.
const PENDING_WAIT: Duration = Duration::from_millis(500);
/// A read that has this much data (about) waits for no more.
const BATCH_BYTES: usize = 1 << 20;

/// The pull consumer a [`JetStreamConsumer`] currently reads through.
struct Reader {
    messages: pull::Stream,
    /// The consumer's sequence of the last message received (they count up from 1 without
    /// gaps; a gap means messages were lost on the way).
    delivered: u64,
    name: String,
    inner: Arc<Inner>,
    stream: String,
}

impl Drop for Reader {
    fn drop(&mut self) {
        // Best effort: the server would remove it after `INACTIVE_THRESHOLD` anyway.
        if self.inner.is_closed() {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let (js, name, stream) = (
                self.inner.js.clone(),
                std::mem::take(&mut self.name),
                std::mem::take(&mut self.stream),
            );
            runtime.spawn(async move {
                let _ = js.delete_consumer_from_stream(&name, &stream).await;
            });
        }
    }
}

/// What became of one message.
enum Received {
    /// A record, now buffered.
    Record,
    /// Already handed out (the consumer was recreated, or started before `next`).
    Skipped,
    /// Messages were lost on the way: recreate the consumer.
    Gap,
}

pub(crate) struct JetStreamConsumer {
    /// `None` for a stream that was deleted before the consumer was opened.
    live: Option<Live>,
}

struct Live {
    inner: Arc<Inner>,
    state: Arc<StreamState>,
    /// The offset of the next record to hand out.
    next: Offset,
    reader: Option<Reader>,
    closed: watch::Receiver<bool>,
    deleted: watch::Receiver<bool>,
    /// Changes when the connection to NATS was re-established.
    connections: watch::Receiver<u64>,
    backoff: Duration,
    /// Records received and not handed out yet (no more than a read asked for, about 1 MiB of
    /// data at most). Kept here rather than in a read's future, so that a read dropped
    /// half-way loses nothing.
    buffered: VecDeque<Record>,
    /// Bytes of data in `buffered`.
    buffered_bytes: usize,
    /// A damaged message's error, reported after the records before it.
    failed: Option<BusError>,
    ended: bool,
}

impl JetStreamConsumer {
    pub(crate) fn new(inner: Arc<Inner>, state: Arc<StreamState>, next: Offset) -> Self {
        let closed = inner.watch_closed();
        let deleted = state.watch_deleted();
        let connections = inner.watch_connections();
        Self {
            live: Some(Live {
                inner,
                state,
                next: next.max(1),
                reader: None,
                closed,
                deleted,
                connections,
                backoff: MIN_BACKOFF,
                buffered: VecDeque::new(),
                buffered_bytes: 0,
                failed: None,
                ended: false,
            }),
        }
    }

    /// A consumer of a deleted stream: it has nothing to read.
    pub(crate) fn gone() -> Self {
        Self { live: None }
    }
}

impl Live {
    fn should_end(&self) -> bool {
        self.ended || *self.closed.borrow() || *self.deleted.borrow()
    }

    /// Creates a pull consumer at `next`; `None` if the stream is gone.
    async fn open_reader(&self) -> Result<Option<Reader>> {
        let deliver_policy = if self.next <= 1 {
            DeliverPolicy::All
        } else {
            DeliverPolicy::ByStartSequence {
                start_sequence: self.next,
            }
        };
        let config = pull::Config {
            deliver_policy,
            ack_policy: AckPolicy::None,
            inactive_threshold: INACTIVE_THRESHOLD,
            memory_storage: true,
            num_replicas: 1,
            description: Some(format!("Drover reader of {}", self.state.key.app)),
            ..Default::default()
        };
        let consumer = match self
            .inner
            .js
            .create_consumer_on_stream(config, &self.state.name)
            .await
        {
            Ok(consumer) => consumer,
            Err(e) => {
                return match e.kind() {
                    ConsumerErrorKind::JetStream(err) if is_stream_not_found(&err) => Ok(None),
                    _ => Err(BusError::unavailable(
                        format!("creating a consumer of {}", self.state.name),
                        e,
                    )),
                }
            }
        };
        let messages = consumer
            .stream()
            .max_messages_per_batch(self.inner.config.read_batch)
            .expires(PULL_EXPIRES)
            .heartbeat(HEARTBEAT)
            .messages()
            .await
            .map_err(|e| BusError::unavailable(format!("reading from {}", self.state.name), e))?;
        Ok(Some(Reader {
            messages,
            delivered: 0,
            name: consumer.cached_info().name.clone(),
            inner: self.inner.clone(),
            stream: self.state.name.clone(),
        }))
    }

    fn receive(&mut self, message: &async_nats::jetstream::Message) -> Result<Received> {
        let Some(reader) = self.reader.as_mut() else {
            return Ok(Received::Gap);
        };
        let Ok(info) = message.info() else {
            tracing::warn!(stream = %self.state.name, "a message without JetStream metadata");
            return Ok(Received::Gap);
        };
        if info.consumer_sequence != reader.delivered + 1 {
            tracing::debug!(
                stream = %self.state.name, expected = reader.delivered + 1,
                got = info.consumer_sequence, "messages were lost; recreating the consumer"
            );
            return Ok(Received::Gap);
        }
        reader.delivered = info.consumer_sequence;
        let offset = info.stream_sequence;
        self.state.note_end(offset.saturating_add(info.pending));
        if offset < self.next {
            return Ok(Received::Skipped);
        }
        self.next = offset + 1;
        let payload = &message.payload;
        let damaged = format!(
            "stream {}: the message at offset {offset} is damaged",
            self.state.name
        );
        let event = match payload.first() {
            Some(&PAYLOAD_FORMAT) => codec::decode_event(&payload[1..], &self.state.key)
                .map_err(|e| BusError::unavailable(damaged, e))?,
            Some(other) => {
                let why = format!("{damaged}: unknown payload format {other}");
                return Err(BusError::Unavailable(why.into()));
            }
            None => {
                return Err(BusError::Unavailable(
                    format!("{damaged}: empty payload").into(),
                ))
            }
        };
        self.buffered_bytes += event.data.len();
        self.buffered.push_back(Record { offset, event });
        Ok(Received::Record)
    }

    /// Waits until the log closes or the stream is deleted.
    async fn ending(closed: &mut watch::Receiver<bool>, deleted: &mut watch::Receiver<bool>) {
        tokio::select! {
            _ = closed.wait_for(|c| *c) => {}
            _ = deleted.wait_for(|d| *d) => {}
        }
    }

    /// Handles what the pull consumer yielded.
    fn handle(
        &mut self,
        item: Option<std::result::Result<async_nats::jetstream::Message, pull::MessagesError>>,
    ) {
        match item {
            Some(Ok(message)) => match self.receive(&message) {
                Ok(Received::Record | Received::Skipped) => {}
                Ok(Received::Gap) => self.reader = None,
                Err(e) => self.failed = Some(e),
            },
            Some(Err(e)) => {
                tracing::debug!(stream = %self.state.name, error = %e, "recreating the consumer");
                self.reader = None;
            }
            None => self.reader = None,
        }
    }

    /// Creates a server-side consumer at the next offset, pausing (longer each time) after a
    /// failure; an end of the log or the stream interrupts. True if the stream is gone.
    async fn reopen(&mut self) -> bool {
        // A consumer created from here on is one of this connection.
        self.connections.borrow_and_update();
        let (mut closed, mut deleted) = (self.closed.clone(), self.deleted.clone());
        let opened = tokio::select! {
            opened = self.open_reader() => opened,
            () = Self::ending(&mut closed, &mut deleted) => return false,
        };
        match opened {
            Ok(Some(reader)) => {
                self.reader = Some(reader);
                self.backoff = MIN_BACKOFF;
                false
            }
            Ok(None) => {
                tracing::debug!(stream = %self.state.name, "the stream is gone; the consumer ends");
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?self.backoff, "cannot read the event log");
                let pause = self.backoff;
                self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
                tokio::select! {
                    () = tokio::time::sleep(pause) => {}
                    () = Self::ending(&mut self.closed, &mut self.deleted) => {}
                }
                false
            }
        }
    }

    /// Up to `max` (at least 1) records: those available now (received, or known to exist up
    /// to the stream's end as this node knows it), waiting until there is one; empty once the
    /// stream is gone or the log closed. Cancel-safe.
    async fn read(&mut self, max: usize) -> Result<Vec<Record>> {
        // Once there are records: how long to wait for more known to follow.
        let mut patience: Option<Instant> = None;
        loop {
            if self.should_end() {
                self.ended = true;
                self.reader = None;
                self.buffered.clear();
                self.buffered_bytes = 0;
                return Ok(Vec::new());
            }
            if !self.buffered.is_empty() {
                let until = *patience.get_or_insert_with(|| Instant::now() + PENDING_WAIT);
                if self.buffered.len() >= max
                    || self.buffered_bytes >= BATCH_BYTES
                    || self.state.end() < self.next
                    || Instant::now() >= until
                    || self.reader.is_none()
                    || self.failed.is_some()
                {
                    let n = max.min(self.buffered.len());
                    let out: Vec<Record> = self.buffered.drain(..n).collect();
                    self.buffered_bytes -= out.iter().map(|r| r.event.data.len()).sum::<usize>();
                    return Ok(out);
                }
            }
            if let Some(e) = self.failed.take() {
                return Err(e);
            }
            if self.reader.is_none() {
                if self.reopen().await {
                    self.ended = true;
                    return Ok(Vec::new());
                }
                continue;
            }
            let Some(reader) = self.reader.as_mut() else {
                continue;
            };
            // With records in hand, wait only briefly for the ones known to follow (the
            // server said so, or they were appended through this node).
            let until = patience.unwrap_or_else(|| Instant::now() + Duration::from_secs(86_400));
            let item = tokio::select! {
                item = reader.messages.next() => item,
                () = Self::ending(&mut self.closed, &mut self.deleted) => continue,
                // After a reconnection the server may have lost the consumer (a restart) or
                // messages on the way: start over from the next offset.
                Ok(()) = self.connections.changed() => {
                    tracing::debug!(stream = %self.state.name, "reconnected; recreating the consumer");
                    self.reader = None;
                    continue;
                }
                () = tokio::time::sleep_until(until) => continue,
            };
            self.handle(item);
            // And whatever else is there already.
            while self.buffered.len() < max
                && self.buffered_bytes < BATCH_BYTES
                && self.failed.is_none()
            {
                let Some(item) = self
                    .reader
                    .as_mut()
                    .and_then(|r| r.messages.next().now_or_never())
                else {
                    break;
                };
                self.handle(item);
            }
        }
    }
}

#[async_trait]
impl Consumer for JetStreamConsumer {
    async fn next(&mut self) -> Result<Option<Record>> {
        let Some(live) = self.live.as_mut() else {
            return Ok(None);
        };
        Ok(live.read(1).await?.pop())
    }

    async fn next_batch(&mut self, max: usize) -> Result<Vec<Record>> {
        match self.live.as_mut() {
            Some(live) if max > 0 => live.read(max).await,
            _ => Ok(Vec::new()),
        }
    }

    fn end(&self) -> Offset {
        self.live.as_ref().map_or(0, |l| l.state.end())
    }
}
