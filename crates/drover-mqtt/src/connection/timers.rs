//! The keep-alive (nothing received for 1.5 times the keep-alive) and the packet timeout (a
//! packet not complete `packet_timeout` after its first bytes, however steadily they trickle
//! in). The loop owns the two sleeps; this decides when they fire next, or that the
//! connection ends.

use std::time::Duration;

use tokio::time::Instant;

use super::State;
use crate::reason::CloseReason;

pub(super) struct Timers {
    /// 1.5 times the keep-alive, if any.
    keep_alive: Option<Duration>,
    packet_timeout: Duration,
    last_read: Instant,
    /// Since when nothing has waited for the socket to take it (a write stall is measured from
    /// here).
    last_write: Instant,
    /// Since when the packet whose first bytes wait in the read buffer has been arriving.
    partial_since: Option<Instant>,
}

impl Timers {
    pub(super) fn new(keep_alive: Option<Duration>, packet_timeout: Duration) -> Self {
        let now = Instant::now();
        Timers {
            keep_alive,
            packet_timeout,
            last_read: now,
            last_write: now,
            partial_since: None,
        }
    }

    /// When the keep-alive sleep first fires.
    pub(super) fn keep_alive_start(&self) -> Instant {
        self.last_read + self.keep_alive.unwrap_or(Duration::from_secs(3600))
    }

    /// The loop starts; `partial` when part of a packet arrived with the CONNECT.
    pub(super) fn started(&mut self, partial: bool) {
        self.partial_since = partial.then_some(self.last_read);
    }

    /// When the packet sleep first fires.
    pub(super) fn packet_start(&self) -> Instant {
        self.last_read + self.packet_timeout
    }

    /// Called before each wait: when nothing waits for the socket, a later stall counts from now.
    pub(super) fn write_idle(&mut self, nothing_buffered: bool) {
        if nothing_buffered {
            self.last_write = Instant::now();
        }
    }

    pub(super) fn written(&mut self) {
        self.last_write = Instant::now();
    }

    pub(super) fn read(&mut self) {
        self.last_read = Instant::now();
    }

    /// After a read of `n` bytes that left `buffered` bytes in the buffer, of which `left`
    /// remain after decoding.
    pub(super) fn decoded(&mut self, n: usize, buffered: usize, left: usize) {
        // A packet completed (bytes were consumed): what is left started now. (The sleep is not
        // reset here, per read: it fires at the latest deadline set and is re-armed from
        // `partial_since` then.)
        let completed = left < buffered || buffered == n;
        self.partial_since = match self.partial_since {
            _ if left == 0 => None,
            Some(since) if !completed => Some(since),
            _ => Some(self.last_read),
        };
    }

    /// Whether a packet is partly received (the packet sleep matters).
    pub(super) fn packet_pending(&self) -> bool {
        self.partial_since.is_some()
    }

    /// The packet sleep fired: the next deadline, or the end of the connection.
    pub(super) fn packet_expired(&mut self, can_read: bool) -> Result<Instant, CloseReason> {
        let now = Instant::now();
        let since = match self.partial_since {
            // While reading is paused the client cannot be blamed: count again.
            Some(_) if !can_read => now,
            Some(since) if since + self.packet_timeout <= now => {
                return Err(CloseReason::PacketTimeout(self.packet_timeout));
            }
            Some(since) => since,
            None => now,
        };
        self.partial_since = Some(since);
        Ok(since + self.packet_timeout)
    }

    /// The keep-alive sleep fired: the next deadline, or the end of the connection.
    pub(super) fn keep_alive_expired(
        &self,
        can_read: bool,
        write_blocked: bool,
        st: &State<'_>,
    ) -> Result<Instant, CloseReason> {
        let ka = self.keep_alive.unwrap_or_default();
        let now = Instant::now();
        // While reading is paused (back-pressure) the client cannot be judged idle, unless it
        // stopped reading what we send.
        if self.last_read + ka <= now && can_read {
            return Err(CloseReason::KeepAliveTimeout);
        }
        if write_blocked && self.last_write + ka <= now {
            tracing::info!(peer = %st.peer, client_id = %st.client_id, "client stopped reading for {ka:?}");
            return Err(CloseReason::ConnectionLost);
        }
        Ok(if can_read {
            self.last_read + ka
        } else {
            now + ka
        })
    }
}
