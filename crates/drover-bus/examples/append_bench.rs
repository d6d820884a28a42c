//! Rough throughput of the embedded log: appenders each keeping a window of appends in flight
//! (like MQTT QoS 1 publishers with a receive window), durable acknowledgements, 64-byte events.
//! Then one consumer reads the whole stream back from disk.
//!
//! ```text
//! cargo run --release -p drover-bus --example append_bench -- [appenders] [per appender] [window] [dir]
//! ```
//! Defaults: 10 appenders x 100000 events, window 1000, a temporary directory.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use drover_bus::embedded::{EmbeddedLog, LogConfig};
use drover_bus::{EventLog, StartFrom, StreamKey};
use drover_model::Event;
use futures::{StreamExt, TryStreamExt};

/// CPU seconds (user + system) this process used so far, from /proc (Linux only; 0 elsewhere).
fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    let Some(rest) = stat.rsplit_once(") ").map(|(_, r)| r) else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the command name.
    (ticks(11) + ticks(12)) / 100.0
}

fn event(stream: &StreamKey, device: usize) -> Event {
    Event {
        id: "2f6c5f3e-8d2a-4c1b-9a55-0c7c1f0e9b1d".into(),
        ty: drover_model::event::EVENT_TYPE.into(),
        channel: "telemetry".into(),
        time: chrono::Utc::now(),
        content_type: Some("application/octet-stream".into()),
        data_schema: None,
        application: stream.app.clone(),
        application_uid: stream.app_uid.clone(),
        device: format!("device-{device}"),
        device_uid: format!("00000000-0000-4000-8000-{device:012}"),
        sender: format!("device-{device}"),
        sender_uid: format!("00000000-0000-4000-8000-{device:012}"),
        instance: "drover-0".into(),
        extensions: Vec::new(),
        data: Bytes::from_static(&[0x42; 64]),
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg =
        |i: usize, default: usize| args.get(i).and_then(|a| a.parse().ok()).unwrap_or(default);
    let (appenders, each, window) = (arg(0, 10), arg(1, 100_000), arg(2, 1000).max(1));
    let tmp = tempfile::tempdir()?;
    let dir = args
        .get(3)
        .map_or_else(|| tmp.path().to_path_buf(), Into::into);

    let log = Arc::new(EmbeddedLog::open(&dir, LogConfig::default()).await?);
    let stream = StreamKey::new("bench", format!("bench-{}", std::process::id()));

    let (cpu0, t0) = (cpu_seconds(), Instant::now());
    let mut tasks = Vec::new();
    for a in 0..appenders {
        let (log, stream) = (log.clone(), stream.clone());
        tasks.push(tokio::spawn(async move {
            let template = event(&stream, a);
            futures::stream::iter(0..each)
                .map(|_| log.append(&stream, template.clone()))
                .buffered(window)
                .try_for_each(|_| async { Ok(()) })
                .await
        }));
    }
    for t in tasks {
        t.await??;
    }
    let (secs, cpu) = (t0.elapsed().as_secs_f64(), cpu_seconds() - cpu0);
    let total = (appenders * each) as f64;
    println!(
        "append: {appenders} appenders x {each} events, window {window}: {total} in {secs:.2} s = {:.0} appends/s, {:.2} CPU-µs per append, {:.1} MB on disk",
        total / secs,
        cpu * 1e6 / total,
        log.stream_bytes(&stream) as f64 / 1e6,
    );

    let (cpu0, t0) = (cpu_seconds(), Instant::now());
    let mut consumer = log.consume(&stream, StartFrom::Earliest).await?;
    let mut read = 0u64;
    while read < total as u64 {
        read += consumer.next_batch(1000).await?.len() as u64;
    }
    let (secs, cpu) = (t0.elapsed().as_secs_f64(), cpu_seconds() - cpu0);
    println!(
        "read back: {read} records in {secs:.2} s = {:.0} records/s, {:.2} CPU-µs per record",
        read as f64 / secs,
        cpu * 1e6 / read as f64
    );
    log.close().await?;
    Ok(())
}
