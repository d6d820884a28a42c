//! Segment files: naming, a buffered frame reader shared by recovery and consumers, the
//! recovery scan, and the in-memory list of a stream's segments.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use super::codec::{self, HEADER_LEN, MAX_BODY};
use crate::Offset;

/// A sparse index entry is kept every this many bytes of a segment, so that a reader starting in
/// the middle of a segment skips at most this much.
pub(crate) const INDEX_INTERVAL: u64 = 64 * 1024;
/// How much a reader asks the file for at once.
const READ_CHUNK: usize = 64 * 1024;

/// `<base offset:020>.log`.
pub(crate) fn file_name(base: Offset) -> String {
    format!("{base:020}.log")
}

pub(crate) fn path(dir: &Path, base: Offset) -> PathBuf {
    dir.join(file_name(base))
}

/// The base offset of a segment file name, if it is one.
pub(crate) fn parse_name(name: &str) -> Option<Offset> {
    let digits = name.strip_suffix(".log")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// What a reader found at its position.
pub(crate) enum Frame<'a> {
    /// A complete frame whose CRC matches; `pos` is where it starts in the file.
    Record { pos: u64, body: &'a [u8] },
    /// The end of the file, exactly at a frame boundary.
    End,
    /// An incomplete or corrupt frame (a torn write, or damage).
    Torn(&'static str),
}

/// Reads frames sequentially from a segment file through a buffer of its own (which grows to
/// the largest frame met, at most [`MAX_BODY`]).
pub(crate) struct SegmentReader {
    file: File,
    buf: Vec<u8>,
    /// `buf[start..]` holds the file's bytes from `pos` on.
    start: usize,
    pos: u64,
    /// Where the OS file cursor is.
    file_pos: u64,
}

impl SegmentReader {
    pub(crate) fn open(path: &Path, pos: u64) -> io::Result<Self> {
        let file = File::open(path)?;
        Ok(Self {
            file,
            buf: Vec::new(),
            start: 0,
            pos,
            file_pos: 0,
        })
    }

    /// The file position of the next frame.
    pub(crate) fn position(&self) -> u64 {
        self.pos
    }

    /// Forgets bytes read ahead of the position (they may belong to a write in progress, which
    /// could still be rolled back); the next read goes to the file again.
    pub(crate) fn discard_readahead(&mut self) {
        self.buf.clear();
        self.start = 0;
        if self.buf.capacity() > 4 * READ_CHUNK {
            self.buf = Vec::new();
        }
    }

    /// Makes sure `need` bytes from `pos` are buffered; false if the file ends before.
    fn fill(&mut self, need: usize) -> io::Result<bool> {
        let have = self.buf.len() - self.start;
        if have >= need {
            return Ok(true);
        }
        if self.start > 0 {
            self.buf.copy_within(self.start.., 0);
            self.buf.truncate(have);
            self.start = 0;
        }
        let at = self.pos + have as u64;
        if self.file_pos != at {
            self.file.seek(SeekFrom::Start(at))?;
            self.file_pos = at;
        }
        let target = need.max(READ_CHUNK);
        while self.buf.len() < need {
            let old = self.buf.len();
            self.buf.resize(target, 0);
            let n = match self.file.read(&mut self.buf[old..]) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                    self.buf.truncate(old);
                    continue;
                }
                Err(e) => {
                    self.buf.truncate(old);
                    return Err(e);
                }
            };
            self.buf.truncate(old + n);
            self.file_pos += n as u64;
            if n == 0 {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// The next frame; advances past it if it is a complete, intact one.
    pub(crate) fn next_frame(&mut self) -> io::Result<Frame<'_>> {
        if !self.fill(HEADER_LEN)? {
            let partial = self.buf.len() > self.start;
            return Ok(if partial {
                Frame::Torn("incomplete frame header")
            } else {
                Frame::End
            });
        }
        let mut h = [0; HEADER_LEN];
        h.copy_from_slice(&self.buf[self.start..self.start + HEADER_LEN]);
        let (len, crc) = codec::header(&h);
        if !(codec::FIXED_BODY..=MAX_BODY).contains(&len) {
            return Ok(Frame::Torn("impossible frame length"));
        }
        if !self.fill(HEADER_LEN + len)? {
            return Ok(Frame::Torn("incomplete frame"));
        }
        let begin = self.start + HEADER_LEN;
        if crc32fast::hash(&self.buf[begin..begin + len]) != crc {
            return Ok(Frame::Torn("checksum mismatch"));
        }
        let pos = self.pos;
        self.start = begin + len;
        self.pos += (HEADER_LEN + len) as u64;
        Ok(Frame::Record {
            pos,
            body: &self.buf[begin..begin + len],
        })
    }
}

/// What the recovery scan found in a segment.
#[derive(Debug)]
pub(crate) struct Scan {
    /// Length of the intact prefix.
    pub valid_len: u64,
    /// The offset the next record would get.
    pub next_offset: Offset,
    pub first_appended_ms: Option<i64>,
    pub last_appended_ms: Option<i64>,
    pub index: Vec<(Offset, u64)>,
    /// Why the scan stopped before the end of the file, if it did.
    pub torn: Option<String>,
}

/// Reads a whole segment, checking every frame's CRC and that offsets count up from `base`.
pub(crate) fn scan(path: &Path, base: Offset) -> io::Result<Scan> {
    let mut reader = SegmentReader::open(path, 0)?;
    let mut s = Scan {
        valid_len: 0,
        next_offset: base,
        first_appended_ms: None,
        last_appended_ms: None,
        index: Vec::new(),
        torn: None,
    };
    let mut indexed = 0;
    loop {
        match reader.next_frame()? {
            Frame::End => break,
            Frame::Torn(why) => {
                s.torn = Some(why.to_owned());
                break;
            }
            Frame::Record { pos, body } => match codec::peek(body) {
                Ok((offset, appended)) if offset == s.next_offset => {
                    if pos >= indexed + INDEX_INTERVAL {
                        s.index.push((offset, pos));
                        indexed = pos;
                    }
                    s.first_appended_ms.get_or_insert(appended);
                    s.last_appended_ms = Some(appended);
                    s.next_offset += 1;
                }
                Ok((offset, _)) => {
                    s.torn = Some(format!(
                        "offset {offset} where {} was expected",
                        s.next_offset
                    ));
                    break;
                }
                Err(e) => {
                    s.torn = Some(e.to_string());
                    break;
                }
            },
        }
        s.valid_len = reader.position();
    }
    Ok(s)
}

/// The append time of a segment's first record, if it has an intact one.
pub(crate) fn first_appended(path: &Path) -> io::Result<Option<i64>> {
    let mut reader = SegmentReader::open(path, 0)?;
    Ok(match reader.next_frame()? {
        Frame::Record { body, .. } => codec::peek(body).ok().map(|(_, t)| t),
        _ => None,
    })
}

/// One segment as readers and retention see it.
#[derive(Debug, Clone)]
pub(crate) struct SegmentInfo {
    pub base: Offset,
    /// Bytes of durable records.
    pub size: u64,
    /// Append time of the newest record; unless `exact`, an upper bound of it (the next
    /// segment's first record's time: segments sealed before the log was opened are not read).
    pub last_appended_ms: i64,
    pub exact: bool,
    /// Sparse `(offset, file position)` entries, ascending.
    pub index: Vec<(Offset, u64)>,
}

/// A stream's segments, oldest first; the last one is the one being written.
#[derive(Debug, Default)]
pub(crate) struct Segments {
    pub list: VecDeque<SegmentInfo>,
}

/// Where a reader of `next` should start.
pub(crate) struct SeekTo {
    pub base: Offset,
    /// File position of a record at or before `next` in that segment, and its offset.
    pub pos: u64,
    pub offset: Offset,
}

impl Segments {
    pub(crate) fn total_bytes(&self) -> u64 {
        self.list.iter().map(|s| s.size).sum()
    }

    /// The oldest retained offset (the base of the oldest segment).
    pub(crate) fn oldest(&self) -> Option<Offset> {
        self.list.front().map(|s| s.base)
    }

    /// The segment holding `next` (the one with the greatest base not above it), or `None` when
    /// `next` is older than every retained segment or there is none.
    pub(crate) fn seek(&self, next: Offset) -> Option<SeekTo> {
        let i = self.list.partition_point(|s| s.base <= next);
        let seg = self.list.get(i.checked_sub(1)?)?;
        let j = seg.index.partition_point(|&(o, _)| o <= next);
        let (offset, pos) = j.checked_sub(1).map_or((seg.base, 0), |j| seg.index[j]);
        Some(SeekTo {
            base: seg.base,
            pos,
            offset,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(file_name(42), "00000000000000000042.log");
        assert_eq!(parse_name(&file_name(42)), Some(42));
        assert_eq!(parse_name(&file_name(u64::MAX)), Some(u64::MAX));
        assert_eq!(parse_name("42.log"), None);
        assert_eq!(parse_name("0000000000000000004x.log"), None);
        assert_eq!(parse_name("00000000000000000042.tmp"), None);
    }

    #[test]
    fn seek_uses_index() {
        let mut s = Segments::default();
        for (base, index) in [(1, vec![(50, 1000), (90, 2000)]), (100, vec![])] {
            s.list.push_back(SegmentInfo {
                base,
                size: 1,
                last_appended_ms: 0,
                exact: true,
                index,
            });
        }
        let at = |n| s.seek(n).map(|k| (k.base, k.pos, k.offset));
        assert_eq!(at(0), None);
        assert_eq!(at(1), Some((1, 0, 1)));
        assert_eq!(at(49), Some((1, 0, 1)));
        assert_eq!(at(50), Some((1, 1000, 50)));
        assert_eq!(at(99), Some((1, 2000, 90)));
        assert_eq!(at(100), Some((100, 0, 100)));
        assert_eq!(at(1000), Some((100, 0, 100)));
    }
}
