//! Drover's event bus: one ordered, durable stream of [`Event`]s per application, read by
//! consumers that either follow live or belong to a named group whose committed offset survives
//! restarts.
//!
//! The [`EventLog`] trait has two backends that pass one conformance suite:
//! [`embedded::EmbeddedLog`], the built-in one (segment files per stream, fsync with group
//! commit before an append is acknowledged), and [`nats::JetStreamLog`] for a cluster of nodes
//! (a NATS JetStream stream per application, group offsets in a key-value bucket).
//!
//! This crate knows nothing of device or application protocols, nor of how resources are stored.

use async_trait::async_trait;
use drover_model::Event;

pub mod cluster;
pub mod commands;
pub mod embedded;
mod error;
pub mod groups;
pub mod key;
pub mod nats;
pub mod rendezvous;

pub use embedded::{EmbeddedLog, LogConfig};
pub use error::{BusError, Reason, Result};
pub use key::StreamKey;
pub use nats::{JetStreamConfig, JetStreamLog};

/// A position in a stream. The first event of a stream has offset 1; 0 means "before the first".
pub type Offset = u64;

/// Where a consumer starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartFrom {
    /// The oldest retained event.
    Earliest,
    /// Only events appended after the consumer was opened.
    Latest,
    /// The event after this offset (or the oldest retained one, if that was pruned).
    After(Offset),
}

/// An event with its position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub offset: Offset,
    pub event: Event,
}

/// A reader of one stream, in offset order.
#[async_trait]
pub trait Consumer: Send {
    /// The next record; waits for one to be appended. `None` when the stream was deleted or the
    /// log closed.
    async fn next(&mut self) -> Result<Option<Record>>;
    /// Up to `max` records that are available now, waiting only if none is. Empty when the
    /// stream was deleted or the log closed (or `max` is 0).
    async fn next_batch(&mut self, max: usize) -> Result<Vec<Record>>;
    /// The offset of the last appended (durable) event of the stream.
    fn end(&self) -> Offset;
}

/// Per-application ordered, durable event streams with consumer groups.
#[async_trait]
pub trait EventLog: Send + Sync + 'static {
    /// Appends an event; returns its offset once it is durable (on disk / acknowledged by the
    /// backend). Appends to one stream are ordered as they are called.
    async fn append(&self, stream: &StreamKey, event: Event) -> Result<Offset>;
    /// Appends several events to one stream, in order: one result per event, as if each had
    /// been appended with [`append`](Self::append) right after the one before it (an event can
    /// fail alone, e.g. `TooLarge`). All of them have entered the stream's order when the
    /// returned future is first polled (unless that poll has to wait for room, as `append`
    /// does). Backends make a batch durable together (one hand-off, one fsync); the default
    /// runs one `append` per event, all first polled in order.
    async fn append_batch(&self, stream: &StreamKey, events: Vec<Event>) -> Vec<Result<Offset>> {
        futures::future::join_all(events.into_iter().map(|e| self.append(stream, e))).await
    }
    /// Opens a reader of a stream.
    async fn consume(&self, stream: &StreamKey, from: StartFrom) -> Result<Box<dyn Consumer>>;
    /// The committed offset of a consumer group, if it ever committed.
    async fn committed(&self, stream: &StreamKey, group: &str) -> Result<Option<Offset>>;
    /// Records that `group` has processed everything up to and including `offset`.
    async fn commit(&self, stream: &StreamKey, group: &str, offset: Offset) -> Result<()>;
    /// Removes a stream and its groups (the application is gone).
    async fn delete_stream(&self, stream: &StreamKey) -> Result<()>;
    /// Makes committed offsets durable and stops accepting appends.
    async fn close(&self) -> Result<()>;
}
