//! Running the `drover` binary with a deadline, and reading what it printed.

use std::io::Read;
use std::net::TcpListener;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::Duration;

/// Exit code of configuration problems (EX_USAGE).
pub(crate) const EXIT_CONFIG: i32 = 64;

/// How long a command may take before the test gives up (and kills it).
pub(crate) const DEADLINE: Duration = Duration::from_secs(30);

/// The binary, with no `DROVER_*` settings inherited from the environment.
pub(crate) fn drover() -> Command {
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

pub(crate) fn kill(pid: u32, signal: &str) -> bool {
    Command::new("kill")
        .args([signal, &pid.to_string()])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Waits for the child in a thread, so that waiting can time out.
pub(crate) fn waiter(mut child: Child) -> Receiver<ExitStatus> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        if let Ok(s) = child.wait() {
            let _ = tx.send(s);
        }
    });
    rx
}

pub(crate) fn read_all(mut r: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = r.read_to_string(&mut s);
        s
    })
}

pub(crate) struct Run {
    pub(crate) code: Option<i32>,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

impl Run {
    /// The non-empty lines of stderr.
    pub(crate) fn stderr_lines(&self) -> Vec<&str> {
        self.stderr
            .lines()
            .filter(|l| !l.trim().is_empty())
            .collect()
    }
}

/// Runs a command that must finish within the deadline.
pub(crate) fn run(mut cmd: Command) -> Run {
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

pub(crate) fn print_config(configure: impl FnOnce(&mut Command)) -> (Run, toml::Table) {
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

pub(crate) fn free_addr() -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}
