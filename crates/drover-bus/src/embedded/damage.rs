//! Damaged records: stepped over, reported once, counted, and copied aside, never deleted.
//!
//! Readers, retention and recovery that meet a stretch of a segment holding no intact record
//! where one was due find where intact records resume ([`segment::resync`]) and report the
//! stretch here: an error in the log naming the stream, the segment file, the byte offset and
//! length and the offsets lost; its bytes copied to `<segment>.damaged-<byte offset>` beside
//! the segment; the stream's [`DamageStats`] counted. The damaged bytes stay where they are
//! (segments are never rewritten), so every reader steps over the same stretch: a stream
//! remembers where (`DamageLog::known`), and reports each stretch once per process.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::segment;
use super::stream::sync_dir;
use crate::{Offset, StreamKey};

/// What the log found damaged in one stream since it was opened (for metrics and operators;
/// each damaged stretch counts once, however many readers meet it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DamageStats {
    /// Damaged stretches stepped over (intact records follow them, or they end a sealed
    /// segment). Their bytes are in quarantine files.
    pub damaged_regions: u64,
    /// Bytes in those stretches.
    pub damaged_bytes: u64,
    /// Offsets that no intact record holds any more because of damage (absent to readers).
    pub lost_records: u64,
    /// Damaged tails cut off the newest segment at open (a complete frame, or garbage, after
    /// the last intact record: possibly acknowledged records), copied to quarantine files.
    pub damaged_tails: u64,
    /// Incomplete last writes cut off the newest segment at open (torn by a crash: never
    /// acknowledged).
    pub torn_writes: u64,
}

impl DamageStats {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// A damaged stretch of a segment to report.
#[derive(Debug, Clone)]
pub(crate) struct Region {
    /// The segment (its base offset).
    pub base: Offset,
    /// Where the stretch starts in the segment file, and its length.
    pub pos: u64,
    pub len: u64,
    /// The first offset absent because of it, and how many are.
    pub first_lost: Offset,
    pub lost: u64,
    /// Where (byte position) and at which offset intact records resume in the segment; `None`
    /// when the stretch reaches the segment's (durable) end.
    pub resume: Option<(u64, Offset)>,
    pub why: String,
}

impl Region {
    /// A stretch a segment scan stepped over.
    pub(crate) fn stepped_over(base: Offset, d: &segment::Damaged) -> Self {
        Self {
            base,
            pos: d.pos,
            len: d.len,
            first_lost: d.expected,
            lost: d.resume - d.expected,
            resume: Some((d.pos + d.len, d.resume)),
            why: d.why.clone(),
        }
    }
}

/// Where a reader goes from a known damaged stretch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Skip {
    /// End of the stretch (the segment's durable length when it was found, if `resume` is
    /// `None`).
    pub end: u64,
    pub resume: Option<Offset>,
}

/// A stream's damage: counters and the stretches already reported.
#[derive(Debug, Default)]
pub(crate) struct DamageLog {
    pub stats: DamageStats,
    /// Reported stretches by (segment base, byte position).
    known: BTreeMap<(Offset, u64), Skip>,
}

impl DamageLog {
    /// Where to go from a stretch reported before.
    pub(crate) fn known(&self, base: Offset, pos: u64) -> Option<Skip> {
        self.known.get(&(base, pos)).copied()
    }

    /// Reports `region` of a segment of the stream in `dir` (unless it was): copies its bytes
    /// aside, logs an error, counts it. A stretch that only grew (the newest segment's damaged
    /// end, with more written after it) updates where readers go, without a second report.
    /// If the copy fails, that is logged too: the bytes are still in the segment.
    pub(crate) fn report(&mut self, key: &StreamKey, dir: &Path, region: &Region) {
        let skip = Skip {
            end: region.resume.map_or(region.pos + region.len, |(at, _)| at),
            resume: region.resume.map(|(_, offset)| offset),
        };
        if let Some(old) = self.known.insert((region.base, region.pos), skip) {
            if old != skip {
                tracing::debug!(app = %key.app, segment = region.base, pos = region.pos,
                    "a damaged stretch reported before reaches further now");
            }
            return;
        }
        let path = segment::path(dir, region.base);
        let copy = if region.len == 0 {
            None
        } else {
            match quarantine(&path, "damaged", region.pos, region.len) {
                Ok(q) => Some(q),
                Err(e) => {
                    tracing::error!(
                        segment = %path.display(), byte_offset = region.pos, length = region.len,
                        error = %e, "cannot copy damaged bytes aside (they stay in the segment)"
                    );
                    None
                }
            }
        };
        let last_lost = region.first_lost + region.lost.saturating_sub(1);
        tracing::error!(
            app = %key.app, app_uid = %key.app_uid, segment = %path.display(),
            byte_offset = region.pos, length = region.len, reason = %region.why,
            lost_offsets = %if region.lost == 0 {
                "none".to_string()
            } else {
                format!("{}..={last_lost}", region.first_lost)
            },
            resumes_at_offset = ?skip.resume,
            quarantine = %copy.as_deref().map_or_else(|| "none".into(), |p| p.display().to_string()),
            "damaged records in the event log: stepped over, every intact record after them is kept"
        );
        self.stats.damaged_regions += 1;
        self.stats.damaged_bytes += region.len;
        self.stats.lost_records += region.lost;
    }

    /// Reports what the scan of a sealed segment found: stretches with intact records after
    /// them, and a damaged end (never cut: records up to `next_base`, the next segment's
    /// base, are lost).
    pub(crate) fn report_sealed(
        &mut self,
        key: &StreamKey,
        dir: &Path,
        base: Offset,
        scan: &segment::Scan,
        next_base: Option<Offset>,
    ) {
        for d in &scan.damaged {
            self.report(key, dir, &Region::stepped_over(base, d));
        }
        if let Some(tail) = &scan.tail {
            let region = Region {
                base,
                pos: tail.pos,
                len: tail.len,
                first_lost: scan.next_offset,
                lost: next_base.map_or(0, |b| b.saturating_sub(scan.next_offset)),
                resume: None,
                why: tail.why.clone(),
            };
            self.report(key, dir, &region);
        }
    }
}

/// Name of the quarantine file of `len` bytes at `pos` of `segment`: `<segment
/// file>.<kind>-<pos>`, or with `.<n>` appended when a file of that name holds other bytes
/// (a stretch at the same place, damaged again after a cut and later appends).
fn quarantine_name(segment: &Path, kind: &str, pos: u64, len: u64) -> io::Result<(PathBuf, bool)> {
    let base = format!(
        "{}.{kind}-{pos}",
        segment
            .file_name()
            .map_or_else(|| "segment".into(), |n| n.to_string_lossy().into_owned())
    );
    let dir = segment.parent().unwrap_or(Path::new("."));
    for n in 0u32.. {
        let name = if n == 0 {
            base.clone()
        } else {
            format!("{base}.{n}")
        };
        let path = dir.join(&name);
        match fs::metadata(&path) {
            Ok(m) if m.len() == len => return Ok((path, true)),
            Ok(_) => continue,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((path, false)),
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::other("no free quarantine file name"))
}

/// Copies `len` bytes at `pos` of `segment` to a quarantine file beside it,
/// `<segment file>.<kind>-<pos>` (durably: a temporary file, fsynced, renamed, the directory
/// fsynced); returns its path. A file already holding that many bytes from there (a stretch
/// found again after a restart) is kept.
pub(crate) fn quarantine(segment: &Path, kind: &str, pos: u64, len: u64) -> io::Result<PathBuf> {
    let (path, exists) = quarantine_name(segment, kind, pos, len)?;
    if exists {
        return Ok(path);
    }
    let mut src = File::open(segment)?;
    src.seek(SeekFrom::Start(pos))?;
    let mut tmp = path.clone().into_os_string();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut dst = File::create(&tmp)?;
    let copied = io::copy(&mut src.take(len), &mut dst)?;
    if copied != len {
        let _ = fs::remove_file(&tmp);
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("the segment ends after {copied} of {len} damaged bytes"),
        ));
    }
    dst.flush()?;
    dst.sync_all()?;
    drop(dst);
    fs::rename(&tmp, &path)?;
    if let Some(dir) = path.parent() {
        sync_dir(dir)?;
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quarantine_copies_and_never_overwrites_other_bytes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let seg = segment::path(dir.path(), 1);
        fs::write(&seg, b"0123456789").expect("write");
        let q = quarantine(&seg, "damaged", 2, 3).expect("quarantine");
        assert_eq!(
            q.file_name().and_then(|n| n.to_str()),
            Some("00000000000000000001.log.damaged-2")
        );
        assert_eq!(fs::read(&q).expect("read"), b"234");
        // The same stretch again: the same file.
        assert_eq!(quarantine(&seg, "damaged", 2, 3).expect("again"), q);
        // Another stretch at the same place: a file of its own; the first one is untouched.
        let q2 = quarantine(&seg, "damaged", 2, 5).expect("other");
        assert_ne!(q2, q);
        assert_eq!(fs::read(&q2).expect("read"), b"23456");
        assert_eq!(fs::read(&q).expect("read"), b"234");
        // Past the end: an error, and nothing left behind.
        assert!(quarantine(&seg, "damaged", 8, 5).is_err());
        let names: Vec<_> = fs::read_dir(dir.path())
            .expect("dir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names.len(), 3, "{names:?}");
    }
}
