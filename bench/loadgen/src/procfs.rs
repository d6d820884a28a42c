//! The broker's CPU time and memory, from /proc.

use std::sync::OnceLock;

/// utime + stime of the process (all threads, including those that have exited), in ticks.
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command (which may hold spaces), from field 3 (state) on.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 on Linux).
pub fn clk_tck() -> u64 {
    static TCK: OnceLock<u64> = OnceLock::new();
    *TCK.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100)
    })
}

/// CPU seconds of the process.
pub fn cpu_secs(pid: Option<u32>) -> Option<f64> {
    Some(cpu_ticks(pid?)? as f64 / clk_tck() as f64)
}

/// A `/proc/<pid>/status` field in KiB (`VmRSS`, `VmHWM`).
pub fn status_kib(pid: Option<u32>, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{}/status", pid?)).ok()?;
    status.lines().find_map(|l| {
        let v = l.strip_prefix(key)?.strip_prefix(':')?;
        v.trim().trim_end_matches("kB").trim().parse().ok()
    })
}

/// Broker CPU seconds between two readings.
pub fn delta(before: Option<f64>, after: Option<f64>) -> f64 {
    match (before, after) {
        (Some(b), Some(a)) => a - b,
        _ => f64::NAN,
    }
}

pub fn kib(v: Option<u64>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "-".into())
}

/// Ticks of one core from /proc/stat: (busy, steal, total). Busy excludes idle and iowait and
/// includes steal.
pub fn core_ticks(cpu: Option<usize>) -> Option<(u64, u64, u64)> {
    let cpu = cpu?;
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let name = format!("cpu{cpu}");
    let line = stat
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name.as_str()))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let get = |i: usize| v.get(i).copied().unwrap_or(0);
    let (user, nice, system, idle, iowait, irq, softirq, steal) = (
        get(0),
        get(1),
        get(2),
        get(3),
        get(4),
        get(5),
        get(6),
        get(7),
    );
    let busy = user + nice + system + irq + softirq + steal;
    Some((busy, steal, busy + idle + iowait))
}

/// What else ran on the broker's core during a measurement: percent of the core's time that
/// was busy with something other than the broker (other processes, interrupts, steal), and the
/// steal percent alone. `broker_cpu_s` is the broker's own CPU time over the same interval.
pub fn core_noise(
    before: Option<(u64, u64, u64)>,
    after: Option<(u64, u64, u64)>,
    broker_cpu_s: f64,
) -> (f64, f64) {
    match (before, after) {
        (Some((b0, s0, t0)), Some((b1, s1, t1))) if t1 > t0 => {
            let total = (t1 - t0) as f64;
            let broker_ticks = if broker_cpu_s.is_finite() {
                broker_cpu_s * clk_tck() as f64
            } else {
                0.0
            };
            let other = ((b1 - b0) as f64 - broker_ticks).max(0.0);
            (other * 100.0 / total, (s1 - s0) as f64 * 100.0 / total)
        }
        _ => (f64::NAN, f64::NAN),
    }
}

/// CPU seconds (user + system) used by this process so far.
pub fn self_cpu_secs() -> f64 {
    cpu_ticks(std::process::id()).map_or(f64::NAN, |t| t as f64 / clk_tck() as f64)
}
