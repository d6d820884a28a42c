//! Just enough MQTT 3.1.1 to generate load: CONNECT/CONNACK, PUBLISH/PUBACK (QoS 0/1),
//! SUBSCRIBE/SUBACK, PINGREQ, DISCONNECT.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

pub const PINGREQ: [u8; 2] = [0xC0, 0x00];

pub fn put_varint(buf: &mut Vec<u8>, mut n: usize) {
    loop {
        let mut b = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            b |= 0x80;
        }
        buf.push(b);
        if n == 0 {
            break;
        }
    }
}

pub fn put_str(buf: &mut Vec<u8>, s: &[u8]) {
    buf.extend_from_slice(&(s.len() as u16).to_be_bytes());
    buf.extend_from_slice(s);
}

pub fn connect_packet(
    client_id: &str,
    user: Option<&str>,
    pass: Option<&str>,
    keepalive: u16,
    clean: bool,
) -> Vec<u8> {
    let mut body = Vec::with_capacity(64);
    put_str(&mut body, b"MQTT");
    body.push(4); // 3.1.1
    let mut flags = 0u8;
    if clean {
        flags |= 0x02;
    }
    if user.is_some() {
        flags |= 0x80;
    }
    if pass.is_some() {
        flags |= 0x40;
    }
    body.push(flags);
    body.extend_from_slice(&keepalive.to_be_bytes());
    put_str(&mut body, client_id.as_bytes());
    if let Some(u) = user {
        put_str(&mut body, u.as_bytes());
    }
    if let Some(p) = pass {
        put_str(&mut body, p.as_bytes());
    }
    let mut pkt = vec![0x10];
    put_varint(&mut pkt, body.len());
    pkt.extend_from_slice(&body);
    pkt
}

pub fn subscribe_packet(pid: u16, filter: &str, qos: u8) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&pid.to_be_bytes());
    put_str(&mut body, filter.as_bytes());
    body.push(qos);
    let mut pkt = vec![0x82];
    put_varint(&mut pkt, body.len());
    pkt.extend_from_slice(&body);
    pkt
}

/// Marker that starts every payload: `{"bt":"<20 digits: send time, ns>","p":"xxx..."}` (valid
/// JSON, so Drover embeds it as `data`).
pub const MARKER: &[u8] = b"\"bt\":\"";

pub fn payload(size: usize) -> Vec<u8> {
    let mut p = b"{\"bt\":\"00000000000000000000\",\"p\":\"".to_vec();
    let pad = size.saturating_sub(p.len() + 2);
    p.extend(std::iter::repeat_n(b'x', pad));
    p.extend_from_slice(b"\"}");
    p
}

/// Offset of the 20 timestamp digits in a payload.
pub const TS_OFFSET: usize = 7;

pub fn put_digits(dst: &mut [u8], mut v: u64) {
    for d in dst[..20].iter_mut().rev() {
        *d = b'0' + (v % 10) as u8;
        v /= 10;
    }
}

pub fn parse_digits(src: &[u8]) -> Option<u64> {
    if src.len() < 20 {
        return None;
    }
    let mut v = 0u64;
    for &d in &src[..20] {
        if !d.is_ascii_digit() {
            return None;
        }
        v = v.wrapping_mul(10).wrapping_add(u64::from(d - b'0'));
    }
    Some(v)
}

/// A pre-encoded PUBLISH with the offsets to patch per message.
pub struct Template {
    pub bytes: Vec<u8>,
    /// Offset of the packet identifier (QoS 1), if any.
    pub pid_off: Option<usize>,
    /// Offset of the timestamp digits.
    pub ts_off: usize,
}

pub fn publish_template(topic: &str, qos: u8, size: usize) -> Template {
    let payload = payload(size);
    let mut body = Vec::new();
    put_str(&mut body, topic.as_bytes());
    let mut pid_in_body = None;
    if qos > 0 {
        pid_in_body = Some(body.len());
        body.extend_from_slice(&[0, 1]);
    }
    let ts_in_body = body.len() + TS_OFFSET;
    body.extend_from_slice(&payload);
    let mut pkt = vec![0x30 | (qos << 1)];
    put_varint(&mut pkt, body.len());
    let hdr = pkt.len();
    pkt.extend_from_slice(&body);
    Template {
        bytes: pkt,
        pid_off: pid_in_body.map(|o| o + hdr),
        ts_off: ts_in_body + hdr,
    }
}

/// A PUBLISH of `payload` on `topic` (packet id `pid` at QoS 1).
pub fn publish_packet(topic: &str, qos: u8, pid: u16, payload: &[u8]) -> Vec<u8> {
    let mut body = Vec::with_capacity(topic.len() + payload.len() + 4);
    put_str(&mut body, topic.as_bytes());
    if qos > 0 {
        body.extend_from_slice(&pid.to_be_bytes());
    }
    body.extend_from_slice(payload);
    let mut pkt = vec![0x30 | (qos << 1)];
    put_varint(&mut pkt, body.len());
    pkt.extend_from_slice(&body);
    pkt
}

/// A received PUBLISH (3.1.1).
pub struct Publish<'a> {
    pub topic: &'a [u8],
    /// The packet id (QoS > 0).
    pub pid: Option<u16>,
    pub payload: &'a [u8],
}

/// Parses a PUBLISH from its first header byte and its frame's body.
pub fn parse_publish(h: u8, body: &[u8]) -> Option<Publish<'_>> {
    let qos = (h >> 1) & 3;
    let tl = usize::from(u16::from_be_bytes([*body.first()?, *body.get(1)?]));
    let topic = body.get(2..2 + tl)?;
    let mut p = 2 + tl;
    let mut pid = None;
    if qos > 0 {
        pid = Some(u16::from_be_bytes([*body.get(p)?, *body.get(p + 1)?]));
        p += 2;
    }
    Some(Publish {
        topic,
        pid,
        payload: body.get(p..)?,
    })
}

/// One complete frame at the start of `buf`: (first header byte, body start, frame end).
pub fn parse_frame(buf: &[u8]) -> Result<Option<(u8, usize, usize)>, String> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let mut len = 0usize;
    let mut mult = 1usize;
    let mut i = 1;
    loop {
        if i >= buf.len() {
            return Ok(None);
        }
        if i > 4 {
            return Err("malformed remaining length".into());
        }
        let b = buf[i];
        len += usize::from(b & 0x7f) * mult;
        mult *= 128;
        i += 1;
        if b & 0x80 == 0 {
            break;
        }
    }
    if buf.len() < i + len {
        return Ok(None);
    }
    Ok(Some((buf[0], i, i + len)))
}

/// The `i`-th source address: 127.0.0.(2 + i % sources), or none when `sources` is 0.
pub fn source_ip(i: u64, sources: u64) -> Option<IpAddr> {
    (sources > 0).then(|| IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + (i % sources) as u8)))
}

pub async fn tcp_connect(addr: SocketAddr, src: Option<IpAddr>) -> std::io::Result<TcpStream> {
    let sock = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Some(ip) = src {
        // Ports of earlier runs' connections may still be in TIME_WAIT.
        sock.set_reuseaddr(true)?;
        sock.bind(SocketAddr::new(ip, 0))?;
    }
    let s = sock.connect(addr).await?;
    s.set_nodelay(true)?;
    Ok(s)
}

/// TCP connect, CONNECT, wait for CONNACK (accepted).
pub async fn connect(
    addr: SocketAddr,
    src: Option<IpAddr>,
    packet: &[u8],
    timeout: Duration,
) -> Result<TcpStream, String> {
    let fut = async {
        let mut s = tcp_connect(addr, src)
            .await
            .map_err(|e| format!("connect to {addr}: {e}"))?;
        s.write_all(packet)
            .await
            .map_err(|e| format!("write CONNECT: {e}"))?;
        let mut ack = [0u8; 4];
        s.read_exact(&mut ack)
            .await
            .map_err(|e| format!("read CONNACK: {e}"))?;
        if ack[0] != 0x20 || ack[1] != 2 {
            return Err(format!("unexpected reply to CONNECT: {ack:02x?}"));
        }
        if ack[3] != 0 {
            return Err(format!("CONNECT refused, return code {}", ack[3]));
        }
        Ok(s)
    };
    tokio::time::timeout(timeout, fut)
        .await
        .map_err(|_| format!("no CONNACK within {timeout:?}"))?
}

pub fn resolve(addr: &str) -> Result<SocketAddr, String> {
    use std::net::ToSocketAddrs;
    addr.to_socket_addrs()
        .map_err(|e| format!("address '{addr}': {e}"))?
        .next()
        .ok_or_else(|| format!("address '{addr}' does not resolve"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_offsets() {
        let t = publish_template("telemetry", 1, 64);
        assert_eq!(t.bytes.len(), 2 + 2 + 9 + 2 + 64);
        let pid = t.pid_off.unwrap();
        assert_eq!(&t.bytes[pid..pid + 2], &[0, 1]);
        assert_eq!(&t.bytes[t.ts_off - TS_OFFSET..t.ts_off], b"{\"bt\":\"");
        let (h, s, e) = parse_frame(&t.bytes).unwrap().unwrap();
        assert_eq!((h, s, e), (0x32, 2, t.bytes.len()));
        let mut d = [0u8; 20];
        put_digits(&mut d, 1234567);
        assert_eq!(parse_digits(&d), Some(1234567));
        assert_eq!(payload(64).len(), 64);
    }
}
