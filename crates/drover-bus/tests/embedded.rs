//! The embedded log: the shared conformance checks, then what only it does (files, recovery,
//! retention, bounds).

mod conformance;
#[path = "embedded/damage.rs"]
mod damage;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use conformance::{append_n, event, ids, key, take, within};
use drover_bus::embedded::{Clock, EmbeddedLog, LogConfig};
use drover_bus::{BusError, EventLog, Offset, StartFrom, StreamKey};

async fn open(dir: &Path, config: LogConfig) -> EmbeddedLog {
    EmbeddedLog::open(dir, config).await.expect("open")
}

/// One small record per segment: 600 bytes of data, 1 KiB segments.
fn tiny_segments() -> LogConfig {
    LogConfig {
        segment_bytes: 1024,
        ..LogConfig::default()
    }
}

fn big_event(stream: &StreamKey, id: &str) -> drover_model::Event {
    let mut e = event(stream, id);
    e.data = vec![b'y'; 600].into();
    e
}

fn segment_files(dir: &Path, stream: &StreamKey) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir.join(&stream.app_uid))
        .expect("stream directory")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    files.sort();
    files
}

/// Start positions of the frames in a segment file.
fn frame_starts(bytes: &[u8]) -> Vec<usize> {
    let mut starts = Vec::new();
    let mut at = 0;
    while at + 8 <= bytes.len() {
        starts.push(at);
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes")) as usize;
        at += 8 + len;
    }
    starts
}

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

#[tokio::test]
async fn layout_on_disk() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(dir.path(), LogConfig::default()).await;
    let s = key("layout");
    append_n(&log, &s, "e", 2).await;
    log.commit(&s, "g", 2).await.expect("commit");
    log.close().await.expect("close");
    let stream_dir = dir.path().join(&s.app_uid);
    let meta = fs::read_to_string(stream_dir.join("stream.meta")).expect("meta");
    assert!(
        meta.contains(&format!("app={}\n", s.app))
            && meta.contains(&format!("uid={}\n", s.app_uid))
    );
    assert_eq!(
        fs::read_to_string(stream_dir.join("groups")).expect("groups"),
        "drover-groups 1\n2 g\n"
    );
    let files = segment_files(dir.path(), &s);
    assert_eq!(files.len(), 1);
    assert!(files[0].ends_with("00000000000000000001.log"));
    let bytes = fs::read(&files[0]).expect("segment");
    // Compact: a 64-byte event with a handful of short attributes.
    assert_eq!(frame_starts(&bytes).len(), 2);
    assert!(
        bytes.len() / 2 < 250,
        "record takes {} bytes",
        bytes.len() / 2
    );
}

#[tokio::test]
async fn acknowledged_appends_survive_a_crash() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = key("crash");
    let log = open(dir.path(), tiny_segments()).await;
    for i in 0..5 {
        log.append(&s, big_event(&s, &format!("big{i}")))
            .await
            .expect("append");
    }
    append_n(&log, &s, "e", 20).await;
    drop(log); // no close: as if the process died

    let log = open(dir.path(), tiny_segments()).await;
    assert_eq!(log.end(&s), 25);
    let mut c = log.consume(&s, StartFrom::Earliest).await.expect("consume");
    let records = take(&mut *c, 25).await;
    assert_eq!(
        records.iter().map(|r| r.offset).collect::<Vec<_>>(),
        (1..=25).collect::<Vec<_>>()
    );
    assert_eq!(records[0].event.data.len(), 600);
    assert_eq!(
        ids(&records[5..]),
        (0..20).map(|i| format!("e{i}")).collect::<Vec<_>>()
    );
    // Starting in the middle of a sealed segment after a restart, and in the active one.
    let mut c = log
        .consume(&s, StartFrom::After(12))
        .await
        .expect("consume");
    assert_eq!(take(&mut *c, 1).await[0].offset, 13);
    assert_eq!(log.append(&s, event(&s, "next")).await.expect("append"), 26);
    log.close().await.expect("close");
}

#[tokio::test]
async fn garbage_after_the_last_record_is_cut() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = key("garbage");
    let log = open(dir.path(), LogConfig::default()).await;
    append_n(&log, &s, "e", 10).await;
    drop(log);

    let last = segment_files(dir.path(), &s).pop().expect("a segment");
    let good_len = fs::metadata(&last).expect("metadata").len();
    let mut bytes = fs::read(&last).expect("read");
    bytes.extend_from_slice(&[0x5a; 100]);
    fs::write(&last, &bytes).expect("write garbage");

    let log = open(dir.path(), LogConfig::default()).await;
    assert_eq!(fs::metadata(&last).expect("metadata").len(), good_len);
    assert_eq!(log.end(&s), 10);
    assert_eq!(
        log.append(&s, event(&s, "after")).await.expect("append"),
        11
    );
    let mut c = log.consume(&s, StartFrom::Earliest).await.expect("consume");
    let records = take(&mut *c, 11).await;
    assert_eq!(records[9].event.id, "e9");
    assert_eq!(records[10].event.id, "after");
    log.close().await.expect("close");
}

#[tokio::test]
async fn a_torn_last_record_is_dropped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = key("torn");
    let log = open(dir.path(), LogConfig::default()).await;
    append_n(&log, &s, "e", 10).await;
    drop(log);

    let last = segment_files(dir.path(), &s).pop().expect("a segment");
    let bytes = fs::read(&last).expect("read");
    let starts = frame_starts(&bytes);
    let cut_at = starts[9] + (bytes.len() - starts[9]) / 2;
    fs::OpenOptions::new()
        .write(true)
        .open(&last)
        .expect("open")
        .set_len(cut_at as u64)
        .expect("cut");

    let log = open(dir.path(), LogConfig::default()).await;
    assert_eq!(
        fs::metadata(&last).expect("metadata").len(),
        starts[9] as u64
    );
    assert_eq!(log.end(&s), 9);
    let mut c = log.consume(&s, StartFrom::Earliest).await.expect("consume");
    assert_eq!(
        ids(&take(&mut *c, 9).await),
        (0..9).map(|i| format!("e{i}")).collect::<Vec<_>>()
    );
    assert_eq!(
        log.append(&s, event(&s, "again")).await.expect("append"),
        10
    );
    let r = take(&mut *c, 1).await;
    assert_eq!((r[0].offset, r[0].event.id.as_str()), (10, "again"));

    // A flipped bit in the last record: its CRC no longer matches, it goes too.
    drop(c);
    log.close().await.expect("close");
    let mut bytes = fs::read(&last).expect("read");
    let n = bytes.len();
    bytes[n - 3] ^= 0x01;
    fs::write(&last, &bytes).expect("write");
    let log = open(dir.path(), LogConfig::default()).await;
    assert_eq!(log.end(&s), 9);
    log.close().await.expect("close");
}

#[tokio::test]
async fn group_offsets_survive_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = key("resume");
    let log = open(dir.path(), LogConfig::default()).await;
    append_n(&log, &s, "e", 10).await;
    let mut c = log.consume(&s, StartFrom::Earliest).await.expect("consume");
    let got = take(&mut *c, 6).await;
    log.commit(&s, "integration", got[5].offset)
        .await
        .expect("commit");
    log.close().await.expect("close");
    assert!(matches!(
        log.commit(&s, "integration", 7).await,
        Err(BusError::Closed)
    ));
    assert!(matches!(
        log.append(&s, event(&s, "late")).await,
        Err(BusError::Closed)
    ));

    let log = open(dir.path(), LogConfig::default()).await;
    let committed = log
        .committed(&s, "integration")
        .await
        .expect("committed")
        .expect("an offset");
    assert_eq!(committed, 6);
    let mut c = log
        .consume(&s, StartFrom::After(committed))
        .await
        .expect("consume");
    assert_eq!(ids(&take(&mut *c, 4).await), ["e6", "e7", "e8", "e9"]);
    log.close().await.expect("close");
}

#[tokio::test(start_paused = true)]
async fn group_offsets_are_written_periodically() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = key("interval");
    let config = LogConfig {
        group_commit_interval: Duration::from_secs(1),
        ..LogConfig::default()
    };
    let log = open(dir.path(), config.clone()).await;
    append_n(&log, &s, "e", 3).await;
    log.commit(&s, "g", 2).await.expect("commit");
    // Before the interval is over nothing is written: a crash now would re-deliver (at least
    // once). Once it is over, the file appears.
    let groups = dir.path().join(&s.app_uid).join("groups");
    assert!(!groups.exists());
    tokio::time::advance(Duration::from_millis(1100)).await;
    within("groups file written", async {
        while fs::read_to_string(&groups).map_or(true, |t| !t.contains("2 g")) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    drop(log); // crash

    let log = open(dir.path(), config).await;
    assert_eq!(log.committed(&s, "g").await.expect("committed"), Some(2));
    log.close().await.expect("close");
}

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

#[tokio::test]
async fn streams_and_their_groups_are_listed_after_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b, gone) = (key("list-a"), key("list-b"), key("list-gone"));
    let log = open(dir.path(), LogConfig::default()).await;
    for k in [&a, &b, &gone] {
        append_n(&log, k, "e", 3).await;
    }
    log.commit(&a, "g1", 2).await.expect("commit");
    log.commit(&a, "g2", 3).await.expect("commit");
    log.delete_stream(&gone).await.expect("delete");
    log.close().await.expect("close");

    let log = open(dir.path(), LogConfig::default()).await;
    let mut expected = vec![a.clone(), b.clone()];
    expected.sort_by(|x, y| x.app_uid.cmp(&y.app_uid));
    assert_eq!(log.streams(), expected);
    let groups: Vec<(String, Offset)> = log.groups(&a).into_iter().collect();
    assert_eq!(groups, [("g1".to_string(), 2), ("g2".to_string(), 3)]);
    assert!(log.groups(&b).is_empty());
    assert!(log.groups(&gone).is_empty());
    log.close().await.expect("close");
}
