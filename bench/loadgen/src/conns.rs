//! Many connections: `idle` (memory per held connection) and `storm` (time until N devices
//! are all connected). Plus the `ports` and `wait` helpers of the scripts.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::sync::Semaphore;

use crate::mqtt;
use crate::procfs;
use crate::stats;
use crate::{expand, f1, f2, now_ns, result, Args};

struct Many {
    streams: Vec<TcpStream>,
    latencies: Vec<u64>,
    failed: u64,
    first_error: Option<String>,
    elapsed_s: f64,
}

/// Opens `n` MQTT connections (`concurrency` attempts at a time), spread over `sources`
/// 127.0.0.x source addresses.
async fn connect_many(
    args: &Args,
    n: u64,
    concurrency: usize,
    keepalive: u16,
) -> Result<Many, String> {
    let addr: SocketAddr = mqtt::resolve(&args.str("addr", "127.0.0.1:1883"))?;
    let sources: u64 = args.num("sources", n.div_ceil(8_000).max(2));
    let user = args.str("user", "d{i}@bench");
    let pass = args.str("pass", "pw");
    let client_id = args.str("client-id", "lg-{i}");
    let timeout = Duration::from_secs_f64(args.num("connect-timeout", 120.0f64));
    let offset: u64 = args.num("offset", 0u64);
    let sem = Arc::new(Semaphore::new(concurrency.max(1)));
    let mut set = tokio::task::JoinSet::new();
    let t0 = now_ns();
    for k in 0..n {
        let i = k + 1 + offset;
        let u = (!user.is_empty()).then(|| expand(&user, i));
        let p = (!pass.is_empty()).then(|| expand(&pass, i));
        let pkt = mqtt::connect_packet(
            &expand(&client_id, i),
            u.as_deref(),
            p.as_deref(),
            keepalive,
            true,
        );
        let sem = sem.clone();
        let src = mqtt::source_ip(k, sources);
        set.spawn(async move {
            let _permit = sem.acquire_owned().await.expect("semaphore");
            let t = now_ns();
            let r = mqtt::connect(addr, src, &pkt, timeout).await;
            r.map(|s| (s, now_ns() - t))
        });
    }
    let mut m = Many {
        streams: Vec::with_capacity(n as usize),
        latencies: Vec::with_capacity(n as usize),
        failed: 0,
        first_error: None,
        elapsed_s: 0.0,
    };
    let mut last_report = now_ns();
    while let Some(r) = set.join_next().await {
        match r {
            Ok(Ok((s, lat))) => {
                m.streams.push(s);
                m.latencies.push(lat);
            }
            Ok(Err(e)) => {
                m.failed += 1;
                m.first_error.get_or_insert(e);
            }
            Err(e) => {
                m.failed += 1;
                m.first_error.get_or_insert(format!("task: {e}"));
            }
        }
        if now_ns() - last_report > 5_000_000_000 {
            last_report = now_ns();
            eprintln!(
                "  ... {} connected, {} failed, {:.1} s",
                m.streams.len(),
                m.failed,
                (last_report - t0) as f64 / 1e9
            );
        }
    }
    m.elapsed_s = (now_ns() - t0) as f64 / 1e9;
    if let Some(e) = &m.first_error {
        eprintln!("warning: {} connections failed; first error: {e}", m.failed);
    }
    Ok(m)
}

pub async fn idle(args: &Args) -> Result<(), String> {
    let n: u64 = args.num("connections", 10_000u64);
    let pid: Option<u32> = args.opt("pid").and_then(|p| p.parse().ok());
    let hold: f64 = args.num("hold", 10.0f64);
    let rss0 = procfs::status_kib(pid, "VmRSS");
    let cpu0 = procfs::cpu_secs(pid);
    let m = connect_many(
        args,
        n,
        args.num("concurrency", 200usize),
        args.num("keepalive", 600u16),
    )
    .await?;
    let cpu1 = procfs::cpu_secs(pid);
    // Let the broker settle (connection events, allocator), then measure while holding.
    tokio::time::sleep(Duration::from_secs_f64(hold)).await;
    let rss1 = procfs::status_kib(pid, "VmRSS");
    let hwm = procfs::status_kib(pid, "VmHWM");
    let cpu2 = procfs::cpu_secs(pid);
    let held = m.streams.len() as u64;
    let per_conn = match (rss0, rss1) {
        (Some(a), Some(b)) if held > 0 => (b as f64 - a as f64) * 1024.0 / held as f64,
        _ => f64::NAN,
    };
    result(&[
        ("scenario", "idle".into()),
        ("label", args.str("label", "target")),
        ("connections", n.to_string()),
        ("connected", held.to_string()),
        ("failed", m.failed.to_string()),
        ("connect_s", f2(m.elapsed_s)),
        ("rss_before_kib", procfs::kib(rss0)),
        ("rss_held_kib", procfs::kib(rss1)),
        ("rss_peak_kib", procfs::kib(hwm)),
        ("bytes_per_conn", f1(per_conn)),
        ("connect_cpu_s", f2(procfs::delta(cpu0, cpu1))),
        ("idle_cpu_pct", f2(procfs::delta(cpu1, cpu2) * 100.0 / hold)),
        (
            "first_error",
            m.first_error.clone().unwrap_or_else(|| "-".into()),
        ),
    ]);
    drop(m);
    Ok(())
}

pub async fn storm(args: &Args) -> Result<(), String> {
    let n: u64 = args.num("connections", 10_000u64);
    let pid: Option<u32> = args.opt("pid").and_then(|p| p.parse().ok());
    let cpu0 = procfs::cpu_secs(pid);
    let mut m = connect_many(
        args,
        n,
        args.num("concurrency", n as usize),
        args.num("keepalive", 600u16),
    )
    .await?;
    let cpu1 = procfs::cpu_secs(pid);
    let held = m.streams.len() as u64;
    let cpu = procfs::delta(cpu0, cpu1);
    let mut f: Vec<(String, String)> = vec![
        ("scenario".into(), "storm".into()),
        ("label".into(), args.str("label", "target")),
        ("connections".into(), n.to_string()),
        (
            "concurrency".into(),
            args.str("concurrency", &n.to_string()),
        ),
        ("connected".into(), held.to_string()),
        ("failed".into(), m.failed.to_string()),
        ("all_connected_s".into(), f2(m.elapsed_s)),
        ("connects_per_s".into(), f1(held as f64 / m.elapsed_s)),
        ("broker_cpu_s".into(), f2(cpu)),
        (
            "cpu_us_per_connect".into(),
            f1(cpu * 1e6 / held.max(1) as f64),
        ),
        (
            "rss_peak_kib".into(),
            procfs::kib(procfs::status_kib(pid, "VmHWM")),
        ),
    ];
    let mut lat = std::mem::take(&mut m.latencies);
    lat.sort_unstable();
    for (name, p) in [("connack_p50_ms", 50.0), ("connack_p99_ms", 99.0)] {
        f.push((name.into(), f1(stats::pct(&lat, p) / 1e6)));
    }
    f.push((
        "first_error".into(),
        m.first_error.clone().unwrap_or_else(|| "-".into()),
    ));
    let refs: Vec<(&str, String)> = f.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
    result(&refs);
    drop(m);
    Ok(())
}

/// Prints `--count` free TCP ports (bound on 127.0.0.1 port 0, then released).
pub fn ports(args: &Args) -> Result<(), String> {
    let n: usize = args.num("count", 1usize);
    let ls: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string()))
        .collect::<Result<_, _>>()?;
    let ports: Vec<String> = ls
        .iter()
        .map(|l| {
            l.local_addr()
                .map(|a| a.port().to_string())
                .unwrap_or_default()
        })
        .collect();
    println!("{}", ports.join(" "));
    Ok(())
}

/// Waits until `--addr` accepts TCP connections.
pub async fn wait(args: &Args) -> Result<(), String> {
    let addr = mqtt::resolve(&args.str("addr", "127.0.0.1:1883"))?;
    let deadline =
        tokio::time::Instant::now() + Duration::from_secs_f64(args.num("timeout", 30.0f64));
    loop {
        if TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            return Err(format!("{addr} does not accept connections"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
