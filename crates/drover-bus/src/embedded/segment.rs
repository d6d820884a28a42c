//! Segment files: naming, a buffered frame reader shared by recovery and consumers, the
//! recovery scan, and the in-memory list of a stream's segments.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use super::codec::{self, HEADER_LEN, MAX_BODY};
use crate::Offset;

mod resync;
pub(crate) use self::resync::resync;

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
    /// The file ends inside the frame (its header, or before the length it declares): a write
    /// torn by a crash, one still in progress, or a damaged length.
    Incomplete(&'static str),
    /// A frame that cannot be intact: an impossible length or a checksum mismatch.
    Corrupt(&'static str),
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

    /// Moves to another frame boundary (after damage, or back to a frame to look at again).
    pub(crate) fn jump_to(&mut self, pos: u64) {
        self.buf.clear();
        self.start = 0;
        self.pos = pos;
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
                Frame::Incomplete("incomplete frame header")
            } else {
                Frame::End
            });
        }
        let mut h = [0; HEADER_LEN];
        h.copy_from_slice(&self.buf[self.start..self.start + HEADER_LEN]);
        let (len, crc) = codec::header(&h);
        if !(codec::FIXED_BODY..=MAX_BODY).contains(&len) {
            return Ok(Frame::Corrupt("impossible frame length"));
        }
        if !self.fill(HEADER_LEN + len)? {
            return Ok(Frame::Incomplete("incomplete frame"));
        }
        let begin = self.start + HEADER_LEN;
        if crc32fast::hash(&self.buf[begin..begin + len]) != crc {
            return Ok(Frame::Corrupt("checksum mismatch"));
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

/// A stretch of a segment without an intact record where one was expected, with intact records
/// after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Damaged {
    /// Where it starts in the file, and its length (0: offsets are missing, but no bytes).
    pub pos: u64,
    pub len: u64,
    /// The offset expected at `pos`.
    pub expected: Offset,
    /// The offset of the intact record at `pos + len`.
    pub resume: Offset,
    pub why: String,
}

/// What follows the last intact record of a segment, when something does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Tail {
    pub pos: u64,
    pub len: u64,
    pub why: String,
    /// The file ends inside the first frame of the tail: what a write torn by a crash leaves.
    /// Otherwise the tail holds a complete frame (or garbage) that is not intact: damage.
    pub incomplete: bool,
}

/// What the scan of a whole segment found.
#[derive(Debug)]
pub(crate) struct Scan {
    /// Length of the segment up to the end of its last intact record.
    pub valid_len: u64,
    /// The offset the next record would get.
    pub next_offset: Offset,
    pub first_appended_ms: Option<i64>,
    pub last_appended_ms: Option<i64>,
    pub index: Vec<(Offset, u64)>,
    /// Damaged stretches that intact records follow (they are stepped over).
    pub damaged: Vec<Damaged>,
    /// Bytes after the last intact record, if any.
    pub tail: Option<Tail>,
}

/// Why the frame at the reader's position is no record of the expected offset.
struct Problem {
    why: String,
    incomplete: bool,
}

/// Reads a whole segment, checking every frame's CRC and that offsets count up from `base`.
/// Damage followed by intact records is stepped over (see [`resync`]) and listed; whatever
/// follows the last intact record is the tail.
pub(crate) fn scan(path: &Path, base: Offset) -> io::Result<Scan> {
    let mut reader = SegmentReader::open(path, 0)?;
    let file_len = reader.file.metadata()?.len();
    let mut s = Scan {
        valid_len: 0,
        next_offset: base,
        first_appended_ms: None,
        last_appended_ms: None,
        index: Vec::new(),
        damaged: Vec::new(),
        tail: None,
    };
    let mut indexed = 0;
    loop {
        let at = reader.position();
        let problem = match reader.next_frame()? {
            Frame::End => break,
            Frame::Incomplete(why) => Problem {
                why: why.to_owned(),
                incomplete: true,
            },
            Frame::Corrupt(why) => Problem {
                why: why.to_owned(),
                incomplete: false,
            },
            Frame::Record { pos, body } => match codec::peek(body) {
                Ok((offset, appended)) if offset >= s.next_offset => {
                    if offset > s.next_offset {
                        // Intact, but records before it are missing without a trace.
                        s.damaged.push(Damaged {
                            pos,
                            len: 0,
                            expected: s.next_offset,
                            resume: offset,
                            why: format!("offset {offset} where {} was expected", s.next_offset),
                        });
                    }
                    if pos >= indexed + INDEX_INTERVAL {
                        s.index.push((offset, pos));
                        indexed = pos;
                    }
                    s.first_appended_ms.get_or_insert(appended);
                    s.last_appended_ms = Some(appended);
                    s.next_offset = offset + 1;
                    s.valid_len = reader.position();
                    continue;
                }
                Ok((offset, _)) => Problem {
                    why: format!("offset {offset} where {} was expected", s.next_offset),
                    incomplete: false,
                },
                Err(e) => Problem {
                    why: e.to_string(),
                    incomplete: false,
                },
            },
        };
        match resync(path, at, file_len, s.next_offset)? {
            Some((resume_at, offset)) => {
                s.damaged.push(Damaged {
                    pos: at,
                    len: resume_at - at,
                    expected: s.next_offset,
                    resume: offset,
                    why: problem.why,
                });
                s.next_offset = offset;
                reader.jump_to(resume_at);
            }
            None => {
                s.tail = Some(Tail {
                    pos: at,
                    len: file_len.saturating_sub(at),
                    why: problem.why,
                    incomplete: problem.incomplete,
                });
                break;
            }
        }
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
    use crate::StreamKey;
    use drover_model::Event;

    fn event(id: &str, data: Vec<u8>) -> Event {
        Event {
            id: id.into(),
            ty: "t".into(),
            channel: "c".into(),
            time: chrono::DateTime::from_timestamp(1, 0).unwrap_or_default(),
            content_type: None,
            data_schema: None,
            application: "a".into(),
            application_uid: "u".into(),
            device: "d".into(),
            device_uid: "du".into(),
            sender: "d".into(),
            sender_uid: "du".into(),
            instance: "i".into(),
            extensions: Vec::new(),
            data: data.into(),
        }
    }

    fn frame(offset: Offset, data: Vec<u8>) -> Vec<u8> {
        let mut f = Vec::new();
        codec::encode(
            &event(&format!("e{offset}"), data),
            &StreamKey::new("a", "u"),
            &mut f,
        );
        codec::seal(&mut f, offset, 1000 + offset as i64);
        f
    }

    /// A segment of records `base..base + n` (each with `data(offset)`) and their positions.
    fn segment_of(base: Offset, n: u64, data: impl Fn(Offset) -> Vec<u8>) -> (Vec<u8>, Vec<u64>) {
        let mut bytes = Vec::new();
        let mut starts = Vec::new();
        for o in base..base + n {
            starts.push(bytes.len() as u64);
            bytes.extend_from_slice(&frame(o, data(o)));
        }
        (bytes, starts)
    }

    fn scan_of(bytes: &[u8], base: Offset) -> Scan {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = path(dir.path(), base);
        std::fs::write(&p, bytes).expect("write");
        scan(&p, base).expect("scan")
    }

    #[test]
    fn a_flipped_bit_loses_one_record() {
        let (mut bytes, starts) = segment_of(5, 20, |_| vec![7; 40]);
        bytes[starts[8] as usize + 30] ^= 0x10;
        let s = scan_of(&bytes, 5);
        assert_eq!(s.next_offset, 25);
        assert_eq!(s.valid_len, bytes.len() as u64);
        assert!(s.tail.is_none());
        assert_eq!(s.damaged.len(), 1);
        let d = &s.damaged[0];
        assert_eq!((d.pos, d.len), (starts[8], starts[9] - starts[8]));
        assert_eq!((d.expected, d.resume), (13, 14));
        assert_eq!(d.why, "checksum mismatch");
    }

    #[test]
    fn a_damaged_length_is_resynchronised_byte_by_byte() {
        for (byte, value) in [(3, 0x40), (0, 0), (1, 0x02)] {
            let (mut bytes, starts) = segment_of(1, 10, |_| vec![1; 100]);
            bytes[starts[4] as usize + byte] = value;
            let s = scan_of(&bytes, 1);
            assert_eq!(s.damaged.len(), 1, "length byte {byte}");
            assert_eq!(s.damaged[0].pos, starts[4]);
            assert_eq!(s.damaged[0].pos + s.damaged[0].len, starts[5]);
            assert_eq!(s.damaged[0].resume, 6);
            assert_eq!(s.next_offset, 11);
        }
    }

    #[test]
    fn zeroed_stretches_over_several_records_are_stepped_over() {
        let (mut bytes, starts) = segment_of(1, 30, |o| vec![o as u8; 60]);
        let (from, to) = (starts[10] as usize + 5, starts[14] as usize + 20);
        bytes[from..to].fill(0);
        let s = scan_of(&bytes, 1);
        assert_eq!(s.damaged.len(), 1);
        let d = &s.damaged[0];
        assert_eq!((d.pos, d.pos + d.len), (starts[10], starts[15]));
        // Records 11..=15 (offsets) lost; 16 resumes.
        assert_eq!((d.expected, d.resume), (11, 16));
        assert_eq!(s.next_offset, 31);
    }

    #[test]
    fn a_frame_inside_a_damaged_payload_is_not_taken_for_a_record() {
        // Record 4 carries, as its data, a well-formed frame with the offset record 5 has.
        let (mut bytes, starts) = segment_of(1, 8, |o| {
            if o == 4 {
                frame(5, vec![9; 30])
            } else {
                vec![2; 30]
            }
        });
        // Damage record 4's id: its length is intact, so scanning resumes at its declared end.
        bytes[starts[3] as usize + codec::HEADER_LEN + codec::FIXED_BODY + 1] ^= 1;
        let s = scan_of(&bytes, 1);
        assert_eq!(s.damaged.len(), 1);
        assert_eq!(s.damaged[0].pos + s.damaged[0].len, starts[4]);
        assert_eq!(s.next_offset, 9);
    }

    #[test]
    fn tails_are_torn_or_damaged() {
        let (bytes, starts) = segment_of(1, 6, |_| vec![3; 50]);
        // Cut in the middle of the last record: an incomplete write.
        let torn = &bytes[..bytes.len() - 10];
        let s = scan_of(torn, 1);
        assert_eq!(s.valid_len, starts[5]);
        let tail = s.tail.expect("a tail");
        assert!(tail.incomplete);
        assert_eq!(
            (tail.pos, tail.len),
            (starts[5], torn.len() as u64 - starts[5])
        );
        // A flipped bit in the complete last record: damage, not a torn write.
        let mut flipped = bytes.clone();
        let n = flipped.len();
        flipped[n - 3] ^= 4;
        let s = scan_of(&flipped, 1);
        let tail = s.tail.expect("a tail");
        assert!(!tail.incomplete);
        assert_eq!(s.next_offset, 6);
        // Damage followed by an incomplete write: nothing intact after it, so a tail.
        let mut both = bytes[..bytes.len() - 10].to_vec();
        both[starts[4] as usize + 20] ^= 1;
        let s = scan_of(&both, 1);
        assert!(s.damaged.is_empty());
        assert_eq!(
            s.tail.map(|t| (t.pos, t.incomplete)),
            Some((starts[4], false))
        );
    }

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
