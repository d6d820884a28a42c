//! The embedded log's settings, and the clock it stamps records with.

use std::time::{Duration, SystemTime};

use tokio::sync::Semaphore;

use super::codec;
use super::queue::QUEUE_OVERHEAD;
use crate::{BusError, Result};

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
    /// How many records a consumer reads from disk at once for [`Consumer::next`](crate::Consumer::next). Default: 256.
    pub read_batch: usize,
    /// About how many bytes a consumer reads at once (at least one record). Default: 1 MiB.
    pub read_batch_bytes: usize,
    /// What opening the log does with a stream whose files cannot be used (a damaged
    /// `stream.meta` or `groups` file, a segment that cannot be read): `true` takes that stream
    /// alone out of service (its appends and reads fail with [`BusError::Unavailable`] naming
    /// the problem, [`EmbeddedLog::out_of_service`](super::EmbeddedLog::out_of_service) lists it) and serves every other; `false`
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
    pub(super) fn validate(&self) -> Result<()> {
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
