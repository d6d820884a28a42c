//! Message-layer reliability of CoAP over UDP (RFC 7252 §4), as pure state a server drives with
//! its own clock and randomness (no sockets, no timers, no global state): the transmission
//! parameters and the times derived from them ([`TransmissionParameters`]), message-id
//! generation ([`MessageIds`]), deduplication of received messages with the response to send
//! again ([`DedupCache`]), and the retransmission schedule of a confirmable message with
//! exponential back-off ([`Retransmission`]).

use bytes::Bytes;
use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::time::{Duration, Instant};

/// RFC 7252 §4.8's transmission parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TransmissionParameters {
    /// ACK_TIMEOUT (2 s).
    pub ack_timeout: Duration,
    /// ACK_RANDOM_FACTOR (1.5), at least 1.
    pub ack_random_factor: f64,
    /// MAX_RETRANSMIT (4).
    pub max_retransmit: u32,
    /// MAX_LATENCY (100 s), the assumed longest time a datagram is in flight.
    pub max_latency: Duration,
}

impl Default for TransmissionParameters {
    fn default() -> TransmissionParameters {
        TransmissionParameters {
            ack_timeout: Duration::from_secs(2),
            ack_random_factor: 1.5,
            max_retransmit: 4,
            max_latency: Duration::from_secs(100),
        }
    }
}

impl TransmissionParameters {
    /// MAX_TRANSMIT_SPAN: from the first transmission to the last retransmission (45 s).
    pub fn max_transmit_span(&self) -> Duration {
        self.ack_timeout
            .mul_f64(f64::from((1u32 << self.max_retransmit.min(20)) - 1) * self.ack_random_factor)
    }
    /// MAX_TRANSMIT_WAIT: from the first transmission to giving up (93 s).
    pub fn max_transmit_wait(&self) -> Duration {
        self.ack_timeout.mul_f64(
            f64::from((1u32 << (self.max_retransmit.min(20) + 1)) - 1) * self.ack_random_factor,
        )
    }
    /// PROCESSING_DELAY (= ACK_TIMEOUT).
    pub fn processing_delay(&self) -> Duration {
        self.ack_timeout
    }
    /// EXCHANGE_LIFETIME: how long a confirmable message id is remembered (247 s).
    pub fn exchange_lifetime(&self) -> Duration {
        self.max_transmit_span() + 2 * self.max_latency + self.processing_delay()
    }
    /// NON_LIFETIME: how long a non-confirmable message id is remembered (145 s).
    pub fn non_lifetime(&self) -> Duration {
        self.max_transmit_span() + self.max_latency
    }
}

/// Message ids for messages this endpoint sends: sequential from a random start (RFC 7252
/// §4.4), so that an id is reused only after 65536 others.
#[derive(Debug, Clone)]
pub struct MessageIds {
    next: u16,
}

impl MessageIds {
    /// Starts at `random_start` (give it random bits: ids must not be predictable across
    /// restarts).
    pub fn new(random_start: u16) -> MessageIds {
        MessageIds { next: random_start }
    }
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> u16 {
        let id = self.next;
        self.next = self.next.wrapping_add(1);
        id
    }
}

/// What the deduplication cache says of a received message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// First time: process it, then [`DedupCache::respond`] with what was sent back.
    New,
    /// A duplicate still being processed: send nothing (the response will go out once).
    InProgress,
    /// A duplicate already answered: send these bytes again (RFC 7252 §4.5).
    Answered(Bytes),
    /// A duplicate of a message answered with nothing (e.g. a NON): ignore it.
    Ignored,
    /// The cache is full (a flood, or too many peers): refuse the message (5.03 with Max-Age,
    /// or drop it) without processing it.
    Full,
}

#[derive(Debug, Clone)]
enum Entry {
    InProgress,
    Answered(Bytes),
    Ignored,
}

/// Remembers (peer, message id) of received messages for EXCHANGE_LIFETIME (confirmable) or
/// NON_LIFETIME (non-confirmable), with the response sent, so that retransmissions are not
/// processed twice. Bounded: at most `capacity` entries in all and `per_peer` per peer.
#[derive(Debug)]
pub struct DedupCache<P: Eq + Hash + Clone> {
    /// The entry and when it expires.
    entries: HashMap<(P, u16), (Instant, Entry)>,
    per_peer_count: HashMap<P, usize>,
    /// Expiry order, one queue per lifetime (each queue is in insertion = expiry order).
    confirmable: VecDeque<(Instant, (P, u16))>,
    non_confirmable: VecDeque<(Instant, (P, u16))>,
    capacity: usize,
    per_peer: usize,
    params: TransmissionParameters,
}

impl<P: Eq + Hash + Clone> DedupCache<P> {
    pub fn new(params: TransmissionParameters, capacity: usize, per_peer: usize) -> DedupCache<P> {
        DedupCache {
            entries: HashMap::new(),
            per_peer_count: HashMap::new(),
            confirmable: VecDeque::new(),
            non_confirmable: VecDeque::new(),
            capacity,
            per_peer,
            params,
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Looks a received message up, and remembers it if it is new. `confirmable` picks the
    /// lifetime.
    pub fn check(&mut self, peer: &P, message_id: u16, confirmable: bool, now: Instant) -> Seen {
        self.expire(now);
        let key = (peer.clone(), message_id);
        if let Some((_, entry)) = self.entries.get(&key) {
            return match entry {
                Entry::InProgress => Seen::InProgress,
                Entry::Answered(bytes) => Seen::Answered(bytes.clone()),
                Entry::Ignored => Seen::Ignored,
            };
        }
        let count = self.per_peer_count.get(peer).copied().unwrap_or(0);
        if self.entries.len() >= self.capacity || count >= self.per_peer {
            return Seen::Full;
        }
        let (queue, lifetime) = if confirmable {
            (&mut self.confirmable, self.params.exchange_lifetime())
        } else {
            (&mut self.non_confirmable, self.params.non_lifetime())
        };
        queue.push_back((now + lifetime, key.clone()));
        self.entries
            .insert(key, (now + lifetime, Entry::InProgress));
        *self.per_peer_count.entry(peer.clone()).or_insert(0) += 1;
        Seen::New
    }

    /// Records what was sent in answer (`None`: nothing, e.g. for a NON processed).
    pub fn respond(&mut self, peer: &P, message_id: u16, response: Option<Bytes>) {
        if let Some((_, entry)) = self.entries.get_mut(&(peer.clone(), message_id)) {
            *entry = match response {
                Some(bytes) => Entry::Answered(bytes),
                None => Entry::Ignored,
            };
        }
    }

    /// Forgets a message whose processing failed before anything was sent, so that a
    /// retransmission is processed again.
    pub fn forget(&mut self, peer: &P, message_id: u16) {
        if self.entries.remove(&(peer.clone(), message_id)).is_some() {
            self.decrement(peer);
        }
        // Its queue slot expires harmlessly later (only an entry of the same expiry goes).
    }

    fn decrement(&mut self, peer: &P) {
        if let Some(count) = self.per_peer_count.get_mut(peer) {
            *count -= 1;
            if *count == 0 {
                self.per_peer_count.remove(peer);
            }
        }
    }

    /// Drops entries whose lifetime ended by `now` (called by [`DedupCache::check`]).
    pub fn expire(&mut self, now: Instant) {
        for confirmable in [true, false] {
            loop {
                let queue = if confirmable {
                    &mut self.confirmable
                } else {
                    &mut self.non_confirmable
                };
                match queue.front() {
                    Some((expires, _)) if *expires <= now => {}
                    _ => break,
                }
                let Some((expires, key)) = queue.pop_front() else {
                    break;
                };
                // A key forgotten and seen again has a slot of its own, expiring later.
                if self.entries.get(&key).is_some_and(|(e, _)| *e == expires) {
                    self.entries.remove(&key);
                    self.decrement(&key.0);
                }
            }
        }
    }
}

/// What to do when a confirmable message's timer fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Not yet: the timer fires at this instant.
    Wait(Instant),
    /// Send the message again (retransmission number `attempt`, 1-based) and wait until the
    /// instant.
    Retransmit { attempt: u32, next: Instant },
    /// MAX_RETRANSMIT retransmissions went unacknowledged: give up (the peer is unreachable).
    GiveUp,
}

/// The retransmission schedule of one confirmable message (RFC 7252 §4.2): the first timeout
/// is random in [ACK_TIMEOUT, ACK_TIMEOUT × ACK_RANDOM_FACTOR], each later one doubles, and
/// after MAX_RETRANSMIT retransmissions the sender gives up. Stop driving it on the ACK or RST.
#[derive(Debug, Clone)]
pub struct Retransmission {
    deadline: Instant,
    timeout: Duration,
    retransmits: u32,
    max_retransmit: u32,
}

impl Retransmission {
    /// Starts the schedule at the first transmission, `now`. `random` in [0, 1] picks the
    /// initial timeout within its range.
    pub fn new(params: &TransmissionParameters, now: Instant, random: f64) -> Retransmission {
        let factor = 1.0 + random.clamp(0.0, 1.0) * (params.ack_random_factor - 1.0).max(0.0);
        let timeout = params.ack_timeout.mul_f64(factor);
        Retransmission {
            deadline: now + timeout,
            timeout,
            retransmits: 0,
            max_retransmit: params.max_retransmit,
        }
    }

    /// When the timer next fires.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }
    /// Retransmissions so far.
    pub fn retransmits(&self) -> u32 {
        self.retransmits
    }

    /// Called when the timer fires (or any time): what to do at `now`.
    pub fn on_timer(&mut self, now: Instant) -> Step {
        if now < self.deadline {
            return Step::Wait(self.deadline);
        }
        if self.retransmits >= self.max_retransmit {
            return Step::GiveUp;
        }
        self.retransmits += 1;
        self.timeout *= 2;
        self.deadline = now.max(self.deadline) + self.timeout;
        Step::Retransmit {
            attempt: self.retransmits,
            next: self.deadline,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn derived_times_match_rfc_7252() {
        let p = TransmissionParameters::default();
        assert_eq!(p.max_transmit_span(), Duration::from_secs(45));
        assert_eq!(p.max_transmit_wait(), Duration::from_secs(93));
        assert_eq!(p.exchange_lifetime(), Duration::from_secs(247));
        assert_eq!(p.non_lifetime(), Duration::from_secs(145));
    }

    #[test]
    fn message_ids_wrap() {
        let mut ids = MessageIds::new(0xfffe);
        assert_eq!([ids.next(), ids.next(), ids.next()], [0xfffe, 0xffff, 0]);
    }

    #[test]
    fn retransmission_backs_off_exponentially_then_gives_up() {
        let p = TransmissionParameters::default();
        let t0 = Instant::now();
        let s = Duration::from_secs;
        // The smallest initial timeout: 2, 4, 8, 16, 32 s.
        let mut r = Retransmission::new(&p, t0, 0.0);
        assert_eq!(r.on_timer(t0 + s(1)), Step::Wait(t0 + s(2)));
        let mut at = t0 + s(2);
        for (attempt, wait) in [(1, 4), (2, 8), (3, 16), (4, 32)] {
            assert_eq!(
                r.on_timer(at),
                Step::Retransmit {
                    attempt,
                    next: at + s(wait)
                }
            );
            at += s(wait);
        }
        assert_eq!(at, t0 + s(62));
        assert_eq!(r.on_timer(at), Step::GiveUp);
        // The largest: 3 s, and giving up after MAX_TRANSMIT_WAIT.
        let mut r = Retransmission::new(&p, t0, 1.0);
        assert_eq!(r.deadline(), t0 + s(3));
        let mut last = Step::Wait(t0);
        while let Step::Retransmit { next, .. } | Step::Wait(next) = r.on_timer(r.deadline()) {
            last = Step::Wait(next);
        }
        assert_eq!(last, Step::Wait(t0 + p.max_transmit_wait()));
        assert_eq!(r.retransmits(), 4);
    }

    #[test]
    fn dedup_remembers_for_the_exchange_lifetime() {
        let p = TransmissionParameters::default();
        let t0 = Instant::now();
        let mut c: DedupCache<&str> = DedupCache::new(p, 100, 3);
        assert_eq!(c.check(&"a", 1, true, t0), Seen::New);
        assert_eq!(c.check(&"a", 1, true, t0), Seen::InProgress);
        c.respond(&"a", 1, Some(Bytes::from_static(b"ack")));
        assert_eq!(
            c.check(&"a", 1, true, t0),
            Seen::Answered(Bytes::from_static(b"ack"))
        );
        // Another peer's same id is another message.
        assert_eq!(c.check(&"b", 1, true, t0), Seen::New);
        assert_eq!(c.check(&"a", 2, false, t0), Seen::New);
        c.respond(&"a", 2, None);
        assert_eq!(c.check(&"a", 2, false, t0), Seen::Ignored);
        // Per-peer bound.
        assert_eq!(c.check(&"a", 3, true, t0), Seen::New);
        assert_eq!(c.check(&"a", 4, true, t0), Seen::Full);
        // The NON is forgotten after NON_LIFETIME, the CONs after EXCHANGE_LIFETIME.
        let later = t0 + p.non_lifetime();
        assert_eq!(c.check(&"a", 2, false, later), Seen::New);
        let later = t0 + p.exchange_lifetime();
        assert_eq!(c.check(&"a", 1, true, later), Seen::New);
        // Left: a/2 (renewed as a NON at t0 + 145 s) and a/1.
        assert_eq!(c.len(), 2);
    }

    #[test]
    fn dedup_forget_and_global_bound() {
        let p = TransmissionParameters::default();
        let t0 = Instant::now();
        let mut c: DedupCache<u32> = DedupCache::new(p, 2, 10);
        assert_eq!(c.check(&1, 1, true, t0), Seen::New);
        c.forget(&1, 1);
        assert_eq!(c.check(&1, 1, true, t0), Seen::New);
        assert_eq!(c.check(&2, 1, true, t0), Seen::New);
        assert_eq!(c.check(&3, 1, true, t0), Seen::Full);
        // Expiry of the first (forgotten) slot leaves the renewed entry alone until its own.
        c.expire(t0 + p.exchange_lifetime());
        assert!(c.is_empty());
    }
}
