//! The soak test's bookkeeping: which messages were acknowledged, which the durable consumer
//! and the final read of the stream saw, and counts of everything else (commands, registry
//! changes, consumers, errors).
//!
//! Every telemetry payload of the soak test is `{"sid":"<id>","p":"xxx…"}`; the id is unique in
//! the run: kind × 10^12 + device × 10^9 + sequence number.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use memchr::memmem::Finder;

pub const KIND_QOS1: u64 = 1;
pub const KIND_QOS0: u64 = 2;
pub const KIND_HTTP: u64 = 3;

pub fn sid(kind: u64, device: u64, seq: u64) -> u64 {
    kind * 1_000_000_000_000 + device * 1_000_000_000 + seq
}

pub fn kind_of(id: u64) -> u64 {
    id / 1_000_000_000_000
}

/// `{"sid":"<id>","p":"xxx…"}`, padded with `x` to `size` bytes (longer when the id needs it).
pub fn payload(id: u64, size: usize) -> Vec<u8> {
    let mut p = format!("{{\"sid\":\"{id}\",\"p\":\"").into_bytes();
    let pad = size.saturating_sub(p.len() + 2);
    p.extend(std::iter::repeat_n(b'x', pad));
    p.extend_from_slice(b"\"}");
    p
}

/// Finds the soak id in an event (a CloudEvent embedding the payload as `data`).
pub struct IdFinder(Finder<'static>);

impl IdFinder {
    pub fn new() -> IdFinder {
        IdFinder(Finder::new(b"\"sid\":\""))
    }

    pub fn find(&self, event: &[u8]) -> Option<u64> {
        let start = self.0.find(event)? + 7;
        let digits = event[start..].iter().take_while(|b| b.is_ascii_digit());
        let mut v = 0u64;
        let mut n = 0;
        for d in digits {
            v = v.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
            n += 1;
        }
        (n > 0 && event.get(start + n) == Some(&b'"')).then_some(v)
    }
}

/// Ids seen by one reader, with duplicates and events without an id counted.
#[derive(Default)]
pub struct Seen {
    pub ids: HashSet<u64>,
    pub duplicates: u64,
    pub other: u64,
}

impl Seen {
    pub fn record(&mut self, id: Option<u64>) {
        match id {
            Some(id) => {
                if !self.ids.insert(id) {
                    self.duplicates += 1;
                }
            }
            None => self.other += 1,
        }
    }

    /// (acknowledged ids found, acknowledged ids missing)
    pub fn coverage(&self, acked: &HashSet<u64>) -> (u64, u64) {
        let found = acked.iter().filter(|id| self.ids.contains(id)).count() as u64;
        (found, acked.len() as u64 - found)
    }

    pub fn of_kind(&self, kind: u64) -> u64 {
        self.ids.iter().filter(|&&id| kind_of(id) == kind).count() as u64
    }
}

#[derive(Default)]
pub struct Book {
    /// QoS 1 messages PUBACKed and HTTP messages answered 202.
    pub acked: HashSet<u64>,
    pub qos1_acked: u64,
    pub http_acked: u64,
    pub qos0_sent: u64,
    /// QoS 1 messages sent whose connection ended before the PUBACK.
    pub qos1_unconfirmed: u64,
    /// HTTP requests that got no 202 (error status, connection error, timeout).
    pub http_failed: u64,
    pub durable: Seen,
    pub worker_events: u64,
    pub ws_events: u64,
    pub workers_started: u64,
    pub ws_consumers_started: u64,
    pub commands_sent: u64,
    pub commands_answered: u64,
    pub commands_replied_by_devices: u64,
    pub registry_ok: u64,
    pub registry_failed: u64,
    pub device_connects: u64,
    pub durable_connects: u64,
    /// Every other outcome, counted by a short label (command statuses, errors by kind).
    pub counts: BTreeMap<String, u64>,
    /// The first message of each error label.
    pub first_errors: BTreeMap<String, String>,
}

impl Book {
    pub fn count(&mut self, label: &str) {
        *self.counts.entry(label.to_string()).or_default() += 1;
    }

    pub fn error(&mut self, label: &str, message: impl Into<String>) {
        self.count(label);
        self.first_errors
            .entry(label.to_string())
            .or_insert_with(|| message.into());
    }

    pub fn ack(&mut self, id: u64) {
        if self.acked.insert(id) {
            match kind_of(id) {
                KIND_QOS1 => self.qos1_acked += 1,
                _ => self.http_acked += 1,
            }
        } else {
            self.error("ack-twice", format!("id {id} acknowledged twice"));
        }
    }
}

#[derive(Clone, Default)]
pub struct Ledger(Arc<Mutex<Book>>);

impl Ledger {
    pub fn lock(&self) -> MutexGuard<'_, Book> {
        // A panic elsewhere while holding the lock ends the run anyway.
        match self.0.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_through_an_event() {
        let id = sid(KIND_HTTP, 7, 123456);
        let p = payload(id, 64);
        assert_eq!(p.len(), 64);
        let event = format!(
            "{{\"specversion\":\"1.0\",\"data\":{},\"id\":\"x\"}}",
            String::from_utf8(p).unwrap()
        );
        let f = IdFinder::new();
        assert_eq!(f.find(event.as_bytes()), Some(id));
        assert_eq!(kind_of(id), KIND_HTTP);
        assert_eq!(f.find(b"{\"data\":{\"n\":1}}"), None);
        assert_eq!(f.find(b"\"sid\":\"12"), None);
    }

    #[test]
    fn coverage_counts_missing_and_duplicates() {
        let mut s = Seen::default();
        for id in [1, 2, 2, 3] {
            s.record(Some(id));
        }
        s.record(None);
        let acked: HashSet<u64> = [1, 2, 4].into_iter().collect();
        assert_eq!(s.coverage(&acked), (2, 1));
        assert_eq!((s.duplicates, s.other), (1, 1));
    }
}
