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

pub(crate) mod codec;
mod consumer;
mod damage;
mod recovery;
mod segment;
mod stream;
mod writer;

pub use self::damage::DamageStats;
pub use self::recovery::{OutOfService, StreamFileError};

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use drover_model::Event;
use tokio::sync::{mpsc, oneshot, Notify, Semaphore};
use tokio::task::JoinHandle;

use self::consumer::EmbeddedConsumer;
use self::stream::{lock, StreamShared};
use self::writer::{Active, Append, Command, StreamWriter, Writer};
use crate::{key, BusError, Consumer, EventLog, Offset, Result, StartFrom, StreamKey};

pub(crate) const TOMBSTONES_FILE: &str = "deleted-streams";
/// What a queued append costs beyond its encoded bytes (message, reply channel), for the byte
/// budget of the queue.
const QUEUE_OVERHEAD: usize = 128;

/// Where the log gets the time it stamps on records (and judges their age by).
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> SystemTime;
}

/// The system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// Settings of the embedded log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// Segments whose newest record is older than this are deleted. Default: 7 days.
    pub max_age: Duration,
    /// Oldest segments are deleted while a stream is larger than this. Default: 1 GiB.
    pub max_stream_bytes: u64,
    /// A segment is closed and a new one started when a record would take it beyond this.
    /// Default: 64 MiB.
    pub segment_bytes: u64,
    /// The largest record (encoded: data, attributes and about 40 bytes of framing) an append
    /// accepts; larger ones fail with [`BusError::TooLarge`]. Default: 1 MiB; at most 64 MiB.
    pub max_event_bytes: usize,
    /// How many appends may wait for the writer. Default: 32768.
    pub append_queue: usize,
    /// How many bytes of appends may wait for the writer. Default: 64 MiB; at least
    /// `max_event_bytes` + 128.
    pub append_queue_bytes: usize,
    /// How long an append waits for room in a full queue before it fails with
    /// [`BusError::Overloaded`]. Default: 5 s.
    pub enqueue_timeout: Duration,
    /// How often committed group offsets are written to disk. Default: 1 s.
    pub group_commit_interval: Duration,
    /// How often retention runs (it also runs whenever a segment is closed). Default: 1 min.
    pub retention_interval: Duration,
    /// How many records a consumer reads from disk at once for [`Consumer::next`]. Default: 256.
    pub read_batch: usize,
    /// About how many bytes a consumer reads at once (at least one record). Default: 1 MiB.
    pub read_batch_bytes: usize,
    /// What opening the log does with a stream whose files cannot be used (a damaged
    /// `stream.meta` or `groups` file, a segment that cannot be read): `true` takes that stream
    /// alone out of service (its appends and reads fail with [`BusError::Unavailable`] naming
    /// the problem, [`EmbeddedLog::out_of_service`] lists it) and serves every other; `false`
    /// fails the open, naming the file. Default: `false`, for tools that must see every stream
    /// (`drover migrate`); the server sets `true`.
    pub isolate_broken_streams: bool,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            max_age: Duration::from_secs(7 * 24 * 3600),
            max_stream_bytes: 1 << 30,
            segment_bytes: 64 << 20,
            max_event_bytes: 1 << 20,
            append_queue: 32_768,
            append_queue_bytes: 64 << 20,
            enqueue_timeout: Duration::from_secs(5),
            group_commit_interval: Duration::from_secs(1),
            retention_interval: Duration::from_secs(60),
            read_batch: 256,
            read_batch_bytes: 1 << 20,
            isolate_broken_streams: false,
        }
    }
}

impl LogConfig {
    fn validate(&self) -> Result<()> {
        let bad = |what: &str| {
            Err(BusError::Invalid(
                format!("event log configuration: {what}").into(),
            ))
        };
        if self.max_event_bytes == 0 || self.max_event_bytes > codec::MAX_BODY {
            return bad("max_event_bytes must be between 1 and 64 MiB");
        }
        if self.segment_bytes < 1024 {
            return bad("segment_bytes must be at least 1 KiB");
        }
        if self.append_queue == 0 {
            return bad("append_queue must be at least 1");
        }
        if self.append_queue_bytes < self.max_event_bytes + QUEUE_OVERHEAD
            || self.append_queue_bytes > Semaphore::MAX_PERMITS
        {
            return bad("append_queue_bytes must be at least max_event_bytes + 128");
        }
        if self.group_commit_interval.is_zero() || self.retention_interval.is_zero() {
            return bad("intervals must not be zero");
        }
        if self.read_batch == 0 || self.read_batch_bytes == 0 {
            return bad("read batches must not be empty");
        }
        Ok(())
    }
}

#[derive(Clone)]
enum Slot {
    Live(Arc<StreamShared>),
    Deleted,
    /// Its files could not be used when the log was opened.
    OutOfService(Arc<OutOfService>),
}

/// An append on its way into the writer's queue.
enum Pending<F> {
    /// Not yet: still needs its share of the byte budget.
    Unqueued(F),
    /// Has its share, waits for room in the queue.
    Ready(Command),
}

/// Counts appends waiting for room while it lives.
struct WaitingGuard<'a>(&'a AtomicUsize);

impl<'a> WaitingGuard<'a> {
    fn enter(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::AcqRel);
        Self(count)
    }
}

impl Drop for WaitingGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

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

fn out_of_service_error(key: &StreamKey, broken: &OutOfService) -> BusError {
    BusError::Unavailable(
        format!(
        "the event stream of application {} is out of service: {} (the server log names the file)",
        key.app,
        broken.error.brief()
    )
        .into(),
    )
}

pub(crate) fn deleted_error(key: &StreamKey) -> BusError {
    BusError::Invalid(
        format!(
            "the stream of application {} ({}) was deleted",
            key.app, key.app_uid
        )
        .into(),
    )
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

        let mut streams = HashMap::new();
        let mut writers = HashMap::new();
        let mut next_id = 0;
        for r in found.streams {
            let uid = r.key.app_uid.clone();
            let shared =
                StreamShared::new(next_id, r.key, root.join(&uid), r.next_offset - 1, true);
            let active = r.segments.last().map(|s| Active {
                base: s.base,
                len: s.size,
                file: None,
                index_mark: r.index_mark,
            });
            lock(&shared.segments).list = r.segments.into();
            lock(&shared.groups).offsets = r.groups;
            *lock(&shared.damage) = r.damage;
            let shared = Arc::new(shared);
            writers.insert(
                next_id,
                StreamWriter::new(shared.clone(), r.next_offset, active),
            );
            streams.insert(uid, Slot::Live(shared));
            next_id += 1;
        }
        for broken in found.out_of_service {
            streams.insert(broken.app_uid.clone(), Slot::OutOfService(Arc::new(broken)));
        }
        for uid in found.tombstones {
            streams.insert(uid, Slot::Deleted);
        }

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

    /// The oldest retained offset of a stream (`None` if it has no records on disk).
    pub fn oldest(&self, stream: &StreamKey) -> Option<Offset> {
        match self.inner.read_slot(&stream.app_uid)? {
            Slot::Live(s) => {
                let segs = lock(&s.segments);
                segs.oldest().filter(|&o| o <= s.end())
            }
            Slot::Deleted | Slot::OutOfService(_) => None,
        }
    }

    /// The last durable offset of a stream (0 if none).
    pub fn end(&self, stream: &StreamKey) -> Offset {
        match self.inner.read_slot(&stream.app_uid) {
            Some(Slot::Live(s)) => s.end(),
            _ => 0,
        }
    }

    /// Bytes of records a stream holds on disk.
    pub fn stream_bytes(&self, stream: &StreamKey) -> u64 {
        match self.inner.read_slot(&stream.app_uid) {
            Some(Slot::Live(s)) => lock(&s.segments).total_bytes(),
            _ => 0,
        }
    }

    /// The streams the log serves (not deleted ones, nor those [out of
    /// service](Self::out_of_service)), by application uid.
    pub fn streams(&self) -> Vec<StreamKey> {
        let mut keys: Vec<StreamKey> = (self.inner.live_streams().iter())
            .map(|s| s.key.clone())
            .collect();
        keys.sort_by(|a, b| a.app_uid.cmp(&b.app_uid));
        keys
    }

    /// The committed offsets of a stream's consumer groups, by group name.
    pub fn groups(&self, stream: &StreamKey) -> std::collections::BTreeMap<String, Offset> {
        match self.inner.read_slot(&stream.app_uid) {
            Some(Slot::Live(s)) => lock(&s.groups).offsets.clone(),
            _ => std::collections::BTreeMap::new(),
        }
    }

    /// The streams whose files could not be used when the log was opened (see
    /// [`LogConfig::isolate_broken_streams`]), by application uid. Deleting the stream
    /// ([`EventLog::delete_stream`]) removes it and its files.
    pub fn out_of_service(&self) -> Vec<OutOfService> {
        let map = self
            .inner
            .streams
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut broken: Vec<OutOfService> = map
            .values()
            .filter_map(|slot| match slot {
                Slot::OutOfService(b) => Some(OutOfService::clone(b)),
                _ => None,
            })
            .collect();
        broken.sort_by(|a, b| a.app_uid.cmp(&b.app_uid));
        broken
    }

    /// What was found damaged in the streams' segments since the log was opened, for the
    /// streams where anything was (see [`DamageStats`]); by application uid.
    pub fn damage(&self) -> Vec<(StreamKey, DamageStats)> {
        let mut found: Vec<(StreamKey, DamageStats)> = (self.inner.live_streams().iter())
            .map(|s| (s.key.clone(), lock(&s.damage).stats))
            .filter(|(_, stats)| !stats.is_empty())
            .collect();
        found.sort_by(|a, b| a.0.app_uid.cmp(&b.0.app_uid));
        found
    }
}

impl Inner {
    fn read_slot(&self, uid: &str) -> Option<Slot> {
        let map = self
            .streams
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.get(uid).cloned()
    }

    /// The stream of `key`, made known if it is new; an error if it was deleted or is out of
    /// service.
    fn stream(&self, key: &StreamKey) -> Result<Arc<StreamShared>> {
        match self.read_slot(&key.app_uid) {
            Some(Slot::Live(s)) => return Ok(s),
            Some(Slot::Deleted) => return Err(deleted_error(key)),
            Some(Slot::OutOfService(b)) => return Err(out_of_service_error(key, &b)),
            None => {}
        }
        let mut map = self
            .streams
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match map.entry(key.app_uid.clone()).or_insert_with(|| {
            let id = self.next_id.fetch_add(1, Ordering::Relaxed);
            let dir = self.root.join(&key.app_uid);
            Slot::Live(Arc::new(StreamShared::new(id, key.clone(), dir, 0, false)))
        }) {
            Slot::Live(s) => Ok(s.clone()),
            Slot::Deleted => Err(deleted_error(key)),
            Slot::OutOfService(b) => Err(out_of_service_error(key, b)),
        }
    }

    fn live_streams(&self) -> Vec<Arc<StreamShared>> {
        let map = self
            .streams
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.values()
            .filter_map(|slot| match slot {
                Slot::Live(s) => Some(s.clone()),
                Slot::Deleted | Slot::OutOfService(_) => None,
            })
            .collect()
    }

    fn check_open(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            Err(BusError::Closed)
        } else {
            Ok(())
        }
    }

    /// After the writer went away: `Closed` if the log was closed, else `Unavailable`.
    fn writer_gone(&self) -> BusError {
        if self.closed.load(Ordering::Acquire) {
            BusError::Closed
        } else {
            BusError::Unavailable("the log writer stopped".into())
        }
    }

    /// Puts an append command into the writer's queue once it has room in both bounds (the
    /// byte budget: `cost`), keeping the order in which appends started; at most
    /// `enqueue_timeout`.
    async fn enqueue(
        &self,
        cost: u32,
        command: impl FnOnce(tokio::sync::OwnedSemaphorePermit) -> Command,
    ) -> Result<()> {
        // Fast path, while nobody waits: room in both bounds, taken without waiting.
        let pending = 'fast: {
            if self.waiting.load(Ordering::Acquire) == 0 {
                if let Ok(permit) = self.queue_bytes.clone().try_acquire_many_owned(cost) {
                    match self.tx.try_send(command(permit)) {
                        Ok(()) => return Ok(()),
                        Err(mpsc::error::TrySendError::Full(command)) => {
                            break 'fast Pending::Ready(command)
                        }
                        Err(mpsc::error::TrySendError::Closed(_)) => return Err(self.writer_gone()),
                    }
                }
            }
            Pending::Unqueued(command)
        };
        // Slow path: wait in line (first come, first served, so appends keep the order in which
        // they started) for room, at most `enqueue_timeout`.
        let _waiting = WaitingGuard::enter(&self.waiting);
        let deadline = tokio::time::Instant::now() + self.config.enqueue_timeout;
        let enqueue = async {
            let _turn = self.gate.lock().await;
            let command = match pending {
                Pending::Ready(command) => command,
                Pending::Unqueued(command) => {
                    let permit = self.queue_bytes.clone().acquire_many_owned(cost).await;
                    command(permit.map_err(|_| BusError::Closed)?)
                }
            };
            self.tx.send(command).await.map_err(|_| self.writer_gone())
        };
        match tokio::time::timeout_at(deadline, enqueue).await {
            Ok(result) => result,
            Err(_) => Err(BusError::Overloaded("the append queue stayed full".into())),
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

    async fn prune(&self, now: SystemTime) -> Result<usize> {
        let streams = self.live_streams();
        let cutoff = unix_ms(now)
            .saturating_sub(i64::try_from(self.config.max_age.as_millis()).unwrap_or(i64::MAX));
        let max_bytes = self.config.max_stream_bytes;
        tokio::task::spawn_blocking(move || {
            let mut deleted = 0;
            for s in streams {
                deleted += prune_stream(&s, cutoff, max_bytes)
                    .map_err(|e| io_error(format_args!("retention of {}", s.key.app), e))?;
            }
            Ok(deleted)
        })
        .await
        .map_err(|e| BusError::unavailable("retention", e))?
    }
}

fn prune_stream(s: &StreamShared, cutoff_ms: i64, max_bytes: u64) -> io::Result<usize> {
    let mut victims = Vec::new();
    let mut scanned = None;
    let mut rescanned = false;
    loop {
        let unsure = {
            let mut segs = lock(&s.segments);
            let mut total = segs.total_bytes();
            let mut unsure = None;
            while segs.list.len() > 1 {
                let Some(first) = segs.list.front_mut() else {
                    break;
                };
                if let Some((base, last, index)) = scanned.take() {
                    if base == first.base {
                        first.last_appended_ms = last;
                        first.exact = true;
                        first.index = index;
                    }
                    rescanned = true;
                }
                if first.last_appended_ms < cutoff_ms || total > max_bytes {
                    total -= first.size;
                    victims.push(first.base);
                    segs.list.pop_front();
                } else {
                    if !first.exact {
                        unsure = Some(first.base);
                    }
                    break;
                }
            }
            unsure
        };
        // A segment sealed before the log was opened has only an upper bound of its newest
        // record's time; read it to know (once, and only when the bound does not decide).
        match unsure {
            Some(base) if !rescanned => match segment::scan(&segment::path(&s.dir, base), base) {
                Ok(scan) => {
                    let next_base = lock(&s.segments)
                        .list
                        .iter()
                        .find(|g| g.base > base)
                        .map(|g| g.base);
                    lock(&s.damage).report_sealed(&s.key, &s.dir, base, &scan, next_base);
                    match scan.last_appended_ms {
                        Some(last) => scanned = Some((base, last, scan.index)),
                        None => break,
                    }
                }
                Err(_) => break,
            },
            _ => break,
        }
    }
    if victims.is_empty() {
        return Ok(0);
    }
    let state = lock(&s.dir_state);
    if state.deleted {
        return Ok(0);
    }
    for &base in &victims {
        let path = segment::path(&s.dir, base);
        match fs::remove_file(&path) {
            Ok(()) => tracing::debug!(segment = %path.display(), "retention deleted a segment"),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(victims.len())
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

async fn retention_task(inner: Weak<Inner>) {
    let Some((period, notify)) = inner
        .upgrade()
        .map(|i| (i.config.retention_interval, i.retention.clone()))
    else {
        return;
    };
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = notify.notified() => {}
        }
        let Some(inner) = inner.upgrade() else { return };
        if inner.closed.load(Ordering::Acquire) {
            return;
        }
        if let Err(e) = inner.prune(inner.clock.now()).await {
            tracing::error!(error = %e, "retention failed");
        }
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
