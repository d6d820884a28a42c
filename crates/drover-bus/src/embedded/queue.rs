//! The queue in front of the writer thread: appends wait here for room, bounded in records and
//! in bytes, first come first served, at most `enqueue_timeout`.

use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::{mpsc, OwnedSemaphorePermit};

use super::writer::Command;
use super::Inner;
use crate::{BusError, Result};

/// What a queued append costs beyond its encoded bytes (message, reply channel), for the byte
/// budget of the queue.
pub(super) const QUEUE_OVERHEAD: usize = 128;

/// An append on its way into the writer's queue.
enum Pending<F> {
    /// Not yet: still needs its share of the byte budget.
    Unqueued(F),
    /// Has its share, waits for room in the queue.
    Ready(Command),
}

/// Counts appends waiting for room while it lives.
struct WaitingGuard<'a>(&'a AtomicUsize);

impl<'a> WaitingGuard<'a> {
    fn enter(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::AcqRel);
        Self(count)
    }
}

impl Drop for WaitingGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Inner {
    /// After the writer went away: `Closed` if the log was closed, else `Unavailable`.
    pub(super) fn writer_gone(&self) -> BusError {
        if self.closed.load(Ordering::Acquire) {
            BusError::Closed
        } else {
            BusError::Unavailable("the log writer stopped".into())
        }
    }

    /// Puts an append command into the writer's queue once it has room in both bounds (the
    /// byte budget: `cost`), keeping the order in which appends started; at most
    /// `enqueue_timeout`.
    pub(super) async fn enqueue(
        &self,
        cost: u32,
        command: impl FnOnce(OwnedSemaphorePermit) -> Command,
    ) -> Result<()> {
        // Fast path, while nobody waits: room in both bounds, taken without waiting.
        let pending = 'fast: {
            if self.waiting.load(Ordering::Acquire) == 0 {
                if let Ok(permit) = self.queue_bytes.clone().try_acquire_many_owned(cost) {
                    match self.tx.try_send(command(permit)) {
                        Ok(()) => return Ok(()),
                        Err(mpsc::error::TrySendError::Full(command)) => {
                            break 'fast Pending::Ready(command)
                        }
                        Err(mpsc::error::TrySendError::Closed(_)) => return Err(self.writer_gone()),
                    }
                }
            }
            Pending::Unqueued(command)
        };
        // Slow path: wait in line (first come, first served, so appends keep the order in which
        // they started) for room, at most `enqueue_timeout`.
        let _waiting = WaitingGuard::enter(&self.waiting);
        let deadline = tokio::time::Instant::now() + self.config.enqueue_timeout;
        let enqueue = async {
            let _turn = self.gate.lock().await;
            let command = match pending {
                Pending::Ready(command) => command,
                Pending::Unqueued(command) => {
                    let permit = self.queue_bytes.clone().acquire_many_owned(cost).await;
                    command(permit.map_err(|_| BusError::Closed)?)
                }
            };
            self.tx.send(command).await.map_err(|_| self.writer_gone())
        };
        match tokio::time::timeout_at(deadline, enqueue).await {
            Ok(result) => result,
            Err(_) => Err(BusError::Overloaded("the append queue stayed full".into())),
        }
    }
}
