//! `loadgen`: the load generator of the Drover benchmarks.
//!
//! Raw MQTT 3.1.1 (pre-encoded, batched writes), a raw WebSocket reader and a raw HTTP/1.1
//! keep-alive client, on a single-threaded tokio runtime (the scripts pin it to one core).
//! Every measuring subcommand prints one `RESULT key=value ...` line that `loadgen summarize`
//! turns into a table of medians. See `bench/README.md`.

mod conns;
mod consumers;
mod dps;
mod fanin;
mod http;
mod ledger;
mod mqtt;
mod procfs;
mod soak;
mod soak_devices;
mod soak_summary;
mod stats;
mod sub;

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::OnceLock;
use std::time::Instant;

const USAGE: &str = "\
usage: loadgen <command> [--option value ...]

commands (options with defaults; see bench/README.md):
  fanin      N publishers x M messages x S bytes -> 1 subscriber; msgs/s in and out
             --addr 127.0.0.1:1883 --publishers 10 --messages 100000 --size 64 --qos 0
             --window 32 --user '' (e.g. 'd{i}@bench') --pass '' --topic telemetry
             --client-id 'lg-pub-{i}' --sub mqtt|ws|none --sub-addr (=addr) --sub-topic '#'
             --sub-user '' --sub-pass '' --sub-qos (=qos) --ws-path /api/integrations/v1alpha1/ws/bench
             --ws-auth admin:TOKEN --pid BROKER_PID --label NAME --settle 1 --idle-timeout 5
             --timeout 300
  latency    fixed total rate; each payload carries its send time; p50/p99/p99.9 end to end
             (fanin options) --rate 50000 --duration 10 --warmup 2
  idle       open N authenticated connections, hold them, broker memory per connection
             --addr --connections 10000 --sources 4 --user 'd{i}@bench' --pass pw
             --concurrency 200 --hold 10 --keepalive 600 --pid --label
  storm      N devices connect at once with password auth; time until all CONNACKed
             --addr --connections 10000 --sources 4 --user --pass --concurrency 10000 --pid --label
  http       keep-alive clients POSTing telemetry; req/s and latency
             --addr 127.0.0.1:8088 --clients 16 --duration 10 --warmup 2 --size 64
             --user 'd{i}@bench' --pass pw --path /v1/telemetry --pid --label
  provision  create an application and devices over the registry API
             --api 127.0.0.1:8011 --token TOKEN --app bench --devices 10 --prefix d
             --pass pw | --pass-sha512 '$6$...' --concurrency 4
  dps        provisioning throughput: an enrollment group, then N registrations over MQTT
             --addr 127.0.0.1:1883 --api 127.0.0.1:8011 --token T --app dps
             --registrations 10000 --concurrency 64 --prefix unit- --pid --label
  soak       mixed load for --duration s (run by bench/soak.sh, which restarts the server
             meanwhile), then every acknowledged message looked up in the stream; exit 1 if any
             is missing. --mqtt --http --api --int ADDR --token T --app soak --duration 3600
             --size 128 --qos1-devices 4 --qos1-rate 20 --qos0-devices 2 --qos0-rate 20
             --http-devices 2 --http-rate 10 (per device, msg/s) --command-every 2
             --registry-every 3 --churn-every 20 --missing-file PATH
  soak-summary  RSS/fds per phase of the soak's samples, slope and verdict: --csv FILE
  summarize  medians of RESULT lines: --file results.txt --by label,qos [--keys k1,k2,...]
  ports      print N free TCP ports on 127.0.0.1: --count 1
  wait       wait until a TCP port accepts connections: --addr host:port --timeout 30
";

/// Time base of all timestamps: nanoseconds since the process started.
static START: OnceLock<Instant> = OnceLock::new();

pub fn now_ns() -> u64 {
    START.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// `--key value` / `--key=value` options.
pub struct Args {
    map: HashMap<String, String>,
}

impl Args {
    fn parse(items: impl Iterator<Item = String>) -> Result<Args, String> {
        let mut map = HashMap::new();
        let mut it = items.peekable();
        while let Some(a) = it.next() {
            let Some(key) = a.strip_prefix("--") else {
                return Err(format!("unexpected argument '{a}'"));
            };
            if let Some((k, v)) = key.split_once('=') {
                map.insert(k.to_string(), v.to_string());
            } else {
                let v = it
                    .next()
                    .ok_or_else(|| format!("option --{key} needs a value"))?;
                map.insert(key.to_string(), v);
            }
        }
        Ok(Args { map })
    }

    pub fn opt(&self, key: &str) -> Option<String> {
        self.map.get(key).cloned()
    }

    pub fn str(&self, key: &str, default: &str) -> String {
        self.opt(key).unwrap_or_else(|| default.to_string())
    }

    pub fn num<T: FromStr>(&self, key: &str, default: T) -> T {
        match self.map.get(key) {
            None => default,
            Some(v) => v.parse().unwrap_or_else(|_| {
                eprintln!("error: --{key}: '{v}' is not a valid number");
                std::process::exit(2)
            }),
        }
    }
}

/// `pattern` with `{i}` replaced by `i`.
pub fn expand(pattern: &str, i: u64) -> String {
    pattern.replace("{i}", &i.to_string())
}

/// Standard base64 (for HTTP Basic).
pub fn base64(input: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for c in input.chunks(3) {
        let b = [c[0], *c.get(1).unwrap_or(&0), *c.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        out.push(T[(n >> 18) as usize & 63] as char);
        out.push(T[(n >> 12) as usize & 63] as char);
        out.push(if c.len() > 1 {
            T[(n >> 6) as usize & 63] as char
        } else {
            '='
        });
        out.push(if c.len() > 2 {
            T[n as usize & 63] as char
        } else {
            '='
        });
    }
    out
}

/// Prints a result line: `RESULT k=v k=v ...`.
pub fn result(fields: &[(&str, String)]) {
    let mut line = String::from("RESULT");
    for (k, v) in fields {
        line.push(' ');
        line.push_str(k);
        line.push('=');
        line.push_str(&v.replace(' ', "_"));
    }
    println!("{line}");
}

pub fn f1(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.1}")
    } else {
        "-".to_string()
    }
}

pub fn f2(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.2}")
    } else {
        "-".to_string()
    }
}

fn main() {
    START.get_or_init(Instant::now);
    let mut argv = std::env::args().skip(1);
    let Some(cmd) = argv.next() else {
        eprint!("{USAGE}");
        std::process::exit(2);
    };
    if cmd == "-h" || cmd == "--help" || cmd == "help" {
        print!("{USAGE}");
        return;
    }
    let args = match Args::parse(argv) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}\n{USAGE}");
            std::process::exit(2);
        }
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let outcome: Result<(), String> = rt.block_on(async move {
        match cmd.as_str() {
            "fanin" => fanin::fanin(&args).await,
            "latency" => fanin::latency(&args).await,
            "idle" => conns::idle(&args).await,
            "storm" => conns::storm(&args).await,
            "http" => http::bench(&args).await,
            "provision" => http::provision(&args).await,
            "dps" => dps::bench(&args).await,
            "soak" => soak::soak(&args).await,
            "soak-summary" => soak_summary::summary(&args),
            "summarize" => stats::summarize(&args),
            "ports" => conns::ports(&args),
            "wait" => conns::wait(&args).await,
            other => Err(format!("unknown command '{other}'\n{USAGE}")),
        }
    });
    if let Err(e) = outcome {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
