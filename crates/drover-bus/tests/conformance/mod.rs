//! Behaviour every [`EventLog`] backend must show. Each check takes a log and works on streams
//! of its own (unique uids), so checks can share a log and a backend's test file runs them all.
//! The NATS JetStream backend is meant to run these same functions.

#![allow(dead_code)] // each test binary uses what it needs

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use drover_bus::{BusError, Consumer, EventLog, Offset, Record, StartFrom, StreamKey};
use drover_model::Event;

/// Fails a test that would otherwise hang.
pub async fn within<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(Duration::from_secs(30), fut).await {
        Ok(t) => t,
        Err(_) => panic!("timed out: {what}"),
    }
}

/// A stream key with a uid nobody else uses.
pub fn key(app: &str) -> StreamKey {
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    StreamKey::new(app, format!("{app}-{}-{n}", std::process::id()))
}

/// A telemetry event with 64 bytes of data.
pub fn event(stream: &StreamKey, id: impl Into<String>) -> Event {
    Event {
        id: id.into(),
        ty: drover_model::event::EVENT_TYPE.into(),
        channel: "temperature".into(),
        time: chrono::Utc::now(),
        content_type: Some("application/json".into()),
        data_schema: None,
        application: stream.app.clone(),
        application_uid: stream.app_uid.clone(),
        device: "device-1".into(),
        device_uid: "3f1a8e4c-0000-4000-8000-000000000001".into(),
        sender: "device-1".into(),
        sender_uid: "3f1a8e4c-0000-4000-8000-000000000001".into(),
        instance: "drover-0".into(),
        extensions: vec![("qos".into(), "1".into())],
        data: Bytes::from_static(&[b'x'; 64]),
    }
}

/// Reads exactly `n` records.
pub async fn take(consumer: &mut dyn Consumer, n: usize) -> Vec<Record> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        match within("reading records", consumer.next()).await {
            Ok(Some(r)) => out.push(r),
            Ok(None) => panic!("stream ended after {} of {n} records", out.len()),
            Err(e) => panic!("reading failed after {} of {n} records: {e}", out.len()),
        }
    }
    out
}

pub fn ids(records: &[Record]) -> Vec<String> {
    records.iter().map(|r| r.event.id.clone()).collect()
}

pub async fn append_n(
    log: &dyn EventLog,
    stream: &StreamKey,
    prefix: &str,
    n: usize,
) -> Vec<Offset> {
    let mut offsets = Vec::with_capacity(n);
    for i in 0..n {
        let offset = log
            .append(stream, event(stream, format!("{prefix}{i}")))
            .await
            .expect("append");
        offsets.push(offset);
    }
    offsets
}

/// Offsets count up from 1; Earliest, Latest and After start where they say.
pub async fn offsets_and_start_positions(log: &dyn EventLog) {
    let s = key("offsets");
    let offsets = append_n(log, &s, "e", 5).await;
    assert_eq!(offsets, vec![1, 2, 3, 4, 5]);

    let mut earliest = log.consume(&s, StartFrom::Earliest).await.expect("consume");
    assert_eq!(earliest.end(), 5);
    let records = take(&mut *earliest, 5).await;
    assert_eq!(
        records.iter().map(|r| r.offset).collect::<Vec<_>>(),
        offsets
    );
    assert_eq!(ids(&records), ["e0", "e1", "e2", "e3", "e4"]);
    assert_eq!(
        records[0].event,
        event(&s, "e0").with_time(records[0].event.time)
    );

    let mut after = log.consume(&s, StartFrom::After(3)).await.expect("consume");
    assert_eq!(ids(&take(&mut *after, 2).await), ["e3", "e4"]);

    let mut latest = log.consume(&s, StartFrom::Latest).await.expect("consume");
    let offset = log.append(&s, event(&s, "new")).await.expect("append");
    assert_eq!(offset, 6);
    let r = take(&mut *latest, 1).await;
    assert_eq!((r[0].offset, r[0].event.id.as_str()), (6, "new"));
    // The earlier consumers see it too, in order.
    assert_eq!(ids(&take(&mut *earliest, 1).await), ["new"]);
    assert_eq!(earliest.end(), 6);
}

/// Waiting consumers wake up for new records; `next_batch` returns what is there at once.
pub async fn consumers_follow_appends(log: &dyn EventLog) {
    let s = key("follow");
    let mut consumer = log.consume(&s, StartFrom::Earliest).await.expect("consume");
    let reader = async {
        let first = consumer.next().await.expect("next").expect("a record");
        (first, consumer)
    };
    let writer = async { log.append(&s, event(&s, "a")).await.expect("append") };
    let ((first, mut consumer), offset) =
        within("consumer wakes up", futures::future::join(reader, writer)).await;
    assert_eq!((first.offset, first.event.id.as_str()), (offset, "a"));

    append_n(log, &s, "b", 3).await;
    let batch = within("batch", consumer.next_batch(10))
        .await
        .expect("batch");
    assert_eq!(ids(&batch), ["b0", "b1", "b2"]);
    let batch = within("batch", consumer.next_batch(0))
        .await
        .expect("batch");
    assert!(batch.is_empty());
}

/// Streams do not see each other's events.
pub async fn streams_are_isolated(log: &dyn EventLog) {
    let a = key("iso-a");
    let b = key("iso-b");
    append_n(log, &a, "a", 3).await;
    append_n(log, &b, "b", 2).await;
    let mut ca = log.consume(&a, StartFrom::Earliest).await.expect("consume");
    let mut cb = log.consume(&b, StartFrom::Earliest).await.expect("consume");
    assert_eq!(ids(&take(&mut *ca, 3).await), ["a0", "a1", "a2"]);
    let rb = take(&mut *cb, 2).await;
    assert_eq!(ids(&rb), ["b0", "b1"]);
    assert_eq!(rb[0].offset, 1);
    assert_eq!(ca.end(), 3);
    assert_eq!(cb.end(), 2);
}

/// Ten appenders at once: each one's events appear in its own order, offsets are dense.
pub async fn concurrent_appenders_keep_their_order(log: &dyn EventLog) {
    let s = key("order");
    const TASKS: usize = 10;
    const EACH: usize = 100;
    let appenders = (0..TASKS).map(|t| {
        let s = &s;
        async move {
            let mut offsets = Vec::new();
            for i in 0..EACH {
                offsets.push(
                    log.append(s, event(s, format!("{t}/{i}")))
                        .await
                        .expect("append"),
                );
            }
            offsets
        }
    });
    let offsets = within("appends", futures::future::join_all(appenders)).await;
    for o in &offsets {
        assert!(
            o.windows(2).all(|w| w[0] < w[1]),
            "each appender's offsets increase"
        );
    }
    let mut all: Vec<Offset> = offsets.concat();
    all.sort_unstable();
    assert_eq!(all, (1..=(TASKS * EACH) as Offset).collect::<Vec<_>>());

    let mut c = log.consume(&s, StartFrom::Earliest).await.expect("consume");
    let records = take(&mut *c, TASKS * EACH).await;
    let mut seen = [0usize; TASKS];
    for r in &records {
        let (t, i) = r.event.id.split_once('/').expect("id");
        let (t, i): (usize, usize) = (t.parse().expect("task"), i.parse().expect("index"));
        assert_eq!(i, seen[t], "appender {t}'s events in order");
        assert_eq!(r.offset, offsets[t][i], "offset as acknowledged");
        seen[t] += 1;
    }
}

/// Committed offsets are kept per group; a commit beyond the end is refused.
pub async fn groups_commit(log: &dyn EventLog) {
    let s = key("groups");
    append_n(log, &s, "e", 4).await;
    assert_eq!(log.committed(&s, "g1").await.expect("committed"), None);
    log.commit(&s, "g1", 2).await.expect("commit");
    log.commit(&s, "g2", 4).await.expect("commit");
    assert_eq!(log.committed(&s, "g1").await.expect("committed"), Some(2));
    assert_eq!(log.committed(&s, "g2").await.expect("committed"), Some(4));
    assert!(matches!(
        log.commit(&s, "g1", 5).await,
        Err(BusError::Invalid(_))
    ));
    assert!(matches!(
        log.commit(&s, "", 1).await,
        Err(BusError::Invalid(_))
    ));
    let mut c = log.consume(&s, StartFrom::After(2)).await.expect("consume");
    assert_eq!(ids(&take(&mut *c, 2).await), ["e2", "e3"]);
}

/// Deleting a stream ends its consumers; the application created again (new uid) starts empty;
/// the deleted stream takes no appends.
pub async fn delete_and_recreate(log: &dyn EventLog) {
    let old = key("recreated");
    append_n(log, &old, "old", 3).await;
    log.commit(&old, "g", 3).await.expect("commit");
    let mut waiting = log.consume(&old, StartFrom::Latest).await.expect("consume");
    let mut reading = log
        .consume(&old, StartFrom::Earliest)
        .await
        .expect("consume");
    assert_eq!(ids(&take(&mut *reading, 1).await), ["old0"]);

    log.delete_stream(&old).await.expect("delete");
    assert_eq!(
        within("waiting consumer ends", waiting.next())
            .await
            .expect("next"),
        None
    );
    // Records it had read ahead are still handed out; then it ends.
    let mut rest = Vec::new();
    while let Some(r) = within("reading consumer ends", reading.next())
        .await
        .expect("next")
    {
        rest.push(r);
    }
    assert!(rest.len() <= 2);
    assert_eq!(log.committed(&old, "g").await.expect("committed"), None);
    assert!(matches!(
        log.append(&old, event(&old, "zombie")).await,
        Err(BusError::Invalid(_))
    ));
    let mut c = log
        .consume(&old, StartFrom::Earliest)
        .await
        .expect("consume");
    assert_eq!(
        within("consumer of deleted stream", c.next())
            .await
            .expect("next"),
        None
    );

    let new = StreamKey::new(old.app.clone(), format!("{}-again", old.app_uid));
    let mut c = log
        .consume(&new, StartFrom::Earliest)
        .await
        .expect("consume");
    assert_eq!(c.end(), 0);
    assert_eq!(log.committed(&new, "g").await.expect("committed"), None);
    assert_eq!(
        log.append(&new, event(&new, "fresh"))
            .await
            .expect("append"),
        1
    );
    assert_eq!(ids(&take(&mut *c, 1).await), ["fresh"]);
}

/// A consumer that starts after the end waits for that offset; a pruned-or-not start never
/// hands out what came before it.
pub async fn start_beyond_the_end(log: &dyn EventLog) {
    let s = key("beyond");
    append_n(log, &s, "e", 3).await;
    let mut c = log.consume(&s, StartFrom::After(5)).await.expect("consume");
    assert_eq!(c.end(), 3);
    append_n(log, &s, "f", 4).await;
    let r = take(&mut *c, 1).await;
    assert_eq!((r[0].offset, r[0].event.id.as_str()), (6, "f2"));
    let batch = within("batch", c.next_batch(10)).await.expect("batch");
    assert_eq!(ids(&batch), ["f3"]);
}

/// Group names are opaque strings: any printable name (up to 200 bytes) is its own group.
pub async fn group_names_are_opaque(log: &dyn EventLog) {
    let s = key("group-names");
    append_n(log, &s, "e", 3).await;
    let names = [
        "g",
        "G",
        "g.1",
        "g_1",
        "g/1",
        "with spaces",
        "ünïcødé ☃",
        "*>",
        "$KV.x",
    ];
    for (i, name) in names.iter().enumerate() {
        log.commit(&s, name, (i % 4) as Offset)
            .await
            .expect("commit");
    }
    let long = "l".repeat(200);
    log.commit(&s, &long, 3).await.expect("commit");
    for (i, name) in names.iter().enumerate() {
        assert_eq!(
            log.committed(&s, name).await.expect("committed"),
            Some((i % 4) as Offset),
            "{name:?}"
        );
    }
    assert_eq!(log.committed(&s, &long).await.expect("committed"), Some(3));
    assert!(matches!(
        log.commit(&s, &"l".repeat(201), 1).await,
        Err(BusError::Invalid(_))
    ));
    assert!(matches!(
        log.commit(&s, "a\nb", 1).await,
        Err(BusError::Invalid(_))
    ));
    // A commit overwrites: a group may move back.
    log.commit(&s, "g", 3).await.expect("commit");
    log.commit(&s, "g", 1).await.expect("commit");
    assert_eq!(log.committed(&s, "g").await.expect("committed"), Some(1));
}

/// Appends racing a deletion are either stored (and deleted with the stream) or refused; none
/// brings the stream back. Deleting twice is fine.
pub async fn deletion_races_appends(log: &dyn EventLog) {
    let s = key("racing");
    append_n(log, &s, "e", 3).await;
    let racing =
        futures::future::join_all((0..20).map(|i| log.append(&s, event(&s, format!("r{i}")))));
    let (results, deleted) = futures::future::join(racing, log.delete_stream(&s)).await;
    deleted.expect("delete");
    for r in results {
        assert!(matches!(r, Ok(_) | Err(BusError::Invalid(_))), "{r:?}");
    }
    assert!(matches!(
        log.append(&s, event(&s, "zombie")).await,
        Err(BusError::Invalid(_))
    ));
    assert!(matches!(
        log.commit(&s, "g", 0).await,
        Err(BusError::Invalid(_))
    ));
    log.delete_stream(&s).await.expect("deleting twice is fine");
    let mut c = log.consume(&s, StartFrom::Earliest).await.expect("consume");
    assert!(within("consumer of deleted stream", c.next_batch(10))
        .await
        .expect("batch")
        .is_empty());
    // Deleting a stream that never existed is fine too, and it stays deleted.
    let never = key("never");
    log.delete_stream(&never).await.expect("delete");
    assert!(matches!(
        log.append(&never, event(&never, "zombie")).await,
        Err(BusError::Invalid(_))
    ));
}

/// Uids that cannot name a stream in every backend (`StreamKey::check`) are refused by each.
pub async fn invalid_uids_are_refused(log: &dyn EventLog) {
    for uid in [
        "",
        "..",
        "a/b",
        ".hidden",
        "a b",
        "a*",
        "a>",
        "deleted-streams",
    ] {
        assert!(StreamKey::new("app", uid).check().is_err(), "{uid:?}");
        let s = StreamKey::new("app", uid);
        assert!(
            matches!(
                log.append(&s, event(&s, "x")).await,
                Err(BusError::Invalid(_))
            ),
            "{uid:?}"
        );
        assert!(
            matches!(
                log.consume(&s, StartFrom::Earliest).await,
                Err(BusError::Invalid(_))
            ),
            "{uid:?}"
        );
        assert!(
            matches!(log.commit(&s, "g", 0).await, Err(BusError::Invalid(_))),
            "{uid:?}"
        );
        assert!(
            matches!(log.delete_stream(&s).await, Err(BusError::Invalid(_))),
            "{uid:?}"
        );
    }
}

/// Runs every check above against one log.
pub async fn all(log: &dyn EventLog) {
    offsets_and_start_positions(log).await;
    consumers_follow_appends(log).await;
    streams_are_isolated(log).await;
    concurrent_appenders_keep_their_order(log).await;
    groups_commit(log).await;
    delete_and_recreate(log).await;
    start_beyond_the_end(log).await;
    group_names_are_opaque(log).await;
    deletion_races_appends(log).await;
    invalid_uids_are_refused(log).await;
}

pub trait WithTime {
    fn with_time(self, time: chrono::DateTime<chrono::Utc>) -> Self;
}

impl WithTime for Event {
    fn with_time(mut self, time: chrono::DateTime<chrono::Utc>) -> Self {
        self.time = time;
        self
    }
}
