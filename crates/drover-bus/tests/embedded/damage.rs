//! Damage on disk: a damaged record is stepped over (reported, counted, copied aside) and every
//! intact record after it is kept; a torn or damaged end is cut only after being copied aside;
//! a stream whose files cannot be used is out of service alone.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::conformance::{append_n, event, ids, key, take};
use crate::helpers::{frame_starts, open, segment_files};
use drover_bus::embedded::{DamageStats, EmbeddedLog, LogConfig};
use drover_bus::{BusError, EventLog, Offset, Record, StartFrom, StreamKey};

fn flip(bytes: &mut [u8], at: usize, mask: u8) {
    bytes[at] ^= mask;
}

/// The base offset in a segment file's name.
fn base_of(segment: &Path) -> Offset {
    segment
        .file_stem()
        .and_then(|s| s.to_str())
        .and_then(|s| s.parse().ok())
        .expect("a segment file name")
}

/// `<segment>.<kind>-<pos>`.
fn copy_aside(segment: &Path, kind: &str, pos: usize) -> PathBuf {
    let name = segment.file_name().and_then(|n| n.to_str()).expect("name");
    segment.with_file_name(format!("{name}.{kind}-{pos}"))
}

/// The quarantine files of a stream.
fn quarantined(dir: &Path, stream: &StreamKey) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir.join(&stream.app_uid))
        .expect("stream directory")
        .map(|e| e.expect("entry").path())
        .filter(|p| {
            p.to_str()
                .is_some_and(|p| p.contains(".damaged-") || p.contains(".torn-"))
        })
        .collect();
    files.sort();
    files
}

/// Appends `n` events `<prefix>0..` in batches (one fsync per batch).
async fn append_batches(log: &EmbeddedLog, s: &StreamKey, prefix: &str, n: usize) {
    for chunk in (0..n).collect::<Vec<_>>().chunks(500) {
        let events = chunk
            .iter()
            .map(|i| event(s, format!("{prefix}{i}")))
            .collect();
        for r in log.append_batch(s, events).await {
            r.expect("append");
        }
    }
}

fn offsets(records: &[Record]) -> Vec<Offset> {
    records.iter().map(|r| r.offset).collect()
}

async fn first_after(log: &EmbeddedLog, s: &StreamKey, after: Offset) -> Offset {
    let mut c = log
        .consume(s, StartFrom::After(after))
        .await
        .expect("consume");
    take(&mut *c, 1).await[0].offset
}

#[tokio::test]
async fn a_damaged_record_in_the_newest_segment_is_stepped_over() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = key("midfile");
    let log = open(dir.path(), LogConfig::default()).await;
    append_batches(&log, &s, "e", 2000).await;
    log.commit(&s, "g", 1500).await.expect("commit");
    log.close().await.expect("close");

    // One flipped bit in the middle of record 1000's body.
    let segment = segment_files(dir.path(), &s).pop().expect("a segment");
    let mut bytes = fs::read(&segment).expect("read");
    let starts = frame_starts(&bytes);
    assert_eq!(starts.len(), 2000);
    flip(&mut bytes, starts[999] + 40, 0x08);
    fs::write(&segment, &bytes).expect("write");
    let damaged = bytes[starts[999]..starts[1000]].to_vec();

    let log = open(dir.path(), LogConfig::default()).await;
    // Nothing was cut; every other record is there, in order; offset 1000 is absent.
    assert_eq!(
        fs::metadata(&segment).expect("metadata").len(),
        bytes.len() as u64
    );
    assert_eq!(log.end(&s), 2000);
    let mut c = log.consume(&s, StartFrom::Earliest).await.expect("consume");
    let records = take(&mut *c, 1999).await;
    let expected: Vec<Offset> = (1..=999).chain(1001..=2000).collect();
    assert_eq!(offsets(&records), expected);
    assert_eq!(records[998].event.id, "e998");
    assert_eq!(records[999].event.id, "e1000");
    // The damaged bytes are copied aside, and counted.
    let copy = copy_aside(&segment, "damaged", starts[999]);
    assert_eq!(fs::read(&copy).expect("quarantine file"), damaged);
    let stats = DamageStats {
        damaged_regions: 1,
        damaged_bytes: damaged.len() as u64,
        lost_records: 1,
        ..DamageStats::default()
    };
    assert_eq!(log.damage(), vec![(s.clone(), stats)]);

    // Readers starting anywhere around the gap (from the sparse index too) step over it.
    assert_eq!(first_after(&log, &s, 998).await, 999);
    assert_eq!(first_after(&log, &s, 999).await, 1001);
    assert_eq!(first_after(&log, &s, 1000).await, 1001);
    assert_eq!(first_after(&log, &s, 1700).await, 1701);
    // Groups and appends go on.
    assert_eq!(log.committed(&s, "g").await.expect("committed"), Some(1500));
    assert_eq!(
        log.append(&s, event(&s, "after")).await.expect("append"),
        2001
    );
    assert_eq!(take(&mut *c, 1).await[0].event.id, "after");
    log.commit(&s, "g", 2001).await.expect("commit");
    // However many readers met it, the damage was reported once.
    assert_eq!(log.damage(), vec![(s.clone(), stats)]);
    log.close().await.expect("close");

    // After another restart: the same records, the same single quarantine file.
    let log = open(dir.path(), LogConfig::default()).await;
    let mut c = log.consume(&s, StartFrom::Earliest).await.expect("consume");
    let records = take(&mut *c, 2000).await;
    assert_eq!(records[1998].offset, 2000);
    assert_eq!(records[1999].event.id, "after");
    assert_eq!(quarantined(dir.path(), &s), vec![copy]);
    log.close().await.expect("close");
}

#[tokio::test]
async fn cut_ends_are_kept_aside() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = key("ends");
    let log = open(dir.path(), LogConfig::default()).await;
    append_n(&log, &s, "e", 10).await;
    log.commit(&s, "g", 10).await.expect("commit");
    log.close().await.expect("close");
    let segment = segment_files(dir.path(), &s).pop().expect("a segment");
    let bytes = fs::read(&segment).expect("read");
    let starts = frame_starts(&bytes);

    // An incomplete last write (as a crash leaves it): cut, its bytes kept as `.torn-<pos>`.
    let torn_end = starts[9] + 20;
    fs::write(&segment, &bytes[..torn_end]).expect("write");
    let log = open(dir.path(), LogConfig::default()).await;
    assert_eq!(
        fs::metadata(&segment).expect("metadata").len(),
        starts[9] as u64
    );
    assert_eq!(log.end(&s), 9);
    assert_eq!(
        fs::read(copy_aside(&segment, "torn", starts[9])).expect("copy"),
        &bytes[starts[9]..torn_end]
    );
    let torn = DamageStats {
        torn_writes: 1,
        ..DamageStats::default()
    };
    assert_eq!(log.damage(), vec![(s.clone(), torn)]);
    // The group had committed the cut record: it resumes at the end, so that it skips nothing
    // appended from now on.
    assert_eq!(log.committed(&s, "g").await.expect("committed"), Some(9));
    assert_eq!(
        fs::read_to_string(dir.path().join(&s.app_uid).join("groups")).expect("groups"),
        "drover-groups 1\n9 g\n",
        "written at once: a crash must not bring the cut offset back"
    );
    assert_eq!(
        log.append(&s, event(&s, "again")).await.expect("append"),
        10
    );
    assert_eq!(first_after(&log, &s, 9).await, 10);
    log.close().await.expect("close");

    // A flipped bit in the complete last record: damage (it may have been acknowledged).
    let mut bytes = fs::read(&segment).expect("read");
    let last = frame_starts(&bytes)[9];
    let n = bytes.len();
    flip(&mut bytes, n - 3, 0x01);
    fs::write(&segment, &bytes).expect("write");
    let log = open(dir.path(), LogConfig::default()).await;
    assert_eq!(log.end(&s), 9);
    assert_eq!(
        fs::read(copy_aside(&segment, "damaged", last)).expect("copy"),
        &bytes[last..]
    );
    let damaged = DamageStats {
        damaged_tails: 1,
        damaged_bytes: (n - last) as u64,
        ..DamageStats::default()
    };
    assert_eq!(log.damage(), vec![(s.clone(), damaged)]);
    assert_eq!(quarantined(dir.path(), &s).len(), 2);
    log.close().await.expect("close");
}

#[tokio::test]
async fn damage_in_sealed_segments_is_stepped_over() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = key("sealed");
    let config = LogConfig {
        segment_bytes: 4096,
        ..LogConfig::default()
    };
    let log = open(dir.path(), config.clone()).await;
    append_batches(&log, &s, "e", 150).await;
    log.close().await.expect("close");
    let files = segment_files(dir.path(), &s);
    assert!(files.len() >= 5, "{} segments", files.len());

    // Damage in four sealed segments; every segment file keeps its length.
    let mut lost = Vec::new();
    let mut copies = Vec::new();
    let mut damage = |i: usize, frame: &dyn Fn(usize) -> usize, at: usize, mask: u8| {
        let mut bytes = fs::read(&files[i]).expect("read");
        let starts = frame_starts(&bytes);
        let k = frame(starts.len());
        flip(&mut bytes, starts[k] + at, mask);
        fs::write(&files[i], &bytes).expect("write");
        lost.push(base_of(&files[i]) + k as Offset);
        let end = starts.get(k + 1).copied().unwrap_or(bytes.len());
        copies.push((
            copy_aside(&files[i], "damaged", starts[k]),
            bytes[starts[k]..end].to_vec(),
        ));
    };
    damage(0, &|n| n / 2, 50, 0x20); // the oldest: a body
    damage(1, &|n| n / 2, 30, 0x01); // a body
    damage(2, &|n| n - 1, 60, 0x80); // the last record: damage up to the segment's end
    damage(3, &|_| 0, 3, 0x40); // the first record's length: resynchronised byte by byte
    lost.sort_unstable();
    let sizes: Vec<u64> = files
        .iter()
        .map(|f| fs::metadata(f).expect("metadata").len())
        .collect();

    let log = open(dir.path(), config).await;
    // Sealed segments are not read at open; retention reads the oldest (its age is a bound).
    assert!(log.damage().is_empty());
    assert_eq!(log.prune(SystemTime::now()).await.expect("prune"), 0);
    assert_eq!(log.damage()[0].1.damaged_regions, 1);

    let expected: Vec<Offset> = (1..=150).filter(|o| !lost.contains(o)).collect();
    for _ in 0..2 {
        let mut c = log.consume(&s, StartFrom::Earliest).await.expect("consume");
        assert_eq!(offsets(&take(&mut *c, expected.len()).await), expected);
    }
    assert_eq!(first_after(&log, &s, lost[1] - 1).await, lost[1] + 1);
    let stats = log.damage()[0].1;
    assert_eq!((stats.damaged_regions, stats.lost_records), (4, 4));
    for (copy, bytes) in &copies {
        assert_eq!(&fs::read(copy).expect("quarantine file"), bytes);
    }
    let after: Vec<u64> = files
        .iter()
        .map(|f| fs::metadata(f).expect("metadata").len())
        .collect();
    assert_eq!(after, sizes);
    assert_eq!(
        log.append(&s, event(&s, "more")).await.expect("append"),
        151
    );
    log.close().await.expect("close");
}

#[tokio::test]
async fn a_stream_with_an_unusable_file_is_out_of_service_alone() {
    /// Damages a file in the stream's directory; returns its path.
    type BreakIt = fn(&Path) -> PathBuf;
    let cases: [(&str, BreakIt); 3] = [
        ("stream.meta", |d| {
            let p = d.join("stream.meta");
            fs::write(&p, b"drover-stream 1\napp=br\xffken\nuid=x\n").expect("write");
            p
        }),
        ("groups", |d| {
            let p = d.join("groups");
            fs::write(&p, b"drover-groups 1\n3 g\n\x00\x00 h\n").expect("write");
            p
        }),
        ("a segment", |d| {
            // Something named like the newest segment that cannot be read.
            let p = d.join("00000000000000000999.log");
            fs::create_dir(&p).expect("mkdir");
            p
        }),
    ];
    for (what, break_it) in cases {
        let dir = tempfile::tempdir().expect("tempdir");
        let (a, b) = (key("broken"), key("fine"));
        let log = open(dir.path(), LogConfig::default()).await;
        append_n(&log, &a, "a", 3).await;
        append_n(&log, &b, "b", 3).await;
        log.commit(&a, "g", 3).await.expect("commit");
        log.close().await.expect("close");
        let file = break_it(&dir.path().join(&a.app_uid));

        // By default the open fails, naming the file.
        let e = EmbeddedLog::open(dir.path(), LogConfig::default())
            .await
            .expect_err(what);
        assert!(
            e.to_string().contains(&*file.to_string_lossy()),
            "{what}: {e}"
        );

        // Isolating: only that stream is out of service.
        let isolating = LogConfig {
            isolate_broken_streams: true,
            ..LogConfig::default()
        };
        let log = open(dir.path(), isolating).await;
        let broken = log.out_of_service();
        assert_eq!(broken.len(), 1, "{what}");
        assert_eq!(broken[0].app_uid, a.app_uid);
        assert_eq!(broken[0].error.path(), file);
        let name = file.file_name().and_then(|n| n.to_str()).expect("name");
        match log.append(&a, event(&a, "x")).await {
            Err(BusError::Unavailable(m)) => {
                let m = m.to_string();
                assert!(
                    m.contains("out of service") && m.contains(name),
                    "{what}: {m}"
                );
                assert!(!m.contains(&*dir.path().to_string_lossy()), "no paths: {m}");
            }
            other => panic!("{what}: append to a broken stream: {other:?}"),
        }
        for r in log.append_batch(&a, vec![event(&a, "y")]).await {
            assert!(matches!(r, Err(BusError::Unavailable(_))), "{what}");
        }
        assert!(matches!(
            log.consume(&a, StartFrom::Earliest).await.err(),
            Some(BusError::Unavailable(_))
        ));
        assert!(matches!(
            log.committed(&a, "g").await,
            Err(BusError::Unavailable(_))
        ));
        assert!(matches!(
            log.commit(&a, "g", 1).await,
            Err(BusError::Unavailable(_))
        ));
        // Every other stream is served.
        assert_eq!(log.streams(), vec![b.clone()]);
        assert_eq!(log.append(&b, event(&b, "b3")).await.expect("append"), 4);
        let mut c = log.consume(&b, StartFrom::Earliest).await.expect("consume");
        assert_eq!(ids(&take(&mut *c, 4).await), ["b0", "b1", "b2", "b3"]);
        // Deleting the stream (its application is gone) removes it with its files.
        log.delete_stream(&a).await.expect("delete");
        assert!(log.out_of_service().is_empty());
        assert!(!dir.path().join(&a.app_uid).exists());
        assert!(matches!(
            log.append(&a, event(&a, "z")).await,
            Err(BusError::Invalid(_))
        ));
        log.close().await.expect("close");
    }
}
