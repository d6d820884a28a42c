//! `soak`: `--duration` seconds of mixed load against one Drover (devices publishing over MQTT
//! at QoS 0 and 1 and over HTTP, a durable MQTT-integration consumer, shared-group workers and
//! WebSocket consumers joining and leaving, commands answered by the devices, registry changes),
//! surviving whatever restart `bench/soak.sh` does meanwhile; then every acknowledged message is
//! looked up in the durable consumer's deliveries and in a full read of the stream.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Notify};
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior};

use crate::consumers::{self, stopped, Role, Session};
use crate::http::Conn;
use crate::ledger::{self, Ledger, KIND_HTTP, KIND_QOS0, KIND_QOS1};
use crate::soak_devices::{self, DeviceCfg};
use crate::{base64, f1, now_ns, result, Args};

pub struct Cfg {
    pub mqtt: SocketAddr,
    pub http: SocketAddr,
    pub api: SocketAddr,
    pub int: SocketAddr,
    pub token: String,
    pub app: String,
    pub duration: f64,
    pub size: usize,
    pub qos1_devices: u64,
    pub qos1_rate: f64,
    pub qos0_devices: u64,
    pub qos0_rate: f64,
    pub http_devices: u64,
    pub http_rate: f64,
    pub command_every: f64,
    pub registry_every: f64,
    pub churn_every: f64,
}

impl Cfg {
    fn from_args(a: &Args) -> Result<Cfg, String> {
        let addr = |k: &str| -> Result<SocketAddr, String> {
            crate::mqtt::resolve(&a.opt(k).ok_or_else(|| format!("--{k} is required"))?)
        };
        Ok(Cfg {
            mqtt: addr("mqtt")?,
            http: addr("http")?,
            api: addr("api")?,
            int: addr("int")?,
            token: a.opt("token").ok_or("--token is required")?,
            app: a.str("app", "soak"),
            duration: a.num("duration", 3600.0),
            size: a.num("size", 128),
            qos1_devices: a.num("qos1-devices", 4),
            qos1_rate: a.num("qos1-rate", 20.0),
            qos0_devices: a.num("qos0-devices", 2),
            qos0_rate: a.num("qos0-rate", 20.0),
            http_devices: a.num("http-devices", 2),
            http_rate: a.num("http-rate", 10.0),
            command_every: a.num("command-every", 2.0),
            registry_every: a.num("registry-every", 3.0),
            churn_every: a.num("churn-every", 20.0),
        })
    }

    fn admin_basic(&self) -> String {
        base64(format!("admin:{}", self.token).as_bytes())
    }

    /// The application's WebSocket stream, with a query unless it is empty (live).
    fn ws_path(&self, query: &str) -> String {
        let sep = if query.is_empty() { "" } else { "?" };
        format!("/api/integrations/v1alpha1/ws/{}{sep}{query}", self.app)
    }
}

/// A small deterministic generator (xorshift) for lifetimes and jitter.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }
    /// Uniform in lo..=hi.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        lo + self.0 % (hi - lo + 1)
    }
}

fn every(secs: f64) -> tokio::time::Interval {
    let mut t = tokio::time::interval(Duration::from_secs_f64(secs.max(0.001)));
    t.set_missed_tick_behavior(MissedTickBehavior::Delay);
    t
}

/// Commands to the QoS 1 devices in turn, waiting up to 5 s for their reply.
async fn commands(cfg: Arc<Cfg>, ledger: Ledger, mut stop: watch::Receiver<bool>) {
    let basic = cfg.admin_basic();
    let mut conn = Conn::new(cfg.api);
    let mut tick = every(cfg.command_every);
    for n in 0u64.. {
        tokio::select! { _ = tick.tick() => {}, _ = stopped(&mut stop) => return }
        let dev = 1 + n % cfg.qos1_devices.max(1);
        let path = format!(
            "/api/command/v1alpha1/apps/{}/devices/d{dev}?command=ping&timeout=5",
            cfg.app
        );
        ledger.lock().commands_sent += 1;
        let body = format!("{{\"n\":{n}}}");
        let r = tokio::time::timeout(
            Duration::from_secs(15),
            conn.request("POST", &path, &basic, body.as_bytes()),
        )
        .await;
        let mut book = ledger.lock();
        match &r {
            Ok(Ok((200, b))) if b == b"pong" => book.commands_answered += 1,
            Ok(Ok((st, b))) => book.error(
                &format!("command-{st}"),
                String::from_utf8_lossy(b).to_string(),
            ),
            Ok(Err(e)) => book.error("command-io", e.clone()),
            Err(_) => book.error("command-io", "no answer within 15 s"),
        }
        if !matches!(r, Ok(Ok(_))) {
            conn = Conn::new(cfg.api);
        }
    }
}

/// Registry changes in a cycle on device `tmp<k>`: create (labelled), update its labels, read
/// it back, delete; every tenth device is kept (the registry grows a little).
async fn registry(cfg: Arc<Cfg>, ledger: Ledger, mut stop: watch::Receiver<bool>) {
    let basic = cfg.admin_basic();
    let mut conn = Conn::new(cfg.api);
    let mut tick = every(cfg.registry_every);
    let devices = format!("/api/registry/v1alpha1/apps/{}/devices", cfg.app);
    for step in 0u64.. {
        tokio::select! { _ = tick.tick() => {}, _ = stopped(&mut stop) => return }
        let k = step / 4;
        let name = format!("tmp{k}");
        let creds = r#""authentication":{"credentials":[{"pass":"pw"}]}"#;
        let (method, path, body, want): (&str, String, String, &[u16]) = match step % 4 {
            0 => (
                "POST",
                devices.clone(),
                format!(
                    r#"{{"metadata":{{"name":"{name}","labels":{{"soak":"new"}}}},"spec":{{{creds}}}}}"#
                ),
                &[201],
            ),
            1 => (
                "PUT",
                format!("{devices}/{name}"),
                format!(
                    r#"{{"metadata":{{"name":"{name}","labels":{{"soak":"changed","round":"{k}"}}}},"spec":{{{creds}}}}}"#
                ),
                &[200, 204],
            ),
            2 => ("GET", format!("{devices}/{name}"), String::new(), &[200]),
            _ if k % 10 == 9 => continue,
            _ => (
                "DELETE",
                format!("{devices}/{name}"),
                String::new(),
                &[200, 204],
            ),
        };
        let r = tokio::time::timeout(
            Duration::from_secs(15),
            conn.request(method, &path, &basic, body.as_bytes()),
        )
        .await;
        let mut book = ledger.lock();
        match &r {
            Ok(Ok((st, b))) if want.contains(st) => {
                let round = format!("\"round\":\"{k}\"");
                if method == "GET" && memchr::memmem::find(b, round.as_bytes()).is_none() {
                    book.registry_failed += 1;
                    book.error(
                        "registry-stale",
                        format!("{name}: label change not visible"),
                    );
                } else {
                    book.registry_ok += 1;
                }
            }
            Ok(Ok((st, b))) => {
                book.registry_failed += 1;
                book.error(
                    &format!("registry-{method}-{st}"),
                    format!("{name}: {}", String::from_utf8_lossy(b)),
                );
            }
            Ok(Err(e)) => {
                book.registry_failed += 1;
                book.error("registry-io", format!("{method} {name}: {e}"));
            }
            Err(_) => {
                book.registry_failed += 1;
                book.error(
                    "registry-io",
                    format!("{method} {name}: no answer within 15 s"),
                );
            }
        }
        if !matches!(r, Ok(Ok(_))) {
            conn = Conn::new(cfg.api);
        }
    }
}

/// Consumers joining and leaving: every `churn_every` s (± half) one shared-group worker
/// (`$share/workers/app/<app>`) or one WebSocket consumer (group `dash`, or live) that stays
/// 10–60 s; at most three of each at a time.
async fn churn(cfg: Arc<Cfg>, ledger: Ledger, stop: watch::Receiver<bool>) {
    let mut rng = Rng::new(now_ns());
    let mut set = JoinSet::new();
    let mut stop_rx = stop.clone();
    let (mut workers, mut websockets) = (JoinSet::new(), JoinSet::new());
    for n in 0u64.. {
        let half = (cfg.churn_every * 500.0) as u64;
        let wait = Duration::from_millis(rng.range(half, 3 * half.max(1)));
        tokio::select! { _ = tokio::time::sleep(wait) => {}, _ = stopped(&mut stop_rx) => break }
        while workers.try_join_next().is_some() {}
        while websockets.try_join_next().is_some() {}
        let life = Duration::from_secs(rng.range(10, 60));
        if n % 2 == 0 && workers.len() < 3 {
            let s = Session {
                addr: cfg.int,
                user: "admin".into(),
                pass: cfg.token.clone(),
                client_id: format!("soak-worker-{n}"),
                clean: true,
                topic: format!("$share/workers/app/{}", cfg.app),
                role: Role::Worker,
            };
            workers.spawn(consumers::worker(s, ledger.clone(), stop.clone(), life));
        } else if n % 2 == 1 && websockets.len() < 3 {
            let query = if n % 4 == 1 { "group_id=dash" } else { "" };
            websockets.spawn(consumers::ws_consumer(
                cfg.api,
                cfg.ws_path(query),
                format!("admin:{}", cfg.token),
                ledger.clone(),
                stop.clone(),
                life,
            ));
        }
    }
    set.spawn(async move { while workers.join_next().await.is_some() {} });
    set.spawn(async move { while websockets.join_next().await.is_some() {} });
    while set.join_next().await.is_some() {}
}

/// One line every 10 s: what has happened so far.
fn progress(ledger: &Ledger, t0: Instant) {
    let b = ledger.lock();
    let errors: u64 = b.counts.values().sum();
    println!(
        "PROGRESS t={:.0} qos1_acked={} http_acked={} qos0_sent={} qos1_unconfirmed={} http_failed={} \
         durable_ids={} durable_dups={} worker_events={} ws_events={} commands={}/{} registry_ok={} \
         registry_failed={} device_connects={} durable_connects={} errors={errors}",
        t0.elapsed().as_secs_f64(),
        b.qos1_acked,
        b.http_acked,
        b.qos0_sent,
        b.qos1_unconfirmed,
        b.http_failed,
        b.durable.ids.len(),
        b.durable.duplicates,
        b.worker_events,
        b.ws_events,
        b.commands_answered,
        b.commands_sent,
        b.registry_ok,
        b.registry_failed,
        b.device_connects,
        b.durable_connects,
    );
}

pub async fn soak(args: &Args) -> Result<(), String> {
    let cfg = Arc::new(Cfg::from_args(args)?);
    let ledger = Ledger::default();
    let t0 = Instant::now();

    // The durable consumer subscribes first: a new group starts live.
    let (durable_stop_tx, durable_stop) = watch::channel(false);
    let subscribed = Arc::new(Notify::new());
    let durable_cfg = Session {
        addr: cfg.int,
        user: "admin".into(),
        pass: cfg.token.clone(),
        client_id: "soak-durable".into(),
        clean: false,
        topic: format!("app/{}", cfg.app),
        role: Role::Durable,
    };
    let durable = tokio::spawn(consumers::durable(
        durable_cfg,
        ledger.clone(),
        durable_stop,
        subscribed.clone(),
    ));
    tokio::time::timeout(Duration::from_secs(30), subscribed.notified())
        .await
        .map_err(|_| "the durable consumer did not subscribe within 30 s".to_string())?;

    let (stop_tx, stop) = watch::channel(false);
    let mut load = JoinSet::new();
    let kinds = [
        (KIND_QOS1, 1, cfg.qos1_devices, cfg.qos1_rate),
        (
            KIND_QOS0,
            cfg.qos1_devices + 1,
            cfg.qos0_devices,
            cfg.qos0_rate,
        ),
        (
            KIND_HTTP,
            cfg.qos1_devices + cfg.qos0_devices + 1,
            cfg.http_devices,
            cfg.http_rate,
        ),
    ];
    for (kind, first, n, rate) in kinds {
        for dev in first..first + n {
            let d = DeviceCfg {
                kind,
                dev,
                rate,
                size: cfg.size,
                app: cfg.app.clone(),
                addr: if kind == KIND_HTTP {
                    cfg.http
                } else {
                    cfg.mqtt
                },
            };
            load.spawn(soak_devices::run(d, ledger.clone(), stop.clone()));
        }
    }
    load.spawn(commands(cfg.clone(), ledger.clone(), stop.clone()));
    load.spawn(registry(cfg.clone(), ledger.clone(), stop.clone()));
    load.spawn(churn(cfg.clone(), ledger.clone(), stop.clone()));

    let end = t0 + Duration::from_secs_f64(cfg.duration);
    let mut tick = every(10.0);
    tick.tick().await;
    while Instant::now() < end {
        tokio::select! { _ = tick.tick() => progress(&ledger, t0), _ = tokio::time::sleep_until(end) => {} }
    }
    eprintln!(
        "soak: load done after {:.0} s; draining",
        t0.elapsed().as_secs_f64()
    );
    let _ = stop_tx.send(true);
    while load.join_next().await.is_some() {}
    progress(&ledger, t0);

    let catch_up = wait_for_durable(&ledger).await;
    let _ = durable_stop_tx.send(true);
    let _ = durable.await;
    eprintln!("soak: durable consumer {catch_up}; reading the whole stream (from=earliest)");
    let auth = format!("admin:{}", cfg.token);
    let all = consumers::read_all(
        cfg.api,
        &cfg.ws_path("from=earliest"),
        &auth,
        Duration::from_secs(10),
    )
    .await?;
    report(&cfg, &ledger, &all, t0, args.opt("missing-file"))
}

/// Waits until the durable consumer has every acknowledged id, or 60 s without progress.
async fn wait_for_durable(ledger: &Ledger) -> &'static str {
    let (mut last, mut since) = (0usize, Instant::now());
    loop {
        let (missing, seen) = {
            let b = ledger.lock();
            (b.durable.coverage(&b.acked).1, b.durable.ids.len())
        };
        if missing == 0 {
            return "caught up";
        }
        if seen != last {
            (last, since) = (seen, Instant::now());
        } else if since.elapsed() > Duration::from_secs(60) {
            return "stopped making progress (60 s)";
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

fn report(
    cfg: &Cfg,
    ledger: &Ledger,
    all: &ledger::Seen,
    t0: Instant,
    missing_file: Option<String>,
) -> Result<(), String> {
    let b = ledger.lock();
    let (found, missing) = all.coverage(&b.acked);
    let (d_found, d_missing) = b.durable.coverage(&b.acked);
    let mut missing_ids: Vec<u64> = b
        .acked
        .iter()
        .copied()
        .filter(|id| !all.ids.contains(id))
        .collect();
    missing_ids.sort_unstable();
    if let Some(path) = missing_file {
        let text: String = missing_ids.iter().map(|id| format!("{id}\n")).collect();
        std::fs::write(&path, text).map_err(|e| format!("write {path}: {e}"))?;
    }
    let pct = |a: u64, b: u64| f1(a as f64 * 100.0 / b.max(1) as f64);
    let f: Vec<(&str, String)> = vec![
        ("scenario", "soak".into()),
        ("duration_s", f1(cfg.duration)),
        ("elapsed_s", f1(t0.elapsed().as_secs_f64())),
        ("acked", b.acked.len().to_string()),
        ("acked_qos1", b.qos1_acked.to_string()),
        ("acked_http", b.http_acked.to_string()),
        ("found", found.to_string()),
        ("missing", missing.to_string()),
        ("duplicates", all.duplicates.to_string()),
        (
            "stream_events",
            (all.ids.len() as u64 + all.duplicates + all.other).to_string(),
        ),
        ("stream_other_events", all.other.to_string()),
        ("durable_found", d_found.to_string()),
        ("durable_missing", d_missing.to_string()),
        ("durable_duplicates", b.durable.duplicates.to_string()),
        ("qos0_sent", b.qos0_sent.to_string()),
        ("qos0_found", all.of_kind(KIND_QOS0).to_string()),
        ("qos0_found_pct", pct(all.of_kind(KIND_QOS0), b.qos0_sent)),
        ("qos1_unconfirmed", b.qos1_unconfirmed.to_string()),
        ("http_failed", b.http_failed.to_string()),
        (
            "unacked_found",
            (all.ids.len() as u64)
                .saturating_sub(found + all.of_kind(KIND_QOS0))
                .to_string(),
        ),
        ("commands_sent", b.commands_sent.to_string()),
        ("commands_answered", b.commands_answered.to_string()),
        ("device_replies", b.commands_replied_by_devices.to_string()),
        ("registry_ok", b.registry_ok.to_string()),
        ("registry_failed", b.registry_failed.to_string()),
        ("workers_started", b.workers_started.to_string()),
        ("worker_events", b.worker_events.to_string()),
        ("ws_consumers_started", b.ws_consumers_started.to_string()),
        ("ws_events", b.ws_events.to_string()),
        ("device_connects", b.device_connects.to_string()),
        ("durable_connects", b.durable_connects.to_string()),
        (
            "verdict",
            if missing == 0 && d_missing == 0 {
                "PASS"
            } else {
                "FAIL"
            }
            .into(),
        ),
    ];
    result(&f);
    for (label, n) in &b.counts {
        let first = b.first_errors.get(label).map(String::as_str).unwrap_or("");
        println!("OUTCOME {label} count={n} first={first:?}");
    }
    if !missing_ids.is_empty() {
        let head: Vec<String> = missing_ids.iter().take(20).map(u64::to_string).collect();
        println!(
            "MISSING (first 20 of {}): {}",
            missing_ids.len(),
            head.join(" ")
        );
    }
    if missing > 0 || d_missing > 0 {
        return Err(format!(
            "acknowledged messages missing: {missing} from the stream, {d_missing} from the durable consumer"
        ));
    }
    Ok(())
}
