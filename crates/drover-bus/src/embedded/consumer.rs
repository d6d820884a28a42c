//! Consumers: read a stream's segment files in batches on a blocking thread, then follow the
//! stream's published end.

use std::collections::VecDeque;
use std::io;
use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::watch;

use super::codec;
use super::damage::{Region, Skip};
use super::segment::{self, Frame, SegmentReader};
use super::stream::{lock, StreamShared, Tail};
use crate::{BusError, Consumer, Offset, Record, Result, StartFrom};

/// Where a consumer is in a segment file.
struct Cursor {
    reader: SegmentReader,
    base: Offset,
    /// The offset of the record at the reader's position.
    next: Offset,
}

pub(crate) struct EmbeddedConsumer {
    stream: Arc<StreamShared>,
    tail: watch::Receiver<Tail>,
    /// The offset of the next record to hand out (after `buffered`).
    next: Offset,
    cursor: Option<Cursor>,
    /// Records read for [`Consumer::next`] but not handed out yet (at most `batch`).
    buffered: VecDeque<Record>,
    batch: usize,
    batch_bytes: usize,
}

impl EmbeddedConsumer {
    pub(crate) fn new(
        stream: Arc<StreamShared>,
        from: StartFrom,
        batch: usize,
        batch_bytes: usize,
    ) -> Self {
        let tail = stream.tail.subscribe();
        let next = match from {
            // Reading skips forward to the oldest retained record.
            StartFrom::Earliest => 1,
            StartFrom::Latest => tail.borrow().end + 1,
            StartFrom::After(o) => o.saturating_add(1),
        };
        Self {
            stream,
            tail,
            next,
            cursor: None,
            buffered: VecDeque::new(),
            batch,
            batch_bytes,
        }
    }

    /// Up to `max` records, waiting until there is at least one; `None` once the stream is
    /// deleted or the log closed.
    async fn read(&mut self, max: usize) -> Result<Option<Vec<Record>>> {
        loop {
            let next = self.next;
            let tail = match self.tail.wait_for(|t| !t.live || t.end >= next).await {
                Ok(t) => *t,
                Err(_) => return Ok(None),
            };
            if !tail.live {
                return Ok(None);
            }
            // A consumer that follows the stream finds what it needs in memory.
            let mut recent = Vec::new();
            let mut at = next;
            read_recent(
                &self.stream,
                &mut at,
                tail.end,
                max,
                self.batch_bytes,
                &mut recent,
            )?;
            if !recent.is_empty() {
                self.next = at;
                // The file cursor (if any) is behind now; a later read from the files seeks.
                self.cursor = None;
                return Ok(Some(recent));
            }
            let stream = self.stream.clone();
            let mut cursor = self.cursor.take();
            let batch_bytes = self.batch_bytes;
            let job = tokio::task::spawn_blocking(move || {
                let mut out = Vec::new();
                let mut next = next;
                let r = read_blocking(
                    &stream,
                    &mut cursor,
                    &mut next,
                    tail.end,
                    max,
                    batch_bytes,
                    &mut out,
                );
                (cursor, next, out, r)
            });
            let (cursor, next, out, r) = job
                .await
                .map_err(|e| BusError::unavailable("reading the log", e))?;
            self.cursor = cursor;
            self.next = next;
            r?;
            if !out.is_empty() {
                return Ok(Some(out));
            }
            if self.stream.is_deleted() {
                return Ok(None);
            }
        }
    }
}

fn damaged(stream: &StreamShared, base: Offset, what: impl std::fmt::Display) -> BusError {
    BusError::Unavailable(
        format!(
            "stream of {} ({}): segment {base}: {what}",
            stream.key.app, stream.key.app_uid
        )
        .into(),
    )
}

/// A record that cannot be decoded.
fn undecodable(stream: &StreamShared, base: Offset, e: codec::CodecError) -> BusError {
    let what = format!(
        "stream of {} ({}): segment {base}",
        stream.key.app, stream.key.app_uid
    );
    BusError::unavailable(what, e)
}

fn io_error(stream: &StreamShared, e: io::Error) -> BusError {
    let what = format!(
        "reading stream of {} ({})",
        stream.key.app, stream.key.app_uid
    );
    BusError::unavailable(what, e)
}

/// A cursor at the segment holding `next` (moving `next` up to the oldest retained record if it
/// was pruned), or `None` if the stream has no segments (it was deleted). `after` is the segment
/// just finished: the one found must be newer.
fn open_at(
    stream: &StreamShared,
    next: &mut Offset,
    after: Option<Offset>,
) -> Result<Option<Cursor>> {
    for _ in 0..100 {
        let seek = {
            let segs = lock(&stream.segments);
            match (segs.seek(*next), segs.oldest()) {
                (Some(seek), _) => seek,
                (None, Some(oldest)) if oldest > *next => {
                    tracing::debug!(
                        app = %stream.key.app, from = *next, to = oldest,
                        "records were pruned; continuing at the oldest retained one"
                    );
                    *next = oldest;
                    match segs.seek(oldest) {
                        Some(seek) => seek,
                        None => return Ok(None),
                    }
                }
                _ => return Ok(None),
            }
        };
        if let Some(prev) = after {
            if seek.base <= prev {
                return Err(damaged(
                    stream,
                    prev,
                    format_args!("ends before offset {next}"),
                ));
            }
        }
        match SegmentReader::open(&segment::path(&stream.dir, seek.base), seek.pos) {
            Ok(reader) => {
                return Ok(Some(Cursor {
                    reader,
                    base: seek.base,
                    next: seek.offset,
                }))
            }
            // Pruned (or deleted) between the lookup and the open: look again.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if stream.is_deleted() {
                    return Ok(None);
                }
            }
            Err(e) => return Err(io_error(stream, e)),
        }
    }
    Err(BusError::Unavailable(
        "segments keep disappearing under a reader".into(),
    ))
}

/// Reads records `next..=limit` into `out` from the stream's newest records in memory, at most
/// `max` of them and about `max_bytes`; nothing if `next` is no longer (or not) held there.
fn read_recent(
    stream: &StreamShared,
    next: &mut Offset,
    limit: Offset,
    max: usize,
    max_bytes: usize,
    out: &mut Vec<Record>,
) -> Result<()> {
    // Records that retention removed are skipped (by the read from the files), not served.
    if lock(&stream.segments)
        .oldest()
        .is_none_or(|oldest| *next < oldest)
    {
        return Ok(());
    }
    let Some(chunks) = lock(&stream.recent).since(*next) else {
        return Ok(());
    };
    let mut bytes = 0;
    for chunk in &chunks {
        let mut frames = &chunk[..];
        while let Some((header, rest)) = frames.split_first_chunk::<{ codec::HEADER_LEN }>() {
            if out.len() >= max || bytes >= max_bytes || *next > limit {
                return Ok(());
            }
            let (len, _) = codec::header(header);
            let Some((body, rest)) = rest.split_at_checked(len) else {
                return Err(damaged(stream, 0, "a record in memory is cut short"));
            };
            frames = rest;
            let (offset, _) = codec::peek(body).map_err(|e| undecodable(stream, 0, e))?;
            if offset < *next {
                continue;
            }
            if offset != *next {
                let what = format_args!("record {offset} in memory where {next} was expected");
                return Err(damaged(stream, 0, what));
            }
            let event = codec::decode(body, &stream.key).map_err(|e| undecodable(stream, 0, e))?;
            bytes += body.len();
            out.push(Record { offset, event });
            *next = offset + 1;
        }
    }
    Ok(())
}

/// What a reader met at its position other than a record it hands out.
enum Met {
    /// A record it may hand out (or skip), or skipped.
    Nothing,
    /// The end of the segment file.
    End,
    /// No intact record of the expected offset at this byte position.
    Damage { pos: u64, why: String },
}

/// Reads records `next..=limit` into `out`, at most `max` of them and about `max_bytes`.
/// Damaged stretches are stepped over (and reported once, see the `damage` module): the
/// offsets they held are absent.
fn read_blocking(
    stream: &StreamShared,
    cursor: &mut Option<Cursor>,
    next: &mut Offset,
    limit: Offset,
    max: usize,
    max_bytes: usize,
    out: &mut Vec<Record>,
) -> Result<()> {
    let mut bytes = 0;
    while out.len() < max && bytes < max_bytes && *next <= limit {
        if cursor.as_ref().is_none_or(|c| c.next > *next) {
            *cursor = open_at(stream, next, None)?;
        }
        let Some(c) = cursor.as_mut() else {
            return Ok(());
        };
        let at = c.reader.position();
        let met = match c.reader.next_frame().map_err(|e| io_error(stream, e))? {
            Frame::Record { pos, body } => match codec::peek(body) {
                Ok((offset, _)) if offset >= c.next => {
                    if offset > c.next {
                        // Intact, but the records before it are missing without a trace.
                        let gap = Region {
                            base: c.base,
                            pos,
                            len: 0,
                            first_lost: c.next,
                            lost: offset - c.next,
                            resume: Some((pos, offset)),
                            why: format!("offset {offset} where {} was expected", c.next),
                        };
                        lock(&stream.damage).report(&stream.key, &stream.dir, &gap);
                    }
                    c.next = offset + 1;
                    if offset >= *next {
                        let event = codec::decode(body, &stream.key)
                            .map_err(|e| undecodable(stream, c.base, e))?;
                        bytes += body.len();
                        out.push(Record { offset, event });
                        *next = offset + 1;
                    }
                    Met::Nothing
                }
                Ok((offset, _)) => Met::Damage {
                    pos,
                    why: format!("offset {offset} where {} was expected", c.next),
                },
                Err(e) => Met::Damage {
                    pos,
                    why: e.to_string(),
                },
            },
            Frame::End => Met::End,
            Frame::Incomplete(why) | Frame::Corrupt(why) => Met::Damage {
                pos: at,
                why: why.to_owned(),
            },
        };
        match met {
            Met::Nothing => {}
            Met::End => {
                let base = c.base;
                match next_base(stream, base) {
                    // Durable records past this segment's end are in the next one.
                    Some(b) if c.next >= b => *cursor = open_at(stream, next, Some(base))?,
                    _ => {
                        let why = format!("the segment ends where offset {} was due", c.next);
                        step_over(stream, cursor, next, limit, at, why)?;
                    }
                }
            }
            Met::Damage { pos, why } => step_over(stream, cursor, next, limit, pos, why)?,
        }
    }
    forget_unsealed_readahead(stream, cursor);
    Ok(())
}

/// Bytes read ahead in the segment being written may belong to a batch that is not durable
/// yet (and could be rolled back): never keep them.
fn forget_unsealed_readahead(stream: &StreamShared, cursor: &mut Option<Cursor>) {
    if let Some(c) = cursor {
        let sealed = lock(&stream.segments)
            .list
            .back()
            .is_some_and(|last| last.base > c.base);
        if !sealed {
            c.reader.discard_readahead();
        }
    }
}

/// The base of the segment after `base`, if there is one.
fn next_base(stream: &StreamShared, base: Offset) -> Option<Offset> {
    lock(&stream.segments)
        .list
        .iter()
        .find(|s| s.base > base)
        .map(|s| s.base)
}

/// Moves the cursor past damage at byte `pos` of its segment, where offset `c.next` was due:
/// to where intact records resume in the segment, else to the next segment, else (the newest
/// segment's durable end is damaged) past `limit`. Reports the stretch the first time.
fn step_over(
    stream: &StreamShared,
    cursor: &mut Option<Cursor>,
    next: &mut Offset,
    limit: Offset,
    pos: u64,
    why: String,
) -> Result<()> {
    let Some(c) = cursor.as_mut() else {
        return Ok(());
    };
    let (base, expected) = (c.base, c.next);
    let (bound, later) = {
        let segs = lock(&stream.segments);
        let Some(i) = segs.list.iter().position(|s| s.base == base) else {
            // Pruned meanwhile: start again from the oldest retained segment.
            *cursor = None;
            return Ok(());
        };
        (segs.list[i].size, segs.list.get(i + 1).map(|s| s.base))
    };
    let known = lock(&stream.damage).known(base, pos);
    let skip = match known {
        // A damaged end of the newest segment may have intact records after it by now.
        Some(skip) if skip.resume.is_some() || later.is_some() || skip.end >= bound => skip,
        _ => {
            let path = segment::path(&stream.dir, base);
            let found = if pos < bound {
                segment::resync(&path, pos, bound, expected).map_err(|e| io_error(stream, e))?
            } else {
                None
            };
            let lost_to = match (found, later) {
                (Some((_, offset)), _) => offset,
                (None, Some(b)) => b,
                (None, None) => limit + 1,
            };
            let len = match found {
                Some((at, _)) => at - pos,
                None => bound.saturating_sub(pos),
            };
            let region = Region {
                base,
                pos,
                len,
                first_lost: expected,
                lost: lost_to.saturating_sub(expected),
                resume: found,
                why,
            };
            let mut damage = lock(&stream.damage);
            damage.report(&stream.key, &stream.dir, &region);
            damage.known(base, pos).unwrap_or(Skip {
                end: pos + len,
                resume: found.map(|(_, offset)| offset),
            })
        }
    };
    match (skip.resume, later) {
        (Some(offset), _) => {
            c.reader.jump_to(skip.end);
            c.next = offset;
            *next = (*next).max(offset);
        }
        (None, Some(b)) => {
            *next = (*next).max(b);
            *cursor = open_at(stream, next, Some(base))?;
        }
        (None, None) => {
            *next = (*next).max(limit + 1);
            *cursor = None;
        }
    }
    Ok(())
}

#[async_trait]
impl Consumer for EmbeddedConsumer {
    async fn next(&mut self) -> Result<Option<Record>> {
        if let Some(r) = self.buffered.pop_front() {
            return Ok(Some(r));
        }
        match self.read(self.batch).await? {
            Some(records) => {
                self.buffered.extend(records);
                Ok(self.buffered.pop_front())
            }
            None => Ok(None),
        }
    }

    async fn next_batch(&mut self, max: usize) -> Result<Vec<Record>> {
        if max == 0 {
            return Ok(Vec::new());
        }
        if !self.buffered.is_empty() {
            let n = max.min(self.buffered.len());
            return Ok(self.buffered.drain(..n).collect());
        }
        Ok(self.read(max).await?.unwrap_or_default())
    }

    fn end(&self) -> Offset {
        self.tail.borrow().end
    }
}
