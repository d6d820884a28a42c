//! Retention by size and by age, and deleted streams staying deleted.

use std::fs;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use crate::conformance::{append_n, event, ids, key, take, within};
use crate::helpers::{big_event, open, segment_files, tiny_segments};
use drover_bus::embedded::{Clock, EmbeddedLog, LogConfig};
use drover_bus::{BusError, EventLog, StartFrom};

#[tokio::test]
async fn retention_by_size() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = key("size");
    let config = LogConfig {
        max_stream_bytes: 3000,
        ..tiny_segments()
    };
    let log = open(dir.path(), config.clone()).await;
    let mut early = log.consume(&s, StartFrom::Earliest).await.expect("consume");
    for i in 0..10 {
        log.append(&s, big_event(&s, &format!("e{i}")))
            .await
            .expect("append");
    }
    log.prune(SystemTime::now()).await.expect("prune");
    assert!(
        log.stream_bytes(&s) <= 3000,
        "{} bytes retained",
        log.stream_bytes(&s)
    );
    let oldest = log.oldest(&s).expect("records retained");
    assert!(oldest > 5, "oldest retained: {oldest}");
    // Retention also runs by itself on every roll; wait until the files match the list.
    within("retention deleted the files", async {
        while segment_files(dir.path(), &s).len() as u64 != 10 - oldest + 1 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await;

    // A consumer that had not read yet continues at the oldest retained record; so do
    // Earliest and an After() that points at pruned records.
    let first = take(&mut *early, 1).await;
    assert_eq!(first[0].offset, oldest);
    for from in [StartFrom::Earliest, StartFrom::After(1)] {
        let mut c = log.consume(&s, from).await.expect("consume");
        assert_eq!(take(&mut *c, 1).await[0].offset, oldest);
    }
    log.close().await.expect("close");

    // The retained records (and nothing else) are there after a restart.
    let log = open(dir.path(), config).await;
    assert_eq!(log.oldest(&s), Some(oldest));
    let mut c = log.consume(&s, StartFrom::Earliest).await.expect("consume");
    let records = take(&mut *c, (10 - oldest + 1) as usize).await;
    assert_eq!(records.last().map(|r| r.event.id.as_str()), Some("e9"));
    log.close().await.expect("close");
}

struct ManualClock(Mutex<SystemTime>);

impl ManualClock {
    fn set(&self, t: SystemTime) {
        *self.0.lock().expect("clock") = t;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        *self.0.lock().expect("clock")
    }
}

#[tokio::test]
async fn retention_by_age() {
    const DAY: Duration = Duration::from_secs(24 * 3600);
    let dir = tempfile::tempdir().expect("tempdir");
    let s = key("age");
    let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let clock = Arc::new(ManualClock(Mutex::new(t0)));
    let config = tiny_segments(); // max_age: 7 days
    let log = EmbeddedLog::open_with_clock(dir.path(), config.clone(), clock.clone())
        .await
        .expect("open");
    // One record per segment, appended on days 0, 3 and 6.
    for (day, id) in [(0, "d0"), (3, "d3"), (6, "d6")] {
        clock.set(t0 + DAY * day);
        log.append(&s, big_event(&s, id)).await.expect("append");
    }
    assert_eq!(log.oldest(&s), Some(1));
    log.prune(t0 + DAY * 7).await.expect("prune");
    assert_eq!(log.oldest(&s), Some(1), "nothing is older than 7 days yet");
    log.prune(t0 + DAY * 8).await.expect("prune");
    assert_eq!(log.oldest(&s), Some(2), "day 0 is gone");
    let mut c = log.consume(&s, StartFrom::Earliest).await.expect("consume");
    assert_eq!(ids(&take(&mut *c, 2).await), ["d3", "d6"]);
    log.prune(t0 + DAY * 100).await.expect("prune");
    assert_eq!(log.oldest(&s), Some(3), "the segment being written is kept");
    log.close().await.expect("close");

    // After a restart the age of sealed segments is known again.
    let dir2 = tempfile::tempdir().expect("tempdir");
    let s2 = key("age2");
    clock.set(t0);
    let log = EmbeddedLog::open_with_clock(dir2.path(), config.clone(), clock.clone())
        .await
        .expect("open");
    for (day, id) in [(0, "d0"), (3, "d3"), (6, "d6")] {
        clock.set(t0 + DAY * day);
        log.append(&s2, big_event(&s2, id)).await.expect("append");
    }
    drop(log);
    let log = EmbeddedLog::open_with_clock(dir2.path(), config, clock.clone())
        .await
        .expect("open");
    log.prune(t0 + DAY * 8).await.expect("prune");
    assert_eq!(log.oldest(&s2), Some(2));
    log.close().await.expect("close");
}

#[tokio::test]
async fn deleted_streams_stay_deleted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = key("deleted");
    let log = open(dir.path(), LogConfig::default()).await;
    append_n(&log, &s, "e", 3).await;
    // Appends racing the delete: each is either written (and deleted with the stream) or
    // refused; none brings the stream back.
    let racing =
        futures::future::join_all((0..20).map(|i| log.append(&s, event(&s, format!("r{i}")))));
    let (results, deleted) = futures::future::join(racing, log.delete_stream(&s)).await;
    deleted.expect("delete");
    for r in results {
        assert!(matches!(r, Ok(_) | Err(BusError::Invalid(_))), "{r:?}");
    }
    assert!(!dir.path().join(&s.app_uid).exists());
    assert!(matches!(
        log.append(&s, event(&s, "zombie")).await,
        Err(BusError::Invalid(_))
    ));
    log.delete_stream(&s).await.expect("deleting twice is fine");
    log.close().await.expect("close");

    let log = open(dir.path(), LogConfig::default()).await;
    assert!(matches!(
        log.append(&s, event(&s, "zombie")).await,
        Err(BusError::Invalid(_))
    ));
    assert!(!dir.path().join(&s.app_uid).exists());
    // An interrupted deletion (tombstone written, directory still there) is finished on open.
    let other = key("half-deleted");
    append_n(&log, &other, "e", 1).await;
    log.close().await.expect("close");
    let tombstones = dir.path().join("deleted-streams");
    let mut text = fs::read_to_string(&tombstones).expect("tombstones");
    text.push_str(&format!("{}\n", other.app_uid));
    fs::write(&tombstones, text).expect("write");
    let log = open(dir.path(), LogConfig::default()).await;
    assert!(!dir.path().join(&other.app_uid).exists());
    assert_eq!(log.end(&other), 0);

    // A tombstone line torn by a crash does not swallow the next one.
    let third = key("after-a-torn-line");
    append_n(&log, &third, "e", 1).await;
    log.close().await.expect("close");
    let mut text = fs::read_to_string(&tombstones).expect("tombstones");
    text.push_str("half-a-u");
    fs::write(&tombstones, text).expect("write");
    let log = open(dir.path(), LogConfig::default()).await;
    log.delete_stream(&third).await.expect("delete");
    log.close().await.expect("close");
    let log = open(dir.path(), LogConfig::default()).await;
    let refused = log.append(&third, event(&third, "zombie")).await;
    assert!(matches!(refused, Err(BusError::Invalid(_))), "{refused:?}");
    log.close().await.expect("close");
}
