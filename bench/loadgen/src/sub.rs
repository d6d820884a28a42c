//! The one subscriber of fan-in and latency runs: MQTT (a broker's `#`, Drover's MQTT
//! integration `app/<app>`), Drover's WebSocket integration, or none.
//!
//! Counts the messages that carry the load generator's payload marker (so Drover's connection
//! events are not counted), acknowledges QoS 1, and — for latency runs — reads each message's
//! send time.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use memchr::memmem::Finder;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::mqtt::{self, MARKER};
use crate::{now_ns, Args};

pub enum Kind {
    None,
    Mqtt {
        addr: SocketAddr,
        topic: String,
        user: Option<String>,
        pass: Option<String>,
        qos: u8,
        client_id: String,
    },
    Ws {
        addr: SocketAddr,
        path: String,
        auth: String,
    },
}

impl Kind {
    pub fn from_args(args: &Args, default_qos: u8) -> Result<Kind, String> {
        let addr = args.str("addr", "127.0.0.1:1883");
        let nonempty = |s: String| (!s.is_empty()).then_some(s);
        Ok(match args.str("sub", "mqtt").as_str() {
            "none" => Kind::None,
            "mqtt" => Kind::Mqtt {
                addr: mqtt::resolve(&args.str("sub-addr", &addr))?,
                topic: args.str("sub-topic", "#"),
                user: nonempty(args.str("sub-user", "")),
                pass: nonempty(args.str("sub-pass", "")),
                qos: args.num("sub-qos", default_qos),
                client_id: args.str("sub-client-id", &format!("lg-sub-{}", std::process::id())),
            },
            "ws" => Kind::Ws {
                addr: mqtt::resolve(&args.opt("ws-addr").ok_or("--sub ws needs --ws-addr")?)?,
                path: args.str("ws-path", "/api/integrations/v1alpha1/ws/bench"),
                auth: args
                    .opt("ws-auth")
                    .ok_or("--sub ws needs --ws-auth user:token")?,
            },
            other => return Err(format!("--sub: unknown subscriber kind '{other}'")),
        })
    }
}

/// Shared with the driver while the subscriber runs.
#[derive(Default)]
pub struct Shared {
    pub received: AtomicU64,
    pub stop: Notify,
    pub done: Notify,
}

#[derive(Default)]
pub struct Outcome {
    pub received: u64,
    /// Messages without the marker (e.g. Drover's connection events).
    pub other: u64,
    pub first_ns: u64,
    pub last_ns: u64,
    /// End-to-end latencies (ns) of messages sent after the warm-up, when asked for.
    pub latencies: Vec<u64>,
    pub error: Option<String>,
}

pub struct Subscriber {
    pub shared: Arc<Shared>,
    pub task: JoinHandle<Outcome>,
}

struct Counter {
    shared: Arc<Shared>,
    finder: Finder<'static>,
    expected: u64,
    latency_after_ns: Option<u64>,
    out: Outcome,
}

impl Counter {
    /// One delivered message; true when all expected have arrived.
    fn message(&mut self, payload: &[u8], now: u64) -> bool {
        let Some(pos) = self.finder.find(payload) else {
            self.out.other += 1;
            return false;
        };
        if self.out.received == 0 {
            self.out.first_ns = now;
        }
        self.out.received += 1;
        self.out.last_ns = now;
        if let Some(after) = self.latency_after_ns {
            if let Some(sent) = mqtt::parse_digits(&payload[pos + MARKER.len()..]) {
                if sent >= after {
                    self.out.latencies.push(now.saturating_sub(sent));
                }
            }
        }
        self.out.received >= self.expected
    }

    fn publish_count(&self) {
        self.shared
            .received
            .store(self.out.received, Ordering::Relaxed);
    }
}

/// Connects and subscribes (returns once the subscription is in place), then counts in a task.
/// `latency_after_ns`: record latencies of messages sent at or after this time.
pub async fn start(
    kind: Kind,
    expected: u64,
    latency_after_ns: Option<u64>,
) -> Result<Option<Subscriber>, String> {
    let shared = Arc::new(Shared::default());
    let counter = Counter {
        shared: shared.clone(),
        finder: Finder::new(MARKER),
        expected,
        latency_after_ns,
        out: Outcome::default(),
    };
    let task = match kind {
        Kind::None => return Ok(None),
        Kind::Mqtt {
            addr,
            topic,
            user,
            pass,
            qos,
            client_id,
        } => {
            let pkt = mqtt::connect_packet(&client_id, user.as_deref(), pass.as_deref(), 60, true);
            let mut s = mqtt::connect(addr, None, &pkt, Duration::from_secs(30))
                .await
                .map_err(|e| format!("subscriber: {e}"))?;
            s.write_all(&mqtt::subscribe_packet(1, &topic, qos))
                .await
                .map_err(|e| format!("subscriber: write SUBSCRIBE: {e}"))?;
            let mut buf = BytesMut::with_capacity(1 << 18);
            // Wait for the SUBACK (nothing else can come before it on a clean session).
            loop {
                if let Some((h, bs, end)) = mqtt::parse_frame(&buf)? {
                    if h != 0x90 {
                        return Err(format!("subscriber: expected SUBACK, got {h:#04x}"));
                    }
                    let rc = *buf[bs..end].last().unwrap_or(&0x80);
                    if rc == 0x80 {
                        return Err(format!("subscriber: subscription to '{topic}' refused"));
                    }
                    buf.advance(end);
                    break;
                }
                let n = tokio::time::timeout(Duration::from_secs(30), s.read_buf(&mut buf))
                    .await
                    .map_err(|_| "subscriber: no SUBACK within 30 s".to_string())?
                    .map_err(|e| format!("subscriber: {e}"))?;
                if n == 0 {
                    return Err("subscriber: connection closed before SUBACK".into());
                }
            }
            tokio::spawn(run_mqtt(s, buf, counter))
        }
        Kind::Ws { addr, path, auth } => {
            let (s, buf) = ws_handshake(addr, &path, &auth).await?;
            tokio::spawn(run_ws(s, buf, counter))
        }
    };
    Ok(Some(Subscriber { shared, task }))
}

async fn run_mqtt(mut s: TcpStream, mut buf: BytesMut, mut c: Counter) -> Outcome {
    let mut out: Vec<u8> = Vec::with_capacity(1 << 16);
    let mut ping = tokio::time::interval(Duration::from_secs(20));
    ping.tick().await;
    let shared = c.shared.clone();
    'outer: loop {
        // Parse what is buffered.
        let now = now_ns();
        let mut done = false;
        loop {
            match mqtt::parse_frame(&buf) {
                Ok(Some((h, bs, end))) => {
                    if h & 0xF0 == 0x30 {
                        let qos = (h >> 1) & 3;
                        let body = &buf[bs..end];
                        if body.len() < 2 {
                            c.out.error = Some("short PUBLISH".into());
                            break 'outer;
                        }
                        let tl = usize::from(u16::from_be_bytes([body[0], body[1]]));
                        let mut p = 2 + tl;
                        if qos > 0 {
                            out.extend_from_slice(&[0x40, 0x02, body[p], body[p + 1]]);
                            p += 2;
                        }
                        done |= c.message(&body[p.min(body.len())..], now);
                    }
                    buf.advance(end);
                }
                Ok(None) => break,
                Err(e) => {
                    c.out.error = Some(e);
                    break 'outer;
                }
            }
        }
        c.publish_count();
        if !out.is_empty() {
            if let Err(e) = s.write_all(&out).await {
                c.out.error = Some(format!("write PUBACK: {e}"));
                break;
            }
            out.clear();
        }
        if done {
            break;
        }
        if buf.capacity() - buf.len() < (1 << 16) {
            buf.reserve(1 << 18);
        }
        tokio::select! {
            r = s.read_buf(&mut buf) => match r {
                Ok(0) => { c.out.error = Some("subscriber connection closed by the server".into()); break; }
                Ok(_) => {}
                Err(e) => { c.out.error = Some(format!("subscriber read: {e}")); break; }
            },
            _ = ping.tick() => {
                if let Err(e) = s.write_all(&mqtt::PINGREQ).await {
                    c.out.error = Some(format!("write PINGREQ: {e}"));
                    break;
                }
            }
            _ = shared.stop.notified() => break,
        }
    }
    c.publish_count();
    shared.done.notify_one();
    c.out
}

pub async fn ws_handshake(
    addr: SocketAddr,
    path: &str,
    auth: &str,
) -> Result<(TcpStream, BytesMut), String> {
    let mut s = mqtt::tcp_connect(addr, None)
        .await
        .map_err(|e| format!("websocket: connect {addr}: {e}"))?;
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Authorization: Basic {}\r\n\r\n",
        crate::base64(auth.as_bytes())
    );
    s.write_all(req.as_bytes())
        .await
        .map_err(|e| format!("websocket: {e}"))?;
    let mut buf = BytesMut::with_capacity(1 << 18);
    loop {
        if let Some(end) = memchr::memmem::find(&buf, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_string();
            if !head.starts_with("HTTP/1.1 101") {
                return Err(format!(
                    "websocket: upgrade refused: {}",
                    head.lines().next().unwrap_or("")
                ));
            }
            buf.advance(end + 4);
            return Ok((s, buf));
        }
        let n = tokio::time::timeout(Duration::from_secs(30), s.read_buf(&mut buf))
            .await
            .map_err(|_| "websocket: no upgrade response within 30 s".to_string())?
            .map_err(|e| format!("websocket: {e}"))?;
        if n == 0 {
            return Err("websocket: connection closed during the upgrade".into());
        }
    }
}

async fn run_ws(mut s: TcpStream, mut buf: BytesMut, mut c: Counter) -> Outcome {
    let shared = c.shared.clone();
    let mut out: Vec<u8> = Vec::new();
    'outer: loop {
        let now = now_ns();
        let mut done = false;
        while let Some((b0, hl, end)) = ws_frame(&buf) {
            let len = end - hl;
            match b0 & 0x0f {
                0..=2 => done |= c.message(&buf[hl..end], now),
                8 => {
                    c.out.error = Some("websocket closed by the server".into());
                    break 'outer;
                }
                9 => {
                    // Pong with the same payload, masked with a zero key.
                    out.push(0x8A);
                    out.push(0x80 | (len as u8 & 0x7f));
                    out.extend_from_slice(&[0, 0, 0, 0]);
                    out.extend_from_slice(&buf[hl..end]);
                }
                _ => {}
            }
            buf.advance(end);
        }
        c.publish_count();
        if !out.is_empty() {
            if let Err(e) = s.write_all(&out).await {
                c.out.error = Some(format!("websocket write: {e}"));
                break;
            }
            out.clear();
        }
        if done {
            break;
        }
        if buf.capacity() - buf.len() < (1 << 16) {
            buf.reserve(1 << 18);
        }
        tokio::select! {
            r = s.read_buf(&mut buf) => match r {
                Ok(0) => { c.out.error = Some("websocket connection closed".into()); break; }
                Ok(_) => {}
                Err(e) => { c.out.error = Some(format!("websocket read: {e}")); break; }
            },
            _ = shared.stop.notified() => break,
        }
    }
    c.publish_count();
    shared.done.notify_one();
    c.out
}

/// One complete WebSocket frame at the start of `buf`: (first header byte, payload start, frame
/// end), or None when more bytes are needed.
pub fn ws_frame(buf: &[u8]) -> Option<(u8, usize, usize)> {
    if buf.len() < 2 {
        return None;
    }
    let (b0, b1) = (buf[0], buf[1]);
    let mut hl = 2usize;
    let mut len = u64::from(b1 & 0x7f);
    if len == 126 {
        if buf.len() < 4 {
            return None;
        }
        len = u64::from(u16::from_be_bytes([buf[2], buf[3]]));
        hl = 4;
    } else if len == 127 {
        if buf.len() < 10 {
            return None;
        }
        let mut b = [0u8; 8];
        b.copy_from_slice(&buf[2..10]);
        len = u64::from_be_bytes(b);
        hl = 10;
    }
    if b1 & 0x80 != 0 {
        hl += 4; // servers do not mask, but be tolerant
    }
    let end = hl + len as usize;
    (buf.len() >= end).then_some((b0, hl, end))
}
