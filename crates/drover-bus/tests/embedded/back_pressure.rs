//! Back pressure: slow consumers, a full queue, and appends and batches keeping their order.

use std::time::Duration;

use crate::conformance::{event, ids, key, take, within};
use crate::helpers::{big_event, open, segment_files};
use drover_bus::embedded::LogConfig;
use drover_bus::{BusError, EventLog, Offset, StartFrom};

#[tokio::test]
async fn a_slow_consumer_does_not_hold_up_appends() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = key("slow");
    let config = LogConfig {
        read_batch: 64,
        read_batch_bytes: 16 * 1024,
        append_queue: 64,
        segment_bytes: 256 * 1024,
        ..LogConfig::default()
    };
    let log = open(dir.path(), config).await;
    // A consumer that reads nothing while 5000 events are appended by 10 appenders (through
    // a queue of 64).
    let mut slow = log.consume(&s, StartFrom::Earliest).await.expect("consume");
    const TASKS: usize = 10;
    const EACH: usize = 500;
    let appenders = (0..TASKS).map(|t| {
        let (log, s) = (&log, &s);
        async move {
            for i in 0..EACH {
                log.append(s, event(s, format!("{t}/{i}")))
                    .await
                    .expect("append");
            }
        }
    });
    within(
        "appends while a consumer lags",
        futures::future::join_all(appenders),
    )
    .await;
    assert_eq!(log.end(&s), (TASKS * EACH) as Offset);

    // It then reads from disk at its own pace, in bounded batches, everything in order.
    let mut next = 1;
    let mut largest = 0;
    while next <= (TASKS * EACH) as Offset {
        let batch = within("batch", slow.next_batch(100_000))
            .await
            .expect("batch");
        assert!(!batch.is_empty());
        largest = largest.max(batch.len());
        for r in batch {
            assert_eq!(r.offset, next);
            next += 1;
        }
    }
    assert!(
        largest <= 16 * 1024 / 100 + 1,
        "batches are bounded by bytes: {largest} records"
    );
    // `next` reads ahead at most `read_batch` records.
    let mut c = log.consume(&s, StartFrom::Earliest).await.expect("consume");
    c.next().await.expect("next").expect("record");
    assert_eq!(
        within("batch", c.next_batch(1000))
            .await
            .expect("batch")
            .len(),
        63
    );
    log.close().await.expect("close");
}

#[tokio::test]
async fn a_full_queue_overloads() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = key("overload");
    // Room for about two queued records, and no patience.
    let config = LogConfig {
        max_event_bytes: 1000,
        append_queue_bytes: 1128,
        enqueue_timeout: Duration::ZERO,
        ..LogConfig::default()
    };
    let log = open(dir.path(), config).await;
    let appends =
        futures::future::join_all((0..200).map(|i| log.append(&s, event(&s, format!("e{i}")))))
            .await;
    let overloaded = appends
        .iter()
        .filter(|r| matches!(r, Err(BusError::Overloaded(_))))
        .count();
    let acknowledged: Vec<Offset> = appends
        .iter()
        .filter_map(|r| r.as_ref().ok().copied())
        .collect();
    assert!(overloaded > 0, "nothing was refused");
    assert_eq!(
        overloaded + acknowledged.len(),
        200,
        "only Ok or Overloaded"
    );
    assert_eq!(
        acknowledged,
        (1..=acknowledged.len() as Offset).collect::<Vec<_>>()
    );
    // Refused appends leave no trace; the log goes on.
    assert_eq!(log.end(&s), acknowledged.len() as Offset);
    log.close().await.expect("close");
}

#[tokio::test]
async fn pipelined_appends_keep_their_order_under_back_pressure() {
    use futures::{StreamExt, TryStreamExt};
    let dir = tempfile::tempdir().expect("tempdir");
    let s = key("pipelined");
    // A tiny queue, so that most appends have to wait for room.
    let config = LogConfig {
        append_queue: 4,
        ..LogConfig::default()
    };
    let log = open(dir.path(), config).await;
    // Three callers, each with up to 50 appends in flight (like an MQTT session's window).
    let callers = (0..3).map(|c| {
        let (log, s) = (&log, &s);
        futures::stream::iter(0..500)
            .map(move |i| log.append(s, event(s, format!("{c}/{i}"))))
            .buffered(50)
            .try_collect::<Vec<Offset>>()
    });
    let offsets = within("appends", futures::future::try_join_all(callers))
        .await
        .expect("appends");
    for o in &offsets {
        assert!(
            o.windows(2).all(|w| w[0] < w[1]),
            "a caller's appends are stored in call order"
        );
    }
    log.close().await.expect("close");
}

#[tokio::test]
async fn batches_are_appended_in_order_with_their_own_results() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = key("batch");
    // A small byte budget, so that a batch is split into several commands; small segments,
    // so that a batch crosses segment boundaries.
    let config = LogConfig {
        max_event_bytes: 1000,
        append_queue_bytes: 4096,
        segment_bytes: 2048,
        ..LogConfig::default()
    };
    let log = open(dir.path(), config.clone()).await;
    let mut c = log.consume(&s, StartFrom::Earliest).await.expect("consume");
    assert_eq!(
        log.append(&s, event(&s, "single")).await.expect("append"),
        1
    );
    let mut batch: Vec<_> = (0..40).map(|i| big_event(&s, &format!("b{i}"))).collect();
    let mut huge = event(&s, "huge");
    huge.data = vec![0; 2000].into();
    batch.insert(7, huge);
    let results = log.append_batch(&s, batch).await;
    assert_eq!(results.len(), 41);
    assert!(matches!(results[7], Err(BusError::TooLarge(_))));
    let offsets: Vec<Offset> = results
        .iter()
        .filter_map(|r| r.as_ref().ok().copied())
        .collect();
    assert_eq!(offsets, (2..=41).collect::<Vec<Offset>>());
    assert!(log.append_batch(&s, Vec::new()).await.is_empty());
    let expected: Vec<String> = std::iter::once("single".to_string())
        .chain((0..40).map(|i| format!("b{i}")))
        .collect();
    assert_eq!(ids(&take(&mut *c, 41).await), expected);
    assert!(segment_files(dir.path(), &s).len() > 1);
    log.close().await.expect("close");

    // All of it is on disk, in order.
    let log = open(dir.path(), config).await;
    let mut c = log.consume(&s, StartFrom::Earliest).await.expect("consume");
    assert_eq!(ids(&take(&mut *c, 41).await), expected);
    // A deleted stream refuses every event of a batch.
    log.delete_stream(&s).await.expect("delete");
    let results = log
        .append_batch(&s, vec![event(&s, "x"), event(&s, "y")])
        .await;
    assert!(results
        .iter()
        .all(|r| matches!(r, Err(BusError::Invalid(_)))));
    log.close().await.expect("close");
}

#[tokio::test]
async fn batches_keep_their_order_under_back_pressure() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = key("batch-pressure");
    let config = LogConfig {
        append_queue: 2,
        ..LogConfig::default()
    };
    let log = open(dir.path(), config).await;
    // Batches, all started before any is answered.
    let batches = (0..20).map(|b| {
        let events = (0..10).map(|i| event(&s, format!("{b}/{i}"))).collect();
        log.append_batch(&s, events)
    });
    let results = within("batches", futures::future::join_all(batches)).await;
    let offsets: Vec<Offset> = results
        .into_iter()
        .flatten()
        .map(|r| r.expect("append"))
        .collect();
    assert_eq!(offsets, (1..=200).collect::<Vec<Offset>>());
    log.close().await.expect("close");
}
