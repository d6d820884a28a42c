//! The streams the log knows, by application uid: live, deleted (a tombstone), or out of
//! service (files unusable at open); how a stream is found or made known, and what callers
//! may ask about the streams.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::recovery::Found;
use super::stream::{lock, StreamShared};
use super::writer::{Active, StreamWriter};
use super::{DamageStats, EmbeddedLog, Inner, OutOfService};
use crate::{BusError, Offset, Result, StreamKey};

/// What the log knows of a uid.
#[derive(Clone)]
pub(super) enum Slot {
    Live(Arc<StreamShared>),
    Deleted,
    /// Its files could not be used when the log was opened.
    OutOfService(Arc<OutOfService>),
}

/// Appends and reads of a stream out of service. Only a brief of the file error: this goes
/// to devices and applications, which must not see the server's paths (the log has them).
pub(super) fn out_of_service_error(key: &StreamKey, broken: &OutOfService) -> BusError {
    let what = format!(
        "the event stream of application {} is out of service: {} (the server log names the file)",
        key.app,
        broken.error.brief()
    );
    BusError::Unavailable(what.into())
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

/// The streams recovery found, by uid, and the writer's state of each live one (its id is its
/// position, from 0).
pub(super) fn known_streams(
    root: &Path,
    found: Found,
) -> (HashMap<String, Slot>, HashMap<u64, StreamWriter>) {
    let mut streams = HashMap::new();
    let mut writers = HashMap::new();
    for (id, r) in (0u64..).zip(found.streams) {
        let uid = r.key.app_uid.clone();
        let shared = StreamShared::new(id, r.key, root.join(&uid), r.next_offset - 1, true);
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
        writers.insert(id, StreamWriter::new(shared.clone(), r.next_offset, active));
        streams.insert(uid, Slot::Live(shared));
    }
    for broken in found.out_of_service {
        streams.insert(broken.app_uid.clone(), Slot::OutOfService(Arc::new(broken)));
    }
    for uid in found.tombstones {
        streams.insert(uid, Slot::Deleted);
    }
    (streams, writers)
}

impl Inner {
    pub(super) fn read_slot(&self, uid: &str) -> Option<Slot> {
        let map = self
            .streams
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.get(uid).cloned()
    }

    /// The stream of `key`, made known if it is new; an error if it was deleted or is out of
    /// service.
    pub(super) fn stream(&self, key: &StreamKey) -> Result<Arc<StreamShared>> {
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

    pub(super) fn live_streams(&self) -> Vec<Arc<StreamShared>> {
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
}

impl EmbeddedLog {
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
    pub fn groups(&self, stream: &StreamKey) -> BTreeMap<String, Offset> {
        match self.inner.read_slot(&stream.app_uid) {
            Some(Slot::Live(s)) => lock(&s.groups).offsets.clone(),
            _ => BTreeMap::new(),
        }
    }

    /// The streams whose files could not be used when the log was opened (see
    /// [`LogConfig::isolate_broken_streams`](super::LogConfig::isolate_broken_streams)), by application uid. Deleting the stream
    /// ([`EventLog::delete_stream`](crate::EventLog::delete_stream)) removes it and its files.
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
