//! Percentiles, and `summarize`: medians of `RESULT` lines as a Markdown table.

use crate::Args;

/// Percentile `p` (0..=100) of sorted values (nearest rank).
pub fn pct(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1] as f64
}

/// p50/p90/p99/p99.9/max of nanosecond samples, as microsecond fields named `<prefix>_p50_us` ...
pub fn latency_fields(prefix: &str, samples: &mut [u64]) -> Vec<(String, String)> {
    samples.sort_unstable();
    let us = |v: f64| crate::f1(v / 1000.0);
    vec![
        (format!("{prefix}_p50_us"), us(pct(samples, 50.0))),
        (format!("{prefix}_p90_us"), us(pct(samples, 90.0))),
        (format!("{prefix}_p99_us"), us(pct(samples, 99.0))),
        (format!("{prefix}_p999_us"), us(pct(samples, 99.9))),
        (
            format!("{prefix}_max_us"),
            us(samples.last().map(|&v| v as f64).unwrap_or(f64::NAN)),
        ),
    ]
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn fmt(v: f64) -> String {
    if !v.is_finite() {
        "-".into()
    } else if v.abs() >= 1000.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// `summarize --file F --by k1,k2 [--keys a,b] [--where k=v]`: one row per group (in order of
/// first appearance), the median of each key over the group's runs.
pub fn summarize(args: &Args) -> Result<(), String> {
    let file = args.opt("file").ok_or("--file is required")?;
    let text = std::fs::read_to_string(&file).map_err(|e| format!("{file}: {e}"))?;
    let by: Vec<String> = args
        .str("by", "label")
        .split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    let filter: Vec<(String, String)> = args
        .str("where", "")
        .split(',')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let rows: Vec<Vec<(String, String)>> = text
        .lines()
        .filter_map(|l| l.strip_prefix("RESULT "))
        .map(|l| {
            l.split_whitespace()
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<Vec<_>>()
        })
        .filter(|r| {
            filter
                .iter()
                .all(|(k, v)| r.iter().any(|(rk, rv)| rk == k && rv == v))
        })
        .collect();
    let get = |r: &Vec<(String, String)>, k: &str| {
        r.iter()
            .find(|(rk, _)| rk == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let keys: Vec<String> = match args.opt("keys") {
        Some(k) => k.split(',').map(str::to_string).collect(),
        None => {
            let mut ks: Vec<String> = Vec::new();
            for r in &rows {
                for (k, v) in r {
                    if !by.contains(k) && !ks.contains(k) && v.parse::<f64>().is_ok() {
                        ks.push(k.clone());
                    }
                }
            }
            ks
        }
    };
    type Row = Vec<(String, String)>;
    let mut groups: Vec<(Vec<String>, Vec<&Row>)> = Vec::new();
    for r in &rows {
        let g: Vec<String> = by.iter().map(|k| get(r, k)).collect();
        match groups.iter_mut().find(|(k, _)| *k == g) {
            Some((_, v)) => v.push(r),
            None => groups.push((g, vec![r])),
        }
    }
    let mut head = by.clone();
    head.push("runs".into());
    head.extend(keys.iter().cloned());
    println!("| {} |", head.join(" | "));
    println!("|{}", "---|".repeat(head.len()));
    for (g, rs) in &groups {
        let mut cells = g.clone();
        cells.push(rs.len().to_string());
        for k in &keys {
            let vals: Vec<f64> = rs.iter().filter_map(|r| get(r, k).parse().ok()).collect();
            cells.push(fmt(median(vals)));
        }
        println!("| {} |", cells.join(" | "));
    }
    Ok(())
}
