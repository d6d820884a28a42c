//! Opening a log directory: every stream's files are read back, the newest segment of each is
//! scanned (damage stepped over, a torn or damaged end cut after copying it aside), and a stream
//! whose files cannot be used is set aside as out of service instead of failing the whole log.

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::damage::{self, DamageLog, Region};
use super::segment::{self, SegmentInfo};
use super::stream;
use super::{unix_ms, TOMBSTONES_FILE};
use crate::{Offset, StreamKey};

/// A file of one stream that cannot be used. The stream is out of service (see
/// [`LogConfig::isolate_broken_streams`](super::LogConfig::isolate_broken_streams)).
#[derive(Debug, thiserror::Error)]
pub enum StreamFileError {
    #[error("{}: cannot be read: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{}: cannot be written: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{}: cannot copy its damaged end aside (so it is not cut): {source}", path.display())]
    Quarantine {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{}: {problem}", path.display())]
    Malformed {
        path: PathBuf,
        problem: &'static str,
    },
}

impl StreamFileError {
    /// The file.
    pub fn path(&self) -> &Path {
        match self {
            Self::Read { path, .. }
            | Self::Write { path, .. }
            | Self::Quarantine { path, .. }
            | Self::Malformed { path, .. } => path,
        }
    }

    /// The file's name (no directories) and the problem: for answers to clients and to
    /// unauthenticated probes, which should not learn the server's paths.
    pub fn brief(&self) -> String {
        let name = self
            .path()
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        match self {
            Self::Read { source, .. } => format!("{name} cannot be read ({source})"),
            Self::Write { source, .. } => format!("{name} cannot be written ({source})"),
            Self::Quarantine { source, .. } => {
                format!("the damaged end of {name} cannot be copied aside ({source})")
            }
            Self::Malformed { problem, .. } => format!("{name} is damaged ({problem})"),
        }
    }

    pub(crate) fn read(path: &Path) -> impl FnOnce(io::Error) -> Self + '_ {
        move |source| Self::Read {
            path: path.to_owned(),
            source,
        }
    }

    pub(crate) fn write(path: &Path) -> impl FnOnce(io::Error) -> Self + '_ {
        move |source| Self::Write {
            path: path.to_owned(),
            source,
        }
    }
}

/// A stream whose files could not be used when the log was opened: its appends and reads fail
/// with [`BusError::Unavailable`](crate::BusError::Unavailable) naming the problem; every
/// other stream is served.
#[derive(Debug, Clone)]
pub struct OutOfService {
    /// The application uid (the stream's directory).
    pub app_uid: String,
    pub error: Arc<StreamFileError>,
}

/// A stream found on disk.
pub(super) struct Recovered {
    pub key: StreamKey,
    pub segments: Vec<SegmentInfo>,
    pub next_offset: Offset,
    pub index_mark: u64,
    pub groups: BTreeMap<String, Offset>,
    pub damage: DamageLog,
}

/// What a log directory holds.
pub(super) struct Found {
    pub streams: Vec<Recovered>,
    pub out_of_service: Vec<OutOfService>,
    pub tombstones: HashSet<String>,
}

/// Reads the log in `root`. A stream whose files cannot be used fails the whole open, unless
/// `isolate`: then it is listed as out of service (and logged at error level, naming the file).
pub(super) fn recover(root: &Path, isolate: bool) -> Result<Found, StreamFileError> {
    fs::create_dir_all(root).map_err(StreamFileError::write(root))?;
    let tombstones = read_tombstones(root)?;
    let mut found = Found {
        streams: Vec::new(),
        out_of_service: Vec::new(),
        tombstones,
    };
    for entry in fs::read_dir(root).map_err(StreamFileError::read(root))? {
        let entry = entry.map_err(StreamFileError::read(root))?;
        let path = entry.path();
        if !entry
            .file_type()
            .map_err(StreamFileError::read(&path))?
            .is_dir()
        {
            continue;
        }
        let name = entry.file_name();
        let Some(uid) = name.to_str().filter(|u| StreamKey::check_uid(u).is_ok()) else {
            tracing::warn!(entry = %path.display(), "ignoring a directory that is no stream");
            continue;
        };
        if found.tombstones.contains(uid) {
            // A deletion that a crash interrupted.
            if let Err(e) = fs::remove_dir_all(&path) {
                tracing::error!(dir = %path.display(), error = %e,
                    "cannot finish removing the directory of a deleted stream");
            }
            continue;
        }
        match recover_stream(&path, uid) {
            Ok(Some(s)) => found.streams.push(s),
            Ok(None) => {}
            Err(e) if isolate => {
                tracing::error!(
                    app_uid = uid, file = %e.path().display(), error = %e,
                    "event stream out of service: its appends and reads fail until the file is \
                     repaired (or the stream's directory removed) and the server restarted; \
                     every other stream is served"
                );
                found.out_of_service.push(OutOfService {
                    app_uid: uid.to_owned(),
                    error: Arc::new(e),
                });
            }
            Err(e) => return Err(e),
        }
    }
    Ok(found)
}

/// The uids of deleted streams, one a line. A line torn by a crash is ended (so that the next
/// uid gets a line of its own); lines that are no uid are skipped with a warning.
fn read_tombstones(root: &Path) -> Result<HashSet<String>, StreamFileError> {
    let path = root.join(TOMBSTONES_FILE);
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(HashSet::new()),
        Err(e) => return Err(StreamFileError::read(&path)(e)),
    };
    if !bytes.is_empty() && !bytes.ends_with(b"\n") {
        let mut f = fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(StreamFileError::write(&path))?;
        io::Write::write_all(&mut f, b"\n")
            .and_then(|()| f.sync_data())
            .map_err(StreamFileError::write(&path))?;
    }
    let mut uids = HashSet::new();
    for line in String::from_utf8_lossy(&bytes).lines() {
        if line.is_empty() {
            continue;
        }
        if StreamKey::check_uid(line).is_ok() {
            uids.insert(line.to_owned());
        } else {
            tracing::warn!(file = %path.display(), line, "ignoring a damaged line of deleted streams");
        }
    }
    Ok(uids)
}

fn mtime_ms(path: &Path) -> i64 {
    fs::metadata(path)
        .and_then(|m| m.modified())
        .map_or(0, unix_ms)
}

fn recover_stream(dir: &Path, uid: &str) -> Result<Option<Recovered>, StreamFileError> {
    let mut bases = Vec::new();
    for entry in fs::read_dir(dir).map_err(StreamFileError::read(dir))? {
        let entry = entry.map_err(StreamFileError::read(dir))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(base) = segment::parse_name(name) {
            bases.push(base);
        } else if name.ends_with(".tmp") {
            let path = entry.path();
            fs::remove_file(&path).map_err(StreamFileError::write(&path))?;
        }
    }
    bases.sort_unstable();
    let app = match stream::read_meta(dir)? {
        Some((app, meta_uid)) => {
            if meta_uid != uid {
                tracing::warn!(dir = %dir.display(), meta_uid, "stream.meta names another uid");
            }
            app
        }
        None if bases.is_empty() => {
            // Creation was interrupted before anything was written.
            fs::remove_dir_all(dir).map_err(StreamFileError::write(dir))?;
            return Ok(None);
        }
        None => {
            tracing::warn!(dir = %dir.display(), "stream.meta is missing; application name unknown");
            String::new()
        }
    };
    let key = StreamKey::new(app, uid);
    let mut damage = DamageLog::default();
    let (segments, next_offset, index_mark) = recover_segments(&key, dir, &bases, &mut damage)?;
    let mut groups = stream::read_groups(dir)?;
    let mut clamped = false;
    for (group, offset) in &mut groups {
        if *offset >= next_offset {
            clamped = true;
            // Only durable records can be committed: the cut end held acknowledged ones.
            tracing::error!(
                app = %key.app, app_uid = uid, group, committed = *offset, end = next_offset - 1,
                "a consumer group had committed records that were cut as damaged (see the \
                 quarantine file): it resumes at the stream's end, so that it skips no record \
                 appended from now on"
            );
            *offset = next_offset - 1;
        }
    }
    if clamped {
        // Now, not at the next flush: records appended after a crash would get the cut offsets
        // again, and the old offsets in the file would skip them.
        let path = dir.join(stream::GROUPS_FILE);
        stream::write_atomically(dir, stream::GROUPS_FILE, &stream::encode_groups(&groups))
            .map_err(StreamFileError::write(&path))?;
    }
    Ok(Some(Recovered {
        key,
        segments,
        next_offset,
        index_mark,
        groups,
        damage,
    }))
}

/// The stream's segments (oldest first), the offset of the next record and the newest segment's
/// last index mark. The newest segment is scanned whole; of the others only the first record is
/// read (to bound the age of the segment before).
fn recover_segments(
    key: &StreamKey,
    dir: &Path,
    bases: &[Offset],
    damage: &mut DamageLog,
) -> Result<(Vec<SegmentInfo>, Offset, u64), StreamFileError> {
    let mut segments = Vec::with_capacity(bases.len());
    let mut next_offset = 1;
    let mut index_mark = 0;
    // Sealed segments: the newest record's time is bounded by the next segment's first record's
    // (one small read per segment); retention reads the segment when the bound does not decide.
    let mut next_first = None;
    for (i, &base) in bases.iter().enumerate().rev() {
        let path = segment::path(dir, base);
        if i + 1 == bases.len() {
            let scan = segment::scan(&path, base).map_err(StreamFileError::read(&path))?;
            for d in &scan.damaged {
                damage.report(key, dir, &Region::stepped_over(base, d));
            }
            if let Some(tail) = &scan.tail {
                cut_tail(key, &path, tail, damage)?;
            }
            next_offset = scan.next_offset;
            index_mark = scan.index.last().map_or(0, |&(_, pos)| pos);
            next_first = scan.first_appended_ms;
            segments.push(SegmentInfo {
                base,
                size: scan.valid_len,
                last_appended_ms: scan.last_appended_ms.unwrap_or_else(|| mtime_ms(&path)),
                exact: true,
                index: scan.index,
            });
        } else {
            let size = fs::metadata(&path)
                .map_err(StreamFileError::read(&path))?
                .len();
            let last = next_first.unwrap_or_else(|| mtime_ms(&path));
            next_first = segment::first_appended(&path).map_err(StreamFileError::read(&path))?;
            segments.push(SegmentInfo {
                base,
                size,
                last_appended_ms: last,
                exact: false,
                index: Vec::new(),
            });
        }
    }
    segments.reverse();
    Ok((segments, next_offset, index_mark))
}

/// Cuts what follows the last intact record of the newest segment, after copying it aside:
/// an incomplete frame is a write torn by a crash (never acknowledged; a warning), anything else
/// is damage that may have held acknowledged records (an error).
fn cut_tail(
    key: &StreamKey,
    path: &Path,
    tail: &segment::Tail,
    damage: &mut DamageLog,
) -> Result<(), StreamFileError> {
    let kind = if tail.incomplete { "torn" } else { "damaged" };
    let copy = damage::quarantine(path, kind, tail.pos, tail.len).map_err(|source| {
        StreamFileError::Quarantine {
            path: path.to_owned(),
            source,
        }
    })?;
    if tail.incomplete {
        tracing::warn!(
            app = %key.app, segment = %path.display(), byte_offset = tail.pos,
            length = tail.len, reason = %tail.why, copy = %copy.display(),
            "cutting an incomplete last write (torn by a crash, never acknowledged) off the log"
        );
        damage.stats.torn_writes += 1;
    } else {
        tracing::error!(
            app = %key.app, app_uid = %key.app_uid, segment = %path.display(),
            byte_offset = tail.pos, length = tail.len, reason = %tail.why,
            quarantine = %copy.display(),
            "damaged records at the end of the event log, with no intact record after them: \
             copied aside and cut (they may have been acknowledged)"
        );
        damage.stats.damaged_tails += 1;
        damage.stats.damaged_bytes += tail.len;
    }
    let f = fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(StreamFileError::write(path))?;
    f.set_len(tail.pos)
        .and_then(|()| f.sync_all())
        .map_err(StreamFileError::write(path))
}
