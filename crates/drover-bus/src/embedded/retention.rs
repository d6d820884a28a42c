//! Retention: whole segments go, oldest first, when all their records are older than
//! `max_age` or the stream is larger than `max_stream_bytes` (never a stream's newest
//! segment). Runs every `retention_interval` and whenever the writer closes a segment.

use std::fs;
use std::io;
use std::sync::atomic::Ordering;
use std::sync::Weak;
use std::time::SystemTime;

use super::stream::{lock, StreamShared};
use super::{io_error, segment, unix_ms, Inner};
use crate::{BusError, Result};

impl Inner {
    pub(super) async fn prune(&self, now: SystemTime) -> Result<usize> {
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

pub(super) async fn retention_task(inner: Weak<Inner>) {
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
