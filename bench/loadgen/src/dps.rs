//! `dps`: device provisioning throughput. Creates an enrollment group (symmetric key) through
//! the API, then N devices register over MQTT as Azure's SDKs do (DPS username and SAS token,
//! SUBSCRIBE `$dps/registrations/res/#`, register, poll once the 202 came, DISCONNECT),
//! `--concurrency` at a time; registrations per second and broker CPU per registration.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::http::Conn;
use crate::mqtt::{self, connect_packet, parse_frame, parse_publish, publish_packet, subscribe_packet};
use crate::{base64, f1, f2, now_ns, procfs, result, Args};

fn hmac256(key: &[u8], msg: &[u8]) -> Vec<u8> {
    let mut m = <Hmac<Sha256>>::new_from_slice(key).expect("any key length");
    m.update(msg);
    m.finalize().into_bytes().to_vec()
}

fn percent(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The SAS token a device makes for its registration with its (raw) key.
fn token(scope: &str, rid: &str, key: &[u8]) -> String {
    let sr = percent(&format!("{scope}/registrations/{rid}"));
    let se = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
        + 3600;
    let sig = base64(&hmac256(key, format!("{sr}\n{se}").as_bytes()));
    format!(
        "SharedAccessSignature sr={sr}&sig={}&se={se}&skn=registration",
        percent(&sig)
    )
}

/// Reads frames until a PUBLISH whose topic starts with `prefix`; returns topic and payload.
async fn next_publish(
    s: &mut tokio::net::TcpStream,
    buf: &mut Vec<u8>,
    prefix: &str,
) -> Result<(String, Vec<u8>), String> {
    loop {
        while let Some((h, start, end)) = parse_frame(buf)? {
            let frame: Vec<u8> = buf.drain(..end).collect();
            if h >> 4 == 3 {
                let p = parse_publish(h, &frame[start..]).ok_or("bad PUBLISH")?;
                let topic = String::from_utf8_lossy(p.topic).into_owned();
                if let Some(pid) = p.pid {
                    let ack = [0x40, 2, (pid >> 8) as u8, pid as u8];
                    s.write_all(&ack).await.map_err(|e| e.to_string())?;
                }
                if topic.starts_with(prefix) {
                    return Ok((topic, p.payload.to_vec()));
                }
            }
        }
        let mut chunk = [0u8; 4096];
        let n = s.read(&mut chunk).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("connection closed".into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// One registration, start to end.
async fn register(addr: SocketAddr, scope: &str, rid: &str, group_key: &[u8]) -> Result<(), String> {
    let device_key = hmac256(group_key, rid.as_bytes());
    let user = format!("{scope}/registrations/{rid}/api-version=2019-03-31&ClientVersion=loadgen");
    let pass = token(scope, rid, &device_key);
    let connect = connect_packet(rid, Some(&user), Some(&pass), 60, true);
    let mut s = mqtt::connect(addr, None, &connect, Duration::from_secs(30)).await?;
    let mut buf = Vec::new();
    s.write_all(&subscribe_packet(1, "$dps/registrations/res/#", 1))
        .await
        .map_err(|e| e.to_string())?;
    let body = format!("{{\"registrationId\":\"{rid}\",\"payload\":null}}");
    s.write_all(&publish_packet(
        "$dps/registrations/PUT/iotdps-register/?$rid=1",
        1,
        2,
        body.as_bytes(),
    ))
    .await
    .map_err(|e| e.to_string())?;
    let (topic, payload) = next_publish(&mut s, &mut buf, "$dps/registrations/res/").await?;
    if !topic.starts_with("$dps/registrations/res/202/") {
        return Err(format!("register: {topic} {}", String::from_utf8_lossy(&payload)));
    }
    let text = String::from_utf8_lossy(&payload);
    let op = text
        .split("\"operationId\":\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .ok_or("no operationId")?
        .to_string();
    s.write_all(&publish_packet(
        &format!("$dps/registrations/GET/iotdps-get-operationstatus/?$rid=2&operationId={op}"),
        1,
        3,
        b" ",
    ))
    .await
    .map_err(|e| e.to_string())?;
    let (topic, payload) = next_publish(&mut s, &mut buf, "$dps/registrations/res/").await?;
    if !topic.starts_with("$dps/registrations/res/200/") {
        return Err(format!("poll: {topic} {}", String::from_utf8_lossy(&payload)));
    }
    let _ = s.write_all(&[0xE0, 0]).await;
    Ok(())
}

pub async fn bench(args: &Args) -> Result<(), String> {
    let addr = mqtt::resolve(&args.str("addr", "127.0.0.1:1883"))?;
    let api = mqtt::resolve(&args.str("api", "127.0.0.1:8011"))?;
    let token = args.opt("token").ok_or("--token is required")?;
    let app = args.str("app", "dps");
    let n: u64 = args.num("registrations", 10_000u64);
    let conc: usize = args.num("concurrency", 64usize);
    let prefix = args.str("prefix", "unit-");
    let pid: Option<u32> = args.opt("pid").and_then(|p| p.parse().ok());
    let basic = base64(format!("admin:{token}").as_bytes());
    let group_key: Vec<u8> = (0u8..32).collect();
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
        return Err(format!("create app: HTTP {st}: {}", String::from_utf8_lossy(&body)));
    }
    let group = format!(
        "{{\"attestation\":{{\"type\":\"symmetricKey\",\"symmetricKey\":{{\"primaryKey\":\"{}\"}}}}}}",
        base64(&group_key)
    );
    let (st, body) = c
        .request(
            "PUT",
            &format!("/api/provisioning/v1alpha1/apps/{app}/groups/bench"),
            &basic,
            group.as_bytes(),
        )
        .await?;
    if st != 201 && st != 200 {
        return Err(format!("create group: HTTP {st}: {}", String::from_utf8_lossy(&body)));
    }
    let (st, body) = c
        .request("GET", "/api/provisioning/v1alpha1/info", &basic, b"")
        .await?;
    let text = String::from_utf8_lossy(&body).into_owned();
    let scope = text
        .split("\"idScope\":\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .filter(|_| st == 200)
        .ok_or_else(|| format!("ID scope: HTTP {st}: {text}"))?
        .to_string();
    let next = Arc::new(AtomicU64::new(1));
    let failed = Arc::new(AtomicU64::new(0));
    let first_error: Arc<std::sync::Mutex<Option<String>>> = Arc::default();
    let cpu0 = procfs::cpu_secs(pid);
    let t0 = now_ns();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..conc {
        let (next, failed, first_error) = (next.clone(), failed.clone(), first_error.clone());
        let (scope, prefix, group_key) = (scope.clone(), prefix.clone(), group_key.clone());
        set.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i > n {
                    return;
                }
                if let Err(e) = register(addr, &scope, &format!("{prefix}{i}"), &group_key).await {
                    failed.fetch_add(1, Ordering::Relaxed);
                    first_error.lock().unwrap().get_or_insert(e);
                }
            }
        });
    }
    while set.join_next().await.is_some() {}
    let elapsed = (now_ns() - t0) as f64 / 1e9;
    let cpu = procfs::delta(cpu0, procfs::cpu_secs(pid));
    let failed = failed.load(Ordering::Relaxed);
    let ok = n - failed;
    result(&[
        ("scenario", "dps".into()),
        ("label", args.str("label", "drover")),
        ("registrations", n.to_string()),
        ("concurrency", conc.to_string()),
        ("failed", failed.to_string()),
        ("elapsed_s", f2(elapsed)),
        ("registrations_per_s", f1(ok as f64 / elapsed)),
        ("broker_cpu_s", f2(cpu)),
        ("cpu_ms_per_registration", f2(cpu * 1e3 / ok.max(1) as f64)),
        (
            "first_error",
            first_error.lock().unwrap().clone().unwrap_or_else(|| "-".into()),
        ),
    ]);
    Ok(())
}
