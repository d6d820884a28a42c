//! Files on disk and what survives a crash or a restart: records, torn ends, group offsets,
//! streams and their groups.

use std::fs;
use std::time::Duration;

use crate::conformance::{append_n, event, ids, key, take, within};
use crate::helpers::{big_event, frame_starts, open, segment_files, tiny_segments};
use drover_bus::embedded::LogConfig;
use drover_bus::{BusError, EventLog, Offset, StartFrom};

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
