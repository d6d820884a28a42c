//! Bounds and refusals: oversized events, records larger than a segment, invalid requests,
//! and a closed log.

use std::sync::Arc;

use crate::conformance::{append_n, event, ids, key, take, within};
use crate::helpers::{open, segment_files, tiny_segments};
use drover_bus::embedded::{EmbeddedLog, LogConfig};
use drover_bus::{BusError, EventLog, StartFrom, StreamKey};

#[tokio::test]
async fn oversized_events_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = key("large");
    let log = open(
        dir.path(),
        LogConfig {
            max_event_bytes: 1000,
            ..LogConfig::default()
        },
    )
    .await;
    let mut e = event(&s, "big");
    e.data = vec![0; 1000].into();
    assert!(matches!(
        log.append(&s, e).await,
        Err(BusError::TooLarge(_))
    ));
    let mut e = event(&s, "fits");
    e.data = vec![0; 700].into();
    assert_eq!(log.append(&s, e).await.expect("append"), 1);
    log.close().await.expect("close");
}

#[tokio::test]
async fn records_larger_than_a_segment_get_their_own() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = key("huge");
    let log = open(dir.path(), tiny_segments()).await;
    append_n(&log, &s, "small", 2).await;
    let mut e = event(&s, "huge");
    e.data = vec![7; 5000].into();
    log.append(&s, e).await.expect("append");
    append_n(&log, &s, "after", 2).await;
    let files = segment_files(dir.path(), &s);
    assert_eq!(files.len(), 3, "{files:?}");
    let mut c = log.consume(&s, StartFrom::Earliest).await.expect("consume");
    let records = take(&mut *c, 5).await;
    assert_eq!(
        ids(&records),
        ["small0", "small1", "huge", "after0", "after1"]
    );
    assert_eq!(records[2].event.data.len(), 5000);
    log.close().await.expect("close");
}

#[tokio::test]
async fn close_ends_consumers_and_refuses_work() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = key("close");
    let log = Arc::new(open(dir.path(), LogConfig::default()).await);
    append_n(&*log, &s, "e", 2).await;
    let mut c = log.consume(&s, StartFrom::Latest).await.expect("consume");
    let waiting = tokio::spawn(async move { c.next().await });
    log.close().await.expect("close");
    assert_eq!(
        within("consumer ends", waiting)
            .await
            .expect("join")
            .expect("next"),
        None
    );
    assert!(matches!(
        log.append(&s, event(&s, "late")).await,
        Err(BusError::Closed)
    ));
    assert!(matches!(
        log.consume(&s, StartFrom::Earliest).await,
        Err(BusError::Closed)
    ));
    log.close().await.expect("closing twice is fine");
}

#[tokio::test]
async fn invalid_requests() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(dir.path(), LogConfig::default()).await;
    for uid in ["", "..", "a/b", ".hidden"] {
        let s = StreamKey::new("app", uid);
        assert!(
            matches!(
                log.append(&s, event(&s, "x")).await,
                Err(BusError::Invalid(_))
            ),
            "{uid:?}"
        );
    }
    let bad = LogConfig {
        max_event_bytes: 1 << 20,
        append_queue_bytes: 1000,
        ..LogConfig::default()
    };
    assert!(matches!(
        EmbeddedLog::open(dir.path(), bad).await,
        Err(BusError::Invalid(_))
    ));
    log.close().await.expect("close");
}

#[tokio::test]
async fn consumers_start_in_the_middle_of_a_large_segment() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = key("middle");
    let log = open(dir.path(), LogConfig::default()).await;
    // About 250 KB in one segment: a few sparse index entries.
    let appenders = (0..10).map(|t| {
        let (log, s) = (&log, &s);
        async move { append_n(log, s, &format!("{t}/"), 100).await }
    });
    within("appends", futures::future::join_all(appenders)).await;
    assert_eq!(segment_files(dir.path(), &s).len(), 1);
    for at in [0, 1, 499, 900, 999] {
        let mut c = log
            .consume(&s, StartFrom::After(at))
            .await
            .expect("consume");
        assert_eq!(take(&mut *c, 1).await[0].offset, at + 1);
    }
    drop(log);
    // The same after a restart (the newest segment's index is rebuilt by the recovery scan).
    let log = open(dir.path(), LogConfig::default()).await;
    for at in [0, 700, 999] {
        let mut c = log
            .consume(&s, StartFrom::After(at))
            .await
            .expect("consume");
        assert_eq!(take(&mut *c, 1).await[0].offset, at + 1);
    }
    log.close().await.expect("close");
}
