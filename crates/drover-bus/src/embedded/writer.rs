//! The single writer: a dedicated thread that takes everything queued, writes it, fsyncs each
//! touched file once, then publishes the new ends and acknowledges (group commit).

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, Notify, OwnedSemaphorePermit};

use super::codec;
use super::segment::{self, SegmentInfo, INDEX_INTERVAL};
use super::stream::{lock, sync_dir, StreamShared};
use super::{deleted_error, unix_ms, Clock, TOMBSTONES_FILE};
use crate::{BusError, Offset, Reason, Result};

/// Buffers kept for staging batches (so an idle stream holds none).
const POOL_BUFFERS: usize = 8;
/// Staging buffers larger than this are freed rather than pooled.
const POOL_MAX_CAPACITY: usize = 4 << 20;
/// With more streams than this, the segment files of streams idle for `SWEEP_EVERY` batches
/// are closed (every `SWEEP_EVERY` batches).
const MAX_OPEN_FILES: usize = 256;
const SWEEP_EVERY: u64 = 64;

pub(crate) enum Command {
    Append(Append),
    Delete {
        uid: String,
        stream: Option<Arc<StreamShared>>,
        reply: oneshot::Sender<io::Result<()>>,
    },
    Shutdown {
        reply: oneshot::Sender<()>,
    },
}

pub(crate) struct Append {
    pub stream: Arc<StreamShared>,
    /// One or more encoded, unsealed frames, one after the other (a batch: consecutive offsets).
    pub frames: Vec<u8>,
    /// Answered with the offset of the first frame.
    pub reply: oneshot::Sender<Result<Offset>>,
    /// Its share of the append queue's byte budget, returned once the batch is done.
    pub permit: OwnedSemaphorePermit,
}

/// The segment being written.
pub(crate) struct Active {
    pub base: Offset,
    pub len: u64,
    pub file: Option<File>,
    /// Position of the last sparse index entry.
    pub index_mark: u64,
}

/// Bytes of one batch for one segment.
struct Staged {
    base: Offset,
    /// Offset of the first record in `bytes`.
    first: Offset,
    /// Length of the segment before the batch.
    start_len: u64,
    /// A segment this batch creates.
    new: bool,
    bytes: Vec<u8>,
    index: Vec<(Offset, u64)>,
    index_mark: u64,
    last_ms: i64,
    file: Option<File>,
    /// Already fsynced (a segment the batch filled).
    synced: bool,
}

struct Ack {
    reply: oneshot::Sender<Result<Offset>>,
    offset: Offset,
    _permit: OwnedSemaphorePermit,
}

enum Failure {
    Deleted,
    /// What failed, and the error.
    Io(String, io::Error),
}

/// The writer's own state of a stream.
pub(crate) struct StreamWriter {
    shared: Arc<StreamShared>,
    next_offset: Offset,
    active: Option<Active>,
    staged: Vec<Staged>,
    acks: Vec<Ack>,
    failure: Option<Failure>,
    /// Set when a failed batch could not be rolled back: the stream takes no more appends
    /// until the log is opened again (recovery repairs the files).
    poisoned: Option<Reason>,
    /// The batch that last wrote to the stream.
    last_batch: u64,
}

impl StreamWriter {
    pub(crate) fn new(
        shared: Arc<StreamShared>,
        next_offset: Offset,
        active: Option<Active>,
    ) -> Self {
        Self {
            shared,
            next_offset,
            active,
            staged: Vec::new(),
            acks: Vec::new(),
            failure: None,
            poisoned: None,
            last_batch: 0,
        }
    }

    fn describe(&self) -> String {
        format!(
            "stream of {} ({})",
            self.shared.key.app, self.shared.key.app_uid
        )
    }

    /// Adds one append (one or more frames) to the batch. Returns false if it was answered at
    /// once (failed).
    fn stage(
        &mut self,
        mut a: Append,
        now_ms: i64,
        segment_bytes: u64,
        pool: &mut Vec<Vec<u8>>,
    ) -> bool {
        if self.shared.is_deleted() {
            let _ = a.reply.send(Err(deleted_error(&self.shared.key)));
            return false;
        }
        if let Some(why) = &self.poisoned {
            let _ = a.reply.send(Err(BusError::Unavailable(why.clone())));
            return false;
        }
        let first = self.next_offset;
        let mut rest = &mut a.frames[..];
        while let Some(header) = rest.first_chunk::<{ codec::HEADER_LEN }>() {
            let len = (codec::header(header).0 + codec::HEADER_LEN).min(rest.len());
            let (frame, after) = rest.split_at_mut(len);
            self.stage_frame(frame, now_ms, segment_bytes, pool);
            rest = after;
        }
        self.acks.push(Ack {
            reply: a.reply,
            offset: first,
            _permit: a.permit,
        });
        true
    }

    /// Adds one sealed frame to the batch, at the next offset.
    fn stage_frame(
        &mut self,
        frame: &mut [u8],
        now_ms: i64,
        segment_bytes: u64,
        pool: &mut Vec<Vec<u8>>,
    ) {
        let offset = self.next_offset;
        let len = frame.len() as u64;
        let current = match self.staged.last() {
            Some(s) => Some(s.start_len + s.bytes.len() as u64),
            None => self.active.as_ref().map(|a| a.len),
        };
        let new_segment = match current {
            None => true,
            Some(cur) => cur > 0 && cur + len > segment_bytes,
        };
        if new_segment {
            self.staged.push(Staged {
                base: offset,
                first: offset,
                start_len: 0,
                new: true,
                bytes: pool.pop().unwrap_or_default(),
                index: Vec::new(),
                index_mark: 0,
                last_ms: now_ms,
                file: None,
                synced: false,
            });
        } else if self.staged.is_empty() {
            if let Some(active) = &mut self.active {
                self.staged.push(Staged {
                    base: active.base,
                    first: offset,
                    start_len: active.len,
                    new: false,
                    bytes: pool.pop().unwrap_or_default(),
                    index: Vec::new(),
                    index_mark: active.index_mark,
                    last_ms: now_ms,
                    file: active.file.take(),
                    synced: false,
                });
            }
        }
        let Some(s) = self.staged.last_mut() else {
            return; // unreachable: a segment was staged above
        };
        codec::seal(frame, offset, now_ms);
        let pos = s.start_len + s.bytes.len() as u64;
        if pos >= s.index_mark + INDEX_INTERVAL {
            s.index.push((offset, pos));
            s.index_mark = pos;
        }
        s.bytes.extend_from_slice(frame);
        s.last_ms = now_ms;
        self.next_offset += 1;
    }

    fn write_phase(&mut self) {
        match self.shared.ensure_dir() {
            Ok(true) => {}
            Ok(false) => {
                self.failure = Some(Failure::Deleted);
                return;
            }
            Err(e) => {
                self.failure = Some(Failure::Io("creating directory".into(), e));
                return;
            }
        }
        let last = self.staged.len().saturating_sub(1);
        for (i, s) in self.staged.iter_mut().enumerate() {
            let path = segment::path(&self.shared.dir, s.base);
            let opened = match s.file.take() {
                Some(f) => Ok(f),
                // A new segment: nothing acknowledged can be in a file of that name (its base is
                // above every durable offset), so whatever a failed attempt left goes.
                None if s.new => OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .open(&path),
                None => OpenOptions::new().append(true).open(&path),
            };
            let result = opened.and_then(|mut f| {
                f.write_all(&s.bytes)?;
                // A segment that this batch fills is made durable before the next one is
                // created: so only the newest segment can ever end in a torn record.
                if i < last {
                    f.sync_data()?;
                    s.synced = true;
                }
                Ok(f)
            });
            match result {
                Ok(f) => s.file = Some(f),
                Err(e) => {
                    let what = format!("writing {}", path.display());
                    self.failure = Some(Failure::Io(what, e));
                    return;
                }
            }
        }
    }

    fn sync_phase(&mut self) {
        if self.failure.is_some() {
            return;
        }
        for s in self.staged.iter().filter(|s| !s.synced) {
            if let Some(f) = &s.file {
                if let Err(e) = f.sync_data() {
                    let what = format!("fsync of segment {}", s.base);
                    self.failure = Some(Failure::Io(what, e));
                    return;
                }
            }
        }
        if self.staged.iter().any(|s| s.new) {
            if let Err(e) = sync_dir(&self.shared.dir) {
                self.failure = Some(Failure::Io("fsync of directory".into(), e));
            }
        }
    }

    /// Publishes or rolls back the batch, answers its appends; true if a segment was created.
    fn finish(&mut self, pool: &mut Vec<Vec<u8>>) -> bool {
        let rolled = self.staged.iter().any(|s| s.new);
        let outcome = match self.failure.take() {
            None => {
                self.publish();
                None
            }
            Some(Failure::Deleted) => Some(deleted_error(&self.shared.key)),
            Some(Failure::Io(what, e)) => {
                let why = Reason::caused_by(format!("{}: {what}", self.describe()), e);
                tracing::error!(error = %why, "append failed");
                self.rollback(&why);
                Some(BusError::Unavailable(why))
            }
        };
        for s in self.staged.drain(..) {
            let mut bytes = s.bytes;
            if pool.len() < POOL_BUFFERS && bytes.capacity() <= POOL_MAX_CAPACITY {
                bytes.clear();
                pool.push(bytes);
            }
        }
        for ack in self.acks.drain(..) {
            let answer = match &outcome {
                None => Ok(ack.offset),
                Some(e) => Err(e.clone()),
            };
            let _ = ack.reply.send(answer);
        }
        rolled && outcome.is_none()
    }

    fn publish(&mut self) {
        {
            let mut segs = lock(&self.shared.segments);
            for s in &self.staged {
                let size = s.start_len + s.bytes.len() as u64;
                match segs.list.back_mut() {
                    Some(last) if !s.new && last.base == s.base => {
                        last.size = size;
                        last.last_appended_ms = s.last_ms;
                        last.exact = true;
                        last.index.extend_from_slice(&s.index);
                    }
                    _ => segs.list.push_back(SegmentInfo {
                        base: s.base,
                        size,
                        last_appended_ms: s.last_ms,
                        exact: true,
                        index: s.index.clone(),
                    }),
                }
            }
        }
        // Consumers following the stream read the new records from memory; they are there
        // before the new end is published.
        {
            let mut recent = lock(&self.shared.recent);
            for s in &self.staged {
                recent.push(s.first, bytes::Bytes::copy_from_slice(&s.bytes));
            }
        }
        if let Some(s) = self.staged.last_mut() {
            self.active = Some(Active {
                base: s.base,
                len: s.start_len + s.bytes.len() as u64,
                file: s.file.take(),
                index_mark: s.index_mark,
            });
        }
        let end = self.next_offset - 1;
        self.shared.tail.send_modify(|t| t.end = end);
    }

    fn rollback(&mut self, why: &Reason) {
        if let Some(first) = self.acks.first() {
            self.next_offset = first.offset;
        }
        let mut clean = true;
        for s in self.staged.iter_mut().rev() {
            let path = segment::path(&self.shared.dir, s.base);
            let undone = if s.new {
                match fs::remove_file(&path) {
                    Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                    r => r,
                }
            } else {
                OpenOptions::new().write(true).open(&path).and_then(|f| {
                    f.set_len(s.start_len)?;
                    f.sync_all()
                })
            };
            if let Err(e) = undone {
                tracing::error!(path = %path.display(), error = %e, "cannot undo a failed append");
                clean = false;
            }
        }
        // Reopen files afresh (a truncated file's cursor would be past its end).
        if let Some(a) = &mut self.active {
            a.file = None;
        }
        if !clean {
            // The stream's appends fail from now on with the failure that could not be undone.
            self.poisoned =
                Some(why.reworded(|w| format!("{w} (and could not be undone; reopen the log)")));
        }
    }
}

pub(crate) struct Writer {
    pub root: PathBuf,
    pub segment_bytes: u64,
    pub batch_limit: usize,
    pub clock: Arc<dyn Clock>,
    pub streams: HashMap<u64, StreamWriter>,
    pub retention: Arc<Notify>,
    touched: Vec<u64>,
    pool: Vec<Vec<u8>>,
    /// Batches committed so far.
    batches: u64,
    /// When to look for idle open files next.
    next_sweep: u64,
}

impl Writer {
    pub(crate) fn new(
        root: PathBuf,
        segment_bytes: u64,
        batch_limit: usize,
        clock: Arc<dyn Clock>,
        streams: HashMap<u64, StreamWriter>,
        retention: Arc<Notify>,
    ) -> Self {
        Self {
            root,
            segment_bytes,
            batch_limit,
            clock,
            streams,
            retention,
            touched: Vec::new(),
            pool: Vec::new(),
            batches: 0,
            next_sweep: 0,
        }
    }

    /// Runs until shut down or until every sender is gone (the log was dropped); appends still
    /// queued then are dropped, which their callers see as `Closed`.
    pub(crate) fn run(mut self, mut rx: mpsc::Receiver<Command>) {
        let mut batch = Vec::with_capacity(1024.min(self.batch_limit));
        while rx.blocking_recv_many(&mut batch, self.batch_limit) > 0 {
            // Where the appending threads share this thread's core, the first append of a burst
            // wakes the writer, which then preempts them and commits that one append alone.
            // Yielding once lets them go on first (it returns at once when nothing else waits
            // for this core), so that the commit covers what they append meanwhile.
            if batch.len() < self.batch_limit {
                std::thread::yield_now();
                while batch.len() < self.batch_limit {
                    match rx.try_recv() {
                        Ok(command) => batch.push(command),
                        Err(_) => break,
                    }
                }
            }
            let now_ms = unix_ms(self.clock.now());
            let mut commands = batch.drain(..);
            for command in commands.by_ref() {
                match command {
                    Command::Append(a) => self.stage(a, now_ms),
                    Command::Delete { uid, stream, reply } => {
                        self.commit();
                        let _ = reply.send(self.delete(&uid, stream));
                    }
                    Command::Shutdown { reply } => {
                        self.commit();
                        let _ = reply.send(());
                        return;
                    }
                }
            }
            drop(commands);
            self.commit();
            if batch.capacity() > 4096 {
                batch.shrink_to(1024);
            }
        }
    }

    fn stage(&mut self, a: Append, now_ms: i64) {
        let id = a.stream.id;
        if a.stream.is_deleted() && !self.streams.contains_key(&id) {
            let _ = a.reply.send(Err(deleted_error(&a.stream.key)));
            return;
        }
        let sw = self
            .streams
            .entry(id)
            .or_insert_with(|| StreamWriter::new(a.stream.clone(), a.stream.end() + 1, None));
        let first = sw.acks.is_empty();
        if sw.stage(a, now_ms, self.segment_bytes, &mut self.pool) && first {
            sw.last_batch = self.batches;
            self.touched.push(id);
        }
    }

    /// Writes, fsyncs and publishes everything staged.
    fn commit(&mut self) {
        if self.touched.is_empty() {
            return;
        }
        for id in &self.touched {
            if let Some(sw) = self.streams.get_mut(id) {
                sw.write_phase();
            }
        }
        for id in &self.touched {
            if let Some(sw) = self.streams.get_mut(id) {
                sw.sync_phase();
            }
        }
        let mut rolled = false;
        for id in &self.touched {
            if let Some(sw) = self.streams.get_mut(id) {
                rolled |= sw.finish(&mut self.pool);
            }
        }
        if rolled {
            self.retention.notify_one();
        }
        self.touched.clear();
        self.batches += 1;
        // Keep the number of open segment files bounded: now and then, close the files of
        // streams that were not written for a while (they are opened again when needed).
        if self.streams.len() > MAX_OPEN_FILES && self.batches >= self.next_sweep {
            let batches = self.batches;
            self.next_sweep = batches + SWEEP_EVERY;
            for sw in self.streams.values_mut() {
                if sw.last_batch + SWEEP_EVERY < batches {
                    if let Some(a) = &mut sw.active {
                        a.file = None;
                    }
                    lock(&sw.shared.recent).clear();
                }
            }
        }
    }

    fn delete(&mut self, uid: &str, stream: Option<Arc<StreamShared>>) -> io::Result<()> {
        // The tombstone first: once it is durable, nothing brings the stream back, and a crash
        // in the middle of removing the directory is finished on the next open.
        let path = self.root.join(TOMBSTONES_FILE);
        let created = !path.exists();
        let mut f = OpenOptions::new().create(true).append(true).open(&path)?;
        f.write_all(format!("{uid}\n").as_bytes())?;
        f.sync_data()?;
        if created {
            sync_dir(&self.root)?;
        }
        match stream {
            Some(s) => {
                self.streams.remove(&s.id);
                s.remove_dir()
            }
            None => match fs::remove_dir_all(self.root.join(uid)) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                r => r,
            },
        }
    }
}
