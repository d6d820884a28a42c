//! The soak test's devices: MQTT devices publishing at QoS 1 (which also take commands and
//! answer them) or QoS 0, and HTTP devices on a keep-alive connection. All reconnect after
//! losing the server (its restart) and publish at a fixed rate, each message with a unique id.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};

use crate::consumers::stopped;
use crate::http::Conn;
use crate::ledger::{self, Ledger, KIND_HTTP, KIND_QOS1};
use crate::{base64, mqtt};

/// QoS 1 messages a device keeps unacknowledged at most.
const WINDOW: usize = 16;

pub struct DeviceCfg {
    pub kind: u64,
    /// The device is `d<dev>@<app>`, password `pw`.
    pub dev: u64,
    /// Messages per second.
    pub rate: f64,
    pub size: usize,
    pub app: String,
    pub addr: SocketAddr,
}

fn ticker(rate: f64) -> tokio::time::Interval {
    let mut t = tokio::time::interval(Duration::from_secs_f64(1.0 / rate.max(0.001)));
    t.set_missed_tick_behavior(MissedTickBehavior::Delay);
    t
}

pub async fn run(cfg: DeviceCfg, ledger: Ledger, mut stop: watch::Receiver<bool>) {
    if cfg.kind == KIND_HTTP {
        return http_device(cfg, ledger, stop).await;
    }
    let user = format!("d{}@{}", cfg.dev, cfg.app);
    let pkt = mqtt::connect_packet(
        &format!("soak-d{}", cfg.dev),
        Some(&user),
        Some("pw"),
        30,
        true,
    );
    let lost = if cfg.kind == KIND_QOS1 {
        "device-qos1-lost"
    } else {
        "device-qos0-lost"
    };
    let (mut seq, mut inflight) = (0u64, HashMap::new());
    loop {
        if *stop.borrow() {
            return;
        }
        match mqtt::connect(cfg.addr, None, &pkt, Duration::from_secs(10)).await {
            Ok(s) => {
                ledger.lock().device_connects += 1;
                let r = mqtt_session(&cfg, s, &mut seq, &mut inflight, &ledger, &mut stop).await;
                let mut book = ledger.lock();
                book.qos1_unconfirmed += inflight.len() as u64;
                inflight.clear();
                match r {
                    Ok(()) => return,
                    Err(e) => book.error(lost, e),
                }
            }
            Err(e) => ledger.lock().error("device-connect", e),
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = stopped(&mut stop) => return,
        }
    }
}

/// Answers a command (`command/inbox//<command>/<request id>`, MQTT 3.1.1) with `pong`.
fn command_reply(topic: &[u8]) -> Option<Vec<u8>> {
    let topic = std::str::from_utf8(topic).ok()?;
    let id = topic.strip_prefix("command/inbox//")?.split('/').nth(1)?;
    Some(mqtt::publish_packet(
        &format!("command/reply/{id}/200"),
        0,
        0,
        b"pong",
    ))
}

/// One connection: publishes at the device's rate (QoS 1: at most WINDOW unacknowledged, ids
/// in `inflight` by packet id until their PUBACK), answers commands; on `stop`, waits up to
/// 10 s for the outstanding PUBACKs and disconnects.
async fn mqtt_session(
    cfg: &DeviceCfg,
    mut s: TcpStream,
    seq: &mut u64,
    inflight: &mut HashMap<u16, u64>,
    ledger: &Ledger,
    stop: &mut watch::Receiver<bool>,
) -> Result<(), String> {
    let qos = u8::from(cfg.kind == KIND_QOS1);
    if qos == 1 {
        s.write_all(&mqtt::subscribe_packet(1, "command/inbox//#", 0))
            .await
            .map_err(|e| format!("write SUBSCRIBE: {e}"))?;
    }
    let mut tick = ticker(cfg.rate);
    let mut ping = tokio::time::interval(Duration::from_secs(15));
    ping.tick().await;
    let (mut buf, mut out) = (BytesMut::with_capacity(8192), Vec::new());
    let mut next_pid: u16 = 2; // 1 is the SUBSCRIBE's
    let mut draining: Option<Instant> = None;
    loop {
        while let Some((h, bs, end)) = mqtt::parse_frame(&buf)? {
            match h & 0xF0 {
                0x40 if end - bs >= 2 => {
                    let pid = u16::from_be_bytes([buf[bs], buf[bs + 1]]);
                    let id = inflight
                        .remove(&pid)
                        .ok_or_else(|| format!("PUBACK for unknown packet id {pid}"))?;
                    ledger.lock().ack(id);
                }
                0x30 => {
                    let mqtt::Publish { topic, pid, .. } =
                        mqtt::parse_publish(h, &buf[bs..end]).ok_or("malformed PUBLISH")?;
                    if let Some(pid) = pid {
                        out.extend_from_slice(&[0x40, 0x02]);
                        out.extend_from_slice(&pid.to_be_bytes());
                    }
                    match command_reply(topic) {
                        Some(reply) => {
                            out.extend_from_slice(&reply);
                            ledger.lock().commands_replied_by_devices += 1;
                        }
                        None => ledger
                            .lock()
                            .error("device-unexpected-publish", String::from_utf8_lossy(topic)),
                    }
                }
                0xE0 => return Err("server sent DISCONNECT".into()),
                _ => {}
            }
            buf.advance(end);
        }
        if !out.is_empty() {
            s.write_all(&out).await.map_err(|e| format!("write: {e}"))?;
            out.clear();
        }
        if draining.is_some() && inflight.is_empty() {
            break;
        }
        if buf.capacity() - buf.len() < 4096 {
            buf.reserve(8192);
        }
        let drain_end = draining.unwrap_or_else(Instant::now);
        tokio::select! {
            _ = tick.tick(), if draining.is_none() && inflight.len() < WINDOW => {
                *seq += 1;
                let id = ledger::sid(cfg.kind, cfg.dev, *seq);
                let pkt = mqtt::publish_packet("telemetry", qos, next_pid, &ledger::payload(id, cfg.size));
                if qos == 1 {
                    inflight.insert(next_pid, id);
                    next_pid = if next_pid == u16::MAX { 2 } else { next_pid + 1 };
                }
                s.write_all(&pkt).await.map_err(|e| format!("write PUBLISH: {e}"))?;
                if qos == 0 {
                    ledger.lock().qos0_sent += 1;
                }
            }
            r = s.read_buf(&mut buf) => match r {
                Ok(0) => return Err("connection closed by the server".into()),
                Ok(_) => {}
                Err(e) => return Err(format!("read: {e}")),
            },
            _ = ping.tick() => s.write_all(&mqtt::PINGREQ).await.map_err(|e| format!("write PINGREQ: {e}"))?,
            _ = stopped(stop), if draining.is_none() => draining = Some(Instant::now() + Duration::from_secs(10)),
            _ = tokio::time::sleep_until(drain_end), if draining.is_some() => break,
        }
    }
    let _ = s.write_all(&[0xE0, 0x00]).await;
    Ok(())
}

/// An HTTP device: POSTs telemetry at its rate on one keep-alive connection (a new one after
/// any failure); a 202 acknowledges the message.
async fn http_device(cfg: DeviceCfg, ledger: Ledger, mut stop: watch::Receiver<bool>) {
    let basic = base64(format!("d{}@{}:pw", cfg.dev, cfg.app).as_bytes());
    let mut conn = Conn::new(cfg.addr);
    let mut tick = ticker(cfg.rate);
    for seq in 1u64.. {
        tokio::select! { _ = tick.tick() => {}, _ = stopped(&mut stop) => return }
        let id = ledger::sid(KIND_HTTP, cfg.dev, seq);
        let body = ledger::payload(id, cfg.size);
        let r = tokio::time::timeout(
            Duration::from_secs(10),
            conn.request("POST", "/v1/telemetry", &basic, &body),
        )
        .await;
        let mut book = ledger.lock();
        match &r {
            Ok(Ok((202, _))) => book.ack(id),
            Ok(Ok((st, b))) => {
                book.http_failed += 1;
                book.error(
                    &format!("http-{st}"),
                    String::from_utf8_lossy(b).to_string(),
                );
            }
            Ok(Err(e)) => {
                book.http_failed += 1;
                book.error("http-io", e.clone());
            }
            Err(_) => {
                book.http_failed += 1;
                book.error("http-io", "no answer within 10 s");
            }
        }
        if !matches!(r, Ok(Ok(_))) {
            conn = Conn::new(cfg.addr);
        }
    }
}
