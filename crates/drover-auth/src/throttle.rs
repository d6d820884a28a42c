//! Defence against guessing credentials, shared by every place that checks one (device HTTP and
//! MQTT, the management API, the MQTT and WebSocket integrations).
//!
//! Two rules, with different purposes:
//!
//! - **Per source address: lockout.** After [`ThrottleConfig::free_failures`] failed attempts
//!   from one address (IPv6: one /64), further attempts from it are refused *without being
//!   checked* for a delay that doubles with every further failure, from
//!   [`ThrottleConfig::base_delay`] up to [`ThrottleConfig::max_delay`]. Attempts refused while
//!   locked out do not count, so the lockout ends on its own; a success from the address forgets
//!   its failures. This is what stops one client from trying thousands of secrets a second.
//! - **Per identity (device, user): a slower "no".** After `free_failures` failures for one
//!   identity, from any addresses, the *answer* to each further failed attempt waits (doubling,
//!   up to [`ThrottleConfig::max_identity_delay`]). Attempts are always checked and a right
//!   credential always succeeds at once, from any address: an attacker cannot lock the rightful
//!   owner out, but guessing one identity from many addresses slows down.
//!
//! Entries are forgotten [`ThrottleConfig::forget_after`] after their last failure, and the
//! tables are bounded ([`ThrottleConfig::max_entries`]; when full, the oldest entries go). On a
//! cluster each node throttles on its own.
//!
//! Failed attempts are also where logs get flooded: [`Throttle::admit_log`] lets a bounded
//! number of failure lines through per interval and reports how many it held back.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Settings of a [`Throttle`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThrottleConfig {
    /// Off: nothing is throttled (failures are still counted and their logs rate-limited).
    pub enabled: bool,
    /// Failures allowed (per address, per identity) before delays start. Default 5.
    pub free_failures: u32,
    /// The first delay; each further failure doubles it. Default 1 s.
    pub base_delay: Duration,
    /// Longest lockout of an address. Default 60 s.
    pub max_delay: Duration,
    /// Longest wait of a failed attempt's answer for an identity under attack. Default 2 s.
    pub max_identity_delay: Duration,
    /// Failures older than this are forgotten. Default 15 min.
    pub forget_after: Duration,
    /// Most addresses and identities remembered (each). Default 100 000.
    pub max_entries: usize,
    /// Failure log lines let through per [`log_interval`](Self::log_interval). Default 20.
    pub log_burst: u32,
    /// Default 10 s.
    pub log_interval: Duration,
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        ThrottleConfig {
            enabled: true,
            free_failures: 5,
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(60),
            max_identity_delay: Duration::from_secs(2),
            forget_after: Duration::from_secs(15 * 60),
            max_entries: 100_000,
            log_burst: 20,
            log_interval: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    failures: u32,
    last_failure: Instant,
    blocked_until: Option<Instant>,
}

/// A table of failure counts, bounded.
#[derive(Debug)]
struct Table<K> {
    entries: HashMap<K, Entry>,
}

impl<K> Default for Table<K> {
    fn default() -> Self {
        Table {
            entries: HashMap::new(),
        }
    }
}

impl<K: std::hash::Hash + Eq + Clone> Table<K> {
    fn get(&mut self, key: &K, now: Instant, forget: Duration) -> Option<Entry> {
        let e = *self.entries.get(key)?;
        if now.saturating_duration_since(e.last_failure) > forget
            && e.blocked_until.is_none_or(|b| b <= now)
        {
            self.entries.remove(key);
            return None;
        }
        Some(e)
    }

    fn fail(&mut self, key: K, now: Instant, cfg: &ThrottleConfig) -> Entry {
        if self.entries.len() >= cfg.max_entries && !self.entries.contains_key(&key) {
            self.evict(now, cfg);
        }
        let e = self.entries.entry(key).or_insert(Entry {
            failures: 0,
            last_failure: now,
            blocked_until: None,
        });
        if now.saturating_duration_since(e.last_failure) > cfg.forget_after {
            e.failures = 0;
        }
        e.failures = e.failures.saturating_add(1);
        e.last_failure = now;
        *e
    }

    /// Makes room: forgets what is stale, else the oldest tenth.
    fn evict(&mut self, now: Instant, cfg: &ThrottleConfig) {
        self.entries
            .retain(|_, e| now.saturating_duration_since(e.last_failure) <= cfg.forget_after);
        if self.entries.len() >= cfg.max_entries {
            let mut ages: Vec<Instant> = self.entries.values().map(|e| e.last_failure).collect();
            ages.sort_unstable();
            let cut = ages[ages.len() / 10];
            self.entries.retain(|_, e| e.last_failure > cut);
        }
    }
}

/// The delay after `failures`: none up to `free`, then `base` doubling, at most `max`.
fn delay(failures: u32, cfg: &ThrottleConfig, max: Duration) -> Duration {
    if failures <= cfg.free_failures {
        return Duration::ZERO;
    }
    let doublings = (failures - cfg.free_failures - 1).min(30);
    cfg.base_delay
        .checked_mul(1 << doublings)
        .unwrap_or(max)
        .min(max)
}

/// The key of an address: IPv4 as is, IPv6 by its /64 (what one subscriber gets).
fn source_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut seg = v6.segments();
                seg[4..].fill(0);
                IpAddr::V6(seg.into())
            }
        },
        v4 => v4,
    }
}

/// An attempt refused without being checked: the source is locked out for this long still.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("too many failed authentication attempts from this address; retry in {} s", retry_after.as_secs().max(1))]
pub struct Throttled {
    pub retry_after: Duration,
}

#[derive(Debug)]
struct LogWindow {
    started: Instant,
    logged: u32,
    held_back: u64,
}

/// Failed-authentication throttling and log rate limiting (see the [module docs](self)).
#[derive(Debug)]
pub struct Throttle {
    cfg: ThrottleConfig,
    sources: Mutex<Table<IpAddr>>,
    identities: Mutex<Table<String>>,
    failures: AtomicU64,
    refused: AtomicU64,
    log: Mutex<LogWindow>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Default for Throttle {
    fn default() -> Self {
        Throttle::new(ThrottleConfig::default())
    }
}

impl Throttle {
    pub fn new(cfg: ThrottleConfig) -> Self {
        Throttle {
            cfg,
            sources: Mutex::new(Table::default()),
            identities: Mutex::new(Table::default()),
            failures: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            log: Mutex::new(LogWindow {
                started: Instant::now(),
                logged: 0,
                held_back: 0,
            }),
        }
    }

    /// A throttle that throttles nothing (failures are still counted, logs still limited).
    pub fn disabled() -> Self {
        Throttle::new(ThrottleConfig {
            enabled: false,
            ..ThrottleConfig::default()
        })
    }

    pub fn config(&self) -> &ThrottleConfig {
        &self.cfg
    }

    /// Before checking an attempt from `source`: refused while the source is locked out.
    pub fn check(&self, source: IpAddr) -> Result<(), Throttled> {
        if !self.cfg.enabled {
            return Ok(());
        }
        let now = Instant::now();
        let entry = lock(&self.sources).get(&source_key(source), now, self.cfg.forget_after);
        match entry.and_then(|e| e.blocked_until).filter(|&b| b > now) {
            Some(until) => {
                self.refused.fetch_add(1, Ordering::Relaxed);
                Err(Throttled {
                    retry_after: until - now,
                })
            }
            None => Ok(()),
        }
    }

    /// An attempt from `source` for `identity` failed: counts it, locks the source out when it
    /// is over its free failures, and returns how long the answer should wait (the identity's
    /// delay; zero while it is within its free failures). Identities are namespaced by the
    /// caller (`device:<app>/<device>`, `user:<name>`).
    pub fn failed(&self, source: IpAddr, identity: &str) -> Duration {
        self.failures.fetch_add(1, Ordering::Relaxed);
        if !self.cfg.enabled {
            return Duration::ZERO;
        }
        let now = Instant::now();
        let e = lock(&self.identities).fail(identity.to_string(), now, &self.cfg);
        let answer_after = delay(e.failures, &self.cfg, self.cfg.max_identity_delay);
        let mut sources = lock(&self.sources);
        let e = sources.fail(source_key(source), now, &self.cfg);
        let lockout = delay(e.failures, &self.cfg, self.cfg.max_delay);
        if !lockout.is_zero() {
            if let Some(entry) = sources.entries.get_mut(&source_key(source)) {
                // The lockout starts when the (possibly delayed) answer goes out.
                entry.blocked_until = Some(now + answer_after + lockout);
            }
        }
        answer_after
    }

    /// An attempt from `source` for `identity` succeeded: both are forgiven.
    pub fn succeeded(&self, source: IpAddr, identity: &str) {
        if !self.cfg.enabled {
            return;
        }
        lock(&self.sources).entries.remove(&source_key(source));
        lock(&self.identities).entries.remove(identity);
    }

    /// Failed attempts seen since start.
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// Attempts refused unchecked (locked-out sources) since start.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Whether a failure may be logged now: `Some(n)` when it may, `n` being the failures whose
    /// lines were held back since the last line (say so in the line); `None` when this one is
    /// held back.
    pub fn admit_log(&self) -> Option<u64> {
        let now = Instant::now();
        let mut w = lock(&self.log);
        if now.saturating_duration_since(w.started) >= self.cfg.log_interval {
            w.started = now;
            w.logged = 0;
        }
        if w.logged < self.cfg.log_burst {
            w.logged += 1;
            Some(std::mem::take(&mut w.held_back))
        } else {
            w.held_back += 1;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    fn cfg() -> ThrottleConfig {
        ThrottleConfig {
            free_failures: 3,
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(8),
            max_identity_delay: Duration::from_secs(2),
            ..ThrottleConfig::default()
        }
    }

    #[test]
    fn delays_double_up_to_the_cap() {
        let c = cfg();
        let d: Vec<u64> = (1..=9)
            .map(|n| delay(n, &c, c.max_delay).as_secs())
            .collect();
        assert_eq!(d, vec![0, 0, 0, 1, 2, 4, 8, 8, 8]);
        assert_eq!(delay(u32::MAX, &c, c.max_delay), c.max_delay);
    }

    #[test]
    fn a_source_is_locked_out_after_its_free_failures_and_forgiven_on_success() {
        let t = Throttle::new(cfg());
        let a = ip("192.0.2.1");
        for _ in 0..3 {
            assert!(t.check(a).is_ok());
            assert_eq!(t.failed(a, "device:app/d"), Duration::ZERO);
        }
        assert!(t.check(a).is_ok(), "free failures do not lock");
        t.failed(a, "device:app/d");
        let e = t.check(a).expect_err("locked out");
        // The identity's answer waits 1 s, then the lockout of 1 s runs.
        assert!(e.retry_after <= Duration::from_secs(2) && e.retry_after > Duration::from_secs(1));
        assert_eq!(t.refused(), 1);
        // Another address is not affected, and succeeds for the same identity at once.
        assert!(t.check(ip("192.0.2.2")).is_ok());
        t.succeeded(ip("192.0.2.2"), "device:app/d");
        // The locked address stays locked until its delay ends; a success elsewhere does not
        // unlock it, a success from it (after the delay) forgets it.
        assert!(t.check(a).is_err());
        assert_eq!(t.failures(), 4);
    }

    #[test]
    fn identities_get_a_slower_no_but_never_a_lockout() {
        let t = Throttle::new(cfg());
        let mut delays = Vec::new();
        for i in 0..7 {
            // A different source each time: no source is locked out.
            let src = IpAddr::V4(std::net::Ipv4Addr::new(198, 51, 100, i));
            assert!(t.check(src).is_ok());
            delays.push(t.failed(src, "user:alice").as_secs());
        }
        assert_eq!(delays, vec![0, 0, 0, 1, 2, 2, 2]);
        t.succeeded(ip("203.0.113.9"), "user:alice");
        assert_eq!(t.failed(ip("203.0.113.10"), "user:alice"), Duration::ZERO);
    }

    #[test]
    fn ipv6_sources_count_per_64_and_mapped_v4_as_v4() {
        let t = Throttle::new(cfg());
        for i in 1..=4u16 {
            let src = IpAddr::V6(std::net::Ipv6Addr::new(0x2001, 0xdb8, 0, 1, 0, 0, 0, i));
            t.failed(src, "x");
        }
        assert!(t.check(ip("2001:db8:0:1::ffff")).is_err(), "same /64");
        assert!(t.check(ip("2001:db8:0:2::1")).is_ok(), "another /64");
        for _ in 0..4 {
            t.failed(ip("::ffff:192.0.2.7"), "y");
        }
        assert!(t.check(ip("192.0.2.7")).is_err());
    }

    #[test]
    fn disabled_counts_but_never_delays() {
        let t = Throttle::disabled();
        for _ in 0..100 {
            assert_eq!(t.failed(ip("192.0.2.1"), "x"), Duration::ZERO);
            assert!(t.check(ip("192.0.2.1")).is_ok());
        }
        assert_eq!(t.failures(), 100);
    }

    #[test]
    fn tables_stay_bounded() {
        let t = Throttle::new(ThrottleConfig {
            max_entries: 100,
            ..cfg()
        });
        for i in 0..10_000u32 {
            t.failed(IpAddr::V4(i.into()), &format!("id{i}"));
        }
        assert!(lock(&t.sources).entries.len() <= 100);
        assert!(lock(&t.identities).entries.len() <= 100);
    }

    #[test]
    fn log_lines_are_limited_per_interval() {
        let t = Throttle::new(ThrottleConfig {
            log_burst: 3,
            log_interval: Duration::from_secs(3600),
            ..cfg()
        });
        let admitted: Vec<Option<u64>> = (0..6).map(|_| t.admit_log()).collect();
        assert_eq!(admitted, vec![Some(0), Some(0), Some(0), None, None, None]);
    }
}
