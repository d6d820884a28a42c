//! The soak test's readers of the application stream: MQTT-integration sessions (the durable
//! consumer, shared-group workers that join and leave), WebSocket consumers that join and leave,
//! and the final read of the whole stream over WebSocket (`from=earliest`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{watch, Notify};
use tokio::time::Instant;

use crate::ledger::{IdFinder, Ledger, Seen};
use crate::mqtt;
use crate::sub;

const DISCONNECT: [u8; 2] = [0xE0, 0x00];

#[derive(Clone, Copy, PartialEq)]
pub enum Role {
    /// Records every id (the durable consumer).
    Durable,
    /// Counts events (a shared-group member).
    Worker,
}

pub struct Session {
    pub addr: SocketAddr,
    pub user: String,
    pub pass: String,
    pub client_id: String,
    pub clean: bool,
    pub topic: String,
    pub role: Role,
}

/// Waits until the watch says stop (or its sender is gone).
pub async fn stopped(stop: &mut watch::Receiver<bool>) {
    while !*stop.borrow() {
        if stop.changed().await.is_err() {
            return;
        }
    }
}

/// One MQTT-integration session at QoS 1: subscribes (then `subscribed` is notified), PUBACKs
/// every delivery and records it, until `stop`, `until` or an error.
pub async fn session(
    cfg: &Session,
    ledger: &Ledger,
    stop: &mut watch::Receiver<bool>,
    until: Option<Instant>,
    subscribed: Option<&Notify>,
) -> Result<(), String> {
    let pkt = mqtt::connect_packet(
        &cfg.client_id,
        Some(&cfg.user),
        Some(&cfg.pass),
        30,
        cfg.clean,
    );
    let mut s = mqtt::connect(cfg.addr, None, &pkt, Duration::from_secs(10)).await?;
    s.write_all(&mqtt::subscribe_packet(1, &cfg.topic, 1))
        .await
        .map_err(|e| format!("write SUBSCRIBE: {e}"))?;
    let finder = IdFinder::new();
    let mut buf = BytesMut::with_capacity(1 << 16);
    let mut out = Vec::with_capacity(4096);
    let mut ping = tokio::time::interval(Duration::from_secs(15));
    ping.tick().await;
    let end = until.unwrap_or_else(|| Instant::now() + Duration::from_secs(86400 * 365));
    loop {
        {
            let mut book = ledger.lock();
            while let Some((h, bs, end)) = mqtt::parse_frame(&buf)? {
                match h & 0xF0 {
                    0x30 => {
                        let mqtt::Publish { pid, payload, .. } =
                            mqtt::parse_publish(h, &buf[bs..end]).ok_or("malformed PUBLISH")?;
                        if let Some(pid) = pid {
                            out.extend_from_slice(&[0x40, 0x02]);
                            out.extend_from_slice(&pid.to_be_bytes());
                        }
                        match cfg.role {
                            Role::Durable => book.durable.record(finder.find(payload)),
                            Role::Worker => book.worker_events += 1,
                        }
                    }
                    0x90 => {
                        if buf[end - 1] == 0x80 {
                            return Err(format!("subscription to {} refused", cfg.topic));
                        }
                        if let Some(n) = subscribed {
                            n.notify_one();
                        }
                    }
                    0xE0 => return Err("server sent DISCONNECT".into()),
                    _ => {}
                }
                buf.advance(end);
            }
        }
        if !out.is_empty() {
            s.write_all(&out)
                .await
                .map_err(|e| format!("write PUBACK: {e}"))?;
            out.clear();
        }
        if buf.capacity() - buf.len() < 8192 {
            buf.reserve(1 << 16);
        }
        tokio::select! {
            r = s.read_buf(&mut buf) => match r {
                Ok(0) => return Err("connection closed by the server".into()),
                Ok(_) => {}
                Err(e) => return Err(format!("read: {e}")),
            },
            _ = ping.tick() => s.write_all(&mqtt::PINGREQ).await.map_err(|e| format!("write PINGREQ: {e}"))?,
            _ = stopped(stop) => break,
            _ = tokio::time::sleep_until(end) => break,
        }
    }
    let _ = s.write_all(&DISCONNECT).await;
    Ok(())
}

/// The durable consumer: a persistent session (clean session off, fixed client id) on
/// `app/<app>` that reconnects after every loss (the server's restart) until `stop`.
pub async fn durable(
    cfg: Session,
    ledger: Ledger,
    mut stop: watch::Receiver<bool>,
    subscribed: Arc<Notify>,
) {
    loop {
        ledger.lock().durable_connects += 1;
        match session(&cfg, &ledger, &mut stop, None, Some(&subscribed)).await {
            Ok(()) => return,
            Err(e) => ledger.lock().error("durable-consumer", e),
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = stopped(&mut stop) => return,
        }
    }
}

/// A shared-group member that stays `life` and then leaves (DISCONNECT).
pub async fn worker(cfg: Session, ledger: Ledger, mut stop: watch::Receiver<bool>, life: Duration) {
    ledger.lock().workers_started += 1;
    let until = Instant::now() + life;
    if let Err(e) = session(&cfg, &ledger, &mut stop, Some(until), None).await {
        ledger.lock().error("worker", e);
    }
}

/// Reads WebSocket frames until `idle` passes without a data frame (or `until`, or `stop`);
/// answers pings. Each data frame goes to `on_event`.
async fn ws_read(
    mut s: TcpStream,
    mut buf: BytesMut,
    idle: Duration,
    until: Instant,
    stop: &mut watch::Receiver<bool>,
    mut on_event: impl FnMut(&[u8]),
) -> Result<(), String> {
    let mut out = Vec::new();
    loop {
        while let Some((b0, hl, end)) = sub::ws_frame(&buf) {
            match b0 & 0x0f {
                0..=2 => on_event(&buf[hl..end]),
                8 => return Err("websocket closed by the server".into()),
                9 => {
                    out.push(0x8A);
                    out.push(0x80 | ((end - hl) as u8 & 0x7f));
                    out.extend_from_slice(&[0, 0, 0, 0]);
                    out.extend_from_slice(&buf[hl..end]);
                }
                _ => {}
            }
            buf.advance(end);
        }
        if !out.is_empty() {
            s.write_all(&out)
                .await
                .map_err(|e| format!("websocket write: {e}"))?;
            out.clear();
        }
        if buf.capacity() - buf.len() < 8192 {
            buf.reserve(1 << 18);
        }
        tokio::select! {
            r = tokio::time::timeout(idle, s.read_buf(&mut buf)) => match r {
                Err(_) => break,
                Ok(Ok(0)) => return Err("websocket connection closed".into()),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(format!("websocket read: {e}")),
            },
            _ = tokio::time::sleep_until(until) => break,
            _ = stopped(stop) => break,
        }
    }
    // Close frame (masked, empty), then drop the connection.
    let _ = s.write_all(&[0x88, 0x80, 0, 0, 0, 0]).await;
    Ok(())
}

/// A WebSocket consumer (`query`: e.g. `group_id=dash`) that reads for `life`, then leaves.
pub async fn ws_consumer(
    api: SocketAddr,
    path: String,
    auth: String,
    ledger: Ledger,
    mut stop: watch::Receiver<bool>,
    life: Duration,
) {
    ledger.lock().ws_consumers_started += 1;
    let until = Instant::now() + life;
    let r = match sub::ws_handshake(api, &path, &auth).await {
        Ok((s, buf)) => {
            let l = ledger.clone();
            ws_read(s, buf, life, until, &mut stop, |_| l.lock().ws_events += 1).await
        }
        Err(e) => Err(e),
    };
    if let Err(e) = r {
        ledger.lock().error("ws-consumer", e);
    }
}

/// The final check: reads the whole stream from the start (`from=earliest`, no group) until
/// `idle` passes without an event; every id seen.
pub async fn read_all(
    api: SocketAddr,
    path: &str,
    auth: &str,
    idle: Duration,
) -> Result<Seen, String> {
    let (s, buf) = sub::ws_handshake(api, path, auth).await?;
    let finder = IdFinder::new();
    let mut seen = Seen::default();
    let (_tx, mut never) = watch::channel(false);
    let until = Instant::now() + Duration::from_secs(3600);
    ws_read(s, buf, idle, until, &mut never, |ev| {
        seen.record(finder.find(ev))
    })
    .await?;
    Ok(seen)
}
