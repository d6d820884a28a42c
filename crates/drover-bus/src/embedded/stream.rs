//! What all parts of the log share about one stream: its key and directory, the published end
//! offset, the segment list, the consumer groups, and the state of its directory.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use tokio::sync::watch;

use super::damage::DamageLog;
use super::recovery::StreamFileError;
use super::segment::Segments;
use crate::{Offset, StreamKey};

pub(crate) const META_FILE: &str = "stream.meta";
pub(crate) const GROUPS_FILE: &str = "groups";

/// Locks a mutex, ignoring poisoning: every critical section here leaves the data consistent.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Makes a directory's entries (created, renamed, removed files) durable.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Writes a file atomically: a temporary file, fsynced, renamed over the old one, and the
/// directory fsynced.
pub(crate) fn write_atomically(dir: &Path, name: &str, contents: &[u8]) -> io::Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    let mut f = File::create(&tmp)?;
    f.write_all(contents)?;
    f.sync_all()?;
    drop(f);
    fs::rename(&tmp, dir.join(name))?;
    sync_dir(dir)
}

/// The published end of a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Tail {
    /// The last durable offset (0: none yet).
    pub end: Offset,
    /// False once the stream is deleted or the log closed: consumers stop.
    pub live: bool,
}

#[derive(Debug, Default)]
pub(crate) struct Groups {
    pub offsets: BTreeMap<String, Offset>,
    /// Changed since last written.
    pub dirty: bool,
}

#[derive(Debug)]
pub(crate) struct DirState {
    pub exists: bool,
    pub deleted: bool,
}

/// Bytes of the newest records each stream keeps in memory for consumers that follow it.
pub(crate) const RECENT_BYTES: usize = 512 << 10;

/// The newest committed frames of a stream, as the writer wrote them (sealed), so that a
/// consumer following the stream reads them without a system call or a blocking thread.
/// Holds whole commits, oldest first, at most [`RECENT_BYTES`] (and at least the newest
/// commit); only durable records ever enter it.
#[derive(Debug, Default)]
pub(crate) struct Recent {
    /// (offset of the first frame, frames).
    chunks: std::collections::VecDeque<(Offset, bytes::Bytes)>,
    bytes: usize,
}

impl Recent {
    /// Adds the frames of a commit, whose first record has offset `first`.
    pub(crate) fn push(&mut self, first: Offset, frames: bytes::Bytes) {
        self.bytes += frames.len();
        self.chunks.push_back((first, frames));
        while self.bytes > RECENT_BYTES && self.chunks.len() > 1 {
            if let Some((_, old)) = self.chunks.pop_front() {
                self.bytes -= old.len();
            }
        }
    }

    pub(crate) fn clear(&mut self) {
        self.chunks.clear();
        self.bytes = 0;
    }

    /// The frames from offset `from` on, if `from` is held: the chunk holding it and the
    /// chunks after it (cheap clones).
    pub(crate) fn since(&self, from: Offset) -> Option<Vec<bytes::Bytes>> {
        let i = self
            .chunks
            .partition_point(|(first, _)| *first <= from)
            .checked_sub(1)?;
        Some(self.chunks.range(i..).map(|(_, b)| b.clone()).collect())
    }
}

pub(crate) struct StreamShared {
    /// Unique within one open log (the writer's key for the stream).
    pub id: u64,
    pub key: StreamKey,
    pub dir: PathBuf,
    pub tail: watch::Sender<Tail>,
    pub segments: Mutex<Segments>,
    pub groups: Mutex<Groups>,
    /// Serializes creating, writing group offsets into, and removing the directory.
    pub dir_state: Mutex<DirState>,
    /// Set (by the writer) when the stream is deleted; appends still queued then fail.
    pub deleted: AtomicBool,
    /// The newest durable records (filled by the writer before it publishes a new end).
    pub recent: Mutex<Recent>,
    /// Damaged stretches met in the stream's segments, and their counters.
    pub damage: Mutex<DamageLog>,
}

impl StreamShared {
    pub(crate) fn new(id: u64, key: StreamKey, dir: PathBuf, end: Offset, exists: bool) -> Self {
        Self {
            id,
            key,
            dir,
            tail: watch::Sender::new(Tail { end, live: true }),
            segments: Mutex::default(),
            groups: Mutex::default(),
            dir_state: Mutex::new(DirState {
                exists,
                deleted: false,
            }),
            deleted: AtomicBool::new(false),
            recent: Mutex::default(),
            damage: Mutex::default(),
        }
    }

    /// A stand-in for a deleted stream: consumers of it end at once.
    pub(crate) fn gone(key: StreamKey) -> Self {
        let s = Self::new(u64::MAX, key, PathBuf::new(), 0, false);
        s.tail.send_modify(|t| t.live = false);
        s.deleted.store(true, Ordering::Relaxed);
        s
    }

    pub(crate) fn is_deleted(&self) -> bool {
        self.deleted.load(Ordering::Acquire)
    }

    pub(crate) fn end(&self) -> Offset {
        self.tail.borrow().end
    }

    /// Creates the stream's directory with its `stream.meta` if it does not exist yet; false if
    /// the stream was deleted (the directory is never created again then).
    pub(crate) fn ensure_dir(&self) -> io::Result<bool> {
        let mut state = lock(&self.dir_state);
        self.ensure_dir_locked(&mut state)
    }

    fn ensure_dir_locked(&self, state: &mut DirState) -> io::Result<bool> {
        if state.deleted {
            return Ok(false);
        }
        if !state.exists {
            match fs::create_dir(&self.dir) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
            }
            let meta = format!(
                "drover-stream 1\napp={}\nuid={}\n",
                self.key.app.replace('\n', " "),
                self.key.app_uid
            );
            write_atomically(&self.dir, META_FILE, meta.as_bytes())?;
            if let Some(parent) = self.dir.parent() {
                sync_dir(parent)?;
            }
            state.exists = true;
        }
        Ok(true)
    }

    /// Writes the group offsets if they changed since last written.
    pub(crate) fn flush_groups(&self) -> io::Result<()> {
        let mut state = lock(&self.dir_state);
        let snapshot = {
            let mut groups = lock(&self.groups);
            if !groups.dirty {
                return Ok(());
            }
            groups.dirty = false;
            groups.offsets.clone()
        };
        let result = match self.ensure_dir_locked(&mut state) {
            Ok(false) => return Ok(()), // deleted meanwhile
            Ok(true) => write_atomically(&self.dir, GROUPS_FILE, &encode_groups(&snapshot)),
            Err(e) => Err(e),
        };
        if result.is_err() {
            lock(&self.groups).dirty = true;
        }
        result
    }

    /// Marks the stream deleted and removes its directory.
    pub(crate) fn remove_dir(&self) -> io::Result<()> {
        let mut state = lock(&self.dir_state);
        state.deleted = true;
        self.deleted.store(true, Ordering::Release);
        self.tail.send_modify(|t| t.live = false);
        lock(&self.segments).list.clear();
        lock(&self.recent).clear();
        *lock(&self.groups) = Groups::default();
        if state.exists {
            match fs::remove_dir_all(&self.dir) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
            state.exists = false;
            if let Some(parent) = self.dir.parent() {
                sync_dir(parent)?;
            }
        }
        Ok(())
    }
}

/// Reads a small text file of a stream; `None` if it does not exist.
fn read_text(path: &Path) -> Result<Option<String>, StreamFileError> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(StreamFileError::read(path)(e)),
    };
    String::from_utf8(bytes)
        .map(Some)
        .map_err(|_| StreamFileError::Malformed {
            path: path.to_owned(),
            problem: "not valid UTF-8",
        })
}

/// `app` and `uid` from a `stream.meta` file; `None` if there is none.
pub(crate) fn read_meta(dir: &Path) -> Result<Option<(String, String)>, StreamFileError> {
    let path = dir.join(META_FILE);
    let Some(text) = read_text(&path)? else {
        return Ok(None);
    };
    let malformed = |problem| StreamFileError::Malformed {
        path: path.clone(),
        problem,
    };
    let mut lines = text.lines();
    if lines.next() != Some("drover-stream 1") {
        return Err(malformed("the first line is not \"drover-stream 1\""));
    }
    let mut app = None;
    let mut uid = None;
    for line in lines {
        if let Some(v) = line.strip_prefix("app=") {
            app = Some(v.to_owned());
        } else if let Some(v) = line.strip_prefix("uid=") {
            uid = Some(v.to_owned());
        } else if !line.is_empty() {
            return Err(malformed("a line is neither app=... nor uid=..."));
        }
    }
    match (app, uid) {
        (Some(app), Some(uid)) => Ok(Some((app, uid))),
        _ => Err(malformed("the app= or the uid= line is missing")),
    }
}

/// The groups file: a header line, then `<offset> <group>` per line.
pub(crate) fn encode_groups(groups: &BTreeMap<String, Offset>) -> Vec<u8> {
    let mut out = String::from("drover-groups 1\n");
    for (name, offset) in groups {
        out.push_str(&format!("{offset} {name}\n"));
    }
    out.into_bytes()
}

/// The committed group offsets; none if there is no groups file. The file is written
/// atomically, so a line that is not `<offset> <group>` means damage: the stream's groups cannot
/// be trusted (a group resuming from a wrong offset would skip records or repeat many).
pub(crate) fn read_groups(dir: &Path) -> Result<BTreeMap<String, Offset>, StreamFileError> {
    let path = dir.join(GROUPS_FILE);
    let Some(text) = read_text(&path)? else {
        return Ok(BTreeMap::new());
    };
    let malformed = |problem| StreamFileError::Malformed {
        path: path.clone(),
        problem,
    };
    let mut lines = text.lines();
    if lines.next() != Some("drover-groups 1") {
        return Err(malformed("the first line is not \"drover-groups 1\""));
    }
    let mut groups = BTreeMap::new();
    for line in lines {
        match line
            .split_once(' ')
            .and_then(|(o, n)| Some((o.parse::<Offset>().ok()?, n)))
        {
            Some((offset, name)) if !name.is_empty() => {
                groups.insert(name.to_owned(), offset);
            }
            _ => return Err(malformed("a line is not \"<offset> <group>\"")),
        }
    }
    Ok(groups)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recent_keeps_the_newest_commits() {
        let chunk = |n: usize| bytes::Bytes::from(vec![0u8; n]);
        let mut r = Recent::default();
        assert!(r.since(1).is_none());
        r.push(1, chunk(100));
        r.push(5, chunk(100));
        assert!(r.since(0).is_none());
        assert_eq!(r.since(1).map(|c| c.len()), Some(2));
        assert_eq!(r.since(4).map(|c| c.len()), Some(2));
        assert_eq!(r.since(5).map(|c| c.len()), Some(1));
        assert_eq!(r.since(99).map(|c| c.len()), Some(1));
        // Over the budget: the oldest commits go, the newest stays even if it alone is larger.
        r.push(9, chunk(RECENT_BYTES));
        assert!(r.since(5).is_none());
        assert_eq!(r.since(9).map(|c| c.len()), Some(1));
        r.push(20, chunk(RECENT_BYTES + 1));
        assert!(r.since(9).is_none());
        assert_eq!(r.bytes, RECENT_BYTES + 1);
        r.clear();
        assert!(r.since(20).is_none());
    }

    #[test]
    fn groups_roundtrip() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut g = BTreeMap::new();
        g.insert("integration".to_owned(), 42);
        g.insert("with space".to_owned(), u64::MAX);
        write_atomically(dir.path(), GROUPS_FILE, &encode_groups(&g)).expect("write");
        assert_eq!(read_groups(dir.path()).expect("read"), g);
        assert!(!dir.path().join("groups.tmp").exists());
    }

    #[test]
    fn damaged_files_name_themselves() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(read_meta(dir.path()).expect("missing").is_none());
        assert!(read_groups(dir.path()).expect("missing").is_empty());
        fs::write(
            dir.path().join(META_FILE),
            "drover-stream 1\napp=a\nuid=u\n",
        )
        .expect("write");
        assert_eq!(
            read_meta(dir.path()).expect("meta"),
            Some(("a".into(), "u".into()))
        );
        for (file, bytes, problem) in [
            (
                META_FILE,
                &b"drover-stream 1\napp=\xff\nuid=u\n"[..],
                "not valid UTF-8",
            ),
            (
                META_FILE,
                b"drover-stream 1\napp=a\n",
                "uid= line is missing",
            ),
            (
                META_FILE,
                b"drover-strea\x00 1\napp=a\nuid=u\n",
                "first line",
            ),
            (
                GROUPS_FILE,
                b"drover-groups 1\n12 g\nx1 h\n",
                "<offset> <group>",
            ),
            (
                GROUPS_FILE,
                b"drover-groups 1\n\xfe2 g\n",
                "not valid UTF-8",
            ),
        ] {
            fs::write(dir.path().join(file), bytes).expect("write");
            let e = if file == META_FILE {
                read_meta(dir.path()).map(|_| ())
            } else {
                read_groups(dir.path()).map(|_| ())
            }
            .expect_err("damaged");
            assert_eq!(e.path(), dir.path().join(file));
            let shown = e.to_string();
            assert!(shown.contains(file) && shown.contains(problem), "{shown}");
            assert!(e.brief().starts_with(file), "{}", e.brief());
        }
    }
}
