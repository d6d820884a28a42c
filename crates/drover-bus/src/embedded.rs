//! The embedded event log: one directory of segment files per application stream, written by a
//! single thread with group commit.
//!
//! # Layout
//!
//! ```text
//! <dir>/deleted-streams                 uids of deleted streams, one a line (tombstones)
//! <dir>/<app uid>/stream.meta           "drover-stream 1", app=<name>, uid=<uid>
//! <dir>/<app uid>/<base offset:020>.log segments: frames of records, offsets counting up from base
//! <dir>/<app uid>/groups                committed group offsets: "<offset> <group>" lines
//! <dir>/<app uid>/<segment>.damaged-<pos>  damaged bytes copied aside (see Damage)
//! <dir>/<app uid>/<segment>.torn-<pos>     an incomplete last write cut at open, copied aside
//! ```
//!
//! Streams are keyed by the application's uid, so an application deleted and created again
//! under the same name starts an empty stream. The record format is described in the `codec`
//! module: a length, a CRC-32 of the body, and a compact binary body (offset, append time, the
//! event's fields with varint-length-prefixed strings, the data bytes).
//!
//! # Durability
//!
//! [`EventLog::append`] resolves only after the record was written *and* its segment
//! fdatasync'ed. One writer thread takes everything queued, writes it to the touched segments,
//! fsyncs each touched file once (plus the directory when a segment was created) and only then
//! publishes the streams' new ends and answers the appenders: the cost of an fsync is shared
//! by everything queued while the previous one ran. Consumers never see a record before it is
//! durable. Appends to one stream get offsets in the order they started (were first polled):
//! appends that must wait for room in the queue line up first come, first served, so a caller
//! with several appends in flight (`buffered`, an MQTT receive window) keeps its order too.
//! An append cancelled after it entered the queue is still written.
//! [`EventLog::append_batch`] hands a batch to the writer as one command (one reply), so the
//! events of a batch are committed together, at consecutive offsets.
//!
//! An append that failed (`Unavailable`) was not acknowledged; after a crash it may or may not
//! be in the log. A failed write or fsync is undone (the segment truncated back); if even that
//! fails, the stream refuses appends until the log is opened again.
//!
//! # Damage
//!
//! Nothing acknowledged is deleted silently. Where a segment holds no intact record where one
//! is due (a CRC or length that does not check out), the reader (recovery, a consumer,
//! retention) looks for where intact records resume: the first later position holding a
//! complete frame whose CRC matches and whose offset the skipped bytes can account for (see
//! `segment::resync`; the format has no sync marker, the offset window and the CRC make a
//! false match improbable). If one follows, the damaged stretch is stepped over: reported once
//! at error level (stream, segment file, byte offset, length, offsets lost), copied to
//! `<segment>.damaged-<pos>`, counted in [`EmbeddedLog::damage`], and left in place; its
//! offsets are simply absent (offsets are stored in the records, so nothing after it moves).
//! In a sealed segment damage that reaches the segment's end loses the offsets up to the next
//! segment's base. On open, the newest segment of every stream is scanned whole: what follows
//! its last intact record is copied aside and cut, so that appends continue at a frame
//! boundary: an incomplete frame (a write torn by a crash, never acknowledged) as
//! `<segment>.torn-<pos>` with a warning, anything else (possibly acknowledged records) as
//! `<segment>.damaged-<pos>` with an error; a group that had committed a cut offset resumes at
//! the new end. Sealed segments are not read at open (each was fsynced before the next was
//! created); readers meet their damage.
//!
//! A stream whose files cannot be used at open (a damaged `stream.meta` or `groups`, a segment
//! that cannot be read) fails the open naming the file, or, with
//! [`LogConfig::isolate_broken_streams`], is out of service alone ([`EmbeddedLog::out_of_service`]):
//! its appends and reads fail with `Unavailable`, every other stream is served.
//!
//! Group offsets are kept in memory and written (atomically: temporary file, fsync, rename)
//! every [`LogConfig::group_commit_interval`] and on [`EventLog::close`]. After a crash a group
//! resumes from the offset last written: delivery is at least once.
//!
//! # Bounds
//!
//! Appends wait for room in a queue bounded both in records ([`LogConfig::append_queue`]) and
//! in bytes ([`LogConfig::append_queue_bytes`]); if no room comes within
//! [`LogConfig::enqueue_timeout`] the append fails with [`BusError::Overloaded`]. Consumers read
//! from the files in batches of bounded size at their own pace; a slow consumer costs no
//! memory and never holds up appends. Retention deletes whole segments, oldest first, when they
//! are older than [`LogConfig::max_age`] or the stream is larger than
//! [`LogConfig::max_stream_bytes`]; the segment being written is never deleted, so an idle
//! stream keeps up to [`LogConfig::segment_bytes`] of old records.
//!
//! # Deletion
//!
//! [`EventLog::delete_stream`] ends the stream's consumers (`Ok(None)`), records a tombstone and
//! removes the directory. Appends queued before it are written (and then deleted with the
//! rest); appends after it fail with [`BusError::Invalid`] ("stream deleted") — a deleted
//! stream is never created again, not even after a restart.
//!
//! # Costs
//!
//! Open scans the newest segment of every stream (at most `segment_bytes` each) and reads the
//! first record of the others. Looking for intact records after damage reads the rest of the
//! segment once (a cheap test per byte; the CRC only where length, format and offset fit);
//! later readers jump over a stretch already found. Each segment keeps a sparse in-memory index (an entry per
//! 64 KiB written) so that a consumer starting in the middle of it skips little; segments
//! sealed before the log was opened have none, and a consumer starting inside one reads it
//! from its beginning. Each stream with recent appends keeps its newest segment file open,
//! and its newest records (whole commits, about 512 KiB) in memory: a consumer that follows
//! the stream reads them from there, without a system call or a hop to a blocking thread;
//! one further behind reads the files.
//!
//! One process at a time may open a directory (nothing locks it).
//!
//! # Code
//!
//! This file holds the log itself (opening, the [`EventLog`] operations, group offsets); the
//! rest by idea: `config` (settings, clock), `registry` (the streams known by uid),
//! `queue` (the bounded queue in front of the writer), `writer` (the writer thread, group
//! commit), `consumer`, `retention`, `recovery` and `damage` (opening and damaged files),
//! `segment`, `codec` and `stream` (files, records, one stream's shared state).

pub(crate) mod codec;
mod config;
mod consumer;
mod damage;
mod queue;
mod recovery;
mod registry;
mod retention;
mod segment;
mod stream;
mod writer;

pub use self::config::{Clock, LogConfig, SystemClock};
pub use self::damage::DamageStats;
pub use self::recovery::{OutOfService, StreamFileError};
pub(crate) use self::registry::deleted_error;

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use drover_model::Event;
use tokio::sync::{mpsc, oneshot, Notify, Semaphore};
use tokio::task::JoinHandle;

use self::consumer::EmbeddedConsumer;
use self::queue::QUEUE_OVERHEAD;
use self::registry::{out_of_service_error, Slot};
use self::retention::retention_task;
use self::stream::{lock, StreamShared};
use self::writer::{Append, Command, Writer};
use crate::{key, BusError, Consumer, EventLog, Offset, Result, StartFrom, StreamKey};

/// The file of deleted streams' uids, beside the streams' directories.
pub(crate) const TOMBSTONES_FILE: &str = "deleted-streams";

struct Inner {
    root: PathBuf,
    config: LogConfig,
    clock: Arc<dyn Clock>,
    streams: RwLock<HashMap<String, Slot>>,
    next_id: AtomicU64,
    tx: mpsc::Sender<Command>,
    queue_bytes: Arc<Semaphore>,
    /// Appends waiting for room; while there are any, new appends line up behind them.
    waiting: AtomicUsize,
    /// The line (a fair mutex: first come, first served).
    gate: tokio::sync::Mutex<()>,
    closed: AtomicBool,
    retention: Arc<Notify>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        for task in lock(&self.tasks).drain(..) {
            task.abort();
        }
    }
}

/// The embedded backend of [`EventLog`] (see the [module docs](self)).
pub struct EmbeddedLog {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for EmbeddedLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedLog")
            .field("dir", &self.inner.root)
            .finish_non_exhaustive()
    }
}

pub(crate) fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn io_error(what: impl std::fmt::Display, e: io::Error) -> BusError {
    BusError::unavailable(what.to_string(), e)
}

impl EmbeddedLog {
    /// Opens (creating it if needed) the log in `dir`, recovering every stream in it.
    pub async fn open(dir: &Path, config: LogConfig) -> Result<Self> {
        Self::open_with_clock(dir, config, Arc::new(SystemClock)).await
    }

    /// [`open`](Self::open) with another clock (tests, simulations).
    pub async fn open_with_clock(
        dir: &Path,
        config: LogConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Self> {
        config.validate()?;
        let root = dir.to_path_buf();
        let scan_root = root.clone();
        let isolate = config.isolate_broken_streams;
        let found = tokio::task::spawn_blocking(move || recovery::recover(&scan_root, isolate))
            .await
            .map_err(|e| BusError::unavailable("opening the event log", e))?
            .map_err(|e| BusError::unavailable("opening the event log", e))?;
        let (streams, writers) = registry::known_streams(&root, found);
        let next_id = writers.len() as u64;

        let (tx, rx) = mpsc::channel(config.append_queue);
        let retention = Arc::new(Notify::new());
        let writer = Writer::new(
            root.clone(),
            config.segment_bytes,
            config.append_queue,
            clock.clone(),
            writers,
            retention.clone(),
        );
        let thread = std::thread::Builder::new()
            .name("drover-bus-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| io_error("starting the log writer", e))?;

        let inner = Arc::new(Inner {
            root,
            queue_bytes: Arc::new(Semaphore::new(config.append_queue_bytes)),
            config,
            clock,
            streams: RwLock::new(streams),
            next_id: AtomicU64::new(next_id),
            tx,
            waiting: AtomicUsize::new(0),
            gate: tokio::sync::Mutex::new(()),
            closed: AtomicBool::new(false),
            retention,
            tasks: Mutex::new(Vec::new()),
            writer: Mutex::new(Some(thread)),
        });
        let tasks = vec![
            tokio::spawn(flush_task(Arc::downgrade(&inner))),
            tokio::spawn(retention_task(Arc::downgrade(&inner))),
        ];
        *lock(&inner.tasks) = tasks;
        Ok(Self { inner })
    }

    /// The directory the log lives in.
    pub fn dir(&self) -> &Path {
        &self.inner.root
    }

    pub fn config(&self) -> &LogConfig {
        &self.inner.config
    }

    /// Applies retention as of `now`: deletes whole segments (never a stream's newest) whose
    /// records are all older than `now - max_age`, and oldest segments while a stream is over
    /// `max_stream_bytes`. Returns how many segments were deleted. Runs by itself periodically
    /// and whenever a segment is closed.
    pub async fn prune(&self, now: SystemTime) -> Result<usize> {
        self.inner.prune(now).await
    }

    /// Writes the consumer groups' committed offsets now (this also happens periodically and
    /// on close).
    pub async fn flush_groups(&self) -> Result<()> {
        self.inner.flush_groups().await
    }
}

impl Inner {
    fn check_open(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            Err(BusError::Closed)
        } else {
            Ok(())
        }
    }

    async fn flush_groups(&self) -> Result<()> {
        let streams = self.live_streams();
        tokio::task::spawn_blocking(move || {
            let mut first_error = None;
            for s in streams {
                if let Err(e) = s.flush_groups() {
                    tracing::error!(app = %s.key.app, error = %e, "cannot write group offsets");
                    first_error.get_or_insert(io_error(
                        format_args!("writing group offsets of {}", s.key.app),
                        e,
                    ));
                }
            }
            first_error.map_or(Ok(()), Err)
        })
        .await
        .map_err(|e| BusError::unavailable("writing group offsets", e))?
    }
}

async fn flush_task(inner: Weak<Inner>) {
    let Some(period) = inner.upgrade().map(|i| i.config.group_commit_interval) else {
        return;
    };
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        if inner.closed.load(Ordering::Acquire) {
            return;
        }
        // Errors are logged where they happen; the next round tries again.
        let _ = inner.flush_groups().await;
    }
}

#[async_trait]
impl EventLog for EmbeddedLog {
    async fn append(&self, key: &StreamKey, event: Event) -> Result<Offset> {
        let inner = &*self.inner;
        inner.check_open()?;
        key.check()?;
        let stream = inner.stream(key)?;
        // Encode against the stream's own key: the reader decodes with it.
        let len = codec::frame_len(&event, &stream.key);
        if len > inner.config.max_event_bytes {
            return Err(BusError::TooLarge(format!(
                "the event takes {len} bytes, at most {} are accepted",
                inner.config.max_event_bytes
            )));
        }
        let mut frames = Vec::with_capacity(len);
        codec::encode(&event, &stream.key, &mut frames);
        drop(event);

        let cost = u32::try_from(len + QUEUE_OVERHEAD).unwrap_or(u32::MAX);
        let (reply, answer) = oneshot::channel();
        inner
            .enqueue(cost, |permit| {
                Command::Append(Append {
                    stream,
                    frames,
                    reply,
                    permit,
                })
            })
            .await?;
        // Dropped unanswered only when the writer stops with the append still queued.
        answer.await.unwrap_or_else(|_| Err(inner.writer_gone()))
    }

    /// One command (one hand-off to the writer, one reply) per chunk of the batch, a chunk
    /// being as many events as fit in half the queue's byte budget.
    async fn append_batch(&self, key: &StreamKey, events: Vec<Event>) -> Vec<Result<Offset>> {
        let inner = &*self.inner;
        let n = events.len();
        let stream = match inner
            .check_open()
            .and_then(|()| key.check())
            .and_then(|()| inner.stream(key))
        {
            Ok(stream) => stream,
            Err(e) => return vec![Err(e); n],
        };
        let max = inner.config.max_event_bytes;
        let chunk_budget = ((inner.config.append_queue_bytes - QUEUE_OVERHEAD) / 2).max(max);
        let mut results: Vec<Result<Offset>> = Vec::with_capacity(n);
        // Per chunk: its reply and which results it answers (the events that were encoded).
        let mut chunks: Vec<(oneshot::Receiver<Result<Offset>>, Vec<usize>)> = Vec::new();
        let mut frames = Vec::new();
        let mut members = Vec::new();
        let mut events = events.into_iter().enumerate().peekable();
        while let Some((i, event)) = events.next() {
            let len = codec::frame_len(&event, &stream.key);
            if len > max {
                results.push(Err(BusError::TooLarge(format!(
                    "the event takes {len} bytes, at most {max} are accepted"
                ))));
            } else {
                if frames.is_empty() {
                    frames.reserve((len * (n - i)).min(chunk_budget));
                }
                codec::encode(&event, &stream.key, &mut frames);
                members.push(i);
                results.push(Err(BusError::Closed)); // answered below
            }
            drop(event);
            let full = events.peek().is_none_or(|(_, e)| {
                frames.len() + codec::frame_len(e, &stream.key) > chunk_budget
            });
            if full && !members.is_empty() {
                let cost = u32::try_from(frames.len() + QUEUE_OVERHEAD).unwrap_or(u32::MAX);
                let (reply, answer) = oneshot::channel();
                let command = |permit| {
                    Command::Append(Append {
                        stream: stream.clone(),
                        frames: std::mem::take(&mut frames),
                        reply,
                        permit,
                    })
                };
                if let Err(e) = inner.enqueue(cost, command).await {
                    // Neither this chunk nor anything after it was queued.
                    for &j in &members {
                        results[j] = Err(e.clone());
                    }
                    results.resize_with(n, || Err(e.clone()));
                    break;
                }
                chunks.push((answer, std::mem::take(&mut members)));
            }
        }
        for (answer, members) in chunks {
            let outcome = answer.await.unwrap_or_else(|_| Err(inner.writer_gone()));
            for (k, &j) in members.iter().enumerate() {
                results[j] = outcome.clone().map(|first| first + k as Offset);
            }
        }
        results
    }

    async fn consume(&self, key: &StreamKey, from: StartFrom) -> Result<Box<dyn Consumer>> {
        let inner = &*self.inner;
        inner.check_open()?;
        key.check()?;
        let stream = match inner.read_slot(&key.app_uid) {
            Some(Slot::Deleted) => Arc::new(StreamShared::gone(key.clone())),
            _ => inner.stream(key)?,
        };
        let (batch, bytes) = (inner.config.read_batch, inner.config.read_batch_bytes);
        Ok(Box::new(EmbeddedConsumer::new(stream, from, batch, bytes)))
    }

    async fn committed(&self, key: &StreamKey, group: &str) -> Result<Option<Offset>> {
        match self.inner.read_slot(&key.app_uid) {
            Some(Slot::Live(s)) => Ok(lock(&s.groups).offsets.get(group).copied()),
            Some(Slot::OutOfService(b)) => Err(out_of_service_error(key, &b)),
            _ => Ok(None),
        }
    }

    async fn commit(&self, key: &StreamKey, group: &str, offset: Offset) -> Result<()> {
        let inner = &*self.inner;
        inner.check_open()?;
        key.check()?;
        key::check_group(group)?;
        let stream = inner.stream(key)?;
        let end = stream.end();
        if offset > end {
            return Err(BusError::Invalid(
                format!("offset {offset} is beyond the end of the stream ({end})").into(),
            ));
        }
        let mut groups = lock(&stream.groups);
        match groups.offsets.get_mut(group) {
            Some(o) if *o == offset => return Ok(()),
            // A group commits often: no new key (allocation) per commit.
            Some(o) => *o = offset,
            None => {
                groups.offsets.insert(group.to_owned(), offset);
            }
        }
        groups.dirty = true;
        Ok(())
    }

    async fn delete_stream(&self, key: &StreamKey) -> Result<()> {
        let inner = &*self.inner;
        inner.check_open()?;
        key.check()?;
        let previous = {
            let mut map = inner
                .streams
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            map.insert(key.app_uid.clone(), Slot::Deleted)
        };
        let stream = match previous {
            Some(Slot::Live(s)) => Some(s),
            Some(Slot::Deleted) => return Ok(()),
            // Its directory goes with its damaged files.
            Some(Slot::OutOfService(_)) | None => None,
        };
        let (reply, answer) = oneshot::channel();
        let command = Command::Delete {
            uid: key.app_uid.clone(),
            stream,
            reply,
        };
        inner
            .tx
            .send(command)
            .await
            .map_err(|_| inner.writer_gone())?;
        answer
            .await
            .map_err(|_| inner.writer_gone())?
            .map_err(|e| io_error(format_args!("deleting the stream of {}", key.app), e))
    }

    async fn close(&self) -> Result<()> {
        let inner = &*self.inner;
        if inner.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        let (reply, answer) = oneshot::channel();
        if inner.tx.send(Command::Shutdown { reply }).await.is_ok() {
            let _ = answer.await;
        }
        let thread = lock(&inner.writer).take();
        if let Some(thread) = thread {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
        inner.queue_bytes.close();
        let flushed = inner.flush_groups().await;
        for s in inner.live_streams() {
            s.tail.send_modify(|t| t.live = false);
        }
        for task in lock(&inner.tasks).drain(..) {
            task.abort();
        }
        flushed
    }
}
