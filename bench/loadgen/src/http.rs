//! A raw HTTP/1.1 keep-alive client: provisioning over the registry API, and the HTTP
//! telemetry benchmark.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::mqtt;
use crate::procfs;
use crate::stats;
use crate::{base64, expand, f1, f2, now_ns, result, Args};

pub struct Conn {
    addr: SocketAddr,
    stream: Option<TcpStream>,
    buf: BytesMut,
}

impl Conn {
    pub fn new(addr: SocketAddr) -> Conn {
        Conn {
            addr,
            stream: None,
            buf: BytesMut::with_capacity(16384),
        }
    }

    /// One request; the status and body of the response.
    pub async fn request(
        &mut self,
        method: &str,
        path: &str,
        basic: &str,
        body: &[u8],
    ) -> Result<(u16, Vec<u8>), String> {
        if self.stream.is_none() {
            let s = mqtt::tcp_connect(self.addr, None)
                .await
                .map_err(|e| format!("connect {}: {e}", self.addr))?;
            self.stream = Some(s);
            self.buf.clear();
        }
        let s = self.stream.as_mut().expect("connected");
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Basic {basic}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            self.addr,
            body.len()
        )
        .into_bytes();
        req.extend_from_slice(body);
        if let Err(e) = s.write_all(&req).await {
            self.stream = None;
            return Err(format!("write: {e}"));
        }
        // Headers.
        let head_end = loop {
            if let Some(p) = memchr::memmem::find(&self.buf, b"\r\n\r\n") {
                break p;
            }
            match s.read_buf(&mut self.buf).await {
                Ok(0) => {
                    self.stream = None;
                    return Err("connection closed".into());
                }
                Ok(_) => {}
                Err(e) => {
                    self.stream = None;
                    return Err(format!("read: {e}"));
                }
            }
        };
        let head = std::str::from_utf8(&self.buf[..head_end])
            .map_err(|_| "response head is not UTF-8".to_string())?
            .to_string();
        let mut lines = head.split("\r\n");
        let status: u16 = lines
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| format!("bad status line in {head:?}"))?;
        let mut len = 0usize;
        let mut close = false;
        for l in lines {
            let Some((k, v)) = l.split_once(':') else {
                continue;
            };
            let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
            match k.as_str() {
                "content-length" => len = v.parse().unwrap_or(0),
                "connection" if v.eq_ignore_ascii_case("close") => close = true,
                "transfer-encoding" if v.eq_ignore_ascii_case("chunked") => {
                    self.stream = None;
                    return Err("chunked responses are not supported".into());
                }
                _ => {}
            }
        }
        self.buf.advance(head_end + 4);
        while self.buf.len() < len {
            match s.read_buf(&mut self.buf).await {
                Ok(0) => {
                    self.stream = None;
                    return Err("connection closed in the body".into());
                }
                Ok(_) => {}
                Err(e) => {
                    self.stream = None;
                    return Err(format!("read: {e}"));
                }
            }
        }
        let body = self.buf[..len].to_vec();
        self.buf.advance(len);
        if close {
            self.stream = None;
        }
        Ok((status, body))
    }
}

/// Creates the application and devices `<prefix>1..<prefix>N` (existing ones are kept).
pub async fn provision(args: &Args) -> Result<(), String> {
    let api = mqtt::resolve(&args.str("api", "127.0.0.1:8011"))?;
    let token = args.opt("token").ok_or("--token is required")?;
    let app = args.str("app", "bench");
    let n: u64 = args.num("devices", 10u64);
    let prefix = args.str("prefix", "d");
    let pass_json = match args.opt("pass-sha512") {
        Some(h) => format!("{{\"sha512\":\"{h}\"}}"),
        None => format!("\"{}\"", args.str("pass", "pw")),
    };
    let basic = base64(format!("admin:{token}").as_bytes());
    let mut c = Conn::new(api);
    let (st, body) = c
        .request(
            "POST",
            "/api/registry/v1alpha1/apps",
            &basic,
            format!("{{\"metadata\":{{\"name\":\"{app}\"}}}}").as_bytes(),
        )
        .await?;
    if st != 201 && st != 409 {
        return Err(format!(
            "create app: HTTP {st}: {}",
            String::from_utf8_lossy(&body)
        ));
    }
    let next = Arc::new(AtomicU64::new(1));
    let conc: usize = args.num("concurrency", 4usize);
    let t0 = now_ns();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..conc {
        let next = next.clone();
        let (basic, app, prefix, pass_json) = (
            basic.clone(),
            app.clone(),
            prefix.clone(),
            pass_json.clone(),
        );
        set.spawn(async move {
            let mut c = Conn::new(api);
            let path = format!("/api/registry/v1alpha1/apps/{app}/devices");
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i > n {
                    return Ok::<(), String>(());
                }
                let body = format!(
                    "{{\"metadata\":{{\"name\":\"{prefix}{i}\"}},\"spec\":{{\"authentication\":{{\"credentials\":[{{\"pass\":{pass_json}}}]}}}}}}"
                );
                let (st, resp) = c.request("POST", &path, &basic, body.as_bytes()).await?;
                if st != 201 && st != 409 {
                    return Err(format!(
                        "create device {prefix}{i}: HTTP {st}: {}",
                        String::from_utf8_lossy(&resp)
                    ));
                }
                if i.is_multiple_of(5000) {
                    eprintln!("  ... {i} devices");
                }
            }
        });
    }
    while let Some(r) = set.join_next().await {
        r.map_err(|e| format!("task: {e}"))??;
    }
    eprintln!(
        "provisioned app '{app}' with {n} devices in {:.1} s",
        (now_ns() - t0) as f64 / 1e9
    );
    Ok(())
}

/// `http`: `--clients` keep-alive connections, each POSTing telemetry as its own device, one
/// request at a time; counts what completes inside the measuring window.
pub async fn bench(args: &Args) -> Result<(), String> {
    let addr = mqtt::resolve(&args.str("addr", "127.0.0.1:8088"))?;
    let clients: u64 = args.num("clients", 16u64);
    let duration: f64 = args.num("duration", 10.0f64);
    let warmup: f64 = args.num("warmup", 2.0f64);
    let size: usize = args.num("size", 64usize);
    let user = args.str("user", "d{i}@bench");
    let pass = args.str("pass", "pw");
    let path = args.str("path", "/v1/telemetry");
    let pid: Option<u32> = args.opt("pid").and_then(|p| p.parse().ok());
    let t_start = now_ns();
    let m_from = t_start + (warmup * 1e9) as u64;
    let m_to = m_from + (duration * 1e9) as u64;
    let mut set = tokio::task::JoinSet::new();
    for i in 1..=clients {
        let basic = base64(format!("{}:{}", expand(&user, i), expand(&pass, i)).as_bytes());
        let path = path.clone();
        set.spawn(async move {
            let mut c = Conn::new(addr);
            let mut payload = mqtt::payload(size);
            let mut lat = Vec::new();
            let (mut ok, mut bad, mut first_err) = (0u64, 0u64, None::<String>);
            loop {
                let t = now_ns();
                if t >= m_to {
                    break;
                }
                mqtt::put_digits(&mut payload[mqtt::TS_OFFSET..], t);
                let r = c.request("POST", &path, &basic, &payload).await;
                let end = now_ns();
                let counted = t >= m_from && end <= m_to;
                match r {
                    Ok((202, _)) => {
                        if counted {
                            ok += 1;
                            lat.push(end - t);
                        }
                    }
                    Ok((st, body)) => {
                        if counted {
                            bad += 1;
                        }
                        first_err.get_or_insert(format!(
                            "HTTP {st}: {}",
                            String::from_utf8_lossy(&body)
                        ));
                    }
                    Err(e) => {
                        if counted {
                            bad += 1;
                        }
                        first_err.get_or_insert(e);
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
            (ok, bad, first_err, lat)
        });
    }
    // CPU over the measuring window.
    tokio::time::sleep(Duration::from_nanos(m_from.saturating_sub(now_ns()))).await;
    let cpu0 = procfs::cpu_secs(pid);
    tokio::time::sleep(Duration::from_nanos(m_to.saturating_sub(now_ns()))).await;
    let cpu1 = procfs::cpu_secs(pid);
    let (mut ok, mut bad, mut lat, mut err) = (0, 0, Vec::new(), None);
    while let Some(r) = set.join_next().await {
        let (o, b, e, l) = r.map_err(|e| format!("task: {e}"))?;
        ok += o;
        bad += b;
        lat.extend(l);
        if err.is_none() {
            err = e;
        }
    }
    if let Some(e) = &err {
        eprintln!("warning: first error: {e}");
    }
    let cpu = procfs::delta(cpu0, cpu1);
    let mut f: Vec<(String, String)> = vec![
        ("scenario".into(), "http".into()),
        ("label".into(), args.str("label", "target")),
        ("clients".into(), clients.to_string()),
        ("size".into(), size.to_string()),
        ("ok".into(), ok.to_string()),
        ("errors".into(), bad.to_string()),
        ("req_per_s".into(), f1(ok as f64 / duration)),
        ("broker_cpu_s".into(), f2(cpu)),
        ("cpu_us_per_req".into(), f1(cpu * 1e6 / ok.max(1) as f64)),
        (
            "rss_peak_kib".into(),
            procfs::kib(procfs::status_kib(pid, "VmHWM")),
        ),
    ];
    f.extend(stats::latency_fields("req", &mut lat));
    let refs: Vec<(&str, String)> = f.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
    result(&refs);
    Ok(())
}
