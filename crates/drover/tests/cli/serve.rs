//! `drover serve`: the banner, the generated administrator token file, and shutdown on SIGTERM.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::helpers::{drover, free_addr, kill, waiter, DEADLINE};

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
