//! `fanin` (as fast as possible) and `latency` (fixed rate): N publishers -> one subscriber.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::mqtt::{self, Template};
use crate::procfs;
use crate::stats;
use crate::sub;
use crate::{expand, f1, f2, now_ns, result, Args};

struct PubCfg {
    qos: u8,
    count: u64,
    window: u64,
    /// Messages per second for this publisher (latency runs), or as fast as possible.
    rate: Option<f64>,
}

struct PubOutcome {
    /// Held open until the run is over (closing early would end the device's session).
    _stream: TcpStream,
    sent: u64,
    acked: u64,
    /// When the last message was written (QoS 0) or acknowledged (QoS 1).
    end_ns: u64,
    ack_latencies: Vec<u64>,
    error: Option<String>,
}

/// One publisher: writes batches of pre-encoded PUBLISHes (each stamped with its send time),
/// keeps at most `window` QoS 1 messages unacknowledged, and paces itself when given a rate.
async fn publish(mut s: TcpStream, t: Template, cfg: PubCfg) -> PubOutcome {
    let pkt = t.bytes.len();
    let batch_max = (65536 / pkt).max(1) as u64;
    let mut out: Vec<u8> = Vec::with_capacity(batch_max as usize * pkt);
    let mut inbuf = BytesMut::with_capacity(1 << 16);
    let mut send_ts = vec![0u64; if cfg.qos > 0 { 65536 } else { 0 }];
    let mut ack_latencies = Vec::new();
    let (mut sent, mut acked, mut next_pid) = (0u64, 0u64, 1u16);
    let mut end_ns = now_ns();
    let mut error = None;
    let start = tokio::time::Instant::now();

    // Parses PUBACKs in `inbuf`; returns how many.
    let absorb =
        |inbuf: &mut BytesMut, send_ts: &[u64], lat: &mut Vec<u64>| -> Result<u64, String> {
            let now = now_ns();
            let mut n = 0;
            while let Some((h, bs, end)) = mqtt::parse_frame(inbuf)? {
                if h & 0xF0 == 0x40 && end - bs >= 2 {
                    let pid = u16::from_be_bytes([inbuf[bs], inbuf[bs + 1]]);
                    lat.push(now.saturating_sub(send_ts[usize::from(pid)]));
                    n += 1;
                } else if h & 0xF0 == 0xE0 {
                    return Err("server sent DISCONNECT".into());
                }
                inbuf.advance(end);
            }
            Ok(n)
        };

    loop {
        let finished = if cfg.qos == 0 {
            sent == cfg.count
        } else {
            acked == cfg.count
        };
        if finished {
            break;
        }
        let inflight = sent - acked;
        let mut allowed = cfg.count - sent;
        if cfg.qos > 0 {
            allowed = allowed.min(cfg.window.saturating_sub(inflight));
        }
        let mut next_due = None;
        if let Some(rate) = cfg.rate {
            let elapsed = start.elapsed().as_secs_f64();
            let due = ((elapsed * rate) as u64 + 1).min(cfg.count);
            allowed = allowed.min(due.saturating_sub(sent));
            next_due = Some(start + Duration::from_secs_f64((sent + allowed) as f64 / rate));
        }
        let allowed = allowed.min(batch_max);
        if allowed > 0 {
            out.clear();
            let now = now_ns();
            for _ in 0..allowed {
                let o = out.len();
                out.extend_from_slice(&t.bytes);
                mqtt::put_digits(&mut out[o + t.ts_off..], now);
                if let Some(po) = t.pid_off {
                    out[o + po..o + po + 2].copy_from_slice(&next_pid.to_be_bytes());
                    send_ts[usize::from(next_pid)] = now;
                    next_pid = if next_pid == u16::MAX {
                        1
                    } else {
                        next_pid + 1
                    };
                }
            }
            if let Err(e) = s.write_all(&out).await {
                error = Some(format!("write: {e}"));
                break;
            }
            sent += allowed;
            if cfg.qos == 0 {
                end_ns = now_ns();
                continue;
            }
            // Take whatever acknowledgements are already there, without waiting.
            loop {
                if inbuf.capacity() - inbuf.len() < 4096 {
                    inbuf.reserve(1 << 16);
                }
                match s.try_read_buf(&mut inbuf) {
                    Ok(0) => {
                        error = Some("connection closed by the server".into());
                        break;
                    }
                    Ok(_) => match absorb(&mut inbuf, &send_ts, &mut ack_latencies) {
                        Ok(n) => acked += n,
                        Err(e) => {
                            error = Some(e);
                            break;
                        }
                    },
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => {
                        error = Some(format!("read: {e}"));
                        break;
                    }
                }
            }
            if error.is_some() {
                break;
            }
            continue;
        }
        // Nothing may be sent now: wait for acknowledgements and/or the next send time.
        if inbuf.capacity() - inbuf.len() < 4096 {
            inbuf.reserve(1 << 16);
        }
        let wait_read = cfg.qos > 0 && sent > acked;
        let read = async {
            if wait_read {
                s.read_buf(&mut inbuf).await
            } else {
                std::future::pending().await
            }
        };
        let tick = async {
            match next_due {
                Some(d) => {
                    tokio::time::sleep_until(
                        d.max(tokio::time::Instant::now() + Duration::from_micros(200)),
                    )
                    .await
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = read => match r {
                Ok(0) => { error = Some("connection closed by the server".into()); break; }
                Ok(_) => match absorb(&mut inbuf, &send_ts, &mut ack_latencies) {
                    Ok(n) => { acked += n; if acked == cfg.count { end_ns = now_ns(); } }
                    Err(e) => { error = Some(e); break; }
                },
                Err(e) => { error = Some(format!("read: {e}")); break; }
            },
            _ = tick => {}
        }
    }
    if cfg.qos > 0 && error.is_none() {
        end_ns = now_ns();
    }
    PubOutcome {
        _stream: s,
        sent,
        acked,
        end_ns,
        ack_latencies,
        error,
    }
}

struct Common {
    label: String,
    addr: SocketAddr,
    publishers: u64,
    size: usize,
    qos: u8,
    window: u64,
    topic: String,
    user: String,
    pass: String,
    client_id: String,
    pid: Option<u32>,
    broker_cpu: Option<usize>,
    settle: f64,
    idle_timeout: f64,
    timeout: f64,
}

impl Common {
    fn from_args(args: &Args) -> Result<Common, String> {
        Ok(Common {
            label: args.str("label", "target"),
            addr: mqtt::resolve(&args.str("addr", "127.0.0.1:1883"))?,
            publishers: args.num("publishers", 10u64),
            size: args.num("size", 64usize),
            qos: args.num("qos", 0u8),
            window: args.num("window", 32u64),
            topic: args.str("topic", "telemetry"),
            user: args.str("user", ""),
            pass: args.str("pass", ""),
            client_id: args.str("client-id", "lg-pub-{i}"),
            pid: args.opt("pid").and_then(|p| p.parse().ok()),
            broker_cpu: args.opt("broker-cpu").and_then(|p| p.parse().ok()),
            settle: args.num("settle", 1.0f64),
            idle_timeout: args.num("idle-timeout", 5.0f64),
            timeout: args.num("timeout", 300.0f64),
        })
    }

    async fn connect_publishers(&self) -> Result<Vec<TcpStream>, String> {
        let mut v = Vec::new();
        for i in 1..=self.publishers {
            let user = (!self.user.is_empty()).then(|| expand(&self.user, i));
            let pass = (!self.pass.is_empty()).then(|| expand(&self.pass, i));
            let pkt = mqtt::connect_packet(
                &expand(&self.client_id, i),
                user.as_deref(),
                pass.as_deref(),
                60,
                true,
            );
            let s = mqtt::connect(self.addr, None, &pkt, Duration::from_secs(30))
                .await
                .map_err(|e| format!("publisher {i}: {e}"))?;
            v.push(s);
        }
        Ok(v)
    }
}

struct Run {
    t0: u64,
    pubs: Vec<PubOutcome>,
    sub: Option<sub::Outcome>,
    cpu_s: f64,
    wall_end: u64,
    /// Other load on the broker's core, and steal, in percent (see procfs::core_noise).
    noise: (f64, f64),
    /// The load generator's own CPU seconds over the run (it must not be the bottleneck).
    gen_cpu_s: f64,
}

/// Connects the subscriber and publishers, runs them, waits for the subscriber to have
/// everything (or to stop receiving), and measures the broker around it.
async fn drive(
    c: &Common,
    args: &Args,
    per_pub: u64,
    rate_per_pub: Option<f64>,
    latency_after: Option<Duration>,
) -> Result<Run, String> {
    let expected = per_pub * c.publishers;
    let kind = sub::Kind::from_args(args, c.qos)?;
    // Latency samples only for messages sent after the warm-up: t0 is fixed below, so the
    // threshold is set relative to "now + settle", close enough (refined by warmup >= 1 s).
    let streams = c.connect_publishers().await?;
    let settle = Duration::from_secs_f64(c.settle);
    let lat_after = latency_after.map(|w| now_ns() + (settle + w).as_nanos() as u64);
    let subscriber = sub::start(kind, expected, lat_after).await?;
    tokio::time::sleep(settle).await;
    let cpu0 = procfs::cpu_secs(c.pid);
    let core0 = procfs::core_ticks(c.broker_cpu);
    let gen0 = procfs::self_cpu_secs();
    let t0 = now_ns();
    let template = mqtt::publish_template(&c.topic, c.qos, c.size);
    let mut tasks = Vec::new();
    for s in streams {
        let t = Template {
            bytes: template.bytes.clone(),
            pid_off: template.pid_off,
            ts_off: template.ts_off,
        };
        tasks.push(tokio::spawn(publish(
            s,
            t,
            PubCfg {
                qos: c.qos,
                count: per_pub,
                window: c.window.max(1),
                rate: rate_per_pub,
            },
        )));
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs_f64(c.timeout);
    let mut pubs = Vec::new();
    for t in tasks {
        match tokio::time::timeout_at(deadline, t).await {
            Ok(Ok(p)) => pubs.push(p),
            Ok(Err(e)) => return Err(format!("publisher task: {e}")),
            Err(_) => return Err(format!("publishers did not finish within {} s", c.timeout)),
        }
    }
    let mut sub_out = None;
    if let Some(sb) = subscriber {
        // Until everything arrived, or nothing new arrived for idle_timeout.
        let mut last = sb.shared.received.load(Ordering::Relaxed);
        let mut last_change = tokio::time::Instant::now();
        loop {
            let got = sb.shared.received.load(Ordering::Relaxed);
            if got >= expected || sb.task.is_finished() {
                break;
            }
            if got != last {
                last = got;
                last_change = tokio::time::Instant::now();
            }
            if last_change.elapsed().as_secs_f64() > c.idle_timeout
                || tokio::time::Instant::now() > deadline
            {
                sb.shared.stop.notify_one();
                break;
            }
            tokio::select! {
                _ = sb.shared.done.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(20)) => {}
            }
        }
        sub_out = Some(sb.task.await.map_err(|e| format!("subscriber task: {e}"))?);
    }
    let cpu1 = procfs::cpu_secs(c.pid);
    let core1 = procfs::core_ticks(c.broker_cpu);
    let wall_end = now_ns();
    let cpu_s = procfs::delta(cpu0, cpu1);
    Ok(Run {
        t0,
        pubs,
        sub: sub_out,
        cpu_s,
        wall_end,
        noise: procfs::core_noise(core0, core1, cpu_s),
        gen_cpu_s: procfs::self_cpu_secs() - gen0,
    })
}

fn common_fields(c: &Common, args: &Args, run: &Run, sent: u64) -> Vec<(String, String)> {
    let mut f: Vec<(String, String)> = vec![
        ("label".into(), c.label.clone()),
        ("sub".into(), args.str("sub", "mqtt")),
        ("qos".into(), c.qos.to_string()),
        ("publishers".into(), c.publishers.to_string()),
        ("size".into(), c.size.to_string()),
        ("window".into(), c.window.to_string()),
    ];
    let received = run.sub.as_ref().map(|s| s.received);
    f.push(("sent".into(), sent.to_string()));
    f.push((
        "received".into(),
        received.map(|r| r.to_string()).unwrap_or("-".into()),
    ));
    f.push((
        "lost".into(),
        received
            .map(|r| sent.saturating_sub(r).to_string())
            .unwrap_or("-".into()),
    ));
    f.push(("broker_cpu_s".into(), f2(run.cpu_s)));
    f.push((
        "cpu_us_per_msg".into(),
        f2(run.cpu_s * 1e6 / sent.max(1) as f64),
    ));
    f.push((
        "rss_peak_kib".into(),
        procfs::kib(procfs::status_kib(c.pid, "VmHWM")),
    ));
    f.push((
        "rss_end_kib".into(),
        procfs::kib(procfs::status_kib(c.pid, "VmRSS")),
    ));
    f.push(("wall_s".into(), f2((run.wall_end - run.t0) as f64 / 1e9)));
    f.push((
        "gen_cpu_pct".into(),
        f1(run.gen_cpu_s * 100.0 / ((run.wall_end - run.t0) as f64 / 1e9)),
    ));
    f.push(("core_other_pct".into(), f1(run.noise.0)));
    f.push(("core_steal_pct".into(), f1(run.noise.1)));
    f.push(("loadavg".into(), loadavg()));
    f
}

/// The 1-minute load average (other jobs on the machine show up here).
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "-".into())
}

fn report(fields: Vec<(String, String)>, errors: &[String]) {
    let refs: Vec<(&str, String)> = fields
        .iter()
        .map(|(k, v)| (k.as_str(), v.clone()))
        .collect();
    for e in errors {
        eprintln!("warning: {e}");
    }
    let mut refs = refs;
    refs.push(("errors", errors.len().to_string()));
    result(&refs);
}

fn errors(run: &Run) -> Vec<String> {
    let mut e: Vec<String> = run
        .pubs
        .iter()
        .enumerate()
        .filter_map(|(i, p)| {
            p.error
                .as_ref()
                .map(|e| format!("publisher {}: {e}", i + 1))
        })
        .collect();
    if let Some(s) = &run.sub {
        if let Some(err) = &s.error {
            e.push(format!("subscriber: {err}"));
        }
    }
    e
}

pub async fn fanin(args: &Args) -> Result<(), String> {
    let c = Common::from_args(args)?;
    let per_pub: u64 = args.num("messages", 100_000u64);
    let run = drive(&c, args, per_pub, None, None).await?;
    let sent: u64 = run.pubs.iter().map(|p| p.sent).sum();
    let in_end = run.pubs.iter().map(|p| p.end_ns).max().unwrap_or(run.t0);
    let in_rate = sent as f64 / ((in_end - run.t0) as f64 / 1e9);
    let mut f = vec![("scenario".to_string(), "fanin".to_string())];
    f.extend(common_fields(&c, args, &run, sent));
    f.push(("in_rate".into(), f1(in_rate)));
    match &run.sub {
        Some(s) if s.received > 0 => {
            let out_rate = s.received as f64 / ((s.last_ns - run.t0) as f64 / 1e9);
            f.push(("out_rate".into(), f1(out_rate)));
            f.push(("other_msgs".into(), s.other.to_string()));
        }
        _ => f.push(("out_rate".into(), "-".into())),
    }
    if c.qos > 0 {
        let mut acks: Vec<u64> = run
            .pubs
            .iter()
            .flat_map(|p| p.ack_latencies.iter().copied())
            .collect();
        f.extend(stats::latency_fields("ack", &mut acks));
    }
    let errs = errors(&run);
    let acked: u64 = run.pubs.iter().map(|p| p.acked).sum();
    if c.qos > 0 && acked < sent {
        eprintln!(
            "warning: {} of {sent} QoS 1 messages not acknowledged",
            sent - acked
        );
    }
    report(f, &errs);
    drop(run);
    Ok(())
}

pub async fn latency(args: &Args) -> Result<(), String> {
    let c = Common::from_args(args)?;
    let rate: f64 = args.num("rate", 50_000.0f64);
    let duration: f64 = args.num("duration", 10.0f64);
    let warmup: f64 = args.num("warmup", 2.0f64);
    let per_pub = ((rate * (duration + warmup)) / c.publishers as f64).round() as u64;
    let rate_per_pub = rate / c.publishers as f64;
    let mut run = drive(
        &c,
        args,
        per_pub,
        Some(rate_per_pub),
        Some(Duration::from_secs_f64(warmup)),
    )
    .await?;
    let sent: u64 = run.pubs.iter().map(|p| p.sent).sum();
    let in_end = run.pubs.iter().map(|p| p.end_ns).max().unwrap_or(run.t0);
    let mut f = vec![("scenario".to_string(), "latency".to_string())];
    f.extend(common_fields(&c, args, &run, sent));
    f.push(("rate".into(), f1(rate)));
    f.push((
        "achieved_rate".into(),
        f1(sent as f64 / ((in_end - run.t0) as f64 / 1e9)),
    ));
    if let Some(s) = run.sub.as_mut() {
        f.push(("samples".into(), s.latencies.len().to_string()));
        f.extend(stats::latency_fields("e2e", &mut s.latencies));
    }
    if c.qos > 0 {
        let mut acks: Vec<u64> = run
            .pubs
            .iter()
            .flat_map(|p| {
                // Skip the warm-up share of each publisher's acknowledgements.
                let skip = (p.ack_latencies.len() as f64 * warmup / (duration + warmup)) as usize;
                p.ack_latencies.iter().skip(skip).copied()
            })
            .collect();
        f.extend(stats::latency_fields("ack", &mut acks));
    }
    let errs = errors(&run);
    report(f, &errs);
    Ok(())
}
