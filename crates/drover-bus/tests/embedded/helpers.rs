//! Opening a log, tiny segments, big events and the files on disk, for the embedded log tests.

use std::fs;
use std::path::{Path, PathBuf};

use crate::conformance::event;
use drover_bus::embedded::{EmbeddedLog, LogConfig};
use drover_bus::StreamKey;

pub(crate) async fn open(dir: &Path, config: LogConfig) -> EmbeddedLog {
    EmbeddedLog::open(dir, config).await.expect("open")
}

/// One small record per segment: 600 bytes of data, 1 KiB segments.
pub(crate) fn tiny_segments() -> LogConfig {
    LogConfig {
        segment_bytes: 1024,
        ..LogConfig::default()
    }
}

pub(crate) fn big_event(stream: &StreamKey, id: &str) -> drover_model::Event {
    let mut e = event(stream, id);
    e.data = vec![b'y'; 600].into();
    e
}

pub(crate) fn segment_files(dir: &Path, stream: &StreamKey) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir.join(&stream.app_uid))
        .expect("stream directory")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    files.sort();
    files
}

/// Start positions of the frames in a segment file.
pub(crate) fn frame_starts(bytes: &[u8]) -> Vec<usize> {
    let mut starts = Vec::new();
    let mut at = 0;
    while at + 8 <= bytes.len() {
        starts.push(at);
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes")) as usize;
        at += 8 + len;
    }
    starts
}
