//! The shared conformance checks on the embedded log, also with tiny segments.

use crate::conformance;
use crate::helpers::open;
use drover_bus::embedded::LogConfig;
use drover_bus::EventLog;

#[tokio::test]
async fn conformance() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(dir.path(), LogConfig::default()).await;
    conformance::all(&log).await;
    log.close().await.expect("close");
}

#[tokio::test]
async fn conformance_with_tiny_segments() {
    // The same checks with a segment roll every few records.
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(
        dir.path(),
        LogConfig {
            segment_bytes: 1024,
            ..LogConfig::default()
        },
    )
    .await;
    conformance::all(&log).await;
    log.close().await.expect("close");
}
