//! What only the JetStream log does on the shared server: retention mapped to the stream,
//! deduplication, refusals, close, and order.

use std::time::{Duration, Instant};

use crate::backend;
use crate::conformance::{append_n, event, ids, key, take, within};
use crate::helpers::{config, connect, Prefix};
use drover_bus::nats::JetStreamConfig;
use drover_bus::{BusError, EventLog, Offset, StartFrom};
use futures::StreamExt;

#[tokio::test]
#[ignore = "needs NATS with JetStream: set DROVER_TEST_NATS_URL and run with --include-ignored (CI does)"]
async fn retention_is_mapped_to_the_stream() {
    use async_nats::jetstream::stream::{DiscardPolicy, RetentionPolicy, StorageType};
    let Some(url) = backend::nats_url() else {
        return;
    };
    let own = Prefix::new(&url);
    let prefix = own.name.as_str();
    let log = connect(JetStreamConfig {
        max_age: Duration::from_secs(3600),
        max_bytes_per_stream: 5 << 20,
        ..config(&url, prefix)
    })
    .await;
    let s = key("retention");
    append_n(&log, &s, "e", 1).await;

    let js = async_nats::jetstream::new(async_nats::connect(&url).await.expect("connect"));
    let name = log.stream_name(&s);
    assert!(
        name.starts_with(&format!("{}_EV_", prefix.to_uppercase())),
        "{name}"
    );
    let mut stream = js.get_stream(&name).await.expect("the stream exists");
    let info = stream.info().await.expect("info");
    let c = &info.config;
    assert_eq!(c.max_age, Duration::from_secs(3600));
    assert_eq!(c.max_bytes, 5 << 20);
    assert_eq!(c.discard, DiscardPolicy::Old);
    assert_eq!(c.retention, RetentionPolicy::Limits);
    assert_eq!(c.storage, StorageType::File);
    assert_eq!(c.num_replicas, 1);
    assert_eq!(c.subjects, [format!("{prefix}.ev.{}", s.app_uid)]);
    assert_eq!(info.state.messages, 1);
    log.close().await.expect("close");

    // Another node with other settings brings the stream to its settings.
    let log = connect(JetStreamConfig {
        max_age: Duration::from_secs(60),
        max_bytes_per_stream: 0,
        ..config(&url, prefix)
    })
    .await;
    append_n(&log, &s, "f", 1).await;
    let info = stream.info().await.expect("info");
    assert_eq!(info.config.max_age, Duration::from_secs(60));
    assert_eq!(info.config.max_bytes, -1, "0 means no limit");
    assert_eq!(info.config.duplicate_window, Duration::from_secs(60));
    assert_eq!(info.state.messages, 2);
    log.close().await.expect("close");
}

#[tokio::test]
#[ignore = "needs NATS with JetStream: set DROVER_TEST_NATS_URL and run with --include-ignored (CI does)"]
async fn retried_appends_are_deduplicated() {
    let Some(url) = backend::nats_url() else {
        return;
    };
    let own = Prefix::new(&url);
    let prefix = own.name.as_str();
    let log = connect(config(&url, prefix)).await;
    let s = key("dedup");
    let first = log.append(&s, event(&s, "once")).await.expect("append");
    // The same event again (a retry after a lost acknowledgement): the same offset, stored once.
    let again = log.append(&s, event(&s, "once")).await.expect("append");
    assert_eq!((first, again), (1, 1));
    assert_eq!(log.append(&s, event(&s, "next")).await.expect("append"), 2);
    let mut c = log.consume(&s, StartFrom::Earliest).await.expect("consume");
    assert_eq!(ids(&take(&mut *c, 2).await), ["once", "next"]);
    assert_eq!(c.end(), 2);
    log.close().await.expect("close");
}

#[tokio::test]
#[ignore = "needs NATS with JetStream: set DROVER_TEST_NATS_URL and run with --include-ignored (CI does)"]
async fn oversized_events_are_refused() {
    let Some(url) = backend::nats_url() else {
        return;
    };
    let own = Prefix::new(&url);
    let prefix = own.name.as_str();
    let log = connect(JetStreamConfig {
        max_event_bytes: 1000,
        ..config(&url, prefix)
    })
    .await;
    let s = key("large");
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

    // Beyond what the server takes, whatever the configuration says.
    let log = connect(JetStreamConfig {
        max_event_bytes: 64 << 20,
        ..config(&url, prefix)
    })
    .await;
    let mut e = event(&s, "huge");
    e.data = vec![0; 32 << 20].into();
    let refused = log.append(&s, e).await;
    assert!(matches!(refused, Err(BusError::TooLarge(_))), "{refused:?}");
    log.close().await.expect("close");
}

#[tokio::test]
#[ignore = "needs NATS with JetStream: set DROVER_TEST_NATS_URL and run with --include-ignored (CI does)"]
async fn close_ends_consumers_and_refuses_work() {
    let Some(url) = backend::nats_url() else {
        return;
    };
    let own = Prefix::new(&url);
    let prefix = own.name.as_str();
    let log = std::sync::Arc::new(connect(config(&url, prefix)).await);
    let s = key("close");
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
    assert!(!log.is_connected());
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

/// Three callers with 50 appends in flight each: every caller's appends are stored in call
/// order, and many appends share a round trip (prints the rate).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs NATS with JetStream: set DROVER_TEST_NATS_URL and run with --include-ignored (CI does)"]
async fn pipelined_appends_keep_their_order() {
    use futures::TryStreamExt;
    let Some(url) = backend::nats_url() else {
        return;
    };
    let own = Prefix::new(&url);
    let prefix = own.name.as_str();
    let log = connect(config(&url, prefix)).await;
    let s = key("pipelined");
    const CALLERS: usize = 3;
    const EACH: usize = 2000;
    let started = Instant::now();
    let callers = (0..CALLERS).map(|c| {
        let (log, s) = (&log, &s);
        futures::stream::iter(0..EACH)
            .map(move |i| log.append(s, event(s, format!("{c}/{i}"))))
            .buffered(50)
            .try_collect::<Vec<Offset>>()
    });
    let offsets = within("appends", futures::future::try_join_all(callers))
        .await
        .expect("appends");
    let elapsed = started.elapsed();
    println!(
        "{} pipelined appends in {elapsed:?}: {:.0} appends/s",
        CALLERS * EACH,
        (CALLERS * EACH) as f64 / elapsed.as_secs_f64()
    );
    for o in &offsets {
        assert!(
            o.windows(2).all(|w| w[0] < w[1]),
            "a caller's appends are stored in call order"
        );
    }
    let mut c = log.consume(&s, StartFrom::Earliest).await.expect("consume");
    let mut next = [0usize; CALLERS];
    let mut read = 0;
    while read < CALLERS * EACH {
        let batch = within("batch", c.next_batch(1000)).await.expect("batch");
        assert!(!batch.is_empty());
        for r in batch {
            let (caller, i) = r.event.id.split_once('/').expect("id");
            let (caller, i): (usize, usize) = (caller.parse().expect("n"), i.parse().expect("n"));
            assert_eq!(i, next[caller]);
            next[caller] += 1;
            read += 1;
        }
    }
    log.close().await.expect("close");
}
