//! An ordered pipeline of same-typed futures that yields their outputs in push order, reusing
//! its boxes so that the steady state allocates nothing per message.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

struct Entry<F: Future, M> {
    fut: Pin<Box<F>>,
    out: Option<F::Output>,
    meta: M,
}

pub(crate) struct Pipeline<F: Future, M> {
    entries: VecDeque<Entry<F, M>>,
    spare: Vec<Pin<Box<F>>>,
}

impl<F: Future, M> Pipeline<F, M> {
    pub(crate) fn new() -> Self {
        Pipeline {
            entries: VecDeque::new(),
            spare: Vec::new(),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub(crate) fn push(&mut self, fut: F, meta: M) {
        let fut = match self.spare.pop() {
            Some(mut slot) => {
                slot.as_mut().set(fut);
                slot
            }
            None => Box::pin(fut),
        };
        self.entries.push_back(Entry {
            fut,
            out: None,
            meta,
        });
    }

    /// Polls every unfinished future, in push order, and yields the oldest one's output once
    /// it is done.
    pub(crate) fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<(M, F::Output)> {
        for entry in self.entries.iter_mut() {
            if entry.out.is_none() {
                if let Poll::Ready(out) = entry.fut.as_mut().poll(cx) {
                    entry.out = Some(out);
                }
            }
        }
        match self.entries.front() {
            Some(front) if front.out.is_some() => {}
            _ => return Poll::Pending,
        }
        match self.entries.pop_front() {
            Some(Entry {
                fut,
                out: Some(out),
                meta,
            }) => {
                // Keep the box for the next push; the finished future inside is dropped then.
                self.spare.push(fut);
                Poll::Ready((meta, out))
            }
            _ => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::poll_fn;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn yields_in_push_order_even_when_later_futures_finish_first() {
        async fn job(delay: u64) -> u64 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
            delay
        }
        let mut p = Pipeline::new();
        for (i, delay) in [30u64, 10, 20].into_iter().enumerate() {
            p.push(job(delay), i);
        }
        let mut out = Vec::new();
        while !p.is_empty() {
            out.push(poll_fn(|cx| p.poll_next(cx)).await);
        }
        assert_eq!(out, vec![(0, 30), (1, 10), (2, 20)]);
        // Boxes are reused.
        assert_eq!(p.spare.len(), 3);
        p.push(job(1), 9);
        assert_eq!(p.spare.len(), 2);
        assert_eq!(poll_fn(|cx| p.poll_next(cx)).await, (9, 1));
    }
}
