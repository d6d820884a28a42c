//! `soak-summary`: the server's RSS and open files over a soak run, per phase (the server
//! process before and after its restart), from the CSV `bench/soak.sh` samples every 10 s:
//!
//! `t_s,phase,pid,rss_kib,fds,threads,cpu_ticks,load1,busy_pct,steal_pct`
//!
//! Verdict per phase, on the last two thirds of it (the first third is warm-up: caches,
//! buffers and the allocator's pools fill): RSS is **flat** when its least-squares slope is
//! below max(2 MiB, 2% of the phase's median RSS) per 10 minutes and the open files' slope is
//! below 10 per 10 minutes; otherwise **growing**. Phases with fewer than 6 samples in that
//! window are **too short** to tell.

use crate::{f1, Args};

struct Sample {
    t: f64,
    phase: u32,
    rss_kib: f64,
    fds: f64,
    cpu_ticks: f64,
    load1: f64,
    busy_pct: f64,
    steal_pct: f64,
}

fn parse(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| l.starts_with(|c: char| c.is_ascii_digit()))
        .filter_map(|l| {
            let v: Vec<f64> = l
                .split(',')
                .map(|x| x.trim().parse().unwrap_or(f64::NAN))
                .collect();
            (v.len() >= 10 && v[3].is_finite()).then(|| Sample {
                t: v[0],
                phase: v[1] as u32,
                rss_kib: v[3],
                fds: v[4],
                cpu_ticks: v[6],
                load1: v[7],
                busy_pct: v[8],
                steal_pct: v[9],
            })
        })
        .collect()
}

/// Least-squares slope of y over x.
pub fn slope(xy: &[(f64, f64)]) -> f64 {
    let n = xy.len() as f64;
    if xy.len() < 2 {
        return f64::NAN;
    }
    let (mx, my) = (
        xy.iter().map(|p| p.0).sum::<f64>() / n,
        xy.iter().map(|p| p.1).sum::<f64>() / n,
    );
    let sxy: f64 = xy.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let sxx: f64 = xy.iter().map(|p| (p.0 - mx) * (p.0 - mx)).sum();
    if sxx == 0.0 {
        f64::NAN
    } else {
        sxy / sxx
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn mean(v: impl Iterator<Item = f64>) -> f64 {
    let (s, n) = v
        .filter(|x| x.is_finite())
        .fold((0.0, 0u32), |(s, n), x| (s + x, n + 1));
    if n == 0 {
        f64::NAN
    } else {
        s / f64::from(n)
    }
}

/// One phase's line and verdict.
fn phase(samples: &[&Sample], clk_tck: f64) -> (String, &'static str) {
    let first = samples[0];
    let last = samples[samples.len() - 1];
    let max_rss = samples.iter().map(|s| s.rss_kib).fold(0.0, f64::max);
    let max_fds = samples.iter().map(|s| s.fds).fold(0.0, f64::max);
    let from = first.t + (last.t - first.t) / 3.0;
    let tail: Vec<&&Sample> = samples.iter().filter(|s| s.t >= from).collect();
    let per10 = 600.0;
    let rss_slope = slope(&tail.iter().map(|s| (s.t, s.rss_kib)).collect::<Vec<_>>()) * per10;
    let fd_slope = slope(&tail.iter().map(|s| (s.t, s.fds)).collect::<Vec<_>>()) * per10;
    let med = median(tail.iter().map(|s| s.rss_kib).collect());
    let limit = (2.0 * 1024.0f64).max(0.02 * med);
    let verdict = if tail.len() < 6 {
        "too-short"
    } else if rss_slope < limit && fd_slope < 10.0 {
        "flat"
    } else {
        "growing"
    };
    let cpu_s = (last.cpu_ticks - first.cpu_ticks) / clk_tck;
    let line = format!(
        "phase={} samples={} t={:.0}..{:.0}s rss_mib first={} last={} max={} fds first={} last={} max={} \
         slope_last2/3: rss_kib_per_10min={} (limit {:.0}) fds_per_10min={} (limit 10) server_cpu_s={} verdict={verdict}",
        first.phase,
        samples.len(),
        first.t,
        last.t,
        f1(first.rss_kib / 1024.0),
        f1(last.rss_kib / 1024.0),
        f1(max_rss / 1024.0),
        first.fds,
        last.fds,
        max_fds,
        f1(rss_slope),
        limit,
        f1(fd_slope),
        f1(cpu_s),
    );
    (line, verdict)
}

pub fn summary(args: &Args) -> Result<(), String> {
    let path = args.opt("csv").ok_or("--csv is required")?;
    let text = std::fs::read_to_string(&path).map_err(|e| format!("read {path}: {e}"))?;
    let samples = parse(&text);
    if samples.is_empty() {
        return Err(format!("{path}: no samples"));
    }
    let clk = crate::procfs::clk_tck() as f64;
    let mut phases: Vec<u32> = samples.iter().map(|s| s.phase).collect();
    phases.dedup();
    let mut verdicts = Vec::new();
    for p in phases {
        let ps: Vec<&Sample> = samples.iter().filter(|s| s.phase == p).collect();
        let (line, v) = phase(&ps, clk);
        println!("SOAK-MEMORY {line}");
        verdicts.push(v);
    }
    let overall = if verdicts.contains(&"growing") {
        "growing"
    } else if verdicts.iter().all(|v| *v == "flat") {
        "flat"
    } else {
        "too-short"
    };
    println!(
        "SOAK-NOISE samples={} machine_busy_pct mean={} max={} steal_pct mean={} max={} load1 mean={} max={}",
        samples.len(),
        f1(mean(samples.iter().map(|s| s.busy_pct))),
        f1(samples.iter().map(|s| s.busy_pct).fold(0.0, f64::max)),
        f1(mean(samples.iter().map(|s| s.steal_pct))),
        f1(samples.iter().map(|s| s.steal_pct).fold(0.0, f64::max)),
        f1(mean(samples.iter().map(|s| s.load1))),
        f1(samples.iter().map(|s| s.load1).fold(0.0, f64::max)),
    );
    println!(
        "SOAK-VERDICT memory={overall} (per phase, last 2/3: RSS slope < max(2 MiB, 2% of median RSS) per 10 min and fd slope < 10 per 10 min)"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slope_of_a_line() {
        let xy: Vec<(f64, f64)> = (0..10)
            .map(|i| (f64::from(i) * 10.0, 5.0 + f64::from(i) * 2.0))
            .collect();
        assert!((slope(&xy) - 0.2).abs() < 1e-9);
    }

    #[test]
    fn flat_and_growing_phases() {
        let mk = |t: f64, rss: f64| Sample {
            t,
            phase: 1,
            rss_kib: rss,
            fds: 40.0,
            cpu_ticks: t,
            load1: 1.0,
            busy_pct: 50.0,
            steal_pct: 0.0,
        };
        let flat: Vec<Sample> = (0..60)
            .map(|i| mk(f64::from(i) * 10.0, 50_000.0 + f64::from(i % 3)))
            .collect();
        let refs: Vec<&Sample> = flat.iter().collect();
        assert_eq!(phase(&refs, 100.0).1, "flat");
        // 100 KiB per 10 s = 6000 KiB per 10 min, above max(2048, 2% of ~56 MiB).
        let grow: Vec<Sample> = (0..60)
            .map(|i| mk(f64::from(i) * 10.0, 50_000.0 + f64::from(i) * 100.0))
            .collect();
        let refs: Vec<&Sample> = grow.iter().collect();
        assert_eq!(phase(&refs, 100.0).1, "growing");
    }
}
