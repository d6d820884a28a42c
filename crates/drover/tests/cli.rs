//! End-to-end tests of the `drover` binary: configuration layering and errors, the banner, the
//! generated administrator token, and shutdown on SIGTERM.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Exit code of configuration problems (EX_USAGE).
const EXIT_CONFIG: i32 = 64;
/// How long a command may take before the test gives up (and kills it).
const DEADLINE: Duration = Duration::from_secs(30);

/// The binary, with no `DROVER_*` settings inherited from the environment.
fn drover() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_drover"));
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("DROVER_") {
            c.env_remove(k);
        }
    }
    c.env_remove("RUST_LOG");
    c.stdin(Stdio::null());
    c
}

fn kill(pid: u32, signal: &str) -> bool {
    Command::new("kill")
        .args([signal, &pid.to_string()])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Waits for the child in a thread, so that waiting can time out.
fn waiter(mut child: Child) -> Receiver<ExitStatus> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        if let Ok(s) = child.wait() {
            let _ = tx.send(s);
        }
    });
    rx
}

fn read_all(mut r: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = r.read_to_string(&mut s);
        s
    })
}

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    /// The non-empty lines of stderr.
    fn stderr_lines(&self) -> Vec<&str> {
        self.stderr
            .lines()
            .filter(|l| !l.trim().is_empty())
            .collect()
    }
}

/// Runs a command that must finish within the deadline.
fn run(mut cmd: Command) -> Run {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let out = read_all(child.stdout.take().unwrap());
    let err = read_all(child.stderr.take().unwrap());
    let status = match waiter(child).recv_timeout(DEADLINE) {
        Ok(s) => s,
        Err(_) => {
            kill(pid, "-KILL");
            panic!("command did not finish within {DEADLINE:?}");
        }
    };
    Run {
        code: status.code(),
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

fn print_config(configure: impl FnOnce(&mut Command)) -> (Run, toml::Table) {
    let cwd = tempfile::tempdir().unwrap();
    let mut cmd = drover();
    cmd.current_dir(cwd.path())
        .args(["serve", "--print-config"]);
    configure(&mut cmd);
    let r = run(cmd);
    assert_eq!(
        r.code,
        Some(0),
        "stdout: {}\nstderr: {}",
        r.stdout,
        r.stderr
    );
    assert!(
        !cwd.path().join("drover-data").exists(),
        "--print-config created the data directory"
    );
    let table: toml::Table =
        toml::from_str(&r.stdout).unwrap_or_else(|e| panic!("not TOML ({e}): {}", r.stdout));
    (r, table)
}

fn free_addr() -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

#[test]
fn print_config_shows_defaults() {
    let (r, c) = print_config(|_| {});
    assert!(
        r.stdout.contains("api_addr = \"0.0.0.0:8011\""),
        "{}",
        r.stdout
    );
    assert_eq!(c["api_addr"].as_str(), Some("0.0.0.0:8011"));
    assert_eq!(c["data_dir"].as_str(), Some("./drover-data"));
    assert!(
        c.get("admin_token")
            .is_none_or(|v| v.as_str() != Some("<redacted>")),
        "{}",
        r.stdout
    );
}

#[test]
fn print_config_redacts_the_admin_token() {
    let secret = "s3cr3t-s3cr3t-s3cr3t";
    let (r, c) = print_config(|cmd| {
        cmd.args(["--admin-token", secret]);
    });
    assert_eq!(
        c["admin_token"].as_str(),
        Some("<redacted>"),
        "{}",
        r.stdout
    );
    assert!(!r.stdout.contains("s3cr3t"), "{}", r.stdout);
    assert!(!r.stderr.contains("s3cr3t"), "{}", r.stderr);

    let (r, c) = print_config(|cmd| {
        cmd.env("DROVER_ADMIN_TOKEN", secret);
    });
    assert_eq!(
        c["admin_token"].as_str(),
        Some("<redacted>"),
        "{}",
        r.stdout
    );
    assert!(!r.stdout.contains("s3cr3t"), "{}", r.stdout);
}

#[test]
fn file_then_environment_then_flags() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("drover.toml");
    std::fs::write(
        &file,
        "api_addr = \"127.0.0.1:9001\"\ndata_dir = \"/srv/drover\"\n",
    )
    .unwrap();

    let (_, c) = print_config(|cmd| {
        cmd.arg("--config").arg(&file);
    });
    assert_eq!(c["api_addr"].as_str(), Some("127.0.0.1:9001"));
    assert_eq!(c["data_dir"].as_str(), Some("/srv/drover"));

    let (_, c) = print_config(|cmd| {
        cmd.arg("--config")
            .arg(&file)
            .env("DROVER_API_ADDR", "127.0.0.1:9002");
    });
    assert_eq!(
        c["api_addr"].as_str(),
        Some("127.0.0.1:9002"),
        "environment overrides the file"
    );
    assert_eq!(
        c["data_dir"].as_str(),
        Some("/srv/drover"),
        "the rest of the file stays"
    );

    let (_, c) = print_config(|cmd| {
        cmd.arg("--config")
            .arg(&file)
            .env("DROVER_API_ADDR", "127.0.0.1:9002")
            .args(["--api-addr", "127.0.0.1:9003"]);
    });
    assert_eq!(
        c["api_addr"].as_str(),
        Some("127.0.0.1:9003"),
        "the flag overrides the environment"
    );

    // The configuration file can also come from the environment.
    let (_, c) = print_config(|cmd| {
        cmd.env("DROVER_CONFIG", &file);
    });
    assert_eq!(c["api_addr"].as_str(), Some("127.0.0.1:9001"));
}

#[test]
fn invalid_api_addr_exits_64() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = drover();
    cmd.args(["serve", "--api-addr", "nope", "--data-dir"])
        .arg(dir.path());
    let r = run(cmd);
    assert_eq!(r.code, Some(EXIT_CONFIG), "stderr: {}", r.stderr);
    let lines = r.stderr_lines();
    assert_eq!(lines.len(), 1, "one line on stderr: {lines:?}");
    assert!(lines[0].contains("--api-addr"), "{}", lines[0]);
    assert!(lines[0].contains("nope"), "{}", lines[0]);
    assert!(r.stdout.is_empty(), "{}", r.stdout);

    // The same from the environment.
    let mut cmd = drover();
    cmd.args(["serve", "--data-dir"])
        .arg(dir.path())
        .env("DROVER_API_ADDR", "nope");
    let r = run(cmd);
    assert_eq!(r.code, Some(EXIT_CONFIG), "stderr: {}", r.stderr);
    assert_eq!(r.stderr_lines().len(), 1, "{}", r.stderr);
    assert!(r.stderr.contains("DROVER_API_ADDR"), "{}", r.stderr);
}

/// A value of the wrong type is a configuration problem like any other (exit 64, one line),
/// whether it comes from a flag, the environment or the file.
#[test]
fn numbers_that_are_not_numbers_exit_64() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("drover.toml");
    std::fs::write(&file, "http_body_limit = \"abc\"\n").unwrap();
    type Set<'a> = Box<dyn Fn(&mut std::process::Command) + 'a>;
    let variants: [(&str, Set<'_>); 3] = [
        (
            "flag",
            Box::new(|c| {
                c.args(["--http-body-limit", "abc"]);
            }),
        ),
        (
            "environment",
            Box::new(|c| {
                c.env("DROVER_HTTP_BODY_LIMIT", "abc");
            }),
        ),
        (
            "file",
            Box::new(|c| {
                c.arg("--config").arg(&file);
            }),
        ),
    ];
    for (source, set) in variants {
        let mut cmd = drover();
        cmd.args(["serve", "--data-dir"])
            .arg(dir.path().join("data"));
        set(&mut cmd);
        let r = run(cmd);
        assert_eq!(r.code, Some(EXIT_CONFIG), "{source}: {}", r.stderr);
        let lines = r.stderr_lines();
        assert_eq!(lines.len(), 1, "{source}: one line on stderr: {lines:?}");
        assert!(
            lines[0].contains("invalid http_body_limit 'abc'")
                && lines[0].contains("--http-body-limit / DROVER_HTTP_BODY_LIMIT"),
            "{source}: {}",
            lines[0]
        );
    }
}

#[test]
fn unknown_config_key_exits_64() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("drover.toml");
    std::fs::write(&file, "api_adr = \"127.0.0.1:9001\"\n").unwrap();
    let mut cmd = drover();
    cmd.arg("serve")
        .arg("--config")
        .arg(&file)
        .arg("--data-dir")
        .arg(dir.path().join("data"));
    let r = run(cmd);
    assert_eq!(r.code, Some(EXIT_CONFIG), "stderr: {}", r.stderr);
    let lines = r.stderr_lines();
    assert_eq!(lines.len(), 1, "one line on stderr: {lines:?}");
    assert!(lines[0].contains("api_adr"), "{}", lines[0]);
}

#[test]
fn outbound_allow_list_is_printed_and_checked() {
    let (r, c) = print_config(|cmd| {
        cmd.env(
            "DROVER_OUTBOUND_ALLOW",
            "10.20.0.0/16, lns.internal,127.0.0.1",
        );
    });
    let list: Vec<&str> = c["outbound_allow"]
        .as_array()
        .unwrap_or_else(|| panic!("{}", r.stdout))
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(list, ["10.20.0.0/16", "lns.internal", "127.0.0.1/32"]);
    // The flag replaces the environment's list; empty is none.
    let (_, c) = print_config(|cmd| {
        cmd.env("DROVER_OUTBOUND_ALLOW", "10.20.0.0/16")
            .args(["--outbound-allow", ""]);
    });
    assert_eq!(c["outbound_allow"].as_array().map(Vec::len), Some(0));

    let dir = tempfile::tempdir().unwrap();
    let mut cmd = drover();
    cmd.args([
        "serve",
        "--outbound-allow",
        "10.0.0.0/8,10.0.0.0/33",
        "--data-dir",
    ])
    .arg(dir.path());
    let r = run(cmd);
    assert_eq!(r.code, Some(EXIT_CONFIG), "stderr: {}", r.stderr);
    let lines = r.stderr_lines();
    assert_eq!(lines.len(), 1, "one line on stderr: {lines:?}");
    assert!(lines[0].contains("'10.0.0.0/33'"), "{}", lines[0]);
    assert!(lines[0].contains("--outbound-allow"), "{}", lines[0]);
}

#[test]
fn weak_admin_token_exits_64() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = drover();
    cmd.args(["serve", "--admin-token", "short", "--data-dir"])
        .arg(dir.path());
    let r = run(cmd);
    assert_eq!(r.code, Some(EXIT_CONFIG), "stderr: {}", r.stderr);
    assert_eq!(r.stderr_lines().len(), 1, "{}", r.stderr);
    assert!(r.stderr.contains("--admin-token"), "{}", r.stderr);
    assert!(
        !r.stderr.contains("short"),
        "the rejected token is echoed: {}",
        r.stderr
    );
}

#[test]
fn port_in_use_exits_64() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = drover();
    cmd.args(["serve", "--api-addr", &addr, "--data-dir"])
        .arg(dir.path());
    let r = run(cmd);
    assert_eq!(
        r.code,
        Some(EXIT_CONFIG),
        "stdout: {}\nstderr: {}",
        r.stdout,
        r.stderr
    );
    let error = r
        .stderr_lines()
        .into_iter()
        .find(|l| l.contains("error"))
        .unwrap_or_else(|| panic!("{}", r.stderr));
    assert!(error.contains("--api-addr"), "{error}");
    assert!(error.contains(&addr), "{error}");
    drop(taken);
}

/// A running `drover serve`, killed when dropped.
struct Serve {
    pid: u32,
    lines: Receiver<String>,
    exit: Receiver<ExitStatus>,
    stderr: Arc<Mutex<String>>,
    exited: bool,
}

impl Serve {
    fn start(addr: &str, data_dir: &Path) -> Serve {
        let mut child = drover()
            .args(["serve", "--api-addr", addr, "--data-dir"])
            .arg(data_dir)
            // Tests never bind fixed ports: every other listener on an ephemeral one.
            .args(["--http-addr", "127.0.0.1:0", "--https-addr", "127.0.0.1:0"])
            .args(["--mqtt-addr", "127.0.0.1:0", "--mqtts-addr", "127.0.0.1:0"])
            .args(["--integration-mqtt-addr", "127.0.0.1:0"])
            .args(["--integration-mqtts-addr", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id();
        let out = child.stdout.take().unwrap();
        let mut err = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = stderr.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Serve {
            pid,
            lines,
            exit: waiter(child),
            stderr,
            exited: false,
        }
    }

    /// Stdout lines up to and including the one containing `marker`.
    fn read_until(&self, marker: &str) -> Vec<String> {
        let end = Instant::now() + DEADLINE;
        let mut got = Vec::new();
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let done = line.contains(marker);
                    got.push(line);
                    if done {
                        return got;
                    }
                }
                Err(e) => panic!(
                    "no '{marker}' on stdout ({e}); stdout so far: {got:#?}\nstderr: {}",
                    self.stderr.lock().unwrap()
                ),
            }
        }
    }

    /// Sends SIGTERM and returns the exit status, which must come within 10 s.
    fn terminate(&mut self) -> ExitStatus {
        assert!(kill(self.pid, "-TERM"), "kill -TERM {}", self.pid);
        let status = self
            .exit
            .recv_timeout(Duration::from_secs(10))
            .unwrap_or_else(|_| {
                panic!(
                    "no exit within 10 s of SIGTERM; stderr: {}",
                    self.stderr.lock().unwrap()
                )
            });
        self.exited = true;
        status
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        if !self.exited && self.exit.try_recv().is_err() {
            kill(self.pid, "-KILL");
        }
    }
}

/// `GET whoami` with Basic `user:token`: status and body.
fn whoami(base: &str, user: &str, token: &str) -> (u16, serde_json::Value) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let r = reqwest::Client::new()
            .get(format!("{base}/api/admin/v1alpha1/user/whoami"))
            .basic_auth(user, Some(token))
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(serde_json::Value::Null))
    })
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[cfg(unix)]
#[test]
fn serve_banner_token_file_and_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let token_file = data.join("admin-token");

    // First start: a token is generated, shown once and saved.
    let addr = free_addr();
    let base = format!("http://{addr}");
    let mut s = Serve::start(&addr, &data);
    let banner = s.read_until("Press Ctrl+C");
    let text = banner.join("\n");
    assert!(
        text.contains(&base),
        "API URL {base} not in the banner:\n{text}"
    );
    let login = banner
        .iter()
        .find(|l| l.contains("drg login"))
        .unwrap_or_else(|| panic!("no drg login line:\n{text}"));
    assert!(
        login.contains(&format!("drg login {base} --access-token admin:")),
        "{login}"
    );
    assert!(token_file.exists(), "{} missing", token_file.display());
    assert_eq!(mode(&token_file), 0o600, "token file mode");
    let token = std::fs::read_to_string(&token_file)
        .unwrap()
        .trim()
        .to_string();
    assert!(token.starts_with("drg_"), "token file holds {token}");
    assert!(
        text.contains(&format!("admin:{token}")),
        "the generated token is shown once:\n{text}"
    );
    let (status, me) = whoami(&base, "admin", &token);
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["name"], "admin");
    assert_eq!(me["admin"], true);
    let status = s.terminate();
    assert_eq!(
        status.code(),
        Some(0),
        "exit status after SIGTERM: {status}"
    );

    // Second start on the same data directory: the same token, not shown again.
    let addr = free_addr();
    let base = format!("http://{addr}");
    let mut s = Serve::start(&addr, &data);
    let banner = s.read_until("Press Ctrl+C");
    let text = banner.join("\n");
    assert!(
        !text.contains(&token),
        "the token is printed again:\n{text}"
    );
    assert!(!text.to_lowercase().contains("shown once"), "{text}");
    assert!(
        text.contains(&format!("drg login {base} --access-token admin:")),
        "{text}"
    );
    assert_eq!(
        std::fs::read_to_string(&token_file).unwrap().trim(),
        token,
        "token file changed"
    );
    assert_eq!(mode(&token_file), 0o600);
    let (status, me) = whoami(&base, "admin", &token);
    assert_eq!(status, 200, "{me}");
    let status = s.terminate();
    assert_eq!(
        status.code(),
        Some(0),
        "exit status after SIGTERM: {status}"
    );
}

#[test]
fn listener_limits_have_defaults_layers_and_bounds() {
    let (r, c) = print_config(|_| {});
    for (key, default) in [
        ("http_header_timeout", "10s"),
        ("http_body_timeout", "30s"),
        ("http_idle_timeout", "1m"),
        ("mqtt_packet_timeout", "30s"),
    ] {
        assert_eq!(c[key].as_str(), Some(default), "{key}: {}", r.stdout);
    }
    for (key, default) in [
        ("http_max_connections", 10_000),
        ("api_max_connections", 1_000),
        ("mqtt_max_connections", 100_000),
        ("integration_max_connections", 1_000),
    ] {
        assert_eq!(c[key].as_integer(), Some(default), "{key}: {}", r.stdout);
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("drover.toml");
    std::fs::write(&file, "http_idle_timeout = 90\nhttp_body_timeout = 20\n").unwrap();
    let (_, c) = print_config(|cmd| {
        cmd.arg("--config")
            .arg(&file)
            .env("DROVER_HTTP_IDLE_TIMEOUT", "120")
            .args(["--api-max-connections", "50"]);
    });
    assert_eq!(c["http_idle_timeout"].as_str(), Some("2m"));
    assert_eq!(c["http_body_timeout"].as_str(), Some("20s"));
    assert_eq!(c["api_max_connections"].as_integer(), Some(50));

    for (flag, value, key) in [
        ("--http-header-timeout", "0", "http_header_timeout"),
        ("--http-idle-timeout", "100000", "http_idle_timeout"),
        ("--http-max-connections", "0", "http_max_connections"),
        ("--mqtt-packet-timeout", "0", "mqtt_packet_timeout"),
    ] {
        let mut cmd = drover();
        cmd.args(["serve", flag, value, "--data-dir"])
            .arg(dir.path().join("data"));
        let r = run(cmd);
        assert_eq!(r.code, Some(EXIT_CONFIG), "{flag} {value}: {}", r.stderr);
        let lines = r.stderr_lines();
        assert_eq!(lines.len(), 1, "one line on stderr: {lines:?}");
        assert!(
            lines[0].contains(key) && lines[0].contains(flag),
            "{}",
            lines[0]
        );
    }
}
